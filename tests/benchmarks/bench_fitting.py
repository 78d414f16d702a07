"""Per-length fitting benchmark: fit_per_length against its baselines, in one process.

Run: .venv/bin/python -m pytest -q -s tests/benchmarks/bench_fitting.py -o addopts="" \
         -o python_files="bench_*.py"

Data: ``SEQPREP_BENCH_N`` sequences (default 8192), lengths lognormal(3.5, 0.8) clipped to
2..400, batch 64, Embedding(1000, 32, mask_zero=True) -> GRU(64) -> Dense(1), CPU, one epoch
each, every variant on a fresh model (so each pays its own traces, as a user would):

* naive loop: one ``model.fit`` per distinct length;
* pre-built: one ``fit`` over a ready dataset of the same exact-length batches;
* sorted: one ``fit`` over fixed length-sorted batches of 64 (post-padded, masked);
* ``fit_per_length(group_by="length")`` and ``fit_per_length(group_by=Bucketer())``;
* a plain bucketed fit: ``bucketed_dataset`` over a ``BucketSampler`` with a default Bucketer.

Every variant, the naive loop included, runs ``SEQPREP_BENCH_REPEATS`` times (default 2),
interleaved, and the best time counts: the machine is shared, and the minimum is the least
noisy estimate.
"""

from __future__ import annotations

import os
import time

import _common  # noqa: F401  (sets a quiet CPU-only environment before TensorFlow loads)
import keras
import numpy as np
import tensorflow as tf

from seqprep.planning import Bucketer, BucketSampler, plan_per_length
from seqprep.running._fitting import fit_per_length
from seqprep.running._tfdata import bucketed_dataset

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
    """A ready, in-graph dataset of the given (x, y) batches: ragged slices, densified per batch.

    The batches live in one RaggedTensor (batch, row, time), so no Python runs per batch, and
    the element spec has ``None`` dimensions, so Keras traces once.
    """
    rows = [row for xb, _ in batches for row in xb]
    per_batch = [len(xb) for xb, _ in batches]
    x_rag = tf.RaggedTensor.from_row_lengths(
        tf.RaggedTensor.from_row_lengths(np.concatenate(rows), [len(r) for r in rows]),
        per_batch,
    )
    y_rag = tf.RaggedTensor.from_row_lengths(np.concatenate([yb for _, yb in batches]),
                                             per_batch)
    ds = tf.data.Dataset.from_tensor_slices((x_rag, y_rag))
    ds = ds.map(lambda xb, yb: (xb.to_tensor(), yb), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _rows(x, y, idx):
    """The batch's sequences (unpadded; `_dataset` pads each batch to its longest) and targets."""
    return [x[i] for i in idx], y[idx]


def _timed(fn):
    """Wall time and process CPU time (all threads) of ``fn()``.

    On a shared machine wall time swings with other people's load; CPU time measures the work
    this process did and is the steadier of the two, so both are reported.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - wall, time.process_time() - cpu), out


def test_fit_per_length_against_baselines():
    x, y, lengths = _data()
    distinct = np.unique(lengths)
    exact_batches = [_rows(x, y, idx) for idx in plan_per_length(lengths, batch_size=BATCH)]
    order = np.argsort(lengths, kind="stable")
    sorted_batches = [_rows(x, y, order[i : i + BATCH]) for i in range(0, N, BATCH)]
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

    def bucketed_fit():
        sampler = BucketSampler(lengths, boundaries=Bucketer().fit(lengths), batch_size=BATCH)
        ds = bucketed_dataset(x, y, sampler=sampler)
        return _model().fit(ds, epochs=1, steps_per_epoch=len(sampler), verbose=0)

    def per_bucket():
        return fit_per_length(_model(), x, y, batch_size=BATCH, group_by=bucketer, verbose=0)

    times: dict[str, list[tuple[float, float]]] = {}
    results = {}
    for _ in range(REPEATS):
        for name, fn in [("naive", naive), ("prebuilt", prebuilt), ("per_length", per_length),
                         ("sorted", sorted_epoch), ("per_bucket", per_bucket),
                         ("bucketed_fit", bucketed_fit)]:
            t, results[name] = _timed(fn)
            times.setdefault(name, []).append(t)
    wall = {k: min(t[0] for t in v) for k, v in times.items()}
    cpu = {k: min(t[1] for t in v) for k, v in times.items()}

    h_len, h_bucket = results["per_length"], results["per_bucket"]
    assert h_len.steps_per_epoch == len(exact_batches)
    assert h_len.traces["train"] == 1 and h_bucket.traces["train"] == 1
    assert h_len.group_stats["sequences"].sum() == N

    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores)")
    print(f"{'variant':<38}{'wall s':>8}{'cpu s':>8}  runs (wall/cpu)")
    labels = {
        "naive": "naive loop (one fit per length)",
        "prebuilt": "pre-built exact-length dataset",
        "per_length": 'fit_per_length(group_by="length")',
        "sorted": "length-sorted epoch",
        "per_bucket": "fit_per_length(group_by=Bucketer())",
        "bucketed_fit": "bucketed_dataset + BucketSampler fit",
    }
    for key, label in labels.items():
        runs = ", ".join(f"{w:.1f}/{c:.1f}" for w, c in times[key])
        print(f"{label:<38}{wall[key]:>8.2f}{cpu[key]:>8.2f}  {runs}")
    print(f"Bucketer: {len(bucketer.boundaries_) + 1} buckets, {h_bucket.steps_per_epoch} "
          f"batches, expected padding {bucketer.padding_fraction_:.3f}")
    ratios = [
        ("naive / per_length", "naive", "per_length", ">= 3", lambda r: r >= 3),
        ("per_length / prebuilt", "per_length", "prebuilt", "<= 1.15", lambda r: r <= 1.15),
        ("per_bucket / sorted", "per_bucket", "sorted", "<= 1.3", lambda r: r <= 1.3),
        ("prebuilt / sorted", "prebuilt", "sorted", "(context)", None),
        ("per_bucket / bucketed_fit", "per_bucket", "bucketed_fit", "(context)", None),
    ]
    print(f"{'ratio':<26}{'wall':>7}{'cpu':>7}  target")
    for name, a, b, target, ok in ratios:
        rw, rc = wall[a] / wall[b], cpu[a] / cpu[b]
        verdict = "" if ok is None else (
            "met" if ok(rw) and ok(rc) else "met on cpu only" if ok(rc) else
            "met on wall only" if ok(rw) else "MISSED")
        print(f"{name:<26}{rw:>6.2f}x{rc:>6.2f}x  {target:<9} {verdict}")
