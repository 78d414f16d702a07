"""Benchmark: what data-parallel fill rows cost (issue 21).

Run with ``make bench`` or::

    .venv/bin/python -m pytest -q -s tests/benchmarks/bench_fill.py -o addopts="" \\
        -o python_files="bench_*.py"

A batch of ``B`` rows is topped up to ``k * ceil(B / k)`` rows for ``k`` devices (the fill
rows: one step of the data, then padding, weight 0). Printed, for a long-tailed corpus: the
rows and padded tokens the fill rows add to an epoch (``batch_size`` and ``max_tokens``
plans, ``k`` = 2, 4, 8), and the time of one epoch of ``bucketed_dataset`` batches without
and with fill rows (``k`` = 4), and of making the stage's fill rows once.
"""

from __future__ import annotations

import timeit

import numpy as np

import seqprep as sp
from seqprep.inputs import _stage
from seqprep.planning._fill import filled_sizes

N = 20_000


def _best_of(fn, repeats: int) -> float:
    return min(timeit.repeat(fn, number=1, repeat=repeats))


def _corpus():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(3.0, 0.8, N).astype(int), 1, 400)
    x = [rng.integers(1, 1000, n).astype("int32") for n in lengths]
    return lengths, x, rng.random(N).astype("float32")


def test_fill_rows_added_rows_and_tokens():
    lengths, _, _ = _corpus()
    print()
    for name, budget in (("batch_size=30", {"batch_size": 30}),
                         ("max_tokens=2048", {"max_tokens": 2048})):
        plan = sp.BucketSampler(lengths, seed=0, **budget).plan(0)
        sizes = plan.sizes
        widths = plan.widths("bucket", lengths)
        tokens = float(np.sum(sizes * widths))
        for k in (2, 4, 8):
            filled = filled_sizes(sizes, k)
            extra = filled - sizes
            assert np.all(extra < k) and np.all(filled % k == 0)
            print(f"{name:>16}, k={k}: {len(plan)} batches, fill rows "
                  f"{int(extra.sum())} (+{extra.sum() / sizes.sum():.2%} rows), padded tokens "
                  f"+{np.sum(extra * widths) / tokens:.2%}")


def test_fill_rows_epoch_time():
    lengths, x, y = _corpus()
    sampler = sp.BucketSampler(lengths, max_tokens=2048, seed=0)

    def epoch(dp):
        ds = sp.bucketed_dataset(x, y, sampler=sampler, pad_to="bucket",
                                 options=sp.Options(data_parallel=dp))
        return lambda: sum(1 for _ in ds.as_numpy_iterator())

    plain, filled = epoch(None), epoch(4)
    plain(), filled()  # warm up: tracing, first plan
    t_plain = t_filled = float("inf")
    for _ in range(5):  # interleaved, best of each: the machine's load moves both alike
        t_plain = min(t_plain, _best_of(plain, 1))
        t_filled = min(t_filled, _best_of(filled, 1))
    stage = _stage.prepare(x, y)
    t_stage = _best_of(lambda: _stage.with_fill(stage), 5)
    print(f"\nbucketed_dataset epoch ({len(sampler)} batches, {N} sequences): no fill "
          f"{t_plain * 1e3:.0f} ms, data_parallel=4 {t_filled * 1e3:.0f} ms "
          f"({t_filled / t_plain:.2f}x); with_fill on the stage {t_stage * 1e3:.2f} ms")
