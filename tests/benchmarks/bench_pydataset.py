"""Executors on JAX and PyTorch: ``bucketed_dataset`` (tf.data) vs ``bucketed_pydataset`` (numpy).

Run: .venv/bin/python -m pytest -q -s tests/benchmarks/bench_pydataset.py -o addopts="" \
         -o python_files="bench_*.py"
     or  .venv/bin/python tests/benchmarks/bench_pydataset.py --n 2000 --epochs 3

Workload (issue 13, Deliver 1): ``N`` integer sequences (default 2000), lengths
lognormal(3.5, 0.8) clipped to 2..400, batches of 64 from one ``BucketSampler`` (default
buckets, ``pad_to="auto"``: a width grid on JAX, per batch on PyTorch), Embedding(1000, 16,
mask_zero=True) -> GRU(32) -> Dense(1), ``model.fit`` for ``EPOCHS`` epochs (default 3), a fresh
sampler order every epoch for both executors. Each backend runs in its own subprocess
(``KERAS_BACKEND`` is fixed per process); inside it the tf.data executor (the baseline) and
the PyDataset run one after the other on a fresh model with the same initial weights, so
both pay their own compiles. Prints the time of each epoch and the ratio PyDataset / tf.data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import token_gru

BATCH, VOCAB = 64, 1000
ROOT = Path(__file__).resolve().parents[2]
EXECUTORS = ("tf.data", "PyDataset")
CHILD_LIMIT = 3600  # seconds per backend


def _data(n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(3.5, 0.8, n).astype(np.int64), 2, 400)
    x = [rng.integers(1, VOCAB, k).astype(np.int32) for k in lengths]
    y = (rng.random(n) < 0.5).astype(np.float32)
    return x, y


def _epoch_times(executor: str, n: int, epochs: int) -> list[float]:
    import keras

    import seqprep as sp

    x, y = _data(n)
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=BATCH, seed=0)
    if executor == "tf.data":
        data = sp.bucketed_dataset(x, y, sampler=sampler)
    else:
        data = sp.bucketed_pydataset(x, y, sampler=sampler)
    model = token_gru(VOCAB, 16, 32)
    model.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    model.fit(data, epochs=epochs, verbose=0, callbacks=[Clock()])
    return times


def _input_only(n: int) -> dict[str, float]:
    """Seconds to produce one epoch of numpy batches, no model: the executors' own cost."""
    import seqprep as sp

    x, y = _data(n)
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=BATCH, seed=0)
    ds = sp.bucketed_dataset(x, y, sampler=sampler)
    pyds = sp.bucketed_pydataset(x, y, sampler=sampler)
    t0 = time.perf_counter()
    for _ in ds.as_numpy_iterator():
        pass
    t1 = time.perf_counter()
    for i in range(len(pyds)):
        pyds[i]
    t2 = time.perf_counter()
    return {"tf.data": t1 - t0, "PyDataset": t2 - t1}


def _child(n: int, epochs: int) -> None:
    out = {name: _epoch_times(name, n, epochs) for name in EXECUTORS}
    out["input_only"] = _input_only(n)
    print("RESULT " + json.dumps(out), flush=True)


def run(n: int = 2000, epochs: int = 3, backends: tuple[str, ...] = ("jax", "torch")) -> dict:
    results = {}
    for backend in backends:
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        # At the benchmark's own priority: under `nice` on a loaded machine the child got
        # what the other jobs left and a 900 s limit killed it. The limit is against a hang.
        command = [sys.executable, __file__, "--child", "--n", str(n), "--epochs", str(epochs)]
        try:
            proc = subprocess.run(
                command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=CHILD_LIMIT,
            )
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(
                f"The {backend} run did not finish in {CHILD_LIMIT} s (load average "
                f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs).\n- Run it on a quieter "
                "machine, or on fewer sequences (SEQPREP_BENCH_N, default 2000)."
            ) from err
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            raise RuntimeError(f"{backend} run failed:\n{proc.stderr[-3000:]}")
        results[backend] = json.loads(line[0][len("RESULT "):])
    _print(results, n, epochs)
    return results


def _print(results: dict, n: int, epochs: int) -> None:
    print(f"\nbucketed_dataset (tf.data) vs bucketed_pydataset, n={n}, batch {BATCH}, "
          f"{epochs} epochs (seconds per epoch)")
    head = " | ".join(f"epoch {e + 1}" for e in range(epochs))
    print(f"| backend | executor | {head} | total | ratio |")
    for backend, res in results.items():
        base = sum(res["tf.data"])
        for name in EXECUTORS:
            t = res[name]
            cells = " | ".join(f"{s:.2f}" for s in t)
            print(f"| {backend} | {name} | {cells} | {sum(t):.2f} | {sum(t) / base:.2f}x |")
    for backend, res in results.items():
        io = res["input_only"]
        print(f"{backend}: one epoch of batches, no model: tf.data {io['tf.data']:.3f} s, "
              f"PyDataset {io['PyDataset']:.3f} s ({io['PyDataset'] / io['tf.data']:.2f}x)")


def test_bench_pydataset():
    n = int(os.environ.get("SEQPREP_BENCH_N", "2000"))
    results = run(n=n)
    for res in results.values():
        assert all(len(res[name]) == 3 for name in EXECUTORS)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--backends", default="jax,torch")
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(ROOT))  # this checkout's seqprep, not an installed one
        _child(args.n, args.epochs)
    else:
        run(args.n, args.epochs, tuple(args.backends.split(",")))
