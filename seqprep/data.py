"""tf.data adapters: padded batches that follow a :class:`~seqprep.BucketSampler`'s plan, and a
streaming bucketing transformation.

:func:`bucketed_dataset` turns in-memory sequences into a ``tf.data.Dataset`` of padded batches in
exactly the order a sampler planned. The data live once in TensorFlow in ragged form (flat values
plus row offsets, from :func:`seqprep._ragged.as_ragged`); the dataset itself only streams the
plan's index arrays, and each batch is gathered and padded in one vectorised ``tf.gather`` (no
Python per element or per batch while training).

:func:`bucket_by_length` is the streaming counterpart for ``dataset.apply(...)``, for data that
do not fit in memory: bounded pools of elements, each shuffled (seeded), bucketed and cut into
batches in a few vectorised ops, with a fixed batch size or a token budget.

Dtypes (both adapters): integer and boolean steps keep their dtype; floating steps wider than
32 bits become ``float32`` (Keras's float type) after a check that no value overflows; pass
``dtype=`` to choose. Nothing is cast silently where values would change: the checks are
:func:`seqprep.pad_sequences`'s.
"""

from __future__ import annotations

import numbers
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import tensorflow as tf
from numpy.typing import DTypeLike

from seqprep._checks import check_choice, check_int
from seqprep._ragged import Ragged, as_ragged, lengths_of
from seqprep.bucketing import BucketSampler, as_boundaries
from seqprep.bucketing.boundaries import (
    batch_capacity,
    check_quadratic_length,
    token_length_limit,
)
from seqprep.bucketing.shapes import resolve_pad_to
from seqprep.padding import pad_sequences

__all__ = ["bucket_by_length", "bucketed_dataset"]

Side = Literal["pre", "post"]
PadTo = Literal["auto", "batch", "bucket"]
WeightMode = Literal["timestep", "timestep_mean"]

_AUTOTUNE = tf.data.AUTOTUNE


# --------------------------------------------------------------------------- shared helpers


def _default_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a batch gets when the caller does not choose: floats become float32."""
    if dtype.kind == "f" and dtype.itemsize > 4:
        return np.dtype(np.float32)
    return dtype


def _resolve_dtype(dtype: DTypeLike | None, source: np.dtype) -> np.dtype:
    if dtype is None:
        return _default_dtype(source)
    try:
        return np.dtype(dtype)
    except TypeError:
        raise TypeError(
            f"Argument `dtype` is not a numpy dtype. Received: dtype={dtype!r}"
        ) from None


def _values_with_pad_row(rag: Ragged, dtype: np.dtype, value: Any) -> np.ndarray:
    """``rag.values`` cast to ``dtype`` with one extra step holding ``value`` at the end.

    Padding the whole collection as one long row through :func:`pad_sequences` reuses its
    refusal to lose data (float to int, overflow, NaN) and its check of the padding value, and
    the extra step is where every padded position of a batch gathers from.
    """
    total = int(rag.values.shape[0])
    one_row = Ragged(rag.values, np.array([0, total], dtype=np.int64))
    return pad_sequences(one_row, maxlen=total + 1, dtype=dtype, padding="post", value=value)[0]


# --------------------------------------------------------------------------- bucketed_dataset


def _check_sampler(sampler: Any, lengths: np.ndarray) -> np.ndarray:
    """Check that ``sampler`` planned these sequences; return the lengths it planned."""
    if not isinstance(sampler, BucketSampler):
        raise TypeError(
            "Argument `sampler` must be a seqprep.BucketSampler. "
            f"Received: sampler of type {type(sampler).__name__}\n"
            "- Build one from the lengths: `BucketSampler(sequence_lengths(x), batch_size=...)`."
        )
    planned = np.asarray(sampler.lengths)
    if planned.size != lengths.size:
        raise ValueError(
            f"Argument `sampler` was built on {planned.size} lengths, but `x` has "
            f"{lengths.size} sequences.\n"
            "- Build the sampler from this data: `BucketSampler(sequence_lengths(x), ...)`."
        )
    limit = sampler.length_limit
    expected = lengths if limit is None else np.minimum(lengths, limit)
    differ = np.flatnonzero(planned != expected)
    if differ.size:
        i = int(differ[0])
        raise ValueError(
            f"Argument `sampler` was built on other lengths than `x`'s: {differ.size} differ, "
            f"the first at position {i} (sampler: {int(planned[i])}, x: {int(lengths[i])}).\n"
            "- Build the sampler from this data: `BucketSampler(sequence_lengths(x), ...)`."
        )
    return planned


def _is_dense_array(y: Any) -> bool:
    if isinstance(y, np.ndarray):
        return y.dtype != object
    return (
        type(y).__module__.startswith("tensorflow")
        and hasattr(y, "numpy")
        and not hasattr(y, "row_splits")
    )


def _per_timestep(y: Any, lengths: np.ndarray) -> bool:
    """Whether ``y`` holds one target per time step (a sequence collection matching ``x``)."""
    if _is_dense_array(y):
        return False
    if isinstance(y, Ragged) or hasattr(y, "row_splits"):
        return True
    try:
        y_lengths = lengths_of(y, "y")
    except (TypeError, ValueError):
        return False  # scalars: one label per sequence
    if y_lengths.size == lengths.size and np.array_equal(y_lengths, lengths):
        return True
    try:
        labels = np.asarray(y)
    except ValueError:
        labels = None
    if labels is None or labels.dtype == object:
        if y_lengths.size == lengths.size:
            i = int(np.flatnonzero(y_lengths != lengths)[0])
            raise ValueError(
                "Argument `y` holds sequences of targets, but their lengths differ from `x`'s: "
                f"y[{i}] has {int(y_lengths[i])} steps, x[{i}] has {int(lengths[i])}.\n"
                "- Per-timestep targets need one target per step of each input sequence."
            )
        return True  # the length mismatch is reported by the caller
    return False


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
    flat = Ragged(arr.reshape((arr.shape[0], -1)) if arr.ndim > 1 else arr,
                  np.array([0, arr.shape[0]], dtype=np.int64))
    try:
        out = pad_sequences(flat, dtype=target, padding="post", value=0)[0]
    except ValueError as err:
        raise ValueError(f"Argument `{name}`: {err}") from None
    return out.reshape(arr.shape)


def _parse_weights(
    sample_weight: Any, n: int, has_y: bool
) -> tuple[str | None, np.ndarray | None]:
    """Return ``(mode, per_sequence_weights)``; mode is None, "sequence" or a timestep mode."""
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
    if not np.all(np.isfinite(arr)):
        raise ValueError("Argument `sample_weight` holds NaN or infinite values.")
    return "sequence", arr.astype(np.float32)


def _compiling_backend() -> str | None:
    """The Keras backend's name if it compiles one program per input shape, else None."""
    import keras

    backend = keras.config.backend()
    return backend if backend == "jax" else None


def _plan_arrays(
    sampler: BucketSampler, epoch: int, lengths: np.ndarray, pad_to: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epoch's plan as flat indices, rows per batch and the padded width of each batch."""
    plan = sampler.plan(epoch)
    sizes = np.fromiter((b.size for b in plan.batches), dtype=np.int64, count=len(plan.batches))
    flat = np.concatenate(plan.batches) if plan.batches else np.zeros(0, np.int64)
    flat = flat.astype(np.int64, copy=False)
    if isinstance(pad_to, np.ndarray):  # a width grid, as the padded width of each bucket
        widths = pad_to[plan.buckets]
    elif pad_to == "bucket":
        widths = np.asarray(plan.pad_lengths, dtype=np.int64)
    elif pad_to == "batch":
        widths = np.zeros(sizes.size, np.int64)
        nonempty = sizes > 0
        if flat.size:
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])[nonempty]
            widths[nonempty] = np.maximum.reduceat(lengths[flat], starts)
    else:
        widths = np.full(sizes.size, pad_to, np.int64)
    return flat, sizes, widths


def _index_dataset(
    sampler: BucketSampler,
    lengths: np.ndarray,
    pad_to: Any,
    epoch: int,
    epochs: int,
    reshuffle_each_iteration: bool,
) -> tf.data.Dataset:
    """A dataset of ``(indices, width)``, one element per batch of the planned epochs."""

    def slices(flat: Any, sizes: Any, widths: Any) -> tf.data.Dataset:
        rows = tf.RaggedTensor.from_row_lengths(flat, sizes, validate=False)
        return tf.data.Dataset.from_tensor_slices((rows, widths))

    if epochs == 1 and not reshuffle_each_iteration:
        # One fixed plan: constants only, no Python at iteration time (serialisable).
        return slices(*_plan_arrays(sampler, epoch, lengths, pad_to))

    def plan_of(e: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _plan_arrays(sampler, int(e), lengths, pad_to)

    def epoch_batches(e: tf.Tensor) -> tf.data.Dataset:
        flat, sizes, widths = tf.numpy_function(
            plan_of, [e], (tf.int64, tf.int64, tf.int64), stateful=True
        )
        flat.set_shape([None])
        widths.set_shape([None])
        splits = tf.concat([[0], tf.cumsum(sizes)], 0)
        # Slicing by position rather than from a RaggedTensor: inside flat_map, ragged slices
        # trip a (harmless but loud) TensorFlow type-inference warning.
        return tf.data.Dataset.range(tf.size(widths, out_type=tf.int64)).map(
            lambda i: (flat[splits[i] : splits[i + 1]], widths[i])
        )

    if reshuffle_each_iteration:
        counter = _IterationCounter(epoch, epochs)
        first = tf.data.Dataset.range(1).map(
            lambda _: tf.numpy_function(counter.next, [], tf.int64, stateful=True)
        )
        epoch_ids = first.flat_map(
            lambda base: tf.data.Dataset.range(epochs).map(lambda j: base + j)
        )
    else:
        epoch_ids = tf.data.Dataset.range(epoch, epoch + epochs)
    return epoch_ids.flat_map(epoch_batches)


class _IterationCounter:
    """First epoch of each new pass over a reshuffling dataset: ``epoch``, ``epoch + epochs``..."""

    def __init__(self, epoch: int, epochs: int) -> None:
        self._next = epoch
        self._step = epochs
        self._lock = threading.Lock()

    def next(self) -> np.int64:
        with self._lock:
            value, self._next = self._next, self._next + self._step
        return np.int64(value)


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
    reshuffle_each_iteration: bool = False,
    truncating: Side = "post",
    dtype: DTypeLike | None = None,
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
      ``x`` (with 0), when ``y`` is a sequence collection whose lengths equal ``x``'s.
    * ``sample_weight``: an array ``(n,)`` gives per-sequence weights ``(batch,)``;
      ``"timestep"`` (or ``True``) gives float32 ``(batch, T)`` weights, 1 on real steps and
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

    Epochs: ``epoch`` picks the sampler's epoch, so every pass over the dataset replays that
    epoch's plan. For a fresh order each epoch of ``model.fit(ds, epochs=N)``, either build
    ``bucketed_dataset(..., epochs=N)`` (epochs ``epoch .. epoch + N - 1`` back to back,
    deterministic and resumable) and call ``model.fit(ds, epochs=N,
    steps_per_epoch=len(sampler))``; or pass ``reshuffle_each_iteration=True``: pass ``k``
    over the dataset then plays epoch ``epoch + k`` (like ``Dataset.shuffle``'s flag; the
    count lives in this Python process).

    Args:
        x: a sequence collection (list of arrays or lists, ``tf.RaggedTensor``, array
            ``(n, T, ...)``, pandas Series of arrays).
        y: optional per-sequence labels or per-timestep targets (see above).
        sampler: a :class:`BucketSampler` built on ``sequence_lengths(x)``.
        padding: ``"post"`` (default; what the cuDNN RNN kernel needs) or ``"pre"``.
        value: padding value of ``x``; must be representable in its dtype.
        sample_weight: ``None``, an array ``(n,)``, ``"timestep"``/``True`` or
            ``"timestep_mean"``.
        pad_to: ``"auto"``, ``"batch"``, ``"bucket"``, a fixed int width or a width grid.
        epoch: the sampler epoch to play (the first one when ``epochs > 1``).
        epochs: how many consecutive sampler epochs the dataset holds.
        reshuffle_each_iteration: play the next epochs on every new pass over the dataset.
        truncating: which steps a sampler built with ``overlong="truncate"`` cuts from
            overlong sequences: ``"post"`` keeps the first ``sampler.length_limit`` steps,
            ``"pre"`` the last ones.
        dtype: dtype of the ``x`` batches (default: see above).

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
    if isinstance(pad_to, str) or pad_to is None:
        check_choice("pad_to", pad_to, ("auto", "batch", "bucket"))
    elif not np.isscalar(pad_to):
        pass  # a width grid: checked against the sampler by resolve_pad_to
    else:
        pad_to = check_int(
            "pad_to", pad_to, minimum=1,
            fix='Pass pad_to="batch", pad_to="bucket" or a positive width.',
        )
    epoch = check_int("epoch", epoch, minimum=0)
    epochs = check_int("epochs", epochs, minimum=1)
    if not isinstance(reshuffle_each_iteration, (bool, np.bool_)):
        raise TypeError(
            "Argument `reshuffle_each_iteration` must be True or False. "
            f"Received: reshuffle_each_iteration={reshuffle_each_iteration!r}"
        )

    rag = as_ragged(x, "x")
    raw_lengths = rag.lengths
    n = raw_lengths.size
    lengths = _check_sampler(sampler, raw_lengths)
    pad_to = resolve_pad_to(pad_to, sampler, backend=_compiling_backend(), epoch=epoch)
    if isinstance(pad_to, int) and n and int(lengths.max()) > pad_to:
        i = int(np.argmax(lengths))
        raise ValueError(
            f"Argument `pad_to`={pad_to} is shorter than sequence {i} of `x` "
            f"(length {int(lengths[i])}).\n"
            f"- Pass pad_to>={int(lengths.max())}, or build the sampler with "
            f"max_length={pad_to}, overlong='truncate'."
        )

    # Targets and weights, checked before any TensorFlow work.
    y_mode: str | None = None
    y_rag: Ragged | None = None
    y_arr: np.ndarray | None = None
    if y is not None:
        if _per_timestep(y, raw_lengths):
            y_rag = as_ragged(y, "y")
            if len(y_rag) != n or not np.array_equal(y_rag.lengths, raw_lengths):
                if len(y_rag) != n:
                    raise ValueError(
                        f"Arguments `x` and `y` must have the same number of sequences. "
                        f"Received {n} and {len(y_rag)}"
                    )
                i = int(np.flatnonzero(y_rag.lengths != raw_lengths)[0])
                raise ValueError(
                    "Argument `y` holds sequences of targets whose lengths differ from `x`'s: "
                    f"y[{i}] has {int(y_rag.lengths[i])} steps, x[{i}] has "
                    f"{int(raw_lengths[i])}.\n- Per-timestep targets need one target per step "
                    "of each input sequence."
                )
            y_mode = "timestep"
        else:
            y_arr = _cast_labels(_label_array(y, "y", n), "y")
            y_mode = "sequence"
    w_mode, w_arr = _parse_weights(sample_weight, n, y is not None)

    x_dtype = _resolve_dtype(dtype, rag.values.dtype)
    x_values = _values_with_pad_row(rag, x_dtype, value)
    pad_index = int(rag.values.shape[0])
    starts = rag.offsets[:-1]
    if sampler.length_limit is not None and truncating == "pre":
        starts = starts + (raw_lengths - lengths)
    y_values = None
    if y_rag is not None:
        y_values = _values_with_pad_row(y_rag, _default_dtype(y_rag.values.dtype), 0)

    index_ds = _index_dataset(sampler, lengths, pad_to, epoch, epochs, reshuffle_each_iteration)

    # Captured once as tensors; each batch then costs a few gathers of size batch x width.
    t_x = tf.constant(x_values)
    t_len = tf.constant(lengths)
    t_start = tf.constant(starts.astype(np.int64))
    t_y = None if y_values is None and y_arr is None else tf.constant(
        y_values if y_values is not None else y_arr
    )
    t_w = None if w_arr is None else tf.constant(w_arr)
    post = padding == "post"
    fixed_width = pad_to if isinstance(pad_to, int) else None

    def make_batch(idx: tf.Tensor, width: tf.Tensor) -> Any:
        lens = tf.gather(t_len, idx)[:, None]
        steps = tf.range(width, dtype=tf.int64)[None, :]
        if post:
            real = steps < lens
            src = tf.gather(t_start, idx)[:, None] + steps
        else:
            shift = width - lens
            real = steps >= shift
            src = tf.gather(t_start, idx)[:, None] + steps - shift
        src = tf.where(real, src, pad_index)
        xb = tf.gather(t_x, src)
        if fixed_width is not None:
            xb = tf.ensure_shape(xb, [None, fixed_width, *x_values.shape[1:]])
        if y_mode is None:
            return xb
        yb = tf.gather(t_y, src) if y_mode == "timestep" else tf.gather(t_y, idx)
        if w_mode is None:
            return xb, yb
        if w_mode == "sequence":
            wb = tf.gather(t_w, idx)
        else:
            wb = tf.cast(real, tf.float32)
            if w_mode == "timestep_mean":
                wb = wb * tf.math.divide_no_nan(
                    tf.cast(tf.size(wb), tf.float32), tf.reduce_sum(wb)
                )
        return xb, yb, wb

    ds = index_ds.map(make_batch, num_parallel_calls=_AUTOTUNE, deterministic=True)
    expected = len(sampler) * epochs
    if int(ds.cardinality()) != expected:
        ds = ds.apply(tf.data.experimental.assert_cardinality(expected))
    return ds.prefetch(_AUTOTUNE)


# --------------------------------------------------------------------------- bucket_by_length


def _check_value(value: Any, dtype: tf.DType, name: str) -> tf.Tensor:
    if dtype == tf.string:
        return tf.constant(value if isinstance(value, (str, bytes)) else "", tf.string)
    np_dtype = np.dtype(dtype.as_numpy_dtype)
    if isinstance(value, (str, bytes)) or not isinstance(value, (numbers.Number, np.generic)):
        raise TypeError(
            f"Argument `value` must be a number (or a structure of numbers like the elements). "
            f"Received: value={value!r} for component {name}"
        )
    cast = np.asarray(value).astype(np_dtype)
    both_nan = np_dtype.kind == "f" and np.isnan(cast) and np.isnan(value)
    if cast != value and not both_nan:
        raise ValueError(
            f"Argument `value`={value!r} cannot be represented in the {np_dtype} component "
            f"{name}.\n- Pick a padding value that dtype holds (0 for integer tokens)."
        )
    return tf.constant(cast, dtype)


# Elements per pool when nothing is shuffled (``buffer_size`` None or 0). A pool is the unit of
# vectorised work: larger pools amortise the per-pool cost, smaller ones bound memory.
_POOL = 2048


# Bound on the elements of a `sparse_batch` (it needs a row shape, whose product must fit in
# int64; only the indices of real steps are stored).
_ANY_SIZE = 1 << 62


class _Consts:
    """Constants shared by the ops of one traced function.

    TensorFlow instantiates and optimises a ``tf.data`` function's graph again for each new
    iterator, at a cost per node, constants included: ``tf.gather``, ``tf.concat``, slicing
    and ``tf.range`` each add their own, so the per-pool function passes these instead.
    """

    def __init__(self) -> None:
        self.axis0 = tf.constant(0)
        self.axis1 = tf.constant(1)
        self.zero = tf.constant(0, tf.int64)
        self.one = tf.constant(1, tf.int64)
        self.minus1 = tf.constant(-1, tf.int64)
        self.one_vec = tf.constant([1], tf.int64)
        self.flat = tf.constant([-1], tf.int64)
        self.zero_vec = tf.constant([0], tf.int64)

    def gather(self, params: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
        return tf.gather(params, indices, axis=self.axis0)

    def concat(self, tensors: list[tf.Tensor]) -> tf.Tensor:
        return tf.concat(tensors, self.axis0)

    def positions(self, like: tf.Tensor) -> tf.Tensor:
        """``tf.range(tf.size(like))`` as int64."""
        return tf.cumsum(tf.ones_like(like, tf.int64), axis=self.axis0, exclusive=True)


def _pool_kind(spec: Any) -> str:
    """How a component is batched into a pool without a per-element function.

    ``"batch"``: fixed shapes and slices of a ragged tensor (``Dataset.batch`` makes the latter
    ragged); ``"sparse"``: a dense sequence ``(T, ...)`` with fixed, non-empty inner dimensions
    (``sparse_batch``); ``"ragged"``: any other varying shape (``ragged_batch``, which maps a
    function over the elements: correct, but slower).
    """
    if not isinstance(spec, tf.TensorSpec) or spec.shape.is_fully_defined():
        return "batch"
    inner = spec.shape[1:]
    if spec.shape[0] is None and inner.is_fully_defined() and inner.num_elements() > 0:
        return "sparse"
    return "ragged"


def _mode(pooled: Any) -> str:
    """How a pooled component (a value or its spec) is batched: ``"padded"`` (ragged rank 1:
    sliced and padded with two ops), ``"ragged"`` (higher ragged rank: the generic ragged slice
    and ``to_tensor``) or ``"dense"`` (sliced)."""
    if isinstance(pooled, (tf.RaggedTensor, tf.RaggedTensorSpec)):
        return "padded" if pooled.ragged_rank == 1 else "ragged"
    return "dense"


def _pool_leaf(window: tf.data.Dataset, kind: str, spec: Any, size: int) -> tf.data.Dataset:
    if kind == "sparse":
        inner = spec.shape[1:].as_list()
        longest = _ANY_SIZE // (size * int(np.prod(inner, dtype=np.int64)))
        return window.sparse_batch(size, [longest, *inner])
    if kind == "ragged":
        return window.ragged_batch(size)
    return window.batch(size)


def _sparse_to_ragged(
    sp: tf.SparseTensor, spec: Any, k: _Consts
) -> tuple[tf.RaggedTensor, tf.Tensor]:
    """The ``sparse_batch`` of dense sequences ``(T, *inner)`` as a ragged ``(n, None, *inner)``,
    and its lengths.

    Every step of every sequence is stored, in row-major order, so each ``prod(inner)``-th index
    starts a step and its first coordinate is the sequence's row: counting them per row gives
    the lengths.
    """
    inner = spec.shape[1:].as_list()
    step = int(np.prod(inner, dtype=np.int64))
    rows = sp.indices[::step, 0] if step > 1 else tf.gather(sp.indices, k.zero, axis=k.axis1)
    lengths = tf.math.unsorted_segment_sum(
        tf.ones_like(rows), rows, k.gather(sp.dense_shape, k.zero)
    )
    values = tf.reshape(sp.values, [-1, *inner]) if inner else sp.values
    splits = k.concat([k.zero_vec, tf.cumsum(lengths, axis=k.axis0)])
    return tf.RaggedTensor.from_row_splits(values, splits, validate=False), lengths


def _empty_pool(spec: Any) -> Any:
    """A pool of zero elements whose type is ``spec`` (a batched Tensor-, RaggedTensor- or
    SparseTensorSpec)."""
    if isinstance(spec, tf.SparseTensorSpec):
        shape = spec.shape.as_list()
        return tf.SparseTensor(tf.zeros([0, len(shape)], tf.int64), tf.zeros([0], spec.dtype),
                               [0, *shape[1:]])
    if isinstance(spec, tf.RaggedTensorSpec):
        inner = [0 if d is None else d for d in spec.shape[spec.ragged_rank + 1 :].as_list()]
        out = tf.zeros([0, *inner], spec.dtype)
        for _ in range(spec.ragged_rank):
            splits = tf.zeros([1], spec.row_splits_dtype)
            out = tf.RaggedTensor.from_row_splits(out, splits, validate=False)
        return out
    return tf.zeros([0] + [0 if d is None else d for d in spec.shape[1:].as_list()], spec.dtype)


def _unpacked_spec(spec: Any, kind: str) -> Any:
    """The spec of a pooled component once ``sparse_batch``'s output is made ragged."""
    if kind != "sparse":
        return spec
    return tf.RaggedTensorSpec([None, None, *spec.shape[2:].as_list()], spec.dtype,
                               ragged_rank=1, row_splits_dtype=tf.int64)


def _pool_lengths(component: Any) -> tf.Tensor:
    """Length (size of axis 1) of each element of a pooled component, as int64."""
    if isinstance(component, tf.RaggedTensor):
        return tf.cast(component.row_lengths(), tf.int64)
    shape = tf.shape(component, out_type=tf.int64)
    return tf.fill(shape[:1], shape[1])


def _slice_args(begin: tf.Tensor, size: tf.Tensor, of: Any) -> list[tf.Tensor]:
    """Per-row ``begin`` and ``size`` arguments of a ``tf.slice`` of ``of`` along axis 0, from
    ``(n, 1)`` columns: the other axes are taken whole."""
    if of.shape.rank == 1:
        return [begin, size]
    zeros = [tf.zeros_like(begin)] * (of.shape.rank - 1)
    return [tf.concat([begin, *zeros], 1), tf.concat([size, *(z - 1 for z in zeros)], 1)]


def _concat_rows(a: Any, b: Any, k: _Consts) -> Any:
    """``tf.concat([a, b], 0)``, with fewer ops for ragged tensors of ragged rank 1."""
    if isinstance(a, tf.RaggedTensor) and a.ragged_rank == 1:
        a_splits, b_splits = a.row_splits, b.row_splits
        offset = k.gather(a_splits, tf.size(a_splits, out_type=tf.int64) - k.one)
        splits = k.concat([a_splits, tf.slice(b_splits, k.one_vec, k.flat) + offset])
        values = k.concat([a.values, b.values])
        return tf.RaggedTensor.from_row_splits(values, splits, validate=False)
    if isinstance(a, tf.RaggedTensor):
        return tf.concat([a, b], 0)
    return k.concat([a, b])


def _gather_rows(x: Any, rows: tf.Tensor, k: _Consts) -> Any:
    """``tf.gather(x, rows)``, with fewer ops for ragged tensors of ragged rank 1."""
    if isinstance(x, tf.RaggedTensor) and x.ragged_rank == 1:
        splits, values = tf.raw_ops.RaggedGather(
            params_nested_splits=[x.row_splits], params_dense_values=x.values, indices=rows,
            OUTPUT_RAGGED_RANK=1,
        )
        return tf.RaggedTensor.from_row_splits(values, splits[0], validate=False)
    if isinstance(x, tf.RaggedTensor):
        return tf.gather(x, rows)
    return k.gather(x, rows)


def _argsort_distinct(keys: tf.Tensor) -> tf.Tensor:
    """``tf.argsort`` for distinct keys, in fewer ops (traced ops cost time per iteration)."""
    return tf.cast(tf.math.top_k(-keys, k=tf.size(keys)).indices, tf.int64)


def _cut_pool(
    bucket: tf.Tensor, last: tf.Tensor, sizes: tf.Tensor, drop_remainder: bool, k: _Consts
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Plan the batches of one pool (the carried elements first, then the new ones).

    ``bucket`` holds each element's bucket, in arrival order. Each bucket is cut, in arrival
    order, into batches of ``sizes[bucket]``; its final partial batch is kept for the next pool
    (flushed, or dropped with ``drop_remainder``, when ``last``). Batches come out in the order
    they complete (the arrival of their last element), as ``group_by_window`` emits them.
    A fixed handful of vectorised ops, whatever the numbers of elements and buckets.

    Returns:
        ``take``: the positions of the emitted elements, batch after batch; ``starts`` and
        ``ends``: where each batch begins and ends in ``take``; ``keep``: positions carried
        over (all int64).
    """
    n = tf.size(bucket, out_type=tf.int64)
    bucket = tf.cast(bucket, tf.int64)
    position = k.positions(bucket)
    # Sorted by bucket, in arrival order within a bucket (the keys are distinct).
    order = _argsort_distinct(bucket * n + position)
    in_bucket = k.gather(bucket, order)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(bucket), bucket, tf.size(sizes))
    first = k.gather(tf.cumsum(counts, axis=k.axis0, exclusive=True), in_bucket)
    count = k.gather(counts, in_bucket)
    size = k.gather(sizes, in_bucket)
    rank = position - first  # rank in its bucket
    complete = rank < count // size * size
    emit = complete if drop_remainder else tf.logical_or(complete, last)
    # Arrival position of the last element of each element's batch: batches are emitted in
    # that order, the carried elements after them.
    end = k.gather(order, first + tf.minimum(rank // size * size + size, count) - k.one)
    ranked = _argsort_distinct(tf.where(emit, end, n) * n + order)
    final = k.gather(order, ranked)
    num = tf.reduce_sum(tf.cast(emit, tf.int64), axis=k.axis0)
    take, keep = tf.split(final, tf.stack([num, n - num]), axis=k.axis0)
    # Where batches start and end in `take`.
    starts = k.gather(tf.logical_and(emit, tf.equal(rank % size, k.zero)), ranked)
    ends = tf.equal(final, k.gather(tf.where(emit, end, k.minus1), ranked))
    starts = tf.reshape(tf.where(starts), k.flat)
    ends = tf.reshape(tf.where(ends), k.flat) + k.one
    if drop_remainder:  # at the end, what is left is dropped
        keep = keep[: tf.where(last, k.zero, n - num)]
    return take, starts, ends, keep


def bucket_by_length(
    boundaries: Any,
    *,
    batch_size: int | None = None,
    max_tokens: int | None = None,
    length_fn: Callable[[Any], tf.Tensor] | None = None,
    padding: Side = "post",
    value: Any = 0,
    buffer_size: int | None = 4096,
    seed: int | None = None,
    drop_remainder: bool = False,
    max_length: int | None = None,
    quadratic_length: int | None = None,
) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """Bucket a stream of unbatched sequences by length: a transformation for ``Dataset.apply``.

    The stream is read in pools of ``buffer_size`` elements (2048 when ``buffer_size`` is
    ``None`` or 0), without a Python or ``tf.data`` function call per element: ``window``
    then ``batch``/``sparse_batch`` per component (a component with several variable
    dimensions goes through ``ragged_batch``, one call per element). Each pool is worked on
    whole, in a few
    vectorised ops: its elements' lengths and buckets, a seeded permutation of the pool (the
    shuffle), and the cut of each bucket into batches of ``batch_size`` rows, or of
    ``max_tokens // bucket bound`` rows under a token budget, so that rows x longest length
    <= ``max_tokens`` always. A bucket's last, partial batch of a pool is carried into the next
    pool (``Dataset.scan``), so batches fill up across pools; the partial batches left at the
    end of the stream come out last (or are dropped with ``drop_remainder``). Batches come out
    in the order they fill up, each cut out of its pool and padded with one op.

    Memory is bounded: the pool being read, the pool being batched, and at most one partial
    batch per bucket (fewer than ``batch_size`` elements each, or ``max_tokens // bound``).
    Each pass over the data (each new iterator, e.g. each Keras epoch) pays a fixed setup while
    TensorFlow instantiates and optimises the transformation's functions: about 70 ms on the
    2-core CPU of the benchmarks, against about 30 ms for ``bucket_by_sequence_length``.

    An element is a sequence tensor ``(T, ...)``, or a tuple whose first component is the
    sequence, or any structure with ``length_fn(element)`` giving its length. Every component
    with a variable leading dimension (the sequence, per-timestep targets) is padded with
    ``value`` (a scalar, or a structure like the elements) on the ``padding`` side; fixed-shape
    components (labels) are batched as they are. Batches are padded to their longest sequence.

    Args:
        boundaries: bucket boundaries (ascending ints) or a fitted :class:`Bucketer`; bucket
            ``i`` holds lengths in ``[boundaries[i-1], boundaries[i])``.
        batch_size: rows per batch. Exactly one of this and ``max_tokens``.
        max_tokens: budget of padded tokens per batch (rows x longest length). Needs
            ``max_length``, the bound of the last, open-ended bucket.
        length_fn: ``element -> scalar length``; default: the first dimension of the element,
            or of its first component. A ``length_fn`` costs one ``map`` over the elements,
            a function call per element: about half the default's throughput.
        padding: ``"post"`` (default) or ``"pre"``.
        value: padding value.
        buffer_size: elements per pool; each pool is shuffled whole (a uniform permutation,
            a different one on each pass over the data), so elements mix within a pool, not
            across pools. ``None`` or 0 keeps the input order (pools of 2048 elements).
        seed: shuffle seed (the same seed gives the same batches).
        drop_remainder: leave out each bucket's last partial batch.
        max_length: longest length allowed; a longer element stops iteration with
            ``InvalidArgumentError``.
        quadratic_length: with ``max_tokens`` only: a row padded to length ``L`` costs
            ``L + L**2 / quadratic_length`` tokens (attention-like models), so each bucket's
            rows per batch are the most whose cost fits ``max_tokens`` at the bucket's bound,
            as in :class:`~seqprep.BucketSampler`.

    Returns:
        A function ``Dataset -> Dataset`` of padded batches, for ``dataset.apply(...)``.

    Raises:
        ValueError: both or neither of ``batch_size``/``max_tokens``, ``max_tokens`` without
            ``max_length`` or below it, bad boundaries, an unknown ``padding``, or a dict
            element without ``length_fn``.

    Example:
        >>> import tensorflow as tf
        >>> seqs = [[1], [2, 2, 2], [3], [4, 4, 4, 4], [5, 5]]
        >>> ds = tf.data.Dataset.from_tensor_slices(tf.ragged.constant(seqs))
        >>> out = ds.apply(bucket_by_length([2], batch_size=2, buffer_size=None))
        >>> [b.numpy().tolist() for b in out]
        [[[1], [3]], [[2, 2, 2, 0], [4, 4, 4, 4]], [[5, 5]]]
        >>> pre = ds.apply(bucket_by_length([2], batch_size=2, buffer_size=None,
        ...                                 padding="pre", value=-1))
        >>> [b.numpy().tolist() for b in pre][1]
        [[-1, 2, 2, 2], [4, 4, 4, 4]]
    """
    bounds = as_boundaries(boundaries)
    check_choice("padding", padding, ("pre", "post"))
    if (batch_size is None) == (max_tokens is None):
        raise ValueError(
            "Pass exactly one of `batch_size` and `max_tokens`. "
            f"Received: batch_size={batch_size!r}, max_tokens={max_tokens!r}"
        )
    batch_size = check_int("batch_size", batch_size, minimum=1, allow_none=True)
    max_tokens = check_int("max_tokens", max_tokens, minimum=1, allow_none=True)
    max_length = check_int("max_length", max_length, minimum=1, allow_none=True)
    buffer_size = check_int("buffer_size", buffer_size, minimum=0, allow_none=True)
    seed = check_int("seed", seed, minimum=0, allow_none=True)
    if not isinstance(drop_remainder, (bool, np.bool_)):
        raise TypeError(
            f"Argument `drop_remainder` must be True or False. Received: {drop_remainder!r}"
        )
    drop_remainder = bool(drop_remainder)
    if length_fn is not None and not callable(length_fn):
        raise TypeError(f"Argument `length_fn` must be callable. Received: {length_fn!r}")
    if max_length is not None and bounds.size and max_length < bounds[-1]:
        raise ValueError(
            f"Argument `max_length`={max_length} is below the last boundary "
            f"{int(bounds[-1])}: the buckets above it could never fill.\n"
            "- Raise `max_length` or drop the boundaries above it."
        )
    quadratic_length = check_quadratic_length(quadratic_length, max_tokens)
    if max_tokens is not None:
        if max_length is None:
            raise ValueError(
                "Argument `max_tokens` needs `max_length`: the last bucket is open-ended, so "
                "its batch size cannot be set without a longest length.\n"
                "- Pass max_length=<longest sequence length>."
            )
        fits = token_length_limit(max_tokens, quadratic_length)
        if max_length > fits:
            what = f"is below `max_length`={max_length}"
            if quadratic_length is not None:
                what = (f"with quadratic_length={quadratic_length} fits one row of at most "
                        f"{fits} steps, below `max_length`={max_length}")
            raise ValueError(
                f"Argument `max_tokens`={max_tokens} {what}: a "
                "sequence that long would not fit in any batch.\n"
                "- Raise `max_tokens` or lower `max_length`."
            )
        upper = np.append(bounds - 1, max_length).clip(min=1)
        sizes = batch_capacity(upper, None, max_tokens, quadratic_length)
    else:
        sizes = np.full(bounds.size + 1, batch_size)
    t_bounds = tf.constant(bounds, tf.int64)
    t_sizes = tf.constant(sizes.astype(np.int64))
    pool_size = buffer_size or _POOL
    pre = padding == "pre"

    def transform(dataset: tf.data.Dataset) -> tf.data.Dataset:
        spec = dataset.element_spec
        specs = tf.nest.flatten(spec)
        for i, s in enumerate(specs):
            if isinstance(s, tf.RaggedTensorSpec) and s.ragged_rank == 0:
                continue  # a slice of a tf.RaggedTensor: dense in fact
            if not isinstance(s, tf.TensorSpec):
                raise TypeError(
                    "bucket_by_length needs elements made of dense tensors (one ragged "
                    f"dimension at most, the time axis). Component {i} is {s!r}\n"
                    "- Convert it first, e.g. `dataset.map(lambda e: e.to_tensor())`."
                )
        if length_fn is None:
            if isinstance(spec, dict):
                raise ValueError(
                    "Elements are dicts: pass `length_fn` to say which component is the "
                    "sequence, e.g. length_fn=lambda e: tf.shape(e['tokens'])[0]."
                )
            first = spec[0] if isinstance(spec, tuple) else spec
            if first.shape.rank in (None, 0):
                raise ValueError(
                    "The sequence (the element, or its first component) must be a tensor of "
                    f"rank >= 1. Received element_spec={spec!r}\n"
                    "- Pass `length_fn` to say how long an element is."
                )
        varying = [bool(s.shape.rank) and s.shape[0] is None for s in specs]
        if isinstance(value, (numbers.Number, np.generic)) and not isinstance(value, bool):
            values = [value] * len(specs)
        else:
            values = tf.nest.flatten(value)
            if len(values) != len(specs):
                raise ValueError(
                    "Argument `value` must be a number or a structure like the elements. "
                    f"Received: value={value!r} for element_spec={spec!r}"
                )
        pad_values = [
            _check_value(v if vary else 0, s.dtype, f"{i} ({s})")
            for i, (v, vary, s) in enumerate(zip(values, varying, specs, strict=True))
        ]

        # 1. Pools of `pool_size` elements, made without calling a function per element (a
        # tf.data function call costs tens of microseconds, far more than the rest per element):
        # `window` then, per component, `batch` (fixed shapes, ragged slices) or `sparse_batch`
        # (dense sequences; the sparse indices give the lengths). Everything after this runs
        # once per pool or once per batch.
        ds = dataset
        if length_fn is not None:
            def with_length(*e: Any) -> Any:
                element = e[0] if len(e) == 1 else e
                return element, tf.cast(length_fn(element), tf.int64)

            ds = ds.map(with_length)
        leaf_specs = tf.nest.flatten(ds.element_spec)
        kinds = [_pool_kind(s) for s in leaf_specs]

        def to_pool(*windows: Any) -> tf.data.Dataset:
            leaves = tf.nest.flatten(windows)
            return tf.data.Dataset.zip(tuple(
                _pool_leaf(w, kind, s, pool_size)
                for w, kind, s in zip(leaves, kinds, leaf_specs, strict=True)
            ))

        pools = ds.window(pool_size).flat_map(to_pool)

        # 2. Flag the pools; a last, empty pool flushes the partial batches at the end.
        shuffled = bool(buffer_size)
        pool_specs = list(pools.element_spec)
        comp_specs = [_unpacked_spec(s, kind) for s, kind in zip(pool_specs, kinds, strict=True)]
        if length_fn is not None:
            comp_specs.pop()  # the lengths
        modes = [_mode(s) for s in comp_specs]
        empty_leaves = tuple(_empty_pool(s) for s in pool_specs)
        not_last = tf.data.Dataset.from_tensors(False).repeat()
        if shuffled:  # one random draw per pool seeds its permutation
            draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            pools = tf.data.Dataset.zip(pools, draws, not_last)
            sentinel = (empty_leaves, tf.constant(0, tf.int64), True)
        else:
            pools = tf.data.Dataset.zip(pools, not_last)
            sentinel = (empty_leaves, True)
        pools = pools.concatenate(tf.data.Dataset.from_tensors(sentinel))

        # 3. Per pool, in one function: lengths and buckets, the max_length check, the shuffle
        # (a permutation, applied with the batching's own gather), then the cut into batches (a
        # bucket's partial batch is carried to the next pool). The pool leaves reordered batch
        # after batch, with per batch the arguments of the tf.slice that cuts it out.
        # Everything is kept as plain tensors (ragged components split into values and splits).
        def prepare(leaves: Any, draw: tf.Tensor | None, k: _Consts) -> Any:
            unpacked, lengths = [], None
            for i, (leaf, kind, s) in enumerate(zip(leaves, kinds, leaf_specs, strict=True)):
                if kind == "sparse":
                    leaf, leaf_lengths = _sparse_to_ragged(leaf, s, k)
                    if i == 0:
                        lengths = leaf_lengths
                unpacked.append(leaf)
            if length_fn is not None:
                comps, lengths = unpacked[:-1], unpacked[-1]
            else:
                comps = unpacked
                if lengths is None:
                    lengths = _pool_lengths(comps[0])
            if max_length is not None:
                check = tf.debugging.Assert(
                    tf.reduce_all(lengths <= max_length),
                    [f"bucket_by_length: an element is longer than max_length={max_length}; "
                     "longest in this pool:", tf.reduce_max(lengths)],
                )
                with tf.control_dependencies([check]):
                    lengths = tf.identity(lengths)
            if bounds.size == 0 or bounds[-1] < 2**24:  # exact as float32
                bucket = tf.raw_ops.Bucketize(input=lengths, boundaries=bounds.tolist())
            else:
                bucket = tf.reduce_sum(tf.cast(lengths[:, None] >= t_bounds, tf.int32), 1)
            if draw is None:
                return comps, bucket, None
            perm = tf.random.experimental.stateless_shuffle(
                k.positions(bucket), seed=tf.stack([draw, tf.constant(seed or 0, tf.int64)])
            )
            return comps, k.gather(bucket, perm), perm

        def cut(state: Any, pool: Any) -> Any:
            parts, carry_bucket = state
            carry = tf.nest.pack_sequence_as(comp_specs, list(parts), expand_composites=True)
            if shuffled:
                leaves, draw, last = pool
            else:
                (leaves, last), draw = pool, None
            k = _Consts()
            comps, bucket, perm = prepare(leaves, draw, k)
            bucket = k.concat([carry_bucket, bucket])
            take, start, stop, keep = _cut_pool(bucket, last, t_sizes, drop_remainder, k)
            new_bucket = k.gather(bucket, keep)
            if perm is not None:  # positions in the shuffled order -> rows of the data
                carried = tf.size(carry_bucket, out_type=tf.int64)
                rows = k.concat([k.positions(carry_bucket), perm + carried])
                take, keep = k.gather(rows, take), k.gather(rows, keep)
            comps = [_concat_rows(c, p, k) for c, p in zip(carry, comps, strict=True)]
            kept = [_gather_rows(c, keep, k) for c in comps]
            out = [_gather_rows(c, take, k) for c in comps]
            first, rows = tf.expand_dims(start, k.axis1), tf.expand_dims(stop - start, k.axis1)
            cuts = []
            for c, mode in zip(out, modes, strict=True):
                if mode == "padded":
                    begin = k.gather(c.row_splits, start)
                    size = k.gather(c.row_splits, stop) - begin
                    cuts += _slice_args(tf.expand_dims(begin, k.axis1),
                                        tf.expand_dims(size, k.axis1), c.values)
                    cuts += [first, rows + k.one, begin]
                elif mode == "dense":
                    cuts += _slice_args(first, rows, c)
            new_state = (tuple(tf.nest.flatten(kept, expand_composites=True)), new_bucket)
            out = tuple(tf.nest.flatten(out, expand_composites=True))
            return new_state, (out, (start, stop, *cuts))

        empty = [_empty_pool(s) for s in comp_specs]
        initial = (tuple(tf.nest.flatten(empty, expand_composites=True)), tf.zeros([0], tf.int32))
        planned = pools.scan(initial, cut)

        # 4. One element per batch: each batch sees its pool's tensors (shared, not copied)
        # and its slice arguments; one function, traced once, cuts and pads it.
        def per_batch(parts: Any, cuts: Any) -> tf.data.Dataset:
            return tf.data.Dataset.zip(
                tf.data.Dataset.from_tensors(parts).repeat(),
                tf.data.Dataset.from_tensor_slices(cuts),
            )

        def batch(parts: Any, cuts: Any) -> Any:
            comps = tf.nest.pack_sequence_as(comp_specs, list(parts), expand_composites=True)
            start, stop, *args = cuts
            out, k = [], 0
            for c, mode, vary, pad_value in zip(comps, modes, varying, pad_values, strict=True):
                if mode == "dense":
                    out.append(tf.slice(c, args[k], args[k + 1]))
                    k += 2
                    continue
                if mode == "padded":
                    begin, size, split_begin, split_size, offset = args[k : k + 5]
                    k += 5
                    row_splits = tf.slice(c.row_splits, split_begin, split_size) - offset
                    c = tf.raw_ops.RaggedTensorToTensor(
                        shape=tf.constant(-1, row_splits.dtype),
                        values=tf.slice(c.values, begin, size),
                        default_value=pad_value,
                        row_partition_tensors=[row_splits],
                        row_partition_types=["ROW_SPLITS"],
                    )
                else:  # ragged rank > 1: the generic (slower) way
                    c = c[start:stop]
                    row_splits = c.row_splits
                    c = c.to_tensor(default_value=pad_value)
                if pre and vary:  # right-align each row: reverse its steps, then the time axis
                    lengths = row_splits[1:] - row_splits[:-1]
                    c = tf.reverse(tf.reverse_sequence(c, lengths, seq_axis=1, batch_axis=0), [1])
                out.append(c)
            return tf.nest.pack_sequence_as(spec, out)

        return planned.flat_map(per_batch).map(batch)

    return transform
