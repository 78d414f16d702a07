"""Casts never lose data: every dtype pair against exact Python int / Fraction references.

The rule under test (seqprep/_core/casts.py): a cast either gives every value exactly, or raises
ValueError. The one rounding allowed is a float narrowed to a smaller float (IEEE round to
nearest), and even then overflow to inf raises. The reference never goes through numpy: exact
values are Python ints and ``fractions.Fraction``; float32/float16 rounding comes from
``struct`` (which raises OverflowError where the rounded value would be inf).
"""

from __future__ import annotations

import math
import struct
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import seqprep as sp
from seqprep._core.casts import check_cast, find_loss
from seqprep._core.ragged import as_ragged

NUMERIC = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
           np.uint64, np.float16, np.float32, np.float64]
NUMERIC = [np.dtype(d) for d in NUMERIC]


# --------------------------------------------------------------------------- exact reference


def _exact(x):
    """The exact value of a Python or numpy scalar: int, Fraction, or 'nan'/±inf as floats."""
    if isinstance(x, (bool, np.bool_)):
        return int(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    f = float(x)
    if math.isnan(f) or math.isinf(f):
        return f
    return Fraction(f)


def _round_to(x: float, dst: np.dtype) -> float:
    """IEEE round-to-nearest of a finite Python float into ``dst``; OverflowError past max."""
    if dst.itemsize == 8:
        return x
    code = {4: "f", 2: "e"}[dst.itemsize]
    rounded = struct.unpack(code, struct.pack(code, x))[0]
    if math.isinf(rounded):
        raise OverflowError(x)  # struct lets the tie at max + ulp/2 round to inf
    return rounded


def _expected(x, dst: np.dtype, float_ints: bool = False):
    """The exact value a lossless cast of ``x`` into ``dst`` gives, or None: it must raise.

    ``float_ints``: ``x`` sits in a list that also holds floats, which numpy (and seqprep)
    reads as float data: its ints below 2**53 (exact in float64) then round like floats.
    """
    v = _exact(x)
    is_float_source = isinstance(x, (float, np.floating)) or (
        float_ints and isinstance(x, int) and not isinstance(x, bool) and abs(x) < 2**53)
    if isinstance(v, float):  # NaN or inf
        return v if dst.kind == "f" else None
    if dst.kind == "b":
        return v if v in (0, 1) else None
    if dst.kind in "iu":
        info = np.iinfo(dst)
        return int(v) if v.denominator == 1 and info.min <= v <= info.max else None
    if is_float_source:
        try:
            return _round_to(float(x), dst)  # rounding allowed, overflow not
        except OverflowError:
            return None
    try:
        as_float = _round_to(float(v), dst)
    except OverflowError:
        return None
    return v if Fraction(as_float) == v else None


def _same(got, want) -> bool:
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    if isinstance(got, float) and isinstance(want, float) and got == 0 and want == 0:
        return math.copysign(1, got) == math.copysign(1, want)  # -0.0 stays -0.0
    if isinstance(got, float) and math.isinf(got):
        return got == want
    return _exact(got) == (Fraction(want) if isinstance(want, float) else want)


def _check_against_reference(source: list, values: np.ndarray, dst: np.dtype, cast,
                             float_ints: bool = False) -> None:
    strict = [_expected(x, dst) for x in source]
    expected = [_expected(x, dst, float_ints) for x in source] if float_ints else strict
    if float_ints:
        # seqprep reads a list of whole numbers as ints: then refusing is right too.
        strict = [_expected(int(x) if isinstance(x, float) and x.is_integer() else x, dst)
                  for x in source]
    if any(e is None for e in expected):
        with pytest.raises(ValueError, match="`dtype`"):
            cast(values, dst)
        if not float_ints:
            first_bad = next(i for i, e in enumerate(expected) if e is None)
            loss = find_loss(values, dst)
            assert loss is not None and loss.index == first_bad
        return
    if any(e is None for e in strict):
        # Ints in a float list: rounding them like floats is the documented policy, but
        # refusing (when seqprep read them as ints) loses nothing either.
        try:
            out = cast(values, dst)
        except ValueError as err:
            assert "`dtype`" in str(err)
            return
    else:
        out = cast(values, dst)
    assert out.dtype == dst
    got = out.reshape(-1).tolist()
    for x, g, e in zip(source, got, expected, strict=True):
        assert _same(g, e), (x, g, e)


def _via_helper(values, dst):
    check_cast(values, dst)
    with np.errstate(all="ignore"):
        return values.astype(dst)


def _via_pad_sequences(values, dst):
    return sp.pad_sequences([values], dtype=dst)[0]


# --------------------------------------------------------------------------- strategies

big_ints = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**53 + 1, 2**60 + 1, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 1, 2**64,
                     -(2**63), -(2**63) - 1, 2**70, 2**1030, 65504, 65505, 65520, 2**24 + 1]),
)
py_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
                      st.sampled_from([-0.0, 5e-324, 3.4028235e38, 3.4028236e38, 65519.99,
                                       65520.0, 2.0**63, -(2.0**63), 2.0**64, 0.5]))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_numpy_arrays_of_every_dtype_pair(data):
    src = data.draw(st.sampled_from(NUMERIC), label="src")
    dst = data.draw(st.sampled_from(NUMERIC), label="dst")
    values = data.draw(hnp.arrays(src, st.integers(1, 6),
                                  elements=hnp.from_dtype(src, allow_subnormal=True)),
                       label="values")
    source = values.tolist()
    source = [src.type(x) for x in source]  # numpy scalars: floats keep their float-ness
    for cast in (_via_helper, _via_pad_sequences):
        _check_against_reference(source, values, dst, cast)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_python_numbers_of_any_size_into_every_dtype(data):
    dst = data.draw(st.sampled_from(NUMERIC), label="dst")
    source = data.draw(st.lists(st.one_of(big_ints, py_floats, st.booleans()),
                                min_size=1, max_size=6), label="source")
    # Through as_ragged exactly as pad_sequences sees a list: ints never rounded to float64.
    values = as_ragged([source]).values
    ints = [x for x in source if isinstance(x, int) and not isinstance(x, bool)]
    if all(isinstance(x, (int, bool)) for x in source) or any(
        abs(i) >= 2**53 for i in ints
    ):
        exact = [_exact(v) for v in values.reshape(-1).tolist()]
        assert exact == [_exact(x) for x in source]  # normalisation changed nothing
    mixed = any(isinstance(x, float) for x in source)  # float data, as numpy reads it
    _check_against_reference(source, values, dst, _via_pad_sequences, float_ints=mixed)


# --------------------------------------------------------------------------- the issue's inputs


@pytest.mark.parametrize(
    "seqs, dtype, expected",
    [
        ([[2**64 - 1, 1]], "uint64", [[2**64 - 1, 1]]),
        ([[0, 2**63 + 1]], "uint64", [[0, 2**63 + 1]]),
        ([[2**63, 1]], "uint64", [[2**63, 1]]),
        ([[2**70]], "float64", [[float(2**70)]]),
        ([[-0.0, 1.0]], "float32", [[-0.0, 1.0]]),
        ([[-0.0, 1.5]], "float64", [[-0.0, 1.5]]),
    ],
)
def test_issue_inputs_kept_exactly(seqs, dtype, expected):
    got = sp.pad_sequences(seqs, dtype=dtype)
    assert got.tolist() == expected
    assert [math.copysign(1, v) for v in got.reshape(-1).tolist()] == [
        math.copysign(1, v) for row in expected for v in row
    ]


@pytest.mark.parametrize(
    "seqs, dtype, needles",
    [
        ([[2**63, -1]], "int64", ["9223372036854775808", "sequences[0][0]", "range"]),
        ([np.array([1, 2**60 + 1])], "float64", ["1152921504606846977", "sequences[0][1]",
                                                  "digits"]),
        ([[2**60 + 1]], "float64", ["1152921504606846977", "digits"]),
        ([[1, 2**64]], "uint64", ["18446744073709551616", "sequences[0][1]", "object"]),
        ([[3], [1, 70000]], "float16", ["70000", "sequences[1][1]", "overflows"]),
        ([np.array([1.0, 1e39])], "float32", ["1e+39", "sequences[0][1]", "overflows"]),
        ([np.array([[1.0, 2.0], [3.0, np.nan]])], "int32", ["nan", "sequences[0][1][1]",
                                                            "NaN"]),
    ],
)
def test_issue_inputs_refused_with_value_position_and_fix(seqs, dtype, needles):
    with pytest.raises(ValueError) as info:
        sp.pad_sequences(seqs, dtype=dtype)
    message = str(info.value)
    assert message.startswith(f"Argument `dtype`={np.dtype(dtype).name!r}")
    for needle in needles:
        assert needle in message
    assert "\n- " in message  # says the fix


def test_numpy_string_dtypes_refuse_what_they_would_strip_or_cut():
    with pytest.raises(ValueError, match=r"`dtype`='U2'.*'a\\x00' at sequences\[0\]\[0\]"):
        sp.pad_sequences([["a\x00", "b"]], dtype="U2", value="")
    with pytest.raises(ValueError, match=r"'abc' at sequences\[0\]\[1\].*\n- Pass `dtype=object`"):
        sp.pad_sequences([["a", "abc"]], dtype="U2", value="")
    assert sp.pad_sequences([["a", "bc"]], dtype="U2", value="", maxlen=3).tolist() == [
        ["", "a", "bc"]]


@pytest.mark.parametrize("dtype, value, seqs", [
    (str, "", [["abc", "d"], ["xyzw"]]),
    ("U", "-", [["abc", "d"]]),
    (bytes, b"", [[b"abc", b"d"]]),
])
def test_unsized_string_dtype_is_as_wide_as_the_longest_string(dtype, value, seqs):
    got = sp.pad_sequences(seqs, dtype=dtype, value=value, maxlen=3, padding="post")
    for row, seq in zip(got.tolist(), seqs, strict=True):
        assert row[:len(seq)] == seq[:3]
    with pytest.raises(ValueError, match=r"sequences\[0\]\[0\].*\n- Pass `dtype=object`"):
        sp.pad_sequences([["a\x00"]], dtype=dtype if dtype is not bytes else str, value="")


def test_truncated_positions_point_into_the_callers_sequence():
    with pytest.raises(ValueError, match=r"sequences\[1\]\[3\]"):
        sp.pad_sequences([[1], [9, 9, 9, 0.5]], maxlen=2, truncating="pre")


def test_object_strings_kept_byte_exact():
    got = sp.pad_sequences([["a\x00", "b"], ["c\x00\x00"]], dtype=object, value="")
    assert got.tolist() == [["a\x00", "b"], ["", "c\x00\x00"]]
    got = sp.pad_sequences([[b"x\x00"]], dtype=object, maxlen=2, padding="post", value=b"")
    assert got.tolist() == [[b"x\x00", b""]]


@pytest.mark.parametrize("padding", ["pre", "post"])
def test_all_empty_input_keeps_step_shape(padding):
    empty = [np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)]
    assert sp.pad_sequences(empty, dtype="float32", padding=padding).shape == (2, 0, 3)
    assert sp.pad_sequences(empty, maxlen=4, dtype="float32").shape == (2, 4, 3)
    assert sp.pad_sequences(np.zeros((2, 0, 5)), dtype="float32").shape == (2, 0, 5)


def test_negative_zero_pad_value_is_kept():
    got = sp.pad_sequences([[1.0]], maxlen=2, dtype="float32", value=-0.0)
    assert math.copysign(1, got[0, 0]) == -1


@pytest.mark.parametrize("value", [2**63, 2**64, -1.5, float("nan")])
def test_pad_value_checked_exactly(value):
    with pytest.raises(ValueError, match="`value`="):
        sp.pad_sequences([[1]], maxlen=2, dtype="int64", value=value)


def test_exotic_exact_numbers():
    assert find_loss(np.array([Fraction(1, 2)], dtype=object), "int8") is not None
    assert find_loss(np.array([Decimal("3")], dtype=object), "int8") is None
    assert find_loss(np.array([Decimal("1.0000000000000000001")], dtype=object),
                     "int64") is not None


# --------------------------------------------------------------------------- other cast paths


def test_from_dataframe_never_rounds_big_ints_through_a_common_float_dtype():
    import pandas as pd

    df = pd.DataFrame({"id": [0, 0], "i": [1, 2**60 + 1], "f": [0.5, 1.5]})
    with pytest.raises(ValueError, match=r"1152921504606846977 at column 'i', row 1"):
        sp.from_dataframe(df, id="id", features=["i", "f"])
    df = pd.DataFrame({"id": [0, 0], "i": [1, 300]})
    with pytest.raises(ValueError, match=r"`dtype`='int8'.*300 at column 'i', row 1"):
        sp.from_dataframe(df, id="id", features="i", dtype="int8")
    seqs, _ = sp.from_dataframe(df, id="id", features="i", dtype="int16")
    assert seqs[0].tolist() == [1, 300]


def test_parquet_reader_casts_exactly(tmp_path):
    import pandas as pd

    from seqprep.running._distributed import iter_parquet_sequences

    path = tmp_path / "s.parquet"
    pd.DataFrame({"id": [1, 1], "x": np.array([1, 2**60 + 1], dtype=np.int64)}).to_parquet(path)
    with pytest.raises(ValueError, match=r"1152921504606846977 at position 1"):
        list(iter_parquet_sequences(path, id="id", features="x", dtype="float64"))
    chunks = list(iter_parquet_sequences(path, id="id", features="x", dtype="int64"))
    assert chunks[0].values.tolist() == [1, 2**60 + 1]


def test_dataset_labels_cast_exactly():
    from seqprep.inputs._stage_rules import cast_labels as _cast_labels

    assert _cast_labels(np.array([0.1, 2.0]), "y").dtype == np.float32
    with pytest.raises(ValueError, match=r"Argument `y` cannot become float32.*1e\+39 at y\[1\]"):
        _cast_labels(np.array([0.0, 1e39]), "y")


def test_dataset_refuses_to_guess_a_dtype_for_huge_ints():
    from seqprep.inputs._stage_rules import resolve_dtype as _resolve_dtype

    with pytest.raises(ValueError, match=r"`dtype` is None.*\n- If rounding is fine"):
        _resolve_dtype(None, np.dtype(object))


def test_mixed_int64_and_uint64_arrays_are_not_rounded_by_numpy_promotion():
    # np.concatenate would promote int64 + uint64 to float64 and round 2**60 + 1.
    seqs = [np.array([2**60 + 1], dtype=np.int64), np.array([1, 2], dtype=np.uint64)]
    assert sp.pad_sequences(seqs, dtype="int64").tolist() == [[0, 2**60 + 1], [1, 2]]
    with pytest.raises(ValueError, match=r"1152921504606846977 at sequences\[0\]\[0\]"):
        sp.pad_sequences(seqs, dtype="float64")
    big_floats = [np.array([1e300, -1e20]), np.array([np.inf])]
    values = as_ragged(big_floats).values
    assert values.dtype == np.float64 and values.tolist() == [1e300, -1e20, np.inf]


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_strings_and_bytes_survive_object_padding_byte_exact(data):
    text = st.text(alphabet=st.sampled_from(["a", "\x00", "é", " ", "\U0001f600"]), max_size=4)
    element = data.draw(st.sampled_from([text, st.binary(max_size=4)]), label="kind")
    seqs = data.draw(st.lists(st.lists(element, max_size=4), min_size=1, max_size=4),
                     label="seqs")
    maxlen = data.draw(st.one_of(st.none(), st.integers(1, 5)), label="maxlen")
    padding = data.draw(st.sampled_from(["pre", "post"]), label="padding")
    got = sp.pad_sequences(seqs, dtype=object, maxlen=maxlen, padding=padding,
                           truncating=padding, value=None)
    width = got.shape[1]
    for row, seq in zip(got.tolist(), seqs, strict=True):
        kept = seq[-width:] if padding == "pre" else seq[:width]
        real = row[width - len(kept):] if padding == "pre" else row[:len(kept)]
        assert real == kept  # == on str/bytes: every character, trailing NULs included
        assert all(type(a) is type(b) for a, b in zip(real, kept, strict=True))
