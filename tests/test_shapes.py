"""Batch shapes of a plan and the width grid (seqprep.planning._shapes): numpy only."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprep import BucketSampler, count_shapes, padding_report, width_grid
from seqprep.planning._shapes import MANY_SHAPES, bucket_widths, budget_grid, resolve_pad_to


def _lognormal(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(3.5, 0.8, n).astype(np.int64), 2, 400)


def _padded_tokens(sampler, table):
    plan = sampler.plan(sampler.epoch)
    rows = np.array([b.size for b in plan.batches])
    return int((rows * table[plan.buckets]).sum())


def _shapes_by_hand(sampler, widths_of, epochs):
    shapes = set()
    for e in range(epochs):
        plan = sampler.plan(e)
        for b, w in zip(plan.batches, widths_of(plan), strict=True):
            shapes.add((b.size, int(w)))
    return len(shapes)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 60), min_size=1, max_size=80),
    bounds=st.lists(st.integers(2, 60), max_size=8, unique=True),
    batch_size=st.integers(1, 9),
    k=st.integers(1, 5),
)
def test_width_grid_is_optimal_against_brute_force(lengths, bounds, batch_size, k):
    sampler = BucketSampler(lengths, boundaries=sorted(bounds), batch_size=batch_size, seed=1)
    grid = width_grid(sampler, k)
    pads = sampler.bucket_pad_lengths
    assert len(grid) <= k and grid[-1] == max(pads.max(), 1)
    assert np.all(np.diff(grid) > 0)
    table = bucket_widths(sampler, grid)
    assert np.all(table >= pads)  # every batch fits its width
    best = _padded_tokens(sampler, table)
    used = np.bincount(sampler.plan(0).buckets, minlength=pads.size) > 0
    candidates = np.unique(np.maximum(pads[used | (pads == pads.max())], 1))
    for r in range(1, min(k, candidates.size) + 1):
        for combo in itertools.combinations(candidates[:-1].tolist(), r - 1):
            other = np.array([*combo, candidates[-1]])
            assert best <= _padded_tokens(sampler, bucket_widths(sampler, other))


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=60),
    batch_size=st.integers(1, 7),
    pad_to=st.sampled_from(["batch", "bucket", "grid", 40]),
    epochs=st.integers(1, 3),
)
def test_count_shapes_matches_a_count_by_hand(lengths, batch_size, pad_to, epochs):
    sampler = BucketSampler(lengths, boundaries=[3, 9, 20], batch_size=batch_size, seed=2)
    if pad_to == "batch":
        def widths_of(plan):
            return [int(sampler.lengths[b].max()) for b in plan.batches]
    elif pad_to == "bucket":
        def widths_of(plan):
            return plan.pad_lengths
    elif pad_to == "grid":
        pad_to = width_grid(sampler, 2)
        table = bucket_widths(sampler, pad_to)

        def widths_of(plan):
            return table[plan.buckets]
    else:
        def widths_of(plan):
            return [40] * len(plan.batches)
    assert count_shapes(sampler, pad_to=pad_to, epochs=epochs) == _shapes_by_hand(
        sampler, widths_of, epochs
    )


def test_grid_shapes_are_the_same_every_epoch_and_few():
    lengths = _lognormal(4000)
    sampler = BucketSampler(lengths, batch_size=64)
    grid = width_grid(sampler)
    one, ten = count_shapes(sampler, pad_to=grid), count_shapes(sampler, pad_to=grid, epochs=10)
    assert one == ten <= len(grid) + 1 <= 17
    # ... while padding each batch to its own longest meets new shapes in later epochs.
    assert count_shapes(sampler, pad_to="batch", epochs=10) > len(grid) + 1
    table = bucket_widths(sampler, grid)
    plan = sampler.plan(3)
    r = padding_report(sampler.lengths, plan.batches, pad_lengths=table[plan.buckets])
    assert r["padding_fraction"] <= 0.15  # issue 13's padding target on its workload
    assert r["n_shapes"] == one


def test_padding_report_counts_rows_as_part_of_the_shape():
    # Same width, different row counts: two shapes (a partial last batch compiles anew).
    r = padding_report([5, 5, 5], [[0, 1], [2]], pad_lengths=[5, 5])
    assert r["n_shapes"] == 2 and r["n_lengths"] == 1


def test_resolve_pad_to_per_backend():
    sampler = BucketSampler(_lognormal(1000), batch_size=32)
    assert resolve_pad_to("auto", sampler, backend=None) == "batch"
    assert resolve_pad_to("bucket", sampler, backend=None) == "bucket"
    assert resolve_pad_to(7, sampler, backend=None) == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = resolve_pad_to("auto", sampler, backend="jax")
    assert np.array_equal(table, budget_grid(sampler))
    tokens = BucketSampler(_lognormal(1000), max_tokens=4000, boundaries=[20, 60])
    assert resolve_pad_to("auto", tokens, backend="jax") == "bucket"


def test_many_shapes_warn_on_a_compiling_backend_only():
    sampler = BucketSampler(_lognormal(4000), batch_size=64)
    assert count_shapes(sampler, pad_to="bucket") > MANY_SHAPES
    with pytest.warns(UserWarning, match=r"distinct batch shapes.*pad_to='bucket'"):
        resolve_pad_to("bucket", sampler, backend="jax")
    with pytest.warns(UserWarning, match="new ones in the next"):
        resolve_pad_to("batch", BucketSampler(_lognormal(500), batch_size=16,
                                              boundaries=[30]), backend="jax")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_pad_to("bucket", sampler, backend=None)
    tokens = BucketSampler(_lognormal(4000), max_tokens=4096)  # 88 buckets: 47 shapes
    with pytest.warns(UserWarning, match=r"pad_to='auto \(per bucket.*\n- .*Bucketer\(8"):
        assert resolve_pad_to("auto", tokens, backend="jax") == "bucket"
    grid = np.arange(1, 401)  # a grid as an array, too fine to be useful
    with pytest.warns(UserWarning, match="pad_to='a width grid'"):
        resolve_pad_to(grid, sampler, backend="jax")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_widths": 0}, ValueError, "`max_widths` must be at least 1"),
        ({"max_widths": 2.0}, TypeError, "`max_widths` must be an integer"),
    ],
)
def test_width_grid_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        width_grid(BucketSampler([1, 2, 3], batch_size=2), **kwargs)


def test_width_grid_refuses_a_token_budget():
    with pytest.raises(ValueError, match=r"needs a sampler built with `batch_size`.*\n- Bound"):
        width_grid(BucketSampler([1, 2, 30], max_tokens=60))


@pytest.mark.parametrize(
    ("grid", "match"),
    [([], "non-empty 1-D"), ([3.5, 9], "integers"), ([9, 3], "strictly increasing"),
     ([0, 9], "strictly increasing positive"), ([4, 8], "must reach the longest planned length")],
)
def test_bad_width_grids(grid, match):
    sampler = BucketSampler([1, 5, 9], batch_size=2)
    with pytest.raises(ValueError, match=rf"Argument `pad_to`.*{match}.*Received: pad_to="):
        count_shapes(sampler, pad_to=grid)


def test_count_shapes_bad_pad_to():
    with pytest.raises(ValueError, match="Argument `pad_to` must be"):
        count_shapes(BucketSampler([1, 2], batch_size=1), pad_to="max")


def test_sampler_not_mutated():
    sampler = BucketSampler(_lognormal(300), batch_size=16)
    before = (sampler.epoch, sampler.state_dict(), sampler.boundaries.copy())
    width_grid(sampler, 3)
    count_shapes(sampler, epochs=3)
    assert (sampler.epoch, sampler.state_dict()) == before[:2]
    assert np.array_equal(sampler.boundaries, before[2])


@pytest.mark.backend
def test_bucketed_dataset_pads_to_the_grid_and_keeps_every_value():
    import seqprep as sp

    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 40, 90)
    x = [rng.integers(1, 100, n) for n in lengths]
    sampler = BucketSampler(lengths, boundaries=[5, 10, 20, 30], batch_size=8, seed=4)
    grid = width_grid(sampler, 2)
    ds = sp.bucketed_dataset(x, sampler=sampler, pad_to=grid)
    table = bucket_widths(sampler, grid)
    plan = sampler.plan(0)
    shapes = set()
    for xb, idx, bucket in zip(ds, plan.batches, plan.buckets, strict=True):
        xb = xb.numpy()
        assert xb.shape == (idx.size, table[bucket])
        shapes.add(xb.shape)
        for row, i in zip(xb, idx, strict=True):
            assert row[: lengths[i]].tolist() == x[i].tolist() and not row[lengths[i]:].any()
    assert len(shapes) == count_shapes(sampler, pad_to=grid)
    # Default "auto": on JAX the compile budget's grid (each batch to its bucket's grid
    # width), elsewhere "batch" (each batch to its longest member).
    import keras

    auto = [xb.shape[1] for xb in sp.bucketed_dataset(x, sampler=sampler)]
    if keras.config.backend() == "jax":
        expected = bucket_widths(sampler, budget_grid(sampler))[plan.buckets].tolist()
    else:
        expected = [int(lengths[b].max()) for b in plan.batches]
    assert auto == expected
