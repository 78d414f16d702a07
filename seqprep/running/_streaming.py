"""Streaming bucketing for ``dataset.apply(...)``: :func:`bucket_by_length` and
:func:`bucket_by_sequence_length`, a faster drop-in for ``tf.data``'s.

Both read the stream in bounded pools of elements, without a function call per element where
they can, and work on each pool whole in a few vectorised ops: lengths and buckets, an optional
seeded shuffle, and the cut of each bucket into batches (a bucket's partial batch is carried
into the next pool, so batches fill up across pools). Each batch is then cut out of its pool
and padded with one op.

The code is in three phases: the arguments are checked and the batch size of each bucket is
planned in numpy (:class:`_Options`); when the transformation meets a dataset, its element
spec decides how each component is pooled, cut and padded (:class:`_Stream`); then the graph is
built: pools, a ``scan`` that plans each pool's batches, and one function per batch.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from seqprep._core.casts import find_loss
from seqprep._core.checks import check_bool, check_choice, check_int, check_one_of
from seqprep.planning import as_boundaries
from seqprep.planning._boundaries import (
    batch_capacity,
    check_quadratic_length,
    token_length_limit,
)
from seqprep.planning._sampler import BATCH_FIX

__all__ = ["bucket_by_length", "bucket_by_sequence_length"]

Side = Literal["pre", "post"]


# --------------------------------------------------------------------------- pooling helpers


def _check_value(value: Any, dtype: tf.DType, name: str) -> tf.Tensor:
    if dtype == tf.string:
        return tf.constant(value if isinstance(value, (str, bytes)) else "", tf.string)
    np_dtype = np.dtype(dtype.as_numpy_dtype)
    if isinstance(value, (str, bytes)) or not isinstance(value, (numbers.Number, np.generic)):
        raise TypeError(
            f"Argument `value` must be a number (or a structure of numbers like the elements). "
            f"Received: value={value!r} for component {name}"
        )
    if np_dtype.kind not in "biufc":  # e.g. bfloat16, which the exact check does not know
        cast = np.asarray(value).astype(np_dtype)
        both_nan = np.isnan(np.float64(cast)) and np.isnan(value)
        if cast != value and not both_nan:
            _refuse_value(value, np_dtype, name, "changes in the cast")
        return tf.constant(cast, dtype)
    # A Python int of any size stays exact in an object array (numpy 2 would turn 2**63 into
    # float64); numpy scalars keep their dtype, so the check sees what the caller passed.
    probe = np.asarray(value).reshape(1) if isinstance(value, np.generic) else np.array(
        [value], dtype=object
    )
    loss = find_loss(probe, np_dtype)
    if loss is not None:
        _refuse_value(value, np_dtype, name, loss.reason)
    return tf.constant(probe.astype(np_dtype)[0], dtype)


def _refuse_value(value: Any, np_dtype: np.dtype, name: str, reason: str) -> None:
    raise ValueError(
        f"Argument `value`={value!r} cannot be represented in the {np_dtype} component "
        f"{name}: it {reason}.\n- Pick a padding value that dtype holds (0 for integer tokens)."
    )


# Elements per pool when nothing is shuffled (``buffer_size`` None or 0). A pool is the unit of
# vectorised work: larger pools amortise the per-pool cost, smaller ones bound memory.
_POOL = 2048


# The drop-in reads pools of at least this many times the elements its buckets can carry from
# one pool to the next (the sum of the batch sizes): each pool re-gathers the carried elements,
# so with large batches small pools would spend most of their work on the carry.
_POOL_PER_CARRY = 2


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




# --------------------------------------------------------------------------- phase 1: options


# A target size meaning "the batch's bucket boundary minus 1" (``pad_to_bucket_boundary``).
_TO_BOUNDARY = -1


@dataclasses.dataclass(frozen=True)
class _Options:
    """What a bucketing transformation decided before it meets a dataset (checked, in numpy).

    ``bounds``: bucket boundaries (non-decreasing int64; bucket ``i`` holds lengths in
    ``[bounds[i-1], bounds[i])``); ``sizes``: rows per batch of each bucket; ``pool_size``:
    elements read per pool; ``shuffled``: permute each pool, seeded with ``seed``; ``pre``: pad
    on the left; ``value``: the padding value(s), ``None`` for tf.data's defaults (0, ``""``,
    False); ``spread_args``: call ``length_fn(*components)`` as tf.data does, not
    ``length_fn(element)``; ``max_length``: the longest length allowed. The drop-in's own:
    ``padded_shapes``, ``pad_to_bucket`` and ``no_padding``. ``caller`` names the public
    function in error messages.
    """

    bounds: np.ndarray
    sizes: np.ndarray
    pool_size: int
    shuffled: bool = False
    seed: int | None = None
    drop_remainder: bool = False
    pre: bool = False
    value: Any = 0
    length_fn: Callable[..., Any] | None = None
    spread_args: bool = False
    max_length: int | None = None
    padded_shapes: Any = None
    pad_to_bucket: bool = False
    no_padding: bool = False
    caller: str = "bucket_by_length"


def _check_flag(name: str, value: Any) -> bool:
    """``check_bool`` that also takes a constant boolean tensor, as tf.data's arguments may be."""
    if isinstance(value, tf.Tensor) and tf.get_static_value(value) is not None:
        value = tf.get_static_value(value)
    return check_bool(name, value)


def _check_stream_args(
    batch_size: Any, max_tokens: Any, max_length: Any, buffer_size: Any, seed: Any,
    drop_remainder: Any, length_fn: Any,
) -> tuple[int | None, int | None, int | None, int | None, int | None, bool]:
    """``bucket_by_length``'s scalar arguments, checked and as Python values."""
    check_one_of(BATCH_FIX, batch_size=batch_size, max_tokens=max_tokens)
    batch_size = check_int("batch_size", batch_size, minimum=1, allow_none=True)
    max_tokens = check_int("max_tokens", max_tokens, minimum=1, allow_none=True)
    max_length = check_int("max_length", max_length, minimum=1, allow_none=True)
    buffer_size = check_int("buffer_size", buffer_size, minimum=0, allow_none=True)
    seed = check_int("seed", seed, minimum=0, allow_none=True)
    drop_remainder = _check_flag("drop_remainder", drop_remainder)
    if length_fn is not None and not callable(length_fn):
        raise TypeError(
            f"Argument `length_fn` must be callable. Received: {length_fn!r}\n"
            "- Pass a function of one element that returns its length as a scalar tensor, "
            "or None for the length of the first axis."
        )
    return batch_size, max_tokens, max_length, buffer_size, seed, drop_remainder


def _plan_batch_sizes(
    bounds: np.ndarray, batch_size: int | None, max_tokens: int | None,
    max_length: int | None, quadratic_length: int | None,
) -> np.ndarray:
    """Rows per batch of each bucket: ``batch_size``, or the most rows whose padded cost fits
    ``max_tokens`` at the bucket's upper bound (``max_length`` for the open-ended last one)."""
    if max_length is not None and bounds.size and max_length < bounds[-1]:
        raise ValueError(
            f"Argument `max_length`={max_length} is below the last boundary "
            f"{int(bounds[-1])}: the buckets above it could never fill.\n"
            "- Raise `max_length` or drop the boundaries above it."
        )
    quadratic_length = check_quadratic_length(quadratic_length, max_tokens)
    if max_tokens is None:
        return np.full(bounds.size + 1, batch_size, np.int64)
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
    return batch_capacity(upper, None, max_tokens, quadratic_length).astype(np.int64)


def _check_tf_boundaries(bucket_boundaries: Any) -> np.ndarray:
    """tf.data's ``bucket_boundaries``: integers in non-decreasing order (any sign)."""
    arr = np.asarray(list(bucket_boundaries) if isinstance(bucket_boundaries, range)
                     else bucket_boundaries)
    if arr.ndim != 1 or (arr.size and (arr.dtype == bool
                                       or not np.issubdtype(arr.dtype, np.integer))):
        raise TypeError(
            "Argument `bucket_boundaries` must be a list of integers. "
            f"Received: bucket_boundaries={bucket_boundaries!r}"
        )
    arr = arr.astype(np.int64)
    if np.any(np.diff(arr) < 0):
        # tf.data takes the first bucket whose interval holds the length; out of order, that
        # rule puts lengths in buckets nobody meant, so refuse instead.
        raise ValueError(
            "Argument `bucket_boundaries` must be in increasing order. "
            f"Received: bucket_boundaries={arr.tolist()}\n"
            "- Bucket i holds lengths in [bucket_boundaries[i-1], bucket_boundaries[i]): "
            "sort them (and `bucket_batch_sizes` with them)."
        )
    return arr


def _check_tf_batch_sizes(bucket_batch_sizes: Any, bounds: np.ndarray) -> np.ndarray:
    sizes = [check_int("bucket_batch_sizes", s, minimum=1,
                       fix="Every bucket needs at least one row per batch.")
             for s in bucket_batch_sizes]
    if len(sizes) != bounds.size + 1:
        raise ValueError(
            "Argument `bucket_batch_sizes` must have one size per bucket, "
            f"len(bucket_boundaries) + 1 = {bounds.size + 1}. "
            f"Received: bucket_batch_sizes={sizes} ({len(sizes)} sizes)\n"
            "- The last size is for the lengths at or above the last boundary."
        )
    return np.asarray(sizes, np.int64)


# --------------------------------------------------------------------------- phase 2: the spec


def _check_leaves(leaves: list[Any], options: _Options) -> None:
    """Refuse the components a transformation cannot batch, saying what to do instead."""
    for i, s in enumerate(leaves):
        if isinstance(s, tf.RaggedTensorSpec) and s.ragged_rank == 0:
            continue  # a slice of a tf.RaggedTensor: dense in fact
        if isinstance(s, tf.SparseTensorSpec) and options.no_padding:
            continue
        if isinstance(s, tf.RaggedTensorSpec) and options.no_padding and (
            s.shape.rank is not None and s.shape[s.ragged_rank + 1 :].is_fully_defined()
        ):
            continue
        if not isinstance(s, tf.TensorSpec):
            hint = ("- Convert it first, e.g. `dataset.map(lambda e: e.to_tensor())`"
                    + (", or pass no_padding=True to batch sparse or ragged ones." if
                       options.caller == "bucket_by_sequence_length" else "."))
            raise TypeError(
                f"{options.caller} needs elements made of dense tensors (one ragged "
                f"dimension at most, the time axis). Component {i} is {s!r}\n{hint}"
            )
        if s.shape.rank is None and options.caller == "bucket_by_sequence_length":
            raise TypeError(
                f"{options.caller}: component {i} has an unknown rank ({s!r}), so its "
                "padded shape is unknown.\n- Set it, e.g. with `tf.ensure_shape`, or pass "
                "`padded_shapes`."
            )


def _check_default_length(spec: Any) -> None:
    """Without ``length_fn``, the sequence is the element or its first component."""
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


def _part_specs(leaves: list[Any]) -> list[Any]:
    """Dense parts of the components: a SparseTensor travels as its indices, values and
    dense shape, a RaggedTensor as its flat values and nested row lengths (each batched as a
    dense sequence), and is put back together per batch (``no_padding`` only)."""
    parts = []
    for s in leaves:
        if isinstance(s, tf.SparseTensorSpec):
            rank = s.shape.rank  # None when unknown: the parts are then pooled as ragged
            parts += [tf.TensorSpec([None, rank], tf.int64), tf.TensorSpec([None], s.dtype),
                      tf.TensorSpec([rank], tf.int64)]
        elif isinstance(s, tf.RaggedTensorSpec) and s.ragged_rank:
            inner = s.shape[s.ragged_rank + 1 :] if s.shape.rank is not None else []
            parts += [tf.TensorSpec([None, *inner], s.dtype)]
            parts += [tf.TensorSpec([None], s.row_splits_dtype)] * s.ragged_rank
        else:
            parts.append(s)
    return parts


def _split_leaf(leaf: Any) -> list[Any]:
    """A component as its dense parts (see :func:`_part_specs`)."""
    if isinstance(leaf, tf.SparseTensor):
        return [leaf.indices, leaf.values, leaf.dense_shape]
    if isinstance(leaf, tf.RaggedTensor):
        return [leaf.flat_values, *leaf.nested_row_lengths()]
    return [leaf]


def _part_count(spec: Any) -> int:
    if isinstance(spec, tf.SparseTensorSpec):
        return 3
    if isinstance(spec, tf.RaggedTensorSpec) and spec.ragged_rank:
        return 1 + spec.ragged_rank
    return 1


def _value_leaves(value: Any, spec: Any, leaves: list[Any]) -> list[Any]:
    """The padding value of each component: a number for all, or a structure like ``spec``."""
    if value is None or isinstance(value, (numbers.Number, np.generic, str, bytes)) or (
        isinstance(value, tf.Tensor) and value.shape.rank == 0
    ):
        return [value] * len(leaves)
    values = tf.nest.flatten(value)
    if len(values) != len(leaves):
        raise ValueError(
            "Argument `value` must be a number or a structure like the elements. "
            f"Received: value={value!r} for element_spec={spec!r}"
        )
    return values


def _pad_value(value: Any, spec: Any, name: str) -> tf.Tensor:
    if isinstance(value, tf.Tensor):
        value = tf.get_static_value(value)
        value = value.item() if isinstance(value, np.ndarray) else value
    if value is None:  # tf.data's default: 0, False or ""
        return tf.zeros([], spec.dtype)
    if isinstance(value, bytes | str) and spec.dtype != tf.string:
        raise TypeError(
            f"Argument `value`={value!r} is a string but component {name} holds "
            f"{spec.dtype.name}.\n- Pass a number of that dtype."
        )
    return _check_value(value, spec.dtype, name)


def _flat_padded_shapes(padded_shapes: Any, spec: Any, caller: str) -> list[tf.TensorShape]:
    """``padded_shapes`` (a structure like the elements, of shapes) as one shape per leaf."""
    if isinstance(spec, dict):
        if not isinstance(padded_shapes, dict) or set(padded_shapes) != set(spec):
            raise ValueError(
                f"Argument `padded_shapes` must have the elements' structure (keys "
                f"{sorted(spec)}). Received: padded_shapes={padded_shapes!r}"
            )
        return [s for key in sorted(spec)
                for s in _flat_padded_shapes(padded_shapes[key], spec[key], caller)]
    if isinstance(spec, (tuple, list)):
        if not isinstance(padded_shapes, (tuple, list)) or len(padded_shapes) != len(spec):
            raise ValueError(
                f"Argument `padded_shapes` must have the elements' structure ({len(spec)} "
                f"components). Received: padded_shapes={padded_shapes!r}"
            )
        return [s for p, sub in zip(padded_shapes, spec, strict=True)
                for s in _flat_padded_shapes(p, sub, caller)]
    shape = tf.TensorShape(padded_shapes)
    if shape.rank is None or shape.rank != spec.shape.rank:
        raise ValueError(
            f"Argument `padded_shapes` gives {shape} for a component of rank "
            f"{spec.shape.rank} ({spec!r}).\n- Give one size (or None) per dimension."
        )
    for d, s in zip(shape.as_list(), spec.shape.as_list(), strict=True):
        if d is not None and s is not None and d < s:
            raise ValueError(
                f"Argument `padded_shapes` gives {shape}, smaller than the component's "
                f"shape {spec.shape}.\n- Padding never truncates: give sizes at least "
                "the component's."
            )
    return [shape]


def _pad_targets(options: _Options, spec: Any, leaves: list[Any]) -> list[Any]:
    """Per part, the size of each padded dimension (the batch axis aside): ``None`` for the
    batch's longest, an int, or ``_TO_BOUNDARY``; ``None`` for the whole part when nothing
    beyond the batch's longest is asked (the common, fast case)."""
    if options.no_padding:
        return [None] * len(_part_specs(leaves))
    if options.padded_shapes is None:
        shapes = [s.shape for s in leaves]
    else:
        shapes = _flat_padded_shapes(options.padded_shapes, spec, options.caller)
    filler = _TO_BOUNDARY if options.pad_to_bucket else None
    targets = []
    for shape, s in zip(shapes, leaves, strict=True):
        dims = [filler if d is None else d for d in shape.as_list()]
        same = all(d is None or d == k for d, k in zip(dims, s.shape.as_list(), strict=True))
        targets.append(None if same else dims)
    return targets


def _traced_leading_dim(fn: Callable[..., Any], spec: Any, spread_args: bool) -> int | None:
    """The component whose leading dimension ``fn`` returns, when that is all it does
    (``tf.shape(x)[0]``, ``tf.size(x)`` of a vector, maybe cast to int32/int64), else None.

    Then the lengths are read off the pooled component (its row lengths) instead of calling
    ``fn`` once per element in a ``map``, which costs more than the rest of the bucketing.
    The traced graph is matched exactly; anything else keeps the ``map``.
    """
    leaves = tf.nest.flatten(spec)
    if not all(isinstance(s, (tf.TensorSpec, tf.RaggedTensorSpec)) for s in leaves) or any(
        isinstance(s, tf.RaggedTensorSpec) and s.ragged_rank for s in leaves
    ):
        return None
    dense = tf.nest.pack_sequence_as(
        spec, [tf.TensorSpec(s.shape, s.dtype) for s in leaves])
    args = tuple(dense) if spread_args and isinstance(dense, tuple) else (dense,)
    try:
        graph = tf.function(fn, autograph=False).get_concrete_function(*args).graph
    except Exception:  # any tracing trouble: keep the per-element map  # noqa: BLE001
        return None
    if len(graph.outputs) != 1:
        return None
    op = graph.outputs[0].op
    while op.type in ("Identity", "Cast") and (
        op.type == "Identity" or op.outputs[0].dtype in (tf.int32, tf.int64)
    ):
        op = op.inputs[0].op
    if op.type == "StridedSlice":
        begin, end, strides = (tf.get_static_value(t) for t in op.inputs[1:4])
        if not (op.inputs[0].op.type == "Shape" and op.get_attr("shrink_axis_mask") == 1
                and list(np.atleast_1d(begin)) == [0] and list(np.atleast_1d(end)) == [1]
                and list(np.atleast_1d(strides)) == [1]):
            return None
        source = op.inputs[0].op.inputs[0]
    elif op.type == "Size" and op.inputs[0].shape.rank == 1:
        source = op.inputs[0]
    else:
        return None
    while source.op.type == "Identity":
        source = source.op.inputs[0]
    inputs = list(graph.inputs[: len(leaves)])
    match = [j for j, t in enumerate(inputs) if t is source]
    if len(match) != 1 or not leaves[match[0]].shape.rank:
        return None
    return match[0]


class _Stream:
    """One bucketing transformation applied to one dataset: what its element spec decides.

    Components are carried as dense *parts* (a SparseTensor as three, see :func:`_part_specs`).
    Per part: ``varying`` (a variable leading dimension: padded, and reversed for ``pre``),
    ``pad_values``, ``targets`` (:func:`_pad_targets`), ``raw`` (a SparseTensor's indices or
    values, cut out of the pool without padding); and, once the pools are built, ``kinds``
    (how a part is pooled, :func:`_pool_kind`) and ``modes`` (how a batch is cut out of a
    pool, :func:`_mode`). The methods are the phases of the graph, in order:
    :meth:`pools`, :meth:`cut` (in a ``scan`` over the pools) and :meth:`batch`.
    """

    def __init__(self, options: _Options, spec: Any) -> None:
        self.spec = spec
        self.leaves = tf.nest.flatten(spec)
        _check_leaves(self.leaves, options)
        self.length_leaf = 0  # the part whose leading dimension is the length, without a map
        if options.length_fn is None:
            _check_default_length(spec)
        else:
            found = _traced_leading_dim(options.length_fn, spec, options.spread_args)
            if found is not None:
                options = dataclasses.replace(options, length_fn=None)
                self.length_leaf = found
        self.o = options
        self.counts = [_part_count(s) for s in self.leaves]  # parts per component
        parts = _part_specs(self.leaves)
        self.raw = [raw for s, n in zip(self.leaves, self.counts, strict=True) for raw in (
            [False] if n == 1 else [True, True, False] if isinstance(s, tf.SparseTensorSpec)
            else [True] * n)]
        self.varying = [bool(s.shape.rank) and s.shape[0] is None for s in parts]
        self.targets = _pad_targets(options, spec, self.leaves)
        values = [v for v, n in zip(_value_leaves(options.value, spec, self.leaves),
                                    self.counts, strict=True)
                  for v in ([v] if n == 1 else [0] * n)]
        self.pad_values = [
            _pad_value(v if vary or target is not None else 0, s, f"{i} ({s})")
            for i, (v, vary, target, s) in enumerate(
                zip(values, self.varying, self.targets, parts, strict=True))
        ]
        widths = np.append(options.bounds - 1, 0)  # the open-ended bucket has none
        self.widths = tf.constant(widths, tf.int64)
        self.t_sizes = tf.constant(options.sizes, tf.int64)

    def apply(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        pools = self.pools(dataset)
        empty = [_empty_pool(s) for s in self.comp_specs]
        initial = (tuple(tf.nest.flatten(empty, expand_composites=True)),
                   tf.zeros([0], tf.int32))
        out = pools.scan(initial, self.cut).flat_map(_per_batch).map(self.batch)
        count = self._batch_count(_cardinality(dataset))
        if count != tf.data.UNKNOWN_CARDINALITY:
            out = out.apply(tf.data.experimental.assert_cardinality(count))
        return out

    def _batch_count(self, elements: int) -> int:
        """How many batches come out of ``elements`` elements, where that does not depend on
        their lengths (so Keras knows its steps): an infinite input (group_by_window keeps
        that too), or one bucket, or one row per batch."""
        sizes = self.o.sizes
        if elements == tf.data.INFINITE_CARDINALITY:
            return elements
        if elements < 0 or (sizes.size > 1 and np.any(sizes != 1)):
            return tf.data.UNKNOWN_CARDINALITY
        size = int(sizes[0])
        return elements // size if self.o.drop_remainder else -(-elements // size)

    # -------------------------------------------------------------- 1. pools

    def _with_length(self, *args: Any) -> Any:
        leaves = tf.nest.flatten(args)
        element = tf.nest.pack_sequence_as(self.spec, leaves)
        fn = self.o.length_fn
        length = fn(*args) if self.o.spread_args else fn(element)
        parts = [part for leaf in leaves for part in _split_leaf(leaf)]
        return tuple(parts), tf.cast(length, tf.int64)

    def pools(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """Pools of ``pool_size`` elements, each flagged ``last`` (and, shuffled, with a random
        draw); a last, empty pool flushes the partial batches at the end.

        A pool is made without calling a function per element (a tf.data function call costs
        tens of microseconds, far more than the rest per element): ``window`` then, per part,
        ``batch`` (fixed shapes, ragged slices) or ``sparse_batch`` (dense sequences; the
        sparse indices give the lengths). Only a ``length_fn`` costs a ``map``.
        """
        ds = dataset if self.o.length_fn is None else dataset.map(self._with_length)
        self.leaf_specs = tf.nest.flatten(ds.element_spec)
        self.kinds = [_pool_kind(s) for s in self.leaf_specs]
        size = self.o.pool_size

        def to_pool(*windows: Any) -> tf.data.Dataset:
            return tf.data.Dataset.zip(tuple(
                _pool_leaf(w, kind, s, size)
                for w, kind, s in zip(tf.nest.flatten(windows), self.kinds, self.leaf_specs,
                                      strict=True)
            ))

        pools = ds.window(size).flat_map(to_pool)
        pool_specs = list(pools.element_spec)
        self.comp_specs = [_unpacked_spec(s, kind)
                           for s, kind in zip(pool_specs, self.kinds, strict=True)]
        if self.o.length_fn is not None:
            self.comp_specs.pop()  # the lengths
        self.modes = [_mode(s) for s in self.comp_specs]
        empty_leaves = tuple(_empty_pool(s) for s in pool_specs)
        not_last = tf.data.Dataset.from_tensors(False).repeat()
        if self.o.shuffled:  # one random draw per pool seeds its permutation
            draws = tf.data.Dataset.random(seed=self.o.seed, rerandomize_each_iteration=True)
            pools = tf.data.Dataset.zip(pools, draws, not_last)
            sentinel = (empty_leaves, tf.constant(0, tf.int64), True)
        else:
            pools = tf.data.Dataset.zip(pools, not_last)
            sentinel = (empty_leaves, True)
        return pools.concatenate(tf.data.Dataset.from_tensors(sentinel))

    # -------------------------------------------------------------- 2. plan each pool

    def _lengths_and_buckets(self, leaves: Any, k: _Consts) -> tuple[list[Any], tf.Tensor]:
        """The pool's parts (sparse-batched ones made ragged) and each element's bucket."""
        unpacked, lengths = [], None
        for i, (leaf, kind, s) in enumerate(zip(leaves, self.kinds, self.leaf_specs,
                                                strict=True)):
            if kind == "sparse":
                leaf, leaf_lengths = _sparse_to_ragged(leaf, s, k)
                if i == self.length_leaf:
                    lengths = leaf_lengths
            unpacked.append(leaf)
        if self.o.length_fn is not None:
            comps, lengths = unpacked[:-1], unpacked[-1]
        else:
            comps = unpacked
            if lengths is None:
                lengths = _pool_lengths(comps[self.length_leaf])
        if self.o.max_length is not None:
            check = tf.debugging.Assert(
                tf.reduce_all(lengths <= self.o.max_length),
                [f"{self.o.caller}: an element is longer than max_length="
                 f"{self.o.max_length}; longest in this pool:", tf.reduce_max(lengths)],
            )
            with tf.control_dependencies([check]):
                lengths = tf.identity(lengths)
        bounds = self.o.bounds
        if bounds.size == 0 or np.abs(bounds).max() < 2**24:  # exact as float32
            bucket = tf.raw_ops.Bucketize(input=lengths, boundaries=bounds.tolist())
        else:
            bucket = tf.reduce_sum(
                tf.cast(lengths[:, None] >= tf.constant(bounds, tf.int64), tf.int32), 1)
        return comps, bucket

    def cut(self, state: Any, pool: Any) -> Any:
        """Plan one pool's batches (the carried elements first, see :func:`_cut_pool`); return
        the new carry, and the pool's parts reordered batch after batch with, per batch, its
        bucket and the arguments of the ``tf.slice`` that cuts it out. Everything is kept as
        plain tensors (ragged parts split into values and splits)."""
        parts, carry_bucket = state
        carry = tf.nest.pack_sequence_as(self.comp_specs, list(parts), expand_composites=True)
        if self.o.shuffled:
            leaves, draw, last = pool
        else:
            (leaves, last), draw = pool, None
        k = _Consts()
        comps, bucket = self._lengths_and_buckets(leaves, k)
        perm = None
        if draw is not None:  # a permutation, applied with the batching's own gather
            perm = tf.random.experimental.stateless_shuffle(
                k.positions(bucket), seed=tf.stack([draw, tf.constant(self.o.seed or 0,
                                                                      tf.int64)]))
            bucket = k.gather(bucket, perm)
        bucket = k.concat([carry_bucket, bucket])
        take, start, stop, keep = _cut_pool(bucket, last, self.t_sizes, self.o.drop_remainder,
                                            k)
        new_bucket = k.gather(bucket, keep)
        batch_bucket = k.gather(bucket, k.gather(take, start))
        if perm is not None:  # positions in the shuffled order -> rows of the data
            carried = tf.size(carry_bucket, out_type=tf.int64)
            rows = k.concat([k.positions(carry_bucket), perm + carried])
            take, keep = k.gather(rows, take), k.gather(rows, keep)
        comps = [_concat_rows(c, p, k) for c, p in zip(carry, comps, strict=True)]
        kept = [_gather_rows(c, keep, k) for c in comps]
        out = [_gather_rows(c, take, k) for c in comps]
        cuts = _cut_args(out, self.modes, start, stop, k)
        new_state = (tuple(tf.nest.flatten(kept, expand_composites=True)), new_bucket)
        out = tuple(tf.nest.flatten(out, expand_composites=True))
        return new_state, (out, (start, stop, tf.cast(batch_bucket, tf.int64), *cuts))

    # -------------------------------------------------------------- 3. one batch

    def batch(self, parts: Any, cuts: Any) -> Any:
        """Cut one batch out of its pool's parts and pad it (one function, traced once)."""
        comps = tf.nest.pack_sequence_as(self.comp_specs, list(parts), expand_composites=True)
        start, stop, bucket, *args = cuts
        width = self._bucket_width(bucket) if self.o.pad_to_bucket else None
        out, at = [], 0
        for i, c in enumerate(comps):
            used = {"dense": 2, "padded": 5, "ragged": 0}[self.modes[i]]
            out.append(self._cut_part(i, c, args[at : at + used], start, stop, width))
            at += used
        return tf.nest.pack_sequence_as(self.spec, self._assemble(out, stop - start))

    def _bucket_width(self, bucket: tf.Tensor) -> tf.Tensor:
        last = self.o.bounds.size
        check = tf.debugging.Assert(bucket < last, [
            f"{self.o.caller}: with pad_to_bucket_boundary=True every element must be "
            f"shorter than the last of bucket_boundaries ({self.o.bounds.tolist()[-1:]}); "
            "a batch of the open-ended bucket came.\n- Add a boundary above the longest "
            "length, or pass pad_to_bucket_boundary=False."])
        with tf.control_dependencies([check]):
            return tf.gather(self.widths, bucket)

    def _cut_part(self, i: int, c: Any, args: list[tf.Tensor], start: tf.Tensor,
                  stop: tf.Tensor, width: tf.Tensor | None) -> Any:
        mode, pad_value = self.modes[i], self.pad_values[i]
        if mode == "dense":
            x = tf.slice(c, args[0], args[1])
            return _pad_up(x, self.targets[i], width, pad_value, self.o.caller)
        if mode == "padded":
            begin, size, split_begin, split_size, offset = args
            row_splits = tf.slice(c.row_splits, split_begin, split_size) - offset
            values = tf.slice(c.values, begin, size)
            if self.raw[i]:
                return values, row_splits
            x = tf.raw_ops.RaggedTensorToTensor(
                shape=tf.constant(-1, row_splits.dtype), values=values,
                default_value=pad_value, row_partition_tensors=[row_splits],
                row_partition_types=["ROW_SPLITS"],
            )
            x.set_shape([None, None, *c.values.shape[1:]])
            real = tf.size(values, out_type=tf.int64)
        else:  # ragged rank > 1: the generic (slower) way
            r = c[start:stop]
            row_splits = r.row_splits
            if self.raw[i]:  # a SparseTensor's indices of unknown rank: one rank per batch
                values = r.values.to_tensor()
                real = tf.size(r.flat_values, out_type=tf.int64)
                return _assert_unpadded(values, real, i, self.o.caller), row_splits
            x = r.to_tensor(default_value=pad_value)
            real = tf.size(r.flat_values, out_type=tf.int64)
        if self.o.no_padding:
            x = _assert_unpadded(x, real, i, self.o.caller)
        x = _pad_up(x, self.targets[i], width, pad_value, self.o.caller)
        if self.o.pre and self.varying[i]:  # right-align: reverse each row, then the time axis
            lengths = row_splits[1:] - row_splits[:-1]
            x = tf.reverse(tf.reverse_sequence(x, lengths, seq_axis=1, batch_axis=0), [1])
        return x

    def _assemble(self, out: list[Any], rows: tf.Tensor) -> list[Any]:
        """The batch's components from their parts (see :func:`_part_specs`)."""
        leaves, at = [], 0
        for spec, n in zip(self.leaves, self.counts, strict=True):
            parts, at = out[at : at + n], at + n
            if n == 1:
                leaves.append(parts[0])
            elif isinstance(spec, tf.SparseTensorSpec):
                leaves.append(_sparse_batch(parts, rows, spec))
            else:
                leaves.append(_ragged_batch(parts, spec))
        return leaves


def _sparse_batch(parts: list[Any], rows: tf.Tensor, spec: Any) -> tf.SparseTensor:
    """A batch of SparseTensors, as ``Dataset.batch`` makes it: each element's indices behind
    its row number, and the largest dense shape."""
    (indices, splits), (values, _), dense_shapes = parts
    row = tf.ragged.row_splits_to_segment_ids(splits, out_type=tf.int64)
    batch = tf.SparseTensor(
        tf.concat([row[:, None], indices], 1), values,
        tf.concat([tf.reshape(rows, [1]), tf.reduce_max(dense_shapes, 0)], 0))
    if spec.shape.rank is not None:
        batch.set_shape([None] * (spec.shape.rank + 1))
    return batch


def _ragged_batch(parts: list[Any], spec: Any) -> tf.RaggedTensor:
    """A batch of RaggedTensors, as ``Dataset.batch`` makes it (one more ragged dimension):
    the rows of each element, then the elements' own row lengths, level by level."""
    (flat_values, _), *levels = parts
    outer = levels[0][1]  # per element, where its first-level lengths start and end
    nested = [outer[1:] - outer[:-1], *(lengths for lengths, _ in levels)]
    return tf.RaggedTensor.from_nested_row_lengths(
        flat_values, [tf.cast(n, spec.row_splits_dtype) for n in nested], validate=False)


def _cardinality(dataset: tf.data.Dataset) -> int:
    """The dataset's cardinality, or UNKNOWN where it cannot be read while building."""
    card = dataset.cardinality()
    if tf.executing_eagerly():
        return int(card)
    static = tf.get_static_value(card)
    if static is not None:
        return int(static)
    try:  # TF1-style graph: the op only reads the dataset's structure, so run it once
        with tf.compat.v1.Session(graph=card.graph) as session:
            return int(session.run(card))
    except Exception:  # e.g. inside a traced function  # noqa: BLE001
        return tf.data.UNKNOWN_CARDINALITY


def _per_batch(parts: Any, cuts: Any) -> tf.data.Dataset:
    """One element per batch: each sees its pool's tensors (shared, not copied) and its own
    slice arguments."""
    return tf.data.Dataset.zip(
        tf.data.Dataset.from_tensors(parts).repeat(),
        tf.data.Dataset.from_tensor_slices(cuts),
    )


def _cut_args(out: list[Any], modes: list[str], start: tf.Tensor, stop: tf.Tensor,
              k: _Consts) -> list[tf.Tensor]:
    """Per batch, the ``tf.slice`` arguments that cut each part's rows out of ``out``."""
    first, rows = tf.expand_dims(start, k.axis1), tf.expand_dims(stop - start, k.axis1)
    cuts = []
    for c, mode in zip(out, modes, strict=True):
        if mode == "padded":
            begin = k.gather(c.row_splits, start)
            size = k.gather(c.row_splits, stop) - begin
            cuts += _slice_args(tf.expand_dims(begin, k.axis1), tf.expand_dims(size, k.axis1),
                                c.values)
            cuts += [first, rows + k.one, begin]
        elif mode == "dense":
            cuts += _slice_args(first, rows, c)
    return cuts


def _assert_unpadded(x: tf.Tensor, real: tf.Tensor, i: int, caller: str) -> tf.Tensor:
    """``x`` if padding it added nothing (its rows had one shape), else an error: tf.data's
    ``batch`` cannot batch tensors of different shapes either."""
    check = tf.debugging.Assert(tf.equal(tf.size(x, out_type=tf.int64), real), [
        f"{caller}(no_padding=True): cannot batch tensors with different shapes in "
        f"component {i}.\n- Pass no_padding=False to pad them, or make that component a "
        "SparseTensor."])
    with tf.control_dependencies([check]):
        return tf.identity(x)


def _pad_up(x: tf.Tensor, targets: list[Any] | None, width: tf.Tensor | None, value: tf.Tensor,
            caller: str) -> tf.Tensor:
    """Pad ``x`` (a batch) after its data up to ``targets`` (per dimension after the batch
    axis: ``None`` keeps the size, an int, or ``_TO_BOUNDARY`` for ``width``); an error, as
    ``padded_batch`` gives, where a row is larger than its target (never truncated)."""
    if targets is None:
        return x
    shape = tf.shape(x, out_type=tf.int64)
    want = tf.stack([shape[d + 1] if t is None else width if t == _TO_BOUNDARY
                     else tf.constant(t, tf.int64) for d, t in enumerate(targets)])
    check = tf.debugging.Assert(tf.reduce_all(shape[1:] <= want), [
        f"{caller}: a padded shape is smaller than an element (padding never truncates); "
        "element sizes:", shape[1:], "padded to:", want])
    with tf.control_dependencies([check]):
        pads = tf.stack([tf.zeros_like(want), want - shape[1:]], 1)
        out = tf.pad(x, tf.concat([tf.zeros([1, 2], tf.int64), pads], 0), constant_values=value)
    static = x.shape.as_list()[1:]
    out.set_shape([None] + [s if t is None else (None if t == _TO_BOUNDARY else t)
                            for s, t in zip(static, targets, strict=True)])
    return out


# --------------------------------------------------------------------------- public functions


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
            or of its first component. A ``length_fn`` that returns a component's leading
            dimension (``tf.shape(e["tokens"])[0]``) is recognised when traced and costs
            nothing; any other costs one ``map`` over the elements, a function call per
            element: about half the default's throughput.
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
    batch_size, max_tokens, max_length, buffer_size, seed, drop_remainder = _check_stream_args(
        batch_size, max_tokens, max_length, buffer_size, seed, drop_remainder, length_fn)
    sizes = _plan_batch_sizes(bounds, batch_size, max_tokens, max_length, quadratic_length)
    options = _Options(
        bounds, sizes, pool_size=buffer_size or _POOL, shuffled=bool(buffer_size), seed=seed,
        drop_remainder=drop_remainder, pre=padding == "pre", value=value, length_fn=length_fn,
        max_length=max_length,
    )
    return lambda dataset: _Stream(options, dataset.element_spec).apply(dataset)


def bucket_by_sequence_length(
    element_length_func: Callable[..., Any],
    bucket_boundaries: Sequence[int],
    bucket_batch_sizes: Sequence[int],
    padded_shapes: Any = None,
    padding_values: Any = None,
    pad_to_bucket_boundary: bool = False,
    no_padding: bool = False,
    drop_remainder: bool = False,
) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """A faster drop-in for ``tf.data.Dataset.bucket_by_sequence_length``, for ``dataset.apply``.

    Same arguments and the same batches and padding as tf.data's (only the order in which
    batches come out may differ): elements go to bucket ``i`` when
    ``bucket_boundaries[i-1] <= element_length_func(*components) < bucket_boundaries[i]``;
    each bucket is cut, in arrival order, into batches of ``bucket_batch_sizes[i]`` rows (its
    last, partial batch comes out at the end of the input, or is dropped with
    ``drop_remainder``); each batch is padded as ``padded_batch`` pads it. Built on
    :func:`bucket_by_length`'s pools: no per-element dataset per bucket, one ``map`` over the
    elements (the length function) and one padding op per component and batch.

    An infinite input (e.g. ``.repeat()``) keeps its infinite cardinality, as tf.data's does.
    A finite one gives an unknown cardinality (how many batches depends on the lengths; known
    only with one bucket or one row per batch), so Keras warns once per epoch that the input
    "ran out of data": see ``docs/tf_data.md`` for what to do.

    Args:
        element_length_func: ``(*components) -> scalar length`` (a tuple element's
            components are passed as separate arguments, a dict as one).
        bucket_boundaries: increasing integers, the upper bounds of the buckets.
        bucket_batch_sizes: rows per batch of each bucket, ``len(bucket_boundaries) + 1``
            positive integers.
        padded_shapes: a structure like the elements, of shapes: each ``None`` dimension
            is padded to the batch's longest (or to the bucket's boundary - 1 with
            ``pad_to_bucket_boundary``), each int to that size. Default: the elements' shapes.
        padding_values: a scalar for every component, a structure like the elements, or
            ``None``: 0 for numbers, ``""`` for strings, False for booleans.
        pad_to_bucket_boundary: pad the unknown dimensions to the bucket's boundary minus 1;
            an element in the last, open-ended bucket is then an error
            (``InvalidArgumentError`` naming ``bucket_boundaries``).
        no_padding: batch without padding, as ``Dataset.batch`` does: SparseTensor
            components become batched SparseTensors, RaggedTensor ones RaggedTensors with one
            more ragged dimension; dense ones must share their shape within a batch (else
            ``InvalidArgumentError``).
        drop_remainder: leave out each bucket's last, partial batch.

    Returns:
        A function ``Dataset -> Dataset`` of batches, for ``dataset.apply(...)``.

    Raises:
        ValueError: ``bucket_batch_sizes`` not one per bucket, decreasing boundaries, or
            ``padded_shapes`` that do not fit the elements.
        TypeError: a non-callable ``element_length_func``, non-integer sizes, non-boolean
            flags, or components that cannot be padded (sparse or ragged ones without
            ``no_padding``, as ``padded_batch`` refuses them).

    Example:
        >>> import tensorflow as tf
        >>> seqs = [[0], [1, 2, 3, 4], [5, 6, 7], [7, 8, 9, 10, 11], [13, 14, 15, 16, 19, 20],
        ...         [21, 22]]
        >>> ds = tf.data.Dataset.from_generator(lambda: seqs, tf.int64, output_shapes=[None])
        >>> out = ds.apply(bucket_by_sequence_length(
        ...     lambda x: tf.shape(x)[0], bucket_boundaries=[3, 5], bucket_batch_sizes=[2, 2, 2]))
        >>> for batch in out:
        ...     print(batch.numpy().tolist())
        [[1, 2, 3, 4], [5, 6, 7, 0]]
        [[7, 8, 9, 10, 11, 0], [13, 14, 15, 16, 19, 20]]
        [[0, 0], [21, 22]]
    """
    if not callable(element_length_func):
        raise TypeError(
            "Argument `element_length_func` must be callable. "
            f"Received: element_length_func={element_length_func!r}"
        )
    bounds = _check_tf_boundaries(bucket_boundaries)
    sizes = _check_tf_batch_sizes(bucket_batch_sizes, bounds)
    options = _Options(
        bounds, sizes, pool_size=max(_POOL, _POOL_PER_CARRY * int(sizes.sum())),
        value=padding_values, length_fn=element_length_func,
        spread_args=True, padded_shapes=padded_shapes,
        pad_to_bucket=_check_flag("pad_to_bucket_boundary", pad_to_bucket_boundary),
        no_padding=_check_flag("no_padding", no_padding),
        drop_remainder=_check_flag("drop_remainder", drop_remainder),
        caller="bucket_by_sequence_length",
    )
    return lambda dataset: _Stream(options, dataset.element_spec).apply(dataset)
