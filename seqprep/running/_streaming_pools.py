"""Phase 2 of the streaming bucketing (:mod:`seqprep.running._streaming`): pools of elements.

How each component of an element is pooled (dense, ragged or sparse), how a pool's rows are
concatenated, gathered and sorted by bucket, and how a pool is cut into batches (a bucket's
partial batch carried into the next pool); all vectorised TensorFlow ops on a whole pool.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

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
