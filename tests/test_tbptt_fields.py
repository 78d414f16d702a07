"""TBPTT with several fields on one time axis (issue 20, item 1: "say where it doesn't").

A dict (or tuple) ``x`` whose fields all have the same lengths feeds a model with one named input
per field; windows cut every field at the same steps. Trained, evaluated and predicted, it must
equal the one-input model that holds the fields side by side (same weights, same plan).
Fields of different lengths (an encoder-decoder pair) are refused, naming them.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import seqprep as sp

B, WINDOW = 2, 4
LENGTHS = (7, 3, 5, 9, 2)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    a = [rng.normal(size=(n, 1)).astype("float32") for n in LENGTHS]
    b = [rng.normal(size=(n, 2)).astype("float32") for n in LENGTHS]
    return a, b


def _two_inputs(names=("a", "b"), as_list=False):
    keras.utils.set_random_seed(0)
    a = keras.Input(batch_shape=(B, None, 1), name=names[0])
    b = keras.Input(batch_shape=(B, None, 2), name=names[1])
    h = keras.layers.Concatenate()([a, b])
    h = keras.layers.GRU(3, stateful=True, return_sequences=True)(h)
    inputs = [a, b] if as_list else {names[0]: a, names[1]: b}
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    model.compile(optimizer="sgd", loss="mse")
    return model


def _one_input(like):
    i = keras.Input(batch_shape=(B, None, 3))
    h = keras.layers.GRU(3, stateful=True, return_sequences=True)(i)
    model = keras.Model(i, keras.layers.Dense(1)(h))
    model.set_weights(like.get_weights())
    model.compile(optimizer="sgd", loss="mse")
    return model


def _joined(a, b):
    return [np.concatenate([p, q], axis=-1) for p, q in zip(a, b, strict=True)]


@pytest.mark.slow
@pytest.mark.backend
def test_named_fields_train_exactly_as_one_input_holding_both():
    a, b = _data()
    y = np.linspace(-1, 1, len(LENGTHS)).astype("float32")[:, None]
    fields = _two_inputs()
    joined = _one_input(fields)
    h2 = sp.fit_tbptt(fields, {"a": a, "b": b}, y, window=WINDOW, batch_size=B, epochs=2,
                      order="shuffle", verbose=0, validation_data=({"a": a[:3], "b": b[:3]},
                                                                   y[:3]))
    h1 = sp.fit_tbptt(joined, _joined(a, b), y, window=WINDOW, batch_size=B, epochs=2,
                      order="shuffle", verbose=0, validation_data=(_joined(a[:3], b[:3]), y[:3]))
    for w2, w1 in zip(fields.get_weights(), joined.get_weights(), strict=True):
        np.testing.assert_allclose(w2, w1, rtol=1e-6, atol=1e-6)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(h2.history[key], h1.history[key], rtol=1e-6)
    np.testing.assert_allclose(
        sp.predict_tbptt(fields, {"a": a, "b": b}, window=WINDOW, batch_size=B),
        sp.predict_tbptt(joined, _joined(a, b), window=WINDOW, batch_size=B),
        rtol=1e-6, atol=1e-6)


def test_per_step_targets_follow_the_shared_time_axis():
    a, b = _data()
    y = [np.cumsum(p, axis=0) for p in a]
    fields = _two_inputs()
    joined = _one_input(fields)
    got = sp.predict_tbptt(fields, {"a": a, "b": b}, window=WINDOW, batch_size=B,
                           return_sequences=True)
    want = sp.predict_tbptt(joined, _joined(a, b), window=WINDOW, batch_size=B,
                            return_sequences=True)
    assert [g.shape for g in got] == [(n, 1) for n in LENGTHS]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    for dense in (False, True):
        np.testing.assert_allclose(
            sp.evaluate_tbptt(fields, {"a": a, "b": b}, y, window=WINDOW, batch_size=B,
                              dense=dense),
            sp.evaluate_tbptt(joined, _joined(a, b), y, window=WINDOW, batch_size=B),
            rtol=1e-5)


def test_a_tuple_of_fields_feeds_a_model_of_listed_inputs_by_position():
    a, b = _data()
    by_name = sp.predict_tbptt(_two_inputs(), {"b": b, "a": a}, window=WINDOW, batch_size=B)
    by_position = sp.predict_tbptt(_two_inputs(as_list=True), (a, b), window=WINDOW,
                                   batch_size=B)
    np.testing.assert_array_equal(by_name, by_position)


def test_fields_of_different_lengths_are_refused_naming_them():
    a, b = _data()
    b = list(b)
    b[3] = b[3][:-2]  # an encoder-decoder pair: sequence 3 differs
    with pytest.raises(ValueError) as err:
        sp.fit_tbptt(_two_inputs(), {"a": a, "b": b}, np.zeros(5), window=WINDOW,
                     batch_size=B, verbose=0)
    message = str(err.value)
    assert message.startswith("Argument `x` holds fields of different lengths, ['a', 'b']: "
                              "sequence 3 has 9 steps in x['a'] and 7 in x['b']."), message
    assert "\n- Train such pairs on whole sequences with `seqprep.bucketed_dataset` and a " \
           "2-D `BucketSampler`" in message


@pytest.mark.parametrize("x,match", [
    (lambda a, b: {"a": a, "c": b}, r"`x` has fields \['a', 'c'\], but the model's inputs "
     r"are named \['a', 'b'\]: no input for \['c'\]\.\n- Name the fields after"),
    (lambda a, b: _joined(a, b), r"must take exactly one input for TBPTT, or `x` must be a "
     r"dict of fields, one per input\. Received a model with 2 inputs \['a', 'b'\]"),
    (lambda a, b: {"a": a, "b": b, "c": a}, r"`x` has 3 fields \['a', 'b', 'c'\], but the "
     r"model takes 2 input\(s\) \['a', 'b'\]"),
    (lambda a, b: {"a": b, "b": a}, r"`x\['a'\]` has steps of shape \(2,\), but the model "
     r"expects steps of shape \(1,\)"),
])
def test_fields_that_do_not_fit_the_model_inputs_are_refused_clearly(x, match):
    a, b = _data()
    with pytest.raises(ValueError, match=match):
        sp.predict_tbptt(_two_inputs(), x(a, b), window=WINDOW, batch_size=B)


def test_validation_fields_must_have_the_training_fields_shapes_and_y_one_target():
    a, b = _data()
    model = _two_inputs()
    with pytest.raises(ValueError, match=r"`validation_data` has steps of shape "
                       r"\{'a': \(2,\), 'b': \(1,\)\}, but `x` has steps of shape "
                       r"\{'a': \(1,\), 'b': \(2,\)\}"):
        sp.fit_tbptt(model, {"a": a, "b": b}, np.zeros(5), window=WINDOW, batch_size=B,
                     verbose=0, validation_data=({"a": b, "b": a}, np.zeros(5)))
    with pytest.raises(ValueError, match=r"`y` is a dict of target fields \['p', 'q'\], but "
                       "TBPTT trains a model of one output"):
        sp.fit_tbptt(model, {"a": a, "b": b}, {"p": np.zeros(5), "q": np.zeros(5)},
                     window=WINDOW, batch_size=B, verbose=0)
