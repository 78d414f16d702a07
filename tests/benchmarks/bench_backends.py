"""Epoch times and compiles on a Keras backend that compiles per shape (JAX), per pipeline.

Run: .venv/bin/python -m pytest -q -s tests/benchmarks/bench_backends.py -o addopts="" \
         -o python_files="bench_*.py"
     or  .venv/bin/python tests/benchmarks/bench_backends.py --n 1000 --epochs 4

Workload (issue 13): ``N`` integer sequences (default 4000; ``SEQPREP_BENCH_N`` or ``--n``),
lengths lognormal(3.5, 0.8) clipped to 2..400, batches of 64, Embedding(1000, 32,
mask_zero=True) -> GRU(64) -> Dense(1), ``model.fit`` over ``EPOCHS`` epochs (default 10), a
fresh order every epoch for every pipeline:

- ``padded_batch``: ``shuffle(n).padded_batch(64)``;
- ``bbsl q8`` (the baseline): ``shuffle(n).bucket_by_sequence_length`` with 8 quantile
  boundaries;
- ``seqprep pad_to=batch``: ``bucketed_dataset`` with the default sampler, padded per batch
  (the TensorFlow default);
- ``seqprep default``: ``bucketed_dataset`` with the default sampler and ``pad_to="auto"``
  (a width grid of at most 16 widths on JAX);
- ``seqprep grid 8``: ``pad_to=seqprep.width_grid(sampler, 8)``, the tighter shape bound;
- ``seqprep default on 2 devices`` (not in the default set; ``--pipelines``): ``seqprep default``
  under ``keras.distribution.DataParallel`` over two CPU devices
  (``--xla_force_host_platform_device_count=2``), batches topped up with weight-0 fill rows.

Each pipeline trains in its own subprocess with ``KERAS_BACKEND`` set (fresh compile caches);
compiles are JAX's backend-compile events during each epoch. Padding is measured on one pass
over the same pipeline before training. Ratios are against ``bbsl q8`` in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import token_gru

BATCH, VOCAB = 64, 1000
PIPELINES = ("padded_batch", "bbsl q8", "seqprep pad_to=batch", "seqprep default", "seqprep grid 8")
DATA_PARALLEL = "seqprep default on 2 devices"  # "seqprep default" on a two-device mesh
BASELINE = "bbsl q8"
ROOT = Path(__file__).resolve().parents[2]
PROGRESS = Path(tempfile.gettempdir()) / "seqprep_bench_backends_progress.jsonl"


def _data(n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(3.5, 0.8, n).astype(np.int64), 2, 400)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = rng.integers(1, VOCAB, offsets[-1]).astype(np.int32)
    labels = (rng.random(n) < 0.5).astype(np.float32)
    return lengths, values, offsets, labels


def _pipeline(name: str, n: int):
    """The dataset of ``name`` (one epoch per pass, fresh order each pass) and real steps."""
    import numpy as np
    import tensorflow as tf

    import seqprep as sp

    lengths, values, offsets, labels = _data(n)
    if name in ("padded_batch", "bbsl q8"):
        ragged = tf.RaggedTensor.from_row_splits(values, offsets)
        ds = tf.data.Dataset.from_tensor_slices((ragged, labels)).map(lambda s, y: (s, y))
        ds = ds.shuffle(n, seed=0, reshuffle_each_iteration=True)
        if name == "padded_batch":
            return ds.padded_batch(BATCH), lengths
        bounds = sp.Bucketer(9, strategy="quantile").fit(lengths).boundaries_.tolist()
        return ds.bucket_by_sequence_length(
            lambda s, y: tf.shape(s)[0], bounds, [BATCH] * (len(bounds) + 1)
        ), lengths
    x = [values[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    sampler = sp.BucketSampler(lengths, batch_size=BATCH, seed=0)
    pad_to = {
        "seqprep pad_to=batch": "batch",
        "seqprep default": "auto",
        DATA_PARALLEL: "auto",
        "seqprep grid 8": sp.width_grid(sampler, 8),
    }[name]
    ds = sp.bucketed_dataset(
        x, labels, sampler=sampler, pad_to=pad_to, options=sp.Options(reshuffle_each_iteration=True)
    )
    return ds, np.asarray(lengths)


def _worker(name: str, n: int, epochs: int) -> dict:
    """Train ``name`` for ``epochs`` epochs in this process; per-epoch times and compiles."""
    import keras
    import numpy as np
    from jax._src import monitoring

    compiles = {"count": 0, "secs": 0.0}

    def listener(event: str, duration: float, **_: object) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles["count"] += 1
            compiles["secs"] += duration

    monitoring.register_event_duration_secs_listener(listener)
    if name == DATA_PARALLEL:  # before the dataset (it reads the layout) and the model
        import jax

        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices()))
    ds, lengths = _pipeline(name, n)
    shapes, padded = set(), 0
    for batch in ds:  # one pass before training: padding and shapes of one epoch's plan
        xb = batch[0]  # (x, y), or (x, y, weights) with fill rows
        shapes.add(tuple(xb.shape))
        padded += int(np.prod(xb.shape))
    real = int(lengths.sum())

    model = token_gru(VOCAB, 32, 64, activation="sigmoid")
    model.compile("adam", "binary_crossentropy")
    rows = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.c0, self.s0 = time.perf_counter(), compiles["count"], compiles["secs"]

        def on_epoch_end(self, epoch, logs=None):
            rows.append({
                "time": time.perf_counter() - self.t0,
                "compiles": compiles["count"] - self.c0,
                "compile_secs": compiles["secs"] - self.s0,
            })
            # A full run takes long on a busy machine: keep each epoch, should it be stopped.
            with open(PROGRESS, "a") as f:
                f.write(json.dumps({"name": name, "n": n, "epoch": epoch, **rows[-1]}) + "\n")

    model.fit(ds, epochs=epochs, verbose=0, callbacks=[Timer()])
    return {
        "name": name,
        "backend": keras.config.backend(),
        "padding": 1 - real / padded,
        "shapes_epoch1_plan": len(shapes),
        "epochs": rows,
    }


def run(n: int, epochs: int, backend: str = "jax", pipelines=PIPELINES) -> list[dict]:
    results = []
    for name in pipelines:
        env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="-1",
                   TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
        if name == DATA_PARALLEL:
            env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        out = subprocess.run(
            [sys.executable, __file__, "--worker", name, "--n", str(n), "--epochs", str(epochs)],
            env=env, capture_output=True, text=True, check=False, cwd=ROOT,
        )
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode or not lines:
            raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(lines[-1]))
        print(f"  ran {name}: {lines[-1]}", flush=True)
    return results


def table(results: list[dict], n: int) -> str:
    base = next(r for r in results if r["name"] == BASELINE)

    def totals(r):
        t = [e["time"] for e in r["epochs"]]
        c = [e["compiles"] for e in r["epochs"]]
        return t[0], sum(t[1:]), sum(t), c[0], sum(c[1:])

    b1, blater, ball, _, _ = totals(base)
    epochs = len(base["epochs"])
    lines = [
        f"{results[0]['backend']}: {n} sequences, batch {BATCH}, GRU(64), {epochs} epochs, "
        "fresh order each epoch; ratios vs bbsl q8 in this run",
        f"{'pipeline':<22} {'padding':>7} {'shapes':>6} {'epoch 1':>9} {'x':>5} "
        f"{'2..' + str(epochs):>9} {'x':>5} {'all':>9} {'x':>5} {'compiles 1 / later':>19}",
    ]
    for r in results:
        t1, later, total, c1, clater = totals(r)
        lines.append(
            f"{r['name']:<22} {r['padding']:>7.3f} {r['shapes_epoch1_plan']:>6} {t1:>8.1f}s "
            f"{t1 / b1:>5.2f} {later:>8.1f}s {later / blater if blater else 0:>5.2f} "
            f"{total:>8.1f}s {total / ball:>5.2f} {c1:>10} / {clater:<7}"
        )
    lines.append("per-epoch seconds (compiles):")
    for r in results:
        cells = " ".join(f"{e['time']:.1f}({e['compiles']})" for e in r["epochs"])
        lines.append(f"  {r['name']:<22} {cells}")
    return "\n".join(lines)


def test_backends_table():
    n = int(os.environ.get("SEQPREP_BENCH_N", "4000"))
    epochs = int(os.environ.get("SEQPREP_BENCH_EPOCHS", "10"))
    backend = os.environ.get("SEQPREP_BENCH_BACKEND", "jax")
    print()
    print(table(run(n, epochs, backend), n))


def bucket_counts(n: int, epochs: int = 3, caps=(None, 32, 16)) -> str:
    """TensorFlow epoch time, padding and shapes of the default sampler vs capped bucket counts.

    Each contender trains the same model from the same weights for ``epochs`` epochs (fresh
    order each, ``pad_to="batch"``), interleaved epoch by epoch; the first (tracing) epoch is
    untimed and the median of the rest is kept. Ratios are against the uncapped default.
    """
    import keras
    import numpy as np

    import seqprep as sp

    lengths, values, offsets, labels = _data(n)
    x = [values[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    model = token_gru(VOCAB, 32, 64, activation="sigmoid")
    weights = model.get_weights()
    contenders = {}
    for cap in caps:
        bounds = None if cap is None else sp.Bucketer(cap, batch_size=BATCH).fit(lengths)
        sampler = sp.BucketSampler(lengths, boundaries=bounds, batch_size=BATCH, seed=0)
        ds = sp.bucketed_dataset(x, labels, sampler=sampler, pad_to="batch",
                                 options=sp.Options(reshuffle_each_iteration=True))
        m = keras.models.clone_model(model)
        m.set_weights(weights)
        m.compile("adam", "binary_crossentropy")
        contenders[cap] = (sampler, ds, m, [])
    for _ in range(epochs):
        for _sampler, ds, m, times in contenders.values():
            t0 = time.perf_counter()
            m.fit(ds, epochs=1, verbose=0)
            times.append(time.perf_counter() - t0)
    base = float(np.median(contenders[caps[0]][3][1:]))
    lines = [f"tensorflow: {n} sequences, batch {BATCH}, GRU(64); bucket count of the default "
             f"sampler vs capped (optimal Bucketer(k)); median epoch 2..{epochs}"]
    for cap, (sampler, _, _, times) in contenders.items():
        r = sampler.report()
        t = float(np.median(times[1:]))
        name = "default" if cap is None else f"cap {cap}"
        lines.append(
            f"  {name:<8} buckets {sampler.num_buckets:>3}  padding {r['padding_fraction']:.3f}  "
            f"shapes/epoch {r['n_shapes']:>3}  shapes/10 epochs "
            f"{sp.count_shapes(sampler, epochs=10):>3}  epoch {t:.2f}s  x{t / base:.2f}"
        )
    return "\n".join(lines)


def test_bucket_count_on_tensorflow():
    print()
    print(bucket_counts(int(os.environ.get("SEQPREP_BENCH_N", "4000"))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default=None)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--backend", default="jax")
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--bucket-counts", action="store_true",
                        help="measure the default bucket count against caps, on TensorFlow")
    args = parser.parse_args()
    if args.bucket_counts:
        print(bucket_counts(args.n, max(args.epochs, 2)))
        return
    if args.worker:
        print(json.dumps(_worker(args.worker, args.n, args.epochs)), flush=True)
        return
    pipelines = tuple(p.strip() for p in args.pipelines.split(","))
    if BASELINE not in pipelines:
        pipelines = (BASELINE, *pipelines)
    print(table(run(args.n, args.epochs, args.backend, pipelines), args.n))


if __name__ == "__main__":
    main()
