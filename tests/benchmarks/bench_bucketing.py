"""Bucketing benchmarks: padding against fully sorted batching and tf.data, planning at 10M.

Run: .venv/bin/python -m pytest -q -s tests/benchmarks/bench_bucketing.py -o addopts="" \
         -o python_files="bench_*.py"

Every figure is printed next to its baseline from the same process, with the ratio.
"""

from __future__ import annotations

import gc
import os
import time
import tracemalloc

import numpy as np
import pytest

from seqprep.planning import Bucketer, BucketSampler, PlanOptions, padding_report
from seqprep.planning._boundaries import length_histogram, quantile_boundaries

BATCH = 64


def _lognormal(n=8192, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(3.5, 0.8, n)), 2, 400).astype(np.int64)


def _sorted_batches(lengths, batch=BATCH):
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch] for i in range(0, lengths.size, batch)]


def _quantile_boundaries(lengths, n_boundaries=8):
    values, counts = length_histogram(lengths)
    return quantile_boundaries(values, counts, n_boundaries + 1)


def _tf_bucket_by_sequence_length(lengths, boundaries, batch=BATCH, seed=0):
    """Padding of the batches the real tf.data op emits on a shuffled stream of sequences."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    table = tf.constant(lengths, dtype=tf.int32)
    ds = tf.data.Dataset.range(lengths.size).shuffle(lengths.size, seed=seed)
    ds = ds.map(lambda i: tf.ones([table[i]], tf.int32))
    ds = ds.bucket_by_sequence_length(
        element_length_func=lambda x: tf.shape(x)[0],
        bucket_boundaries=[int(b) for b in boundaries],
        bucket_batch_sizes=[batch] * (len(boundaries) + 1),
    )
    padded = real = steps = n_batches = 0
    shapes = set()
    for x in ds.as_numpy_iterator():
        padded += x.size
        real += int(x.sum())
        steps += x.shape[1]
        n_batches += 1
        shapes.add(x.shape)
    return {
        "padding_fraction": 1 - real / padded,
        "n_batches": n_batches,
        "n_shapes": len(shapes),
        "steps_cost": steps,
    }


def _line(name, value, baseline=None, baseline_name=""):
    text = f"  {name:<58} {value:8.4f}"
    if baseline is not None:
        ratio = value / baseline if baseline else float("inf")
        diff = value - baseline
        text += f"   vs {baseline_name} {baseline:.4f}  (ratio {ratio:.2f}, diff {diff:+.4f})"
    print(text)


def _compare_default_sampler(lengths, title):
    """Print padding and RNN steps of sorted batches, the default sampler and tf.data."""
    floor = padding_report(lengths, _sorted_batches(lengths))
    sampler = BucketSampler(lengths, batch_size=BATCH)
    ours = sampler.report()
    tf_rep = _tf_bucket_by_sequence_length(lengths, _quantile_boundaries(lengths))
    print(f"\n{title}, n={lengths.size}, batch {BATCH}")
    print(f"  default sampler: {sampler.num_buckets} buckets, {len(sampler)} batches")
    _line("padding, fully length-sorted batches (floor)", floor["padding_fraction"])
    _line(
        "padding, seqprep default sampler",
        ours["padding_fraction"],
        floor["padding_fraction"],
        "sorted",
    )
    _line(
        "padding, tf bucket_by_sequence_length, 8 quantile bounds",
        tf_rep["padding_fraction"],
        ours["padding_fraction"],
        "seqprep",
    )
    _line("RNN steps/epoch, sorted", floor["steps_cost"])
    _line("RNN steps/epoch, seqprep", ours["steps_cost"], floor["steps_cost"], "sorted")
    _line("RNN steps/epoch, tf.data", tf_rep["steps_cost"], ours["steps_cost"], "seqprep")
    print(
        f"  batches: sorted {floor['n_batches']}, seqprep {ours['n_batches']}, "
        f"tf.data {tf_rep['n_batches']} (partial batches pad less but cost steps)"
    )
    return floor, ours


def test_default_sampler_vs_sorted_and_tf_bucketing():
    floor, ours = _compare_default_sampler(_lognormal(), "lognormal(3.5, 0.8) clipped 2..400")
    assert ours["padding_fraction"] <= floor["padding_fraction"] + 0.02


def test_optimal_vs_quantile_with_eight_buckets():
    lengths = _lognormal()
    figures = {}
    for strategy in ("optimal", "quantile", "geometric"):
        b = Bucketer(8, strategy=strategy, batch_size=BATCH).fit(lengths)
        realised = BucketSampler(lengths, boundaries=b, batch_size=BATCH).report()
        figures[strategy] = (b.padding_fraction_, realised["padding_fraction"])
    print("\nnum_buckets=8, batch 64: (expected, realised by the sampler)")
    for strategy, (expected, realised) in figures.items():
        print(f"  {strategy:<10} expected {expected:.4f}  realised {realised:.4f}")
    _line(
        "realised padding, optimal vs quantile",
        figures["optimal"][1],
        figures["quantile"][1],
        "quantile",
    )
    assert figures["optimal"][1] < figures["quantile"][1]


def test_pad_to_bucket_with_at_most_16_shapes():
    lengths = _lognormal()
    b = Bucketer(16).fit(lengths)  # no batch model: every row padded to its bucket's length
    sampler = BucketSampler(lengths, boundaries=b, batch_size=BATCH)
    bucket = sampler.report(pad_to="bucket")
    batch = sampler.report(pad_to="batch")
    quant = BucketSampler(
        lengths, boundaries=Bucketer(16, strategy="quantile").fit(lengths), batch_size=BATCH
    ).report(pad_to="bucket")
    print(f"\npad_to='bucket', 16 buckets: {bucket['n_lengths']} padded lengths")
    _line("padding, every row to its bucket's length (from boundaries)", b.padding_fraction_)
    _line(
        "padding, sampler plan, pad_to='bucket'",
        bucket["padding_fraction"],
        quant["padding_fraction"],
        "16 quantile",
    )
    _line("padding, sampler plan, pad_to='batch'", batch["padding_fraction"])
    unmerged_sampler = BucketSampler(lengths, boundaries=b, batch_size=BATCH,
                                     options=PlanOptions(merge_leftovers=False))
    unmerged = unmerged_sampler.report(pad_to="bucket")
    _line(
        "padding, sampler plan, pad_to='bucket', merge_leftovers=False",
        unmerged["padding_fraction"],
        bucket["padding_fraction"],
        "merged leftovers",
    )
    print(f"  batches per epoch: {len(unmerged_sampler)} unmerged vs {len(sampler)} merged")
    assert bucket["n_lengths"] <= 16 and unmerged["n_lengths"] <= 16
    # Merged leftover batches pad to the larger bucket, so the default plan pads a little more
    # than the per-row figure; keeping leftovers in their bucket realises it.
    assert b.padding_fraction_ <= 0.10
    assert unmerged["padding_fraction"] <= 0.10


def test_quadratic_cost_term_bounds_attention_cost_per_batch():
    """max_tokens with and without quadratic_length: what an attention layer would pay.

    The baseline is the linear budget (rows x longest <= max_tokens) on the same lengths; the
    figure of merit is the largest per-batch attention cost, rows x longest**2 (the score
    matrices), and its spread across batches: the quadratic term is meant to even it out.
    """
    lengths = _lognormal()
    budget, q = 8192, 64
    print(f"\nmax_tokens={budget}, lognormal lengths n={lengths.size}: linear budget vs "
          f"quadratic_length={q}")
    stats = {}
    for name, kwargs in [("linear", {}),
                         ("quadratic", {"options": PlanOptions(quadratic_length=q)})]:
        sampler = BucketSampler(lengths, max_tokens=budget, seed=0, **kwargs)
        batches = sampler.batches(0)
        width = np.array([int(lengths[b].max()) for b in batches])
        rows = np.array([b.size for b in batches])
        attention = rows * width.astype(np.int64) ** 2
        r = sampler.report()
        stats[name] = attention.max()
        print(f"  {name:<10} {len(sampler):4d} batches, padding {r['padding_fraction']:.3f}, "
              f"attention cost per batch: max {attention.max():,}, "
              f"max/median {attention.max() / np.median(attention):.1f}")
        if kwargs:
            assert np.all(rows * width * (q + width) <= budget * q)
    print(f"  largest batch attention cost, quadratic / linear: "
          f"{stats['quadratic'] / stats['linear']:.2f}x")
    assert stats["quadratic"] < stats["linear"]


def test_planning_ten_million_lengths():
    lengths = _lognormal(10_000_000, seed=1)
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    sampler = BucketSampler(lengths, batch_size=BATCH)
    t1 = time.perf_counter()
    _, build_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t2 = time.perf_counter()
    batches = sampler.batches(1)
    t3 = time.perf_counter()
    _, plan_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # The same epoch again without tracemalloc's per-allocation overhead.
    sampler._cache = None
    t4 = time.perf_counter()
    sampler.batches(2)
    t5 = time.perf_counter()
    # Baseline in the same process: one argsort of the lengths (what sorted batching costs).
    t6 = time.perf_counter()
    np.argsort(lengths, kind="stable")
    t7 = time.perf_counter()
    nbytes = lengths.nbytes
    print(
        f"\n10,000,000 lengths, batch {BATCH}: {sampler.num_buckets} buckets, "
        f"{len(batches)} batches"
    )
    _line("construction (fit boundaries, bucket, sort) seconds", t1 - t0, t7 - t6, "argsort")
    _line("plan one epoch, seconds (traced)", t3 - t2)
    _line("plan one epoch, seconds", t5 - t4, t7 - t6, "argsort")
    _line("construction peak memory / lengths.nbytes", build_peak / nbytes)
    _line("planning peak memory / lengths.nbytes", (plan_peak - base) / nbytes)
    assert t5 - t4 <= 2.0
    assert (plan_peak - base) <= 3 * nbytes


def test_japanese_vowels_lengths():
    try:
        from seqprep.datasets import load_japanese_vowels

        x, _ = load_japanese_vowels("train")
    except Exception as err:  # the data set is bundled by another module
        pytest.skip(f"Japanese Vowels not available ({err!r}); skipping that part")
    lengths = np.array([len(s) for s in x], dtype=np.int64)
    floor, ours = _compare_default_sampler(lengths, "Japanese Vowels train lengths")
    assert ours["padding_fraction"] <= floor["padding_fraction"] + 0.02
