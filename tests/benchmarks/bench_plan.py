"""The plan type's flat form against the list route (issue 12): what an executor waits for.

An executor needs one epoch as flat indices, rows per batch and widths (bucketing) or as a
slot matrix (packing). Before ``BatchPlan`` grew a flat form, executors got a list of index
arrays (or of rows) and flattened it with a Python loop; that route is the baseline here, run
in the same process on the same plans: ``batches(epoch)`` then the old flattening code.
Sizes: SEQPREP_BENCH_PLAN_N lengths (default 2,000,000) lognormal(3.5, 0.8) clipped to 2..400.
"""

from __future__ import annotations

import os
import time

import numpy as np

from seqprep import BucketSampler, PackSampler

N = int(os.environ.get("SEQPREP_BENCH_PLAN_N", "2000000"))
EPOCHS = 5


def _lengths(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(np.round(rng.lognormal(3.5, 0.8, n)), 2, 400).astype(np.int64)


def _best(fn, epochs=EPOCHS) -> float:
    times = []
    for e in range(1, epochs + 1):
        t0 = time.perf_counter()
        fn(e)
        times.append(time.perf_counter() - t0)
    return min(times)


def _list_route(sampler: BucketSampler, lengths: np.ndarray, epoch: int):
    """The list of batches, flattened as ``data._plan_arrays`` did before the flat form."""
    batches = sampler.batches(epoch)
    sizes = np.fromiter((b.size for b in batches), dtype=np.int64, count=len(batches))
    flat = np.concatenate(batches)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return flat, sizes, np.maximum.reduceat(lengths[flat], starts)


def _flat_route(sampler: BucketSampler, lengths: np.ndarray, epoch: int):
    plan = sampler.plan(epoch)
    return plan.rows, plan.sizes, plan.widths("batch", lengths)


def test_bucket_sampler_epoch_to_executor_inputs():
    lengths = _lengths(N)
    sampler = BucketSampler(lengths, batch_size=64)

    def fresh(route):
        def run(e):
            sampler._cache = None  # plan the epoch anew each time
            return route(sampler, lengths, e)
        return run

    a, b = fresh(_flat_route)(1), fresh(_list_route)(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    t_flat, t_list = _best(fresh(_flat_route)), _best(fresh(_list_route))
    print(f"\nBucketSampler, {N:,} lengths, batch 64, {len(sampler):,} batches per epoch:")
    print(f"  plan -> (rows, sizes, widths) via the flat form   {t_flat:.3f} s")
    print(f"  plan -> batches list -> flattened (baseline)      {t_list:.3f} s")
    print(f"  ratio flat / list: {t_flat / t_list:.2f}x")


def _old_slot_matrix(sampler: PackSampler, epoch: int):
    """``packed._slot_matrix`` before the plan built the matrix: from the list of rows."""
    batches = sampler.batches(epoch)
    rows = [row for batch in batches for row in batch]
    sizes = np.fromiter((len(b) for b in batches), np.int64, count=len(batches))
    slots = np.full((len(rows), max(1, sampler.max_segments_)), -1, np.int64)
    counts = np.fromiter((r.size for r in rows), np.int64, count=len(rows))
    flat = np.concatenate(rows)
    row_of = np.repeat(np.arange(len(rows)), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slots[row_of, np.arange(flat.size) - first[row_of]] = flat
    return slots, sizes


def test_pack_sampler_epoch_to_slot_matrix():
    n = N // 2
    lengths = _lengths(n)
    sampler = PackSampler(lengths, row_length=512, batch_size=32)

    def fresh(route):
        def run(e):
            sampler._cache = None
            return route(e)
        return run

    def via_plan(e):
        plan = sampler.plan(e)
        return plan.slots, plan.rows_per_batch

    a, b = via_plan(1), _old_slot_matrix(sampler, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    t_plan, t_list = _best(fresh(via_plan)), _best(fresh(lambda e: _old_slot_matrix(sampler, e)))
    print(f"\nPackSampler, {n:,} lengths, rows of 512, {sampler.num_rows_:,} rows:")
    print(f"  plan -> slot matrix (PackedPlan)                  {t_plan:.3f} s")
    print(f"  plan -> list of rows -> slot matrix (baseline)    {t_list:.3f} s")
    print(f"  ratio plan / list: {t_plan / t_list:.2f}x")
