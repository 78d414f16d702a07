"""Padding, bucketing or packing: one model on Japanese Vowels, fed three ways, in one process.

Run: .venv/bin/python -m pytest -q -s tests/benchmarks/bench_packing.py -o addopts="" \
         -o python_files="bench_*.py"

Model: the demo's reference classifier (standardise -> Bidirectional GRU -> Dense(9)), units
and epochs from ``BENCH_UNITS`` / ``BENCH_EPOCHS`` (default 32 units, 25 epochs), same
initial weights and seed for every run, CPU, TensorFlow backend. Runs:

* pad to max: ``pad_sequences`` to the longest training sequence, shuffled batches of 32;
* bucketing: ``bucketed_dataset`` over a ``BucketSampler(batch_size=32)``;
* packing, equal rows per batch: ``PackSampler(batch_size=32)``, rows of the longest length;
* packing, equal sequences per update: as many rows per batch as give pad to max's number
  of updates per epoch.

For each: median epoch time (epochs 2..N), sequential RNN steps per epoch (sum over batches of
the padded width: what an RNN's wall time scales with), sequences per update, padding, distinct
batch shapes, and test accuracy (packed models are tested unpacked, with their trained weights
in the plain model). Ratios are against pad to max in the same run.

On JAX (where every new batch shape is compiled): ``KERAS_BACKEND=jax BENCH_EPOCHS=3
BENCH_UNITS=16`` and compare the "1st s" (epoch 1, with compiling) and "epoch s" columns.

Dense vs windowed TBPTT (``test_dense_tbptt_long_sequences``): ``BENCH_TBPTT_N`` (default 600)
sequences of 8 features, lengths lognormal(5.5, 1.0) clipped to 20..2000, a plain stateful
GRU(32) classifier, windows 50 and 200 (``BENCH_TBPTT_WINDOWS``), batch 32, one SGD epoch of
warm-up then ``BENCH_TBPTT_EPOCHS`` (default 3) timed epochs (each one ``fit_tbptt`` call,
planning included), the three runs taking turns epoch by epoch, on TensorFlow in this process
and on JAX in a subprocess (epoch 1 with compiling, and later epochs). Runs: the windowed plan;
the dense plan as several calls per window (``DenseTBPTTPlan.as_calls``, the fallback); the
dense plan in one call per window (the dense twin). Ratios are against the windowed plan in
the same run. A second case, "short" (3x as many sequences, lognormal(4.0, 0.6) clipped to
5..400, window 100), is where the windowed plan pads much more; it runs twice, with the plain
classifier and with per-step targets (``return_sequences=True``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (sets a quiet CPU-only environment before TensorFlow loads)
import keras
import numpy as np

import seqprep as sp
from seqprep.datasets import load_japanese_vowels
from seqprep.models import compile_reference, feature_stats, reference_rnn
from seqprep.tools import demo
from seqprep.tools._demo_kit import epoch_clock

EPOCHS = int(os.environ.get("BENCH_EPOCHS", "25"))
UNITS = int(os.environ.get("BENCH_UNITS", "32"))
BATCH = 32
SEED = 0


def _settings():
    return dict(demo.SETTINGS, units=UNITS, epochs=EPOCHS, batch_size=BATCH)


def _fit(model, ds, steps=None):
    timer = epoch_clock()
    model.fit(ds, epochs=EPOCHS, steps_per_epoch=steps, callbacks=[timer], verbose=0,
              shuffle=False)
    return float(np.median(timer.wall[1:] or timer.wall)), timer.wall[0]


def _padded_run(name, x, y, test):
    keras.utils.set_random_seed(SEED)
    settings = _settings()
    model = demo.build_classifier(x, seed=SEED, settings=settings)
    lengths = sp.sequence_lengths(x)
    if name == "pad to max":
        ds = demo._pad_to_max_dataset(x, y, batch_size=BATCH, seed=SEED)
        nb = -(-len(x) // BATCH)
        widths = np.full(nb, lengths.max())
        shapes = len({min(BATCH, len(x) - i * BATCH) for i in range(nb)})
        epoch_time, first = _fit(model, ds)
    else:
        sampler = sp.BucketSampler(lengths, batch_size=BATCH, seed=SEED)
        ds = sp.bucketed_dataset(x, y, sampler=sampler, options=sp.Options(epochs=EPOCHS))
        plan = sampler.batches(0)
        widths = np.array([lengths[b].max() for b in plan])
        shapes = len({(b.size, int(lengths[b].max())) for b in plan})
        epoch_time, first = _fit(model, ds, steps=len(sampler))
    nb = widths.size
    return {
        "run": name, "epoch_s": epoch_time, "first_s": first,
        "steps": int(widths.sum()), "updates": nb, "seqs_per_update": len(x) / nb,
        "padding": 1 - lengths.sum() / (sum(min(BATCH, len(x) - i * BATCH) * w
                                            for i, w in enumerate(widths))
                                        if name == "pad to max" else
                                        sum(b.size * lengths[b].max() for b in plan)),
        "shapes": shapes, "accuracy": demo._test_accuracy(model, *test),
    }


def _packed_run(name, x, y, test, rows):
    keras.utils.set_random_seed(SEED)
    settings = _settings()
    lengths = sp.sequence_lengths(x)
    sampler = sp.PackSampler(lengths, batch_size=rows, seed=SEED)
    model = compile_reference(reference_rnn(
        input_dim=12, num_classes=9, cell=settings["cell"], units=UNITS,
        bidirectional=settings["bidirectional"], standardize=feature_stats(x), seed=SEED,
        packed=True,
    ), learning_rate=settings["learning_rate"], metrics=[], weighted_metrics=["accuracy"])
    epoch_time, first = _fit(model, sp.packed_dataset(x, y, sampler=sampler))
    serve = demo._unpacked_twin(model, x, seed=SEED, settings=settings)
    return {
        "run": name, "epoch_s": epoch_time, "first_s": first,
        "steps": len(sampler) * sampler.row_length, "updates": len(sampler),
        "seqs_per_update": len(x) / len(sampler), "padding": 1 - sampler.fill_,
        "shapes": len({len(b) for b in sampler.batches(0)}),
        "accuracy": demo._test_accuracy(serve, *test),
    }


def test_padding_bucketing_packing():
    x, y = load_japanese_vowels("train")
    test = load_japanese_vowels("test")
    started = time.perf_counter()
    updates = -(-len(x) // BATCH)
    equal_updates_rows = -(-sp.PackSampler(sp.sequence_lengths(x), batch_size=1).num_rows_
                           // updates)
    runs = [
        _padded_run("pad to max", x, y, test),
        _padded_run("bucketing", x, y, test),
        _packed_run(f"packing, {BATCH} rows/batch", x, y, test, BATCH),
        _packed_run(f"packing, {equal_updates_rows} rows/batch", x, y, test,
                    equal_updates_rows),
    ]
    base = runs[0]
    print(f"\nJapanese Vowels, {len(x)} train / {len(test[0])} test sequences, Bidirectional "
          f"GRU({UNITS}), {EPOCHS} epochs, total {time.perf_counter() - started:.0f} s")
    print(f"{'run':<24} {'epoch s':>8} {'x base':>7} {'1st s':>6} {'RNN steps':>9} "
          f"{'x base':>7} {'updates':>7} {'seqs/upd':>8} {'padding':>8} {'shapes':>6} "
          f"{'accuracy':>8}")
    for r in runs:
        print(f"{r['run']:<24} {r['epoch_s']:>8.2f} {r['epoch_s'] / base['epoch_s']:>7.2f} "
              f"{r['first_s']:>6.1f} {r['steps']:>9d} {r['steps'] / base['steps']:>7.2f} "
              f"{r['updates']:>7d} {r['seqs_per_update']:>8.1f} {100 * r['padding']:>7.1f}% "
              f"{r['shapes']:>6d} {r['accuracy']:>8.4f}")
    for r in runs:
        assert 0 <= r["padding"] < 1 and r["accuracy"] > 0


def test_pack_sampler_planning_speed():
    """PackSampler on 2M lognormal lengths vs BucketSampler on the same lengths."""
    rng = np.random.default_rng(0)
    lengths = np.maximum(1, rng.lognormal(4.0, 0.8, 2_000_000)).astype(np.int64)
    t = time.perf_counter()
    bucket = sp.BucketSampler(lengths, batch_size=64)
    bucket.batches(0)
    t_bucket = time.perf_counter() - t
    t = time.perf_counter()
    pack = sp.PackSampler(lengths, batch_size=64)
    t_build = time.perf_counter() - t
    pack.batches(0)
    t_pack = time.perf_counter() - t
    print(f"\n2,000,000 lengths (max {lengths.max()}): PackSampler build {t_build:.2f} s, "
          f"build + epoch {t_pack:.2f} s ({t_pack / t_bucket:.2f}x BucketSampler's "
          f"{t_bucket:.2f} s); fill {pack.fill_:.4f}, {pack.num_rows_} rows, up to "
          f"{pack.max_segments_} sequences per row; BucketSampler padding "
          f"{bucket.report()['padding_fraction']:.4f}")
    assert pack.fill_ >= 0.97


def test_planned_steps_on_a_long_tailed_corpus():
    """Plans only (no model): sequential steps per epoch and shapes, 8192 lognormal lengths."""
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(3.5, 0.8, 8192).astype(np.int64), 2, 400)
    rows = 64
    n = lengths.size
    pad_batches = -(-n // rows)
    bucket = sp.BucketSampler(lengths, batch_size=rows, seed=0)
    b_plan = bucket.batches(0)
    b_steps = int(sum(lengths[b].max() for b in b_plan))
    pack = sp.PackSampler(lengths, batch_size=rows, seed=0)
    same_updates = sp.PackSampler(lengths, batch_size=-(-pack.num_rows_ // pad_batches), seed=0)
    print(f"\n{n} lengths lognormal(3.5, 0.8) clipped to 2..400 (mean {lengths.mean():.1f}), "
          f"{rows} rows per batch")
    print(f"{'plan':<36} {'batches':>7} {'RNN steps':>9} {'x pad':>6} {'seqs/upd':>8} "
          f"{'padding':>8} {'shapes':>6}")
    table = [
        ("pad to max", pad_batches, pad_batches * int(lengths.max()),
         1 - lengths.sum() / (n * lengths.max()), 1 if n % rows == 0 else 2),
        ("bucketing", len(bucket), b_steps, bucket.report()["padding_fraction"],
         bucket.report()["n_shapes"]),
        (f"packing, {rows} rows/batch", len(pack), len(pack) * pack.row_length,
         1 - pack.fill_, len({len(b) for b in pack.batches(0)})),
        (f"packing, {same_updates.batch_size} rows/batch", len(same_updates),
         len(same_updates) * same_updates.row_length, 1 - same_updates.fill_,
         len({len(b) for b in same_updates.batches(0)})),
    ]
    for name, batches, steps, padding, shapes in table:
        print(f"{name:<36} {batches:>7d} {steps:>9d} {steps / table[0][2]:>6.2f} "
              f"{n / batches:>8.1f} {100 * padding:>7.1f}% {shapes:>6d}")
    assert pack.fill_ >= 0.97


# -- dense vs windowed TBPTT on long sequences ------------------------------------------------

TBPTT_N = int(os.environ.get("BENCH_TBPTT_N", "600"))
TBPTT_EPOCHS = int(os.environ.get("BENCH_TBPTT_EPOCHS", "3"))
TBPTT_WINDOWS = [int(w) for w in os.environ.get("BENCH_TBPTT_WINDOWS", "50,200").split(",")]
TBPTT_BATCH, TBPTT_DIM = 32, 8
# (label, sequences, lognormal mu, sigma, clipped to lo..hi, windows): long sequences as
# asked, and shorter ones against a longer window, where the windowed plan pads far more
TBPTT_CASES = [
    ("long", TBPTT_N, 5.5, 1.0, 20, 2000, TBPTT_WINDOWS),
    ("short", 3 * TBPTT_N, 4.0, 0.6, 5, 400, [100]),
    ("short, per-step targets", 3 * TBPTT_N, 4.0, 0.6, 5, 400, [100]),
]
TBPTT_RUNS = ("windowed", "dense, as_calls", "dense, one call")


def _tbptt_data(n, mu, sigma, lo, hi):
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(mu, sigma, n).astype(np.int64), lo, hi)
    x = [rng.normal(size=(t, TBPTT_DIM)).astype("float32") for t in lengths]
    # the class is the sign of the first feature's sum over the sequence
    y = np.array([int(s[:, 0].sum() > 0) for s in x])
    return lengths, x, y


def _tbptt_runs(lengths, x, y, epochs, window, per_step=False):
    """Per-epoch seconds, model calls per epoch and padding of the positions computed, for
    every run in ``TBPTT_RUNS``; the runs take turns epoch by epoch, so a change in the
    machine's load hits them alike."""
    from unittest import mock

    from seqprep.running import _tbptt as tbptt
    models, plans = {}, {}
    for name in TBPTT_RUNS:
        keras.utils.set_random_seed(SEED)
        models[name] = reference_rnn(input_dim=TBPTT_DIM, num_classes=2, cell="gru", units=32,
                                     mask=False, stateful=True, batch_size=TBPTT_BATCH,
                                     return_sequences=per_step,
                                     seed=SEED)
        models[name].compile(optimizer=keras.optimizers.SGD(0.05),
                             loss="sparse_categorical_crossentropy")
        plan = sp.plan_tbptt(lengths, window=window, batch_size=TBPTT_BATCH,
                             dense=name != "windowed")
        plans[name] = plan.as_calls() if name == "dense, as_calls" else plan
    times = {name: [] for name in TBPTT_RUNS}
    fallback = mock.patch.object(tbptt._Runner, "dense_runner", lambda self: None)
    for _ in range(epochs):  # one fit_tbptt per epoch: the compiled steps are reused
        for name in TBPTT_RUNS:
            started = time.perf_counter()
            with fallback if name == "dense, as_calls" else mock.patch.dict({}):
                sp.fit_tbptt(models[name], x, y, window=window, batch_size=TBPTT_BATCH,
                             dense=name != "windowed", verbose=0)
            times[name].append(time.perf_counter() - started)
    return [{"run": name, "window": window, "backend": keras.config.backend(),
             "times": times[name], "calls": plans[name].n_windows,
             "padding": plans[name].padding_fraction} for name in TBPTT_RUNS]


def _tbptt_table(results, title):
    base = results[0]
    title = f"{title}, window {base['window']}"
    first = base["times"][0]
    later = float(np.median(base["times"][1:]))
    lines = [title,
             f"{'run':<17} {'calls/epoch':>11} {'x':>5} {'padding':>8} {'epoch 1 s':>9} "
             f"{'x':>5} {'later s':>8} {'x':>5}"]
    for r in results:
        t1, tl = r["times"][0], float(np.median(r["times"][1:]))
        lines.append(f"{r['run']:<17} {r['calls']:>11d} {r['calls'] / base['calls']:>5.2f} "
                     f"{100 * r['padding']:>7.1f}% {t1:>9.2f} {t1 / first:>5.2f} {tl:>8.2f} "
                     f"{tl / later:>5.2f}")
    return "\n".join(lines)


def _tbptt_jax_subprocess():
    """The three runs on JAX in a fresh process (Keras picks its backend once per process)."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, KERAS_BACKEND="jax", CUDA_VISIBLE_DEVICES="-1",
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, __file__, "--tbptt-worker"], env=env, cwd=root,
                         capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[")]
    if out.returncode or not lines:
        raise RuntimeError(f"the JAX TBPTT worker failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def _tbptt_all_cases():
    """Every case's tables: ``[[run, ...] per window] per case``, with each case's header."""
    results, heads = [], []
    for label, n, mu, sigma, lo, hi, windows in TBPTT_CASES:
        lengths, x, y = _tbptt_data(n, mu, sigma, lo, hi)
        heads.append(f"{label}: {n} sequences, lengths {lo}..{hi} (mean {lengths.mean():.0f}, "
                     f"{lengths.sum()} steps)")
        per_step = "per-step" in label
        if per_step:  # each step's class: the sign of its first feature's running sum
            y = [(np.cumsum(s[:, 0]) > 0).astype(np.int64) for s in x]
        results.append([_tbptt_runs(lengths, x, y, 1 + TBPTT_EPOCHS, w, per_step)
                        for w in windows])
    return heads, results


def test_dense_tbptt_long_sequences():
    started = time.perf_counter()
    heads, results = _tbptt_all_cases()
    print(f"\nGRU(32) (a plain classifier unless said), batch {TBPTT_BATCH}; epoch 1 = warm-up "
          f"(tracing), later = median of {TBPTT_EPOCHS}; x = ratio vs windowed in this run  "
          f"(TensorFlow {time.perf_counter() - started:.0f} s)")
    for head, tables in zip(heads, results, strict=True):
        for table in tables:
            print(_tbptt_table(table, f"TensorFlow, {head}"))
    started = time.perf_counter()
    jax_results = _tbptt_jax_subprocess()
    print(f"(JAX {time.perf_counter() - started:.0f} s)")
    for head, tables in zip(heads, jax_results, strict=True):
        for table in tables:
            print(_tbptt_table(table, f"JAX, {head}"))
    for r in [r for case in results + jax_results for table in case for r in table]:
        assert r["calls"] > 0 and len(r["times"]) == 1 + TBPTT_EPOCHS


if __name__ == "__main__" and "--tbptt-worker" in sys.argv:
    print(json.dumps(_tbptt_all_cases()[1]))
