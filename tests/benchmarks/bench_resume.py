"""What seqprep.BackupAndRestore's data fingerprint costs against one epoch's input pipeline.

Run: .venv/bin/python -m pytest -q -s tests/benchmarks/bench_resume.py -o addopts="" \
         -o python_files="bench_*.py" -p no:xdist

1 M integer sequences, lengths lognormal(3.0, 0.7) clipped to 1..200 (about 25 M steps),
float32 labels and per-sequence weights, batches of 64 (``bucketed_dataset``, default
arguments). Timed in this process, one after the other, wall and process CPU time:

* the fingerprint: the SHA-256 digests of the features, labels, weights and arguments that a
  checkpoint records (``passes.data.value()``, computed from scratch: the digests are cached
  after the first checkpoint, so a fit pays this once, not once per epoch);
* one epoch of the input pipeline: one pass over the dataset (no model), best of 2 after an
  untimed warm-up pass.

Target (issue 18): the fingerprint under 5 % of one epoch's pipeline.
"""

from __future__ import annotations

import time

import _common  # noqa: F401  (sets a quiet CPU-only environment before TensorFlow loads)
import numpy as np

import seqprep as sp
from seqprep.inputs._fingerprint import DataDigest

N, BATCH = 1_000_000, 64


def _timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def test_fingerprint_costs_under_five_percent_of_an_epoch():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(3.0, 0.7, N).astype(np.int64), 1, 200)
    flat = rng.integers(1, 1000, int(lengths.sum())).astype(np.int32)
    x = np.split(flat, np.cumsum(lengths)[:-1])
    y = rng.random(N).astype(np.float32)
    w = rng.random(N).astype(np.float32) + 0.5
    sampler = sp.BucketSampler(lengths, batch_size=BATCH, seed=0)
    ds = sp.bucketed_dataset(x, y, sampler=sampler, sample_weight=w)
    passes = sp.epoch_stream(ds)
    digest = passes.data

    def fingerprint():
        fresh = DataDigest(digest._parts, digest._arguments)  # the same parts, not cached
        fresh.value()

    def epoch():
        for _ in ds:
            pass

    epoch()  # warm-up (the first pass also plans the epoch)
    epochs = [_timed(epoch) for _ in range(2)]
    prints = [_timed(fingerprint) for _ in range(3)]
    e_wall, e_cpu = min(t[0] for t in epochs), min(t[1] for t in epochs)
    f_wall, f_cpu = min(t[0] for t in prints), min(t[1] for t in prints)
    steps = int(lengths.sum())
    print(
        f"\n[resume] {N} sequences, {steps / 1e6:.1f} M steps, {len(sampler)} batches: "
        f"fingerprint {f_wall * 1e3:.0f} ms wall / {f_cpu * 1e3:.0f} ms CPU, one epoch of the "
        f"pipeline {e_wall:.2f} s wall / {e_cpu:.2f} s CPU; ratio {f_wall / e_wall:.2%} wall, "
        f"{f_cpu / e_cpu:.2%} CPU (all runs: fingerprint "
        f"{[round(t[0] * 1e3) for t in prints]} ms, epoch {[round(t[0], 2) for t in epochs]} s)"
    )
    assert f_cpu / e_cpu < 0.05
