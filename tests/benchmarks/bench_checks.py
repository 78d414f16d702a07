"""Benchmark: the cost of refusing NaN/inf features, against the normalisation it follows.

Run with ``make bench`` or::

    .venv/bin/python -m pytest -q -s tests/benchmarks/bench_checks.py -o addopts="" \\
        -o python_files="bench_*.py"

Target (issue 11, item 4): the finite check is one vectorised pass over the flat values, a
small fraction of ``as_ragged`` (which every entry point runs anyway) on the same data.
"""

from __future__ import annotations

import time

import numpy as np

from seqprep._core.checks import check_finite_features, check_finite_labels
from seqprep._core.ragged import as_ragged

N = 20_000
FEATURES = 8


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def test_finite_check_cost_against_as_ragged():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(3.4, 0.9, N).astype(int), 1, 600)
    x = [rng.standard_normal((n, FEATURES)).astype("float32") for n in lengths]
    y = rng.standard_normal(N).astype("float32")
    rag = as_ragged(x)
    base = _best_of(lambda: as_ragged(x), 3)
    check = _best_of(lambda: check_finite_features(rag.values, "x", offsets=rag.offsets), 5)
    labels = _best_of(lambda: check_finite_labels(y, "y"), 5)
    print(
        f"\n{N} sequences, {rag.values.shape[0]} steps x {FEATURES} float32 "
        f"({rag.values.nbytes / 1e6:.0f} MB): as_ragged {base * 1e3:.1f} ms, finite check on "
        f"x {check * 1e3:.2f} ms ({check / base:.3f}x as_ragged), on y {labels * 1e6:.0f} us"
    )
    assert check < base  # one pass over the values, never a per-sequence loop
