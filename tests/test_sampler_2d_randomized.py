"""The BucketSampler contract with several lengths per example (2-D buckets), on Hypothesis input.

Drawn per example: 2 or 3 fields (an ``(n, fields)`` array or a dict), correlated or independent
lengths, ``batch_size`` or ``max_tokens`` (on the sum or the max of the fields, with or without
the quadratic term), given or jointly planned boundaries, shuffle, 1..4 shards, drop_remainder,
overlong, max_length (one or per field), merge_leftovers. Checked: every epoch holds every
example exactly once over the shards (or counts it as dropped), the same ``(seed, epoch)``
gives the same plan, epochs differ, shards have equal batch counts and pad to the same cell
per step, no batch breaks the token budget (nor do its cell's widths, but for a lone row),
every member fits its batch's per-field ``pad_to="bucket"`` widths, resuming after any step
equals the uninterrupted epoch, and pickling keeps plan and place.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprep import BucketSampler, PlanOptions
from seqprep.planning._boundaries import token_length_limit


def _sampler(lengths, **kwargs):
    """The BucketSampler of a drawn configuration (its cost-model knobs in PlanOptions)."""
    knobs = ("merge_leftovers", "quadratic_length", "field_tokens", "field_weights")
    options = PlanOptions(**{k: kwargs.pop(k) for k in knobs if k in kwargs})
    return BucketSampler(lengths, options=options, **kwargs)


@st.composite
def setups(draw):
    k = draw(st.integers(2, 3), label="fields")
    n = draw(st.integers(1, 90), label="n")
    rng = np.random.default_rng(draw(st.integers(0, 2**16), label="lengths seed"))
    base = rng.integers(0, 40, n)
    if draw(st.booleans(), label="correlated"):
        cols = [np.clip(base + rng.integers(-3, 4, n), 0, None) for _ in range(k)]
    else:
        cols = [rng.integers(0, 40, n) for _ in range(k)]
    lengths = np.stack(cols, axis=1).astype(np.int64)
    names = ("src", "tgt", "aux")[:k]
    if draw(st.booleans(), label="given boundaries"):
        boundaries = [
            sorted(draw(st.sets(st.integers(1, 45), max_size=3), label=f"boundaries {f}"))
            for f in range(k)
        ]
    else:
        boundaries = None
    if draw(st.booleans(), label="batch_size"):
        size = {"batch_size": draw(st.integers(1, 9), label="batch_size")}
    else:
        size = {
            "max_tokens": draw(st.integers(40, 400), label="max_tokens"),
            "quadratic_length": draw(st.none() | st.integers(4, 80), label="quadratic_length"),
            "field_tokens": draw(st.sampled_from(["sum", "max"]), label="field_tokens"),
        }
    max_length = draw(
        st.none() | st.integers(5, 45) | st.lists(st.integers(5, 45), min_size=k, max_size=k),
        label="max_length",
    )
    kwargs = dict(
        boundaries=boundaries,
        shuffle=draw(st.booleans(), label="shuffle"),
        seed=draw(st.integers(0, 5), label="seed"),
        drop_remainder=draw(st.booleans(), label="drop_remainder"),
        num_shards=draw(st.integers(1, 4), label="shards"),
        overlong=draw(st.sampled_from(["error", "truncate", "drop"]), label="overlong"),
        max_length=max_length,
        merge_leftovers=draw(st.booleans(), label="merge_leftovers"),
        **size,
    )
    as_dict = draw(st.booleans(), label="as dict")
    return lengths, names, as_dict, kwargs


def _given(lengths, names, as_dict):
    return {n: lengths[:, f].copy() for f, n in enumerate(names)} if as_dict else lengths.copy()


def _row_length(pads, kwargs):
    return pads.sum(-1) if kwargs.get("field_tokens", "sum") == "sum" else pads.max(-1)


def _within_budget(rows, pads, kwargs):
    """rows x (L + L**2 / q) <= max_tokens for L the row's token length, in exact integers."""
    q, length = kwargs["quadratic_length"], max(int(_row_length(pads, kwargs)), 1)
    if q is None:
        return rows * length <= kwargs["max_tokens"]
    return rows * length * (q + length) <= kwargs["max_tokens"] * q


def _expected_limits(lengths, kwargs):
    """By brute force: the planned lengths, and which examples do not fit (None on error)."""
    k = lengths.shape[1]
    caps = np.full(k, np.iinfo(np.int64).max)
    if kwargs["max_length"] is not None:
        caps = np.minimum(caps, np.broadcast_to(kwargs["max_length"], (k,)))
    fits = None
    if "max_tokens" in kwargs:
        fits = token_length_limit(kwargs["max_tokens"], kwargs["quadratic_length"])
        if kwargs["field_tokens"] == "max":
            caps, fits = np.minimum(caps, fits), None
    truncate = kwargs["overlong"] == "truncate"
    planned = np.minimum(lengths, caps) if truncate else lengths
    over = np.zeros(len(lengths), bool) if truncate else (lengths > caps).any(axis=1)
    if fits is not None:
        over |= planned.sum(axis=1) > fits
    return planned, over


@pytest.mark.filterwarnings("ignore:.*left out of every epoch:UserWarning")
@settings(max_examples=70, deadline=None)
@given(setup=setups(), data=st.data())
def test_sampler_2d_contract(setup, data):
    lengths, names, as_dict, kwargs = setup
    given_lengths = _given(lengths, names, as_dict)
    shards = kwargs["num_shards"]
    planned, over = _expected_limits(lengths, kwargs)
    if over.any() and kwargs["overlong"] != "drop":
        with pytest.raises(ValueError, match="do not fit"):
            _sampler(given_lengths, **kwargs)
        return
    try:
        samplers = [_sampler(given_lengths, shard_index=i, **kwargs) for i in range(shards)]
    except ValueError as err:
        if "would leave out all" in str(err):
            assert kwargs["drop_remainder"] or over.all()
            return
        assert "Cannot give each of the" in str(err)
        assert not kwargs["drop_remainder"] and shards > 1
        return
    # Inputs are not mutated.
    if as_dict:
        assert all(np.array_equal(given_lengths[n], lengths[:, f]) for f, n in enumerate(names))
    else:
        assert np.array_equal(given_lengths, lengths)
    first = samplers[0]
    n = len(lengths)
    assert first.num_fields == lengths.shape[1]
    assert first.field_names == (names if as_dict else tuple(range(lengths.shape[1])))
    np.testing.assert_array_equal(first.lengths, planned)
    if not kwargs["drop_remainder"]:
        assert first.num_dropped_ == int(over.sum())
    shape = first.grid_shape

    for epoch in (0, 1):
        plans = [s.plan(epoch) for s in samplers]
        for p, s in zip(plans, samplers, strict=True):
            assert len(p) == len(s) == len(first)
            np.testing.assert_array_equal(p.buckets, plans[0].buckets)  # same cell per step
        seen = np.concatenate([p.rows for p in plans])
        assert seen.size == np.unique(seen).size  # exactly once ...
        assert seen.size + first.num_dropped_ == n  # ... or counted as dropped
        assert not np.intersect1d(seen, np.flatnonzero(over)).size
        for p in plans:
            widths = p.field_widths("batch", first.lengths)
            np.testing.assert_array_equal(p.pad_lengths, p.field_pad_lengths.max(axis=1))
            for batch, cell, width, pads in zip(
                p.batches, p.buckets, widths, p.field_pad_lengths, strict=True
            ):
                assert batch.size > 0
                members = planned[batch]
                np.testing.assert_array_equal(width, members.max(axis=0))
                assert np.all(members.max(axis=0) <= pads)  # pad_to="bucket" fits every field
                bands = [np.searchsorted(b, members[:, f], side="right")
                         for f, b in enumerate(first.boundaries)]
                label = np.unravel_index(cell, shape)
                assert all(int(b.max()) <= int(c) for b, c in zip(bands, label, strict=True))
                if "batch_size" in kwargs:
                    assert batch.size <= kwargs["batch_size"]
                    if kwargs["drop_remainder"]:
                        assert batch.size == kwargs["batch_size"]
                else:
                    # The budget holds for the batch's own widths; for its cell's widths too
                    # unless those alone exceed it (a cell's longest source and longest
                    # target may come from different examples): then the batch has one row.
                    assert _within_budget(batch.size, width, kwargs)
                    assert _within_budget(batch.size, pads, kwargs) or batch.size == 1
        again = _sampler(_given(lengths, names, as_dict), **kwargs).plan(epoch)
        assert again == plans[0]  # same (seed, epoch): same plan, from a fresh sampler

    if kwargs["shuffle"] and n - first.num_dropped_ >= 12:
        order = [np.concatenate([s.plan(e).rows for s in samplers]).tolist() for e in (0, 1)]
        assert order[0] != order[1]
    if not kwargs["shuffle"]:
        assert first.plan(0).rows.tolist() == first.plan(5).rows.tolist()

    # Resume after any step of any shard equals the uninterrupted epoch.
    s = samplers[data.draw(st.integers(0, shards - 1), label="shard")]
    s.set_epoch(2)
    steps = data.draw(st.integers(0, len(s)), label="resume after step")
    it = iter(s)
    taken = [next(it).tolist() for _ in range(steps)]
    state, pickled = s.state_dict(), pickle.dumps(s)
    rest = [b.tolist() for b in it]
    fresh = _sampler(_given(lengths, names, as_dict), shard_index=s.shard_index, **kwargs)
    fresh.load_state_dict(state)
    assert [b.tolist() for b in fresh] == rest
    assert [b.tolist() for b in pickle.loads(pickled)] == rest
    assert taken + rest == [b.tolist() for b in s.batches(2)]
