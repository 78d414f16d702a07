"""The BucketSampler contract, over every configuration, on Hypothesis-drawn inputs.

For each of batch_size / max_tokens x shuffle on/off x 1..8 shards x drop_remainder on/off:
exactly-once epochs across shards (or counted as dropped), same (seed, epoch) -> same plan,
different epochs -> different orders, equal batch counts and one bucket per step across shards,
no batch over budget, resume after any step, pickling.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprep.planning import BucketSampler, PlanOptions

CONFIGS = [
    (mode, shuffle, shards, drop)
    for mode in ("batch_size", "max_tokens")
    for shuffle in (True, False)
    for shards in range(1, 9)
    for drop in (False, True)
]


def _sampler(lengths, **kwargs):
    """The BucketSampler of a drawn configuration (its cost-model knobs in PlanOptions)."""
    knobs = ("merge_leftovers", "quadratic_length", "field_tokens", "field_weights")
    options = PlanOptions(**{k: kwargs.pop(k) for k in knobs if k in kwargs})
    return BucketSampler(lengths, options=options, **kwargs)


def _draw_setup(data, mode, shuffle, shards, drop):
    lengths = data.draw(st.lists(st.integers(0, 60), min_size=1, max_size=120), label="lengths")
    explicit = data.draw(st.booleans(), label="explicit boundaries")
    boundaries = (
        sorted(data.draw(st.sets(st.integers(1, 70), max_size=5), label="boundaries"))
        if explicit
        else None
    )
    if mode == "batch_size":
        size = {"batch_size": data.draw(st.integers(1, 9), label="batch_size")}
    else:
        size = {
            "max_tokens": data.draw(st.integers(1, 250), label="max_tokens"),
            # The optional quadratic (attention) cost term of the token budget.
            "quadratic_length": data.draw(st.none() | st.integers(1, 80),
                                          label="quadratic_length"),
        }
    kwargs = dict(
        boundaries=boundaries,
        shuffle=shuffle,
        seed=data.draw(st.integers(0, 3), label="seed"),
        drop_remainder=drop,
        num_shards=shards,
        overlong=data.draw(st.sampled_from(["error", "truncate", "drop"]), label="overlong"),
        max_length=data.draw(st.none() | st.integers(1, 70), label="max_length"),
        merge_leftovers=data.draw(st.booleans(), label="merge_leftovers"),
        **size,
    )
    return lengths, kwargs


def _fits(kwargs):
    """The longest length one row may have under the token budget, by brute force."""
    if kwargs.get("max_tokens") is None:
        return None
    q, budget = kwargs["quadratic_length"], kwargs["max_tokens"]
    if q is None:
        return budget
    return max(t for t in range(budget + 1) if t * (q + t) <= budget * q)


def _within_budget(rows, pad, kwargs):
    """rows x (L + L**2 / q) <= max_tokens, checked in exact integers."""
    q, pad = kwargs["quadratic_length"], max(pad, 1)
    if q is None:
        return rows * pad <= kwargs["max_tokens"]
    return rows * pad * (q + pad) <= kwargs["max_tokens"] * q


def _limit(kwargs):
    limits = [x for x in (kwargs["max_length"], _fits(kwargs)) if x is not None]
    return min(limits) if limits else None


def _build_all(lengths, kwargs):
    return [_sampler(lengths, shard_index=k, **kwargs) for k in range(kwargs["num_shards"])]


@pytest.mark.parametrize(("mode", "shuffle", "shards", "drop"), CONFIGS)
@settings(max_examples=8)
@given(data=st.data())
def test_sampler_contract(mode, shuffle, shards, drop, data):
    lengths, kwargs = _draw_setup(data, mode, shuffle, shards, drop)
    original = list(lengths)
    limit = _limit(kwargs)
    if kwargs.get("quadratic_length") is not None and _fits(kwargs) == 0:
        # A budget that holds no step at all is refused, not planned over budget.
        with pytest.raises(ValueError, match="`max_tokens` cannot hold a single step"):
            _sampler(lengths, **kwargs)
        return
    if kwargs["overlong"] == "error" and limit is not None and max(lengths) > limit:
        name = "max_length" if limit == kwargs["max_length"] else "max_tokens"
        with pytest.raises(ValueError, match=f"`{name}`"):
            _sampler(lengths, **kwargs)
        return
    try:
        samplers = _build_all(lengths, kwargs)
    except ValueError as err:
        if "would leave out all" in str(err):
            # Planning an empty epoch is refused; only dropping can empty it.
            assert drop or kwargs["overlong"] == "drop"
            return
        # Only a data set too small to give every shard a batch may refuse, and only when
        # asked not to drop anything.
        assert "Cannot give each of the" in str(err)
        assert not drop and shards > 1
        return
    assert lengths == original  # inputs are not mutated
    n = len(lengths)
    first = samplers[0]
    eff = np.asarray(first.lengths)
    n_overlong = 0
    if limit is not None and kwargs["overlong"] == "drop":
        n_overlong = sum(x > limit for x in lengths)
    if not drop:
        assert first.num_dropped_ == n_overlong
    if kwargs["overlong"] == "truncate" and limit is not None:
        assert first.num_truncated_ == sum(x > limit for x in lengths)
        assert eff.max() <= limit

    for epoch in (0, 1):
        plans = [s.plan(epoch) for s in samplers]
        # Equal batch counts, and one bucket per step on every shard.
        for p, s in zip(plans, samplers, strict=True):
            assert len(p.batches) == len(s) == len(first)
            np.testing.assert_array_equal(p.buckets, plans[0].buckets)
        # Exactly once across shards, or counted as dropped.
        seen = np.concatenate([np.concatenate(p.batches) for p in plans if p.batches] or [[]])
        assert seen.size == np.unique(seen).size
        assert seen.size + first.num_dropped_ == n
        if seen.size:
            assert seen.min() >= 0 and seen.max() < n
        for p in plans:
            for batch, bucket, pad in zip(p.batches, p.buckets, p.pad_lengths, strict=True):
                assert batch.dtype == np.int64 and batch.size > 0
                longest = int(eff[batch].max())
                assert longest <= pad  # pad_to="bucket" covers every member
                members = np.searchsorted(first.boundaries, eff[batch], side="right")
                assert members.max() <= bucket
                if not kwargs["merge_leftovers"] and shards == 1:
                    assert members.min() == bucket  # one bucket per batch
                if mode == "batch_size":
                    assert batch.size <= kwargs["batch_size"]
                    if drop:
                        assert batch.size == kwargs["batch_size"]
                else:
                    assert _within_budget(batch.size, pad, kwargs)
        # Same (seed, epoch) -> same plan, from a fresh sampler too.
        again = _sampler(lengths, shard_index=0, **kwargs).plan(epoch)
        assert [b.tolist() for b in again.batches] == [b.tolist() for b in plans[0].batches]

    # Different epochs -> different orders (when there is anything to reorder).
    if shuffle and n - first.num_dropped_ >= 12:
        order0 = np.concatenate([np.concatenate(s.batches(0)) for s in samplers])
        order1 = np.concatenate([np.concatenate(s.batches(1)) for s in samplers])
        assert order0.tolist() != order1.tolist()
    if not shuffle:
        assert [b.tolist() for b in first.batches(0)] == [b.tolist() for b in first.batches(5)]

    # Resume from a state taken after any step.
    k = data.draw(st.integers(0, len(first)), label="resume after step")
    s = samplers[-1]
    s.set_epoch(1)
    it = iter(s)
    taken = [next(it).tolist() for _ in range(k)]
    state = s.state_dict()
    rest_direct = [b.tolist() for b in it]
    fresh = _sampler(lengths, shard_index=kwargs["num_shards"] - 1, **kwargs)
    fresh.load_state_dict(state)
    assert [b.tolist() for b in fresh] == rest_direct
    assert taken + rest_direct == [b.tolist() for b in s.batches(1)]
    assert fresh.epoch == 2 and fresh.state_dict()["position"] == 0

    # Pickling round trip keeps the plan and the position.
    clone = pickle.loads(pickle.dumps(s))
    assert clone.state_dict() == s.state_dict()
    assert [b.tolist() for b in clone.batches(3)] == [b.tolist() for b in s.batches(3)]
