"""PackedRNN: the packed forward pass and its gradients equal each sequence run alone.

Backend-agnostic: runs on the current Keras backend; ``test_on_jax`` re-runs part of this file
(LSTM, Bidirectional GRU, SimpleRNN, save/load, refusals) in a subprocess with
``KERAS_BACKEND=jax`` when JAX is installed. ``KERAS_BACKEND=jax pytest tests/test_layers.py``
runs all of it on JAX (it passes: 23 tests).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqprep.layers import PackedRNN
from seqprep.planning import PackSampler

FEATURES = 2
TOL = 1e-5
# JAX compiles every scan afresh per shape in eager mode: fewer drawn examples there.
EXAMPLES = 4 if keras.backend.backend() == "tensorflow" else 1


def _make(kind: str, return_sequences: bool) -> keras.layers.Layer:
    keras.utils.set_random_seed(1)
    rnn = {"simple": keras.layers.SimpleRNN, "gru": keras.layers.GRU,
           "lstm": keras.layers.LSTM}
    if kind.startswith("bi-"):
        _, inner, merge = kind.split("-")
        layer = keras.layers.Bidirectional(
            rnn[inner](3, return_sequences=return_sequences), merge_mode=merge
        )
    else:
        layer = rnn[kind](3, return_sequences=return_sequences)
    # Nonzero biases so that a missed reset would show.
    layer.build((None, None, FEATURES))
    for v in layer.trainable_variables:
        if "bias" in v.path:
            v.assign(np.random.default_rng(2).normal(size=v.shape).astype("float32"))
    return layer


KINDS = ["simple", "gru", "lstm", "bi-gru-concat", "bi-lstm-sum", "bi-simple-ave", "bi-gru-mul"]
_LAYERS: dict = {}


def _layer(kind, return_sequences):
    key = (kind, return_sequences)
    if key not in _LAYERS:
        _LAYERS[key] = _make(kind, return_sequences)
    return _LAYERS[key]


def _pack(seqs, rows, row_length):
    """Packed inputs built by hand (independent of packed_dataset)."""
    num_slots = max(len(r) for r in rows)
    values = np.zeros((len(rows), row_length, FEATURES), np.float32)
    seg = np.zeros((len(rows), row_length), np.int32)
    lens = np.zeros((len(rows), num_slots), np.int32)
    where = {}
    for b, row in enumerate(rows):
        t = 0
        for s, i in enumerate(row):
            n = len(seqs[i])
            values[b, t : t + n] = seqs[i]
            seg[b, t : t + n] = s + 1
            lens[b, s] = n
            where[i] = (b, s, t)
            t += n
    return {"values": values, "segment_ids": seg, "segment_lengths": lens}, where


def _loss_weights(units, seed=3):
    return np.random.default_rng(seed).normal(size=units).astype("float32")


def _grads(layer, inputs_list, loss_of_outputs):
    """Gradients of sum(loss_of_outputs(layer(x)) for x in inputs_list) w.r.t. its weights."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            total = sum(loss_of_outputs(layer(x), k) for k, x in enumerate(inputs_list))
        return [g.numpy() for g in tape.gradient(total, layer.trainable_variables)]
    if backend == "jax":
        import jax

        ntv = [v.value for v in layer.non_trainable_variables]

        def f(tv):
            return sum(
                loss_of_outputs(layer.stateless_call(tv, ntv, x)[0], k)
                for k, x in enumerate(inputs_list)
            )

        return [np.asarray(g) for g in jax.grad(f)([v.value for v in layer.trainable_variables])]
    pytest.skip(f"no gradient helper for backend {backend}")


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_packed_equals_each_sequence_alone(kind, return_sequences, data):
    lengths = data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=6), label="lengths")
    row_length = max(lengths) + data.draw(st.integers(0, 6), label="extra row room")
    sampler = PackSampler(
        lengths, row_length=row_length, batch_size=len(lengths),
        seed=data.draw(st.integers(0, 50), label="packing order seed"),
    )
    rows = sampler.batches(0)[0]
    rng = np.random.default_rng(len(lengths))
    seqs = [rng.normal(size=(n, FEATURES)).astype("float32") for n in lengths]
    inputs, where = _pack(seqs, [r.tolist() for r in rows], row_length)

    layer = _layer(kind, return_sequences)
    packed = PackedRNN(layer)
    out = keras.ops.convert_to_numpy(packed(inputs))
    units = out.shape[-1]
    # Sequences of equal length run alone together, as one plain batch (fewer eager calls).
    by_length = {n: [i for i, m in enumerate(lengths) if m == n] for n in set(lengths)}
    plain_batches = [np.stack([seqs[i] for i in ids]) for ids in by_length.values()]
    alone = [None] * len(seqs)
    for ids, xb in zip(by_length.values(), plain_batches, strict=True):
        for i, o in zip(ids, keras.ops.convert_to_numpy(layer(xb)), strict=True):
            alone[i] = o
    covered = np.zeros(out.shape[:2], bool)
    for i, (b, s, t) in where.items():
        if return_sequences:
            got = out[b, t : t + lengths[i]]
            covered[b, t : t + lengths[i]] = True
        else:
            got = out[b, s]
            covered[b, s] = True
        np.testing.assert_allclose(got, alone[i], atol=TOL, rtol=0)
    assert np.all(out[~covered] == 0)  # padding steps and empty slots are exactly zero

    # Gradients of a summed per-sequence loss equal those of the sequences run alone.
    w = _loss_weights(units)
    ops = keras.ops

    def packed_loss(o, _):
        return ops.sum(o * w)

    def alone_loss(o, _):
        return ops.sum(o * w)

    g_packed = _grads(packed, [inputs], packed_loss)
    g_alone = _grads(layer, plain_batches, alone_loss)
    assert len(g_packed) == len(g_alone) == len(layer.trainable_variables)
    for a, b in zip(g_packed, g_alone, strict=True):
        np.testing.assert_allclose(a, b, atol=TOL, rtol=1e-5)


def test_weights_are_the_wrapped_layers():
    layer = _make("lstm", False)
    packed = PackedRNN(layer)
    assert [v.path for v in packed.trainable_variables] == [
        v.path for v in layer.trainable_variables
    ]
    assert all(a is b for a, b in zip(packed.weights, layer.weights, strict=True))


def test_model_save_and_load_round_trip(tmp_path):
    inputs = {
        "values": keras.Input((7, FEATURES), name="values"),
        "segment_ids": keras.Input((7,), dtype="int32", name="segment_ids"),
        "segment_lengths": keras.Input((3,), dtype="int32", name="segment_lengths"),
    }
    hidden = PackedRNN(keras.layers.Bidirectional(keras.layers.GRU(4)))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, FEATURES)).astype("float32") for n in (3, 2, 4, 1)]
    batch, _ = _pack(seqs, [[0, 1], [2, 3]], 7)
    batch["segment_lengths"] = np.pad(batch["segment_lengths"], ((0, 0), (0, 1)))
    before = keras.ops.convert_to_numpy(model(batch))
    path = tmp_path / "packed.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(batch)), before, atol=1e-6)
    layer = next(x for x in model.layers if isinstance(x, PackedRNN))
    config = layer.get_config()
    clone = PackedRNN.from_config(config)
    assert clone.layer.get_config() == layer.layer.get_config()
    # Serve unpacked: the plain Bidirectional layer with the trained weights, one sequence.
    plain = next(x for x in loaded.layers if isinstance(x, PackedRNN)).layer
    dense = loaded.layers[-1]
    served = keras.ops.convert_to_numpy(dense(plain(seqs[2][None])))[0]
    np.testing.assert_allclose(served, before[1, 0], atol=TOL)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: keras.layers.Dense(3), TypeError, "SimpleRNN, GRU or LSTM"),
        (lambda: keras.layers.GRU(3, stateful=True), ValueError, "stateful=False"),
        (lambda: keras.layers.LSTM(3, return_state=True), ValueError, "return_state=False"),
        (lambda: keras.layers.GRU(3, go_backwards=True), ValueError, "go_backwards=False"),
        (lambda: keras.layers.GRU(3, dropout=0.1), ValueError, "dropout=0"),
        (lambda: keras.layers.Bidirectional(keras.layers.GRU(3), merge_mode=None),
         ValueError, "merge_mode"),
    ],
)
def test_unsupported_layers_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        PackedRNN(make())


def test_missing_inputs_are_refused():
    packed = PackedRNN(keras.layers.GRU(2))
    x = np.zeros((1, 3, FEATURES), np.float32)
    with pytest.raises(ValueError, match="segment_lengths"):
        packed({"values": x, "segment_ids": np.ones((1, 3), np.int32)})
    with pytest.raises(ValueError, match="dict with keys"):
        packed(x)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow" or importlib.util.find_spec("jax") is None,
    reason="runs once, from the TensorFlow run, when JAX is installed",
)
def test_on_jax():
    env = dict(os.environ, KERAS_BACKEND="jax")
    # A subset: JAX compiles each scan afresh, and the suite must stay fast.
    chosen = "lstm-False or bi-gru-concat-True or simple-True or save_and_load or refused"
    cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:xdist", "-x",
           "-p", "no:cacheprovider", "-k", chosen]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
