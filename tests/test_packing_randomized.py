"""The PackSampler contract, over every configuration, on Hypothesis-drawn inputs.

For shuffle on/off x 1..5 shards x drop_remainder on/off: exactly-once epochs across shards (or
counted as dropped), no row over ``row_length``, no batch over ``batch_size`` rows, equal batch
counts per shard, same (seed, epoch) -> same plan, different epochs -> different orders, resume
after any step, pickling; and the packing itself against item-by-item best-fit decreasing.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprep.planning import PackSampler
from seqprep.planning._packing import _best_fit_decreasing

CONFIGS = [
    (shuffle, shards, drop)
    for shuffle in (True, False)
    for shards in range(1, 6)
    for drop in (False, True)
]


def _draw_setup(data, shuffle, shards, drop):
    lengths = data.draw(st.lists(st.integers(1, 40), min_size=1, max_size=150), label="lengths")
    kwargs = dict(
        row_length=data.draw(st.none() | st.integers(1, 60), label="row_length"),
        batch_size=data.draw(st.integers(1, 6), label="batch_size"),
        shuffle=shuffle,
        seed=data.draw(st.integers(0, 3), label="seed"),
        num_shards=shards,
        drop_remainder=drop,
        overlong=data.draw(st.sampled_from(["error", "truncate", "drop"]), label="overlong"),
    )
    return lengths, kwargs


def _flat(batches):
    return [[row.tolist() for row in batch] for batch in batches]


@pytest.mark.parametrize(("shuffle", "shards", "drop"), CONFIGS)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_pack_sampler_contract(shuffle, shards, drop, data):
    lengths, kwargs = _draw_setup(data, shuffle, shards, drop)
    original = list(lengths)
    limit = kwargs["row_length"]
    over = 0 if limit is None else sum(x > limit for x in lengths)
    if over and kwargs["overlong"] == "error":
        with pytest.raises(ValueError, match="`row_length`"):
            PackSampler(lengths, **kwargs)
        return
    try:
        samplers = [PackSampler(lengths, shard_index=k, **kwargs) for k in range(shards)]
    except ValueError as err:
        assert "Cannot give each of the" in str(err)
        assert not drop and shards > 1
        return
    assert lengths == original
    first = samplers[0]
    n = len(lengths)
    width = first.row_length
    assert width == (max(lengths) if limit is None else limit)
    eff = np.asarray(first.lengths)
    if kwargs["overlong"] == "truncate":
        assert first.num_truncated_ == over and eff.max() <= width
    if not drop:
        assert first.num_dropped_ == (over if kwargs["overlong"] == "drop" else 0)

    for epoch in (0, 1):
        plans = [s.batches(epoch) for s in samplers]
        assert all(len(p) == len(s) == len(first) for p, s in zip(plans, samplers, strict=True))
        rows = [row for p in plans for batch in p for row in batch]
        seen = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        # Exactly once across shards, or counted as dropped.
        assert seen.size == np.unique(seen).size
        assert seen.size + first.num_dropped_ == n
        for p in plans:
            for batch in p:
                assert 1 <= len(batch) <= kwargs["batch_size"]
                if drop:
                    assert len(batch) == kwargs["batch_size"]
                for row in batch:
                    assert row.dtype == np.int64 and row.size >= 1
                    assert row.size <= first.max_segments_
                    assert eff[row].sum() <= width
        # Same (seed, epoch) -> same plan, from a fresh sampler too.
        again = PackSampler(lengths, shard_index=0, **kwargs).batches(epoch)
        assert _flat(again) == _flat(plans[0])

    if shuffle and n - first.num_dropped_ >= 12:
        order0 = [r for s in samplers for r in _flat(s.batches(0))]
        order1 = [r for s in samplers for r in _flat(s.batches(1))]
        assert order0 != order1
    if not shuffle:
        assert _flat(first.batches(0)) == _flat(first.batches(4))

    # Resume from a state taken after any step.
    k = data.draw(st.integers(0, len(first)), label="resume after step")
    s = samplers[-1]
    s.set_epoch(1)
    it = iter(s)
    taken = [_flat([next(it)])[0] for _ in range(k)]
    state = s.state_dict()
    rest = _flat(list(it))
    fresh = PackSampler(lengths, shard_index=shards - 1, **kwargs)
    fresh.load_state_dict(state)
    assert _flat(list(fresh)) == rest
    assert taken + rest == _flat(s.batches(1))
    assert fresh.epoch == 2 and fresh.state_dict()["position"] == 0

    clone = pickle.loads(pickle.dumps(s))
    assert clone.state_dict() == s.state_dict()
    assert _flat(clone.batches(3)) == _flat(s.batches(3))


def _item_by_item_bfd(lengths, width):
    """Reference best-fit decreasing, one item at a time."""
    rooms, rows = [], []
    for x in sorted(lengths, reverse=True):
        fits = [i for i, r in enumerate(rooms) if r >= x]
        if fits:
            i = min(fits, key=lambda j: rooms[j])
            rooms[i] -= x
            rows[i].append(x)
        else:
            rooms.append(width - x)
            rows.append([x])
    return sorted(sorted(r) for r in rows)


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=80),
    extra=st.integers(0, 30),
)
def test_grouped_packing_matches_item_by_item_best_fit(lengths, extra):
    width = max(lengths) + extra
    values, counts = np.unique(lengths, return_counts=True)
    groups = _best_fit_decreasing(values, counts, width)
    rows = sorted(
        sorted(x for x, k in comp for _ in range(k)) for g, comp in groups for _ in range(g)
    )
    # A valid packing of exactly these lengths, in as many rows as item-by-item best-fit
    # decreasing (rows of equal room may be picked in another order, so contents may differ).
    assert sorted(x for r in rows for x in r) == sorted(lengths)
    assert all(sum(r) <= width for r in rows)
    assert len(rows) == len(_item_by_item_bfd(lengths, width))


def test_fill_on_lognormal_lengths():
    rng = np.random.default_rng(0)
    for sigma in (0.5, 0.8, 1.0):
        lengths = np.maximum(1, rng.lognormal(4.0, sigma, 20_000)).astype(np.int64)
        s = PackSampler(lengths, batch_size=32)
        assert s.fill_ >= 0.97
        steps = sum(int(s.lengths[r].sum()) for b in s.batches(0) for r in b)
        assert steps == int(lengths.sum())
        assert s.fill_ == pytest.approx(steps / (s.num_rows_ * s.row_length))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(lengths=[2, 0, 1], batch_size=1), "at least 1 to pack"),
        (dict(lengths=[2, 5], batch_size=1, row_length=4), "`row_length`=4"),
        (dict(lengths=[2, 5], batch_size=0), "`batch_size`"),
        (dict(lengths=[2, 5], batch_size=1, shard_index=2, num_shards=2), "`shard_index`"),
        (dict(lengths=[2, 5], batch_size=1, num_shards=3), "Cannot give each"),
        (dict(lengths=[2, 5], batch_size=1, overlong="cut", row_length=4), "`overlong`"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PackSampler(**kwargs)


def test_state_from_other_sampler_is_refused():
    s = PackSampler([1, 2, 3], batch_size=1, seed=1)
    with pytest.raises(ValueError, match="seed"):
        PackSampler([1, 2, 3], batch_size=1, seed=2).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="fingerprint"):
        PackSampler([1, 2, 4], batch_size=1, seed=1).load_state_dict(s.state_dict())


def test_iterators_are_independent_and_a_peek_costs_nothing():
    """PackSampler shares BucketSampler's iteration: each iter() keeps its own position."""
    s = PackSampler([3, 1, 2, 4, 2, 1, 3, 2], row_length=4, batch_size=1, seed=5)
    full = [[r.tolist() for r in b] for b in s.batches(0)]
    peek = next(iter(s))
    assert [r.tolist() for r in peek] == full[0]
    a, b = iter(s), iter(s)
    first_a = [[r.tolist() for r in next(a)]]
    assert [[r.tolist() for r in x] for x in b] == full  # b is not robbed by a or the peek
    assert first_a == full[:1]
    assert s.epoch == 1  # b played epoch 0 to its end
