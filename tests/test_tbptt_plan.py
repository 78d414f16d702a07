"""Tests for the TBPTT window planner (numpy only: seqprep.planning._windows, sp.plan_tbptt)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _strategies import tbptt_plans
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprep.planning._windows import TBPTTPlan, plan_tbptt


def row_stream(plan: TBPTTPlan, r: int) -> list[tuple[int, int]]:
    """(sequence, step) of every real position of row ``r``, in time order."""
    seq = plan.source_sequence[:, r].reshape(-1)
    step = plan.source_step[:, r].reshape(-1)
    real = seq >= 0
    return list(zip(seq[real].tolist(), step[real].tolist(), strict=True))


@settings(max_examples=200, deadline=None)
@given(tbptt_plans())
def test_every_step_exactly_once_in_order(case):
    lengths, plan = case
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    index = plan.flat_index(offsets)
    real = index[index >= 0]
    np.testing.assert_array_equal(np.sort(real), np.arange(lengths.sum()))
    for r in range(plan.batch_size):
        stream = row_stream(plan, r)
        here = sorted({s for s, _ in stream}, key=lambda s: plan.first_window[s])
        assert stream == [(s, t) for s in here for t in range(lengths[s])]
        assert all(plan.row[s] == r for s in here)


@settings(max_examples=200, deadline=None)
@given(tbptt_plans())
def test_resets_exactly_where_a_sequence_starts(case):
    lengths, plan = case
    previous = np.vstack([np.full((1, plan.batch_size), -1), plan.sequence[:-1]])
    starts_new = (plan.sequence >= 0) & (plan.sequence != previous)
    np.testing.assert_array_equal(plan.resets, starts_new)
    # every non-empty sequence is reset exactly once, at offset 0 of its first window
    placed = np.flatnonzero(lengths > 0)
    assert plan.resets.sum() == placed.size
    assert np.all(plan.resets[plan.first_window[placed], plan.row[placed]])
    assert np.all(plan.source_step[plan.first_window[placed], plan.row[placed], 0] == 0)


@settings(max_examples=200, deadline=None)
@given(tbptt_plans())
def test_last_step_positions(case):
    lengths, plan = case
    placed = np.flatnonzero(lengths > 0)
    w, r, o = plan.last_window[placed], plan.last_row[placed], plan.last_offset[placed]
    np.testing.assert_array_equal(plan.source_sequence[w, r, o], placed)
    np.testing.assert_array_equal(plan.source_step[w, r, o], lengths[placed] - 1)
    # nothing real follows the last step inside its window
    after = np.arange(plan.window) > o[:, None]
    assert not np.any(plan.mask[w, r] & after)
    np.testing.assert_array_equal(plan.ends[w, r], True)
    assert plan.ends.sum() == placed.size
    empty = lengths == 0
    assert np.all(plan.last_window[empty] == -1) and np.all(plan.row[empty] == -1)


@settings(max_examples=200, deadline=None)
@given(tbptt_plans())
def test_padding_is_post_and_rows_are_contiguous(case):
    lengths, plan = case
    mask = plan.mask
    # within a cell real steps come first (post-padding, cuDNN's rule)
    assert np.all(mask[..., 1:] <= mask[..., :-1])
    # a row never has an idle cell before a busy one
    busy = ~plan.idle
    assert np.all(busy[1:] <= busy[:-1])
    # the plan is as short as it can be for the rows it made, and bounded by list scheduling
    spans = -(-lengths // plan.window)
    assert plan.n_windows == (busy.sum(axis=0).max() if plan.n_windows else 0)
    lower = max(int(spans.max()), math.ceil(spans.sum() / plan.batch_size))
    assert lower <= plan.n_windows <= spans.sum() / plan.batch_size + spans.max()
    assert plan.real_steps == lengths.sum() == mask.sum()
    if plan.total_steps:
        assert plan.padding_fraction == pytest.approx(1 - lengths.sum() / plan.total_steps)


@settings(max_examples=100, deadline=None)
@given(tbptt_plans(), st.integers(0, 5))
def test_deterministic_and_seeded(case, epoch):
    lengths, plan = case
    again = plan_tbptt(lengths, window=plan.window, batch_size=plan.batch_size, order="shuffle",
                       seed=7, epoch=epoch)
    same = plan_tbptt(lengths, window=plan.window, batch_size=plan.batch_size, order="shuffle",
                      seed=7, epoch=epoch)
    np.testing.assert_array_equal(again.sequence, same.sequence)


def test_longest_first_is_greedy_onto_the_shortest_row():
    plan = plan_tbptt([1, 9, 4, 4, 2], window=1, batch_size=2)
    # 9 -> row 0; 4 -> row 1; 4 -> row 1 (4 < 9); 2 -> row 1 (8 < 9); 1 -> row 0 (9 < 10)
    assert plan.row.tolist() == [0, 0, 1, 1, 1]
    assert plan.first_window.tolist() == [9, 0, 0, 4, 8]
    assert plan.n_windows == 10
    tie = plan_tbptt([2, 2], window=1, batch_size=2, order="input")
    assert tie.row.tolist() == [0, 1]  # equal loads: the lowest row first


def test_input_order_places_round_robin_for_equal_lengths():
    plan = plan_tbptt([3, 3, 3, 3, 3], window=3, batch_size=2, order="input")
    assert plan.row.tolist() == [0, 1, 0, 1, 0]
    assert plan.first_window.tolist() == [0, 0, 1, 1, 2]
    assert plan.idle.tolist() == [[False, False], [False, False], [False, True]]


def test_shuffle_changes_with_epoch_and_seed():
    lengths = np.arange(1, 40)
    plans_ = [plan_tbptt(lengths, window=4, batch_size=3, order="shuffle", epoch=e)
              for e in range(3)]
    assert not np.array_equal(plans_[0].row, plans_[1].row)
    other = plan_tbptt(lengths, window=4, batch_size=3, order="shuffle", seed=1)
    assert not np.array_equal(plans_[0].row, other.row)


def test_alignment_padding_is_at_most_window_minus_one_per_sequence():
    lengths = np.array([10, 11, 12, 13, 1])
    plan = plan_tbptt(lengths, window=4, batch_size=5)
    assert plan.n_windows == 4
    alignment = (plan.count < plan.window) & ~plan.idle
    assert alignment.sum() == 4  # the 12-step sequence fills its windows exactly
    assert plan.padding_fraction == pytest.approx(1 - 47 / 80)


def test_flat_index_for_one_window_and_bad_offsets():
    plan = plan_tbptt([3, 1], window=2, batch_size=2)
    assert plan.flat_index([0, 3, 4], window=1).tolist() == [[2, -1], [-1, -1]]
    with pytest.raises(ValueError, match="`offsets` does not match"):
        plan.flat_index([0, 2, 4])


def test_inputs_not_mutated_and_arrays_read_only():
    lengths = np.array([5, 2, 7])
    kept = lengths.copy()
    plan = plan_tbptt(lengths, window=3, batch_size=2)
    np.testing.assert_array_equal(lengths, kept)
    lengths[0] = 100
    assert plan.lengths[0] == 5
    with pytest.raises(ValueError):
        plan.sequence[0, 0] = 3
    assert "n_windows=3" in repr(plan)


@pytest.mark.parametrize("dense", [False, True])
def test_every_array_of_every_tbptt_plan_is_read_only(dense):
    from dataclasses import fields

    plan = plan_tbptt([5, 2, 7, 1, 4], window=3, batch_size=2, dense=dense)
    plans = [plan, plan.as_calls()] if dense else [plan]
    for p in plans:
        arrays = [getattr(p, f.name) for f in fields(p)]
        arrays = [a for a in arrays if isinstance(a, np.ndarray)]
        assert len(arrays) >= 3
        assert all(not a.flags.writeable for a in arrays), type(p).__name__


def test_all_empty_sequences_make_an_empty_plan():
    plan = plan_tbptt([0, 0], window=3, batch_size=2)
    assert plan.n_windows == 0 and plan.padding_fraction == 0.0
    assert plan.mask.shape == (0, 2, 3)


def test_large_plan_is_consistent():
    lengths = np.random.default_rng(0).lognormal(6, 1, size=20_000).astype(np.int64) + 1
    plan = plan_tbptt(lengths, window=64, batch_size=128)
    assert plan.ends.sum() == lengths.size
    assert plan.count.sum() == lengths.sum()


BAD = [
    ({"window": 0}, ValueError, "`window` must be at least 1"),
    ({"window": 2.0}, TypeError, "`window` must be an integer"),
    ({"batch_size": 0}, ValueError, "`batch_size` must be at least 1"),
    ({"order": "random"}, ValueError, "`order` must be 'longest_first' or 'shuffle' or"),
    ({"lengths": []}, ValueError, "`lengths` must not be empty"),
    ({"lengths": [3, -1]}, ValueError, "non-negative"),
    ({"lengths": [3.0, 1.0]}, TypeError, "must hold integers"),
    ({"lengths": [[1, 2]]}, ValueError, "1-D"),
    ({"epoch": -1}, ValueError, "`epoch` must be at least 0"),
]


@pytest.mark.parametrize("kwargs,error,match", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_input(kwargs, error, match):
    args = {"lengths": [3, 2], "window": 2, "batch_size": 2, **kwargs}
    with pytest.raises(error, match=match):
        plan_tbptt(**args)
