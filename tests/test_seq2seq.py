"""Encoder–decoder data helpers (numpy): teacher forcing and edit-distance error rates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqprep as sp
from seqprep.inputs._seq2seq import edit_distance, error_rates, teacher_forcing

START, END = 50, 51
token_seqs = st.lists(st.lists(st.integers(1, 49), max_size=12), max_size=20)


@settings(max_examples=60, deadline=None)
@given(seqs=token_seqs, as_arrays=st.booleans())
def test_teacher_forcing_shifts_by_one_and_adds_start_and_end(seqs, as_arrays):
    targets = [np.array(s, dtype=np.int32) for s in seqs] if as_arrays else seqs
    before = [np.array(t, copy=True) for t in targets]
    dec_in, dec_out = teacher_forcing(targets, start=START, end=END)
    assert len(dec_in) == len(dec_out) == len(seqs)
    for s, i, o in zip(seqs, dec_in, dec_out, strict=True):
        assert i.tolist() == [START, *s]
        assert o.tolist() == [*s, END]
        # The shift: what the decoder reads at step t + 1 is what it should emit at step t.
        assert i[1:].tolist() == o[:-1].tolist()
    for t, b in zip(targets, before, strict=True):  # the caller's sequences are untouched
        assert np.array_equal(np.asarray(t), b)


def test_teacher_forcing_returns_fresh_arrays_and_keeps_the_dtype():
    target = np.array([3, 4], dtype=np.int16)
    dec_in, dec_out = teacher_forcing([target], start=1, end=2)
    dec_in[0][:] = 0
    dec_out[0][:] = 0
    assert target.tolist() == [3, 4]
    assert dec_in[0].dtype == np.int16
    # start/end that do not fit the dtype widen it instead of wrapping around
    wide_in, _ = teacher_forcing([np.array([3, 4], dtype=np.uint8)], start=300, end=2)
    assert wide_in[0].tolist() == [300, 3, 4] and wide_in[0].dtype == np.int64


def test_teacher_forcing_edge_cases():
    assert teacher_forcing([], start=1, end=2) == ([], [])
    dec_in, dec_out = teacher_forcing([[], [7]], start=1, end=2)
    assert [s.tolist() for s in dec_in] == [[1], [1, 7]]
    assert [s.tolist() for s in dec_out] == [[2], [7, 2]]
    # pad=None: a model without masking may use 0 as a real token
    dec_in, _ = teacher_forcing([[0, 5]], start=1, end=2, pad=None)
    assert dec_in[0].tolist() == [1, 0, 5]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"start": 3, "end": 3}, ValueError, ["`start` and `end` must be different", "start=3"]),
        ({"start": 0, "end": 9}, ValueError, ["`start` must differ from the padding", "pad"]),
        ({"start": 8, "end": 0}, ValueError, ["`end` must differ from the padding"]),
        ({"start": 5, "end": 9}, ValueError,
         ["already contains the `start` token 5", "sequence 1 at step 0"]),
        ({"start": 8, "end": 6}, ValueError, ["already contains the `end` token 6"]),
        ({"start": 1.0, "end": 9}, TypeError, ["`start` must be an integer", "1.0"]),
        ({"start": True, "end": 9}, TypeError, ["`start` must be an integer"]),
        ({"start": -1, "end": 9}, ValueError, ["`start` must be a non-negative"]),
        ({"start": 8, "end": 9, "pad": 4}, ValueError,
         ["contains the `pad` token 4", "masked"]),
    ],
)
def test_teacher_forcing_errors_name_the_argument(kwargs, error, words):
    with pytest.raises(error) as info:
        teacher_forcing([[4, 6], [5]], **kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("targets", "error", "word"),
    [
        ([[1.5, 2.0]], TypeError, "integer token ids"),
        ([np.ones((2, 3), dtype=np.int32)], ValueError, "1-D sequences"),
    ],
)
def test_teacher_forcing_refuses_non_token_targets(targets, error, word):
    with pytest.raises(error, match=word):
        teacher_forcing(targets, start=8, end=9)


def test_teacher_forcing_is_exported():
    assert sp.teacher_forcing is teacher_forcing
    assert sp.edit_distance is edit_distance and sp.error_rates is error_rates


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("intention", "execution", 5),
        ("", "abc", 3),
        ("abc", "", 3),
        ("", "", 0),
        ("abc", "abc", 0),
        ("ab", "ba", 2),
        ([1, 2, 3], [3, 2, 1], 2),
        (np.array([7, 8, 9, 10]), np.array([8, 9]), 2),
        (["K", "AE", "T"], ["K", "AH", "T", "S"], 2),
    ],
)
def test_edit_distance_table(a, b, distance):
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def _brute_force_distance(a, b):
    """Shortest edit script by breadth-first search over strings (tiny inputs only)."""
    alphabet = set(a) | set(b)
    frontier, seen, steps = {tuple(a)}, {tuple(a)}, 0
    while tuple(b) not in frontier:
        steps += 1
        following = set()
        for s in frontier:
            for i in range(len(s) + 1):
                for c in alphabet:
                    following.add(s[:i] + (c,) + s[i:])          # insert
                if i < len(s):
                    following.add(s[:i] + s[i + 1:])             # delete
                    for c in alphabet:
                        following.add(s[:i] + (c,) + s[i + 1:])  # substitute
        frontier = following - seen
        seen |= frontier
    return steps


@settings(max_examples=40, deadline=None)
@given(a=st.lists(st.integers(0, 2), max_size=4), b=st.lists(st.integers(0, 2), max_size=4))
def test_edit_distance_is_the_shortest_edit_script(a, b):
    assert edit_distance(a, b) == _brute_force_distance(a, b)


@settings(max_examples=60, deadline=None)
@given(a=st.lists(st.integers(0, 3), max_size=8), b=st.lists(st.integers(0, 3), max_size=8),
       c=st.lists(st.integers(0, 3), max_size=8))
def test_edit_distance_is_a_metric(a, b, c):
    d = edit_distance(a, b)
    assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))
    assert (d == 0) == (a == b)
    assert d <= edit_distance(a, c) + edit_distance(c, b)


def test_error_rates_exact_values():
    refs = [[1, 2, 3, 4], [5, 6], [7]]
    hyps = [[1, 2, 4], [5, 6], [8, 9]]  # 1 deletion; exact; 1 substitution + 1 insertion
    rates = error_rates(refs, hyps)
    assert rates == {"token_error_rate": 3 / 7, "sequence_error_rate": 2 / 3, "edits": 3,
                     "reference_tokens": 7, "n": 3}
    assert all(type(rates[k]) is float for k in ("token_error_rate", "sequence_error_rate"))


@pytest.mark.parametrize(
    ("refs", "hyps", "word"),
    [([[1]], [[1], [2]], "same count"), ([[]], [[1]], "holds no token")],
)
def test_error_rates_errors(refs, hyps, word):
    with pytest.raises(ValueError, match=word):
        error_rates(refs, hyps)


def test_error_rates_on_every_pair_of_a_small_alphabet():
    words = ["".join(p) for n in range(3) for p in itertools.product("ab", repeat=n)]
    pairs = list(itertools.product(words, words))
    rates = error_rates([a for a, _ in pairs if a], [b for a, b in pairs if a])
    expected = sum(_brute_force_distance(a, b) for a, b in pairs if a)
    assert rates["edits"] == expected


def test_seq2seq_helpers_and_cmudict_need_neither_tensorflow_nor_keras():
    """seqprep.inputs._seq2seq and the CMUdict loader are numpy only: they run with both blocked."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent("""
        import sys

        class _Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
                    raise ImportError(f"{name} is blocked in this test")
                return None

        sys.meta_path.insert(0, _Blocker())
        import seqprep as sp
        from seqprep.datasets import load_cmudict

        data = load_cmudict("test", max_words=20)
        dec_in, dec_out = sp.teacher_forcing(data.phonemes, start=40, end=41)
        rates = sp.error_rates(data.phonemes, [o[:-1] for o in dec_out])
        assert rates["token_error_rate"] == 0.0, rates
        assert not any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules)
        print("ok")
    """)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
