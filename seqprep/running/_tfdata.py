"""tf.data adapter: padded batches that follow a :class:`~seqprep.BucketSampler`'s plan.

:func:`bucketed_dataset` turns in-memory sequences into a ``tf.data.Dataset`` of padded batches in
exactly the order a sampler planned. The data live once in TensorFlow in ragged form (flat values
plus row offsets, from :func:`seqprep._core.ragged.as_ragged`); the dataset itself only streams the
plan's index arrays, and each batch is gathered and padded in one vectorised ``tf.gather`` (no
Python per element or per batch while training).

The streaming counterparts for ``dataset.apply(...)``, for data that do not fit in memory,
live in :mod:`seqprep.running._streaming` (``bucket_by_length`` stays importable from here).

Dtypes: integer and boolean steps keep their dtype; floating steps wider than Keras's float
type (``keras.config.floatx()``, never narrower than float32) become it after a check that no
value overflows; pass ``dtype=`` to choose. Nothing is cast silently where values would
change: the checks are :func:`seqprep.pad_sequences`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from seqprep._core.checks import check_choice, check_int, needs_sampler
from seqprep._core.options import Options, options_for, takes_options
from seqprep.inputs import _stage as _inputs
from seqprep.inputs import _stage_fields
from seqprep.inputs._padding import Side
from seqprep.inputs._targets import Targets
from seqprep.planning import BucketSampler
from seqprep.planning._replicas import batches_per_step
from seqprep.running._data_parallel import Layout, resolve_data_parallel
from seqprep.running._stream import (
    TF_KERNEL_OPS,
    EpochStream,
    PadTo,
    PlanCache,
    attach_stream,
    bucket_arrays,
    for_keras_loop,
    sampler_identity,
    sampler_stage,
    stage_digest,
    tf_batches,
    with_cardinality,
)

__all__ = ["bucketed_dataset"]

# The shared options (seqprep.Options) that bucketed_dataset reads.
BUCKETED_READS = ("epochs", "reshuffle_each_iteration", "truncating", "dtype", "allow_nonfinite",
                  "targets_field", "data_parallel")

_AUTOTUNE = tf.data.AUTOTUNE




# --------------------------------------------------------------------------- bucketed_dataset


def _index_dataset(
    sampler: PlanCache,
    stage: _inputs.Stage,
    epoch: int,
    epochs: int,
    reshuffle_each_iteration: bool,
    layout: Layout | None = None,
) -> tuple[tf.data.Dataset, EpochStream | None]:
    """A dataset of ``(indices, width, scales)``, one element per batch of the planned epochs
    (``scales``: one weight factor per target), and the epoch stream that chooses each pass's
    epochs (None for one fixed epoch)."""
    stream = None
    if epochs > 1 or reshuffle_each_iteration:
        step = epochs if reshuffle_each_iteration else 0
        stream = EpochStream(epoch, step, epochs, len(sampler), sampler_identity(sampler),
                             batches_per_step(sampler))
    width_shape = [None] if stage.single else [None, len(stage.fields)]
    signature = [(tf.int64, [None]), (tf.int64, [None]), (tf.int64, width_shape),
                 (tf.float32, [None, len(stage.targets)])]
    ds = tf_batches(lambda e: bucket_arrays(sampler, e, stage, layout), signature,
                    epoch=epoch, stream=stream)
    return ds, stream


@needs_sampler("BucketSampler")
@takes_options
def bucketed_dataset(
    x: Any,
    y: Any = None,
    *,
    sampler: BucketSampler,
    padding: Side = "post",
    value: Any = 0,
    sample_weight: Any = None,
    pad_to: PadTo | int | Sequence[int] = "auto",
    epoch: int = 0,
    targets: Targets = "auto",
    options: Options | None = None,
) -> tf.data.Dataset:
    """Padded batches of in-memory sequences, in the order a :class:`BucketSampler` planned.

    The sequences are stored once in TensorFlow as flat values plus row offsets; the dataset
    streams the plan's index arrays and gathers and pads each batch with one ``tf.gather``,
    in parallel and prefetched. Its cardinality is known: ``len(sampler) * epochs``.

    Elements are ``x``, ``(x, y)`` or ``(x, y, sample_weight)``, ready for ``model.fit``:

    * ``x``: ``(batch, T, *step_shape)``. Integer and boolean steps keep their dtype; floats
      wider than Keras's ``floatx`` (float32 unless set; never narrower than float32) become
      it after a check that none overflows (``dtype=`` overrides; a cast that would change
      values raises ``ValueError``).
    * ``y``: per-sequence labels, ``(batch, ...)``, when ``y`` is an array of shape ``(n, ...)``
      (or a list of scalars); per-timestep targets, ``(batch, T, ...)``, padded exactly like
      ``x`` (with 0), when ``y`` is a sequence collection whose lengths equal ``x``'s. The
      rule is :func:`seqprep.resolve_targets`'s; where both readings fit (sequences of one
      length with target rows of that length) pass ``targets="sequence"`` or ``"step"``.
    * ``sample_weight``: an array ``(n,)`` gives per-sequence weights ``(batch,)`` (with
      per-timestep targets ``(batch, T)``: each sequence's weight on its real steps);
      ``"timestep"`` gives float32 ``(batch, T)`` weights, 1 on real steps and
      0 on padding; ``"timestep_mean"`` scales those by ``batch * T / real steps`` so that
      Keras's default ``"sum_over_batch_size"`` reduction returns the mean over real steps.
      Use ``"timestep_mean"`` only when no Keras mask reaches the loss (Keras rescales a
      mask the same way and the scalings compound); ``"timestep"`` with a loss built with
      ``reduction="mean_with_sample_weight"`` gives the mean over real steps in every case.

    ``T`` is set by ``pad_to``: ``"auto"`` (the default) is ``"batch"`` on TensorFlow and
    PyTorch and, on JAX (which compiles one program per shape), a width grid of at most 16
    widths sized by the sampler's compile budget (``PlanOptions(compile_cost=...,
    train_epochs=...)``; ``"bucket"`` for a ``max_tokens`` sampler), so that only the first
    epoch compiles; ``"batch"`` pads to the batch's longest sequence (fewest
    padded steps: best on CPU); ``"bucket"`` pads every batch to its bucket's pad length,
    ``sampler.bucket_pad_lengths`` (the longest length in the bucket, so at most
    ``sampler.num_buckets`` widths, for ``jit_compile=True``, which compiles once per shape);
    an int pads every batch to that width (one shape; a longer sequence raises
    ``ValueError``); a width grid (ascending ints) pads each batch to the smallest width that
    covers its bucket. Keras's TensorFlow backend traces its train step once per dataset,
    whatever the widths; with ``jit_compile=True`` pass ``pad_to=seqprep.width_grid(sampler)``.
    On JAX, a plan with more than 24 shapes, or new shapes in its second epoch, warns.

    Epochs: every new pass over the dataset plays the sampler's next epoch (pass ``k`` plays
    epoch ``epoch + k``; with ``epochs=N``, epochs ``epoch + k * N ..``), so
    ``model.fit(ds, epochs=N)`` trains ``N`` different orders, each with every example once.
    The new plan costs no Python per batch and the cardinality stays
    ``len(sampler) * epochs`` (``epochs`` and ``reshuffle_each_iteration`` are
    :class:`seqprep.Options`). Under ``model.fit`` with :class:`seqprep.BackupAndRestore`
    (or in :func:`seqprep.fit_per_length`), Keras epoch ``e`` plays sampler epoch
    ``epoch + e`` exactly, which is what makes a run resumable mid-epoch. Pass
    ``options=seqprep.Options(reshuffle_each_iteration=False)`` to replay the same epoch(s)
    on every pass (the dataset is then made of constants only, as the tf.data service
    needs). These datasets are shuffled by their sampler: pass ``shuffle=False`` to
    ``model.fit`` to silence Keras's warning that ``shuffle=True`` is ignored for a
    ``tf.data.Dataset``.

    Several fields per example (encoder–decoder data): ``x`` may be a dict (keys: the
    model's input names) or a tuple of sequence collections with one sequence per example
    each. Every field keeps its own lengths and is padded to its own width in every batch,
    and the batch carries the same structure. A per-step target aligns with the field whose
    lengths equal its row lengths (padded like it, timestep weights 0 on its padding);
    ``Options(targets_field=...)`` names the field when several match, and a per-step target that
    matches none is an error. ``y`` may be a dict or tuple of targets (one per output); the
    weights then have ``y``'s structure. ``padding``, ``value``, ``pad_to``, ``truncating``
    and ``dtype`` take a dict keyed by field for per-field values. A 2-D sampler (lengths
    ``(n, k)`` or a dict of them) plans every field (column ``j`` is field ``j``, or the
    field of the same name); a 1-D sampler plans the first field whose lengths it was built
    on, and the other fields pad to their batch's longest. See the encoder–decoder guide.

    Data parallelism: with ``keras.distribution.set_distribution(DataParallel(...))`` on JAX
    (or ``Options(data_parallel=k)``), Keras splits every batch's rows over ``k`` devices, so each
    batch is topped up to a multiple of ``k`` rows with *fill rows*: target 0, weight 0,
    never a copy of an example, holding one step of the data that is not padding (so a
    masked mean over a fill row is finite) and then padding. A weight column is then always
    emitted (1 per real row or real step when ``sample_weight`` is None), and the weights of
    per-sequence targets are scaled by rows / real rows, so that the loss and gradient of
    each batch equal the one-device run of the same plan (per-step targets: see
    "keras.distribution on JAX" in the distributed guide). With several processes
    (``jax.distributed``) each process yields its rows of every batch, at the whole batch's
    width; build the distribution with ``auto_shard_dataset=False``.

    Args:
        x: a sequence collection (list of arrays or lists, ``tf.RaggedTensor``, array
            ``(n, T, ...)``, pandas Series of arrays), or a dict or tuple of them (fields).
        y: optional per-sequence labels or per-timestep targets (see above), or a dict or
            tuple of them.
        sampler: a :class:`BucketSampler` built on ``sequence_lengths(x)`` (for fields: on
            one field's lengths, or on every field's as a 2-D sampler).
        padding: ``"post"`` (default; what the cuDNN RNN kernel needs) or ``"pre"``.
        value: padding value of ``x``; must be representable in its dtype.
        sample_weight: ``None``, an array ``(n,)``, ``"timestep"`` or ``"timestep_mean"``.
        pad_to: ``"auto"``, ``"batch"``, ``"bucket"``, a fixed int width or a width grid.
        epoch: the sampler epoch to play (the first one when ``Options(epochs > 1)``).
        targets: ``"auto"`` (default), ``"sequence"`` or ``"step"``: whether ``y`` holds one
            target per sequence or one per step (see :func:`seqprep.resolve_targets`).
        options: a :class:`seqprep.Options` of the rarely set options this reads:
            ``epochs`` (consecutive sampler epochs the dataset holds),
            ``reshuffle_each_iteration`` (play the next epochs on every new pass, the
            default; False replays the same epochs), ``truncating`` (which steps a sampler
            built with ``overlong="truncate"`` cuts: ``"post"`` keeps the first
            ``sampler.length_limit`` steps, ``"pre"`` the last ones), ``dtype`` (of the
            ``x`` batches; default: see above), ``allow_nonfinite`` (accept NaN/inf in
            ``x``; NaN/inf in ``y`` are always refused; see "What seqprep refuses" in the
            padding and masking guide), ``targets_field`` (for several fields, the field,
            by name or tuple position, that per-step targets align with; a dict keyed like
            ``y`` for several targets; default: the field whose lengths equal the
            targets') and ``data_parallel`` (``"auto"``, the default: with a
            ``keras.distribution`` layout of ``k > 1`` devices along the batch axis, top
            every batch up to a multiple of ``k`` rows with weight-0 fill rows, see "Data
            parallelism" above; an int ``k`` asks for that; ``None`` never fills).

    Returns:
        A ``tf.data.Dataset`` with ``cardinality() == len(sampler) * epochs``.

    Raises:
        ValueError: ``x``, ``y`` or ``sample_weight`` of different lengths, a sampler built
            on other lengths, unknown ``padding``/``pad_to``/``truncating``/``sample_weight``
            mode, a sequence longer than an int ``pad_to``, a lossy ``dtype``, or an option
            this does not read; for fields:
            fields of different counts, per-step targets matching no field (or several,
            without ``targets_field``), a sampler of another number of fields.
        TypeError: ``sampler`` is not a BucketSampler, or ``x`` is not a sequence collection.

    Example:
        >>> from seqprep import BucketSampler, sequence_lengths
        >>> x = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]]
        >>> sampler = BucketSampler(sequence_lengths(x), boundaries=[3], batch_size=2,
        ...                         shuffle=False)
        >>> ds = bucketed_dataset(x, [0, 1, 0, 1], sampler=sampler)
        >>> int(ds.cardinality())
        2
        >>> [(xb.numpy().tolist(), yb.numpy().tolist()) for xb, yb in ds]
        [([[4, 0], [5, 6]], [1, 0]), ([[1, 2, 3, 0], [7, 8, 9, 10]], [0, 1])]

        Two fields, per-step targets aligned with the decoder:

        >>> dec = [[1, 5], [1], [1, 6, 7], [1, 8]]
        >>> ds = bucketed_dataset({"encoder": x, "decoder": dec}, [[5, 2], [2], [6, 7, 2], [8, 2]],
        ...                       sampler=sampler)
        >>> xb, yb = next(iter(ds))
        >>> xb["encoder"].numpy().tolist(), xb["decoder"].numpy().tolist(), yb.numpy().tolist()
        ([[4, 0], [5, 6]], [[1, 0, 0], [1, 6, 7]], [[2, 0, 0], [6, 7, 2]])
    """
    opts = options_for(options, "bucketed_dataset", reads=BUCKETED_READS)
    check_choice("targets", targets, ("auto", "sequence", "step"))
    epoch = check_int("epoch", epoch, minimum=0)
    epochs, reshuffle_each_iteration = opts.epochs, opts.reshuffle_each_iteration
    arguments = {"padding": padding, "pad_to": pad_to, "value": value,
                 "truncating": opts.truncating}
    plans = PlanCache(sampler)  # counting shapes (pad_to) and playing: each epoch planned once
    stage = sampler_stage(x, y, sample_weight, sampler, padding=padding, value=value,
                          pad_to=pad_to, truncating=opts.truncating, dtype=opts.dtype,
                          allow_nonfinite=opts.allow_nonfinite, targets=targets,
                          targets_field=opts.targets_field, epoch=epoch, planner=plans)
    layout = resolve_data_parallel(opts.data_parallel, caller="bucketed_dataset")
    if layout is not None:
        stage = _inputs.with_fill(stage)
    index_ds, stream = _index_dataset(plans, stage, epoch, epochs, reshuffle_each_iteration,
                                      layout)

    # Captured once as tensors; each batch then costs a few gathers of size batch x width.
    consts = stage.convert(tf.constant)
    if stream is not None:
        stream.data = stage_digest(consts, arguments)
    fixed = _fixed_shapes(stage)

    def make_batch(idx: tf.Tensor, width: tf.Tensor, scales: tf.Tensor) -> Any:
        batch = _inputs.gather(consts, idx, width, TF_KERNEL_OPS,
                               scales=None if layout is None else scales)
        if fixed is not None:
            batch = (_ensure_shapes(stage, batch[0], fixed), *batch[1:])
        return batch[0] if len(batch) == 1 else batch

    ds = index_ds.map(make_batch, num_parallel_calls=_AUTOTUNE, deterministic=True)
    ds = for_keras_loop(with_cardinality(ds, len(sampler) * epochs).prefetch(_AUTOTUNE))
    return attach_stream(ds, stream)  # how seqprep.BackupAndRestore finds the stream


def _fixed_shapes(stage: _inputs.Stage) -> list[list[Any] | None] | None:
    """The static shape of each field padded to an int ``pad_to`` (None if no field is)."""
    shapes = [
        [None, f.pad_to, *f.table.x.shape[1:]] if isinstance(f.pad_to, int) else None
        for f in stage.fields
    ]
    return None if all(s is None for s in shapes) else shapes


def _ensure_shapes(stage: _inputs.Stage, x: Any, shapes: list[Any]) -> Any:
    items = [x] if stage.single else [x[k] for k in stage.x_keys]
    items = [t if shape is None else tf.ensure_shape(t, shape)
             for t, shape in zip(items, shapes, strict=True)]
    return _stage_fields.pack(stage.x_kind, stage.x_keys, items)

