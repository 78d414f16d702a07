"""Bucketer: exact boundaries at the edges, the cost model, optimality, bad input."""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprep.planning import Bucketer, NotFittedError, as_boundaries
from seqprep.planning._boundaries import (
    expected_bucket_tokens,
    expected_tokens,
    length_histogram,
    token_length_limit,
)


def _lognormal(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(3.5, 0.8, n)), 2, 400).astype(np.int64)


def _distributions():
    rng = np.random.default_rng(1)
    return {
        "lognormal": _lognormal(),
        "uniform": rng.integers(1, 300, 3000),
        "bimodal": np.concatenate([rng.integers(5, 15, 1500), rng.integers(180, 260, 500)]),
        "heavy": np.minimum(np.round(rng.pareto(1.2, 3000) * 10 + 1), 2000).astype(np.int64),
    }


# --------------------------------------------------------------------------- exact values


@pytest.mark.parametrize(
    ("strategy", "lengths", "num_buckets", "expected"),
    [
        ("quantile", [1, 2, 3, 4, 5, 6], 3, [3, 5]),
        ("quantile", [1, 2, 3, 4], 2, [3]),
        ("quantile", [5, 5, 5, 5], 4, []),  # one distinct length: one bucket
        ("quantile", [1, 2, 3], 1, []),
        ("geometric", [1, 1000], 4, [6, 32, 178]),
        ("geometric", [7, 7, 7], 3, []),
        ("optimal", [2, 2, 3, 9, 10, 10], 2, [4]),
        ("optimal", [1, 1, 1, 50, 51, 51], 3, [2, 51]),
        ("optimal", [0, 0, 0, 4], 2, [1]),
        ("optimal", [3], 5, []),
    ],
)
def test_exact_boundaries(strategy, lengths, num_buckets, expected):
    b = Bucketer(num_buckets, strategy=strategy).fit(lengths)
    assert b.boundaries_.tolist() == expected
    assert b.boundaries_.dtype == np.int64
    assert b.num_buckets_ == len(expected) + 1


@pytest.mark.parametrize(
    ("length", "bucket"),
    [(0, 0), (9, 0), (10, 1), (11, 1), (19, 1), (20, 2), (21, 2), (10**9, 2)],
)
def test_length_equal_to_boundary_lands_in_upper_bucket(length, bucket):
    b = Bucketer(3, strategy="quantile").fit([5, 15, 25])
    assert b.boundaries_.tolist() == [6, 16]
    b.boundaries_ = np.array([10, 20])
    assert b.bucket_of([length]).tolist() == [bucket]


def test_padding_fraction_exact_pad_to_bucket():
    # Two buckets {2, 2, 3} -> 3 and {9, 10, 10} -> 10: 39 padded tokens for 36 real.
    b = Bucketer(2).fit([2, 2, 3, 9, 10, 10])
    assert b.padding_fraction_ == pytest.approx(1 - 36 / 39)


def test_all_zero_lengths_have_no_padding():
    b = Bucketer().fit([0, 0, 0])
    assert b.boundaries_.tolist() == []
    assert b.padding_fraction_ == 0.0


# --------------------------------------------------------------------------- cost model


def _exact_expected_max(values, counts, k):
    """E[max of a uniform k-subset], straight from the definition with math.comb."""
    n = int(sum(counts))
    if n <= k:
        return float(max(values))
    total, below = 0.0, 0
    for v, c in zip(values, counts, strict=True):
        p_le = math.comb(below + c, k) / math.comb(n, k)
        p_lt = math.comb(below, k) / math.comb(n, k)
        total += v * (p_le - p_lt)
        below += c
    return total


@pytest.mark.parametrize("k", [1, 2, 5, 64])
def test_expected_bucket_tokens_matches_definition(k):
    values = np.array([10, 11, 12, 13, 15, 40])
    counts = np.array([30, 20, 20, 10, 3, 1])
    want = counts.sum() * _exact_expected_max(values, counts, k)
    assert expected_bucket_tokens(values, counts, k) == pytest.approx(want, rel=1e-9)


def test_expected_bucket_tokens_large_counts_use_stirling_accurately():
    values = np.array([100, 101, 102])
    counts = np.array([5000, 3000, 300])
    want = counts.sum() * _exact_expected_max(values, counts, 64)
    assert expected_bucket_tokens(values, counts, 64) == pytest.approx(want, rel=1e-9)


def _brute_force_min(values, counts, max_buckets, batch_size, max_tokens, quadratic=None):
    gaps = range(1, len(values))
    best = math.inf
    for k in range(0, min(max_buckets, len(values)) - 0):
        for cut in itertools.combinations(gaps, k):
            bounds = np.array([values[i - 1] + 1 for i in cut], dtype=np.int64)
            best = min(best, expected_tokens(values, counts, bounds, batch_size, max_tokens,
                                             quadratic))
    return best


@settings(max_examples=40)
@given(data=st.data())
def test_optimal_matches_brute_force_on_small_histograms(data):
    values = sorted(data.draw(st.sets(st.integers(0, 40), min_size=1, max_size=7), label="values"))
    counts = data.draw(
        st.lists(st.integers(1, 30), min_size=len(values), max_size=len(values)), label="counts"
    )
    num_buckets = data.draw(st.integers(1, 4), label="num_buckets")
    mode = data.draw(st.sampled_from(["none", "batch", "tokens", "quadratic"]), label="mode")
    batch_size = data.draw(st.integers(1, 12), label="batch_size") if mode == "batch" else None
    max_tokens = (data.draw(st.integers(40, 200), label="max_tokens")
                  if mode in ("tokens", "quadratic") else None)
    q = data.draw(st.integers(1, 60), label="quadratic_length") if mode == "quadratic" else None
    lengths = np.repeat(values, counts)
    v, c = length_histogram(lengths)
    b = Bucketer(num_buckets, batch_size=batch_size, max_tokens=max_tokens,
                 quadratic_length=q).fit(lengths)
    got = expected_tokens(v, c, b.boundaries_, batch_size, max_tokens, q)
    want = _brute_force_min(v, c, num_buckets, batch_size, max_tokens, q)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert b.num_buckets_ <= num_buckets


@pytest.mark.parametrize("name", list(_distributions()))
@pytest.mark.parametrize("num_buckets", [2, 4, 8, 16])
@pytest.mark.parametrize(
    "batching",
    [{}, {"batch_size": 64}, {"max_tokens": 4096},
     {"max_tokens": 4096, "quadratic_length": 128}],
)
def test_optimal_never_worse_than_quantile_or_geometric(name, num_buckets, batching):
    lengths = _distributions()[name]
    if "max_tokens" in batching:
        lengths = np.minimum(lengths, token_length_limit(
            batching["max_tokens"], batching.get("quadratic_length")))
    fracs = {
        s: Bucketer(num_buckets, strategy=s, **batching).fit(lengths).padding_fraction_
        for s in ("optimal", "quantile", "geometric")
    }
    assert fracs["optimal"] <= fracs["quantile"] + 1e-12
    assert fracs["optimal"] <= fracs["geometric"] + 1e-12


def test_optimal_beats_quantile_widely_with_eight_buckets():
    lengths = _lognormal()
    opt = Bucketer(8, batch_size=64).fit(lengths).padding_fraction_
    qua = Bucketer(8, strategy="quantile", batch_size=64).fit(lengths).padding_fraction_
    assert opt < 0.7 * qua


def test_many_distinct_lengths_use_atoms_and_stay_valid():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 100_000, 20_000)
    b = Bucketer(10, batch_size=32).fit(lengths)
    q = Bucketer(10, strategy="quantile", batch_size=32).fit(lengths)
    assert np.all(np.diff(b.boundaries_) > 0)
    assert b.num_buckets_ <= 10
    assert b.padding_fraction_ <= q.padding_fraction_ + 1e-12


@pytest.mark.parametrize("strategy", ["optimal", "quantile", "geometric"])
@pytest.mark.parametrize("target", [0.3, 0.1, 0.02])
def test_num_buckets_none_picks_fewest_meeting_target(strategy, target):
    lengths = _lognormal(2000)
    b = Bucketer(strategy=strategy, target_padding=target, batch_size=32).fit(lengths)
    assert b.padding_fraction_ <= target
    if strategy == "optimal" and b.num_buckets_ > 1:
        fewer = Bucketer(b.num_buckets_ - 1, batch_size=32).fit(lengths)
        assert fewer.padding_fraction_ > target


# --------------------------------------------------------------------------- estimator contract


def test_init_only_stores_and_fit_returns_self():
    b = Bucketer(3, strategy="geometric", target_padding=0.5, batch_size=4)
    assert vars(b) == {
        "num_buckets": 3,
        "strategy": "geometric",
        "target_padding": 0.5,
        "batch_size": 4,
        "max_tokens": None,
        "quadratic_length": None,
    }
    assert b.fit([1, 2, 3]) is b


def test_use_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted"):
        Bucketer().bucket_of([1])
    with pytest.raises(NotFittedError, match="fit"):
        as_boundaries(Bucketer())


def test_fit_does_not_mutate_input():
    lengths = np.array([5, 1, 9, 3, 3])
    before = lengths.copy()
    Bucketer(2, batch_size=2).fit(lengths)
    np.testing.assert_array_equal(lengths, before)


def test_repr_before_and_after_fit():
    b = Bucketer(4, strategy="quantile", batch_size=8)
    assert repr(b) == "Bucketer(4, strategy='quantile', batch_size=8)"
    b.fit([1, 2, 3, 4, 5, 6, 7, 8])
    assert repr(b).startswith("Bucketer(4, strategy='quantile', batch_size=8) fitted: 4 buckets")
    assert "expected padding" in repr(b)


def test_pickle_round_trip():
    b = Bucketer(3).fit([1, 5, 9, 20])
    c = pickle.loads(pickle.dumps(b))
    assert c.boundaries_.tolist() == b.boundaries_.tolist()
    assert c.padding_fraction_ == b.padding_fraction_


@pytest.mark.parametrize(
    ("kwargs", "lengths", "error", "match"),
    [
        ({}, [], ValueError, "`lengths` must not be empty"),
        ({}, [1, -2], ValueError, "`lengths` must hold non-negative"),
        ({}, [1.5, 2.0], TypeError, "`lengths` must hold integers"),
        ({"num_buckets": 0}, [1], ValueError, "`num_buckets` must be at least 1"),
        ({"strategy": "kmeans"}, [1], ValueError, "`strategy` must be"),
        ({"target_padding": 1.5}, [1], ValueError, "`target_padding`"),
        ({"batch_size": 0}, [1], ValueError, "`batch_size` must be at least 1"),
        ({"batch_size": 4, "max_tokens": 9}, [1], ValueError, "at most one of `batch_size`"),
    ],
)
def test_bad_input(kwargs, lengths, error, match):
    with pytest.raises(error, match=match):
        Bucketer(**kwargs).fit(lengths)


@pytest.mark.parametrize(
    ("boundaries", "error", "match"),
    [
        ([3, 3], ValueError, "strictly increasing"),
        ([0, 4], ValueError, "at least 1"),
        ([5, 2], ValueError, "strictly increasing"),
        ([1.5], TypeError, "must hold integers"),
        ([[1, 2]], ValueError, "1-D"),
    ],
)
def test_as_boundaries_rejects(boundaries, error, match):
    with pytest.raises(error, match=match):
        as_boundaries(boundaries)


def test_as_boundaries_accepts_list_array_and_fitted_bucketer():
    assert as_boundaries([]).tolist() == []
    assert as_boundaries(np.array([2, 9], dtype=np.int32)).dtype == np.int64
    fitted = Bucketer(2, strategy="quantile").fit([1, 2, 3, 4])
    out = as_boundaries(fitted)
    out[0] = 99  # a copy: the estimator is not changed
    assert fitted.boundaries_.tolist() == [3]


# ------------------------------------------------------------------ the default bucket count
# The default sampler fits 60-120 buckets on long-tailed data. It is kept uncapped because a
# cap costs padded steps on TensorFlow (docs/benchmarks.md, "Default bucket count"), while the
# shapes that a compiling backend meets are bounded by the width grid (pad_to="auto" on JAX),
# whatever the bucket count. These tests pin both halves of that choice.


@pytest.mark.parametrize(
    ("n", "batch_size", "mu", "sigma"),
    [(4000, 64, 3.5, 0.8), (8192, 64, 3.5, 0.8), (2000, 32, 4.0, 1.0)],
)
def test_default_bucket_count_pads_near_sorted_batching_and_below_any_cap(n, batch_size, mu,
                                                                           sigma):
    from seqprep import BucketSampler, count_shapes, width_grid

    rng = np.random.default_rng(0)
    lengths = np.clip(np.round(rng.lognormal(mu, sigma, n)), 2, 1000).astype(np.int64)
    sampler = BucketSampler(lengths, batch_size=batch_size)
    padding = sampler.report()["padding_fraction"]
    ordered = np.sort(lengths)
    chunks = [ordered[i : i + batch_size] for i in range(0, n, batch_size)]
    floor = 1 - lengths.sum() / sum(c.size * c.max() for c in chunks)
    assert padding <= floor + 0.01
    for cap in (16, 32):
        capped = BucketSampler(
            lengths, batch_size=batch_size,
            boundaries=Bucketer(cap, batch_size=batch_size).fit(lengths),
        )
        assert capped.report()["padding_fraction"] > padding
    # Many buckets, few shapes: the grid bounds what JAX compiles, over every epoch.
    grid = width_grid(sampler)
    assert count_shapes(sampler, pad_to=grid, epochs=5) <= len(grid) + 1 <= 17
