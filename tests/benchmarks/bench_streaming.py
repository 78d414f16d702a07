"""Benchmark: ``sp.bucket_by_sequence_length`` vs ``tf.data.Dataset.bucket_by_sequence_length``.

Run: .venv/bin/python -m pytest -q -s tests/benchmarks/bench_streaming.py -o addopts="" \
         -o python_files="bench_*.py"

Data: 8192 integer sequences with a float label, lengths lognormal(3.5, 0.8) clipped to
2..400, read from a filled ``cache()`` so that every contender reads the same elements at the
same cost. Boundaries: 8 quantile buckets. For each set of options, both transformations get
the same input and the same arguments; full passes are timed interleaved (tf.data, ours,
tf.data, ...), best of ``PASSES`` kept, the first pass of each included in the best-of (each
pass builds a new iterator, as each Keras epoch does). Batches per second and the ratio are
printed; the batch counts are checked equal.
"""

from __future__ import annotations

import time

import _common  # noqa: F401  (sets a quiet CPU-only environment before TensorFlow loads)
import numpy as np
import tensorflow as tf

import seqprep as sp

N, BATCH, PASSES = 8192, 64, 5


def _source() -> tuple[tf.data.Dataset, list[int], int]:
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(3.5, 0.8, N).astype(np.int64), 2, 400)
    values = rng.integers(1, 1000, int(lengths.sum())).astype(np.int32)
    labels = (rng.random(N) < 0.5).astype(np.float32)
    ragged = tf.RaggedTensor.from_row_lengths(values, lengths)
    source = tf.data.Dataset.from_tensor_slices((ragged, labels)).map(lambda s, y: (s, y))
    source = source.cache()
    for _ in source.ragged_batch(1024):  # fill the cache
        pass
    q = np.quantile(lengths, np.linspace(0, 1, 9)[1:-1])
    bounds = sorted({int(b) for b in np.ceil(q)} - {0})
    return source, bounds, int(lengths.max())


def _length(s: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    return tf.shape(s)[0]


def _rate(ds: tf.data.Dataset) -> tuple[float, int]:
    t0 = time.perf_counter()
    count = sum(1 for _ in ds)
    return time.perf_counter() - t0, count


def test_bucket_by_sequence_length_throughput():
    source, bounds, longest = _source()
    per_bucket = [max(1, 8192 // b) for b in [*bounds, longest + 1]]
    cases = {
        "batch 64": ({}, source),
        "per-bucket sizes (8192 // bound)": ({"bucket_batch_sizes": per_bucket}, source),
        "pad_to_bucket_boundary": ({"bucket_boundaries": [*bounds, longest + 1],
                                    "pad_to_bucket_boundary": True}, source),
        "drop_remainder": ({"drop_remainder": True}, source),
        "4 epochs per pass (repeat(4))": ({}, source.repeat(4)),
    }
    print(f"\nbucket_by_sequence_length, {N} elements, boundaries {bounds}, "
          f"best of {PASSES} interleaved passes")
    ratios = []
    for name, (extra, data) in cases.items():
        kwargs = {"element_length_func": _length, "bucket_boundaries": bounds,
                  "bucket_batch_sizes": [BATCH] * (len(extra.get("bucket_boundaries", bounds))
                                                   + 1)}
        kwargs.update(extra)
        contenders = {"tf.data": data.bucket_by_sequence_length(**kwargs),
                      "seqprep": data.apply(sp.bucket_by_sequence_length(**kwargs))}
        best = dict.fromkeys(contenders, float("inf"))
        counts = {}
        for _ in range(PASSES):
            for who, ds in contenders.items():
                seconds, counts[who] = _rate(ds)
                best[who] = min(best[who], seconds)
        assert counts["tf.data"] == counts["seqprep"]
        rate = {who: counts[who] / best[who] for who in contenders}
        ratios.append(rate["seqprep"] / rate["tf.data"])
        print(f"{name:<34} tf.data {rate['tf.data']:7.0f} batches/s   seqprep "
              f"{rate['seqprep']:7.0f} batches/s   ratio {ratios[-1]:.2f}x "
              f"({counts['tf.data']} batches)")
    print(f"geometric mean ratio seqprep / tf.data = {np.exp(np.mean(np.log(ratios))):.2f}x")
