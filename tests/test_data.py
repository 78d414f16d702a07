"""Tests for the in-memory tf.data adapter, bucketed_dataset (streaming: test_streaming.py)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprep import (
    BucketSampler,
    Options,
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


@pytest.mark.parametrize("flag", [True, False, np.True_])
def test_boolean_sample_weight_is_refused_with_its_replacement(flag):
    x, lengths = _float_data(n=20, dim=2)
    y = [np.arange(k) % 3 for k in lengths]
    sampler = BucketSampler(lengths, boundaries=[10], batch_size=8, seed=0)
    with pytest.raises(TypeError, match=r"`sample_weight` takes no boolean(.|\n)*"
                       r'sample_weight="timestep"(.|\n)*sample_weight=None'):
        bucketed_dataset(x, y, sampler=sampler, sample_weight=flag)


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


@pytest.mark.filterwarnings("ignore:.*have length 0:UserWarning")
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
        if expected.shape[1] == 0:  # a batch of empty sequences: one padded step (faq)
            np.testing.assert_array_equal(xb, np.full((len(idx), 1), value))
        else:
            np.testing.assert_array_equal(xb, expected)


def test_cardinality_is_known_and_equals_len_sampler():
    x, lengths = _int_data(n=50)
    for kwargs in ({"batch_size": 8}, {"max_tokens": 64}):
        sampler = BucketSampler(lengths, **kwargs)
        ds = bucketed_dataset(x, sampler=sampler)
        assert int(ds.cardinality()) == len(sampler)
        assert int(bucketed_dataset(x, sampler=sampler,
                                    options=Options(epochs=3)).cardinality()) == 3 * len(
            sampler
        )
        r = bucketed_dataset(x, sampler=sampler, options=Options(reshuffle_each_iteration=True))
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

    two = bucketed_dataset(x, sampler=sampler, epoch=1, options=Options(epochs=2))
    assert firsts(two) == expected(1) + expected(2)
    assert firsts(two) == expected(3) + expected(4)  # the default: next epochs on every pass
    assert expected(1) != expected(2)
    ds = bucketed_dataset(x, sampler=sampler, epoch=4)
    assert [firsts(ds) for _ in range(3)] == [expected(4), expected(5), expected(6)]
    fixed = bucketed_dataset(x, sampler=sampler, epoch=4,
                             options=Options(reshuffle_each_iteration=False))
    assert firsts(fixed) == firsts(fixed) == expected(4)
    fixed_two = bucketed_dataset(x, sampler=sampler,
                                 options=Options(epochs=2, reshuffle_each_iteration=False))
    assert firsts(fixed_two) == firsts(fixed_two) == expected(0) + expected(1)


@pytest.mark.parametrize("truncating", ["post", "pre"])
def test_truncating_sampler_cuts_sequences(truncating):
    x, lengths = _int_data(n=25, high=40)
    sampler = BucketSampler(lengths, batch_size=5, max_length=16, overlong="truncate")
    assert sampler.num_truncated_ > 0
    ds = bucketed_dataset(x, sampler=sampler, options=Options(truncating=truncating))
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


def test_keras_model_fits_on_bucketed_dataset(token_model):
    x, lengths = _int_data(n=48, high=20)
    labels = (lengths > 10).astype(np.float32)
    sampler = BucketSampler(lengths, boundaries=[], batch_size=16, seed=0)
    ds = bucketed_dataset(x, labels, sampler=sampler, pad_to="bucket")  # one shape: one trace
    assert len({xb.shape for xb, _ in _as_numpy(ds)}) == 1
    keras.utils.set_random_seed(0)
    model = token_model(100, 8)
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
        bucketed_dataset(floats, sampler=BucketSampler(flengths, batch_size=2),
                         options=Options(dtype="int32"))
    with pytest.raises(ValueError, match="`value`"):
        bucketed_dataset(x, sampler=sampler, value=0.5)


def test_lengths_helper_agrees():
    x, lengths = _int_data(n=5)
    np.testing.assert_array_equal(sequence_lengths(x), lengths)


def test_reshuffle_each_iteration_advances_one_epoch_per_keras_epoch(token_model):
    x, lengths = _int_data(n=40, high=12)
    labels = (lengths > 6).astype(np.float32)
    sampler = BucketSampler(lengths, batch_size=10, seed=4)
    ds = bucketed_dataset(x, labels, sampler=sampler,
                          options=Options(reshuffle_each_iteration=True))
    model = token_model(100, 2, body="mean", mask_zero=False)
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


def test_fit_epochs_trains_a_new_order_each_epoch_and_shuffle_false_silences_keras(tmp_path):
    # The datasets are shuffled by their sampler; `shuffle=False` (the documented, public way)
    # keeps Keras from warning that its shuffle is ignored. seqprep installs no warnings filter.
    import warnings

    import seqprep as sp

    x, ids = _readme_like(n=90)
    sampler = BucketSampler(sequence_lengths(x), batch_size=16, seed=3)
    steps = len(sampler)
    for backup in (None, sp.BackupAndRestore(tmp_path / "backup")):
        ds = bucketed_dataset(x, ids, sampler=sampler)
        model = _recorder()
        with warnings.catch_warnings(record=True) as caught:
            model.fit(ds, epochs=3, verbose=0, shuffle=False,
                      callbacks=[] if backup is None else [backup])
        assert not [w for w in caught if "shuffle" in str(w.message)]
        epochs = [model.seen[e * steps : (e + 1) * steps] for e in range(3)]
        assert len(model.seen) == 3 * steps
        assert all(sorted(sum(e, [])) == list(range(len(x))) for e in epochs)
        assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]
        if backup is not None:
            # Driven by the callback, Keras epoch e plays exactly sampler epoch e.
            assert epochs == [[b.tolist() for b in sampler.batches(e)] for e in range(3)]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=8), st.data())
def test_lossy_cast_names_sequence_and_step(lengths, data):
    """A refused cast names x[i][t] (and the feature), not a step of one flattened row."""
    if sum(lengths) == 0:
        lengths[0] = 1
    x = [np.arange(t * 2, dtype=np.float64).reshape(t, 2) for t in lengths]
    i = data.draw(st.sampled_from([k for k, t in enumerate(lengths) if t]))
    t = data.draw(st.integers(0, lengths[i] - 1))
    k = data.draw(st.integers(0, 1))
    x[i][t, k] = 0.5  # every other value is a whole number
    sampler = BucketSampler(sequence_lengths(x), batch_size=2)
    with pytest.raises(ValueError, match=rf"value 0\.5 at x\[{i}\]\[{t}\]\[{k}\] is not a whole"):
        bucketed_dataset(x, sampler=sampler, options=Options(dtype="int32"))


def test_lossy_target_cast_names_y_position():
    x = [np.zeros(2), np.zeros(0), np.zeros(3)]
    y = [np.zeros(2), np.zeros(0), np.array([0.0, 1e40, 0.0])]
    sampler = BucketSampler(sequence_lengths(x), batch_size=2)
    with pytest.raises(ValueError, match=r"value 1e\+40 at y\[2\]\[1\] overflows float32"):
        bucketed_dataset(x, y, sampler=sampler)
