"""tf.data adapter: padded batches that follow a :class:`~seqprep.BucketSampler`'s plan.

:func:`bucketed_dataset` turns in-memory sequences into a ``tf.data.Dataset`` of padded batches in
exactly the order a sampler planned. The data live once in TensorFlow in ragged form (flat values
plus row offsets, from :func:`seqprep._ragged.as_ragged`); the dataset itself only streams the
plan's index arrays, and each batch is gathered and padded in one vectorised ``tf.gather`` (no
Python per element or per batch while training).

The streaming counterparts for ``dataset.apply(...)``, for data that do not fit in memory,
live in :mod:`seqprep.streaming` (``bucket_by_length`` stays importable from here).

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
from numpy.typing import DTypeLike

from seqprep import _kernel
from seqprep._casts import check_cast
from seqprep._checks import (
    check_bool,
    check_choice,
    check_finite_features,
    check_finite_labels,
    check_int,
    check_sampler,
    needs_sampler,
    warn_deprecated,
)
from seqprep._data_parallel import Layout, resolve_data_parallel
from seqprep._ragged import Ragged, as_ragged
from seqprep.bucketing import BucketSampler
from seqprep.bucketing.fill import fill_batches
from seqprep.bucketing.shapes import compiling_backend, resolve_pad_to
from seqprep.masking import _WeightOps
from seqprep.padding import Side, pad_sequences
from seqprep.targets import Targets, resolve_targets

__all__ = ["bucket_by_length", "bucketed_dataset"]

PadTo = Literal["auto", "batch", "bucket"]

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

# The per-step weight formula (seqprep.masking._step_weights) spelled in TensorFlow ops.
_TF_WEIGHT_OPS = _WeightOps(
    as_float32=lambda a: tf.cast(a, tf.float32),
    count=lambda a: tf.cast(tf.size(a), tf.float32),
    total=tf.reduce_sum,
    divide_no_nan=tf.math.divide_no_nan,
)


# The kernel (seqprep._kernel) spelled in TensorFlow ops, for tf.data maps.
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


def _default_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a batch gets when the caller does not choose: floats become float32."""
    if dtype.kind == "f" and dtype.itemsize > 4:
        return np.dtype(np.float32)
    return dtype


def _resolve_dtype(dtype: DTypeLike | None, source: np.dtype) -> np.dtype:
    if dtype is None:
        if source.kind == "O":
            # as_ragged keeps integers no 64-bit dtype holds (or such integers mixed with
            # floats) as Python objects, so that nothing is rounded behind the caller's back.
            raise ValueError(
                "Argument `dtype` is None, but `x` holds integers that no 64-bit dtype holds "
                "exactly (past 64 bits, or past 2**53 mixed with floats). Received: dtype=None\n"
                "- If rounding is fine, pass `dtype='float64'`; if they are ids, map them to "
                "small integers first."
            )
        return _default_dtype(source)
    try:
        return np.dtype(dtype)
    except TypeError:
        raise TypeError(
            f"Argument `dtype` is not a numpy dtype. Received: dtype={dtype!r}"
        ) from None


def _values_with_pad_row(
    rag: Ragged, dtype: np.dtype, value: Any, name: str = "sequences"
) -> np.ndarray:
    """``rag.values`` cast to ``dtype`` with one extra step holding ``value`` at the end.

    Padding the whole collection as one long row through :func:`pad_sequences` reuses its
    refusal to lose data (float to int, overflow, NaN) and its check of the padding value, and
    the extra step is where every padded position of a batch gathers from. The cast is
    checked here first so that a refusal names the caller's position, ``name[i][t]``, not a
    step of the long row.
    """
    check_cast(rag.values, dtype, locate=rag.locator(name))
    total = int(rag.values.shape[0])
    one_row = Ragged(rag.values, np.array([0, total], dtype=np.int64))
    return pad_sequences(one_row, maxlen=total + 1, dtype=dtype, padding="post", value=value)[0]


# --------------------------------------------------------------------------- bucketed_dataset


def _label_array(y: Any, name: str, n: int) -> np.ndarray:
    arr = np.asarray(y.numpy() if hasattr(y, "numpy") else y)
    if arr.ndim == 0:
        raise ValueError(
            f"Argument `{name}` must have one entry per sequence (shape (n, ...)). "
            f"Received a scalar: {name}={arr!r}"
        )
    if arr.shape[0] != n:
        raise ValueError(
            f"Argument `{name}` must have one entry per sequence of `x` ({n}). "
            f"Received {arr.shape[0]} entries\n- Pass one {name} per sequence, in the same order."
        )
    if arr.dtype.kind in "OUS":
        raise ValueError(
            f"Argument `{name}` must be numeric. Received dtype {arr.dtype}\n"
            "- If these are class names, map them to integer ids first."
        )
    return arr


def _cast_labels(arr: np.ndarray, name: str) -> np.ndarray:
    target = _default_dtype(arr.dtype)
    if target == arr.dtype:
        return arr
    check_cast(
        arr, target, name=name,
        header=f"Argument `{name}` cannot become {target.name} (the dataset's label dtype) "
               "without losing data",
        locate=lambda i: f"{name}[{', '.join(map(str, np.unravel_index(i, arr.shape)))}]",
    )
    return arr.astype(target)


def _checked_inputs(
    x: Any, sampler: BucketSampler, pad_to: Any, epoch: int, allow_nonfinite: bool
) -> tuple[Ragged, np.ndarray, Any]:
    """The validation phase every executor of a sampler's plan shares.

    Returns ``x`` in ragged form, the lengths the sampler planned (after truncation) and
    ``pad_to`` resolved for this backend (``"batch"``, ``"bucket"``, an int or a width grid).
    """
    if isinstance(pad_to, str) or pad_to is None:
        check_choice("pad_to", pad_to, ("auto", "batch", "bucket"))
    elif np.isscalar(pad_to):
        pad_to = check_int(
            "pad_to", pad_to, minimum=1,
            fix='Pass pad_to="batch", pad_to="bucket" or a positive width.',
        )
    # else: a width grid, checked against the sampler by resolve_pad_to
    rag = as_ragged(x, "x")
    check_finite_features(rag.values, "x", offsets=rag.offsets, allow_nonfinite=allow_nonfinite)
    lengths = check_sampler(sampler, rag.lengths, BucketSampler)
    pad_to = resolve_pad_to(pad_to, sampler, backend=_compiling_backend(), epoch=epoch)
    if isinstance(pad_to, int) and lengths.size and int(lengths.max()) > pad_to:
        i = int(np.argmax(lengths))
        raise ValueError(
            f"Argument `pad_to`={pad_to} is shorter than sequence {i} of `x` "
            f"(length {int(lengths[i])}).\n"
            f"- Pass pad_to>={int(lengths.max())}, or build the sampler with "
            f"max_length={pad_to}, overlong='truncate'."
        )
    return rag, lengths, pad_to


def _target_table(
    y: Any, lengths: np.ndarray, targets: Targets
) -> tuple[str | None, np.ndarray | None]:
    """``(mode, table)`` of ``y`` by the one targets rule, checked and ready to gather.

    ``"step"``: the flat per-step values plus one pad step (see ``_values_with_pad_row``);
    ``"sequence"``: one label row per sequence; ``(None, None)`` without ``y``. Shared by every
    executor that pads from a plan (``bucketed_dataset``, ``bucketed_pydataset``).
    """
    if y is None:
        return None, None
    mode, resolved = resolve_targets(y, lengths, targets=targets)
    if mode == "step":
        check_finite_labels(resolved.values, "y", offsets=resolved.offsets)
        table = _values_with_pad_row(resolved, _default_dtype(resolved.values.dtype), 0, "y")
        return "step", table
    labels = _cast_labels(_label_array(resolved, "y", lengths.size), "y")
    check_finite_labels(labels, "y")
    return "sequence", labels


def _parse_weights(
    sample_weight: Any, n: int, has_y: bool
) -> tuple[str | None, np.ndarray | None]:
    """Return ``(mode, per_sequence_weights)``; mode is None, "sequence" or a timestep mode."""
    if sample_weight is True or sample_weight is False:
        instead = '"timestep"' if sample_weight else "None"
        warn_deprecated(
            f"`sample_weight={sample_weight}` is deprecated and will be removed; pass "
            f"`sample_weight={instead}` instead (same result)."
        )
    if sample_weight is None or sample_weight is False:
        return None, None
    if not has_y:
        raise ValueError(
            "Argument `sample_weight` needs `y`: Keras weights the loss against targets.\n"
            "- Pass `y`, or drop `sample_weight`."
        )
    if sample_weight is True:
        return "timestep", None
    if isinstance(sample_weight, str):
        check_choice("sample_weight", sample_weight, ("timestep", "timestep_mean"))
        return sample_weight, None
    arr = _label_array(sample_weight, "sample_weight", n)
    if arr.ndim != 1 or arr.dtype.kind not in "biuf":
        raise ValueError(
            "Argument `sample_weight` must be one number per sequence (shape (n,)), "
            "'timestep' or 'timestep_mean'. "
            f"Received an array of shape {arr.shape} and dtype {arr.dtype}\n"
            "- For per-timestep weights that zero the padding, pass sample_weight='timestep'."
        )
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(
            "Argument `sample_weight` must hold finite numbers. "
            f"Received: sample_weight[{bad}]={arr[bad]!r}\n"
            "- Give that sequence a finite weight (0 leaves it out of the loss)."
        )
    check_cast(
        arr, np.float32, name="sample_weight", locate=lambda i: f"sample_weight[{i}]",
        header="Argument `sample_weight` does not fit float32, the type Keras weighs the loss in",
    )
    return "sequence", arr.astype(np.float32)


def _compiling_backend() -> str | None:
    """The Keras backend's name if it compiles one program per input shape, else None."""
    import keras  # noqa: F401  (Keras resolves its backend; the shared rule reads it)

    return compiling_backend()


def _plan_arrays(
    sampler: BucketSampler, epoch: int, lengths: np.ndarray, pad_to: Any,
    layout: Layout | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One epoch's plan as flat indices, rows per batch, the padded width of each batch and
    the weight scale of each batch (1 unless ``layout`` fills batches with weight-0 rows:
    then this process's rows of every batch, topped up to a multiple of ``layout.size``
    with the fill row ``lengths.size``; widths are those of the whole, global batch)."""
    plan = sampler.plan(epoch)
    widths = plan.widths(pad_to, lengths)
    if layout is None:
        return plan.rows, plan.sizes, widths, np.ones(widths.size, np.float32)
    filled = fill_batches(plan.rows, plan.splits, multiple_of=layout.size,
                          fill_index=int(lengths.size), num_processes=layout.num_processes,
                          process_index=layout.process_index)
    return filled.rows, filled.sizes, widths, filled.scales.astype(np.float32)


def _index_dataset(
    sampler: BucketSampler,
    lengths: np.ndarray,
    pad_to: Any,
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
        return slices(*_plan_arrays(sampler, epoch, lengths, pad_to, layout)), None

    def plan_of(e: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return _plan_arrays(sampler, int(e), lengths, pad_to, layout)

    def epoch_batches(e: tf.Tensor, start: tf.Tensor) -> tf.data.Dataset:
        flat, sizes, widths, scales = tf.numpy_function(
            plan_of, [e], (tf.int64, tf.int64, tf.int64, tf.float32), stateful=True
        )
        flat.set_shape([None])
        widths.set_shape([None])
        scales.set_shape([None])
        splits = tf.concat([[0], tf.cumsum(sizes)], 0)
        # Slicing by position rather than from a RaggedTensor: inside flat_map, ragged slices
        # trip a (harmless but loud) TensorFlow type-inference warning.
        return tf.data.Dataset.range(start, tf.size(widths, out_type=tf.int64)).map(
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


def _batch_table(
    rag: Ragged, lengths: np.ndarray, sampler: Any, y: Any, targets: Targets,
    sample_weight: Any, truncating: str, dtype: DTypeLike | None, value: Any,
    fill: bool = False,
) -> _kernel.Table:
    """The kernel's table of a sampler's executor (``bucketed_dataset``,
    ``bucketed_pydataset``): inputs cast and padded, targets and weights checked; with
    ``fill``, the zero-length fill row and the weights that keep it out of the loss."""
    raw_lengths = rag.lengths
    y_mode, y_table = _target_table(y, raw_lengths, targets)
    w_mode, w_arr = _parse_weights(sample_weight, raw_lengths.size, y is not None)
    if fill and y_mode is not None and w_mode is None:
        w_mode, w_arr = fill_weight_mode(y_mode, raw_lengths.size)
    x_values = _values_with_pad_row(rag, _resolve_dtype(dtype, rag.values.dtype), value, "x")
    starts = rag.offsets[:-1].astype(np.int64)
    if sampler.length_limit is not None and truncating == "pre":
        starts = starts + (raw_lengths - lengths)
    return _kernel.table(
        x_values, starts, lengths,
        y=y_table, y_mode=y_mode, w=w_arr, w_mode=w_mode, fill=fill,
    )


def fill_weight_mode(y_mode: str, n: int) -> tuple[str, np.ndarray | None]:
    """The weights a batch with fill rows carries when the caller gave none: weight 1 on
    every real row (per-sequence targets) or real step (per-step targets), 0 on fill rows.

    Per-step targets get ``"timestep"`` weights, under which the loss equals the one-device
    loss wherever that is the mean over real steps (a Keras mask reaching the loss, or a loss
    built with ``"mean_with_sample_weight"``)."""
    if y_mode == "sequence":
        return "sequence", np.ones(n, np.float32)
    return "timestep", None


@needs_sampler("BucketSampler")
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
    epochs: int = 1,
    reshuffle_each_iteration: bool = True,
    truncating: Side = "post",
    dtype: DTypeLike | None = None,
    allow_nonfinite: bool = False,
    targets: Targets = "auto",
    data_parallel: int | Literal["auto"] | None = "auto",
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
    ``len(sampler) * epochs``. Under ``model.fit`` with :class:`seqprep.BackupAndRestore`
    (or in :func:`seqprep.fit_per_length`), Keras epoch ``e`` plays sampler epoch
    ``epoch + e`` exactly, which is what makes a run resumable mid-epoch. Pass
    ``reshuffle_each_iteration=False`` to replay the same epoch(s) on every pass (the dataset
    is then made of constants only, as the tf.data service needs). Keras's warning that
    ``shuffle=True`` is ignored for a ``tf.data.Dataset`` is silenced when a dataset is
    built: these datasets are shuffled by their sampler.

    Data parallelism: with ``keras.distribution.set_distribution(DataParallel(...))`` on JAX
    (or ``data_parallel=k``), Keras splits every batch's rows over ``k`` devices, so each
    batch is topped up to a multiple of ``k`` rows with *fill rows*: all padding, target 0,
    weight 0, never a copy of an example. A weight column is then always emitted (1 per
    real row or real step when ``sample_weight`` is None), and the weights of per-sequence
    targets are scaled by rows / real rows, so that the loss, the gradient and weighted
    metrics of each batch equal the one-device run of the same plan (per-step targets: see
    the "Scaling out" section of the distributed guide). With several processes
    (``jax.distributed``), each process yields its rows of every batch, all at the batch's
    width; build the distribution with ``auto_shard_dataset=False``.

    Args:
        x: a sequence collection (list of arrays or lists, ``tf.RaggedTensor``, array
            ``(n, T, ...)``, pandas Series of arrays).
        y: optional per-sequence labels or per-timestep targets (see above).
        sampler: a :class:`BucketSampler` built on ``sequence_lengths(x)``.
        padding: ``"post"`` (default; what the cuDNN RNN kernel needs) or ``"pre"``.
        value: padding value of ``x``; must be representable in its dtype.
        sample_weight: ``None``, an array ``(n,)``, ``"timestep"`` or ``"timestep_mean"``
            (``True``/``False``, deprecated, mean ``"timestep"``/``None`` and warn).
        pad_to: ``"auto"``, ``"batch"``, ``"bucket"``, a fixed int width or a width grid.
        epoch: the sampler epoch to play (the first one when ``epochs > 1``).
        epochs: how many consecutive sampler epochs the dataset holds.
        reshuffle_each_iteration: play the next epochs on every new pass over the dataset
            (the default); False replays the same epochs on every pass.
        truncating: which steps a sampler built with ``overlong="truncate"`` cuts from
            overlong sequences: ``"post"`` keeps the first ``sampler.length_limit`` steps,
            ``"pre"`` the last ones.
        dtype: dtype of the ``x`` batches (default: see above).
        allow_nonfinite: accept NaN/inf in ``x`` (refused by default; NaN/inf in ``y`` are
            always refused). See "What seqprep refuses" in the padding and masking guide.
        targets: ``"auto"`` (default), ``"sequence"`` or ``"step"``: whether ``y`` holds one
            target per sequence or one per step (see :func:`seqprep.resolve_targets`).
        data_parallel: ``"auto"`` (default): when a ``keras.distribution`` layout with a
            batch axis of ``k > 1`` devices is set (JAX), every batch is topped up to a
            multiple of ``k`` rows with weight-0 fill rows (see "Data parallelism" above);
            an int ``k`` asks for that; ``None`` never fills.

    Returns:
        A ``tf.data.Dataset`` with ``cardinality() == len(sampler) * epochs``.

    Raises:
        ValueError: ``x``, ``y`` or ``sample_weight`` of different lengths, a sampler built
            on other lengths, unknown ``padding``/``pad_to``/``truncating``/``sample_weight``
            mode, a sequence longer than an int ``pad_to``, or a lossy ``dtype``.
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
    """
    check_choice("padding", padding, ("pre", "post"))
    check_choice("truncating", truncating, ("pre", "post"))
    check_choice("targets", targets, ("auto", "sequence", "step"))
    _quiet_keras_shuffle_warning()
    epoch = check_int("epoch", epoch, minimum=0)
    epochs = check_int("epochs", epochs, minimum=1)
    check_bool("reshuffle_each_iteration", reshuffle_each_iteration)
    rag, lengths, pad_to = _checked_inputs(x, sampler, pad_to, epoch, allow_nonfinite)
    # Targets and weights, checked before any TensorFlow work.
    layout = resolve_data_parallel(data_parallel, caller="bucketed_dataset")
    table = _batch_table(rag, lengths, sampler, y, targets, sample_weight, truncating,
                         dtype, value, fill=layout is not None)
    index_ds, passes = _index_dataset(
        sampler, lengths, pad_to, epoch, epochs, reshuffle_each_iteration, layout
    )

    # Captured once as tensors; each batch then costs a few gathers of size batch x width.
    consts = table.convert(tf.constant)
    fixed_shape = None
    if isinstance(pad_to, int):
        fixed_shape = [None, pad_to, *table.x.shape[1:]]

    def make_batch(idx: tf.Tensor, width: tf.Tensor, scale: tf.Tensor) -> Any:
        src, real = _kernel.positions(consts.starts, consts.lengths, idx, width, padding,
                                      table.pad_index, _TF_KERNEL_OPS)
        batch = _kernel.gather_batch(consts, src, real, idx, ops=_TF_KERNEL_OPS,
                                     scale=scale if table.fill else None)
        if fixed_shape is not None:
            batch = (tf.ensure_shape(batch[0], fixed_shape), *batch[1:])
        return batch[0] if len(batch) == 1 else batch

    ds = index_ds.map(make_batch, num_parallel_calls=_AUTOTUNE, deterministic=True)
    expected = len(sampler) * epochs
    if int(ds.cardinality()) != expected:
        ds = ds.apply(tf.data.experimental.assert_cardinality(expected))
    ds = ds.prefetch(_AUTOTUNE)
    ds._seqprep_passes = passes  # how seqprep.BackupAndRestore finds this dataset's passes
    return ds


# bucket_by_length moved to seqprep.streaming; kept importable from here.
from seqprep.streaming import bucket_by_length  # noqa: E402, F401
