"""One dtype rule, floatx-aware, for every executor (issue 19, item 2: one input stage).

Floating data wider than the working float type become it; the working float type is Keras's
``floatx`` (read by the executor, passed into the numpy stage), never narrower than float32;
integer and boolean data keep their dtype. TBPTT reads its inputs through the same stage, so it
keeps or rounds exactly as ``bucketed_dataset`` does.
"""

from __future__ import annotations

import contextlib
import sys

import keras
import numpy as np
import pytest

import seqprep as sp
from seqprep.inputs._stage import prepare
from seqprep.inputs._stage_rules import default_dtype, working_float
from seqprep.running._floatx import keras_floatx
from seqprep.running._tbptt_data import _prepare_data

FINE = 1 + 2.0 ** -40  # float64 holds it; float32 rounds it to 1.0


@contextlib.contextmanager
def floatx(name):
    """Keras's float type ``name``, for the data rule and for layers built inside (Keras keeps
    the global dtype policy it made on first use, so it is set too)."""
    saved, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(name)
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_floatx(saved)
        keras.config.set_dtype_policy(policy)


def _x():
    return [np.array([[FINE], [2.0], [3.0]]), np.array([[4.0], [FINE]])]


def _identity_rnn(batch_size):
    """A stateful linear SimpleRNN whose output at each step is its input step (x * 1 + 0)."""
    inputs = keras.Input(batch_shape=(batch_size, None, 1))
    rnn = keras.layers.SimpleRNN(1, stateful=True, return_sequences=True, activation="linear",
                                 kernel_initializer="ones", recurrent_initializer="zeros",
                                 bias_initializer="zeros")
    return keras.Model(inputs, rnn(inputs))


# ------------------------------------------------------------------------------ the rule itself


@pytest.mark.parametrize("fx,float64,float32,float16", [
    ("float64", "float64", "float32", "float16"),
    ("float32", "float32", "float32", "float16"),
    ("float16", "float32", "float32", "float16"),
    ("bfloat16", "float32", "float32", "float16"),
])
def test_the_rule_narrows_only_floats_wider_than_floatx_and_never_below_float32(
        fx, float64, float32, float16):
    got = [default_dtype(np.dtype(d), fx).name for d in ("float64", "float32", "float16")]
    assert got == [float64, float32, float16]
    for kept in ("int8", "int64", "uint32", "bool"):
        assert default_dtype(np.dtype(kept), fx) == np.dtype(kept)
    assert default_dtype(np.dtype("longdouble"), fx) == working_float(fx)


def test_an_unknown_floatx_is_refused_by_name():
    with pytest.raises(ValueError, match=r"`floatx` must be one of .*Received: floatx='float8'"):
        working_float("float8")


def test_padcollate_reads_floatx_only_when_keras_is_imported(monkeypatch):
    with floatx("float64"):
        assert keras_floatx() == keras_floatx(import_keras=False) == "float64"
        monkeypatch.delitem(sys.modules, "keras")
        assert keras_floatx(import_keras=False) == "float32"  # Keras's default, unasked


# ------------------------------------------------------- TBPTT and bucketed_dataset keep alike


@pytest.mark.parametrize("fx", ["float32", "float64"])
def test_tbptt_and_bucketed_dataset_keep_or_round_float64_data_alike(fx):
    x = _x()
    y = np.array([FINE, 0.5])
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=2, shuffle=False)
    with floatx(fx):
        (xb, yb), = list(sp.bucketed_dataset(x, y, sampler=sampler, pad_to="batch"))
        data, targets, _ = _prepare_data(x, y, return_sequences=None, need_y=True)
    assert xb.dtype.name == yb.dtype.name == data.values.dtype.name == targets.dtype.name == fx
    kept = fx == "float64"
    row = list(sampler.batches(0)[0]).index(0)  # sequence 0's row in the batch
    assert (float(xb.numpy()[row, 0, 0]) == FINE) == kept
    assert (float(data.values[0, 0]) == FINE) == kept
    assert (float(yb.numpy()[row]) == FINE) == (float(targets[0]) == FINE) == kept
    np.testing.assert_array_equal(xb.numpy()[row, :, 0], data.values[:3, 0])
    assert all(a.dtype == np.float64 for a in x)  # the caller's arrays are left alone


@pytest.mark.parametrize("fx", ["float32", "float64"])
def test_predict_tbptt_sees_the_values_bucketed_dataset_yields(fx):
    """End to end: a model whose outputs are its inputs returns what the stage made of x.

    Not marked ``backend``: seqprep hands every backend the same float64 arrays, but only
    TensorFlow computes this model in exact float64 here (JAX keeps float64 only with
    ``jax_enable_x64``; Keras's PyTorch recurrent step rounds it)."""
    x = _x()
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=2, shuffle=False)
    with floatx(fx):
        model = _identity_rnn(2)
        out = sp.predict_tbptt(model, x, window=2, batch_size=2, return_sequences=True)
        (xb,), = [(b,) for b in sp.bucketed_dataset(x, sampler=sampler, pad_to="batch")]
    assert [o.dtype.name for o in out] == [fx, fx]
    rows = list(sampler.batches(0)[0])
    for i, seq in enumerate(out):
        np.testing.assert_array_equal(seq[:, 0], np.asarray(xb)[rows.index(i), : len(x[i]), 0])
    assert (float(out[0][0, 0]) == FINE) == (fx == "float64")


@pytest.mark.parametrize("fx", ["float16", "bfloat16"])
def test_half_precision_floatx_never_rounds_data_to_half_precision(fx):
    x32 = [a.astype(np.float32) for a in _x()]
    sampler = sp.BucketSampler(sp.sequence_lengths(x32), batch_size=2, shuffle=False)
    with floatx(fx):
        data64, _, _ = _prepare_data(_x(), None, return_sequences=None, need_y=False)
        data32, _, _ = _prepare_data(x32, None, return_sequences=None, need_y=False)
        (xb,), = [(b,) for b in sp.bucketed_dataset(_x(), sampler=sampler, pad_to="batch")]
        stage = prepare(x32, np.array([0.25, 0.5]), floatx=keras_floatx())
    assert data64.values.dtype == data32.values.dtype == np.float32 == xb.dtype.as_numpy_dtype
    assert stage.fields[0].table.x.dtype == stage.targets[0].table.y.dtype == np.float32


@pytest.mark.parametrize("fx", ["float16", "float32", "float64"])
@pytest.mark.parametrize("ids_dtype", ["int32", "int64", "uint8", "bool"])
def test_integer_ids_and_booleans_keep_their_dtype_in_tbptt_and_bucketed_dataset(fx, ids_dtype):
    ids = [np.array([1, 0, 1], ids_dtype), np.array([0, 1], ids_dtype)]
    sampler = sp.BucketSampler(sp.sequence_lengths(ids), batch_size=2, shuffle=False)
    with floatx(fx):
        data, targets, _ = _prepare_data(ids, [np.array([3, 4, 5]), np.array([6, 7])],
                                         return_sequences=True, need_y=True)
        (xb,), = [(b,) for b in sp.bucketed_dataset(ids, sampler=sampler, pad_to="batch")]
    assert data.values.dtype == np.dtype(ids_dtype) == xb.dtype.as_numpy_dtype
    assert targets.values.dtype == np.int64


# ---------------------------------------------------------------- the other executors, floatx64


def test_every_in_memory_executor_keeps_float64_under_floatx_float64():
    x, y = _x(), np.array([FINE, 0.5])
    lengths = sp.sequence_lengths(x)
    sampler = sp.BucketSampler(lengths, batch_size=2, shuffle=False)
    with floatx("float64"):
        xb, yb = sp.bucketed_pydataset(x, y, sampler=sampler, pad_to="batch")[0]
        packed, py, _ = next(iter(sp.packed_dataset(x, y, sampler=sp.PackSampler(
            lengths, batch_size=1, shuffle=False))))
        cx, cy = sp.PadCollate(return_tensors="np")(list(zip(x, y, strict=True)))
        stage = prepare(x, y, floatx=keras_floatx())
    for arr in (xb, yb, packed["values"].numpy(), py.numpy(), cx, cy,
                stage.fields[0].table.x, stage.targets[0].table.y):
        assert arr.dtype == np.float64
    assert FINE in cx[:, :, 0] and FINE in cy


def test_overflow_under_the_rule_names_the_field_and_the_way_to_keep_float64():
    big = [np.array([[1.0], [1e39]]), np.array([[2.0]])]
    with pytest.raises(ValueError, match=r"(?s)`x` does not fit float32, the float type of the "
                       r"batches \(Keras's floatx.*set_floatx\('float64'\).*x\[0\]\[1\]"):
        _prepare_data(big, None, return_sequences=None, need_y=False)
    with floatx("float64"):
        data, _, _ = _prepare_data(big, None, return_sequences=None, need_y=False)
    assert data.values[1, 0] == 1e39
