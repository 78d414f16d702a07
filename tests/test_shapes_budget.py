"""The compile budget of ``pad_to="auto"`` on a compiling backend (seqprep.planning._shapes.
budget_grid, PlanOptions(compile_cost=..., train_epochs=...)), and the rule that every shape of
a run is met in its first epoch. Numpy only, except the dataset test (tf.data, any backend)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqprep as sp
from seqprep.planning._shapes import (
    DEFAULT_COMPILE_COST,
    DEFAULT_TRAIN_EPOCHS,
    budget_field_grids,
    budget_grid,
    pad_to_rule,
)


def _sampler(lengths, *, cost=DEFAULT_COMPILE_COST, epochs=DEFAULT_TRAIN_EPOCHS, **kwargs):
    kwargs.setdefault("batch_size", 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero lengths, dropped sequences: not the point here
        return sp.BucketSampler(lengths, options=sp.PlanOptions(
            compile_cost=cost, train_epochs=epochs), **kwargs)


def _tokens_and_shapes(sampler, grid):
    plan = sampler.plan(sampler.epoch)
    widths = plan.widths(grid, sampler.lengths)
    shapes = set(zip(plan.sizes.tolist(), widths.tolist(), strict=True))
    return int(np.dot(plan.sizes, widths)), len(shapes)


# Six batches of 8 rows, two per bucket (pads 4, 11, 31): by hand, a grid of
#   [31]        pads 48 * 31 = 1488 tokens in 1 shape,
#   [11, 31]    pads 32 * 11 + 16 * 31 = 848 tokens in 2 shapes,
#   [4, 11, 31] pads 16 * (4 + 11 + 31) = 736 tokens in 3 shapes;
# the budget picks the least of epochs * tokens + shapes * cost.
_SIX = [3, 4, 10, 11, 30, 31] * 8


@pytest.mark.parametrize(("cost", "epochs", "grid"), [
    (1_000_000, 10, [31]),       # the default: a compile outweighs every padded token here
    (100, 50, [4, 11, 31]),      # 74500 / 42600 / 37100
    (600, 1, [11, 31]),          # 2088 / 2048 / 2536
    (6400, 10, [11, 31]),        # 21280 / 21280 / 26560: a tie goes to fewer padded tokens
    (0, 1, [4, 11, 31]),         # compiles free: the finest grid
    (None, 1, [4, 11, 31]),      # no budget: the grid of 16 widths at most
])
def test_the_budget_grid_is_the_cheapest_by_hand(cost, epochs, grid):
    s = _sampler(_SIX, cost=cost, epochs=epochs, boundaries=[5, 12], shuffle=False)
    assert budget_grid(s).tolist() == grid
    assert pad_to_rule("auto", s, "jax").tolist() == grid
    assert pad_to_rule("auto", s, None) == "batch"  # TensorFlow and torch: unchanged
    assert sp.count_shapes(s, backend="jax") == len(grid)


def test_the_readme_tour_plays_one_width_on_jax():
    # README "A tour": 1000 sequences of 5..199 steps, batch 64: 16 batches an epoch, so the
    # 16-width grid compiled a program per batch (17 shapes measured); the budget pads all to
    # the longest, 2 shapes (the partial batch is the second).
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, 1000)
    s = sp.BucketSampler(lengths, batch_size=64, seed=0)
    assert budget_grid(s).tolist() == [int(lengths.max())]
    assert sp.count_shapes(s, backend="jax", epochs=3) == 2
    off = sp.BucketSampler(lengths, batch_size=64, seed=0,
                           options=sp.PlanOptions(compile_cost=None))
    assert sp.count_shapes(off, backend="jax", epochs=3) == 16


_lengths = st.lists(st.integers(0, 90), min_size=1, max_size=120)


@settings(max_examples=60, deadline=None)
@given(lengths=_lengths, batch=st.integers(1, 16), epochs=st.integers(1, 200))
def test_free_compiles_pad_least_and_dear_ones_compile_least(lengths, batch, epochs):
    finest = _sampler(lengths, cost=None, batch_size=batch)
    fewest = _sampler(lengths, cost=1e15, epochs=epochs, batch_size=batch)
    free = _sampler(lengths, cost=0, epochs=epochs, batch_size=batch)
    tokens_finest, _ = _tokens_and_shapes(finest, sp.width_grid(finest))
    assert _tokens_and_shapes(free, budget_grid(free))[0] == tokens_finest
    one_width = [int(max(1, np.max(fewest.bucket_pad_lengths)))]
    assert (_tokens_and_shapes(fewest, budget_grid(fewest))[1]
            == _tokens_and_shapes(fewest, one_width)[1])


@settings(max_examples=60, deadline=None)
@given(lengths=_lengths, batch=st.integers(1, 16),
       a=st.integers(1, 100), b=st.integers(1, 100),
       cost=st.sampled_from([0, 50, 500, 5000, 50000]))
def test_more_epochs_pad_less_and_dearer_compiles_compile_less(lengths, batch, a, b, cost):
    lo, hi = min(a, b), max(a, b)
    short = _sampler(lengths, cost=cost, epochs=lo, batch_size=batch)
    long = _sampler(lengths, cost=cost, epochs=hi, batch_size=batch)
    assert (_tokens_and_shapes(long, budget_grid(long))[0]
            <= _tokens_and_shapes(short, budget_grid(short))[0])
    cheap = _sampler(lengths, cost=lo * 10, epochs=5, batch_size=batch)
    dear = _sampler(lengths, cost=hi * 10, epochs=5, batch_size=batch)
    assert (_tokens_and_shapes(dear, budget_grid(dear))[1]
            <= _tokens_and_shapes(cheap, budget_grid(cheap))[1])


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 90), min_size=1, max_size=150),
       batch=st.integers(1, 24), seed=st.integers(0, 2**16), cost=st.sampled_from(
           [None, 0, 300, DEFAULT_COMPILE_COST]),
       merge=st.booleans(), drop=st.booleans(), shards=st.sampled_from([1, 2, 3]))
def test_every_shape_of_a_run_is_met_in_its_first_epoch(lengths, batch, seed, cost, merge,
                                                        drop, shards):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            s = sp.BucketSampler(lengths, batch_size=batch, seed=seed, drop_remainder=drop,
                                 num_shards=shards, options=sp.PlanOptions(
                                     compile_cost=cost, merge_leftovers=merge))
        except ValueError:  # every sequence dropped: nothing to plan
            return
    first = sp.count_shapes(s, backend="jax")
    assert sp.count_shapes(s, backend="jax", epochs=5) == first
    assert sp.count_shapes(s, backend="jax", epoch=3, epochs=2) == first


def test_a_dataset_on_the_budget_grid_plays_the_same_shapes_every_pass():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 60, 150)
    x = [np.ones((n, 2), "float32") for n in lengths]
    s = sp.BucketSampler(lengths, batch_size=16, seed=0)
    grid = budget_grid(s)
    ds = sp.bucketed_dataset(x, np.zeros(len(x)), sampler=s, pad_to=grid)
    passes = [sorted({tuple(xb.shape[:2]) for xb, _ in ds}) for _ in range(3)]
    assert passes[0] == passes[1] == passes[2]
    assert len(passes[0]) == sp.count_shapes(s, pad_to=grid, epochs=3)


def test_the_knobs_live_on_the_sampler_and_are_checked():
    s = sp.BucketSampler([3, 5, 8], batch_size=2,
                         options=sp.PlanOptions(compile_cost=2.5e5, train_epochs=3))
    assert (s.compile_cost, s.train_epochs) == (2.5e5, 3)
    default = sp.BucketSampler([3, 5, 8], batch_size=2)
    assert (default.compile_cost, default.train_epochs) == (DEFAULT_COMPILE_COST,
                                                            DEFAULT_TRAIN_EPOCHS)
    with pytest.raises(ValueError, match=r"`compile_cost`.*compile_cost=-1\n- Pass"):
        sp.PlanOptions(compile_cost=-1)
    with pytest.raises(TypeError, match="`train_epochs`"):
        sp.PlanOptions(train_epochs=2.5)


# --------------------------------------------------------------------------- several fields


def _fields_sampler(pairs, *, cost, epochs=DEFAULT_TRAIN_EPOCHS, weights=None, **kwargs):
    src, tgt = (np.asarray(c, np.int64) for c in zip(*pairs, strict=True))
    kwargs.setdefault("batch_size", 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sp.BucketSampler({"src": src, "tgt": tgt}, options=sp.PlanOptions(
            compile_cost=cost, train_epochs=epochs, field_weights=weights), **kwargs)


def _cost_of(s, grids):
    """``(epochs * tokens + shapes * cost, tokens, shapes)`` of per-field ``grids``: loops."""
    plan = s.plan(s.epoch)
    weights = s.field_weights or (1.0, 1.0)
    tokens, shapes = 0.0, set()
    for rows, pad in zip(plan.sizes.tolist(), plan.field_pad_lengths.tolist(), strict=True):
        w = [int(min(g[g >= p])) for g, p in zip(grids, pad, strict=True)]
        tokens += rows * sum(wj * weights[j] for j, wj in enumerate(w))
        shapes.add((rows, *w))
    return s.train_epochs * tokens + len(shapes) * s.compile_cost, tokens, len(shapes)


_pairs = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=80)


@settings(max_examples=20, deadline=None)
@given(pairs=_pairs, batch=st.integers(1, 12), seed=st.integers(0, 2**16),
       cost=st.sampled_from([0, 300, 5000, DEFAULT_COMPILE_COST]), epochs=st.integers(1, 100),
       weights=st.sampled_from([None, {"src": 1.0, "tgt": 2.5}]))
def test_the_fields_budget_is_the_cheapest_pair_and_never_adds_shapes(
    pairs, batch, seed, cost, epochs, weights
):
    """Differential (a loop over every pair of the fields' grids of 1..16 widths), and the
    promises: no shape tuple new after epoch 1, never more than without the budget."""
    s = _fields_sampler(pairs, cost=cost, epochs=epochs, weights=weights, batch_size=batch,
                        seed=seed)
    got = _cost_of(s, budget_field_grids(s))
    src, tgt = ([sp.width_grid(s, k, field=f) for k in range(1, 17)] for f in ("src", "tgt"))
    best = min(_cost_of(s, (a, b)) for a in src for b in tgt)
    assert got == pytest.approx(best)  # the cheapest run (ties: as few tokens, then shapes)
    first = sp.count_shapes(s, backend="jax")  # what bucketed_dataset compiles on JAX
    assert first == got[2]
    assert sp.count_shapes(s, backend="jax", epochs=4) == first  # none new after epoch 1
    off = _fields_sampler(pairs, cost=None, weights=weights, batch_size=batch, seed=seed)
    assert first <= sp.count_shapes(off, backend="jax")
    assert sp.count_shapes(s, backend="tensorflow") == sp.count_shapes(s, pad_to="batch")


def test_the_fields_budget_by_hand_and_on_the_dataset_path(monkeypatch):
    """Six batches in 3 x 3 buckets: the default budget pads each field to one width (2
    shapes less than the 3 x 3 of the grids without it); the dataset's rule for a field of a
    2-D sampler plays the same grids; the search of one field at a time (many fields) keeps
    the promises."""
    from seqprep.inputs import _stage_widths
    from seqprep.planning import _shapes

    src = [3, 4, 10, 11, 30, 31] * 8
    pairs = list(zip(src, [n // 2 + 1 for n in src], strict=True))
    s = _fields_sampler(pairs, cost=DEFAULT_COMPILE_COST, boundaries=[[5, 12], [4, 8]],
                        shuffle=False)
    off = _fields_sampler(pairs, cost=None, boundaries=[[5, 12], [4, 8]], shuffle=False)
    assert [g.tolist() for g in budget_field_grids(s)] == [[31], [16]]
    assert [g.tolist() for g in budget_field_grids(off)] == [[4, 11, 31], [3, 6, 16]]
    assert (sp.count_shapes(s, backend="jax"), sp.count_shapes(off, backend="jax")) == (1, 3)
    # field_weights: a dear decoder step makes finer grids pay (1 epoch, compiles of 1000).
    plain, dear = (_fields_sampler(pairs, cost=1000, epochs=1, weights=w, shuffle=False,
                                   boundaries=[[5, 12], [4, 8]])
                   for w in (None, {"src": 1.0, "tgt": 4.0}))
    assert [g.tolist() for g in budget_field_grids(plain)] == [[31], [16]]
    assert [g.tolist() for g in budget_field_grids(dear)] == [[11, 31], [6, 16]]
    for column, name in enumerate(s.field_names):
        lengths = s.lengths[:, column]
        got = _stage_widths.resolve_pad_to("auto", lengths, column, s, name, "jax", 0, None)
        assert got.tolist() == budget_field_grids(s)[column].tolist()
        assert _stage_widths.resolve_pad_to("auto", lengths, column, s, name, None, 0,
                                            None) == "batch"  # TensorFlow: unchanged
    monkeypatch.setattr(_shapes, "_MAX_COMBINATIONS", 1)  # the one-field-at-a-time search
    cheap = _fields_sampler(pairs, cost=100, epochs=50, boundaries=[[5, 12], [4, 8]],
                            shuffle=False)
    assert [g.tolist() for g in budget_field_grids(cheap)] == [[4, 11, 31], [3, 6, 16]]
    assert _cost_of(s, budget_field_grids(s)) == _cost_of(s, (np.array([31]), np.array([16])))
