"""One targets rule (per sequence or per step) and one per-step weight formula, everywhere."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import ops

from seqprep import (
    BucketSampler,
    PackSampler,
    bucketed_dataset,
    evaluate_tbptt,
    fit_per_length,
    fit_separate_models,
    fit_tbptt,
    packed_dataset,
    resolve_targets,
    sequence_weights,
)
from seqprep._core.ragged import Ragged
from seqprep.inputs._masking import _step_weights
from seqprep.inputs._stage import prepare as _prepare_inputs
from seqprep.running._fitting import _prepare
from seqprep.running._stream import TF_WEIGHT_OPS as _TF_WEIGHT_OPS
from seqprep.running._tbptt_data import _prepare_data
from seqprep.running._tbptt_runner import _KERAS_WEIGHT_OPS


def _x(lengths):
    return [np.arange(1, n + 1, dtype=np.float32) for n in lengths]


# --------------------------------------------------------------------------- exact table

ONE_HOT_SAME = [[1, 0, 0], [0, 1, 0]]  # two sequences of length 3: fits both readings

TABLE = [
    # (id, y, lengths, targets, expected kind or None for the ambiguity error)
    ("ndarray labels", np.array([0, 1, 1]), [3, 1, 2], "auto", "sequence"),
    ("list of scalars", [0, 1, 1], [3, 1, 2], "auto", "sequence"),
    ("ndarray (n, T) same lengths", np.zeros((2, 3)), [3, 3], "auto", "sequence"),
    ("one-hot rows, other lengths", [[1, 0], [0, 1], [1, 0]], [3, 1, 2], "auto", "sequence"),
    ("ragged per-step list", [[1, 2, 3], [4], [5, 6]], [3, 1, 2], "auto", "step"),
    ("Ragged type, equal lengths", Ragged(np.arange(4.0), np.array([0, 2, 4])), [2, 2],
     "auto", "step"),
    ("one-hot rows, same lengths", ONE_HOT_SAME, [3, 3], "auto", None),
    ("tuple rows, same lengths", ([1.0, 2.0], [3.0, 4.0]), [2, 2], "auto", None),
    ("one-hot rows, same lengths, sequence", ONE_HOT_SAME, [3, 3], "sequence", "sequence"),
    ("one-hot rows, same lengths, step", ONE_HOT_SAME, [3, 3], "step", "step"),
    ("ndarray (n, T), step", np.zeros((2, 3)), [3, 3], "step", "step"),
]


@pytest.mark.parametrize("name,y,lengths,targets,kind", TABLE, ids=[t[0] for t in TABLE])
def test_rule_table(name, y, lengths, targets, kind):
    if kind is None:
        with pytest.raises(ValueError, match='targets="sequence".*targets="step"'):
            resolve_targets(y, lengths, targets=targets)
        return
    got, values = resolve_targets(y, lengths, targets=targets)
    assert got == kind
    if kind == "step":
        assert isinstance(values, Ragged)
        assert values.lengths.tolist() == list(lengths)
    else:
        assert isinstance(values, np.ndarray)
        np.testing.assert_array_equal(values, np.asarray(y))


def test_tf_tensors_follow_their_type():
    assert resolve_targets(tf.constant([[1, 0], [0, 1]]), [2, 2])[0] == "sequence"
    rt = tf.ragged.constant([[1, 2], [3, 4]])
    assert resolve_targets(rt, [2, 2])[0] == "step"


def test_values_are_not_copied_or_changed():
    y = np.array([[1.5, 2.5], [3.5, 4.5]])
    before = y.copy()
    kind, values = resolve_targets(y, [4, 1])
    assert kind == "sequence"
    np.testing.assert_array_equal(values, before)
    np.testing.assert_array_equal(y, before)


@pytest.mark.parametrize(
    "y,lengths,targets,match",
    [
        ([[1, 2], [3]], [2, 2], "auto", r"y\[1\] has 1 steps, x\[1\] has 2"),
        ([[1, 2], [3]], [2, 2], "step", r"y\[1\] has 1 steps, x\[1\] has 2"),
        (np.zeros(3), [2, 2], "auto", "len\\(x\\)=2, len\\(y\\)=3"),
        ([[1, 2], [3]], [2, 1], "sequence", "not a rectangular numeric array"),
        ([0, 1], [2, 1], "mid", "Argument `targets` must be"),
    ],
)
def test_mismatches_are_reported(y, lengths, targets, match):
    with pytest.raises(ValueError, match=match):
        resolve_targets(y, lengths, targets=targets)


# --------------------------------------------------------------------------- every entry point


def _bucketed_kind(x, y, targets):
    sampler = BucketSampler([len(s) for s in x], batch_size=2, shuffle=False)
    ds = bucketed_dataset(x, y, sampler=sampler, targets=targets, pad_to="batch")
    # Per-step targets gain the batch's padded time axis, whose width is not static.
    shape = ds.element_spec[1].shape
    return "step" if shape.rank >= 2 and shape[1] is None else "sequence"


def _classify_everywhere(x, y, targets):
    """The kind (or "error") each entry point's own target parsing decides."""
    lengths = np.array([len(s) for s in x])
    readers = {
        "resolve_targets": lambda: resolve_targets(y, lengths, targets=targets)[0],
        "bucketed_dataset": lambda: _bucketed_kind(x, y, targets),
        # packed_dataset reads its targets through the one input stage.
        "packed_dataset": lambda: _prepare_inputs(x, y, targets=targets).targets[0].table.y_mode,
        "fit_per_length": lambda: "step" if _prepare(x, y, targets=targets).y_steps
        else "sequence",
        "fit_tbptt": lambda: "sequence" if _prepare_data(
            x, y, return_sequences=None, need_y=True, targets=targets)[2] else "step",
    }
    out = {}
    for name, read in readers.items():
        try:
            out[name] = read()
        except ValueError:
            out[name] = "error"
    return out


@st.composite
def _cases(draw):
    n = draw(st.integers(1, 5))
    same = draw(st.booleans())
    if same:
        lengths = [draw(st.integers(1, 4))] * n
    else:
        lengths = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    form = draw(st.sampled_from(["labels", "scalars", "rows", "steps", "ndarray_steps"]))
    if form == "labels":
        y = np.arange(n)
    elif form == "scalars":
        y = list(range(n))
    elif form == "rows":
        width = draw(st.integers(1, 4))
        y = [[float(i == j) for j in range(width)] for i in range(n)]
    elif form == "steps":
        y = [[float(i)] * k for i, k in enumerate(lengths)]
    else:
        y = [np.full(k, i, dtype=np.float32) for i, k in enumerate(lengths)]
    targets = draw(st.sampled_from(["auto", "auto", "sequence", "step"]))
    return _x(lengths), y, targets


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases())
def test_every_entry_point_classifies_the_same_way(case):
    x, y, targets = case
    kinds = _classify_everywhere(x, y, targets)
    assert len(set(kinds.values())) == 1, kinds


def _dense_model():
    model = keras.Sequential([keras.Input((None, 1)), keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _stateful_model():
    inputs = keras.Input(batch_shape=(2, 4, 1))
    h = keras.layers.SimpleRNN(2, stateful=True, return_sequences=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    model.compile(optimizer="sgd", loss="mse")
    return model


X_SAME = [np.ones((3, 1), np.float32), np.zeros((3, 1), np.float32)]
Y_SAME = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
ENTRY_POINTS = {
    "bucketed_dataset": lambda **kw: bucketed_dataset(
        X_SAME, Y_SAME, sampler=BucketSampler([3, 3], batch_size=2), **kw),
    "packed_dataset": lambda **kw: packed_dataset(
        X_SAME, Y_SAME, sampler=PackSampler([3, 3], batch_size=1), **kw),
    "fit_per_length": lambda **kw: fit_per_length(
        _dense_model(), X_SAME, Y_SAME, verbose=0, **kw),
    "fit_separate_models": lambda **kw: fit_separate_models(
        lambda group: _dense_model(), X_SAME, Y_SAME, verbose=0, **kw),
    "fit_tbptt": lambda **kw: fit_tbptt(
        _stateful_model(), X_SAME, Y_SAME, window=4, batch_size=2, verbose=0, **kw),
    "evaluate_tbptt": lambda **kw: evaluate_tbptt(
        _stateful_model(), X_SAME, Y_SAME, window=4, batch_size=2, **kw),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_ambiguous_targets_raise_at_every_entry_point(entry):
    with pytest.raises(ValueError, match="Argument `y` fits both readings") as info:
        ENTRY_POINTS[entry]()
    assert 'targets="sequence"' in str(info.value)
    assert 'targets="step"' in str(info.value)


def test_explicit_targets_settle_the_ambiguous_case():
    sampler = BucketSampler([3, 3], batch_size=2, shuffle=False)
    _, yb = next(iter(bucketed_dataset(X_SAME, Y_SAME, sampler=sampler, targets="sequence")))
    np.testing.assert_array_equal(yb.numpy(), np.array(Y_SAME, np.float32))
    _, yb = next(iter(bucketed_dataset(X_SAME, Y_SAME, sampler=sampler, targets="step")))
    assert yb.shape == (2, 3)
    history = fit_per_length(_dense_model(), X_SAME, Y_SAME, verbose=0, targets="sequence")
    assert len(history.history["loss"]) == 1


@pytest.mark.parametrize("entry", ["bucketed_dataset", "packed_dataset"])
def test_unknown_targets_is_refused_even_without_y(entry):
    x = _x([2, 1])
    build = {"bucketed_dataset": lambda: bucketed_dataset(
                 x, sampler=BucketSampler([2, 1], batch_size=2), targets="mid"),
             "packed_dataset": lambda: packed_dataset(
                 x, sampler=PackSampler([2, 1], batch_size=1), targets="mid")}[entry]
    with pytest.raises(ValueError, match="Argument `targets` must be"):
        build()


def test_return_sequences_maps_onto_targets():
    x = [np.ones((3, 1), np.float32), np.ones((3, 1), np.float32)]
    y = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert _prepare_data(x, y, return_sequences=True, need_y=True)[2] is False
    assert _prepare_data(x, y, return_sequences=False, need_y=True)[2] is True
    with pytest.raises(ValueError, match="`return_sequences` and `targets` disagree"):
        _prepare_data(x, y, return_sequences=True, need_y=True, targets="sequence")


# --------------------------------------------------------------------------- weight formula

REAL = np.array([[True, True, False], [True, False, False]])
SCALE = np.array([2.0, 1.0], np.float32)


def _expected(mean, scale):
    w = REAL.astype(np.float32) * (np.ones(2, np.float32) if scale is None else scale)[:, None]
    if mean:
        w = w * (np.float32(w.size) / w.sum(dtype=np.float32))
    return w


@pytest.mark.parametrize("mean", [False, True])
@pytest.mark.parametrize("scale", [None, SCALE])
def test_weight_formula_is_exact_in_every_spelling(mean, scale):
    want = _expected(mean, scale)
    if mean and scale is not None:  # 6 steps, weights sum to 5: factor 6/5
        np.testing.assert_array_equal(
            want, np.array([[2.4, 2.4, 0.0], [1.2, 0.0, 0.0]], np.float32))
    got_np = _step_weights(REAL, mean=mean, scale=scale)
    got_tf = _step_weights(tf.constant(REAL), mean=mean,
                           scale=None if scale is None else tf.constant(scale),
                           ops=_TF_WEIGHT_OPS).numpy()
    got_keras = ops.convert_to_numpy(_step_weights(
        ops.convert_to_tensor(REAL), mean=mean,
        scale=None if scale is None else ops.convert_to_tensor(scale), ops=_KERAS_WEIGHT_OPS))
    for got in (got_np, got_tf, got_keras):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_all_padding_gives_zero_weights_not_nan():
    real = np.zeros((2, 3), bool)
    for spelled in (_step_weights(real, mean=True),
                    _step_weights(tf.constant(real), mean=True, ops=_TF_WEIGHT_OPS).numpy()):
        np.testing.assert_array_equal(spelled, np.zeros((2, 3), np.float32))


def test_sequence_weights_and_bucketed_dataset_use_the_formula():
    lengths = [2, 1]
    want = np.array([[4 / 3, 4 / 3], [4 / 3, 0.0]], np.float32)
    np.testing.assert_array_equal(sequence_weights(lengths, normalize=True), want)
    x = _x(lengths)
    sampler = BucketSampler(lengths, batch_size=2, shuffle=False)
    _, _, wb = next(iter(bucketed_dataset(x, [0, 1], sampler=sampler, pad_to="batch",
                                          sample_weight="timestep_mean")))
    np.testing.assert_array_equal(np.sort(wb.numpy(), axis=0), np.sort(want, axis=0))
