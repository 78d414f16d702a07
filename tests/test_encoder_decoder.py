"""The reference encoder–decoder and batched greedy decoding (seqprep.models._seq2seq)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import seqprep as sp
from seqprep.models import compile_reference, greedy_decode, reference_seq2seq

START, END, VOCAB = 8, 9, 10


class _CopyScores(keras.layers.Layer):
    """Scores of a perfect "copy the source" decoder: step t emits source[t], then END."""

    def call(self, inputs):
        source, decoder = inputs["encoder"], inputs["decoder"]
        width = keras.ops.shape(decoder)[1]
        padded = keras.ops.pad(source, [[0, 0], [0, width]])[:, :width]
        tokens = keras.ops.where(padded == 0, END, padded)
        return keras.ops.one_hot(tokens, VOCAB)

    def compute_output_shape(self, shapes):
        return (*shapes["decoder"], VOCAB)


class _Counting:
    """A copy model that counts its calls (greedy_decode only calls it and reads `inputs`)."""

    def __init__(self):
        source = keras.Input((None,), dtype="int32", name="encoder")
        decoder = keras.Input((None,), dtype="int32", name="decoder")
        self.model = keras.Model({"encoder": source, "decoder": decoder},
                                 _CopyScores()({"encoder": source, "decoder": decoder}))
        self.inputs = self.model.inputs
        self.output_shape = (None, None, VOCAB)
        self.calls = 0

    def __call__(self, inputs, training=False):
        self.calls += 1
        return self.model(inputs, training=training)


SOURCES = [[1, 2, 3, 4, 5], [6], [2, 2], [7, 1, 3], [], [5, 4, 3, 2, 1, 6, 7]]


@pytest.mark.parametrize("batch_size", [1, 2, 4, 100])
def test_greedy_decode_returns_each_source_s_tokens_in_input_order(batch_size):
    copier = _Counting()
    out = greedy_decode(copier, SOURCES, start=START, end=END, batch_size=batch_size)
    assert [o.tolist() for o in out] == SOURCES
    assert all(o.dtype == np.int32 for o in out)


def test_greedy_decode_stops_the_batch_when_every_row_has_ended():
    copier = _Counting()
    # One batch: the longest source has 7 tokens, so the 8th step emits the last END.
    greedy_decode(copier, SOURCES, start=START, end=END, batch_size=len(SOURCES))
    assert copier.calls == 8
    copier.calls = 0
    # Sorted by length in batches of 2: longest-in-batch lengths 1, 3, 7 -> 2 + 4 + 8 calls.
    greedy_decode(copier, SOURCES, start=START, end=END, batch_size=2)
    assert copier.calls == 2 + 4 + 8


def test_greedy_decode_truncates_rows_without_end_at_max_length():
    out = greedy_decode(_Counting(), SOURCES, start=START, end=END, max_length=3)
    assert [o.tolist() for o in out] == [s[:3] for s in SOURCES]


def test_greedy_decode_does_not_modify_the_sources():
    sources = [np.array(s, dtype=np.int64) for s in SOURCES]
    greedy_decode(_Counting(), sources, start=START, end=END)
    assert [s.tolist() for s in sources] == SOURCES


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"start": START, "end": None}, TypeError, ["`end` must be the integer id", "end=None"]),
        ({"start": START, "end": VOCAB}, ValueError,
         ["`end` must be an id the model can emit", "0..9", "end=10"]),
        ({"start": START, "end": -1}, ValueError, ["`end` must be an id"]),
        ({"start": END, "end": END}, ValueError, ["must be different"]),
        ({"start": START, "end": END, "pad": END}, ValueError, ["`pad` must differ"]),
        ({"start": START, "end": END, "max_length": 0}, ValueError, ["`max_length`"]),
        ({"start": START, "end": END, "batch_size": 0}, ValueError, ["`batch_size`"]),
    ],
)
def test_greedy_decode_argument_errors(kwargs, error, words):
    with pytest.raises(error) as info:
        greedy_decode(_Counting(), SOURCES, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_greedy_decode_needs_an_encoder_decoder_model():
    plain = sp.models.reference_rnn(vocab_size=10, units=2)
    with pytest.raises(TypeError, match="'encoder', 'decoder'"):
        greedy_decode(plain, SOURCES, start=START, end=END)
    with pytest.raises(TypeError, match="integer token ids"):
        greedy_decode(_Counting(), [[1.5, 2.0]], start=START, end=END)
    with pytest.raises(ValueError, match="int32"):
        greedy_decode(_Counting(), [np.array([1, 2**40])], start=START, end=END)


def _tiny(**kwargs):
    settings = {"source_vocab_size": 12, "target_vocab_size": VOCAB, "units": 6,
                "embedding_dim": 5, "seed": 3} | kwargs
    return reference_seq2seq(**settings)


@pytest.mark.backend
@pytest.mark.parametrize(("cell", "bidirectional", "attention"),
                         [("gru", True, True), ("lstm", False, False)])
def test_reference_seq2seq_ignores_padding_on_both_sides(cell, bidirectional, attention):
    model = _tiny(cell=cell, bidirectional=bidirectional, attention=attention)
    source = np.array([[3, 4, 5, 0], [6, 0, 0, 0]], dtype=np.int32)
    decoder = np.array([[START, 1, 2], [START, 0, 0]], dtype=np.int32)
    wide = model({"encoder": np.pad(source, [(0, 0), (0, 5)]),
                  "decoder": np.pad(decoder, [(0, 0), (0, 4)])}, training=False)
    narrow = model({"encoder": source, "decoder": decoder}, training=False)
    wide, narrow = (keras.ops.convert_to_numpy(o) for o in (wide, narrow))
    assert wide.shape == (2, 7, VOCAB) and narrow.shape == (2, 3, VOCAB)
    np.testing.assert_allclose(wide[0, :3], narrow[0], atol=1e-5)
    np.testing.assert_allclose(wide[1, :1], narrow[1, :1], atol=1e-5)
    # The row alone (no batch-mate, no padding) gives the same scores.
    alone = keras.ops.convert_to_numpy(
        model({"encoder": source[1:, :1], "decoder": decoder[1:, :1]}, training=False))
    np.testing.assert_allclose(alone[0, 0], narrow[1, 0], atol=1e-5)


@pytest.mark.backend
def test_greedy_decode_batched_equals_one_by_one():
    model = _tiny(units=8)
    sources = [[3, 4, 5], [6], [7, 1], [2, 2, 2, 2], [5, 4], [1]]
    batched = greedy_decode(model, sources, start=START, end=END, max_length=6, batch_size=4)
    single = [greedy_decode(model, [s], start=START, end=END, max_length=6)[0] for s in sources]
    assert [a.tolist() for a in batched] == [b.tolist() for b in single]
    assert all(len(a) <= 6 and not {END, START, 0} & set(a.tolist()) for a in batched)
    assert len({tuple(a.tolist()) for a in batched}) > 1  # not one constant answer


def test_reference_seq2seq_learns_and_decodes_in_input_order():
    rng = np.random.default_rng(0)
    sources = [rng.integers(1, 6, size=rng.integers(1, 5)).tolist() for _ in range(192)]
    targets = [s[::-1] for s in sources]  # learn to reverse: needs the whole source
    dec_in, dec_out = sp.teacher_forcing(targets, start=START, end=END)
    model = compile_reference(_tiny(units=24, embedding_dim=8), learning_rate=0.02)
    x = {"encoder": sp.pad_sequences(sources, padding="post"),
         "decoder": sp.pad_sequences(dec_in, padding="post")}
    y = sp.pad_sequences(dec_out, padding="post")
    model.fit(x, y, sample_weight=(y > 0).astype("float32"), batch_size=32, epochs=12,
              verbose=0)
    batched = greedy_decode(model, sources[:40], start=START, end=END, batch_size=16)
    single = greedy_decode(model, sources[:12], start=START, end=END, batch_size=1)
    assert [a.tolist() for a in batched[:12]] == [b.tolist() for b in single]
    rates = sp.error_rates(targets[:40], batched)
    assert rates["token_error_rate"] < 0.2, rates


@pytest.mark.parametrize(
    ("kwargs", "error", "word"),
    [
        ({"cell": "rnn"}, ValueError, "`cell`"),
        ({"units": 0}, ValueError, "`units`"),
        ({"target_vocab_size": 3}, ValueError, "`target_vocab_size`"),
        ({"dropout": 1.0}, ValueError, "`dropout`"),
        ({"dropout": "0.1"}, TypeError, "`dropout`"),
        ({"attention": 1}, TypeError, "`attention`"),
    ],
)
def test_reference_seq2seq_argument_errors(kwargs, error, word):
    with pytest.raises(error, match=word):
        _tiny(**kwargs)


def test_reference_seq2seq_compiles_with_the_masked_mean_loss():
    model = compile_reference(_tiny())
    assert model.loss.reduction == "mean_with_sample_weight"
    names = {layer.name for layer in model.layers}
    assert {"encoder_embedding", "decoder_embedding", "decoder_rnn", "attention",
            "head"} <= names
