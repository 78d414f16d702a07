"""Tests for the tf.data adapters: bucketed_dataset and bucket_by_length."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprep import (
    BucketSampler,
    bucket_by_length,
    bucketed_dataset,
    pad_sequences,
    sequence_lengths,
    sequence_weights,
)

# --------------------------------------------------------------------------- fixtures


def _int_data(n=40, seed=0, low=1, high=30):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(low, high, n)
    x = [rng.integers(1, 100, size=k).astype(np.int32) for k in lengths]
    return x, lengths


def _float_data(n=40, seed=1, dim=3):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 25, n)
    x = [rng.normal(size=(k, dim)) for k in lengths]  # float64: batches come out float32
    return x, lengths


def _as_numpy(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), el) for el in ds]


# --------------------------------------------------------------------------- bucketed_dataset


@pytest.mark.parametrize("padding", ["post", "pre"])
@pytest.mark.parametrize("kind", ["int", "float"])
def test_same_batches_as_indexing_and_pad_sequences(padding, kind):
    x, lengths = _int_data() if kind == "int" else _float_data()
    n = len(x)
    labels = np.arange(n) % 3
    weights = np.linspace(0.5, 2.0, n)
    sampler = BucketSampler(lengths, boundaries=[6, 12], batch_size=7, seed=3)
    ds = bucketed_dataset(
        x, labels, sampler=sampler, padding=padding, sample_weight=weights, epoch=2
    )
    got = _as_numpy(ds)
    batches = sampler.batches(2)
    assert len(got) == len(batches) == len(sampler)
    dtype = "int32" if kind == "int" else "float32"
    for (xb, yb, wb), idx in zip(got, batches, strict=True):
        expected = pad_sequences([x[i] for i in idx], dtype=dtype, padding=padding)
        assert xb.dtype == expected.dtype
        np.testing.assert_array_equal(xb, expected)
        np.testing.assert_array_equal(yb, labels[idx])
        np.testing.assert_allclose(wb, weights[idx].astype(np.float32))


@pytest.mark.parametrize("padding", ["post", "pre"])
def test_per_timestep_targets_and_weights_padded_like_x(padding):
    x, lengths = _float_data(n=30, dim=2)
    y = [np.arange(k) % 4 for k in lengths]  # one class per step
    sampler = BucketSampler(lengths, boundaries=[10], batch_size=8, seed=0)
    ds = bucketed_dataset(x, y, sampler=sampler, padding=padding, sample_weight="timestep")
    for (xb, yb, wb), idx in zip(_as_numpy(ds), sampler.batches(0), strict=True):
        np.testing.assert_array_equal(
            xb, pad_sequences([x[i] for i in idx], dtype="float32", padding=padding)
        )
        np.testing.assert_array_equal(
            yb, pad_sequences([y[i] for i in idx], dtype="int64", padding=padding)
        )
        np.testing.assert_array_equal(wb, sequence_weights(lengths[idx], padding=padding))
        assert wb.dtype == np.float32


@settings(max_examples=12)
@given(data=st.data())
def test_matches_pad_sequences_randomized(data):
    n = data.draw(st.integers(1, 30), label="n")
    lengths = np.array(data.draw(st.lists(st.integers(0, 12), min_size=n, max_size=n)))
    batch_size = data.draw(st.integers(1, 6), label="batch_size")
    padding = data.draw(st.sampled_from(["pre", "post"]), label="padding")
    value = data.draw(st.sampled_from([0, -1, 7]), label="value")
    x = [list(range(1, k + 1)) for k in lengths]
    sampler = BucketSampler(lengths, boundaries=[4, 8], batch_size=batch_size, seed=1)
    got = _as_numpy(bucketed_dataset(x, sampler=sampler, padding=padding, value=value))
    assert len(got) == len(sampler)
    for xb, idx in zip(got, sampler.batches(0), strict=True):
        expected = pad_sequences(
            [x[i] for i in idx], dtype="int64", padding=padding, value=value
        )
        if expected.shape[1] == 0:  # a batch of empty sequences
            assert xb.shape == (len(idx), 0)
        else:
            np.testing.assert_array_equal(xb, expected)


def test_cardinality_is_known_and_equals_len_sampler():
    x, lengths = _int_data(n=50)
    for kwargs in ({"batch_size": 8}, {"max_tokens": 64}):
        sampler = BucketSampler(lengths, **kwargs)
        ds = bucketed_dataset(x, sampler=sampler)
        assert int(ds.cardinality()) == len(sampler)
        assert int(bucketed_dataset(x, sampler=sampler, epochs=3).cardinality()) == 3 * len(
            sampler
        )
        r = bucketed_dataset(x, sampler=sampler, reshuffle_each_iteration=True)
        assert int(r.cardinality()) == len(sampler)


def test_shards_follow_their_own_plan():
    x, lengths = _int_data(n=45)
    seen = []
    for shard in range(3):
        sampler = BucketSampler(lengths, batch_size=4, num_shards=3, shard_index=shard)
        got = _as_numpy(bucketed_dataset(x, sampler=sampler))
        assert len(got) == len(sampler)
        for xb, idx in zip(got, sampler.batches(0), strict=True):
            np.testing.assert_array_equal(
                xb, pad_sequences([x[i] for i in idx], dtype="int32", padding="post")
            )
        seen.extend(i for b in sampler.batches(0) for i in b.tolist())
    assert sorted(seen) == list(range(45))


def test_pad_to_bucket_bounds_shapes_to_bucket_pad_lengths():
    x, lengths = _int_data(n=120, high=60)
    sampler = BucketSampler(lengths, boundaries=[10, 20, 40], batch_size=16, seed=5)
    ds = bucketed_dataset(x, sampler=sampler, pad_to="bucket")
    plan = sampler.plan(0)
    widths = []
    for xb, idx, bucket in zip(_as_numpy(ds), plan.batches, plan.buckets, strict=True):
        width = xb.shape[1]
        assert width == sampler.bucket_pad_lengths[bucket]
        assert width >= lengths[idx].max()
        np.testing.assert_array_equal(
            xb, pad_sequences([x[i] for i in idx], maxlen=width, dtype="int32", padding="post")
        )
        widths.append(width)
    assert len(set(widths)) <= sampler.num_buckets


def test_pad_to_int_gives_one_static_shape():
    x, lengths = _int_data(n=20)
    sampler = BucketSampler(lengths, batch_size=6)
    ds = bucketed_dataset(x, sampler=sampler, pad_to=32, padding="pre")
    assert ds.element_spec.shape.as_list() == [None, 32]
    for xb, idx in zip(_as_numpy(ds), sampler.batches(0), strict=True):
        np.testing.assert_array_equal(
            xb, pad_sequences([x[i] for i in idx], maxlen=32, dtype="int32", padding="pre")
        )


def test_epochs_concatenate_consecutive_plans_and_reshuffle_each_iteration():
    x, lengths = _int_data(n=30)
    sampler = BucketSampler(lengths, batch_size=5, seed=9)

    def firsts(ds):
        return [int(xb[0, 0]) for xb in _as_numpy(ds)]

    def expected(epoch):
        return [int(x[b[0]][0]) for b in sampler.batches(epoch)]

    two = bucketed_dataset(x, sampler=sampler, epoch=1, epochs=2)
    assert firsts(two) == expected(1) + expected(2)
    assert firsts(two) == expected(3) + expected(4)  # the default: next epochs on every pass
    assert expected(1) != expected(2)
    ds = bucketed_dataset(x, sampler=sampler, epoch=4)
    assert [firsts(ds) for _ in range(3)] == [expected(4), expected(5), expected(6)]
    fixed = bucketed_dataset(x, sampler=sampler, epoch=4, reshuffle_each_iteration=False)
    assert firsts(fixed) == firsts(fixed) == expected(4)
    fixed_two = bucketed_dataset(x, sampler=sampler, epochs=2, reshuffle_each_iteration=False)
    assert firsts(fixed_two) == firsts(fixed_two) == expected(0) + expected(1)


@pytest.mark.parametrize("truncating", ["post", "pre"])
def test_truncating_sampler_cuts_sequences(truncating):
    x, lengths = _int_data(n=25, high=40)
    sampler = BucketSampler(lengths, batch_size=5, max_length=16, overlong="truncate")
    assert sampler.num_truncated_ > 0
    ds = bucketed_dataset(x, sampler=sampler, truncating=truncating)
    for xb, idx in zip(_as_numpy(ds), sampler.batches(0), strict=True):
        expected = pad_sequences(
            [x[i] for i in idx], maxlen=16, dtype="int32", padding="post",
            truncating=truncating,
        )
        np.testing.assert_array_equal(xb, expected[:, : xb.shape[1]])
        assert xb.shape[1] == min(16, lengths[idx].max())


def test_accepts_ragged_tensor_and_series_and_does_not_mutate():
    import pandas as pd

    x, lengths = _int_data(n=12)
    copies = [a.copy() for a in x]
    sampler = BucketSampler(lengths, batch_size=4, seed=2)
    want = _as_numpy(bucketed_dataset(x, sampler=sampler))
    for other in (tf.ragged.constant([a.tolist() for a in x]), pd.Series(x)):
        got = _as_numpy(bucketed_dataset(other, sampler=sampler))
        for a, b in zip(want, got, strict=True):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(x, copies, strict=True):
        np.testing.assert_array_equal(a, b)


def test_timestep_weights_zero_on_padding_and_loss_is_mean_over_real_steps():
    x, lengths = _int_data(n=24, high=15)
    y = [np.arange(k) % 3 for k in lengths]
    sampler = BucketSampler(lengths, boundaries=[7], batch_size=8, seed=0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    by_weight = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight"
    )
    rng = np.random.default_rng(0)
    plain = bucketed_dataset(x, y, sampler=sampler, sample_weight="timestep")
    mean = bucketed_dataset(x, y, sampler=sampler, sample_weight="timestep_mean")
    for (_, yb, wb), (_, _, wm), idx in zip(_as_numpy(plain), _as_numpy(mean),
                                             sampler.batches(0), strict=True):
        real = sequence_weights(lengths[idx]).astype(bool)
        assert np.all(wb[~real] == 0) and np.all(wb[real] == 1) and np.all(wm[~real] == 0)
        logits = rng.normal(size=(*yb.shape, 3)).astype(np.float32)
        shifted = logits - logits.max(-1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        nll = -np.take_along_axis(logp, yb[..., None], -1)[..., 0]
        by_hand = nll[real].mean()
        np.testing.assert_allclose(float(loss(yb, logits, sample_weight=wm)), by_hand,
                                   rtol=1e-5)
        np.testing.assert_allclose(float(by_weight(yb, logits, sample_weight=wb)), by_hand,
                                   rtol=1e-5)


def _tiny_sequence_model(mask_zero):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(100, 4, mask_zero=mask_zero),
        keras.layers.Dense(3),
    ])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_keras_evaluate_with_timestep_weights_gives_mean_over_real_steps():
    x, lengths = _int_data(n=10, high=12)
    y = [np.arange(k) % 3 for k in lengths]
    sampler = BucketSampler(lengths, batch_size=10, shuffle=False)
    # A mask reaching the loss: 0/1 weights. No mask: "timestep_mean" weights.
    for mask_zero, mode in ((True, "timestep"), (False, "timestep_mean")):
        model = _tiny_sequence_model(mask_zero)
        ds = bucketed_dataset(x, y, sampler=sampler, sample_weight=mode)
        (xb, yb, _), = _as_numpy(ds)
        logits = model.predict(xb, verbose=0)
        real = sequence_weights(lengths[sampler.batches(0)[0]]).astype(bool)
        nll = keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True)
        by_hand = np.asarray(nll)[real].mean()
        got = model.evaluate(ds, verbose=0)
        np.testing.assert_allclose(got, by_hand, rtol=1e-5)


def test_keras_model_fits_on_bucketed_dataset():
    x, lengths = _int_data(n=48, high=20)
    labels = (lengths > 10).astype(np.float32)
    sampler = BucketSampler(lengths, boundaries=[], batch_size=16, seed=0)
    ds = bucketed_dataset(x, labels, sampler=sampler, pad_to="bucket")  # one shape: one trace
    assert len({xb.shape for xb, _ in _as_numpy(ds)}) == 1
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(100, 8, mask_zero=True),
        keras.layers.GRU(8),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_bad_input_raises_clear_errors():
    x, lengths = _int_data(n=10)
    sampler = BucketSampler(lengths, batch_size=4)
    with pytest.raises(ValueError, match="`y` must have one entry per sequence"):
        bucketed_dataset(x, np.zeros(9), sampler=sampler)
    with pytest.raises(ValueError, match="lengths differ"):
        bucketed_dataset(x, [np.zeros(k + 1) for k in lengths], sampler=sampler)
    with pytest.raises(ValueError, match="`pad_to` must be"):
        bucketed_dataset(x, sampler=sampler, pad_to="longest")
    with pytest.raises(ValueError, match="`padding` must be"):
        bucketed_dataset(x, sampler=sampler, padding="mid")
    with pytest.raises(ValueError, match="built on 9 lengths"):
        bucketed_dataset(x, sampler=BucketSampler(lengths[:9], batch_size=4))
    with pytest.raises(ValueError, match="other lengths"):
        bucketed_dataset(x, sampler=BucketSampler(lengths[::-1].copy(), batch_size=4))
    with pytest.raises(TypeError, match="BucketSampler"):
        bucketed_dataset(x, sampler=[np.arange(10)])
    with pytest.raises(ValueError, match="`sample_weight` must be"):
        bucketed_dataset(x, np.zeros(10), sampler=sampler, sample_weight="steps")
    with pytest.raises(ValueError, match="`sample_weight` must have one entry"):
        bucketed_dataset(x, np.zeros(10), sampler=sampler, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="needs `y`"):
        bucketed_dataset(x, sampler=sampler, sample_weight="timestep")
    with pytest.raises(ValueError, match="`pad_to`=5 is shorter"):
        bucketed_dataset(x, sampler=sampler, pad_to=5)
    with pytest.raises(ValueError, match="cannot hold the data"):
        floats, flengths = _float_data(n=6)
        bucketed_dataset(floats, sampler=BucketSampler(flengths, batch_size=2), dtype="int32")
    with pytest.raises(ValueError, match="`value`"):
        bucketed_dataset(x, sampler=sampler, value=0.5)


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
    monkeypatch.setattr("seqprep.data._POOL", 5)
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
        monkeypatch.setattr("seqprep.data._POOL", pool)
        out = _stream(lengths).apply(bucket_by_length([3], batch_size=2, buffer_size=None))
        assert [ids for ids, _ in _bucket_batches(out)] == expected


def test_bucket_by_length_drop_remainder_leaves_out_each_buckets_last_partial_batch(
    monkeypatch,
):
    monkeypatch.setattr("seqprep.data._POOL", 7)
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


def test_lengths_helper_agrees():
    x, lengths = _int_data(n=5)
    np.testing.assert_array_equal(sequence_lengths(x), lengths)


def test_reshuffle_each_iteration_advances_one_epoch_per_keras_epoch():
    x, lengths = _int_data(n=40, high=12)
    labels = (lengths > 6).astype(np.float32)
    sampler = BucketSampler(lengths, batch_size=10, seed=4)
    ds = bucketed_dataset(x, labels, sampler=sampler, reshuffle_each_iteration=True)
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(100, 2),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(ds, epochs=2, verbose=0)
    # Keras made one pass per epoch (epochs 0 and 1): the next pass plays epoch 2.
    firsts = [int(xb[0, 0]) for xb, _ in _as_numpy(ds)]
    assert firsts == [int(x[b[0]][0]) for b in sampler.batches(2)]


# --------------------------------------------------------------------------- fresh epochs


def _readme_like(n=150, seed=0):
    rng = np.random.default_rng(seed)
    x = [rng.random((int(k), 3)).astype("float32") for k in rng.integers(5, 60, n)]
    for i, seq in enumerate(x):
        seq[0, 0] = i  # the example's id, exact in float32
    return x, np.arange(n, dtype=np.float32)


def test_readme_dataset_plays_a_new_order_on_every_pass():
    x, _ = _readme_like()
    y = np.random.default_rng(1).integers(0, 2, len(x))
    sampler = BucketSampler(sequence_lengths(x), batch_size=64, seed=0)
    ds = bucketed_dataset(x, y, sampler=sampler)  # as in the README: no extra argument
    orders = [[int(i) for xb, _ in _as_numpy(ds) for i in xb[:, 0, 0]] for _ in range(3)]
    assert all(sorted(o) == list(range(len(x))) for o in orders)
    assert orders[0] != orders[1] and orders[1] != orders[2] and orders[0] != orders[2]
    assert orders == [[int(i) for b in sampler.batches(e) for i in b] for e in range(3)]
    assert int(ds.cardinality()) == len(sampler)


class _Recorder(keras.Sequential):
    """Records the targets (the example ids) of every batch it trains on."""

    def train_step(self, data):
        self.seen.append(data[1].numpy().astype(int).tolist())
        return super().train_step(data)


def _recorder():
    model = _Recorder([
        keras.Input((None, 3)),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
    ])
    model.seen = []
    model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    return model


def test_fit_epochs_trains_a_new_order_each_epoch_without_keras_shuffle_warning(tmp_path):
    import warnings

    import seqprep as sp

    x, ids = _readme_like(n=90)
    sampler = BucketSampler(sequence_lengths(x), batch_size=16, seed=3)
    steps = len(sampler)
    for backup in (None, sp.BackupAndRestore(tmp_path / "backup")):
        ds = bucketed_dataset(x, ids, sampler=sampler)
        model = _recorder()
        with warnings.catch_warnings(record=True) as caught:
            model.fit(ds, epochs=3, verbose=0, callbacks=[] if backup is None else [backup])
        assert not [w for w in caught if "shuffle" in str(w.message)]
        epochs = [model.seen[e * steps : (e + 1) * steps] for e in range(3)]
        assert len(model.seen) == 3 * steps
        assert all(sorted(sum(e, [])) == list(range(len(x))) for e in epochs)
        assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]
        if backup is not None:
            # Driven by the callback, Keras epoch e plays exactly sampler epoch e.
            assert epochs == [[b.tolist() for b in sampler.batches(e)] for e in range(3)]
