"""Tests for seqprep.models: masking is exact, sequence losses ignore padding, save/load works."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import seqprep as sp
from seqprep.models import compile_reference, feature_stats, reference_rnn

LENGTHS = [6, 3, 1, 4]


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(n, 4)).astype("float32") for n in LENGTHS]
    y = [rng.normal(size=(n, 2)).astype("float32") for n in LENGTHS]
    return x, y


def _alone(model, sequences):
    """Run each sequence through the model on its own, unpadded (batch of one)."""
    return [np.asarray(model(s[None], training=False))[0] for s in sequences]


@pytest.mark.parametrize(
    ("cell", "bidirectional"), [("lstm", False), ("gru", True), ("simple", False)]
)
def test_many_to_one_padded_batch_equals_each_sequence_alone(frames, cell, bidirectional):
    x, _ = frames
    model = reference_rnn(
        input_dim=4, num_classes=3, cell=cell, units=5, bidirectional=bidirectional, seed=1
    )
    batch = np.asarray(model(sp.pad_sequences(x, dtype="float32", padding="post")))
    for i, out in enumerate(_alone(model, x)):
        np.testing.assert_allclose(batch[i], out, atol=1e-5)


def test_without_mask_padding_changes_the_output(frames):
    """The control for the test above: padding does leak in when the mask is off."""
    x, _ = frames
    model = reference_rnn(input_dim=4, num_classes=3, cell="gru", units=5, mask=False, seed=1)
    batch = np.asarray(model(sp.pad_sequences(x, dtype="float32", padding="post")))
    alone = _alone(model, x)
    assert not np.allclose(batch[2], alone[2], atol=1e-4)  # length 1 of 6: 5 padded steps


def test_many_to_many_with_standardize_matches_unpadded(frames):
    x, _ = frames
    stats = feature_stats(x)
    model = reference_rnn(
        input_dim=4, cell="lstm", units=5, return_sequences=True, output_dim=2,
        standardize=stats, seed=2,
    )
    batch = np.asarray(model(sp.pad_sequences(x, dtype="float32", padding="post")))
    for i, out in enumerate(_alone(model, x)):
        np.testing.assert_allclose(batch[i, : len(out)], out, atol=1e-5)


def test_token_input_padded_batch_equals_each_sequence_alone():
    rng = np.random.default_rng(3)
    tokens = [rng.integers(1, 20, size=n) for n in LENGTHS]
    model = reference_rnn(vocab_size=20, num_classes=2, cell="gru", units=4, seed=0)
    batch = np.asarray(model(sp.pad_sequences(tokens, padding="post")))
    for i, out in enumerate(_alone(model, tokens)):
        np.testing.assert_allclose(batch[i], out, atol=1e-5)


def _real_step_mse(model, x_padded, y):
    pred = np.asarray(model(x_padded))
    return np.mean(np.concatenate([((pred[i, : len(t)] - t) ** 2).mean(-1) for i, t in
                                   enumerate(y)]))


@pytest.mark.parametrize("mask", [True, False])
def test_sequence_loss_is_mean_over_real_steps(frames, mask):
    """Propagated mask, 0/1 weights, or both: the loss is the mean over real steps only.

    ``mask=False`` stands in for a Keras in which RNN layers no longer propagate the mask
    (keras-team/keras#23235): the 0/1 weights alone must then give the same mean.
    """
    x, y = frames
    xp = sp.pad_sequences(x, dtype="float32", padding="post")
    yp = sp.pad_sequences(y, dtype="float32", padding="post", value=100.0)  # loud padding
    model = compile_reference(reference_rnn(
        input_dim=4, cell="gru", units=5, return_sequences=True, output_dim=2, mask=mask,
        seed=4,
    ))
    expected = _real_step_mse(model, xp, y)
    weights = sp.sequence_weights(LENGTHS)
    weighted = model.evaluate(xp, yp, sample_weight=weights, batch_size=8, verbose=0)[0]
    assert weighted == pytest.approx(expected, rel=1e-5)
    if mask:
        unweighted = model.evaluate(xp, yp, batch_size=8, verbose=0)[0]
        assert unweighted == pytest.approx(expected, rel=1e-5)


def test_normalized_weights_with_default_reduction_without_mask(frames):
    x, y = frames
    xp = sp.pad_sequences(x, dtype="float32", padding="post")
    yp = sp.pad_sequences(y, dtype="float32", padding="post", value=-50.0)
    model = reference_rnn(
        input_dim=4, cell="lstm", units=5, return_sequences=True, output_dim=2, mask=False,
        seed=5,
    )
    model.compile("adam", "mse")
    weights = sp.sequence_weights(LENGTHS, normalize=True)
    loss = model.evaluate(xp, yp, sample_weight=weights, batch_size=8, verbose=0)
    assert loss == pytest.approx(_real_step_mse(model, xp, y), rel=1e-5)


def test_padded_targets_do_not_change_the_gradient(frames):
    """Training on two target arrays that differ only on padding moves weights identically."""
    x, y = frames
    xp = sp.pad_sequences(x, dtype="float32", padding="post")
    finals = []
    for pad in (0.0, 1e3):
        keras.utils.set_random_seed(0)
        model = compile_reference(reference_rnn(
            input_dim=4, cell="gru", units=3, return_sequences=True, output_dim=2, seed=6,
        ))
        yp = sp.pad_sequences(y, dtype="float32", padding="post", value=pad)
        model.fit(xp, yp, epochs=1, batch_size=2, verbose=0, shuffle=False)
        finals.append(model.get_weights())
    for a, b in zip(*finals, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_save_and_load_round_trip(frames, tmp_path):
    x, _ = frames
    model = compile_reference(reference_rnn(
        input_dim=4, num_classes=3, cell="lstm", units=4, bidirectional=True,
        standardize=feature_stats(x), dropout=0.1, seed=7,
    ))
    xp = sp.pad_sequences(x, dtype="float32", padding="post")
    model.optimizer.build(model.trainable_variables)  # saved with the model, like after fit
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(xp, verbose=0), model.predict(xp, verbose=0),
                               atol=1e-6)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    for name in ("mask", "standardize", "head"):
        assert loaded.get_layer(name).get_config() == model.get_layer(name).get_config()
    assert loaded.loss.reduction == "mean_with_sample_weight"


def test_stateful_model_has_fixed_batch_shape():
    model = reference_rnn(
        input_dim=3, cell="lstm", units=4, stateful=True, batch_size=2, return_sequences=True
    )
    assert model.input_shape == (2, None, 3)
    assert model.get_layer("lstm_0").stateful


def test_many_to_one_regression_head_and_stacking():
    model = reference_rnn(input_dim=2, units=3, num_layers=2, cell="simple")
    assert model.output_shape == (None, 1)
    assert model.get_layer("simple_0").return_sequences
    assert not model.get_layer("simple_1").return_sequences


def test_default_configuration_is_cudnn_eligible():
    model = reference_rnn(input_dim=2, cell="lstm")
    cell = model.get_layer("lstm_0")
    assert cell.recurrent_dropout == 0 and not cell.unroll and cell.use_bias
    assert cell.use_cudnn == "auto"
    assert keras.activations.serialize(cell.cell.activation) == "tanh"
    gru = reference_rnn(input_dim=2, cell="gru").get_layer("gru_0")
    assert gru.cell.reset_after


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, "exactly one of `input_dim`"),
        ({"input_dim": 3, "vocab_size": 10}, ValueError, "exactly one of `input_dim`"),
        ({"input_dim": 3, "cell": "rnn"}, ValueError, "`cell`"),
        ({"input_dim": 3, "stateful": True}, ValueError, "batch_size"),
        ({"input_dim": 3, "stateful": True, "batch_size": 2, "bidirectional": True},
         ValueError, "bidirectional"),
        ({"input_dim": 0}, ValueError, "`input_dim` must be at least 1"),
        ({"input_dim": 3, "units": 2.5}, TypeError, "`units` must be an integer"),
        ({"input_dim": 3, "num_classes": 1}, ValueError, "num_classes=None"),
        ({"input_dim": 3, "dropout": 1.0}, ValueError, "`dropout`"),
        ({"vocab_size": 1}, ValueError, "at least 2"),
        ({"vocab_size": 10, "standardize": ([0.0], [1.0])}, ValueError, "real-valued"),
        ({"input_dim": 2, "standardize": ([0.0], [1.0])}, ValueError, "shape \\(2,\\)"),
        ({"input_dim": 1, "standardize": ([0.0], [0.0])}, ValueError, "non-positive std"),
        ({"input_dim": 1, "standardize": 3.0}, TypeError, "pair"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        reference_rnn(**kwargs)


def test_compile_reference_needs_a_head():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    with pytest.raises(ValueError, match="no layer named 'head'"):
        compile_reference(model)


def test_feature_stats_ignores_padding_and_rejects_1d():
    mean, std = feature_stats([np.ones((3, 2)), 3 * np.ones((1, 2))])
    np.testing.assert_allclose(mean, [1.5, 1.5])
    np.testing.assert_allclose(std, np.sqrt(0.75))
    with pytest.raises(ValueError, match="2-D"):
        feature_stats([np.ones(3)])
