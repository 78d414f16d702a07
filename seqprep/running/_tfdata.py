"""tf.data adapter: padded batches that follow a :class:`~seqprep.BucketSampler`'s plan.

:func:`bucketed_dataset` turns in-memory sequences into a ``tf.data.Dataset`` of padded batches in
exactly the order a sampler planned. The data live once in TensorFlow in ragged form (flat values
plus row offsets, from :func:`seqprep._core.ragged.as_ragged`); the dataset itself only streams the
plan's index arrays, and each batch is gathered and padded in one vectorised ``tf.gather`` (no
Python per element or per batch while training).

The streaming counterparts for ``dataset.apply(...)``, for data that do not fit in memory,
live in :mod:`seqprep.running._streaming` (``bucket_by_length`` stays importable from here).

Dtypes: integer and boolean steps keep their dtype; floating steps wider than
32 bits become ``float32`` (Keras's float type) after a check that no value overflows; pass
``dtype=`` to choose. Nothing is cast silently where values would change: the checks are
:func:`seqprep.pad_sequences`'s.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from seqprep._core.checks import check_choice, check_int, needs_sampler
from seqprep._core.options import Options, options_for, takes_options
from seqprep.inputs import _kernel
from seqprep.inputs import _stage as _inputs
from seqprep.inputs._fingerprint import DataDigest
from seqprep.inputs._masking import _WeightOps
from seqprep.inputs._padding import Side
from seqprep.inputs._targets import Targets
from seqprep.planning import BucketSampler
from seqprep.planning._fill import fill_batches
from seqprep.planning._shapes import compiling_backend, resolve_pad_to
from seqprep.running._data_parallel import Layout, resolve_data_parallel

__all__ = ["bucket_by_length", "bucketed_dataset"]

PadTo = Literal["auto", "batch", "bucket"]

# The shared options (seqprep.Options) that bucketed_dataset reads.
BUCKETED_READS = ("epochs", "reshuffle_each_iteration", "truncating", "dtype", "allow_nonfinite",
                  "targets_field", "data_parallel")

_AUTOTUNE = tf.data.AUTOTUNE


def _quiet_keras_shuffle_warning() -> None:
    """Silence Keras's "`shuffle=True` was passed, but will be ignored" for tf.data input.

    Keras warns on every ``fit`` over a ``tf.data.Dataset`` that the data should already be
    shuffled; seqprep's datasets are (a new sampler epoch on every pass), and the warning
    cannot tell them from others. Installed again by each dataset builder, since a
    ``warnings.catch_warnings`` block around an import would drop a filter set only once.
    """
    warnings.filterwarnings(
        "ignore",
        message=r"`shuffle=True` was passed, but will be ignored since the data `x` was "
        r"provided as a tf\.data\.Dataset",
    )


# --------------------------------------------------------------------------- shared helpers

# The per-step weight formula (seqprep.inputs._masking._step_weights) spelled in TensorFlow ops.
_TF_WEIGHT_OPS = _WeightOps(
    as_float32=lambda a: tf.cast(a, tf.float32),
    count=lambda a: tf.cast(tf.size(a), tf.float32),
    total=tf.reduce_sum,
    divide_no_nan=tf.math.divide_no_nan,
)


# The kernel (seqprep.inputs._kernel) spelled in TensorFlow ops, for tf.data maps.
_TF_KERNEL_OPS = _kernel.KernelOps(
    gather=tf.gather,
    gather_rows=lambda params, indices: tf.gather(params, indices, batch_dims=1),
    where=tf.where,
    arange=lambda n: tf.range(n, dtype=tf.int64),
    cumsum_rows=lambda a: tf.cumsum(a, axis=1),
    count_true=lambda a: tf.reduce_sum(tf.cast(a, tf.int64), axis=-1),
    maximum=tf.maximum,
    weights=_TF_WEIGHT_OPS,
)


# --------------------------------------------------------------------------- bucketed_dataset


def _stage(
    x: Any, y: Any, sample_weight: Any, sampler: BucketSampler, *, padding: Any, value: Any,
    pad_to: Any, truncating: Any, dtype: Any, allow_nonfinite: bool, targets: Targets,
    targets_field: Any, epoch: int,
) -> _inputs.Stage:
    """The one input stage (:mod:`seqprep.inputs._stage`) for an executor of a sampler's plan
    (``bucketed_dataset``, ``bucketed_pydataset``): every check, before any TensorFlow work."""
    return _inputs.prepare(
        x, y, sample_weight, sampler=sampler, sampler_type=BucketSampler, padding=padding,
        value=value, pad_to=pad_to, truncating=truncating, dtype=dtype,
        allow_nonfinite=allow_nonfinite, targets=targets, targets_field=targets_field,
        backend=_compiling_backend(), epoch=epoch, resolve_planned=resolve_pad_to,
    )


def _compiling_backend() -> str | None:
    """The Keras backend's name if it compiles one program per input shape, else None."""
    import keras  # noqa: F401  (Keras resolves its backend; the shared rule reads it)

    return compiling_backend()


def _plan_arrays(
    sampler: BucketSampler, epoch: int, stage: _inputs.Stage, layout: Layout | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One epoch's plan as flat indices, rows per batch, the padded width of each batch
    (``(batches,)``; ``(batches, fields)`` for several fields) and the weight scale of each
    batch: 1, unless ``layout`` tops batches up with fill rows (the index ``stage.n``) to a
    multiple of its size; then this process's rows of every batch, each batch as wide as
    the whole (global) batch, and the scale rows / real rows."""
    plan = sampler.plan(epoch)
    widths = _inputs.batch_widths(plan, stage)
    if layout is None:
        return plan.rows, plan.sizes, widths, np.ones(len(plan), np.float32)
    filled = fill_batches(plan.rows, plan.splits, multiple_of=layout.size, fill_index=stage.n,
                          num_processes=layout.num_processes,
                          process_index=layout.process_index)
    return filled.rows, filled.sizes, widths, filled.scales.astype(np.float32)


def _index_dataset(
    sampler: BucketSampler,
    stage: _inputs.Stage,
    epoch: int,
    epochs: int,
    reshuffle_each_iteration: bool,
    layout: Layout | None = None,
) -> tuple[tf.data.Dataset, _Passes | None]:
    """A dataset of ``(indices, width, scale)``, one element per batch of the planned epochs,
    and what chooses each pass's epochs (None for one fixed epoch)."""

    def slices(flat: Any, sizes: Any, widths: Any, scales: Any) -> tf.data.Dataset:
        rows = tf.RaggedTensor.from_row_lengths(flat, sizes, validate=False)
        return tf.data.Dataset.from_tensor_slices((rows, widths, scales))

    if epochs == 1 and not reshuffle_each_iteration:
        # One fixed plan: constants only, no Python at iteration time (serialisable).
        return slices(*_plan_arrays(sampler, epoch, stage, layout)), None

    width_shape = [None] if stage.single else [None, len(stage.fields)]

    def plan_of(e: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return _plan_arrays(sampler, int(e), stage, layout)

    def epoch_batches(e: tf.Tensor, start: tf.Tensor) -> tf.data.Dataset:
        flat, sizes, widths, scales = tf.numpy_function(
            plan_of, [e], (tf.int64, tf.int64, tf.int64, tf.float32), stateful=True
        )
        flat.set_shape([None])
        widths.set_shape(width_shape)
        scales.set_shape([None])
        splits = tf.concat([[0], tf.cumsum(sizes)], 0)
        # Slicing by position rather than from a RaggedTensor: inside flat_map, ragged slices
        # trip a (harmless but loud) TensorFlow type-inference warning.
        return tf.data.Dataset.range(start, tf.shape(widths, out_type=tf.int64)[0]).map(
            lambda i: (flat[splits[i] : splits[i + 1]], widths[i], scales[i])
        )

    state = sampler.state_dict()
    identity = {k: state[k] for k in ("fingerprint", "seed", "num_shards", "shard_index")}
    step = epochs if reshuffle_each_iteration else 0
    passes = _Passes(epoch, step, epochs, len(sampler), identity)
    return passes.dataset(epoch_batches), passes


# Every live dataset that plays epochs per pass; seqprep.BackupAndRestore drives them.
_LIVE_PASSES: weakref.WeakSet[_Passes] = weakref.WeakSet()


class _Passes:
    """Which sampler epochs each pass over a dataset plays, and from which batch.

    Counting (alone): pass ``k`` plays epochs ``base + k * step ..`` (``step`` is 0 for a
    dataset that replays the same epochs). Driven (by ``seqprep.BackupAndRestore`` or
    ``fit_per_length``, at the start of each Keras epoch): every pass that starts plays pass
    ``index`` from batch ``skip`` of the pass, and reading does not consume it, so iterators
    that Keras makes and throws away between epochs cannot shift the epochs.
    """

    def __init__(
        self, base: int, step: int, epochs: int, batches_per_epoch: int, identity: dict[str, Any]
    ) -> None:
        self.base, self.step, self.epochs = base, step, epochs
        self.batches_per_epoch = batches_per_epoch
        self.batches_per_pass = batches_per_epoch * epochs
        # What a checkpoint must find again for its step to mean the same batches.
        self.identity = {**identity, "first_epoch": base, "epochs_per_pass": epochs,
                         "reshuffle_each_iteration": step != 0}
        self._next = 0
        self._driven: tuple[int, int] | None = None
        self._pending: tuple[int, int] | None = None
        self.started = 0
        self._lock = threading.Lock()
        # The digests of the data the passes play (seqprep.inputs._fingerprint.DataDigest), set by
        # the dataset builder; seqprep.BackupAndRestore checks them on resume.
        self.data: DataDigest | None = None
        _LIVE_PASSES.add(self)

    def start(self) -> np.ndarray:
        """Called by the dataset when a pass begins: ``[first epoch, batches to skip]``."""
        with self._lock:
            if self._driven is not None:
                index, skip = self._driven
                self._next = index + 1
            else:
                index, skip = self._next, 0
                self._next += 1
            self.started += 1
        return np.array([self.base + index * self.step, skip], np.int64)

    def resume_at(self, index: int, skip: int) -> None:
        """Make the pass that plays Keras epoch ``index`` start at its batch ``skip``."""
        with self._lock:
            self._pending = (int(index), int(skip))

    def drive(self, index: int) -> None:
        """Every pass from now on plays pass ``index`` (until the next call or ``release``)."""
        with self._lock:
            pending = self._pending
            skip = pending[1] if pending is not None and pending[0] == index else 0
            self._driven = (int(index), skip)

    def release(self) -> None:
        with self._lock:
            self._driven = None
            self._pending = None

    def skip_of(self, index: int) -> int:
        """Batches the pass of Keras epoch ``index`` leaves out (resumed mid-epoch)."""
        pending = self._pending
        return pending[1] if pending is not None and pending[0] == index else 0

    def dataset(
        self, epoch_batches: Callable[[tf.Tensor, tf.Tensor], tf.data.Dataset]
    ) -> tf.data.Dataset:
        """Passes of ``epochs`` consecutive epochs; ``epoch_batches(e, start)`` plays one."""
        per_epoch = self.batches_per_epoch
        epochs = self.epochs

        def begin(_: tf.Tensor) -> tf.Tensor:
            first = tf.numpy_function(self.start, [], tf.int64, stateful=True)
            first.set_shape([2])
            return first

        def one_pass(first: tf.Tensor) -> tf.data.Dataset:
            if epochs == 1:  # one flat_map level fewer: about a quarter less CPU per batch
                return epoch_batches(first[0], first[1])

            def epoch_of(j: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                start = tf.clip_by_value(first[1] - j * per_epoch, 0, per_epoch)
                return first[0] + j, start

            return tf.data.Dataset.range(epochs).map(epoch_of).flat_map(epoch_batches)

        return tf.data.Dataset.range(1).map(begin).flat_map(one_pass)


def _data_digest(
    inputs: Sequence[_kernel.Table], targets: Sequence[_kernel.Table], arguments: dict[str, Any]
) -> DataDigest:
    """What a checkpoint of a dataset over these kernel tables must find again: the values of
    every input field (``inputs``), the targets and weights (``targets``) and the options."""
    return DataDigest(
        {"x": lambda: tuple(a for t in inputs for a in (t.x, t.starts, t.lengths)),
         "y": lambda: tuple(t.y for t in targets),
         "sample_weight": lambda: tuple(t.w for t in targets)},
        {**arguments, "y_mode": tuple(t.y_mode for t in targets),
         "w_mode": tuple(t.w_mode for t in targets)},
    )


def _stage_digest(stage: _inputs.Stage, arguments: dict[str, Any]) -> DataDigest:
    """:func:`_data_digest` of an input stage (every field, every target)."""
    return _data_digest([f.table for f in stage.fields], [t.table for t in stage.targets],
                        {**arguments, "x_keys": stage.x_keys, "y_keys": stage.y_keys})


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
      wider than 32 bits become ``float32`` after a check that none overflows (``dtype=``
      overrides; a cast that would change values raises ``ValueError``).
    * ``y``: per-sequence labels, ``(batch, ...)``, when ``y`` is an array of shape ``(n, ...)``
      (or a list of scalars); per-timestep targets, ``(batch, T, ...)``, padded exactly like
      ``x`` (with 0), when ``y`` is a sequence collection whose lengths equal ``x``'s. The
      rule is :func:`seqprep.resolve_targets`'s; where both readings fit (sequences of one
      length with target rows of that length) pass ``targets="sequence"`` or ``"step"``.
    * ``sample_weight``: an array ``(n,)`` gives per-sequence weights ``(batch,)``;
      ``"timestep"`` gives float32 ``(batch, T)`` weights, 1 on real steps and
      0 on padding; ``"timestep_mean"`` scales those by ``batch * T / real steps`` so that
      Keras's default ``"sum_over_batch_size"`` reduction returns the mean over real steps.
      Use ``"timestep_mean"`` only when no Keras mask reaches the loss (Keras rescales a
      mask the same way and the scalings compound); ``"timestep"`` with a loss built with
      ``reduction="mean_with_sample_weight"`` gives the mean over real steps in every case.

    ``T`` is set by ``pad_to``: ``"auto"`` (the default) is ``"batch"`` on TensorFlow and
    PyTorch and, on JAX (which compiles one program per shape), a width grid of at most 16
    widths (:func:`seqprep.width_grid`; ``"bucket"`` for a ``max_tokens`` sampler), so that only
    the first epoch compiles; ``"batch"`` pads to the batch's longest sequence (fewest
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
    needs). Keras's warning that ``shuffle=True`` is ignored for a ``tf.data.Dataset`` is
    silenced when a dataset is built: these datasets are shuffled by their sampler.

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
    batch is topped up to a multiple of ``k`` rows with *fill rows*: all padding, target 0,
    weight 0, never a copy of an example. A weight column is then always emitted (1 per
    real row or real step when ``sample_weight`` is None), and the weights of per-sequence
    targets are scaled by rows / real rows, so that the loss and gradient of each batch
    equal the one-device run of the same plan (per-step targets: see "keras.distribution on
    JAX" in the distributed guide). With several processes (``jax.distributed``) each
    process yields its rows of every batch, at the whole batch's width; build the
    distribution with ``auto_shard_dataset=False``.

    Args:
        x: a sequence collection (list of arrays or lists, ``tf.RaggedTensor``, array
            ``(n, T, ...)``, pandas Series of arrays), or a dict or tuple of them (fields).
        y: optional per-sequence labels or per-timestep targets (see above), or a dict or
            tuple of them.
        sampler: a :class:`BucketSampler` built on ``sequence_lengths(x)`` (for fields: on
            one field's lengths, or on every field's as a 2-D sampler).
        padding: ``"post"`` (default; what the cuDNN RNN kernel needs) or ``"pre"``.
        value: padding value of ``x``; must be representable in its dtype.
        sample_weight: ``None``, an array ``(n,)``, ``"timestep"`` or ``"timestep_mean"``
            (``True``/``False``, deprecated, mean ``"timestep"``/``None`` and warn).
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
    _quiet_keras_shuffle_warning()
    epoch = check_int("epoch", epoch, minimum=0)
    epochs, reshuffle_each_iteration = opts.epochs, opts.reshuffle_each_iteration
    arguments = {"padding": padding, "pad_to": pad_to, "value": value,
                 "truncating": opts.truncating}
    stage = _stage(x, y, sample_weight, sampler, padding=padding, value=value, pad_to=pad_to,
                   truncating=opts.truncating, dtype=opts.dtype,
                   allow_nonfinite=opts.allow_nonfinite, targets=targets,
                   targets_field=opts.targets_field, epoch=epoch)
    layout = resolve_data_parallel(opts.data_parallel, caller="bucketed_dataset")
    if layout is not None:
        stage = _inputs.with_fill(stage)
    index_ds, passes = _index_dataset(sampler, stage, epoch, epochs, reshuffle_each_iteration,
                                      layout)

    # Captured once as tensors; each batch then costs a few gathers of size batch x width.
    consts = stage.convert(tf.constant)
    if passes is not None:
        passes.data = _stage_digest(consts, arguments)
    fixed = _fixed_shapes(stage)

    def make_batch(idx: tf.Tensor, width: tf.Tensor, scale: tf.Tensor) -> Any:
        batch = _inputs.gather(consts, idx, width, _TF_KERNEL_OPS,
                               scale=None if layout is None else scale)
        if fixed is not None:
            batch = (_ensure_shapes(stage, batch[0], fixed), *batch[1:])
        return batch[0] if len(batch) == 1 else batch

    ds = index_ds.map(make_batch, num_parallel_calls=_AUTOTUNE, deterministic=True)
    expected = len(sampler) * epochs
    if int(ds.cardinality()) != expected:
        ds = ds.apply(tf.data.experimental.assert_cardinality(expected))
    ds = ds.prefetch(_AUTOTUNE)
    ds._seqprep_passes = passes  # how seqprep.BackupAndRestore finds this dataset's passes
    return ds


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
    return _inputs.pack(stage.x_kind, stage.x_keys, items)


# bucket_by_length moved to seqprep.running._streaming; kept importable from here.
from seqprep.running._streaming import bucket_by_length  # noqa: E402, F401
