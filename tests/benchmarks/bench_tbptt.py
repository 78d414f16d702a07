"""Benchmark: memory and speed of fit_tbptt (window=200) vs full unrolling on long sequences.

Run:
    .venv/bin/python -m pytest -q -s tests/benchmarks/bench_tbptt.py -o addopts="" \\
        -o python_files="bench_*.py"

Data: for each maximum length L, ``N_SEQUENCES`` sequences with lognormal lengths rescaled into
[L / 10, L] (the longest is exactly L), one feature per step, one regression target per
sequence. Model: LSTM(64) + Dense(1), batch size 8, SGD.

* **TBPTT**: ``fit_tbptt(window=200)`` over the whole set (one epoch), stateful LSTM with
  per-step outputs, one target per sequence: only the window where a sequence ends has a loss
  and an optimizer step; the other windows just advance the state (forward only).
* **TBPTT many-to-many**: the same with one target per step: an optimizer step per window.
* **full unrolling**: plain ``model.fit`` of the same, non-stateful, LSTM on post-padded batches
  (``Masking``), sequences sorted by length so each batch pads to its own longest sequence.
  Only the ``FULL_BATCHES`` batches holding the longest sequences are run (that is where the
  peak is); their speed is counted in real (unpadded) steps.

``test_tbptt_on_each_backend`` runs the two TBPTT configurations at L = 2,000 under
``KERAS_BACKEND=tensorflow``, ``jax`` and ``torch`` (those installed), one thread each, and
prints steps/s with the ratio to TensorFlow in the same run.

Each configuration runs in a fresh subprocess, so the peak resident memory (``ru_maxrss``) is
that configuration's own; the table reports it above the process's memory just before training
(TensorFlow, data and model already loaded). Scaled down from the issue's 200 sequences to
``N_SEQUENCES`` so the whole file runs in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

MAX_LENGTHS = (2_000, 5_000, 10_000, 20_000)
N_SEQUENCES = 16
BATCH_SIZE = 8
WINDOW = 200
UNITS = 64
FULL_BATCHES = 1


def make_lengths(max_length: int, n: int = N_SEQUENCES, seed: int = 0) -> np.ndarray:
    """Lognormal lengths rescaled into ``[max_length // 10, max_length]``; the max is hit."""
    raw = np.random.default_rng(seed).lognormal(0.0, 0.6, size=n)
    low = max_length // 10
    scaled = low + (raw - raw.min()) / (raw.max() - raw.min()) * (max_length - low)
    return np.round(scaled).astype(np.int64)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(method: str, max_length: int) -> dict:
    """Run one configuration in this (fresh) process; returns its measurements."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    import seqprep as sp

    lengths = make_lengths(max_length)
    rng = np.random.default_rng(1)
    x = [rng.normal(size=(n, 1)).astype("float32") for n in lengths]
    y = rng.normal(size=(len(x), 1)).astype("float32")
    keras.utils.set_random_seed(0)
    if method == "tbptt-m2m":  # one target per step: an optimizer step in every window
        y = [rng.normal(size=(n, 1)).astype("float32") for n in lengths]
    if method.startswith("tbptt"):
        inputs = keras.Input(batch_shape=(BATCH_SIZE, WINDOW, 1))
        h = keras.layers.LSTM(UNITS, stateful=True, return_sequences=True)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1)(h))
        model.compile(optimizer="sgd", loss="mse")
        plan = sp.plan_tbptt(lengths, window=WINDOW, batch_size=BATCH_SIZE)
        # warm up on short copies (two windows each, so both the step that only advances the
        # state and the training step are traced): tracing is not timed
        short = [s[: 2 * WINDOW] for s in x[:BATCH_SIZE]]
        short_y = [t[: 2 * WINDOW] for t in y[:BATCH_SIZE]] if method == "tbptt-m2m" else (
            y[:BATCH_SIZE])
        # Said, not guessed: eight equal-length warm-up copies with a target per step fit
        # both readings of `y`, which targets="auto" rightly refuses as ambiguous.
        targets = "step" if method == "tbptt-m2m" else "sequence"
        sp.fit_tbptt(model, short, short_y, window=WINDOW, batch_size=BATCH_SIZE,
                     targets=targets, verbose=0)
        before = _rss_mb()
        started = time.perf_counter()
        sp.fit_tbptt(model, x, y, window=WINDOW, batch_size=BATCH_SIZE, targets=targets,
                     verbose=0)
        seconds = time.perf_counter() - started
        real_steps, updates = int(lengths.sum()), plan.n_windows
        extra = {"padding_fraction": plan.padding_fraction}
    else:
        inputs = keras.Input(shape=(None, 1))
        h = keras.layers.LSTM(UNITS)(keras.layers.Masking(0.0)(inputs))
        model = keras.Model(inputs, keras.layers.Dense(1)(h))
        model.compile(optimizer="sgd", loss="mse")
        longest = np.argsort(-lengths, kind="stable")[: FULL_BATCHES * BATCH_SIZE]
        xb = sp.pad_sequences([x[i] for i in longest], padding="post", dtype="float32")
        yb = y[longest]
        model.fit(xb[:BATCH_SIZE, :WINDOW], yb[:BATCH_SIZE], batch_size=BATCH_SIZE, verbose=0)
        before = _rss_mb()
        started = time.perf_counter()
        model.fit(xb, yb, batch_size=BATCH_SIZE, epochs=1, verbose=0, shuffle=False)
        seconds = time.perf_counter() - started
        real_steps, updates = int(lengths[longest].sum()), FULL_BATCHES
        extra = {"padding_fraction": 1 - real_steps / xb.shape[0] / xb.shape[1]}
    return {
        "method": method,
        "max_length": max_length,
        "rss_before_mb": before,
        "peak_mb": _peak_mb(),
        "peak_above_before_mb": _peak_mb() - before,
        "seconds": seconds,
        "real_steps_per_s": real_steps / seconds,
        "updates_per_s": updates / seconds,
        **extra,
    }


def run_in_subprocess(method: str, max_length: int, **env_extra: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1", **env_extra}
    # the checkout this file belongs to, not whichever seqprep the environment has installed
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    out = subprocess.run(
        [sys.executable, __file__, method, str(max_length)],
        capture_output=True, text=True, env=env,
    )
    if out.returncode:
        raise RuntimeError(
            f"The {method} worker at L = {max_length} exited {out.returncode}:\n"
            f"{out.stderr[-3000:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tbptt_memory_flat_vs_full_unrolling_linear():
    methods = ("tbptt", "tbptt-m2m", "full")
    results = {(m, n): run_in_subprocess(m, n) for n in MAX_LENGTHS for m in methods}
    print()
    print(f"TBPTT (window={WINDOW}) vs full unrolling; {N_SEQUENCES} sequences per length, "
          f"LSTM({UNITS}), batch size {BATCH_SIZE}, 1-D features, CPU")
    print("Peak memory, MB above the process's memory before training:")
    print("| max length | TBPTT | TBPTT many-to-many | full unrolling | full / TBPTT |")
    print("|---:|---:|---:|---:|---:|")
    for n in MAX_LENGTHS:
        t, m, f = (results[(k, n)]["peak_above_before_mb"] for k in methods)
        print(f"| {n:,} | {t:.0f} | {m:.0f} | {f:.0f} | {f / max(t, 1):.0f}x |")
    print("Speed, real (unpadded) steps per second, and optimizer steps per second:")
    print("| max length | TBPTT steps/s | TBPTT m2m steps/s | full steps/s | TBPTT / full "
          "| TBPTT m2m / full | m2m updates/s | full updates/s | plan padding |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in MAX_LENGTHS:
        t, m, f = (results[(k, n)] for k in methods)
        print(f"| {n:,} | {t['real_steps_per_s']:,.0f} | {m['real_steps_per_s']:,.0f} | "
              f"{f['real_steps_per_s']:,.0f} | "
              f"{t['real_steps_per_s'] / f['real_steps_per_s']:.1f}x | "
              f"{m['real_steps_per_s'] / f['real_steps_per_s']:.1f}x | "
              f"{m['updates_per_s']:.1f} | {f['updates_per_s']:.3f} | "
              f"{t['padding_fraction']:.1%} |")
    print("absolute peaks (MB):", {f"{m}@{n}": round(r["peak_mb"]) for (m, n), r in
                                   results.items()})
    small, large = MAX_LENGTHS[0], MAX_LENGTHS[-1]
    tbptt_growth = (results[("tbptt", large)]["peak_above_before_mb"]
                    - results[("tbptt", small)]["peak_above_before_mb"])
    full_growth = (results[("full", large)]["peak_above_before_mb"]
                   - results[("full", small)]["peak_above_before_mb"])
    print(f"peak growth from {small:,} to {large:,} steps: TBPTT {tbptt_growth:+.0f} MB, "
          f"full unrolling {full_growth:+.0f} MB")
    m2m_growth = (results[("tbptt-m2m", large)]["peak_above_before_mb"]
                  - results[("tbptt-m2m", small)]["peak_above_before_mb"])
    assert full_growth > 0
    assert max(tbptt_growth, m2m_growth) < 0.25 * full_growth


def test_alignment_padding_cost():
    """Padding added by starting every sequence on a window boundary, vs perfect packing."""
    import seqprep as sp

    print()
    print("| max length | window | plan padding | lower bound (perfect packing) |")
    print("|---:|---:|---:|---:|")
    for n in MAX_LENGTHS:
        lengths = make_lengths(n, n=200)
        for window in (50, 200, 1000):
            plan = sp.plan_tbptt(lengths, window=window, batch_size=BATCH_SIZE)
            per_row = lengths.sum() / BATCH_SIZE
            ideal = 1 - lengths.sum() / (BATCH_SIZE * window * np.ceil(per_row / window))
            print(f"| {n:,} | {window} | {plan.padding_fraction:.2%} | {max(ideal, 0):.2%} |")
            assert plan.padding_fraction >= ideal - 1e-12


BACKEND_LENGTH = 2_000


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_tbptt_on_each_backend():
    """The same fit_tbptt runs (L = 2,000) on TensorFlow, JAX and PyTorch, one thread each.

    One thread per process for every backend (``OMP_NUM_THREADS=1``) so the ratios compare
    the backends, not how each copes with a CPU shared with other jobs.
    """
    backends = ["tensorflow"] + [b for b in ("jax", "torch") if _installed(b)]
    methods = ("tbptt", "tbptt-m2m")
    results = {
        (b, m): run_in_subprocess(m, BACKEND_LENGTH, KERAS_BACKEND=b, OMP_NUM_THREADS="1")
        for b in backends
        for m in methods
    }
    print()
    print(f"fit_tbptt(window={WINDOW}) per Keras backend, L = {BACKEND_LENGTH:,}, "
          f"{N_SEQUENCES} sequences, LSTM({UNITS}), batch size {BATCH_SIZE}, 1 thread, "
          "tracing/compilation warmed up; ratio vs TensorFlow in this run:")
    print("| backend | TBPTT steps/s | vs TF | TBPTT m2m steps/s | vs TF |")
    print("|---|---:|---:|---:|---:|")
    for b in backends:
        t, m = (results[(b, k)]["real_steps_per_s"] for k in methods)
        t0, m0 = (results[("tensorflow", k)]["real_steps_per_s"] for k in methods)
        print(f"| {b} | {t:,.0f} | {t / t0:.2f}x | {m:,.0f} | {m / m0:.2f}x |")
    assert all(r["real_steps_per_s"] > 0 for r in results.values())


if __name__ == "__main__":
    print(json.dumps(worker(sys.argv[1], int(sys.argv[2]))))
