"""TBPTT with plain stateful classifiers: the last recurrent layer has return_sequences=False.

The reference is the model's non-stateful twin (same weights) run on each whole sequence alone.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprep.models import reference_rnn
from seqprep.running._tbptt import evaluate_tbptt, fit_tbptt, predict_tbptt

# Run under every Keras backend by the Makefile's backend step (KERAS_BACKEND=jax|torch).
pytestmark = pytest.mark.backend
to_numpy = keras.ops.convert_to_numpy
DIM = 2
CLASSES = 3


def classifier(cell="gru", *, batch_size=3, num_layers=1, seed=0):
    return reference_rnn(
        input_dim=DIM, num_classes=CLASSES, cell=cell, units=4, num_layers=num_layers,
        stateful=True, batch_size=batch_size, seed=seed,
    )


def twin_of(model, cell="gru", *, num_layers=1):
    twin = reference_rnn(input_dim=DIM, num_classes=CLASSES, cell=cell, units=4,
                         num_layers=num_layers)
    twin.set_weights(model.get_weights())
    return twin


def sequences(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, DIM)).astype("float32") for n in lengths]


def whole(twin, x, rows=6, pad_to=12):
    """The twin's output for every whole sequence, from one post-padded batch (one shape).

    The twin's Masking layer makes the zero tail padding, as in plain Keras training.
    """
    padded = np.zeros((rows, pad_to, DIM), "float32")
    for i, seq in enumerate(x):
        padded[i, : len(seq)] = seq
    return to_numpy(twin(padded))[: len(x)]


# Models are cached per (cell, batch size, depth) so Hypothesis examples reuse compiled steps.
_MODELS: dict = {}


def cached(cell, batch_size, num_layers):
    key = (cell, batch_size, num_layers)
    if key not in _MODELS:
        model = classifier(cell, batch_size=batch_size, num_layers=num_layers, seed=len(_MODELS))
        _MODELS[key] = (model, twin_of(model, cell, num_layers=num_layers))
    return _MODELS[key]


# Cells are covered by the parametrized test below; here the layout varies. Few distinct
# (batch size, window) pairs keep the compiled steps few on JAX.
@settings(max_examples=15)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    window=st.sampled_from([1, 3, 5]),
    batch_size=st.integers(1, 3),
)
def test_predict_equals_whole_sequence_twin(lengths, window, batch_size):
    num_layers = 2 if batch_size == 2 else 1  # a stack: only the top layer is per-window
    model, twin = cached("gru", batch_size, num_layers)
    x = sequences(lengths, seed=sum(lengths))
    got = predict_tbptt(model, x, window=window, batch_size=batch_size)
    assert got.shape == (len(x), CLASSES)
    np.testing.assert_allclose(got, whole(twin, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cell,num_layers", [("simple", 1), ("gru", 1), ("lstm", 2)])
def test_predict_is_in_input_order_with_packed_rows_and_idle_rows(cell, num_layers):
    # 7 sequences in 3 rows: rows hold several sequences; the longest keeps one row busy
    # after the others have run out.
    lengths = [12, 2, 7, 5, 1, 9, 4]
    model = classifier(cell, num_layers=num_layers)
    x = sequences(lengths)
    expected = whole(twin_of(model, cell, num_layers=num_layers), x, rows=7)
    for window in (1, 3, 12):
        got = predict_tbptt(model, x, window=window, batch_size=3)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _one_sgd_step_of_twin(model, x, y, cell, lr):
    """One SGD step of the non-stateful twin on the whole sequences as one padded batch."""
    twin = twin_of(model, cell)
    twin.compile(optimizer=keras.optimizers.SGD(lr), loss="sparse_categorical_crossentropy")
    padded = np.zeros((len(x), max(map(len, x)), DIM), "float32")
    for i, s in enumerate(x):
        padded[i, : len(s)] = s  # the twin's Masking layer treats the zero tail as padding
    twin.train_on_batch(padded, y)
    return twin.get_weights()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("n", [3, 2])  # a full batch, and a batch with an idle row
def test_single_window_step_equals_twin_gradient_step(cell, n):
    """window >= every length: one window, one optimizer step == the twin's step."""
    lengths = [6, 4, 5][:n]
    x = sequences(lengths, seed=5)
    y = np.array([0, 2, 1][:n])
    lr = 0.5
    model = classifier(cell, seed=3)
    expected = _one_sgd_step_of_twin(model, x, y, cell, lr)
    before = model.get_weights()
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="sparse_categorical_crossentropy")
    fit_tbptt(model, x, y, window=6, batch_size=3, verbose=0)
    moved = False
    for got, want, old in zip(model.get_weights(), expected, before, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        moved |= not np.allclose(got, old)
    assert moved  # the step changed the weights, so the equality says something


def test_fit_learns_and_evaluate_matches_predict():
    """Class = sign pattern of the last step's features: learnable from the window it ends in."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 12, size=24)
    x = [rng.normal(size=(n, DIM)).astype("float32") for n in lengths]
    y = np.array([int(s[-1, 0] > 0) + int(s[-1, 1] > 0) for s in x])
    model = classifier("gru", seed=1)
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = fit_tbptt(model, x, y, window=4, batch_size=3, epochs=12, order="shuffle",
                        verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.6 * losses[0]
    result = evaluate_tbptt(model, x, y, window=4, batch_size=3, return_dict=True)
    prob = predict_tbptt(model, x, window=5, batch_size=3)
    nll = -np.mean(np.log(prob[np.arange(len(y)), y]))
    np.testing.assert_allclose(result["loss"], nll, rtol=1e-4)
    np.testing.assert_allclose(result["accuracy"], np.mean(prob.argmax(1) == y), atol=1e-6)


def test_per_step_targets_or_outputs_are_refused_for_a_plain_classifier():
    model = classifier()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = sequences([4, 3, 5])
    per_step = [np.zeros(len(s), "int64") for s in x]
    with pytest.raises(ValueError, match="return_sequences=False"):
        fit_tbptt(model, x, per_step, window=2, batch_size=3, return_sequences=True, verbose=0)
    with pytest.raises(ValueError, match="`return_sequences=True` needs a model"):
        predict_tbptt(model, x, window=2, batch_size=3, return_sequences=True)
