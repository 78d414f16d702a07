"""Tests for seqprep.running._streaming: bucket_by_length and bucket_by_sequence_length, the
drop-in for
tf.data's (differential tests against ``tf.data.Dataset.bucket_by_sequence_length``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprep import bucket_by_length, bucket_by_sequence_length, pad_sequences


def _as_numpy(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), el) for el in ds]


# --------------------------------------------------------------------------- bucket_by_length


def _stream(lengths, seed=0):
    """A dataset of (sequence, id): each sequence is its id repeated `length` times."""
    ids = np.arange(len(lengths))
    ragged = tf.RaggedTensor.from_row_lengths(np.repeat(ids, lengths), lengths)
    return tf.data.Dataset.from_tensor_slices((ragged, ids))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 8},
        {"batch_size": 8, "padding": "pre", "buffer_size": 50, "seed": 3},
        {"max_tokens": 120, "max_length": 60, "seed": 1},
    ],
)
def test_bucket_by_length_emits_every_element_once_within_budget(kwargs):
    lengths = np.random.default_rng(0).integers(1, 61, 300)
    out = _stream(lengths).apply(bucket_by_length([8, 16, 32], **kwargs))
    seen = []
    padding = kwargs.get("padding", "post")
    for xb, ids in _as_numpy(out):
        ids = ids.tolist()
        seen.extend(ids)
        width = xb.shape[1]
        assert width == lengths[ids].max()
        np.testing.assert_array_equal(
            xb, pad_sequences([[i] * lengths[i] for i in ids], dtype="int64", padding=padding)
        )
        if "batch_size" in kwargs:
            assert len(ids) <= kwargs["batch_size"]
        else:
            assert len(ids) * width <= kwargs["max_tokens"]
        buckets = np.searchsorted([8, 16, 32], lengths[ids], side="right")
        assert len(set(buckets.tolist())) == 1
    assert sorted(seen) == list(range(300))


def test_bucket_by_length_same_seed_same_order():
    lengths = np.random.default_rng(1).integers(1, 40, 96)

    def order(seed):
        out = _stream(lengths).apply(bucket_by_length([10, 20], batch_size=8, seed=seed,
                                                      buffer_size=32))
        return [ids.tolist() for _, ids in _as_numpy(out)]

    assert order(5) == order(5)
    assert order(5) != order(6)


def test_bucket_by_length_drop_remainder_and_fitted_bucketer_and_dict():
    from seqprep import Bucketer

    lengths = np.random.default_rng(2).integers(1, 30, 100)
    bucketer = Bucketer(3, strategy="quantile").fit(lengths)
    ds = _stream(lengths).map(lambda s, i: {"tokens": s, "id": i})
    out = ds.apply(
        bucket_by_length(bucketer, batch_size=6, drop_remainder=True, buffer_size=None,
                         length_fn=lambda e: tf.shape(e["tokens"])[0])
    )
    batches = _as_numpy(out)
    assert all(b["tokens"].shape[0] == 6 for b in batches)
    counts = np.bincount(bucketer.bucket_of(lengths), minlength=3)
    assert len(batches) == int((counts // 6).sum())


def test_bucket_by_length_bad_input():
    with pytest.raises(ValueError, match="exactly one of"):
        bucket_by_length([5], batch_size=2, max_tokens=10)
    with pytest.raises(ValueError, match="needs `max_length`"):
        bucket_by_length([5], max_tokens=10)
    with pytest.raises(ValueError, match="below `max_length`"):
        bucket_by_length([5], max_tokens=10, max_length=20)
    with pytest.raises(ValueError, match="`padding` must be"):
        bucket_by_length([5], batch_size=2, padding="mid")
    with pytest.raises(ValueError, match="strictly increasing"):
        bucket_by_length([5, 3], batch_size=2)
    ds = _stream(np.array([1, 2])).map(lambda s, i: {"tokens": s, "id": i})
    with pytest.raises(ValueError, match="length_fn"):
        ds.apply(bucket_by_length([5], batch_size=2))
    long = _stream(np.array([3, 50])).apply(bucket_by_length([5], batch_size=2, max_length=10))
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_length=10"):
        _as_numpy(long)


def _bucket_batches(out):
    """(ids, x) per batch of a `_stream` dataset bucketed by bucket_by_length."""
    return [(ids.tolist(), xb) for xb, ids in _as_numpy(out)]


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_bucket_by_length_randomized_every_element_once_one_partial_per_bucket(data):
    n = data.draw(st.integers(0, 60), label="n")
    lengths = np.array(data.draw(st.lists(st.integers(0, 20), min_size=n, max_size=n)),
                       dtype=np.int64)
    bounds = sorted(data.draw(st.sets(st.integers(1, 21), max_size=3), label="bounds"))
    buffer_size = data.draw(st.sampled_from([None, 1, 4, 9, 64]), label="buffer_size")
    drop = data.draw(st.booleans(), label="drop_remainder")
    if data.draw(st.booleans(), label="budget"):
        budget = data.draw(st.integers(21, 80), label="max_tokens")
        kwargs = {"max_tokens": budget, "max_length": 21}
        upper = np.append(np.array(bounds, np.int64) - 1, 21).clip(min=1)
        sizes = np.maximum(budget // upper, 1)
    else:
        size = data.draw(st.integers(1, 7), label="batch_size")
        kwargs = {"batch_size": size}
        sizes = np.full(len(bounds) + 1, size)
    out = _stream(lengths).apply(bucket_by_length(
        bounds, buffer_size=buffer_size, seed=2, drop_remainder=drop, **kwargs))
    bucket_of = np.searchsorted(bounds, lengths, side="right")
    seen, partial = [], np.zeros(len(bounds) + 1, np.int64)
    for ids, xb in _bucket_batches(out):
        buckets = set(bucket_of[ids].tolist())
        assert len(buckets) == 1  # one bucket per batch
        b = buckets.pop()
        assert 1 <= len(ids) <= sizes[b]
        assert xb.shape == (len(ids), lengths[ids].max())  # padded to its longest
        if "max_tokens" in kwargs:
            assert xb.size <= kwargs["max_tokens"]
        if xb.shape[1]:
            np.testing.assert_array_equal(xb, pad_sequences(
                [[i] * lengths[i] for i in ids], dtype="int64", maxlen=xb.shape[1],
                padding="post"))
        partial[b] += len(ids) < sizes[b]
        seen.extend(ids)
    counts = np.bincount(bucket_of, minlength=len(bounds) + 1)
    assert len(seen) == len(set(seen))  # nothing twice
    if drop:
        assert not partial.any()
        assert len(seen) == int((counts // sizes * sizes).sum())
    else:
        assert sorted(seen) == list(range(n))
        # Partial batches only where a bucket's count is not a multiple of its size: batches
        # fill across pools instead of leaving one partial batch per pool.
        np.testing.assert_array_equal(partial, (counts % sizes) > 0)


def test_bucket_by_length_batches_fill_across_pools(monkeypatch):
    # 1 long sequence every 4: with pools of 3 (shuffled) or 5 (in order) elements, no pool
    # holds a full batch of long ones, yet every long batch is full but the last.
    lengths = np.where(np.arange(200) % 4 == 0, 30, 2)
    monkeypatch.setattr("seqprep.running._streaming._POOL", 5)
    for kwargs in ({"buffer_size": 3, "seed": 0}, {"buffer_size": None}):
        batches = _bucket_batches(_stream(lengths).apply(
            bucket_by_length([10], batch_size=8, **kwargs)))
        long = [ids for ids, _ in batches if lengths[ids[0]] == 30]
        short = [ids for ids, _ in batches if lengths[ids[0]] == 2]
        assert [len(ids) for ids in long] == [8] * 6 + [2]
        assert [len(ids) for ids in short] == [8] * 18 + [6]
        if kwargs["buffer_size"] is None:  # input order kept within each bucket
            assert sum(long, []) == list(range(0, 200, 4))


def test_bucket_by_length_order_without_shuffle_is_completion_order(monkeypatch):
    # In input order a batch is emitted when its last element arrives (as group_by_window
    # does), whatever the pool boundaries; the partial batches come out at the end.
    lengths = np.array([1, 5, 1, 5, 5, 1, 1, 5, 1, 1, 5])
    expected = [[0, 2], [1, 3], [5, 6], [4, 7], [8, 9], [10], ]
    for pool in (1, 3, 1024):
        monkeypatch.setattr("seqprep.running._streaming._POOL", pool)
        out = _stream(lengths).apply(bucket_by_length([3], batch_size=2, buffer_size=None))
        assert [ids for ids, _ in _bucket_batches(out)] == expected


def test_bucket_by_length_drop_remainder_leaves_out_each_buckets_last_partial_batch(
    monkeypatch,
):
    monkeypatch.setattr("seqprep.running._streaming._POOL", 7)
    lengths = np.random.default_rng(3).integers(1, 30, 101)
    bucket_of = np.searchsorted([10, 20], lengths, side="right")
    kept = _bucket_batches(_stream(lengths).apply(
        bucket_by_length([10, 20], batch_size=4, buffer_size=None, drop_remainder=True)))
    assert all(len(ids) == 4 for ids, _ in kept)
    seen = sorted(i for ids, _ in kept for i in ids)
    # In input order, the dropped elements are each bucket's last count % 4.
    expected = []
    for b in range(3):
        members = np.flatnonzero(bucket_of == b)
        expected.extend(members[: members.size // 4 * 4].tolist())
    assert seen == sorted(expected)


def _assert_full_batches_but_last(batches, lengths, bounds, sizes):
    """Bucket ``b``'s batches hold ``sizes[b]`` rows each, but one smaller last batch."""
    bucket_of = np.searchsorted(bounds, lengths, side="right")
    for b, size in enumerate(sizes):
        rows = [len(ids) for ids, _ in batches if bucket_of[ids[0]] == b]
        count = int((bucket_of == b).sum())
        assert rows.count(size) == count // size and len(rows) == -(-count // size)


def test_bucket_by_length_token_budget_never_exceeded():
    lengths = np.random.default_rng(4).integers(1, 101, 400)
    out = _stream(lengths).apply(bucket_by_length(
        [5, 17, 40], max_tokens=100, max_length=100, buffer_size=64, seed=0))
    batches = _bucket_batches(out)
    assert all(xb.size <= 100 for _, xb in batches)
    assert sorted(i for ids, _ in batches for i in ids) == list(range(400))
    # Bucket bounds 4, 16, 39 and max_length 100: 25, 6, 2 and 1 rows per batch, every batch
    # full but each bucket's last.
    _assert_full_batches_but_last(batches, lengths, [5, 17, 40], [25, 6, 2, 1])


def test_bucket_by_length_quadratic_cost_term_budget_exact():
    lengths = np.random.default_rng(6).integers(1, 101, 300)
    out = _stream(lengths).apply(bucket_by_length(
        [5, 17, 40], max_tokens=1000, max_length=100, quadratic_length=50, buffer_size=64,
        seed=0))
    batches = _bucket_batches(out)
    for _, xb in batches:
        rows, width = xb.shape
        assert rows * width * (50 + width) <= 1000 * 50
    assert sorted(i for ids, _ in batches for i in ids) == list(range(300))
    # Bounds 4, 16, 39 and 100: a row costs 4.32, 21.12, 69.42 and 300 tokens, so 231, 47,
    # 14 and 3 rows per batch; every batch full but each bucket's last.
    _assert_full_batches_but_last(batches, lengths, [5, 17, 40], [231, 47, 14, 3])
    with pytest.raises(ValueError, match="fits one row of at most 61 steps"):
        bucket_by_length([5], max_tokens=100, max_length=100, quadratic_length=100)
    with pytest.raises(ValueError, match="`quadratic_length` only changes"):
        bucket_by_length([5], batch_size=4, quadratic_length=100)


def test_bucket_by_length_seeds_deterministic_and_distinct_and_reshuffled_per_pass():
    lengths = np.random.default_rng(5).integers(1, 40, 120)

    def build(seed):
        return _stream(lengths).apply(
            bucket_by_length([10, 20], batch_size=4, buffer_size=16, seed=seed))

    def order(ds):
        return [ids for ids, _ in _bucket_batches(ds)]

    assert order(build(7)) == order(build(7))
    assert order(build(7)) != order(build(8))
    ds = build(7)
    first, second = order(ds), order(ds)
    assert first != second  # a new permutation on each pass, every element once in each
    assert sorted(sum(first, [])) == sorted(sum(second, [])) == list(range(120))


def test_bucket_by_length_pre_padding_is_flipped_post_padding():
    lengths = np.random.default_rng(6).integers(0, 25, 90)
    ids = np.arange(90)
    steps = np.concatenate([np.arange(1, k + 1) for k in lengths]).astype(np.int32)
    seqs = tf.RaggedTensor.from_row_lengths(steps, lengths)
    targets = tf.RaggedTensor.from_row_lengths(
        np.stack([steps, -steps], axis=1).astype(np.float32), lengths)
    ds = tf.data.Dataset.from_tensor_slices((seqs, targets, ids))

    def run(padding, source):
        return _as_numpy(source.apply(bucket_by_length(
            [8, 16], batch_size=5, padding=padding, value=(-9, -1.0, 0), buffer_size=32,
            seed=3)))

    pre = run("pre", ds)
    # Reversing every sequence, post-padding and flipping back gives the pre-padded batch.
    flipped = run("post", ds.map(lambda s, t, i: (tf.reverse(s, [0]), tf.reverse(t, [0]), i)))
    assert len(pre) == len(flipped)
    for (xp, tp, ip), (xf, tf_, i_f) in zip(pre, flipped, strict=True):
        np.testing.assert_array_equal(ip, i_f)
        np.testing.assert_array_equal(xp, xf[:, ::-1])
        np.testing.assert_array_equal(tp, tf_[:, ::-1])
        assert tp.shape == (len(ip), xp.shape[1], 2)
        for row, i in zip(xp, ip, strict=True):
            k = lengths[i]
            assert (row[: row.size - k] == -9).all()
            np.testing.assert_array_equal(row[row.size - k :], np.arange(1, k + 1))


def test_bucket_by_length_dense_elements_dict_strings_and_empty_stream():
    # Dense (not ragged-slice) elements, a dict with length_fn, a string label, a fixed-shape
    # component, an empty input, and a second pass over the same dataset.
    lengths = [3, 1, 4, 1, 5, 9, 2, 6]

    def gen():
        for i, k in enumerate(lengths):
            yield {"tokens": np.full(k, i + 1, np.int64), "name": str(i),
                   "pair": np.array([i, -i], np.int32)}

    ds = tf.data.Dataset.from_generator(gen, output_signature={
        "tokens": tf.TensorSpec([None], tf.int64), "name": tf.TensorSpec([], tf.string),
        "pair": tf.TensorSpec([2], tf.int32)})
    out = ds.apply(bucket_by_length([4], batch_size=3, buffer_size=None,
                                    length_fn=lambda e: tf.shape(e["tokens"])[0]))
    for _ in range(2):
        batches = _as_numpy(out)
        assert [b["name"].tolist() for b in batches] == [
            [b"0", b"1", b"3"], [b"2", b"4", b"5"], [b"6"], [b"7"]]
        assert batches[0]["tokens"].tolist() == [[1, 1, 1], [2, 0, 0], [4, 0, 0]]
        assert batches[1]["pair"].tolist() == [[2, -2], [4, -4], [5, -5]]
    empty = ds.take(0).apply(bucket_by_length([4], batch_size=3, length_fn=lambda e: 1))
    assert _as_numpy(empty) == []



def test_bucket_by_length_components_with_several_variable_dimensions():
    # (T, F) with F varying too, and (3, W) with W varying: padded like padded_batch would,
    # the time axis on the `padding` side, the other axes after.
    lengths = [3, 1, 4, 5]

    def gen():
        for i, k in enumerate(lengths):
            yield np.full((k, i % 3 + 1), i + 1, np.int32), np.full((3, i % 2 + 1), i, np.int32)

    ds = tf.data.Dataset.from_generator(gen, output_signature=(
        tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([3, None], tf.int32)))
    out = _as_numpy(ds.apply(bucket_by_length(
        [3], batch_size=2, buffer_size=None, padding="pre", value=-1)))
    (x0, w0), (x1, w1), (x2, w2) = out
    np.testing.assert_array_equal(x0[0], [[-1, -1, -1]] + [[1, -1, -1]] * 3)
    np.testing.assert_array_equal(x0[1], [[3, 3, 3]] * 4)
    assert x1.shape == (1, 1, 2) and x2.shape == (1, 5, 1)  # the flushed remainders
    assert w0.shape == (2, 3, 1) and w1.shape == (1, 3, 2)


# ------------------------------------------------------------------- bucket_by_sequence_length
# Differential tests: the same input through tf.data's Dataset.bucket_by_sequence_length and
# through ours must give the same multiset of batches (element ids and padded arrays); only the
# order in which batches come out may differ.

FORMS = ("tensor", "tuple", "triple", "dict")


def _elements(lengths, form):
    """A dataset whose element ``i`` has a sequence of ``lengths[i]`` steps valued
    ``100 * i + step + 1`` (so every row names its element), in one of four structures."""
    lengths = [int(k) for k in lengths]

    def gen():
        for i, k in enumerate(lengths):
            seq = (100 * i + np.arange(1, k + 1)).astype(np.int32)
            steps = np.stack([seq, -seq], axis=1).astype(np.float32)
            yield {"tensor": seq, "tuple": (seq, np.int64(i)), "triple": (seq, steps, np.int64(i)),
                   "dict": {"tokens": seq, "id": np.int64(i)}}[form]

    seq_spec = tf.TensorSpec([None], tf.int32)
    signature = {
        "tensor": seq_spec,
        "tuple": (seq_spec, tf.TensorSpec([], tf.int64)),
        "triple": (seq_spec, tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([], tf.int64)),
        "dict": {"tokens": seq_spec, "id": tf.TensorSpec([], tf.int64)},
    }[form]
    return tf.data.Dataset.from_generator(gen, output_signature=signature)


def _length_func(form):
    # tf.data passes a tuple's components as separate arguments, a dict as one.
    return {
        "tensor": lambda s: tf.shape(s)[0],
        "tuple": lambda s, i: tf.shape(s)[0],
        "triple": lambda s, t, i: tf.shape(s)[0],
        "dict": lambda e: tf.shape(e["tokens"])[0],
    }[form]


def _option_kwargs(option, form, lengths, bounds):
    """tf.data's keyword arguments for one of the options under test (and the boundaries,
    which `pad_to_bucket_boundary` and `no_padding` constrain)."""
    top = max([int(k) for k in lengths] + [0])
    if option == "pad_to_bucket_boundary":  # lengths must stay below the last boundary
        return {"pad_to_bucket_boundary": True}, sorted(set(bounds) | {top + 1})
    if option == "no_padding":  # one length per bucket, so batches need no padding
        return {"no_padding": True}, sorted({int(k) + 1 for k in lengths})
    if option == "padded_shapes":
        width = top + 3
        shapes = {"tensor": [width], "tuple": ([width], []), "triple": ([width], [None, 4], []),
                  "dict": {"tokens": [width], "id": []}}[form]
        return {"padded_shapes": shapes}, bounds
    if option == "padding_values":
        values = {"tensor": np.int32(-7), "tuple": (np.int32(-7), np.int64(0)),
                  "triple": (np.int32(-7), np.float32(0.5), np.int64(0)),
                  "dict": {"tokens": np.int32(-7), "id": np.int64(0)}}[form]
        return {"padding_values": values}, bounds
    return {}, bounds


def _canonical(batches):
    """The batches as a sorted list of hashable values: each component's shape, dtype and
    bytes (a SparseTensor by its indices, values and dense shape)."""
    def leaf(t):
        if isinstance(t, tf.RaggedTensor):
            return tuple(leaf(p) for p in (t.flat_values, *t.nested_row_splits))
        if isinstance(t, tf.SparseTensor):
            return tuple(leaf(p) for p in (t.indices, t.values, t.dense_shape))
        a = t.numpy()
        data = tuple(a.ravel().tolist()) if a.dtype == object else a.tobytes()  # strings
        return a.shape, a.dtype.str, data

    return sorted(tuple(leaf(t) for t in tf.nest.flatten(b, expand_composites=False))
                  for b in batches)


def _both(dataset, **kwargs):
    """(tf.data's batches, ours), after checking both have the same element spec."""
    theirs = dataset.bucket_by_sequence_length(**kwargs)
    ours = dataset.apply(bucket_by_sequence_length(**kwargs))
    assert ours.element_spec == theirs.element_spec
    return list(theirs), list(ours)


def _assert_same_batches(dataset, **kwargs):
    theirs, ours = _both(dataset, **kwargs)
    assert len(ours) == len(theirs)
    assert _canonical(ours) == _canonical(theirs)
    return ours


GRID_LENGTHS = [3, 0, 7, 7, 12, 1, 5, 9, 7, 14, 2, 2, 11, 6, 8, 7, 13, 4, 10, 7, 3]


@pytest.mark.parametrize("option", ["plain", "pad_to_bucket_boundary", "padded_shapes",
                                    "padding_values", "no_padding"])
@pytest.mark.parametrize("form", FORMS)
def test_bucket_by_sequence_length_same_batches_as_tf_data_grid(option, form):
    drop = (FORMS.index(form) + len(option)) % 2 == 0  # both values over the grid
    extra, bounds = _option_kwargs(option, form, GRID_LENGTHS, [4, 8, 12])
    sizes = [2, 3, 1, 4, 2, 3, 2, 2, 3, 2, 2, 2, 2, 2, 2, 2][: len(bounds) + 1]
    ours = _assert_same_batches(
        _elements(GRID_LENGTHS, form), element_length_func=_length_func(form),
        bucket_boundaries=bounds, bucket_batch_sizes=sizes, drop_remainder=drop, **extra)
    assert ours  # the grid's data fill batches in every case


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_bucket_by_sequence_length_same_batches_as_tf_data_randomized(data):
    n = data.draw(st.integers(0, 40), label="n")
    lengths = data.draw(st.lists(st.integers(0, 20), min_size=n, max_size=n), label="lengths")
    form = data.draw(st.sampled_from(FORMS), label="form")
    option = data.draw(st.sampled_from(["plain", "pad_to_bucket_boundary", "padded_shapes",
                                        "padding_values", "no_padding"]), label="option")
    bounds = sorted(data.draw(st.sets(st.integers(1, 21), max_size=4), label="bounds"))
    extra, bounds = _option_kwargs(option, form, lengths, bounds)
    sizes = data.draw(st.lists(st.integers(1, 6), min_size=len(bounds) + 1,
                               max_size=len(bounds) + 1), label="sizes")
    _assert_same_batches(
        _elements(lengths, form), element_length_func=_length_func(form),
        bucket_boundaries=bounds, bucket_batch_sizes=sizes,
        drop_remainder=data.draw(st.booleans(), label="drop_remainder"), **extra)


def test_bucket_by_sequence_length_fills_batches_across_pools(monkeypatch):
    # Pools of 4 elements: no pool holds a whole batch, and the batches are still tf.data's.
    monkeypatch.setattr("seqprep.running._streaming._POOL", 4)
    monkeypatch.setattr("seqprep.running._streaming._POOL_PER_CARRY", 0)
    lengths = np.random.default_rng(0).integers(0, 30, 90)
    _assert_same_batches(_elements(lengths, "triple"), element_length_func=_length_func("triple"),
                         bucket_boundaries=[5, 10, 20], bucket_batch_sizes=[7, 5, 6, 3])


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_bucket_by_sequence_length_sparse_no_padding_same_as_tf_data(drop_remainder):
    # SparseTensor components (of known and unknown rank) come out as tf.data's `batch`
    # makes them: indices per row, and the largest dense shape.
    lengths = np.random.default_rng(1).integers(1, 15, 40)

    def gen():
        for i, k in enumerate(lengths):
            yield {"indices": np.arange(0, 2 * k, 2)[:, None], "values": np.arange(k) + 10 * i,
                   "dense_shape": [2 * k + i % 3]}, i

    for shape in ([None, 1], None):
        ds = tf.data.Dataset.from_generator(gen, output_signature=(
            {"indices": tf.TensorSpec(shape, tf.int64), "values": tf.TensorSpec([None], tf.int64),
             "dense_shape": tf.TensorSpec([1] if shape else None, tf.int64)},
            tf.TensorSpec([], tf.int64)))
        ds = ds.map(lambda r, i: (tf.SparseTensor(**r), i))
        _assert_same_batches(ds,
                             element_length_func=lambda s, i: tf.cast(s.dense_shape[0], tf.int32),
                             bucket_boundaries=[8, 16], bucket_batch_sizes=[3, 4, 2],
                             no_padding=True, drop_remainder=drop_remainder)


def test_bucket_by_sequence_length_several_variable_dimensions_and_bool_strings():
    # (T, F) with F varying (padded on both axes), booleans and strings, padded as tf.data does.
    def gen():
        for i, k in enumerate([3, 1, 4, 1, 5, 9, 2, 6, 5, 3]):
            yield (np.full((k, i % 3 + 1), i + 1, np.float32), np.arange(k) % 2 == 0,
                   np.array([str(i)] * k))

    ds = tf.data.Dataset.from_generator(gen, output_signature=(
        tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.bool),
        tf.TensorSpec([None], tf.string)))
    for kwargs in ({}, {"pad_to_bucket_boundary": True},
                   {"padding_values": (np.float32(-1), True, b"pad")}):
        _assert_same_batches(ds, element_length_func=lambda x, b, s: tf.shape(x)[0],
                             bucket_boundaries=[3, 10], bucket_batch_sizes=[2, 3, 1], **kwargs)


def test_bucket_by_sequence_length_cardinality_infinite_kept_known_when_lengths_do_not_matter():
    ds = _elements([1, 2, 3, 4, 5], "tuple")
    kwargs = {"element_length_func": _length_func("tuple"), "bucket_boundaries": [3],
              "bucket_batch_sizes": [2, 2]}
    ours = ds.repeat().apply(bucket_by_sequence_length(**kwargs))
    assert int(ours.cardinality()) == tf.data.INFINITE_CARDINALITY
    assert int(ds.repeat().bucket_by_sequence_length(**kwargs).cardinality()) == \
        tf.data.INFINITE_CARDINALITY
    first = [ids.numpy().tolist() for _, ids in ours.take(6)]
    # Each epoch's elements 0..4: bucket 0 holds lengths 1, 2; bucket 1 the rest.
    assert first[:2] == [[0, 1], [2, 3]]
    finite = ds.apply(bucket_by_sequence_length(**kwargs))
    assert int(finite.cardinality()) == tf.data.UNKNOWN_CARDINALITY  # depends on the lengths
    # Where the count does not depend on the lengths (one bucket, or one row per batch), it
    # is known, and exact.
    for bounds, sizes, drop, count in (([], [2], False, 3), ([], [2], True, 2),
                                       ([3], [1, 1], True, 5)):
        sized = ds.apply(tf.data.experimental.assert_cardinality(5))
        known = sized.apply(bucket_by_sequence_length(_length_func("tuple"), bounds, sizes,
                                                   drop_remainder=drop))
        assert int(known.cardinality()) == count == len(list(known))
    known = _stream(np.array([1, 2, 3, 4, 5])).apply(bucket_by_length([], batch_size=2))
    assert int(known.cardinality()) == 3 == len(list(known))


def test_bucket_by_sequence_length_runtime_errors_like_tf_data():
    ds = _elements([2, 3, 9, 1], "tuple")
    length = _length_func("tuple")
    # An element in the open-ended bucket cannot be padded to a boundary: the batches before
    # it come out, then the error names `bucket_boundaries`.
    out = iter(ds.apply(bucket_by_sequence_length(length, [5], [2, 1],
                                                  pad_to_bucket_boundary=True)))
    assert next(out)[0].shape == (2, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="bucket_boundaries"):
        next(out)
    # Padding never truncates: a fixed padded size below an element's length is an error.
    with pytest.raises(tf.errors.InvalidArgumentError, match="never truncates"):
        list(ds.apply(bucket_by_sequence_length(length, [5], [2, 2],
                                                padded_shapes=([4], []))))
    # Without padding, dense rows of different lengths cannot be batched.
    with pytest.raises(tf.errors.InvalidArgumentError, match="different shapes"):
        list(ds.apply(bucket_by_sequence_length(length, [5], [2, 2], no_padding=True)))


def test_bucket_by_sequence_length_bad_arguments():
    length = _length_func("tensor")
    with pytest.raises(ValueError, match=r"`bucket_batch_sizes` must have one size per bucket"):
        bucket_by_sequence_length(length, [3, 5], [2, 2])
    with pytest.raises(ValueError, match="increasing order"):
        bucket_by_sequence_length(length, [5, 3], [2, 2, 2])
    with pytest.raises(ValueError, match="`bucket_batch_sizes` must be at least 1"):
        bucket_by_sequence_length(length, [3], [2, 0])
    with pytest.raises(TypeError, match="`element_length_func` must be callable"):
        bucket_by_sequence_length(3, [3], [2, 2])
    with pytest.raises(TypeError, match="`no_padding` must be True or False"):
        bucket_by_sequence_length(length, [3], [2, 2], no_padding="yes")
    ds = _elements([1, 2], "tuple")
    with pytest.raises(ValueError, match="`padded_shapes` gives"):
        ds.apply(bucket_by_sequence_length(_length_func("tuple"), [3], [2, 2],
                                           padded_shapes=([4, 4], [])))
    with pytest.raises(ValueError, match="structure"):
        ds.apply(bucket_by_sequence_length(_length_func("tuple"), [3], [2, 2],
                                           padded_shapes=[4]))
    sparse = ds.map(lambda s, i: tf.sparse.from_dense(s))
    with pytest.raises(TypeError, match="no_padding=True"):
        sparse.apply(bucket_by_sequence_length(length, [3], [2, 2]))


def test_bucket_by_sequence_length_trains_a_keras_model_on_infinite_input(token_model):

    ds = _elements([k + 1 for k in GRID_LENGTHS], "tuple").map(
        lambda s, i: (s % 50, tf.cast(i % 2, tf.float32)))
    train = ds.repeat().apply(bucket_by_sequence_length(
        lambda s, y: tf.shape(s)[0], [4, 8], [4, 4, 4]))
    model = token_model(50, 2, body="mean")
    model.compile(optimizer="sgd", loss="mse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(train, epochs=2, steps_per_epoch=3, verbose=0)
        assert len(history.history["loss"]) == 2
        assert np.isfinite(history.history["loss"]).all()
        # A finite stream: unknown cardinality, so Keras warns that the input ran out...
        finite = ds.apply(bucket_by_sequence_length(lambda s, y: tf.shape(s)[0], [4, 8],
                                                    [4, 4, 4]))
        model.fit(finite, epochs=2, verbose=0)
        assert sum("ran out of data" in str(w.message) for w in caught) == 2
        # ...unless told the number of batches, counted once (the documented recipe).
        steps = int(finite.reduce(0, lambda n, _: n + 1))
        counted = finite.apply(tf.data.experimental.assert_cardinality(steps))
        history = model.fit(counted, epochs=2, verbose=0)
    assert sum("ran out of data" in str(w.message) for w in caught) == 2
    assert len(history.history["loss"]) == 2


def test_length_functions_recognised_only_when_they_return_a_leading_dimension():
    from seqprep.running._streaming_options import _traced_leading_dim

    pair = (tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 2], tf.float32))
    recognised = {
        lambda s, t: tf.shape(s)[0]: 0,
        lambda s, t: tf.shape(t)[0]: 1,
        lambda s, t: tf.size(s): 0,
        lambda s, t: tf.cast(tf.shape(t, out_type=tf.int64)[0], tf.int32): 1,
    }
    for fn, component in recognised.items():
        assert _traced_leading_dim(fn, pair, True) == component
    for fn in (lambda s, t: tf.shape(s)[0] + 1, lambda s, t: tf.size(t),
               lambda s, t: tf.shape(t)[1], lambda s, t: tf.reduce_sum(s),
               lambda s, t: tf.cast(tf.shape(s)[0], tf.int8)):
        assert _traced_leading_dim(fn, pair, True) is None
    tokens = {"id": tf.TensorSpec([], tf.int64), "tokens": tf.TensorSpec([None], tf.int32)}
    assert _traced_leading_dim(lambda e: tf.shape(e["tokens"])[0], tokens, True) == 1


@pytest.mark.parametrize("length", [
    lambda s, t, i: tf.shape(t)[0],  # recognised: another component's leading dimension
    lambda s, t, i: tf.shape(s)[0] // 2 + tf.cast(i % 3, tf.int32),  # not: one map per element
])
def test_bucket_by_sequence_length_any_length_function_same_as_tf_data(length):
    lengths = np.random.default_rng(2).integers(0, 20, 50)
    _assert_same_batches(_elements(lengths, "triple"), element_length_func=length,
                         bucket_boundaries=[3, 6, 9], bucket_batch_sizes=[4, 3, 2, 5])


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_bucket_by_sequence_length_ragged_no_padding_same_as_tf_data(drop_remainder):
    # RaggedTensor components (ragged rank 1 and 2) are batched as tf.data's `batch` does:
    # one more ragged dimension, the same element spec.
    rng = np.random.default_rng(3)
    rows = [[list(range(int(k))) for k in rng.integers(0, 4, n)] for n in rng.integers(0, 6, 30)]
    nested = tf.ragged.constant(rows, dtype=tf.int64)
    deeper = tf.ragged.constant([[[[i]] * (i % 3)] for i in range(30)], dtype=tf.float32)
    ds = tf.data.Dataset.from_tensor_slices((nested, deeper, tf.range(30))).map(
        lambda r, d, i: (r, d, i))
    _assert_same_batches(ds, element_length_func=lambda r, d, i: tf.cast(r.nrows(), tf.int32),
                         bucket_boundaries=[2, 4], bucket_batch_sizes=[3, 2, 4],
                         no_padding=True, drop_remainder=drop_remainder)


# --------------------------------------------------------------------------- exact pad values


def _padded_with(value, dtype):
    """Pad [[1], [1, 1]] to width 2 with `value`; the one padded step."""
    rows = tf.cast(tf.ragged.constant([[1], [1, 1]], dtype=tf.int64), dtype)
    ds = tf.data.Dataset.from_tensor_slices(rows)
    ds = ds.map(lambda r: r)  # unbatched (T,) elements
    batch = next(iter(ds.apply(bucket_by_length([3], batch_size=2, value=value,
                                                 buffer_size=None))))
    return batch.numpy()[0, 1]


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        (2**63, tf.int64), (2**64, tf.uint64), (-1, tf.uint64), (2**64 - 1, tf.int64),
        (2**24 + 1, tf.float32), (2**53 + 1, tf.float64), (1.5, tf.int32), (-0.5, tf.uint8),
        (float("nan"), tf.int64), (float("inf"), tf.int32), (1e39, tf.float32),
        (np.float64(1e39), tf.float32), (np.int64(2**62 + 1), tf.float64), (2, tf.bool),
    ],
)
def test_bucket_by_length_refuses_pad_value_that_changes(value, dtype):
    with pytest.raises(ValueError, match=r"Argument `value`=.*cannot be represented.*\n- Pick"):
        _padded_with(value, dtype)


@pytest.mark.parametrize(
    ("value", "dtype", "expected"),
    [
        (2**63 - 1, tf.int64, 2**63 - 1), (-(2**63), tf.int64, -(2**63)),
        (2**64 - 1, tf.uint64, 2**64 - 1), (2**63, tf.uint64, 2**63), (3.0, tf.int32, 3),
        (2**24, tf.float32, 2.0**24), (np.uint64(2**64 - 1), tf.uint64, 2**64 - 1),
        (True, tf.int32, 1), (1, tf.bool, True),
    ],
)
def test_bucket_by_length_keeps_exact_pad_value(value, dtype, expected):
    got = _padded_with(value, dtype)
    assert got.dtype == dtype.as_numpy_dtype and int(got) == int(expected)


def test_bucket_by_length_keeps_negative_zero_pad():
    got = _padded_with(-0.0, tf.float32)
    assert got == 0 and np.signbit(got)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=-(2**65), max_value=2**65),
       st.sampled_from([tf.int8, tf.int32, tf.int64, tf.uint8, tf.uint64, tf.float32]))
def test_pad_value_check_is_exact_for_python_ints(value, dtype):
    from seqprep.running._streaming_options import _pad_value

    np_dtype = np.dtype(dtype.as_numpy_dtype)
    if np_dtype.kind == "f":
        fits = abs(value) <= 2**24 or int(np.float32(value)) == value
    else:
        info = np.iinfo(np_dtype)
        fits = info.min <= value <= info.max
    if fits:
        assert int(_pad_value(value, tf.TensorSpec([None], dtype), "0").numpy()) == value
    else:
        with pytest.raises(ValueError, match="cannot be represented"):
            _pad_value(value, tf.TensorSpec([None], dtype), "0")


@pytest.mark.parametrize(("value", "dtype"), [(300, "uint8"), (-1, "uint64"), (1.5, "int32"),
                                              (2**24 + 1, "float32"), (2, "bool")])
def test_pad_value_refused_with_the_input_stage_text(value, dtype):
    """One pad-value check: the streaming drop-in and pad_sequences say the same words."""
    from seqprep.running._streaming_options import _pad_value

    with pytest.raises(ValueError) as streamed:
        _pad_value(value, tf.TensorSpec([None], tf.as_dtype(dtype)), "0")
    with pytest.raises(ValueError) as padded:
        pad_sequences([np.zeros(1, dtype)], maxlen=2, dtype=dtype, value=value)
    assert str(streamed.value) == str(padded.value)


def test_bfloat16_pad_value_checked_exactly():
    assert float(_padded_with(1.5, tf.bfloat16)) == 1.5
    with pytest.raises(ValueError, match=r"`dtype`='bfloat16': it changes in the cast"):
        _padded_with(257, tf.bfloat16)
