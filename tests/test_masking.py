"""length_mask, sequence_weights, check_cudnn_mask, and the masked-training recipe in Keras 3."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import seqprep as sp


# --------------------------------------------------------------------------- masks
@pytest.mark.parametrize(
    "lengths, maxlen, padding, expected",
    [
        ([2, 0, 3], None, "post", [[1, 1, 0], [0, 0, 0], [1, 1, 1]]),
        ([2, 0, 3], None, "pre", [[0, 1, 1], [0, 0, 0], [1, 1, 1]]),
        ([2, 5], 3, "post", [[1, 1, 0], [1, 1, 1]]),  # 5 > maxlen: truncated, all real
        ([2, 5], 3, "pre", [[0, 1, 1], [1, 1, 1]]),
        ([1], 0, "post", [[]]),
        ([], None, "post", []),
    ],
)
def test_length_mask_table(lengths, maxlen, padding, expected):
    got = sp.length_mask(lengths, maxlen, padding=padding)
    assert got.dtype == bool
    assert got.astype(int).tolist() == expected


@given(
    lengths=st.lists(st.integers(0, 9), min_size=0, max_size=10),
    maxlen=st.one_of(st.none(), st.integers(0, 12)),
    padding=st.sampled_from(["pre", "post"]),
)
def test_mask_counts_and_weights_agree(lengths, maxlen, padding):
    mask = sp.length_mask(lengths, maxlen, padding=padding)
    width = maxlen if maxlen is not None else max(lengths, default=0)
    assert mask.shape == (len(lengths), width)
    np.testing.assert_array_equal(mask.sum(axis=1), np.minimum(lengths, width))
    weights = sp.sequence_weights(lengths, maxlen, padding=padding)
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(weights, mask.astype(np.float32))
    if padding == "post" and len(lengths) and mask.any():
        sp.check_cudnn_mask(mask[mask.any(axis=1)])


def test_normalized_weights_have_mean_one():
    w = sp.sequence_weights([3, 1, 2], normalize=True)
    assert w.mean() == pytest.approx(1.0)
    assert (w[sp.length_mask([3, 1, 2]) == 0] == 0).all()
    assert sp.sequence_weights([0, 0], maxlen=2, normalize=True).sum() == 0


def test_lengths_are_not_mutated():
    lengths = np.array([3, 1, 2])
    sp.length_mask(lengths)
    sp.sequence_weights(lengths, normalize=True)
    assert lengths.tolist() == [3, 1, 2]


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: sp.length_mask([1, -2]), "non-negative"),
        (lambda: sp.length_mask([1.5]), "integers"),
        (lambda: sp.length_mask([[1, 2]]), "1-D"),
        (lambda: sp.length_mask([1], padding="mid"), "padding='mid'"),
        (lambda: sp.length_mask([1], maxlen=-1), "`maxlen` must be at least 0"),
    ],
)
def test_mask_bad_input(call, needle):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert needle in str(info.value)


# --------------------------------------------------------------------------- cuDNN rule
@given(st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=1, max_size=6))
def test_cudnn_rule_accepts_exactly_the_right_padded_masks(rows):
    mask = np.array(rows, dtype=bool)
    ok = all(r.any() and not (~r[:-1] & r[1:]).any() for r in mask)  # 1..1 0..0, some 1
    before = mask.copy()
    for candidate in (mask, mask.astype(np.int8)):  # 0/1 ints follow the same rule
        if ok:
            assert sp.check_cudnn_mask(candidate) is None
        else:
            with pytest.raises(ValueError, match="cuDNN RNN rule"):
                sp.check_cudnn_mask(candidate)
    np.testing.assert_array_equal(mask, before)


def test_cudnn_rule_names_left_padded_rows():
    mask = sp.length_mask([3, 1, 2], padding="pre")
    with pytest.raises(ValueError, match=r"rows \[1, 2\] are not right-padded") as info:
        sp.check_cudnn_mask(mask)
    assert "use padding='post'" in str(info.value)


def test_cudnn_rule_names_empty_rows():
    mask = sp.length_mask([3, 0, 2, 0], padding="post")
    with pytest.raises(ValueError, match=r"rows \[1, 3\] are all padding") as info:
        sp.check_cudnn_mask(mask)
    assert "Drop empty sequences" in str(info.value)


def test_cudnn_rule_reports_holes_and_both_problems():
    mask = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0]], dtype=bool)
    with pytest.raises(ValueError) as info:
        sp.check_cudnn_mask(mask)
    text = str(info.value)
    assert "rows [0] are not right-padded" in text and "rows [1] are all padding" in text


def test_cudnn_rule_long_lists_are_cut():
    mask = sp.length_mask([0] * 30, maxlen=2)
    with pytest.raises(ValueError, match=r"\(30 rows in all\)"):
        sp.check_cudnn_mask(mask)


def test_cudnn_rule_bad_input():
    with pytest.raises(ValueError, match="shape"):
        sp.check_cudnn_mask(np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        sp.check_cudnn_mask(np.array([[0.5, 1.0]]))


def test_cudnn_rule_accepts_a_keras_mask_tensor():
    import keras

    emb = keras.layers.Embedding(10, 2, mask_zero=True)
    mask = emb.compute_mask(np.array([[1, 2, 0], [3, 0, 0]]))
    sp.check_cudnn_mask(mask)
    with pytest.raises(ValueError):
        sp.check_cudnn_mask(emb.compute_mask(np.array([[0, 2, 1]])))


# --------------------------------------------------------------------------- Keras recipe
VOCAB, CLASSES = 12, 3


def _token_model(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, 4, mask_zero=True)(inp)
    h = keras.layers.LSTM(5, return_sequences=True)(h)
    out = keras.layers.Dense(CLASSES)(h)
    return keras.Model(inp, out)


def _data():
    rng = np.random.default_rng(0)
    lengths = [5, 2, 1, 4]
    x = [rng.integers(1, VOCAB, n) for n in lengths]
    y = [rng.integers(0, CLASSES, n) for n in lengths]
    return x, y, np.array(lengths)


@pytest.mark.parametrize("padding", ["pre", "post"])
def test_masked_outputs_equal_unpadded_outputs(padding):
    model = _token_model()
    x, _, lengths = _data()
    padded = sp.pad_sequences(x, padding=padding)
    batch_out = np.asarray(model(padded))
    rows = sp.unpad(batch_out, lengths, padding=padding)
    for seq, row in zip(x, rows, strict=True):
        alone = np.asarray(model(np.asarray(seq)[None]))[0]
        np.testing.assert_allclose(row, alone, rtol=1e-5, atol=1e-6)


def _hand_mean_over_real_steps(logits, y_padded, mask):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, y_padded[..., None], axis=-1)[..., 0]
    return nll[mask].mean()


def test_recipe_loss_is_mean_over_real_steps():
    """0/1 per-timestep weights + reduction="mean_with_sample_weight" == mean over real steps.

    That holds whether or not a Keras mask reaches the loss, so it survives Keras versions
    in which RNN layers stop propagating masks (keras#23235).
    """
    import keras

    model = _token_model()
    x, y, lengths = _data()
    xp = sp.pad_sequences(x, padding="post")
    yp = sp.pad_sequences(y, padding="post")
    weights = sp.sequence_weights(lengths)
    expected = _hand_mean_over_real_steps(np.asarray(model(xp)), yp, sp.length_mask(lengths))

    loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight"
    )
    # Directly, without any mask: the weights alone do it.
    assert float(loss(yp, model(xp), sample_weight=weights)) == pytest.approx(expected, rel=1e-5)
    # Through compile/evaluate, where Keras may also apply the propagated mask.
    model.compile(optimizer="sgd", loss=loss)
    got = model.evaluate(xp, yp, sample_weight=weights, batch_size=len(x), verbose=0)
    assert got == pytest.approx(expected, rel=1e-5)


def test_default_reduction_pitfall_and_normalized_weights():
    """The default reduction divides by n*T: 0/1 weights alone undercount; normalize fixes it."""
    import keras

    model = _token_model()
    x, y, lengths = _data()
    xp = sp.pad_sequences(x, padding="post")
    yp = sp.pad_sequences(y, padding="post")
    logits = np.asarray(model(xp))
    expected = _hand_mean_over_real_steps(logits, yp, sp.length_mask(lengths))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    plain = float(loss(yp, logits, sample_weight=sp.sequence_weights(lengths)))
    real_fraction = lengths.sum() / xp.size
    assert plain == pytest.approx(expected * real_fraction, rel=1e-5)
    normalized = sp.sequence_weights(lengths, normalize=True)
    assert float(loss(yp, logits, sample_weight=normalized)) == pytest.approx(expected, rel=1e-5)


def test_masking_layer_for_real_valued_frames():
    import keras

    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = [rng.normal(size=(n, 3)).astype("float32") + 5.0 for n in (4, 1, 3)]
    inp = keras.Input((None, 3))
    h = keras.layers.Masking(mask_value=0.0)(inp)
    out = keras.layers.GRU(4)(h)
    model = keras.Model(inp, out)
    padded = sp.pad_sequences(x, dtype="float32", padding="post")
    batch = np.asarray(model(padded))
    for i, seq in enumerate(x):
        np.testing.assert_allclose(batch[i], np.asarray(model(seq[None]))[0], rtol=1e-5,
                                   atol=1e-6)
