"""TBPTT follows Keras's rule for per-step targets: a step that a masking layer masks inside a
sequence is no target (``model.fit`` on whole sequences leaves it out of the loss and the
metrics). Checked against Keras itself on the padded whole sequences, for the windowed and the
dense executors, with ``Masking`` and with ``Embedding(mask_zero=True)``, on every backend.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from seqprep import pad_sequences
from seqprep.running._tbptt import evaluate_tbptt, fit_tbptt

DIM = 3
LENGTHS = [7, 5, 9, 4, 6]


def _frames_model(batch_size):
    inputs = keras.Input(batch_shape=(batch_size, None, DIM))
    h = keras.layers.Masking(0.0)(inputs)
    h = keras.layers.GRU(4, stateful=batch_size is not None, return_sequences=True)(h)
    return keras.Model(inputs, keras.layers.Dense(1)(h))


def _tokens_model(batch_size):
    inputs = keras.Input(batch_shape=(batch_size, None), dtype="int32")
    h = keras.layers.Embedding(6, 3, mask_zero=True)(inputs)
    h = keras.layers.LSTM(4, stateful=batch_size is not None, return_sequences=True)(h)
    return keras.Model(inputs, keras.layers.Dense(1)(h))


def _data(kind, seed=0):
    """Sequences with masked steps inside them (never the first step), and step targets."""
    rng = np.random.default_rng(seed)
    if kind == "frames":
        x = [rng.normal(size=(n, DIM)).astype("float32") for n in LENGTHS]
        for s in x:
            s[rng.integers(1, len(s))] = 0.0  # an all-zero frame: masked by Masking(0.0)
    else:
        x = [rng.integers(1, 6, n).astype("int32") for n in LENGTHS]
        for s in x:
            s[rng.integers(1, len(s))] = 0  # token 0: masked by Embedding(mask_zero=True)
    y = [rng.normal(size=(n, 1)).astype("float32") for n in LENGTHS]
    return x, y


def _models(kind):
    build = _frames_model if kind == "frames" else _tokens_model
    keras.utils.set_random_seed(3)
    model, twin = build(2), build(None)
    twin.set_weights(model.get_weights())
    for m in (model, twin):
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", metrics=["mae"])
    return model, twin


def _padded(x, y):
    dtype = "float32" if x[0].dtype.kind == "f" else "int32"
    return (pad_sequences(x, dtype=dtype, padding="post"),
            pad_sequences(y, dtype="float32", padding="post"))


@pytest.mark.backend
@pytest.mark.parametrize("kind", ["frames", "tokens"])
@pytest.mark.parametrize("dense", [False, True])
def test_masked_steps_are_no_targets_in_evaluate(kind, dense):
    model, twin = _models(kind)
    x, y = _data(kind)
    xp, yp = _padded(x, y)
    want = twin.evaluate(xp, yp, batch_size=len(x), verbose=0, return_dict=True)
    got = evaluate_tbptt(model, x, y, window=3, batch_size=2, dense=dense, return_dict=True)
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-5)
    assert got["mae"] == pytest.approx(want["mae"], abs=1e-5)
    # An independent reference: the mean squared error over the steps that are within a
    # sequence's length and not masked (one masked step per sequence).
    p = keras.ops.convert_to_numpy(twin(xp))[..., 0]
    unmasked = (xp != 0) if kind == "tokens" else np.any(xp != 0, axis=-1)
    real = np.arange(xp.shape[1])[None, :] < np.array(LENGTHS)[:, None]
    assert int((real & ~unmasked).sum()) == len(LENGTHS)
    reference = float(np.mean(((p - yp[..., 0]) ** 2)[real & unmasked]))
    assert got["loss"] == pytest.approx(reference, abs=1e-5)


@pytest.mark.backend
@pytest.mark.parametrize("kind", ["frames", "tokens"])
def test_one_window_of_every_sequence_trains_like_keras_on_whole_sequences(kind):
    # A window as long as the longest sequence and a batch holding every sequence: one TBPTT
    # step is one Keras step on the padded whole sequences (masked steps left out of both).
    x, y = _data(kind, seed=1)
    build = _frames_model if kind == "frames" else _tokens_model
    keras.utils.set_random_seed(3)
    model, twin = build(len(x)), build(None)
    twin.set_weights(model.get_weights())
    for m in (model, twin):
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    fit_tbptt(model, x, y, window=max(LENGTHS), batch_size=len(x), epochs=1, verbose=0)
    xp, yp = _padded(x, y)
    twin.train_on_batch(xp, yp)
    for a, b in zip(model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
