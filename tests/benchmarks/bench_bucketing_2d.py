"""2-D bucketing benchmark (issue 20): padding of both sides of encoder–decoder pairs.

Run: .venv/bin/python -m pytest -q -s tests/benchmarks/bench_bucketing_2d.py -o addopts="" \
         -o python_files="bench_*.py" -p no:xdist

Batch 64, each field of a batch padded to its own longest entry; padding = 1 - real / padded
steps of both fields together. Against, in the same process: random batches, seqprep's 1-D
buckets on the source length and on the target length, sorted by source then target (and the
reverse; one fixed order, no fresh order per epoch), and the issue's 24 x 24 quantile grid
with random batches inside each cell (no merging: more, partly empty batches). Corpora:

* CMU Pronouncing Dictionary pairs (letters -> phonemes) when ``seqprep.datasets.load_cmudict``
  is there (the g2p engineer's bundled subset), otherwise word-like synthetic pairs;
* synthetic correlated pairs (correlation ~0.88, the issue's real pair set was 0.88);
* synthetic weakly correlated pairs (~0.2; the issue's weak dictionary was 0.17).

Targets (issue 20): 2-D padding within 0.02 of the better sorted order on correlated pairs and
at most half of 1-D bucketing on either field. Padding is deterministic (seeded plans); the
planning times are wall clock on a shared machine.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from seqprep import BucketSampler
from seqprep.planning._boundaries import length_histogram, quantile_boundaries

BATCH = 64


def _padding(lengths, batches):
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(len(b) * int(lengths[b].max(axis=0).sum()) for b in batches)
    return 1 - real / padded


def _chunks(order, size=BATCH):
    return [order[i : i + size] for i in range(0, len(order), size)]


def _cmudict():
    try:
        from seqprep.datasets import load_cmudict
    except ImportError:
        return None
    src, tgt = [], []
    for split in ("train", "test"):
        data = load_cmudict(split)
        src += [len(g) for g in data.graphemes]
        tgt += [len(p) for p in data.phonemes]
    return np.stack([src, tgt], axis=1).astype(np.int64)


def _word_like(n, correlated, seed=0):
    """Letters of English-like words (lognormal, median 8) and a phoneme-like count."""
    rng = np.random.default_rng(seed)
    src = np.clip(np.round(rng.lognormal(np.log(8), 0.35, n)), 1, 24).astype(np.int64)
    if correlated:
        tgt = np.clip(np.round(0.85 * src + rng.normal(0, 1.35, n)), 1, None)
    else:
        tgt = np.clip(np.round(rng.lognormal(np.log(8), 0.35, n)), 1, None)
        tgt = np.where(rng.random(n) < 0.2, src, tgt)
    return np.stack([src, tgt.astype(np.int64)], axis=1)


def _quantile_grid(lengths, k=24, seed=0):
    """The issue's baseline: a k x k quantile grid, random batches within each cell."""
    bounds = [quantile_boundaries(*length_histogram(lengths[:, f]), k) for f in range(2)]
    cells = np.ravel_multi_index(
        [np.searchsorted(b, lengths[:, f], side="right") for f, b in enumerate(bounds)],
        (bounds[0].size + 1, bounds[1].size + 1),
    )
    rng = np.random.default_rng(seed)
    batches = []
    for cell in np.unique(cells):
        batches += _chunks(rng.permutation(np.flatnonzero(cells == cell)))
    return batches


def _compare(name, lengths):
    n = len(lengths)
    corr = float(np.corrcoef(lengths.T)[0, 1])
    rng = np.random.default_rng(0)
    rows = {}
    t0 = time.perf_counter()
    one = [BucketSampler(lengths[:, f], batch_size=BATCH) for f in range(2)]
    t_one = (time.perf_counter() - t0) / 2
    t0 = time.perf_counter()
    two = BucketSampler({"src": lengths[:, 0], "tgt": lengths[:, 1]}, batch_size=BATCH)
    t_two = time.perf_counter() - t0
    batches = {
        "random batches": _chunks(rng.permutation(n)),
        "1-D buckets on the source": one[0].batches(0),
        "1-D buckets on the target": one[1].batches(0),
        "sorted by source then target": _chunks(np.lexsort((lengths[:, 1], lengths[:, 0]))),
        "sorted by target then source": _chunks(np.lexsort((lengths[:, 0], lengths[:, 1]))),
        "24 x 24 quantile grid, random in cells": _quantile_grid(lengths),
        "seqprep 2-D buckets": two.batches(0),
    }
    for key, b in batches.items():
        rows[key] = (_padding(lengths, b), len(b))
    epochs = [_padding(lengths, two.batches(e)) for e in range(1, 5)]
    print(f"\n{name}: {n} pairs, correlation {corr:.2f}, batch {BATCH}")
    for key, (pad, count) in rows.items():
        print(f"  {key:<42} padding {pad:.4f}  batches {count}")
    bucket = two.report(pad_to="bucket")
    label = 'seqprep 2-D buckets, pad_to="bucket"'
    print(f"  {label:<42} padding {bucket['padding_fraction']:.4f}  batches "
          f"{bucket['n_batches']}  shapes {bucket['n_shapes']} (pad_to='batch': "
          f"{two.report()['n_shapes']})")
    best_sorted = min(rows["sorted by source then target"][0],
                      rows["sorted by target then source"][0])
    best_1d = min(rows["1-D buckets on the source"][0], rows["1-D buckets on the target"][0])
    pad2 = rows["seqprep 2-D buckets"][0]
    print(f"  2-D minus the better sorted order: {pad2 - best_sorted:+.4f} (target <= +0.02)")
    print(f"  2-D / the better 1-D bucketing: {pad2 / best_1d:.2f} (target <= 0.5)")
    print(f"  2-D padding over epochs 1-4: {min(epochs):.4f}..{max(epochs):.4f}; grid "
          f"{two.grid_shape}, {len(two)} batches")
    print(f"  planning: 2-D sampler {t_two:.2f} s vs a 1-D sampler {t_one:.2f} s "
          f"(ratio {t_two / max(t_one, 1e-9):.1f}x; wall clock, shared machine)")
    return pad2, best_sorted, best_1d, corr


@pytest.mark.parametrize("corpus", ["cmudict", "correlated", "weak"])
def test_bench_2d_padding(corpus):
    if corpus == "cmudict":
        lengths = _cmudict()
        name = "CMU Pronouncing Dictionary (letters -> phonemes)"
        if lengths is None:
            lengths = _word_like(40_000, correlated=True, seed=1)
            name = "word-like synthetic pairs (load_cmudict not available)"
    elif corpus == "correlated":
        lengths, name = _word_like(63_849, correlated=True), "synthetic correlated pairs"
    else:
        lengths, name = _word_like(8_505, correlated=False), "synthetic weakly correlated pairs"
    pad2, best_sorted, best_1d, corr = _compare(name, lengths)
    assert pad2 <= 0.5 * best_1d
    if corr > 0.8:
        assert pad2 <= best_sorted + 0.02
