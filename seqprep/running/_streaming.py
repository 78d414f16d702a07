"""Streaming bucketing for ``dataset.apply(...)``: :func:`bucket_by_length` and
:func:`bucket_by_sequence_length`, a faster drop-in for ``tf.data``'s.

Both read the stream in bounded pools of elements, without a function call per element where
they can, and work on each pool whole in a few vectorised ops: lengths and buckets, an optional
seeded shuffle, and the cut of each bucket into batches (a bucket's partial batch is carried
into the next pool, so batches fill up across pools). Each batch is then cut out of its pool
and padded with one op.

The code is in three phases, one module each: the arguments are checked and the batch size of
each bucket is planned in numpy (:class:`_Options`, in :mod:`._streaming_options`, which also
checks the element spec against them); the pools: how each component is pooled, cut and padded
(:mod:`._streaming_pools`); and, here, the build: when the transformation meets a dataset, its
element spec decides the ops (:class:`_Stream`), then the graph is built: pools, a ``scan`` that
plans each pool's batches, and one function per batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from seqprep._core.checks import check_choice
from seqprep.planning import as_boundaries
from seqprep.running._streaming_options import (
    _TO_BOUNDARY,
    _check_default_length,
    _check_flag,
    _check_leaves,
    _check_padding_sides,
    _check_stream_args,
    _check_tf_batch_sizes,
    _check_tf_boundaries,
    _Options,
    _pad_targets,
    _pad_value,
    _part_count,
    _part_specs,
    _per_component,
    _plan_batch_sizes,
    _split_leaf,
    _traced_leading_dim,
    _value_leaves,
)
from seqprep.running._streaming_pools import (
    _concat_rows,
    _Consts,
    _cut_args,
    _cut_pool,
    _empty_pool,
    _gather_rows,
    _mode,
    _pool_kind,
    _pool_leaf,
    _pool_lengths,
    _ragged_batch,
    _sparse_batch,
    _sparse_to_ragged,
    _unpacked_spec,
)

__all__ = ["bucket_by_length", "bucket_by_sequence_length"]


Side = Literal["pre", "post"]


# Elements per pool when nothing is shuffled (``buffer_size`` None or 0). A pool is the unit of
# vectorised work: larger pools amortise the per-pool cost, smaller ones bound memory.
_POOL = 2048


# The drop-in reads pools of at least this many times the elements its buckets can carry from
# one pool to the next (the sum of the batch sizes): each pool re-gathers the carried elements,
# so with large batches small pools would spend most of their work on the carry.
_POOL_PER_CARRY = 2


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
        if options.per_field:
            leaf_values = _per_component("value", options.value, spec, 0)
            sides = _per_component("padding", options.padding, spec, "post")
        else:
            leaf_values = _value_leaves(options.value, spec, self.leaves)
            sides = [options.padding] * len(self.leaves)
        values = [v for v, n in zip(leaf_values, self.counts, strict=True)
                  for v in ([v] if n == 1 else [0] * n)]
        part_sides = [side for side, n in zip(sides, self.counts, strict=True)
                      for _ in range(n)]
        self.pre = [side == "pre" and vary  # right-aligned parts: reversed per batch
                    for side, vary in zip(part_sides, self.varying, strict=True)]
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
        if self.pre[i]:  # right-align: reverse each row, then the time axis
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


def bucket_by_length(
    boundaries: Any,
    *,
    batch_size: int | None = None,
    max_tokens: int | None = None,
    length_fn: Callable[[Any], tf.Tensor] | None = None,
    padding: Side | Mapping[str, Any] | Sequence[Any] = "post",
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
    with a variable leading dimension is padded to its own longest in the batch, on its own
    side, with its own value: an element may hold several ragged *fields* of different lengths
    (an encoder-decoder pair, ``({"encoder": (S,), "decoder": (T,)}, (T,))``), and each is
    padded as ``padded_batch`` pads that component. Fixed-shape components (labels) are batched
    as they are. Only the length, the bucketing length, decides the buckets, the batch sizes
    and the token budget: with several fields, ``length_fn`` says which (or what) it is.

    Args:
        boundaries: bucket boundaries (ascending ints) or a fitted :class:`Bucketer`; bucket
            ``i`` holds lengths in ``[boundaries[i-1], boundaries[i])``.
        batch_size: rows per batch. Exactly one of this and ``max_tokens``.
        max_tokens: budget of padded tokens per batch: rows x the longest bucketing length
            in the batch (what ``length_fn`` returns) <= ``max_tokens``. Needs
            ``max_length``, the bound of the last, open-ended bucket. With several fields it
            bounds each field's padded tokens only if the bucketing length is at least that
            field's length: bucket by the longest field
            (``length_fn=lambda e: tf.maximum(tf.shape(e["a"])[0], tf.shape(e["b"])[0])``)
            to keep every field's rows x width within ``max_tokens``.
        length_fn: ``element -> scalar length``; default: the first dimension of the element,
            or of its first component (of a tuple of tuples: the first leaf); an element
            whose first component is a dict needs one. A ``length_fn`` that returns a
            component's leading dimension (``tf.shape(e["tokens"])[0]``, or
            ``e[0]["encoder"]``'s) is recognised when traced and costs nothing; any other
            costs one ``map`` over the elements, a function call per element: about half the
            default's throughput.
        padding: ``"post"`` (default) or ``"pre"``, for every component; or per field, a
            structure like the elements in which one side may stand for a whole part of the
            element and a dict may leave fields out (they keep ``"post"``), e.g.
            ``({"encoder": "pre"}, "post")`` for ``({"encoder", "decoder"}, targets)``.
        value: padding value: one for every component, or per field as for ``padding``
            (fields left out pad with 0).
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
            ``max_length`` or below it, bad boundaries, an unknown ``padding`` side, a
            ``padding`` or ``value`` that names a field the elements lack or does not follow
            their structure, or an element whose sequence is a dict, without ``length_fn``.

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

        Several fields, each padded to its own width, bucketed by the source length:

        >>> src = tf.ragged.constant([[1, 1, 1], [2], [3, 3]])
        >>> dst = tf.ragged.constant([[7], [8, 8, 8], [9, 9]])
        >>> pairs = tf.data.Dataset.from_tensor_slices(({"src": src, "dst": dst}, dst))
        >>> out = pairs.apply(bucket_by_length(
        ...     [2], batch_size=2, buffer_size=None, padding=({"src": "pre"}, "post"),
        ...     value=({"dst": -1}, 0), length_fn=lambda e: tf.shape(e[0]["src"])[0]))
        >>> x, y = next(iter(out))
        >>> x["src"].numpy().tolist(), x["dst"].numpy().tolist(), y.numpy().tolist()
        ([[1, 1, 1], [0, 3, 3]], [[7, -1], [9, 9]], [[7, 0], [9, 9]])
    """
    bounds = as_boundaries(boundaries)
    if isinstance(padding, str):
        check_choice("padding", padding, ("pre", "post"))
    else:
        _check_padding_sides(padding)
    batch_size, max_tokens, max_length, buffer_size, seed, drop_remainder = _check_stream_args(
        batch_size, max_tokens, max_length, buffer_size, seed, drop_remainder, length_fn)
    sizes = _plan_batch_sizes(bounds, batch_size, max_tokens, max_length, quadratic_length)
    options = _Options(
        bounds, sizes, pool_size=buffer_size or _POOL, shuffled=bool(buffer_size), seed=seed,
        drop_remainder=drop_remainder, padding=padding, value=value, per_field=True,
        length_fn=length_fn, max_length=max_length,
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
