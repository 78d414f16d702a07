"""Per-length fitting benchmark: fit_per_length against its baselines, in one process.

Run: .venv/bin/python -m pytest -q -s tests/benchmarks/bench_fitting.py -o addopts="" \
         -o python_files="bench_*.py"

Data: ``SEQPREP_BENCH_N`` sequences (default 8192), lengths lognormal(3.5, 0.8) clipped to
2..400, batch 64, Embedding(1000, 32, mask_zero=True) -> GRU(64) -> Dense(1), CPU, one epoch
each, every variant on a fresh model (so each pays its own traces, as a user would):

* naive loop: one ``model.fit`` per distinct length;
* pre-built: one ``fit`` over a ready dataset of the same exact-length batches;
* sorted: one ``fit`` over fixed length-sorted batches of 64 (post-padded, masked);
* ``fit_per_length(group_by="length")`` and ``fit_per_length(group_by=Bucketer())``.

The fast variants run ``SEQPREP_BENCH_REPEATS`` times (default 2), interleaved, and the best
time counts: the machine is shared, and the minimum is the least noisy estimate.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from seqprep.bucketing import Bucketer  # noqa: E402
from seqprep.fitting import fit_per_length, plan_per_length  # noqa: E402

N = int(os.environ.get("SEQPREP_BENCH_N", "8192"))
REPEATS = int(os.environ.get("SEQPREP_BENCH_REPEATS", "2"))
BATCH = 64
VOCAB = 1000


def _data(n=N, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(3.5, 0.8, n)), 2, 400).astype(np.int64)
    x = [rng.integers(1, VOCAB, size=int(t), dtype=np.int32) for t in lengths]
    y = rng.integers(0, 2, size=(n, 1)).astype(np.float32)
    return x, y, lengths


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(VOCAB, 32, mask_zero=True),
        keras.layers.GRU(64),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer="adam", loss="mse")
    return model


def _dataset(batches):
    """A ready dataset of padded numpy batches, relaxed (None) shapes: one trace."""
    spec = (tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None, 1), tf.float32))
    ds = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=spec)
    return ds.apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(
        tf.data.AUTOTUNE
    )


def _padded(x, y, idx):
    width = max(len(x[i]) for i in idx)
    xb = np.zeros((len(idx), width), np.int32)
    for row, i in enumerate(idx):
        xb[row, : len(x[i])] = x[i]
    return xb, y[idx]


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def test_fit_per_length_against_baselines():
    x, y, lengths = _data()
    distinct = np.unique(lengths)
    exact_batches = [_padded(x, y, idx) for idx in plan_per_length(lengths, batch_size=BATCH)]
    order = np.argsort(lengths, kind="stable")
    sorted_batches = [_padded(x, y, order[i : i + BATCH]) for i in range(0, N, BATCH)]
    print(f"\n{N} sequences, {distinct.size} distinct lengths, mean length "
          f"{lengths.mean():.1f}, {len(exact_batches)} exact-length batches, "
          f"{len(sorted_batches)} sorted batches, CPU threads: "
          f"{tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count()}")

    # Warm-up: TensorFlow start-up and first-trace costs, paid by nobody below.
    _model().fit(_dataset(sorted_batches[:2]), epochs=1, verbose=0)

    def naive():
        model = _model()
        for length in distinct:
            idx = np.flatnonzero(lengths == length)
            xb = np.stack([x[i] for i in idx])
            model.fit(xb, y[idx], batch_size=BATCH, epochs=1, verbose=0, shuffle=True)
        return model

    def prebuilt():
        return _model().fit(_dataset(exact_batches), epochs=1, verbose=0)

    def sorted_epoch():
        return _model().fit(_dataset(sorted_batches), epochs=1, verbose=0)

    def per_length():
        return fit_per_length(_model(), x, y, batch_size=BATCH, verbose=0)

    bucketer = Bucketer()

    def per_bucket():
        return fit_per_length(_model(), x, y, batch_size=BATCH, group_by=bucketer, verbose=0)

    times: dict[str, list[float]] = {}
    results = {}
    for _ in range(REPEATS):
        for name, fn in [("prebuilt", prebuilt), ("per_length", per_length),
                         ("sorted", sorted_epoch), ("per_bucket", per_bucket)]:
            t, results[name] = _timed(fn)
            times.setdefault(name, []).append(t)
    t_naive, _ = _timed(naive)
    best = {k: min(v) for k, v in times.items()}
    best["naive"] = t_naive

    h_len, h_bucket = results["per_length"], results["per_bucket"]
    assert h_len.steps_per_epoch == len(exact_batches)
    assert h_len.traces["train"] == 1 and h_bucket.traces["train"] == 1
    assert h_len.group_stats["sequences"].sum() == N

    print(f"{'variant':<34}{'best s':>8}  runs")
    labels = {
        "naive": "naive loop (one fit per length)",
        "prebuilt": "pre-built exact-length dataset",
        "per_length": 'fit_per_length(group_by="length")',
        "sorted": "length-sorted epoch",
        "per_bucket": "fit_per_length(group_by=Bucketer())",
    }
    for key, label in labels.items():
        runs = times.get(key, [t_naive])
        print(f"{label:<34}{best[key]:>8.2f}  {', '.join(f'{t:.2f}' for t in runs)}")
    print(f"Bucketer: {len(bucketer.boundaries_) + 1} buckets, boundaries "
          f"{bucketer.boundaries_.tolist()}, {h_bucket.steps_per_epoch} batches, expected "
          f"padding {bucketer.padding_fraction_:.3f}")
    ratios = [
        ("naive / per_length", best["naive"] / best["per_length"], ">= 3", lambda r: r >= 3),
        ("per_length / prebuilt", best["per_length"] / best["prebuilt"], "<= 1.15",
         lambda r: r <= 1.15),
        ("per_bucket / sorted", best["per_bucket"] / best["sorted"], "<= 1.3",
         lambda r: r <= 1.3),
        ("prebuilt / sorted", best["prebuilt"] / best["sorted"], "(context)", lambda r: True),
    ]
    for name, ratio, target, ok in ratios:
        print(f"{name:<26}{ratio:>7.2f}x  target {target:<9} {'met' if ok(ratio) else 'MISSED'}")
