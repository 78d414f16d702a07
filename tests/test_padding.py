"""pad_sequences, sequence_lengths and unpad: Keras parity, exact edges, refusals, inverses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import seqprep as sp

SIDES = ["pre", "post"]


# --------------------------------------------------------------------------- strategies
@st.composite
def ragged(draw, *, kind=None, allow_empty_seq=True, min_n=1, max_n=8):
    """Ragged int or float data, 1-D or 2-D steps, as arrays or lists (labelled draws)."""
    kind = kind or draw(st.sampled_from(["int", "float"]), label="kind")
    step_dims = draw(st.sampled_from([(), (3,)]), label="step_shape")
    n = draw(st.integers(min_n, max_n), label="n")
    min_len = 0 if allow_empty_seq else 1
    lengths = draw(st.lists(st.integers(min_len, 7), min_size=n, max_size=n), label="lengths")
    if kind == "int":
        elem = st.integers(-(2**31), 2**31 - 1)
        dtype = np.int64
    else:
        elem = st.floats(-1e6, 1e6, allow_nan=False, width=32)
        dtype = np.float32
    seqs = []
    for length in lengths:
        size = int(np.prod((length, *step_dims)))
        flat = draw(st.lists(elem, min_size=size, max_size=size))
        seqs.append(np.array(flat, dtype=dtype).reshape((length, *step_dims)))
    as_lists = draw(st.booleans(), label="as_lists")
    if as_lists:
        seqs = [s.tolist() for s in seqs]
    return seqs, ("int32" if kind == "int" else "float32")


# --------------------------------------------------------------------------- Keras parity
@given(data=st.data())
def test_matches_keras_wherever_keras_loses_nothing(data):
    from keras.utils import pad_sequences as keras_pad

    seqs, dtype = data.draw(ragged(), label="seqs")
    padding = data.draw(st.sampled_from(SIDES), label="padding")
    truncating = data.draw(st.sampled_from(SIDES), label="truncating")
    longest = max(len(s) for s in seqs)
    maxlen = data.draw(st.one_of(st.none(), st.integers(1, longest + 3)), label="maxlen")
    value = data.draw(st.sampled_from([0, -1, 7]), label="value")
    expected = keras_pad(seqs, maxlen=maxlen, dtype=dtype, padding=padding,
                         truncating=truncating, value=value)
    got = sp.pad_sequences(seqs, maxlen=maxlen, dtype=dtype, padding=padding,
                           truncating=truncating, value=value)
    step_shape = np.shape(seqs[0])[1:] if isinstance(seqs[0], np.ndarray) else ()
    if not any(len(s) for s in seqs) and step_shape:
        # Keras loses the step shape of all-empty input; seqprep keeps it (all padding).
        expected = np.full((*expected.shape, *step_shape), value, dtype=expected.dtype)
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_defaults_are_keras_defaults():
    from keras.utils import pad_sequences as keras_pad

    seqs = [[1, 2, 3, 4], [5], [6, 7]]
    np.testing.assert_array_equal(sp.pad_sequences(seqs), keras_pad(seqs))
    assert sp.pad_sequences(seqs).dtype == np.int32


# --------------------------------------------------------------------------- exact edges
@pytest.mark.parametrize(
    "padding, truncating, maxlen, expected",
    [
        ("pre", "pre", None, [[1, 2, 3], [0, 4, 5], [0, 0, 0]]),
        ("post", "pre", None, [[1, 2, 3], [4, 5, 0], [0, 0, 0]]),
        ("pre", "pre", 2, [[2, 3], [4, 5], [0, 0]]),
        ("pre", "post", 2, [[1, 2], [4, 5], [0, 0]]),
        ("post", "post", 2, [[1, 2], [4, 5], [0, 0]]),
        ("post", "pre", 1, [[3], [5], [0]]),
        ("post", "post", 1, [[1], [4], [0]]),
        ("pre", "pre", 4, [[0, 1, 2, 3], [0, 0, 4, 5], [0, 0, 0, 0]]),
        ("post", "post", 4, [[1, 2, 3, 0], [4, 5, 0, 0], [0, 0, 0, 0]]),
        ("post", "pre", 3, [[1, 2, 3], [4, 5, 0], [0, 0, 0]]),  # maxlen == longest: no cut
    ],
)
def test_exact_values_at_the_edges(padding, truncating, maxlen, expected):
    seqs = [[1, 2, 3], [4, 5], []]
    got = sp.pad_sequences(seqs, maxlen=maxlen, padding=padding, truncating=truncating)
    assert got.tolist() == expected


def test_multidimensional_steps_and_value():
    seqs = [np.ones((2, 2, 3)), np.full((1, 2, 3), 2.0)]
    got = sp.pad_sequences(seqs, dtype="float32", padding="post", value=-1.0)
    assert got.shape == (2, 2, 2, 3)
    assert (got[0] == 1).all()
    assert (got[1, 0] == 2).all() and (got[1, 1] == -1).all()


@pytest.mark.parametrize(
    "maxlen, multiple, width",
    [(None, 4, 4), (None, 3, 3), (None, 1, 3), (None, 8, 8), (5, 4, 8), (2, 4, 4)],
)
def test_pad_to_multiple_of(maxlen, multiple, width):
    got = sp.pad_sequences([[1, 2, 3], [4]], maxlen=maxlen, padding="post",
                           truncating="post", pad_to_multiple_of=multiple)
    assert got.shape == (2, width)
    kept = min(3, maxlen or 3)
    assert got[0, :kept].tolist() == [1, 2, 3][:kept]
    assert (got[0, kept:] == 0).all()


def test_empty_collection_gives_empty_array():
    assert sp.pad_sequences([]).shape == (0, 0)
    assert sp.pad_sequences([], maxlen=5).shape == (0, 5)
    assert sp.pad_sequences([[], []]).shape == (2, 0)


def test_object_dtype_pads_strings():
    got = sp.pad_sequences([["a", "b"], ["c"]], dtype=object, padding="post", value="<pad>")
    assert got.tolist() == [["a", "b"], ["c", "<pad>"]]


# --------------------------------------------------------------------------- input kinds
def test_every_collection_kind_gives_the_same_result():
    import tensorflow as tf

    arrays = [np.array([1, 2, 3]), np.array([4])]
    expected = [[1, 2, 3], [4, 0, 0]]
    kinds = {
        "arrays": arrays,
        "lists": [[1, 2, 3], [4]],
        "tuple": tuple(arrays),
        "generator": (a for a in arrays),
        "series": pd.Series(arrays),
        "ragged": tf.ragged.constant([[1, 2, 3], [4]]),
        "object array": np.array(arrays, dtype=object),
    }
    for name, data in kinds.items():
        assert sp.pad_sequences(data, padding="post").tolist() == expected, name


def test_rectangular_array_and_tensor():
    import tensorflow as tf

    x = np.arange(6).reshape(2, 3)
    assert sp.pad_sequences(x, maxlen=4, padding="post").tolist() == [[0, 1, 2, 0], [3, 4, 5, 0]]
    assert sp.pad_sequences(tf.constant(x)).tolist() == x.tolist()


def test_ragged_tensor_with_feature_dim():
    import tensorflow as tf

    rt = tf.RaggedTensor.from_row_splits(np.arange(12, dtype="float32").reshape(6, 2), [0, 4, 6])
    got = sp.pad_sequences(rt, dtype="float32", padding="post")
    assert got.shape == (2, 4, 2)
    np.testing.assert_array_equal(got[1, :2], [[8, 9], [10, 11]])
    assert (got[1, 2:] == 0).all()


def test_sequence_lengths_of_every_kind():
    import tensorflow as tf

    assert sp.sequence_lengths([[1, 2], [], [3]]).tolist() == [2, 0, 1]
    assert sp.sequence_lengths(np.zeros((4, 7, 2))).tolist() == [7] * 4
    assert sp.sequence_lengths(tf.ragged.constant([[1], [2, 3]])).tolist() == [1, 2]
    assert sp.sequence_lengths(pd.Series([np.ones(3), np.ones(5)])).dtype == np.int64


# --------------------------------------------------------------------------- refusing loss
@pytest.mark.parametrize(
    "seqs, dtype, needle",
    [
        ([[0.5, 1.7]], "int32", "not a whole number"),
        ([[1.0, np.nan]], "int32", "NaN"),
        ([[1.0, np.inf]], "int64", "infinite"),
        ([[2**31]], "int32", "range"),
        ([[-1, 3]], "uint8", "range"),
        ([np.array([300], dtype=np.int64)], "int8", "range"),
        ([np.array([1e39])], "float32", "overflows"),
        ([[2**40 + 1]], "float32", "digits"),
        ([np.array([2.0, 0.25], dtype=np.float32)], "int16", "whole number"),
    ],
)
def test_lossy_casts_raise_naming_dtype(seqs, dtype, needle):
    with pytest.raises(ValueError, match="`dtype`") as info:
        sp.pad_sequences(seqs, dtype=dtype)
    assert needle in str(info.value)
    assert "- " in str(info.value)  # says the fix


def test_whole_floats_into_int_are_fine_as_in_keras():
    assert sp.pad_sequences([[1.0, 2.0]], dtype="int32").tolist() == [[1, 2]]


def test_truncated_away_values_are_not_checked():
    # The NaN is cut by maxlen: nothing that reaches the output is lost.
    got = sp.pad_sequences([[np.nan, 1.0, 2.0]], maxlen=2, dtype="int32")
    assert got.tolist() == [[1, 2]]


def test_pad_value_must_fit_dtype():
    with pytest.raises(ValueError, match="`value`=0.5"):
        sp.pad_sequences([[1]], value=0.5)
    with pytest.raises(ValueError, match="`value`='x'"):
        sp.pad_sequences([[1]], value="x")


# --------------------------------------------------------------------------- bad input table
@pytest.mark.parametrize(
    "kwargs, seqs, error, needle",
    [
        ({"maxlen": 0}, [[1]], ValueError, "`maxlen` must be at least 1. Received: maxlen=0"),
        ({"maxlen": -3}, [[1]], ValueError, "maxlen=-3"),
        ({"maxlen": 2.5}, [[1]], TypeError, "`maxlen` must be an integer"),
        ({"padding": "mid"}, [[1]], ValueError, "`padding` must be 'pre' or 'post'. "
                                                  "Received: padding='mid'"),
        ({"truncating": "middle"}, [[1]], ValueError, "truncating='middle'"),
        ({"pad_to_multiple_of": 0}, [[1]], ValueError, "`pad_to_multiple_of` must be at least 1"),
        ({}, [np.ones((2, 3)), np.ones((2, 4))], ValueError, "same step shape"),
        ({}, [[1, 2], [[1, 2], [3, 4]]], ValueError, "step"),
        ({"dtype": "float32"}, [[[1.0, 2.0], [3.0]]], ValueError, "different shapes"),
        ({}, [["a", "b"]], ValueError, "dtype=object"),
        ({}, [[1, 2], 3], ValueError, "element 1 is not a sequence"),
        ({}, "abc", TypeError, "wrap it in a list"),
        ({}, 5, TypeError, "collection of sequences"),
        ({}, np.array([1, 2, 3]), ValueError, "shape (3,)"),
        ({}, pd.DataFrame({"a": [1]}), TypeError, "from_dataframe"),
        ({"dtype": "int32"}, [[1.0, float("nan")]], ValueError, "NaN"),
        ({"dtype": "not-a-dtype"}, [[1]], TypeError, "`dtype`"),
    ],
)
def test_bad_input_messages(kwargs, seqs, error, needle):
    with pytest.raises(error) as info:
        sp.pad_sequences(seqs, **kwargs)
    assert needle in str(info.value)


# --------------------------------------------------------------------------- inverses
@given(data=st.data())
def test_unpad_inverts_pad(data):
    seqs, dtype = data.draw(ragged(), label="seqs")
    padding = data.draw(st.sampled_from(SIDES), label="padding")
    lengths = sp.sequence_lengths(seqs)
    padded = sp.pad_sequences(seqs, dtype=dtype, padding=padding)
    back = sp.unpad(padded, lengths, padding=padding)
    assert len(back) == len(seqs)
    for original, restored in zip(seqs, back, strict=True):
        original = np.asarray(original, dtype=dtype)
        assert restored.shape[0] == len(original)
        np.testing.assert_array_equal(restored.reshape(original.shape), original)


@given(data=st.data())
def test_length_mask_marks_exactly_the_data(data):
    seqs, _ = data.draw(ragged(kind="int", allow_empty_seq=True), label="seqs")
    padding = data.draw(st.sampled_from(SIDES), label="padding")
    # Pad with a sentinel no data value takes, then compare with the mask.
    padded = sp.pad_sequences(seqs, dtype="int64", padding=padding, value=2**40)
    mask = sp.length_mask(sp.sequence_lengths(seqs), padded.shape[1], padding=padding)
    real = padded != 2**40
    if real.ndim == 3:
        real = real.all(axis=2)
    np.testing.assert_array_equal(mask, real)


@given(data=st.data())
def test_callers_data_is_never_mutated(data):
    seqs, dtype = data.draw(ragged(), label="seqs")
    before = [np.array(s, copy=True) for s in seqs]
    padded = sp.pad_sequences(seqs, dtype=dtype, padding="post")
    padded_copy = padded.copy()
    rows = sp.unpad(padded, sp.sequence_lengths(seqs))
    for row in rows:
        if row.size:
            row[...] = 0  # writing into unpad's output must not reach `padded`
    np.testing.assert_array_equal(padded, padded_copy)
    for b, s in zip(before, seqs, strict=True):
        np.testing.assert_array_equal(b, np.asarray(s))


def test_pad_does_not_alias_input_rectangular():
    x = np.arange(6).reshape(2, 3)
    out = sp.pad_sequences(x)
    out[:] = -1
    assert x.tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize(
    "padded, lengths, needle",
    [
        (np.zeros(3), [1], "shape (n, T, ...)"),
        (np.zeros((2, 3)), [1], "one entry per row"),
        (np.zeros((2, 3)), [1, 4], "longer than the padded width 3"),
        (np.zeros((2, 3)), [1, -1], "non-negative"),
        (np.zeros((2, 3)), [1.5, 1], "integers"),
    ],
)
def test_unpad_bad_input(padded, lengths, needle):
    with pytest.raises((ValueError, TypeError)) as info:
        sp.unpad(padded, lengths)
    assert needle in str(info.value)


def test_unpad_empty_batch():
    assert sp.unpad(np.zeros((0, 4)), []) == []


# --------------------------------------------------------------------------- as_ragged aliasing
@given(data=st.data())
def test_as_ragged_never_aliases_the_callers_arrays_writably(data):
    from seqprep._core.ragged import as_ragged

    seqs, _ = data.draw(ragged(), label="seqs")
    rectangular = data.draw(st.booleans(), label="rectangular")
    if rectangular:
        seqs = np.arange(12, dtype=np.int64).reshape(data.draw(st.sampled_from(
            [(3, 4), (2, 3, 2), (1, 12)]), label="shape"))
        arrays = [seqs]
    else:
        seqs = seqs[:1] if data.draw(st.booleans(), label="one") else seqs
        arrays = [s for s in seqs if isinstance(s, np.ndarray)]
    before = [a.copy() for a in arrays]
    values = as_ragged(seqs).values
    if any(np.shares_memory(values, a) for a in arrays):
        assert not values.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            values[...] = 0
    for a, b in zip(arrays, before, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.flags.writeable  # the caller's own array stays as it was


def test_as_ragged_views_of_rectangular_and_single_arrays_are_read_only():
    from seqprep._core.ragged import as_ragged

    x = np.arange(6).reshape(2, 3)
    for given_ in (x, [x[0]], (x[1],)):
        values = as_ragged(given_).values
        assert not values.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            values[0] = 99
    assert x.tolist() == [[0, 1, 2], [3, 4, 5]] and x.flags.writeable


# --------------------------------------------------------------------------- same-dtype fast path
@pytest.mark.parametrize("padding", SIDES)
@pytest.mark.parametrize("maxlen", [None, 2])
def test_row_copy_path_leaves_anything_else_to_the_checked_path(padding, maxlen):
    from keras.utils import pad_sequences as keras_pad

    base = np.arange(12, dtype=np.int32)
    same = [base[:3], base[::3], base[5:6], base[:0], base[2:9:2].copy()]  # strided views too
    got = sp.pad_sequences(same, maxlen=maxlen, padding=padding, truncating=padding)
    np.testing.assert_array_equal(
        got, keras_pad(same, maxlen=maxlen, padding=padding, truncating=padding))
    # A later array of another dtype or byte order goes through the checked path.
    with pytest.raises(ValueError, match=r"3000000000 at sequences\[1\]\[0\]"):
        sp.pad_sequences([base[:2], np.array([3_000_000_000, 1])], maxlen=maxlen,
                         padding=padding)
    swapped = [base[:2], np.array([7, 8], dtype=">i4")]
    assert sp.pad_sequences(swapped, maxlen=maxlen, padding=padding).tolist() == (
        [[0, 1], [7, 8]])
    with pytest.raises(ValueError, match="same step shape"):
        sp.pad_sequences([base[:2], np.zeros((2, 2), np.int32)], padding=padding)
    with pytest.raises(ValueError, match="not a sequence"):
        sp.pad_sequences([base[:2], 5], padding=padding)
