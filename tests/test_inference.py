"""sp.predict and sp.evaluate: inference in the order of ``x``, checked against Keras itself.

The reference is always Keras on the padded-to-max arrays: ``model.predict(padded)`` for
outputs, ``model.evaluate(padded, y, batch_size=len(x))`` (one batch, the batch-independent
value) for the loss and metrics. The planner is checked on its own with Hypothesis.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seqprep as sp
from seqprep.layers import PackedRNN
from seqprep.planning._inference import plan_inference
from seqprep.planning._shapes import length_grid

DIM = 3
ATOL = 1e-5


# --------------------------------------------------------------------------- builders


def _frames(lengths, seed=0, dim=DIM):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(n), dim)).astype("float32") + 2.0 for n in lengths]


def _tokens(lengths, seed=0, vocab=9):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, vocab, int(n)).astype("int32") for n in lengths]


def _padded(x, value=0, padding="post"):
    dtype = "float32" if np.asarray(x[0]).dtype.kind == "f" else "int32"
    return sp.pad_sequences(x, padding=padding, dtype=dtype, value=value)


def _frames_model(*, per_step=False, seed=1):
    """Masking + GRU on float frames: one output per sequence (3 classes) and, with
    ``per_step``, one per step too (two outputs)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, DIM))
    h = keras.layers.Masking(0.0)(inputs)
    h = keras.layers.GRU(4, return_sequences=per_step)(h)
    if per_step:
        return keras.Model(inputs, keras.layers.Dense(2)(h))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))


def _tokens_model(*, per_step=True, seed=2, vocab=9, classes=5):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(vocab, 4, mask_zero=True)(inputs)
    h = keras.layers.LSTM(4, return_sequences=per_step)(h)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(h))


@pytest.fixture(scope="module")
def frames_models():
    return _frames_model(), _frames_model(per_step=True)


long_tailed = st.lists(
    st.one_of(st.integers(1, 12), st.integers(13, 90)), min_size=1, max_size=20,
)


# --------------------------------------------------------------------------- the planner


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 120), min_size=1, max_size=80),
    fields=st.integers(1, 2),
    max_tokens=st.integers(1, 400),
    batch_size=st.one_of(st.none(), st.integers(1, 20)),
    grid=st.booleans(),
    data=st.data(),
)
def test_plan_covers_sorted_within_budget(lengths, fields, max_tokens, batch_size, grid, data):
    n = len(lengths)
    cols = [np.asarray(lengths)]
    if fields == 2:
        cols.append(np.asarray(data.draw(st.lists(st.integers(0, 50), min_size=n, max_size=n),
                                         label="second field")))
    lens = np.stack(cols, axis=1)
    on_grid = data.draw(st.lists(st.booleans(), min_size=fields, max_size=fields),
                        label="fields on a grid") if grid else [False] * fields
    grids = [length_grid(lens[:, f], 4) if on_grid[f] else None for f in range(fields)]
    grids = grids if any(on_grid) else None
    plan = plan_inference(lens, max_tokens=max_tokens, batch_size=batch_size, grids=grids)
    assert sorted(plan.rows.tolist()) == list(range(n))  # every sequence exactly once
    keys = [tuple(row) for row in lens[plan.rows]]
    assert keys == sorted(keys)  # sorted by the first field, then the next
    for b in range(len(plan)):
        idx = plan.batch(b)
        assert idx.size >= 1
        assert batch_size is None or idx.size <= batch_size
        assert np.all(plan.widths[b] >= np.maximum(lens[idx].max(axis=0), 1))
        if idx.size > 1:  # a lone over-budget sequence still runs, alone
            assert idx.size * plan.widths[b].sum() <= max_tokens
        for f in range(fields):
            if grids is not None and grids[f] is not None:
                assert plan.widths[b, f] in grids[f]
            else:  # a field off the grid pads to the batch's longest
                assert plan.widths[b, f] == max(int(lens[idx, f].max()), 1)


def test_plan_puts_short_sequences_in_large_batches():
    lengths = np.array([2] * 50 + [40] * 5)
    plan = plan_inference(lengths, max_tokens=80)
    sizes = np.diff(plan.splits)
    assert sizes.tolist() == [40, 10, 2, 2, 1]
    assert plan.widths[:, 0].tolist() == [2, 2, 40, 40, 40]


def test_planner_needs_neither_tensorflow_nor_keras():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('tensorflow', 'keras', 'jax', 'torch'):\n"
        "    sys.modules[name] = None  # any import of them now fails\n"
        "import numpy as np\n"
        "from seqprep.planning._inference import plan_inference\n"
        "from seqprep.planning._shapes import length_grid\n"
        "lengths = np.array([3, 1, 40, 7])\n"
        "plan = plan_inference(lengths, max_tokens=16, grids=[length_grid(lengths, 2)])\n"
        "print(sorted(plan.rows.tolist()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 1, 2, 3]"


@pytest.mark.parametrize(
    ("lengths", "k", "expected"),
    [([1, 1, 2, 9, 10, 10, 30], 2, [10, 30]), ([5], 3, [5]), ([0, 0], 2, [1]),
     ([1, 2, 3, 4], 4, [1, 2, 3, 4]), ([1, 2, 3, 100], 2, [3, 100])],
)
def test_length_grid_table(lengths, k, expected):
    assert length_grid(lengths, k).tolist() == expected


# --------------------------------------------------------------------------- predict


@pytest.mark.backend
@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=long_tailed, max_tokens=st.integers(8, 300), seed=st.integers(0, 99))
def test_predict_equals_keras_on_padded_to_max(frames_models, lengths, max_tokens, seed):
    per_sequence, per_step = frames_models
    x = _frames(lengths, seed)
    padded = _padded(x)
    got = sp.predict(per_sequence, x, max_tokens=max_tokens, verbose=0)
    want = per_sequence.predict(padded, batch_size=len(x), verbose=0)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=ATOL)

    steps = sp.predict(per_step, x, max_tokens=max_tokens, verbose=0)
    want = per_step.predict(padded, batch_size=len(x), verbose=0)
    assert isinstance(steps, list) and len(steps) == len(x)
    for i, n in enumerate(lengths):
        assert steps[i].shape == (n, 2)
        np.testing.assert_allclose(steps[i], want[i, :n], atol=ATOL)


@pytest.mark.backend
@pytest.mark.parametrize("padding", ["post", "pre"])
def test_predict_tokens_per_step_and_batch_cap(padding):
    model = _tokens_model()
    lengths = [3, 17, 1, 1, 6, 40, 2, 9]
    x = _tokens(lengths)
    got = sp.predict(model, x, padding=padding, max_tokens=40, batch_size=4, verbose=0)
    want = model.predict(_padded(x, padding=padding), verbose=0)
    for i, n in enumerate(lengths):
        ref = want[i, :n] if padding == "post" else want[i, want.shape[1] - n :]
        np.testing.assert_allclose(got[i], ref, atol=ATOL)


def test_predict_ragged_and_inputs_untouched():
    tf = pytest.importorskip("tensorflow")
    model = _tokens_model()
    x = _tokens([4, 1, 7])
    before = [a.copy() for a in x]
    rag = sp.predict(model, x, ragged=True, verbose=0)
    assert isinstance(rag, tf.RaggedTensor)
    assert rag.row_lengths().numpy().tolist() == [4, 1, 7]
    listed = sp.predict(model, x, verbose=0)
    for a, b in zip(rag.numpy() if hasattr(rag, "numpy") else rag, listed, strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    for a, b in zip(x, before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_predict_fixed_width_and_outputs_override(frames_models):
    per_sequence, _ = frames_models
    x = _frames([3, 5, 2])
    # One width for every batch: (3,)-class outputs next to width 3 must not read as steps.
    got = sp.predict(per_sequence, x, pad_to=5, verbose=0)
    np.testing.assert_allclose(got, per_sequence.predict(_padded(x), verbose=0), atol=ATOL)
    same = sp.predict(per_sequence, [s[:3] for s in x], verbose=0)
    assert isinstance(same, np.ndarray) and same.shape == (3, 3)
    forced = sp.predict(per_sequence, x, outputs="sequence", verbose=0)
    np.testing.assert_allclose(forced, got, atol=ATOL)


def test_predict_progress_and_callbacks(frames_models):
    per_sequence, _ = frames_models
    x = _frames([2, 9, 30, 4, 4])

    class Count(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches, self.ended = 0, False

        def on_predict_batch_end(self, batch, logs=None):
            self.batches += 1
            assert logs["outputs"] is not None

        def on_predict_end(self, logs=None):
            self.ended = True

    count = Count()
    out = io.StringIO()
    with redirect_stdout(out):
        sp.predict(per_sequence, x, max_tokens=40, verbose=1, callbacks=[count])
    plan = plan_inference(np.array([2, 9, 30, 4, 4]), max_tokens=40)
    assert count.batches == len(plan) > 1 and count.ended
    assert f"{len(plan)}/{len(plan)}" in out.getvalue()
    quiet = io.StringIO()
    with redirect_stdout(quiet):
        sp.predict(per_sequence, x, verbose=0)
    assert quiet.getvalue() == ""


# --------------------------------------------------------------------------- dict inputs


def _seq2seq(vocab=9, classes=6, seed=4):
    """A teacher-forced encoder-decoder: the decoder GRU starts from the encoder's state."""
    keras.utils.set_random_seed(seed)
    enc_in = keras.Input((None,), dtype="int32", name="encoder")
    dec_in = keras.Input((None,), dtype="int32", name="decoder")
    state = keras.layers.GRU(5)(keras.layers.Embedding(vocab, 4, mask_zero=True)(enc_in))
    h = keras.layers.GRU(5, return_sequences=True)(
        keras.layers.Embedding(vocab, 4, mask_zero=True)(dec_in), initial_state=state
    )
    model = keras.Model({"encoder": enc_in, "decoder": dec_in},
                        keras.layers.Dense(classes, activation="softmax")(h))
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.backend
def test_dict_inputs_predict_and_teacher_forced_evaluate():
    model = _seq2seq()
    src_len, dec_len = [5, 2, 9, 3, 7, 1], [3, 6, 2, 4, 8, 2]
    src, dec = _tokens(src_len, 1), _tokens(dec_len, 2)
    y = [t % 6 for t in _tokens(dec_len, 3)]
    x = {"encoder": src, "decoder": dec}
    padded = {"encoder": _padded(src), "decoder": _padded(dec)}
    got = sp.predict(model, x, max_tokens=30, verbose=0)
    want = model.predict(padded, verbose=0)
    assert len(got) == len(dec_len)
    for i, n in enumerate(dec_len):  # per-step outputs follow the decoder field
        np.testing.assert_allclose(got[i], want[i, :n], atol=ATOL)
    logs = sp.evaluate(model, x, y, max_tokens=30, verbose=0)
    ref = model.evaluate(padded, _padded(y), batch_size=len(dec_len), verbose=0, return_dict=True)
    assert set(logs) == set(ref)
    for k in ref:
        assert abs(logs[k] - ref[k]) < ATOL, (k, logs[k], ref[k])


# --------------------------------------------------------------------------- evaluate


@pytest.mark.backend
@settings(max_examples=2, deadline=None)
@given(lengths=long_tailed, max_tokens=st.integers(8, 200), weighted=st.booleans(),
       seed=st.integers(0, 99))
def test_evaluate_per_sequence_equals_one_batch_keras(lengths, max_tokens, weighted, seed):
    model = _frames_model(seed=5)
    model.compile(loss="sparse_categorical_crossentropy",
                  metrics=["sparse_categorical_accuracy"],
                  weighted_metrics=["sparse_categorical_accuracy"])
    rng = np.random.default_rng(seed)
    x = _frames(lengths, seed)
    y = rng.integers(0, 3, len(x))
    w = rng.uniform(0.0, 2.0, len(x)).astype("float32") if weighted else None
    logs = sp.evaluate(model, x, y, sample_weight=w, max_tokens=max_tokens, verbose=0)
    ref = model.evaluate(_padded(x), y, sample_weight=w, batch_size=len(x), verbose=0,
                         return_dict=True)
    assert set(logs) == set(ref)
    for k in ref:
        assert abs(logs[k] - ref[k]) < ATOL, (k, logs[k], ref[k])


@pytest.mark.backend
@pytest.mark.parametrize("weighted", [False, True])
def test_evaluate_per_step_masked_equals_one_batch_keras(weighted):
    lengths = [1, 4, 30, 2, 2, 11, 7, 3, 60, 5]
    x = _frames(lengths, 7)
    x[5][4] = 0.0  # a masked step inside a sequence: no target, as in Keras
    rng = np.random.default_rng(8)
    y = [rng.normal(size=(n, 2)).astype("float32") for n in lengths]
    w = rng.uniform(0.5, 2.0, len(x)).astype("float32") if weighted else None
    model = _frames_model(per_step=True, seed=9)
    model.compile(loss="mse", metrics=["mae"], weighted_metrics=["mae"])
    logs = sp.evaluate(model, x, y, sample_weight=w, max_tokens=40, verbose=0)
    # Keras takes per-step weights for per-step targets: each sequence's weight on its steps.
    w_steps = None if w is None else np.repeat(w[:, None], max(lengths), axis=1)
    ref = model.evaluate(_padded(x), _padded(y), sample_weight=w_steps, batch_size=len(x),
                         verbose=0, return_dict=True)
    assert set(logs) == set(ref)
    for k in ref:
        assert abs(logs[k] - ref[k]) < ATOL, (k, logs[k], ref[k])
    # Keras's own evaluate with small batches weighs batches by rows: batch-dependent.
    small = model.evaluate(_padded(x), _padded(y), sample_weight=w_steps, batch_size=3,
                           verbose=0, return_dict=True)
    assert abs(small["loss"] - ref["loss"]) > 1e-4


@pytest.mark.backend
def test_evaluate_per_step_accuracy_tokens():
    lengths = [6, 1, 12, 3, 3, 25]
    x = _tokens(lengths, 3)
    y = [t % 5 for t in _tokens(lengths, 4)]
    model = _tokens_model(seed=6)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    logs = sp.evaluate(model, x, y, max_tokens=20, verbose=0)
    ref = model.evaluate(_padded(x), _padded(y), batch_size=len(x), verbose=0, return_dict=True)
    for k in ref:
        assert abs(logs[k] - ref[k]) < ATOL, (k, logs[k], ref[k])


# --------------------------------------------------------------------------- other models


@pytest.mark.backend
@pytest.mark.parametrize(("return_sequences", "row_length"), [(False, None), (True, None),
                                                               (False, 12)])
def test_packed_model_served_unpacked(return_sequences, row_length):
    keras.utils.set_random_seed(11)
    gru = keras.layers.GRU(3, return_sequences=return_sequences)
    slots = None if row_length is None else 4  # a model built for packed rows of 12 steps
    inputs = {"values": keras.Input((row_length, DIM), name="values"),
              "segment_ids": keras.Input((row_length,), dtype="int32", name="segment_ids"),
              "segment_lengths": keras.Input((slots,), dtype="int32", name="segment_lengths")}
    packed = keras.Model(inputs, keras.layers.Dense(2)(PackedRNN(gru)(inputs)))
    dense = packed.layers[-1]
    plain_in = keras.Input((None, DIM))
    plain = keras.Model(plain_in, dense(gru(keras.layers.Masking(0.0)(plain_in))))
    lengths = [4, 1, 9, 2, 6]
    x = _frames(lengths, 12)
    got = sp.predict(packed, x, max_tokens=18, verbose=0)
    want = plain.predict(_padded(x), verbose=0)
    if return_sequences:
        for i, n in enumerate(lengths):
            np.testing.assert_allclose(got[i], want[i, :n], atol=ATOL)
    else:
        assert got.shape == (len(lengths), 2)
        np.testing.assert_allclose(got, want, atol=ATOL)


@pytest.mark.backend
@pytest.mark.parametrize("return_sequences", [False, True])
def test_stateful_model_goes_through_predict_tbptt(return_sequences):
    keras.utils.set_random_seed(13)
    inputs = keras.Input(batch_shape=(2, None, DIM))
    h = keras.layers.LSTM(3, stateful=True, return_sequences=return_sequences)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    lengths = [7, 2, 4, 11, 3]
    x = _frames(lengths, 14)
    got = sp.predict(model, x, window=3, verbose=0)
    want = sp.predict_tbptt(model, x, window=3, batch_size=2,
                            return_sequences=return_sequences)
    if return_sequences:
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, atol=ATOL)
    else:
        np.testing.assert_allclose(got, want, atol=ATOL)
    # and the non-stateful twin with the same weights, on the whole sequences
    twin_in = keras.Input((None, DIM))
    t = keras.layers.LSTM(3, return_sequences=return_sequences)(keras.layers.Masking(0.0)(twin_in))
    twin = keras.Model(twin_in, keras.layers.Dense(2)(t))
    twin.set_weights(model.get_weights())
    alone = sp.predict(twin, x, verbose=0)
    if return_sequences:
        for a, b in zip(got, alone, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-4)
    else:
        np.testing.assert_allclose(got, alone, atol=1e-4)


def test_length_ensemble_predicts_in_input_order():
    def build(length):
        model = keras.Sequential([keras.Input((length, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        return model

    x = [np.full((n, 1), n, "float32") for n in (2, 3, 2, 3, 3)]
    ens = sp.fit_separate_models(build, x, np.arange(5.0), epochs=1, verbose=0)
    np.testing.assert_allclose(sp.predict(ens, x, verbose=0), ens.predict(x), atol=ATOL)
    logs = sp.evaluate(ens, x, np.arange(5.0), verbose=0)
    assert logs == ens.evaluate(x, np.arange(5.0))


# --------------------------------------------------------------------------- bad input


def test_bad_input_messages(frames_models):
    per_sequence, _ = frames_models
    x = _frames([3, 4])
    seq2seq = _seq2seq()
    with pytest.raises(ValueError, match=r"`x` does not match the inputs of `model`.*'decoder'"
                       r".*Received.*one sequence collection.*\n- Pass `x` as a dict"):
        sp.predict(seq2seq, _tokens([3, 4]), verbose=0)
    with pytest.raises(ValueError, match=r"named \['decoder', 'encoder'\]\. Received: "
                       r"\['encoder', 'source'\]"):
        sp.predict(seq2seq, {"encoder": _tokens([3]), "source": _tokens([2])}, verbose=0)
    with pytest.raises(ValueError, match=r"`x` holds fields with different numbers of "
                       r"sequences: \{'encoder': 2, 'decoder': 1\}\n- Every field"):
        sp.predict(seq2seq, {"encoder": _tokens([3, 1]), "decoder": _tokens([2])}, verbose=0)
    with pytest.raises(ValueError, match=r"`x` must hold at least one sequence. Received 0"):
        sp.predict(per_sequence, [], verbose=0)
    with pytest.raises(ValueError, match=r"`max_tokens` must be at least 1. Received: "
                       r"max_tokens=0"):
        sp.predict(per_sequence, x, max_tokens=0)
    with pytest.raises(ValueError, match=r"`padding` must be 'pre' or 'post'"):
        sp.predict(per_sequence, x, padding="mid")
    with pytest.raises(TypeError, match=r"`model` must be a Keras model.*Received: model of "
                       r"type str"):
        sp.predict("model", x)
    with pytest.raises(ValueError, match=r"`x` holds a sequence longer than the width.*x\[1\] "
                       r"has 4 steps, the width is 3.*\n- Truncate"):
        sp.predict(per_sequence, x, pad_to=3, verbose=0)
    with pytest.raises(ValueError, match=r"(?s)`x` holds 6 NaN.*x\[0\] at step 0"
                       r".*allow_nonfinite=True"):
        sp.predict(per_sequence, [np.full((2, DIM), np.nan, "float32")], verbose=0)
    with pytest.raises(ValueError, match=r"`outputs`='step'.*no time axis.*Received output "
                       r"shapes.*\n- Pass outputs='sequence'"):
        sp.predict(per_sequence, _frames([3, 5, 8]), outputs="step", max_tokens=8, verbose=0)
    model = _frames_model(seed=3)
    with pytest.raises(ValueError, match=r"`model` must be compiled.*\n- Call `model.compile"):
        sp.evaluate(model, x, np.array([0, 1]), verbose=0)
    model.compile(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"`x` and `y` must have the same number of sequences"
                       r".*len\(x\)=2, len\(y\)=3\n- Pass one target"):
        sp.evaluate(model, x, np.array([0, 1, 2]), verbose=0)
    with pytest.raises(ValueError, match=r"`sample_weight` must hold one number per sequence, "
                       r"shape \(2,\). Received shape \(3,\)"):
        sp.evaluate(model, x, np.array([0, 1]), sample_weight=np.ones(3), verbose=0)
    with pytest.raises(ValueError, match=r"`y` holds one target per step, but the model's "
                       r"output has shape \(2, 3\)"):
        sp.evaluate(model, x, [np.zeros(3), np.zeros(4)], verbose=0)


def test_options_and_keras_keywords(frames_models):
    """dtype / allow_nonfinite come through options=sp.Options(...); verbose / callbacks through
    **kwargs as Keras takes them; any other keyword or option is refused, never ignored."""
    per_sequence, _ = frames_models
    x = _frames([3, 5, 2])
    x[1][4, 0] = np.nan
    got = sp.predict(per_sequence, x, options=sp.Options(allow_nonfinite=True), verbose=0)
    want = per_sequence.predict(_padded(x), verbose=0)
    assert np.isnan(got[1]).all()
    np.testing.assert_allclose(got[[0, 2]], want[[0, 2]], atol=ATOL)
    seq2seq = _seq2seq()
    tokens = {"encoder": _tokens([3, 4]), "decoder": _tokens([2, 5])}
    with pytest.raises(ValueError, match=r"x\['decoder'\]"):
        sp.predict(seq2seq, tokens, options=sp.Options(dtype={"decoder": "bool"}), verbose=0)
    model = _frames_model(seed=3)
    model.compile(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"(?s)`x` holds 1 NaN.*allow_nonfinite"):
        sp.evaluate(model, x, np.array([0, 1, 2]), verbose=0)
    logs = sp.evaluate(model, x, np.array([0, 1, 2]), options={"allow_nonfinite": True},
                       verbose=0)
    assert np.isnan(logs["loss"])
    for call in (lambda **kw: sp.predict(per_sequence, x, **kw),
                 lambda **kw: sp.evaluate(model, x, np.array([0, 1, 2]), **kw)):
        with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['verbos'\].*"
                           r"\['callbacks', 'verbose'\]"):
            call(verbos=0)
        with pytest.raises(TypeError, match=r"\['dtype'\].*\n- .*options=seqprep.Options"):
            call(dtype="float32")
        with pytest.raises(ValueError, match=r"sets epochs=2, which `(predict|evaluate)` does "
                           r"not use"):
            call(options=sp.Options(epochs=2))
        with pytest.raises(ValueError, match=r"`verbose` must be 0 or 1 or 2. Received: verbose=3"):
            call(verbose=3)
    import inspect

    for fn in (sp.predict, sp.evaluate):
        named = [p for p in inspect.signature(fn).parameters.values()
                 if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        assert len(named) <= 12, fn


# --------------------------------------------------------------------------- the docs page


def _python_blocks(text):
    """The ```python blocks of a Markdown page, indentation of admonitions removed."""
    import re
    import textwrap

    return [textwrap.dedent(block) for block in
            re.findall(r"^[ \t]*```python\n(.*?)^[ \t]*```", text, flags=re.M | re.S)]


def test_the_inference_page_runs():
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "inference.md"
    blocks = _python_blocks(page.read_text())
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:  # one namespace, in page order, as a reader runs them
        exec(compile(block, str(page), "exec"), namespace)


@pytest.mark.backend
def test_tuple_of_fields_feeds_inputs_by_position():
    model = _seq2seq()
    listed = keras.Model([model.input["encoder"], model.input["decoder"]], model.output)
    src, dec = _tokens([4, 2, 6], 5), _tokens([3, 5, 1], 6)
    by_name = sp.predict(model, {"encoder": src, "decoder": dec}, verbose=0)
    by_position = sp.predict(listed, (src, dec), verbose=0)
    for a, b in zip(by_name, by_position, strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)
    with pytest.raises(ValueError, match=r"takes 2 input\(s\).*Received: \['a tuple of 3 "
                       r"fields'\]"):
        sp.predict(listed, (src, dec, dec), verbose=0)
