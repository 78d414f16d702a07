"""One refusal of non-finite input on every entry point (issue 18, part 2, this share).

``predict_tbptt``, ``evaluate_tbptt`` and ``fit_tbptt``'s validation data refuse NaN/inf
features as ``fit_tbptt`` does (``options=sp.Options(allow_nonfinite=True)`` opts out) and name
the sequence and step; ``from_dataframe`` / ``read_sequences`` refuse ``inf`` as they refuse
NaN, and a time column of mixed value types. Each message says where and what to do.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqprep as sp

LENS = (5, 3, 6, 2)


@functools.cache
def _stateful_model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(batch_shape=(2, 3, 2))
    h = keras.layers.SimpleRNN(2, stateful=True, return_sequences=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    model.compile(optimizer="sgd", loss="mse")
    return model


def _x(bad=None, at=(2, 1)):
    x = [np.full((n, 2), 0.5, "float32") for n in LENS]
    if bad is not None:
        x[at[0]][at[1], 1] = bad
    return x


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("entry", ["predict", "evaluate", "validation"])
def test_tbptt_entry_points_refuse_nonfinite_inputs_by_position(entry, bad):
    model, x = _stateful_model(), _x(bad, at=(2, 4))
    calls = {
        "predict": lambda: sp.predict_tbptt(model, x, window=3, batch_size=2),
        "evaluate": lambda: sp.evaluate_tbptt(model, x, np.zeros(4), window=3, batch_size=2),
        "validation": lambda: sp.fit_tbptt(model, _x(), np.zeros(4), window=3, batch_size=2,
                                           epochs=1, verbose=0,
                                           validation_data=(x, np.zeros(4))),
    }
    name = "validation_data[0]" if entry == "validation" else "x"
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError) as err:
        calls[entry]()
    message = str(err.value)
    assert f"Argument `{name}` holds 1 NaN or infinite value(s); the first is in {name}[2] at " \
           "step 4." in message
    assert "`allow_nonfinite=True`" in message
    if entry == "validation":  # refused before any training step
        assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(),
                                                        strict=True))


def test_allow_nonfinite_lets_tbptt_run_on_what_it_was_given():
    model = _stateful_model()
    x = _x(np.nan, at=(2, 1))
    allow = sp.Options(allow_nonfinite=True)
    out = sp.predict_tbptt(model, x, window=3, batch_size=2, options=allow)
    assert out.shape == (4, 1) and np.isnan(out[2]).all()
    clean = sp.predict_tbptt(model, _x(), window=3, batch_size=2)
    assert np.isfinite(clean).all()
    loss = sp.evaluate_tbptt(model, x, np.zeros(4), window=3, batch_size=2, options=allow)
    assert np.isnan(loss)


def test_tbptt_per_step_targets_name_the_step():
    y = [np.zeros((n, 1), "float32") for n in LENS]
    y[3][1, 0] = np.inf
    with pytest.raises(ValueError, match=r"the first is in y\[3\] at step 1\..*\n- If these "
                                         r"targets are missing"):
        sp.evaluate_tbptt(_stateful_model(), _x(), y, window=3, batch_size=2)


# --------------------------------------------------------------------------- ingestion


def _frame(n_ids=3, steps=4):
    rows = [(i, t, float(10 * i + t), float(i)) for i in range(n_ids) for t in range(steps)]
    return pd.DataFrame(rows, columns=["id", "t", "x", "y"])


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_from_dataframe_names_the_first_infinite_value(data):
    df = _frame().sample(frac=1.0, random_state=data.draw(st.integers(0, 99), label="order"))
    column = data.draw(st.sampled_from(["x", "y"]), label="column")
    rows = data.draw(st.lists(st.integers(0, len(df) - 1), min_size=1, max_size=3, unique=True),
                     label="rows")
    value = data.draw(st.sampled_from([np.inf, -np.inf]), label="value")
    df.iloc[rows, df.columns.get_loc(column)] = value
    first = min(rows)
    role = "features" if column == "x" else "target"
    with pytest.raises(ValueError) as err:
        sp.from_dataframe(df, id="id", time="t", features="x", target="y")
    message = str(err.value)
    assert f"Column {column!r} (argument `{role}`) has {len(rows)} infinite value(s)" in message
    assert f"the first is at row {df.index[first]} (id {df['id'].iloc[first]})" in message
    assert f"Received: {float(df[column].iloc[first])!r}" in message
    assert "\n- If they stand for overflow" in message


def test_per_step_targets_refuse_inf_too():
    df = _frame()
    df.loc[5, "y"] = np.inf
    with pytest.raises(ValueError, match=r"'y' \(argument `target`\) has 1 infinite"):
        sp.from_dataframe(df, id="id", time="t", features="x", target="y",
                          target_per_step=True)


def test_read_sequences_refuses_inf_in_the_file(tmp_path):
    df = _frame()
    df.loc[6, "x"] = -np.inf
    path = tmp_path / "steps.csv"
    df.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"has 1 infinite value\(s\) in file .*steps\.csv.*"
                                         r"row 6 \(id 1\)\. Received: -inf"):
        sp.read_sequences(path, id="id", time="t", features="x")


@pytest.mark.parametrize(
    ("times", "kinds"),
    [
        ([0, "1", 2, 3], "int, str"),
        ([0.5, "b", 2.0, 3.0], "float, str"),
        ([pd.Timestamp(0), "later", pd.Timestamp(2), pd.Timestamp(3)], "Timestamp, str"),
    ],
)
def test_a_time_column_of_mixed_types_is_refused(times, kinds):
    df = pd.DataFrame({"id": [1, 1, 2, 2], "t": pd.Series(times, dtype=object),
                       "x": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(ValueError) as err:
        sp.from_dataframe(df, id="id", time="t", features="x")
    message = str(err.value)
    assert f"Column 't' (argument `time`) mixes value types in `df` ({kinds})" in message
    assert "row 1: " in message and "\n- Convert the column to one type first" in message


@pytest.mark.parametrize(
    "times",
    [[1, 0, 1.5, 0.5], pd.Series([1, 0, 1.5, 0.5], dtype=object), ["b", "a", "d", "c"]],
)
def test_a_time_column_of_one_kind_still_orders_the_steps(times):
    df = pd.DataFrame({"id": [1, 1, 2, 2], "t": times, "x": [1.0, 2.0, 3.0, 4.0]})
    seqs, _ = sp.from_dataframe(df, id="id", time="t", features="x")
    assert [s.tolist() for s in seqs] == [[2.0, 1.0], [4.0, 3.0]]
