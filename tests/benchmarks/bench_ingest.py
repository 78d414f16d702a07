"""Benchmark: from_dataframe against a per-id pandas loop, in the same process.

Run with ``make bench`` or::

    .venv/bin/python -m pytest -q -s tests/benchmarks/bench_ingest.py -o addopts="" \\
        -o python_files="bench_*.py"

Target (issue 7): 1,000,000 rows over 10,000 ids in under 2 s and at least 10x faster than
``for i, g in df.groupby(id): g.sort_values(time)[features].to_numpy()``.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from seqprep.readers._ingest_files import read_lengths, read_sequences
from seqprep.readers._ingest_frames import from_dataframe

N_ROWS = 1_000_000
N_IDS = 10_000
FEATURES = ["f0", "f1", "f2", "f3"]


def _frame(seed: int = 0) -> pd.DataFrame:
    """Long-format frame with rows shuffled, so both methods really have to sort."""
    rng = np.random.default_rng(seed)
    lengths = rng.multinomial(N_ROWS - N_IDS, np.full(N_IDS, 1 / N_IDS)) + 1
    ids = np.repeat(np.arange(N_IDS) * 7 + 3, lengths)
    steps = np.arange(N_ROWS) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    shuffle = rng.permutation(N_ROWS)
    columns = {"id": ids[shuffle], "t": steps[shuffle].astype(np.float64)}
    for name in FEATURES:
        columns[name] = rng.standard_normal(N_ROWS).astype(np.float32)
    columns["label"] = np.repeat(rng.integers(0, 5, N_IDS), lengths)[shuffle]
    return pd.DataFrame(columns)


def _best_of(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _loop(df: pd.DataFrame) -> list[np.ndarray]:
    return [g.sort_values("t")[FEATURES].to_numpy() for _, g in df.groupby("id")]


def test_from_dataframe_vs_per_id_loop():
    df = _frame()
    fast_s, (fast, _) = _best_of(
        lambda: from_dataframe(df, id="id", time="t", features=FEATURES, sort_ids=True), 3
    )
    loop_s, slow = _best_of(lambda: _loop(df), 1)
    assert len(fast) == len(slow) == N_IDS
    for a, b in zip(fast[:50], slow[:50], strict=True):
        np.testing.assert_array_equal(a, b)
    ratio = loop_s / fast_s
    print(
        f"\nfrom_dataframe, {N_ROWS:,} rows / {N_IDS:,} ids / {len(FEATURES)} features: "
        f"{fast_s:.3f} s (best of 3); per-id groupby loop: {loop_s:.3f} s; "
        f"speed-up {ratio:.1f}x (targets: < 2 s, >= 10x)"
    )
    with_target_s, _ = _best_of(
        lambda: from_dataframe(df, id="id", time="t", features=FEATURES, target="label"), 3
    )
    print(f"from_dataframe with a per-id target column: {with_target_s:.3f} s")
    assert fast_s < 2.0 and ratio >= 10, (fast_s, ratio)


def test_read_lengths_vs_read_sequences(tmp_path):
    df = _frame(seed=1)
    path = tmp_path / "steps.parquet"
    df.to_parquet(path)
    lengths_s, lengths = _best_of(lambda: read_lengths(path, id="id"), 3)
    full_s, (seqs, _) = _best_of(
        lambda: read_sequences(path, id="id", time="t", features=FEATURES), 3
    )
    assert lengths.tolist() == [len(s) for s in seqs]
    print(
        f"\nParquet, {N_ROWS:,} rows: read_lengths(id=) {lengths_s:.3f} s; "
        f"read_sequences {full_s:.3f} s; ratio {full_s / lengths_s:.1f}x"
    )
