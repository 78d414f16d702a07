"""packed_dataset: packed batches hold exactly the sampler's plan, with targets and weights."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqprep import Options, PackSampler, packed_dataset, sequence_lengths


def _seqs(lengths, step_shape, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 100, size=(n, *step_shape)).astype(np.float32) for n in lengths]


def _check_batches(ds, sampler, x, epoch, y=None, per_step=False, truncating="post"):
    """Every element against the plan: values, segment ids, lengths, targets, weights."""
    plan = sampler.batches(epoch)
    elements = list(ds)
    assert len(elements) == len(plan)
    width, num_slots = sampler.row_length, sampler.max_segments_
    for element, batch in zip(elements, plan, strict=True):
        inputs, targets, weights = element if y is not None else (element, None, None)
        values = inputs["values"].numpy()
        seg = inputs["segment_ids"].numpy()
        lens = inputs["segment_lengths"].numpy()
        assert values.shape[:2] == seg.shape == (len(batch), width)
        assert lens.shape == (len(batch), num_slots) and seg.dtype == lens.dtype == np.int32
        for b, row in enumerate(batch):
            t = 0
            for s, i in enumerate(row.tolist()):
                n = int(sampler.lengths[i])
                want = x[i][:n] if truncating == "post" else x[i][len(x[i]) - n :]
                np.testing.assert_array_equal(values[b, t : t + n], want)
                assert np.all(seg[b, t : t + n] == s + 1) and lens[b, s] == n
                if y is not None and per_step:
                    np.testing.assert_array_equal(targets.numpy()[b, t : t + n], y[i][:n])
                    assert np.all(weights.numpy()[b, t : t + n] == 1)
                elif y is not None:
                    np.testing.assert_array_equal(targets.numpy()[b, s], y[i])
                    assert weights.numpy()[b, s] == 1
                t += n
            assert np.all(seg[b, t:] == 0) and np.all(values[b, t:] == 0)
            assert np.all(lens[b, len(row) :] == 0)
            if y is not None and per_step:
                assert np.all(weights.numpy()[b, t:] == 0) and np.all(targets.numpy()[b, t:] == 0)
            elif y is not None:
                assert np.all(weights.numpy()[b, len(row) :] == 0)
                assert np.all(targets.numpy()[b, len(row) :] == 0)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_packed_batches_follow_the_plan(data):
    lengths = data.draw(st.lists(st.integers(1, 9), min_size=1, max_size=25), label="lengths")
    step_shape = data.draw(st.sampled_from([(), (2,), (2, 3)]), label="step shape")
    row_length = data.draw(st.none() | st.integers(4, 20), label="row_length")
    truncating = data.draw(st.sampled_from(["pre", "post"]), label="truncating")
    sampler = PackSampler(lengths, row_length=row_length, overlong="truncate",
                          batch_size=data.draw(st.integers(1, 4), label="batch_size"),
                          seed=data.draw(st.integers(0, 9), label="seed"))
    x = _seqs(lengths, step_shape)
    target_kind = data.draw(st.sampled_from(["none", "sequence", "step"]), label="targets")
    y = None
    if target_kind == "sequence":
        y = np.arange(len(lengths) * 2).reshape(-1, 2) + 1
    elif target_kind == "step":
        y = [np.arange(n) + 1 for n in lengths]
        if sampler.length_limit is not None and truncating == "pre":
            truncating = "post"  # per-step targets are checked against their first steps
    ds = packed_dataset(x, y, sampler=sampler, epoch=1,
                        options=Options(reshuffle_each_iteration=False, truncating=truncating),
                        targets="auto" if target_kind == "none" else target_kind)
    assert int(ds.cardinality()) == len(sampler)
    _check_batches(ds, sampler, x, 1, y=y, per_step=target_kind == "step", truncating=truncating)


def test_each_pass_plays_the_next_epoch():
    lengths = [3, 1, 2, 5, 4, 2, 1, 3, 2, 2, 4, 1]
    x = _seqs(lengths, (1,))
    sampler = PackSampler(lengths, batch_size=2, seed=3)
    ds = packed_dataset(x, sampler=sampler)
    assert int(ds.cardinality()) == len(sampler)
    _check_batches(ds, sampler, x, 0)
    _check_batches(ds, sampler, x, 1)  # the second pass: epoch 1
    two = packed_dataset(x, sampler=sampler, epoch=4,
                         options=Options(epochs=2, reshuffle_each_iteration=False))
    assert int(two.cardinality()) == 2 * len(sampler)
    first = [e["segment_lengths"].numpy().tolist() for e in two]
    again = [e["segment_lengths"].numpy().tolist() for e in two]
    assert first == again


def test_sample_weight_multiplies_the_slot_weights():
    lengths = [2, 1, 3, 1]
    sampler = PackSampler(lengths, batch_size=4, shuffle=False)
    w = np.array([0.5, 2.0, 1.0, 3.0])
    replay = Options(reshuffle_each_iteration=False)
    _, _, weights = next(iter(packed_dataset(_seqs(lengths, ()), [0, 1, 0, 1], sampler=sampler,
                                             sample_weight=w, options=replay)))
    rows = sampler.batches(0)[0]
    for b, row in enumerate(rows):
        assert weights.numpy()[b, : len(row)].tolist() == w[row].astype(np.float32).tolist()


def test_fit_with_packed_rnn_learns():
    import keras

    from seqprep.layers import PackedRNN

    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 9, 120)
    y = rng.integers(0, 2, 120)
    # The class is the sign of the first step: only a state that is reset can read it.
    x = [np.concatenate([[[2.0 * c - 1]], rng.normal(0, 0.1, (n - 1, 1))]).astype("float32")
         for n, c in zip(lengths, y, strict=True)]
    sampler = PackSampler(sequence_lengths(x), batch_size=8, seed=0)
    ds = packed_dataset(x, y, sampler=sampler)
    inputs = {
        "values": keras.Input((sampler.row_length, 1), name="values"),
        "segment_ids": keras.Input((sampler.row_length,), dtype="int32", name="segment_ids"),
        "segment_lengths": keras.Input((sampler.max_segments_,), dtype="int32",
                                       name="segment_lengths"),
    }
    h = PackedRNN(keras.layers.GRU(8))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(0.03),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=["accuracy"])
    hist = model.fit(ds, epochs=6, verbose=0)
    assert hist.history["accuracy"][-1] > 0.9


def test_bad_arguments():
    x = _seqs([2, 3], ())
    with pytest.raises(TypeError, match="`sampler` must be a seqprep.PackSampler"):
        packed_dataset(x, sampler=object())
    with pytest.raises(ValueError, match="other lengths"):
        packed_dataset(x, sampler=PackSampler([2, 4], batch_size=1))
    with pytest.raises(ValueError, match="`sample_weight` needs `y`"):
        packed_dataset(x, sampler=PackSampler([2, 3], batch_size=1), sample_weight=[1, 1])
    with pytest.raises(ValueError, match="`y`"):
        packed_dataset(x, [1, 2, 3], sampler=PackSampler([2, 3], batch_size=1))


def test_packed_reference_rnn_serves_unpacked():
    import keras

    from seqprep.layers import PackedRNN
    from seqprep.models import reference_rnn

    rng = np.random.default_rng(1)
    lengths = [5, 3, 2, 6, 1, 4]
    x = [rng.normal(size=(n, 3)).astype("float32") for n in lengths]
    packed = reference_rnn(input_dim=3, num_classes=4, cell="lstm", units=5,
                           bidirectional=True, num_layers=2, seed=0, packed=True)
    assert packed.output_shape == (None, None, 4)
    plain = reference_rnn(input_dim=3, num_classes=4, cell="lstm", units=5,
                          bidirectional=True, num_layers=2, seed=1)
    inner = {}
    for layer in packed.layers:
        inner[(layer.layer if isinstance(layer, PackedRNN) else layer).name] = (
            layer.layer if isinstance(layer, PackedRNN) else layer
        )
    for layer in plain.layers:
        if layer.weights:
            layer.set_weights(inner[layer.name].get_weights())
    sampler = PackSampler(lengths, batch_size=3, seed=2)
    for inputs, _labels, _weights in packed_dataset(x, [0, 1, 2, 3, 0, 1], sampler=sampler,
                                                  options=Options(reshuffle_each_iteration=False)):
        out = keras.ops.convert_to_numpy(packed(inputs))
        for b, row in enumerate(sampler.batches(0)[0]):
            for s, i in enumerate(row.tolist()):
                alone = keras.ops.convert_to_numpy(plain(x[i][None]))[0]
                np.testing.assert_allclose(out[b, s], alone, atol=1e-5)
        break
    with pytest.raises(ValueError, match="packed=True"):
        reference_rnn(input_dim=3, num_classes=4, dropout=0.1, packed=True)
