"""padding_report: exact values, pad_lengths, errors."""

from __future__ import annotations

import numpy as np
import pytest

from seqprep.planning import padding_report


def test_exact_values():
    r = padding_report([1, 2, 3, 4, 10], [[0, 1], [2, 3, 4]])
    assert r == {
        "padding_fraction": pytest.approx(1 - 20 / 34),
        "n_batches": 2,
        "n_examples": 5,
        "n_shapes": 2,
        "n_lengths": 2,
        "max_batch_tokens": 30,
        "real_tokens": 20,
        "padded_tokens": 34,
        "steps_cost": 12,
    }


def test_pad_lengths_variant_pads_to_given_shapes():
    r = padding_report([1, 2, 3, 4], [[0, 1], [2, 3]], pad_lengths=[5, 5])
    assert r["padded_tokens"] == 20 and r["n_lengths"] == 1 and r["n_shapes"] == 1
    assert r["steps_cost"] == 10


def test_empty_batches_and_zero_lengths():
    assert padding_report([0, 0], [[0, 1]])["padding_fraction"] == 0.0
    r = padding_report([1, 2], [])
    assert r["n_batches"] == 0 and r["padded_tokens"] == 0 and r["max_batch_tokens"] == 0


def test_inputs_not_mutated():
    lengths = np.array([3, 1, 2])
    batch = np.array([2, 0])
    padding_report(lengths, [batch])
    assert lengths.tolist() == [3, 1, 2] and batch.tolist() == [2, 0]


@pytest.mark.parametrize(
    ("lengths", "batches", "kwargs", "match"),
    [
        ([1, 2], [[0, 2]], {}, "`batches` holds indices outside"),
        ([1, 2], [[-1]], {}, "`batches` holds indices outside"),
        ([1, 2], [[0, 1]], {"pad_lengths": [1]}, "`pad_lengths` is shorter"),
        ([1, 2], [[0, 1]], {"pad_lengths": [2, 2]}, "`pad_lengths` must have one entry"),
        ([-1], [[0]], {}, "`lengths` must hold non-negative"),
    ],
)
def test_bad_input(lengths, batches, kwargs, match):
    with pytest.raises(ValueError, match=match):
        padding_report(lengths, batches, **kwargs)


def test_printed_report_is_a_labelled_table_and_dict_access_still_works():
    import json

    from seqprep import PaddingReport

    r = padding_report([1, 2, 3, 4, 10], [[0, 1], [2, 3, 4]])
    assert isinstance(r, dict) and isinstance(r, PaddingReport)
    assert r["n_batches"] == 2 and json.loads(json.dumps(r)) == dict(r)
    lines = str(r).splitlines()
    assert lines[0] == "padding report"
    assert len(lines) == 1 + len(r)  # one line per entry, nothing dropped
    rows = dict(line.strip().split("  ", 1) for line in lines[1:])
    assert rows["padding"].strip() == "41.2% (14 of 34 padded tokens)"
    assert rows["shapes (rows, width)"].strip() == "2"
    assert rows["RNN steps per epoch"].strip() == "12"
    assert "{" not in str(r)  # not the raw dict
    assert repr(r).startswith("{")  # repr stays the dict's, for debugging and doctests


def test_printed_report_shows_keys_added_by_callers():
    from seqprep import BucketSampler

    r = BucketSampler([1, 2, 3, 4], boundaries=[3], batch_size=2).report()
    text = str(r)
    for key in ("num_dropped", "num_truncated", "num_buckets"):
        assert key in text


def test_printed_report_in_ipython_uses_the_table():
    class Printer:
        def __init__(self):
            self.parts = []

        def text(self, s):
            self.parts.append(s)

    r = padding_report([1, 2], [[0, 1]])
    p = Printer()
    r._repr_pretty_(p, cycle=False)
    assert p.parts == [str(r)]
