"""PyTorch collate: ``sp.PadCollate`` vs a naive ``torch.nn.utils.rnn.pad_sequence`` collate.

Run: .venv/bin/python -m pytest -q -s tests/benchmarks/bench_loaders.py -o addopts="" \
         -o python_files="bench_*.py" -p no:xdist
     or  .venv/bin/python tests/benchmarks/bench_loaders.py --n 4000 --repeats 5

Workload: ``N`` integer sequences (default 4000), lengths lognormal(3.5, 0.8) clipped to
2..400, one label each; a ``BucketSampler`` (batch_size 64) plans one epoch, and each collate
turns the same fetched items (``(x, y)`` tuples, numpy int32 arrays) into padded torch tensors:

* baseline: what a PyTorch user writes, ``pad_sequence([torch.from_numpy(x) ...],
  batch_first=True)`` and ``torch.tensor(labels)``, no checks;
* ``PadCollate()``: the same batch (asserted equal) with seqprep's checks (dtype casts, NaN,
  target rules) and the shared kernel.

Both run in this process, alternating, ``repeats`` times over the epoch; the median epoch time
of each and their ratio are printed. A collate runs inside DataLoader workers, once per batch,
so its per-batch time is what matters; a model step costs far more.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

BATCH = 64


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(3.5, 0.8, n).astype(np.int64), 2, 400)
    x = [rng.integers(1, 1000, k).astype(np.int32) for k in lengths]
    y = (rng.random(n) < 0.5).astype(np.float32)
    return x, y


def naive_collate(batch):
    import torch
    from torch.nn.utils.rnn import pad_sequence

    xs, ys = zip(*batch, strict=True)
    return (pad_sequence([torch.from_numpy(x) for x in xs], batch_first=True),
            torch.tensor(np.asarray(ys)))


def run(n: int = 4000, repeats: int = 5) -> dict[str, float]:
    import torch

    import seqprep as sp

    x, y = _data(n)
    items = list(zip(x, y, strict=True))
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=BATCH, seed=0)
    fetched = [[items[i] for i in idx] for idx in sampler.batches(0)]
    collates = {"pad_sequence": naive_collate, "PadCollate": sp.PadCollate()}
    for a, b in zip(naive_collate(fetched[0]), collates["PadCollate"](fetched[0]), strict=True):
        assert torch.equal(a, b), "the two collates disagree"
    times: dict[str, list[float]] = {k: [] for k in collates}
    for _ in range(repeats):
        for name, collate in collates.items():
            t0 = time.perf_counter()
            for batch in fetched:
                collate(batch)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    spread = {k: (min(v), max(v)) for k, v in times.items()}
    per_batch = {k: 1e6 * v / len(fetched) for k, v in med.items()}
    print(f"\nbench_loaders: {n} sequences, {len(fetched)} batches of {BATCH}, {repeats} repeats")
    for k in collates:
        lo, hi = spread[k]
        print(f"  {k:13s} epoch {med[k] * 1e3:8.1f} ms (min {lo * 1e3:.1f}, max {hi * 1e3:.1f})"
              f"  {per_batch[k]:7.1f} us/batch")
    ratio = med["PadCollate"] / med["pad_sequence"]
    print(f"  ratio PadCollate / pad_sequence: {ratio:.2f}x")
    return {"ratio": ratio, **{f"us_per_batch_{k}": v for k, v in per_batch.items()}}


def test_bench_loaders():
    import pytest

    pytest.importorskip("torch")
    out = run()
    assert out["ratio"] > 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    run(args.n, args.repeats)
