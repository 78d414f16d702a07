"""Tests for the TBPTT executors (seqprep.running._tbptt): fit, predict and evaluate."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import seqprep as sp
from seqprep._core.ragged import as_ragged
from seqprep.running._tbptt import evaluate_tbptt, fit_tbptt, predict_tbptt
from seqprep.running._tbptt_data import _Windows
from seqprep.running._tbptt_runner import _Runner

# Run under every Keras backend by the Makefile's backend step (KERAS_BACKEND=jax|torch).
pytestmark = pytest.mark.backend
to_numpy = keras.ops.convert_to_numpy

CELLS = {"simple": keras.layers.SimpleRNN, "gru": keras.layers.GRU, "lstm": keras.layers.LSTM}
# Rows that hold several sequences (batch_size 3, 7 sequences) and rows that run out early
# (the 13-step sequence keeps row 0 busy long after the others).
LENGTHS = [13, 2, 7, 5, 1, 9, 4]
DIM = 2


def stateful_model(cell="lstm", *, batch_size=3, window=None, units=4, out=1, seed=0, stack=1):
    """A small stateful many-to-one/many-to-many model with per-step outputs."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(batch_shape=(batch_size, window, DIM))
    h = inputs
    for _ in range(stack):
        h = CELLS[cell](units, stateful=True, return_sequences=True)(h)
    outputs = keras.layers.Dense(out)(h)
    return keras.Model(inputs, outputs)


def twin_of(model, cell="lstm", *, units=4, out=1, stack=1, return_state=False):
    """The same architecture without state, for whole sequences of any batch size."""
    inputs = keras.Input(shape=(None, DIM))
    h = inputs
    states = []
    for _ in range(stack):
        layer = CELLS[cell](units, return_sequences=True, return_state=return_state)
        result = layer(h)
        if return_state:
            h, *layer_states = result
            states.extend(layer_states)
        else:
            h = result
    outputs = keras.layers.Dense(out)(h)
    twin = keras.Model(inputs, [outputs, *states] if return_state else outputs)
    twin.set_weights(model.get_weights())
    return twin


def sequences(lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, DIM)).astype("float32") for n in lengths]


def whole(twin, seq):
    return to_numpy(twin(seq[None]))[0]


def whole_all(twin, x, pad_to=16):
    """Per-step twin outputs of every sequence from one padded call (one shape to compile).

    The twin is causal, so the zeros after a sequence cannot reach its real steps' outputs.
    """
    padded = np.zeros((len(x), pad_to, DIM), "float32")
    for i, seq in enumerate(x):
        padded[i, : len(seq)] = seq
    out = to_numpy(twin(padded))
    return [out[i, : len(seq)] for i, seq in enumerate(x)]


# -- (a) forward pass window by window == whole sequence at once ----------------------------
@pytest.mark.parametrize("cell", ["simple", "gru", "lstm"])
@pytest.mark.parametrize("window", [3, 4])
def test_predict_matches_whole_sequence_twin(cell, window):
    model = stateful_model(cell)
    twin = twin_of(model, cell)
    x = sequences()
    last = predict_tbptt(model, x, window=window, batch_size=3)
    every = predict_tbptt(model, x, window=window, batch_size=3, return_sequences=True)
    assert last.shape == (len(x), 1)
    for i, expected in enumerate(whole_all(twin, x)):
        np.testing.assert_allclose(every[i], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(last[i], expected[-1], rtol=1e-5, atol=1e-5)


def test_final_state_matches_whole_sequence_in_every_row():
    """After the window where a sequence ends, its row's state is its whole-sequence state."""
    model = stateful_model("lstm", stack=2)
    twin = twin_of(model, "lstm", stack=2, return_state=True)
    x = sequences()
    data = as_ragged(x)
    plan = sp.plan_tbptt(data.lengths, window=4, batch_size=3)
    assert (plan.sequence >= 0).sum(axis=0).max() > plan.n_windows_of.max()  # packed rows
    assert plan.idle.any()  # some rows run out early
    runner = _Runner(model, window=4, batch_size=3, data=data)
    windows = _Windows(plan, data, None, True)
    runner.reset_all()
    checked = set()
    for w in range(plan.n_windows):
        runner.forward(windows.inputs(w))
        states = [to_numpy(v) for v in runner.state_variables]
        for row in np.flatnonzero(plan.ends[w]):
            i = int(plan.sequence[w, row])
            _, *expected = twin(x[i][None])
            for got, want in zip(states, expected, strict=True):
                np.testing.assert_allclose(got[row], to_numpy(want)[0], rtol=1e-5, atol=1e-5)
            checked.add(i)
    assert checked == set(range(len(x)))


# -- (b) resets exactly at sequence starts; idle windows change nothing --------------------
def test_state_reset_per_row_and_idle_rows_frozen():
    model = stateful_model("gru")
    x = sequences([9, 2, 2, 3])  # row 0: one long sequence; rows 1-2: short ones, then idle
    data = as_ragged(x)
    plan = sp.plan_tbptt(data.lengths, window=2, batch_size=3)
    runner = _Runner(model, window=2, batch_size=3, data=data)
    windows = _Windows(plan, data, None, True)
    runner.reset_all()
    previous = None
    for w in range(plan.n_windows):
        x_w, mask, reset, idle = windows.inputs(w)
        before = np.concatenate([to_numpy(v) for v in runner.state_variables], axis=-1)
        # poison the state of rows about to be reset: a correct reset must erase it
        for v in runner.state_variables:
            v.assign(np.where(reset[:, None], 123.0, to_numpy(v)).astype("float32"))
        y = to_numpy(runner.forward((x_w, mask, reset, idle)))
        after = np.concatenate([to_numpy(v) for v in runner.state_variables], axis=-1)
        assert np.isfinite(y).all()
        np.testing.assert_array_equal(after[idle], before[idle])
        if previous is not None:
            changed = ~np.all(after == before, axis=1)
            assert np.all(changed[~idle])
        for row in np.flatnonzero(reset):
            seq = x[plan.sequence[w, row]][: plan.count[w, row]]
            fresh = stateful_model("gru", batch_size=1, seed=1)
            fresh.set_weights(model.get_weights())
            np.testing.assert_allclose(
                y[row, : len(seq)], to_numpy(fresh(seq[None]))[0], rtol=1e-5, atol=1e-5
            )
        previous = after
    assert plan.idle.any() and plan.resets[1:].any()


def test_resets_only_rows_that_start_a_sequence():
    """In the window where row 1 starts a new sequence, row 0 carries its state on."""
    model = stateful_model("simple", batch_size=2)
    x = sequences([6, 2, 4])
    data = as_ragged(x)
    plan = sp.plan_tbptt(data.lengths, window=2, batch_size=2)
    assert plan.resets.tolist() == [[True, True], [False, False], [False, True]]
    runner = _Runner(model, window=2, batch_size=2, data=data)
    windows = _Windows(plan, data, None, True)
    runner.reset_all()
    for w in range(plan.n_windows):
        y = to_numpy(runner.forward(windows.inputs(w)))
    twin = twin_of(model, "simple")
    np.testing.assert_allclose(y[0], whole(twin, x[0])[4:6], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y[1], whole(twin, x[1]), rtol=1e-5, atol=1e-5)


# -- (c) window >= longest length reproduces plain Keras training -------------------------
def _plain_batches(plan, x, y, many_to_one):
    """The plan's windows as ordinary padded batches for train_on_batch."""
    for w in range(plan.n_windows):
        rows = plan.sequence[w]
        xb = np.zeros((plan.batch_size, plan.window, DIM), "float32")
        if many_to_one:
            yb = np.zeros((plan.batch_size, 1), "float32")
        else:
            yb = np.zeros((plan.batch_size, plan.window, 1), "float32")
        for r, i in enumerate(rows):
            if i >= 0:
                xb[r, : len(x[i])] = x[i]
                yb[r, ...] = y[i] if many_to_one else 0
                if not many_to_one:
                    yb[r, : len(x[i])] = y[i]
        yield xb, yb


@pytest.mark.parametrize("many_to_one", [True, False])
def test_window_covering_everything_reproduces_train_on_batch(many_to_one):
    lengths = [5, 3, 6, 2, 4, 6]  # a multiple of batch_size: every batch is full
    x = sequences(lengths, seed=3)
    rng = np.random.default_rng(4)
    if many_to_one:
        y = rng.normal(size=(len(x), 1)).astype("float32")
    else:
        y = [rng.normal(size=(n, 1)).astype("float32") for n in lengths]
    window = max(lengths)

    model = stateful_model("lstm", window=window)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    fit_tbptt(model, x, y, window=window, batch_size=3, verbose=0)

    plain_in = keras.Input(batch_shape=(3, window, DIM))
    h = keras.layers.LSTM(4, return_sequences=not many_to_one)(
        keras.layers.Masking(0.0)(plain_in)
    )
    plain = keras.Model(plain_in, keras.layers.Dense(1)(h))
    plain.set_weights(stateful_model("lstm", window=window).get_weights())
    plain.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    plan = sp.plan_tbptt([len(s) for s in x], window=window, batch_size=3)
    for xb, yb in _plain_batches(plan, x, y, many_to_one):
        # the Masking layer makes Keras's loss the mean over real steps, as in fit_tbptt
        plain.train_on_batch(xb, yb)
    for got, want in zip(model.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# -- fit: history, callbacks, learning --------------------------------------------------------
class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch, sorted(logs)))

    def on_train_batch_begin(self, batch, logs=None):
        self.events.append(("batch_begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.events.append(("batch_end", batch))


def test_fit_calls_callbacks_per_window_and_returns_history():
    model = stateful_model("gru")
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    x = sequences()
    y = np.ones((len(x), 1), "float32")
    recorder = Recorder()
    history = fit_tbptt(
        model, x, y, window=4, batch_size=3, epochs=2, callbacks=[recorder], verbose=0,
        validation_data=(x[:4], y[:4]),
    )
    n_windows = sp.plan_tbptt(LENGTHS, window=4, batch_size=3).n_windows
    assert isinstance(history, keras.callbacks.History)
    assert sorted(history.history) == ["loss", "mae", "val_loss", "val_mae"]
    assert len(history.history["loss"]) == 2
    expected = []
    for epoch in range(2):
        expected.append(("epoch_begin", epoch))
        for w in range(n_windows):
            expected += [("batch_begin", w), ("batch_end", w)]
        expected.append(("epoch_end", epoch, ["loss", "mae", "val_loss", "val_mae"]))
    assert recorder.events == expected
    assert history.history["loss"][1] < history.history["loss"][0]


def test_fit_learns_last_step_target_and_evaluate_agrees():
    """Target = sign of the last step's first feature: learnable within any window."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 12, size=24)
    x = [rng.normal(size=(n, DIM)).astype("float32") for n in lengths]
    y = np.array([[float(s[-1, 0] > 0)] for s in x], "float32")
    model = stateful_model("gru", units=8)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    before = evaluate_tbptt(model, x, y, window=4, batch_size=3)
    history = fit_tbptt(model, x, y, window=4, batch_size=3, epochs=15, order="shuffle",
                        verbose=0)
    after = evaluate_tbptt(model, x, y, window=4, batch_size=3, return_dict=True)
    assert after["loss"] < 0.5 * before
    # evaluate's loss is the mean over sequences of the last-step squared error
    pred = predict_tbptt(model, x, window=5, batch_size=3)
    np.testing.assert_allclose(after["loss"], np.mean((pred - y) ** 2), rtol=1e-4)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_many_to_many_inferred_from_per_step_targets():
    model = stateful_model("simple")
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    x = sequences()
    y = [np.zeros((len(s), 1), "float32") for s in x]
    logs = evaluate_tbptt(model, x, y, window=4, batch_size=3, return_dict=True)
    every = np.concatenate(predict_tbptt(model, x, window=4, batch_size=3, return_sequences=True))
    np.testing.assert_allclose(logs["loss"], np.mean(every**2), rtol=1e-4)
    # plain (unweighted) compiled metrics count real steps only, as the loss does
    np.testing.assert_allclose(logs["mae"], np.mean(np.abs(every)), rtol=1e-4)


def test_many_to_one_metrics_count_each_sequence_once():
    model = stateful_model("gru")
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    x = sequences()
    y = np.ones((len(x), 1), "float32")
    logs = evaluate_tbptt(model, x, y, window=3, batch_size=3, return_dict=True)
    pred = predict_tbptt(model, x, window=3, batch_size=3)
    np.testing.assert_allclose(logs["mae"], np.mean(np.abs(pred - 1)), rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], np.mean((pred - 1) ** 2), rtol=1e-4)


def test_fit_does_not_mutate_inputs_and_leaves_state_zeroed():
    model = stateful_model("lstm")
    model.compile(optimizer="sgd", loss="mse")
    x = sequences()
    y = np.zeros((len(x), 1), "float32")
    x_copy = [s.copy() for s in x]
    fit_tbptt(model, x, y, window=4, batch_size=3, verbose=0)
    for a, b in zip(x, x_copy, strict=True):
        np.testing.assert_array_equal(a, b)
    for layer in model.layers:
        for v in getattr(layer, "states", None) or []:
            assert not np.any(to_numpy(v))


def test_sequential_model_without_input_is_built_on_first_use():
    model = keras.Sequential(
        [keras.layers.SimpleRNN(3, stateful=True, return_sequences=True), keras.layers.Dense(1)]
    )
    out = predict_tbptt(model, sequences(), window=4, batch_size=3)
    assert out.shape == (len(LENGTHS), 1)


# -- (e) bad input ------------------------------------------------------------------------------
def _non_stateful(batch_size=3):
    inputs = keras.Input(batch_shape=(batch_size, None, DIM))
    return keras.Model(inputs, keras.layers.LSTM(2, return_sequences=True)(inputs))


def _bidirectional():
    inputs = keras.Input(batch_shape=(3, None, DIM))
    layer = keras.layers.Bidirectional(
        keras.layers.LSTM(2, stateful=True, return_sequences=True)
    )
    return keras.Model(inputs, layer(inputs))


def _time_axis_dropped():
    inputs = keras.Input(batch_shape=(3, None, DIM))
    h = keras.layers.GRU(2, stateful=True, return_sequences=True)(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(h))


def _fixed_window(window):
    return stateful_model("simple", window=window)


BAD = [
    ("window 0", stateful_model, {"window": 0}, ValueError, "`window` must be at least 1"),
    ("window float", lambda: stateful_model(), {"window": 2.5}, TypeError, "`window` must be an"),
    ("batch 0", lambda: stateful_model(), {"batch_size": 0}, ValueError, "`batch_size` must be"),
    ("not stateful", _non_stateful, {}, ValueError, "stateful=True, return_sequences=True"),
    ("wrong batch", lambda: stateful_model(batch_size=4), {}, ValueError, "batch size"),
    ("bidirectional", _bidirectional, {}, ValueError, "backwards in time"),
    ("time axis dropped", _time_axis_dropped, {}, ValueError, "one output per time step"),
    ("fixed window", lambda: _fixed_window(5), {}, ValueError, "`window` must match"),
    ("not a model", lambda: "lstm", {}, TypeError, "`model` must be a `keras.Model`"),
    ("no rnn", lambda: keras.Sequential([keras.Input(batch_shape=(3, None, DIM)),
                                          keras.layers.Dense(1)]),
     {}, ValueError, "no recurrent layer"),
]


@pytest.mark.parametrize("name,build,kwargs,error,match", BAD, ids=[b[0] for b in BAD])
def test_bad_model_or_sizes(name, build, kwargs, error, match):
    args = {"window": 4, "batch_size": 3, **kwargs}
    with pytest.raises(error, match=match.replace("(", r"\(").replace(")", r"\)")) as info:
        predict_tbptt(build(), sequences(), **args)
    if name in ("not stateful", "wrong batch"):
        assert "reference_rnn(..., stateful=True" in str(info.value)
        assert "keras.Input(batch_shape=(3, 4, d))" in str(info.value)


BAD_DATA = [
    ("empty sequence", [np.zeros((0, DIM), "float32")] + sequences()[1:], np.zeros(7),
     ValueError, "must not hold empty sequences"),
    ("y wrong count", sequences(), np.zeros(5), ValueError, "one target per sequence"),
    ("y wrong steps", sequences(), [np.zeros((n + 1, 1)) for n in LENGTHS], ValueError,
     "one target per step"),
]


@pytest.mark.parametrize("name,x,y,error,match", BAD_DATA, ids=[b[0] for b in BAD_DATA])
def test_bad_data(name, x, y, error, match):
    model = stateful_model()
    model.compile(optimizer="sgd", loss="mse")
    return_sequences = True if name == "y wrong steps" else None
    with pytest.raises(error, match=match):
        fit_tbptt(model, x, y, window=4, batch_size=3, verbose=0,
                  return_sequences=return_sequences)


def test_uncompiled_model_cannot_be_fitted():
    with pytest.raises(ValueError, match="compile"):
        fit_tbptt(stateful_model(), sequences(), np.zeros(7), window=4, batch_size=3,
                  verbose=0)


def test_state_variables_are_found_in_nested_models():
    inner_in = keras.Input(batch_shape=(3, None, DIM))
    inner = keras.Model(inner_in, keras.layers.GRU(3, stateful=True, return_sequences=True)(
        inner_in))
    outer_in = keras.Input(batch_shape=(3, None, DIM))
    outer = keras.Model(outer_in, keras.layers.Dense(1)(inner(outer_in)))
    runner = _Runner(outer, window=4, batch_size=3, data=as_ragged(sequences()))
    assert len(runner.state_variables) == 1
    assert tuple(runner.state_variables[0].shape) == (3, 3)


def test_progress_bar_and_evaluate_progress(capsys):
    model = stateful_model("simple")
    model.compile(optimizer="sgd", loss="mse")
    x = sequences()
    y = np.zeros((len(x), 1), "float32")
    fit_tbptt(model, x, y, window=4, batch_size=3, verbose=1)
    evaluate_tbptt(model, x, y, window=4, batch_size=3, verbose=1)
    out = capsys.readouterr().out
    n_windows = sp.plan_tbptt(LENGTHS, window=4, batch_size=3).n_windows
    assert f"{n_windows}/{n_windows}" in out and "loss" in out
    with pytest.raises(ValueError, match="`verbose` must be"):
        fit_tbptt(model, x, y, window=4, batch_size=3, verbose="loud")


def test_shuffle_order_trains_on_a_new_plan_each_epoch():
    model = stateful_model("gru")
    model.compile(optimizer="sgd", loss="mse")
    x = sequences(list(range(1, 10)))
    y = np.zeros((len(x), 1), "float32")
    history = fit_tbptt(model, x, y, window=4, batch_size=3, epochs=2, order="shuffle",
                        verbose=0)
    assert len(history.history["loss"]) == 2
    plans = [sp.plan_tbptt([len(s) for s in x], window=4, batch_size=3, order="shuffle",
                           epoch=e) for e in range(2)]
    assert not np.array_equal(plans[0].row, plans[1].row)


def test_step_shape_mismatch_says_how_to_fix():
    x = [np.ones(n, "float32") for n in LENGTHS]  # scalar steps; the model wants (2,)
    with pytest.raises(ValueError, match="feature axis"):
        predict_tbptt(stateful_model(), x, window=4, batch_size=3)


def test_reference_rnn_built_stateful_matches_its_whole_sequence_twin():
    models = pytest.importorskip("seqprep.models")
    kwargs = {"input_dim": DIM, "cell": "gru", "units": 4, "return_sequences": True}
    keras.utils.set_random_seed(0)
    model = models.reference_rnn(**kwargs, stateful=True, batch_size=3)
    twin = models.reference_rnn(**kwargs)
    twin.set_weights(model.get_weights())
    x = sequences()
    last = predict_tbptt(model, x, window=4, batch_size=3)
    for i, expected in enumerate(whole_all(twin, x)):
        np.testing.assert_allclose(last[i], expected[-1], rtol=1e-5, atol=1e-5)


# ------------------------------------------------ the signature: options= and Keras fit's arguments


def test_fit_tbptt_reads_allow_nonfinite_from_options_and_fit_arguments_from_fit_kwargs():
    model = stateful_model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = sequences(), np.zeros(len(LENGTHS))
    x[1] = x[1].copy()
    x[1][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"`x` holds 1 NaN.*x\[1\] at step 0"):
        fit_tbptt(model, x, y, window=4, batch_size=3, verbose=0)
    seen = []

    class Logs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(sorted(logs))

    # the option reaches the validation data too (its x holds the same NaN)
    history = fit_tbptt(model, x, y, window=4, batch_size=3, verbose=0, callbacks=[Logs()],
                        validation_data=(x, y), options=sp.Options(allow_nonfinite=True))
    assert seen == [["loss", "val_loss"]]
    assert np.isnan(history.history["loss"][0])  # the NaN sequence's loss, as given


@pytest.mark.parametrize("kwargs,match", [
    ({"allow_nonfinite": True}, r"^`fit_tbptt` takes no argument \['allow_nonfinite'\]\.\n"
     r"- Pass `options=seqprep.Options\(allow_nonfinite=True\)` instead"),
    ({"shuffle": False, "initial_epoch": 1}, r"^`fit_tbptt` takes no argument "
     r"\['initial_epoch', 'shuffle'\]\.\n- Of Keras fit's arguments `fit_tbptt` takes "
     r"validation_data, callbacks, verbose; drop the others"),
])
def test_fit_tbptt_refuses_a_keyword_it_does_not_take_by_name(kwargs, match):
    model = stateful_model()
    model.compile(optimizer="sgd", loss="mse")
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(TypeError, match=match):
        fit_tbptt(model, sequences(), np.zeros(len(LENGTHS)), window=4, batch_size=3, **kwargs)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_fit_tbptt_refuses_an_option_it_does_not_read():
    model = stateful_model()
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"sets dtype='float16', which `fit_tbptt` does not use"):
        fit_tbptt(model, sequences(), np.zeros(len(LENGTHS)), window=4, batch_size=3,
                  options=sp.Options(dtype="float16"))


@pytest.mark.parametrize("entry", ["predict_tbptt", "evaluate_tbptt"])
def test_predict_and_evaluate_tbptt_take_allow_nonfinite_in_options_like_fit_tbptt(entry):
    model = stateful_model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = sequences(), np.zeros(len(LENGTHS))
    x[2] = x[2].copy()
    x[2][1, 0] = np.nan
    call = {"predict_tbptt": lambda **kw: predict_tbptt(model, x, window=4, batch_size=3, **kw),
            "evaluate_tbptt": lambda **kw: evaluate_tbptt(model, x, y, window=4, batch_size=3,
                                                          **kw)}[entry]
    with pytest.raises(ValueError, match=r"`x` holds 1 NaN.*x\[2\] at step 1"):
        call()
    got = call(options=sp.Options(allow_nonfinite=True))
    assert not np.isfinite(got).all()  # the NaN reaches the outputs (or the loss) as given
    with pytest.raises(TypeError, match=rf"^`{entry}` takes `allow_nonfinite` in `options`, not "
                       r"as a keyword\. Received: allow_nonfinite=True\n- Pass "
                       r"options=seqprep\.Options\(allow_nonfinite=True\)\.$"):
        call(allow_nonfinite=True)
    with pytest.raises(ValueError, match=rf"sets dtype='float16', which `{entry}` does not use"):
        call(options=sp.Options(dtype="float16"))


def test_tbptt_entry_points_take_at_most_12_named_parameters():
    import inspect

    for fn in (fit_tbptt, predict_tbptt, evaluate_tbptt):
        named = [p for p in inspect.signature(fn).parameters.values()
                 if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        assert len(named) <= 12, fn.__name__


@pytest.mark.parametrize("floatx", ["float32", "float64"])
def test_tbptt_dtype_rule_is_keras_floatx_for_float64_and_keeps_other_dtypes(floatx):
    from seqprep.running._tbptt_data import _prepare_data

    fine = 1 + 2.0 ** -40  # float32 rounds it to 1
    x = [np.array([[fine], [2.0]]), np.array([[3.0]])]
    y = np.array([fine, 0.0])
    saved = keras.backend.floatx()
    keras.backend.set_floatx(floatx)
    try:
        data, targets, many_to_one = _prepare_data(x, y, return_sequences=None, need_y=True)
        kept, _, _ = _prepare_data([np.ones((2, 1), np.float16), np.ones((1, 1), np.float16)],
                                   None, return_sequences=None, need_y=False)
        ints, _, _ = _prepare_data([np.arange(3)], None, return_sequences=None, need_y=False)
    finally:
        keras.backend.set_floatx(saved)
    assert many_to_one and data.values.dtype == floatx and targets.dtype == floatx
    np.testing.assert_array_equal(data.values, np.concatenate(x).astype(floatx))
    assert (float(data.values[0, 0]) == fine) == (floatx == "float64")  # unrounded in float64
    assert kept.values.dtype == np.float16 and ints.values.dtype == np.arange(3).dtype
    for arr in x:  # the caller's arrays are left alone
        assert arr.dtype == np.float64
