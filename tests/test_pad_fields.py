"""pad_fields: pad_sequences field by field, each field to its own width, per-field options."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import seqprep as sp

SIDES = ["pre", "post"]
DEFAULTS = {"padding": "post", "truncating": "post", "value": 0, "dtype": None, "maxlen": None,
            "pad_to_multiple_of": None}


@st.composite
def fields_and_options(draw):
    """A dict or tuple of 1..3 int fields over the same n examples, and options each given
    for all fields, per field as a (partial) dict, or left to the default."""
    as_dict = draw(st.booleans(), label="as_dict")
    # a tuple of empty lists reads as one collection (the input stage's rule): dicts only
    n = draw(st.integers(0 if as_dict else 1, 6), label="n")
    k = draw(st.integers(1, 3), label="fields")
    keys = [f"f{i}" for i in range(k)] if as_dict else list(range(k))
    fields = []
    for _ in range(k):
        lengths = draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
        seqs = [draw(st.lists(st.integers(-100, 100), min_size=m, max_size=m))
                for m in lengths]
        fields.append(seqs if draw(st.booleans()) else [np.array(s, np.int64) for s in seqs])
    choices = {"padding": st.sampled_from(SIDES), "truncating": st.sampled_from(SIDES),
               "value": st.integers(-5, 5), "dtype": st.sampled_from([None, "int32", "float32"]),
               "maxlen": st.one_of(st.none(), st.integers(1, 7)),
               "pad_to_multiple_of": st.one_of(st.none(), st.integers(1, 4))}
    options, resolved = {}, {key: dict(DEFAULTS) for key in keys}
    for name, strategy in choices.items():
        how = draw(st.sampled_from(["default", "all", "per field"]), label=name)
        if how == "all":
            options[name] = draw(strategy)
            for key in keys:
                resolved[key][name] = options[name]
        elif how == "per field":
            chosen = draw(st.lists(st.sampled_from(keys), unique=True))
            options[name] = {key: draw(strategy) for key in chosen}
            for key in chosen:
                resolved[key][name] = options[name][key]
    x = dict(zip(keys, fields, strict=True)) if as_dict else tuple(fields)
    return x, keys, options, resolved


@given(fields_and_options())
def test_pad_fields_equals_pad_sequences_field_by_field(case):
    x, keys, options, resolved = case
    padded, lengths = sp.pad_fields(x, **options, return_lengths=True)
    assert type(padded) is type(x) and type(lengths) is type(x)
    for key in keys:
        field = x[key]
        want = dict(resolved[key])
        if want["dtype"] is None:  # integer data keep their dtype (int64 here)
            has_values = sum(len(s) for s in field) > 0
            # no value at all: the dtype numpy gives the empty field (float narrowed to 32)
            want["dtype"] = "int64" if has_values else padded[key].dtype
            assert has_values or padded[key].dtype in (np.int64, np.float32)
        expected = sp.pad_sequences(field, **want)
        assert padded[key].dtype == expected.dtype
        np.testing.assert_array_equal(padded[key], expected)
        # the lengths are the real steps kept in each row
        full = sp.sequence_lengths(field)
        cap = resolved[key]["maxlen"]
        assert lengths[key].tolist() == [min(m, cap) if cap else m for m in full.tolist()]
        assert lengths[key].dtype == np.int64


def test_pad_fields_exact_table_each_field_to_its_own_width():
    src = [np.array([1, 2, 3]), np.array([4])]
    dec = [np.array([[0.5], [1.5]]), np.array([[2.5]])]  # float64 steps of shape (1,)
    padded, lengths = sp.pad_fields(
        {"encoder": src, "decoder": dec},
        padding={"encoder": "pre"}, value={"decoder": -1.0}, return_lengths=True)
    assert list(padded) == ["encoder", "decoder"]
    assert padded["encoder"].tolist() == [[1, 2, 3], [0, 0, 4]]
    assert padded["encoder"].dtype == np.int64
    assert padded["decoder"].dtype == np.float32  # floats narrowed as in bucketed_dataset
    assert padded["decoder"].tolist() == [[[0.5], [1.5]], [[2.5], [-1.0]]]
    assert {k: v.tolist() for k, v in lengths.items()} == {"encoder": [3, 1],
                                                            "decoder": [2, 1]}
    # the callers' arrays are untouched
    assert src[1].tolist() == [4] and dec[0].tolist() == [[0.5], [1.5]]


def test_pad_fields_truncates_and_rounds_per_field():
    x = ([[1, 2, 3, 4], [5]], [[6, 7], [8, 9, 10]])
    padded, lengths = sp.pad_fields(x, maxlen={0: 2}, truncating="pre",
                                    pad_to_multiple_of={1: 4}, dtype="int32",
                                    return_lengths=True)
    assert padded[0].tolist() == [[3, 4], [5, 0]]
    assert padded[1].tolist() == [[6, 7, 0, 0], [8, 9, 10, 0]]
    assert padded[0].dtype == padded[1].dtype == np.int32
    assert [v.tolist() for v in lengths] == [[2, 1], [2, 3]]


def test_pad_fields_reads_a_generator_field_once():
    padded = sp.pad_fields({"a": (s for s in [[1], [2, 3]]), "b": [[4], [5]]})
    assert padded["a"].tolist() == [[1, 0], [2, 3]]


@pytest.mark.parametrize(
    ("x", "kwargs", "error", "words"),
    [
        ({"a": [[1]], "b": [[1], [2]]}, {}, ValueError, ["x['a']", "x['b']", "same examples"]),
        ({"a": [[1]]}, {"value": {"c": 1}}, ValueError, ["`value`", "'c'", "['a']"]),
        ([[1], [2]], {}, TypeError, ["`x`", "pad_sequences"]),
        ({}, {}, ValueError, ["`x`", "empty dict"]),
        ({1: [[1]]}, {}, TypeError, ["string keys"]),
        ({"a": [[1.5]]}, {"dtype": "int32"}, ValueError, ["x['a']", "`dtype`", "float32"]),
        ({"a": [[1]]}, {"padding": {"a": "middle"}}, ValueError, ["x['a']", "`padding`"]),
        ({"a": [[1]]}, {"maxlen": 0}, ValueError, ["x['a']", "`maxlen`"]),
        ({"a": [[1]]}, {"return_lengths": 1}, TypeError, ["`return_lengths`"]),
    ],
)
def test_pad_fields_bad_input(x, kwargs, error, words):
    with pytest.raises(error) as info:
        sp.pad_fields(x, **kwargs)
    for word in words:
        assert word in str(info.value)
