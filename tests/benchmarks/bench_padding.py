"""Padding throughput: seqprep.pad_sequences against keras.utils.pad_sequences, same process.

100,000 sequences, lengths lognormal(3.5, 0.8) clipped to 1..500, int32; numpy arrays and
Python lists; both padding sides. Also the floor: allocating and filling the output array.
Prints best-of-N times and ratios; asserts only that the outputs are identical.

Run: make bench  (or pytest -s tests/benchmarks/bench_padding.py -o python_files="bench_*.py")
"""

from __future__ import annotations

import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

N, REPEATS = 100_000, 5


def _best(fn, repeats=REPEATS):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _data():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(3.5, 0.8, N).astype(int), 1, 500)
    arrays = [rng.integers(0, 10_000, n).astype(np.int32) for n in lengths]
    return lengths, arrays, [a.tolist() for a in arrays]


def test_pad_sequences_vs_keras():
    from keras.utils import pad_sequences as keras_pad

    import seqprep as sp

    lengths, arrays, lists = _data()
    width = int(lengths.max())

    def floor():
        out = np.full((N, width), 0, dtype=np.int32)
        out[:, : width // 10] = 1  # touch: the fill itself is the floor
        return out

    floor_time = _best(floor)
    print(f"\n{N} sequences, mean length {lengths.mean():.1f}, max {width}, int32")
    print(f"allocate+fill output floor: {floor_time * 1e3:.1f} ms")
    print(f"{'input':7} {'side':5} {'keras ms':>9} {'seqprep ms':>11} {'speed-up':>9} "
          f"{'x floor':>8}")
    for kind, data in (("arrays", arrays), ("lists", lists)):
        for side in ("pre", "post"):
            np.testing.assert_array_equal(
                sp.pad_sequences(data, padding=side), keras_pad(data, padding=side)
            )
            keras_time = _best(lambda d=data, p=side: keras_pad(d, padding=p), 3)
            ours = _best(lambda d=data, p=side: sp.pad_sequences(d, padding=p))
            print(f"{kind:7} {side:5} {keras_time * 1e3:9.1f} {ours * 1e3:11.1f} "
                  f"{keras_time / ours:8.2f}x {ours / floor_time:7.2f}x")
