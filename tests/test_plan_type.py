"""The plan type itself (issue 12): ``BatchPlan`` and ``PackedPlan``.

Widths under every ``pad_to`` are checked against a brute-force Python reference; the flat form
against the batches; the arrays for read-only-ness; pickling, equality and the sequence view.
Numpy only.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprep import BatchPlan, BucketSampler, PackedPlan, PackSampler
from seqprep.planning._per_length import plan_per_length

# --------------------------------------------------------------------------- drawing plans


@st.composite
def plans(draw):
    """``(lengths, batches, buckets, pad_lengths)``: any partition of a subset of indices."""
    n = draw(st.integers(0, 30), label="n")
    lengths = draw(st.lists(st.integers(0, 40), min_size=n, max_size=n), label="lengths")
    order = draw(st.permutations(range(n)), label="order")
    kept = draw(st.integers(0, n), label="kept")
    cuts = sorted(draw(st.lists(st.integers(0, kept), max_size=8), label="cuts"))
    bounds = [0, *cuts, kept]
    batches = [list(order[a:z]) for a, z in zip(bounds[:-1], bounds[1:], strict=True)]
    buckets = draw(st.lists(st.integers(0, 5), min_size=len(batches), max_size=len(batches)),
                   label="buckets")
    extra = draw(st.lists(st.integers(0, 9), min_size=len(batches), max_size=len(batches)),
                 label="extra")
    pads = [max((lengths[i] for i in b), default=0) + e for b, e in zip(batches, extra,
                                                                        strict=True)]
    return lengths, batches, buckets, pads


def _reference_widths(pad_to, lengths, batches, pads):
    """The rule, one batch at a time in plain Python."""
    if pad_to == "batch":
        return [max((lengths[i] for i in b), default=0) for b in batches]
    if pad_to == "bucket":
        return list(pads)
    if isinstance(pad_to, int):
        return [pad_to] * len(batches)
    return [min(w for w in pad_to if w >= p) for p in pads]


@settings(max_examples=60)
@given(drawn=plans(), data=st.data())
def test_widths_under_every_pad_to_match_the_reference(drawn, data):
    lengths, batches, buckets, pads = drawn
    plan = BatchPlan(3, batches, buckets, pads)
    longest = max(pads, default=0)
    grid = sorted(set(data.draw(st.lists(st.integers(1, 60), max_size=4), label="grid")))
    grid = [w for w in grid if w < longest] + [max(longest, 1)]
    for pad_to in ("batch", "bucket", data.draw(st.integers(1, 60), label="width"), grid):
        got = plan.widths(pad_to, np.array(lengths, np.int64))
        assert got.dtype == np.int64
        assert got.tolist() == _reference_widths(pad_to, lengths, batches, pads), pad_to


@settings(max_examples=60)
@given(drawn=plans())
def test_flat_form_is_the_batches_concatenated(drawn):
    lengths, batches, buckets, pads = drawn
    plan = BatchPlan(0, batches, buckets, pads, num_dropped=2)
    assert plan.rows.tolist() == [i for b in batches for i in b]
    assert plan.splits.tolist() == np.cumsum([0] + [len(b) for b in batches]).tolist()
    assert plan.sizes.tolist() == [len(b) for b in batches]
    assert [b.tolist() for b in plan.batches] == batches
    assert plan.groups.tolist() == buckets and plan.buckets is plan.groups
    again = BatchPlan.from_flat(plan.rows, plan.splits, groups=buckets, pad_lengths=pads,
                                epoch=0, num_dropped=2)
    assert again == plan


def test_sequence_behaviour():
    plan = BatchPlan(1, [[4, 1], [0], [2, 3]], [0, 1, 1], [5, 5, 9])
    assert len(plan) == 3
    assert [b.tolist() for b in plan] == [[4, 1], [0], [2, 3]]
    assert plan[0].tolist() == [4, 1] and plan[-1].tolist() == [2, 3]
    assert [b.tolist() for b in plan[1:]] == [[0], [2, 3]]
    assert np.array([0]) in plan and [9] not in plan
    assert plan.index([2, 3]) == 2 and plan.count([0]) == 1
    with pytest.raises(IndexError, match="out of range"):
        plan[3]
    with pytest.raises(IndexError, match="out of range"):
        plan[-4]
    assert sorted(int(i) for b in plan for i in b) == [0, 1, 2, 3, 4]
    assert np.concatenate(plan).tolist() == [4, 1, 0, 2, 3]  # numpy reads it as a sequence


def test_every_array_is_read_only_and_the_caller_keeps_its_own():
    batch = np.array([3, 1], np.int64)
    buckets, pads = np.array([2]), np.array([7])
    plan = BatchPlan(0, [batch], buckets, pads)
    for arr in (plan.rows, plan.splits, plan.groups, plan.pad_lengths, plan[0],
                *plan.batches):
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[...] = 0
    assert batch.flags.writeable and buckets.flags.writeable and pads.flags.writeable
    batch[0] = 9  # the plan holds a copy
    assert plan[0].tolist() == [3, 1]
    with pytest.raises(AttributeError, match="read-only"):
        plan.epoch = 4


def test_widths_returns_a_new_array():
    plan = BatchPlan(0, [[0]], [0], [4])
    w = plan.widths("bucket")
    w[0] = 99
    assert plan.pad_lengths.tolist() == [4]


def test_pickling_keeps_the_plan_read_only():
    plan = BatchPlan(5, [[2, 0], [1]], [1, 0], [6, 3], num_dropped=1)
    again = pickle.loads(pickle.dumps(plan))
    assert again == plan and again.epoch == 5 and again.num_dropped == 1
    assert not again.rows.flags.writeable and not again[0].flags.writeable
    packed = PackSampler([3, 1, 2, 4, 2], batch_size=2, seed=1).plan(2)
    copy = pickle.loads(pickle.dumps(packed))
    assert copy == packed and not copy.slots.flags.writeable
    assert [[r.tolist() for r in b] for b in copy.row_batches] == [
        [r.tolist() for r in b] for b in packed.row_batches
    ]


def test_equality_compares_every_field():
    plan = BatchPlan(0, [[0, 1]], [0], [3])
    assert plan == BatchPlan(0, [[0, 1]], [0], [3])
    assert plan != BatchPlan(1, [[0, 1]], [0], [3])
    assert plan != BatchPlan(0, [[1, 0]], [0], [3])
    assert plan != BatchPlan(0, [[0, 1]], [1], [3])
    assert plan != BatchPlan(0, [[0, 1]], [0], [4])
    assert plan != BatchPlan(0, [[0, 1]], [0], [3], num_dropped=1)
    assert plan != BatchPlan(0, [[0], [1]], [0, 0], [3, 3])


def test_bad_arguments_name_the_argument():
    plan = BatchPlan(0, [[0, 1]], [0], [5])
    with pytest.raises(ValueError, match=r"`pad_to`.*'mid'"):
        plan.widths("mid")
    with pytest.raises(ValueError, match=r"`pad_to`.*reach the longest planned length \(5\)"):
        plan.widths([2, 4])
    with pytest.raises(ValueError, match="`pad_to`.*increasing"):
        plan.widths([8, 6])
    with pytest.raises(ValueError, match="`pad_to`"):
        plan.widths(0)
    with pytest.raises(ValueError, match="`lengths` is needed"):
        plan.widths("batch")
    with pytest.raises(ValueError, match="`lengths` has 1 entries"):
        plan.widths("batch", [3])
    with pytest.raises(TypeError, match="`batches` must hold integers"):
        BatchPlan(0, [[0.5]], [0], [1])
    with pytest.raises(ValueError, match="one bucket and one pad length per batch"):
        BatchPlan(0, [[0], [1]], [0], [1, 1])
    with pytest.raises(ValueError, match="`splits`"):
        BatchPlan.from_flat([0, 1], [0, 3], groups=[0], pad_lengths=[1])


# --------------------------------------------------------------------------- packed plans


@settings(max_examples=40)
@given(data=st.data())
def test_packed_plan_matches_its_rows(data):
    lengths = data.draw(st.lists(st.integers(1, 12), min_size=1, max_size=40), label="lengths")
    batch_size = data.draw(st.integers(1, 4), label="batch_size")
    sampler = PackSampler(lengths, row_length=16, batch_size=batch_size,
                          seed=data.draw(st.integers(0, 99), label="seed"))
    plan = sampler.plan(data.draw(st.integers(0, 9), label="epoch"))
    rows = [row.tolist() for b in plan.row_batches for row in b]
    assert isinstance(plan, BatchPlan) and isinstance(plan, PackedPlan)
    # The slot matrix holds the rows, left-aligned and padded with -1.
    assert plan.slots.shape == (len(rows), max(1, sampler.max_segments_))
    assert [[i for i in r if i >= 0] for r in plan.slots.tolist()] == rows
    assert plan.rows_per_batch.tolist() == [len(b) for b in plan.row_batches]
    assert [b.tolist() for b in plan] == [
        [i for row in b for i in row.tolist()] for b in plan.row_batches
    ]
    assert plan.groups.tolist() == [0] * len(plan)
    assert plan.pad_lengths.tolist() == [16] * len(plan)
    # A packed batch's "batch" width is its fullest row's steps.
    expected = [max(sum(lengths[i] for i in row) for row in b) for b in plan.row_batches]
    assert plan.widths("batch", lengths).tolist() == expected
    assert PackedPlan(plan.epoch, plan.row_batches, 16, max_segments=plan.slots.shape[1]) == plan


def test_packed_plan_refuses_slots_with_gaps():
    with pytest.raises(ValueError, match="`slots`.*left-aligned"):
        PackedPlan.from_slots(np.array([[-1, 2]]), [0, 1], row_length=4)


# --------------------------------------------------------------------------- planners' plans


@settings(max_examples=30)
@given(data=st.data())
def test_sampler_plan_widths_follow_its_buckets(data):
    lengths = data.draw(st.lists(st.integers(0, 50), min_size=1, max_size=60), label="lengths")
    sampler = BucketSampler(lengths, boundaries=[10, 25], batch_size=4,
                            seed=data.draw(st.integers(0, 99), label="seed"))
    plan = sampler.plan(data.draw(st.integers(0, 5), label="epoch"))
    batches = [b.tolist() for b in plan]
    pads = sampler.bucket_pad_lengths[plan.buckets].tolist()
    # A batch of only empty sequences is one (masked) step wide, under every `pad_to`: a
    # recurrent layer cannot run over zero steps.
    assert plan.widths("bucket").tolist() == [max(1, p) for p in pads]
    assert plan.widths("batch", sampler.lengths).tolist() == [max(1, w) for w in
        _reference_widths("batch", sampler.lengths.tolist(), batches, pads)]
    assert all(max((sampler.lengths[i] for i in b), default=0) <= p
               for b, p in zip(batches, pads, strict=True))


@settings(max_examples=30)
@given(data=st.data())
def test_per_length_plan_groups_and_pad_lengths(data):
    lengths = data.draw(st.lists(st.integers(0, 20), max_size=50), label="lengths")
    by_bucket = data.draw(st.booleans(), label="by_bucket")
    if not by_bucket and 0 in lengths:  # exact-length groups of empty sequences: zero steps
        with pytest.raises(ValueError, match="length 0"):
            plan_per_length(lengths, batch_size=3, group_by="length", seed=1)
        return
    plan = plan_per_length(lengths, batch_size=3, group_by=[5, 12] if by_bucket else "length",
                           seed=1, epoch=data.draw(st.integers(0, 5), label="epoch"))
    assert isinstance(plan, BatchPlan) and plan.num_dropped == 0
    keys = np.searchsorted([5, 12], lengths, side="right") if by_bucket else np.array(lengths)
    for b, group, pad in zip(plan, plan.groups, plan.pad_lengths, strict=True):
        assert set(keys[b].tolist()) == {int(group)}
        assert int(pad) == max(lengths[i] for i in b.tolist())
    assert plan.widths("bucket").tolist() == plan.widths("batch", lengths).tolist()


def test_sampler_plan_reads_the_same_before_and_after_its_flat_rows_exist():
    # A sampler's plan joins its flat rows on first use; every view must agree either way.
    sampler = BucketSampler([5, 1, 2, 6, 2, 7, 1, 3, 9, 4], boundaries=[4], batch_size=3, seed=2)
    lazy = sampler.plan(1)
    first = [lazy[i].tolist() for i in range(len(lazy))]
    assert first == [b.tolist() for b in lazy.batches]
    assert lazy.rows.tolist() == [i for b in first for i in b]
    assert [lazy[i].tolist() for i in range(len(lazy))] == first
    sampler._cache = None
    fresh = sampler.plan(1)
    assert pickle.loads(pickle.dumps(fresh)) == lazy == fresh
    assert not lazy.rows.flags.writeable and not lazy[0].flags.writeable
