"""The first JAX epoch against TensorFlow's: the README tour and `fit_per_length` (issue 21).

Run: .venv/bin/python tests/benchmarks/bench_first_epoch.py            (a few minutes)
     .venv/bin/python tests/benchmarks/bench_first_epoch.py --variants "grid 16,auto" --runs 2
     or  .venv/bin/python -m pytest -q -s tests/benchmarks/bench_first_epoch.py -o addopts="" \
         -o python_files="bench_*.py"

Two workloads, each run on ``KERAS_BACKEND=tensorflow`` and ``KERAS_BACKEND=jax``, every run in
its own subprocess (fresh compile caches; no persistent JAX cache), same data and seeds:

- **tour**: the README's ``## A tour`` (``N`` float sequences of 12 features, lengths
  uniform in 5..199, default 1000; ``BucketSampler(batch_size=64, seed=0)``,
  ``bucketed_dataset``, ``sp.models.reference_rnn``, 3 epochs, ``shuffle=False``,
  ``sp.BackupAndRestore(dir, save_freq=5)``). Variants (``--variants``, comma-separated) are a
  ``pad_to``: ``auto`` (the default: on JAX, the width grid the compile budget sizes,
  ``PlanOptions(compile_cost=..., train_epochs=...)``), ``grid K`` (``sp.width_grid(sampler,
  K)``; ``grid 16`` is what ``"auto"`` played on JAX before the budget), ``batch``, ``bucket``;
  then optionally `` +fill`` (``Options(data_parallel=64)``: the partial batch topped up to 64
  rows with weight-0 fill rows, so one shape fewer), `` -backup`` (no BackupAndRestore) and
  `` -autotune`` / `` +autotune`` (tf.data's autotuning off / on; seqprep turns it off on JAX
  and torch, so ``grid 16 +autotune`` is what the tour played on JAX before this issue).
- **per length**: ``fit_per_length`` on Japanese Vowels (270 training sequences, 7..29 frames),
  ``reference_rnn``, batch 32, 10 epochs.

Two clocks. ``total`` runs from after every import (Keras, seqprep and TensorFlow, which
``bucketed_dataset`` needs on every backend; ``keras.utils.set_random_seed`` imports it on JAX
too, so this is the clock of round 3's earlier figures) to the end of ``fit``: data, model,
compile, fit. ``script`` runs from the worker's start, before those imports, to the same end:
what ``time python tour.py`` measures, imports included (about 4 s on either backend here).

The tour's data: ``--n`` sequences (default 1000, the README's) of 5 to ``--max-length`` - 1
steps (default 200, the README's); issue 21 stated its targets on the README tour of its day,
``--n 2000 --max-length 300``.

Printed per run: each epoch's time, the time to its first batch's end, JAX backend compiles
(``jax.monitoring`` listeners: count and seconds), the distinct ``(rows, width)`` shapes each
epoch plays (counted on an identical dataset after ``fit``) and how many of them epoch 1 did not
play, Python's full (generation-2) garbage collections (count and seconds) and the
checkpoints BackupAndRestore wrote (count and seconds; it writes the end of an epoch when the
next one begins). Ratios: JAX
total / TensorFlow total (target <= 1.5 for the tour, <= 2 for per length), and JAX epoch 2 -
(epoch 3 + 1 s) (target <= 0).

The first batch's time is split, in brackets: how long Keras waited for tf.data to hand it over
(``data``, JAX only, with ``--time-fetches``) and for checkpoints (``ckpt``); the rest is the
train step and its sync.

The stall watchdog: with ``--stall-dump S`` (default 1.0; 0 switches it off) the first batch
of every epoch after the first arms ``faulthandler.dump_traceback_later(S, repeat=True)``: a
first batch that takes longer than ``S`` seconds dumps every thread's Python stack every ``S``
seconds until it ends (a sampling profile of the stall), into the run's stderr file
(``--dump-dir``, default a temporary directory; its path is printed); "stall dumps" counts
them.
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
from typing import Any

import _common  # noqa: F401  (quiet CPU-only TensorFlow before TensorFlow loads)

_PROCESS_START = time.perf_counter()  # the script clock: before Keras, JAX or TensorFlow load

ROOT = Path(__file__).resolve().parents[2]
TOUR_EPOCHS, PER_LENGTH_EPOCHS = 3, 10
VARIANTS = ("auto", "auto +fill", "grid 16 +autotune")  # now, one shape fewer, before


def _tour_data(n: int):
    import numpy as np

    rng = np.random.default_rng(0)  # the README's data, n sequences
    high = int(os.environ.get("SEQPREP_BENCH_TOUR_MAX_LENGTH", "200"))  # --max-length
    x = [rng.random((k, 12), dtype="float32") for k in rng.integers(5, high, n)]
    y = rng.integers(0, 2, len(x))
    return x, y


def _tour_dataset(n: int, variant: str):
    """The tour's dataset: ``variant`` is a ``pad_to`` ("auto", "grid K", "batch", "bucket"),
    optionally followed by " +fill" (``Options(data_parallel=64)``: the partial batch topped up
    to 64 rows with weight-0 fill rows, one shape fewer) and " -backup" (read by the worker)."""
    import seqprep as sp

    x, y = _tour_data(n)
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=64, seed=0)
    name = variant
    for flag in ("+fill", "-backup", "-autotune", "+autotune"):
        name = name.replace(flag, "")
    name = name.strip()
    if name.startswith("grid "):
        pad_to = sp.width_grid(sampler, int(name.split()[1]))
    elif name in ("auto", "batch", "bucket"):
        pad_to = name
    else:
        raise ValueError(f"unknown variant {variant!r}")
    options = sp.Options(data_parallel=64) if "+fill" in variant else None
    ds = sp.bucketed_dataset(x, y, sampler=sampler, pad_to=pad_to, options=options)
    if "autotune" in variant:  # tf.data's autotuning thread off / back on (the epoch-2 stall)
        import tensorflow as tf

        options = tf.data.Options()
        options.autotune.enabled = "+autotune" in variant
        ds = ds.with_options(options)
    return ds


def _shapes_per_epoch(ds, epochs: int) -> tuple[list[list[tuple[int, ...]]], int]:
    """The ``(rows, width)`` shapes each pass over ``ds`` plays, and the padded steps
    (rows x width, fill rows included) of the first pass."""
    out, padded = [], 0
    for e in range(epochs):
        seen = set()
        for batch in ds:
            rows, width = (int(d) for d in batch[0].shape[:2])
            seen.add((rows, width))
            padded += rows * width if e == 0 else 0
        out.append(sorted(seen))
    return out, padded


class _Probe:
    """Counts JAX compiles and full garbage collections; times epochs and first batches."""

    def __init__(self, stall_dump: float, dump_file: Any = None,
                 time_fetches: bool = False) -> None:
        import gc

        self.compiles = [0, 0.0]
        self.gc2 = [0, 0.0]
        self.fetch = [0.0, None]  # seconds waiting for batches in this epoch; for its first
        self.saves = [0, 0.0]  # BackupAndRestore checkpoints written, and their seconds
        self._gc_start = 0.0
        self.stall_dump = stall_dump
        self.dump_file = dump_file
        if os.environ.get("KERAS_BACKEND") == "jax":
            from jax import monitoring

            def listener(event: str, duration: float, **_: Any) -> None:
                if event == "/jax/core/compile/backend_compile_duration":
                    self.compiles[0] += 1
                    self.compiles[1] += duration

            monitoring.register_event_duration_secs_listener(listener)

        def on_gc(phase: str, info: dict) -> None:
            if info.get("generation") != 2:
                return
            if phase == "start":
                self._gc_start = time.perf_counter()
            else:
                self.gc2[0] += 1
                self.gc2[1] += time.perf_counter() - self._gc_start

        gc.callbacks.append(on_gc)
        if time_fetches and os.environ.get("KERAS_BACKEND") == "jax":
            self._time_fetches()

    def time_saves(self, callback: type) -> None:
        """Count and time ``callback``'s checkpoint writes (``_save``)."""
        plain = callback._save
        probe = self

        def timed(self_: Any, *args: Any, **kwargs: Any) -> None:
            t0 = time.perf_counter()
            try:
                plain(self_, *args, **kwargs)
            finally:
                probe.saves[0] += 1
                probe.saves[1] += time.perf_counter() - t0

        callback._save = timed

    def _time_fetches(self) -> None:
        """Time Keras's waits for tf.data batches (the JAX backend's numpy iterator), apart
        from the train steps they feed. Opt-in (``--time-fetches``): it wraps a private Keras
        method, ``TFDatasetAdapter.get_jax_iterator``, so a Keras release that renames it breaks
        this diagnostic only, never the default run."""
        from keras.src.trainers.data_adapters import tf_dataset_adapter

        adapter = tf_dataset_adapter.TFDatasetAdapter
        plain = adapter.get_jax_iterator
        probe = self

        def timed(self_: Any):
            it = plain(self_)
            while True:
                t0 = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    return
                waited = time.perf_counter() - t0
                probe.fetch[0] += waited
                if probe.fetch[1] is None:
                    probe.fetch[1] = waited
                yield batch

        adapter.get_jax_iterator = timed

    def callback(self, rows: list[dict]):
        import faulthandler

        import keras

        probe = self

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()
                self.first = None
                self.c0, self.g0 = list(probe.compiles), list(probe.gc2)
                self.s0 = list(probe.saves)
                probe.fetch = [0.0, None]
                if epoch and probe.stall_dump > 0:  # a stack every stall_dump s until batch 1
                    print(f"--- epoch {epoch + 1}: first batch over {probe.stall_dump} s ---",
                          file=probe.dump_file, flush=True)
                    faulthandler.dump_traceback_later(probe.stall_dump, repeat=True,
                                                      file=probe.dump_file)

            def on_train_batch_end(self, batch, logs=None):
                if self.first is None:
                    self.first = time.perf_counter() - self.t0
                    self.first_save = probe.saves[1] - self.s0[1]
                    faulthandler.cancel_dump_traceback_later()

            def on_epoch_end(self, epoch, logs=None):
                rows.append({
                    "time": time.perf_counter() - self.t0,
                    "first_batch": self.first,
                    "first_batch_saves": self.first_save,
                    "compiles": probe.compiles[0] - self.c0[0],
                    "compile_secs": probe.compiles[1] - self.c0[1],
                    "gc2": probe.gc2[0] - self.g0[0],
                    "gc2_secs": probe.gc2[1] - self.g0[1],
                    "saves": probe.saves[0] - self.s0[0],
                    "save_secs": probe.saves[1] - self.s0[1],
                    "fetch_secs": probe.fetch[0],
                    "first_fetch": probe.fetch[1],
                })

        return Timer()


def _worker(workload: str, variant: str, n: int, stall_dump: float, gc_freeze: bool,
            time_fetches: bool = False) -> dict:
    import gc

    import keras

    import seqprep as sp

    probe = _Probe(stall_dump, sys.stderr, time_fetches)
    rows: list[dict] = []
    callbacks = [probe.callback(rows)]  # first: its clock starts before the others' hooks
    if workload == "tour" and "-backup" not in variant:  # the README's callback
        backup = tempfile.mkdtemp(prefix="seqprep_bench_backup_")
        callbacks.append(sp.BackupAndRestore(backup, save_freq=5))
        probe.time_saves(sp.BackupAndRestore)
    if gc_freeze:  # move what epoch 1 left behind out of the collector's sight
        class Freeze(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    gc.collect()
                    gc.freeze()

        callbacks.append(Freeze())
    # TensorFlow loads before the clock on both backends: `import keras` has loaded it on
    # TensorFlow, and `set_random_seed` below would on JAX (timed here as `tf_import`). The
    # script clock (`script`, from this process's start) counts every import on both.
    t_tf = time.perf_counter()
    import tensorflow  # noqa: F401
    tf_import = time.perf_counter() - t_tf
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    if workload == "tour":
        ds = _tour_dataset(n, variant)
        model = sp.models.reference_rnn(input_dim=12, num_classes=2)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(ds, epochs=TOUR_EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)
        end = time.perf_counter()
        total = end - start
        shapes, padded = _shapes_per_epoch(_tour_dataset(n, variant), TOUR_EPOCHS)
        padding = 1 - sum(len(s) for s in _tour_data(n)[0]) / padded
    else:
        from seqprep.datasets import load_japanese_vowels

        x, y = load_japanese_vowels("train")
        model = sp.models.reference_rnn(input_dim=12, num_classes=9)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        sp.fit_per_length(model, x, y, epochs=PER_LENGTH_EPOCHS, batch_size=32, seed=0,
                          callbacks=callbacks, verbose=0)
        end = time.perf_counter()
        total = end - start
        lengths = sp.sequence_lengths(x)
        padding = 0.0  # batches of one length each
        shapes = [sorted({(len(b), int(lengths[b].max())) for b in
                          sp.PerLengthPlanner(lengths, batch_size=32, seed=0).plan(e)})
                  for e in range(PER_LENGTH_EPOCHS)]
    first = set(shapes[0])
    return {"workload": workload, "variant": variant, "backend": keras.config.backend(),
            "total": total, "script": end - _PROCESS_START, "tf_import": tf_import,
            "imports": start - _PROCESS_START, "epochs": rows, "shapes": [len(s) for s in shapes],
            "new_shapes_after_epoch_1": len(set().union(*map(set, shapes)) - first),
            "padding": padding}


def _run(workload: str, backend: str, variant: str, n: int, stall_dump: float, gc_freeze: bool,
         dump_dir: Path, pyspy: str | None = None, time_fetches: bool = False) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="-1",
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    for key in ("JAX_COMPILATION_CACHE_DIR", "XLA_FLAGS"):  # a cold, one-device run
        env.pop(key, None)
    tag = f"{workload}-{backend}-{variant}{'-gcfreeze' if gc_freeze else ''}".replace(" ", "")
    err = dump_dir / f"{tag}-{time.strftime('%H%M%S')}.stderr"
    cmd = [sys.executable, __file__, "--worker", workload, "--variants", variant, "--n", str(n),
           "--stall-dump", str(stall_dump)] + (["--gc-freeze"] if gc_freeze else [])
    cmd += ["--time-fetches"] if time_fetches else []
    with open(err, "w") as f, tempfile.TemporaryFile("w+") as stdout:
        child = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=f, text=True, cwd=ROOT)
        native = _watch(child, err, pyspy) if pyspy else 0
        returncode = child.wait()
        stdout.seek(0)
        lines = [ln for ln in stdout.read().splitlines() if ln.startswith("{")]
    if returncode or not lines:
        raise RuntimeError(f"{tag} failed (rc {returncode}); see {err}")
    result = json.loads(lines[-1])
    result["gc_freeze"] = gc_freeze
    result["stderr"] = str(err)
    result["stall_dumps"] = err.read_text().count("Timeout (")
    result["native_dumps"] = native
    return result


def _watch(child: subprocess.Popen, err: Path, pyspy: str, most: int = 4) -> int:
    """While ``child`` runs, take a native stack (``py-spy dump --native``) each time its
    watchdog reports a slow first batch: what C++ (TensorFlow, XLA) is doing, which Python
    stacks cannot show. At most ``most`` dumps; returns how many were taken."""
    seen = taken = 0
    while child.poll() is None:
        time.sleep(0.2)
        count = err.read_text(errors="replace").count("Timeout (")
        if count > seen and taken < most:
            seen = count
            dump = subprocess.run([pyspy, "dump", "--native", "--pid", str(child.pid)],
                                  capture_output=True, text=True, check=False)
            with open(err, "a") as f:
                f.write(f"--- py-spy dump --native (watchdog report {count}) ---\n"
                        f"{dump.stdout}{dump.stderr}\n")
            taken += 1
    return taken


def _first(x: dict) -> str:
    if x["first_batch"] is None:
        return "-"
    parts = [] if x["first_fetch"] is None else [f"data {x['first_fetch']:.2f}"]
    if x.get("first_batch_saves"):
        parts.append(f"ckpt {x['first_batch_saves']:.2f}")
    return f"{x['first_batch']:.2f}" + (f" ({', '.join(parts)})" if parts else "")


def _row(r: dict) -> str:
    e = r["epochs"]
    cells = " / ".join(f"{x['time']:.1f}" for x in e)
    first = " / ".join(_first(x) for x in e)
    comp = " / ".join(f"{x['compiles']} ({x['compile_secs']:.1f} s)" for x in e)
    gcs = " / ".join(f"{x['gc2']} ({x['gc2_secs']:.2f} s)" for x in e)
    saves = " / ".join(f"{x['saves']} ({x['save_secs']:.2f} s)" for x in e)
    name = r["variant"] + (", gc.freeze" if r["gc_freeze"] else "")
    if r["workload"] == "per length":
        name = "fit_per_length (epochs 1 / 2 / 3-10)"
        rest = e[2:]
        cells = f"{e[0]['time']:.1f} / {e[1]['time']:.1f} / {sum(x['time'] for x in rest):.1f}"
        first = f"{_first(e[0])} / {_first(e[1])} / -"
        comp = " / ".join(f"{sum(x['compiles'] for x in part)} "
                          f"({sum(x['compile_secs'] for x in part):.1f} s)"
                          for part in (e[:1], e[1:2], rest))
        gcs = " / ".join(str(sum(x["gc2"] for x in part)) for part in (e[:1], e[1:2], rest))
        saves = "-"
    shapes = "/".join(map(str, r["shapes"][:3])) + f" (+{r['new_shapes_after_epoch_1']})"
    shapes += f", padding {r.get('padding', float('nan')):.3f}"
    script = f"{r['script']:.1f} s ({r['imports']:.1f} s)"
    return (f"| {r['workload']} | {r['backend']} | {name} | {r['total']:.1f} s | {script} | "
            f"{cells} | "
            f"{first} | {comp} | {shapes} | {gcs} | {saves} | {r['stall_dumps']} |")


def table(results: list[dict]) -> str:
    lines = [
        "| workload | backend | variant | total | script (imports) | epochs (s) | first batch (s) "
        "| compiles (secs) per epoch | shapes per epoch (+ new after 1), padding "
        "| full GCs per epoch | checkpoints (secs) per epoch | stall dumps |",
        "|---|---|---|---:|---:|---|---|---|---|---|---|---:|",
    ]
    lines += [_row(r) for r in results]
    lines.append("")
    for workload, target in (("tour", 1.5), ("per length", 2.0)):
        tf = None  # each JAX run against the TensorFlow run of its round (same load)
        for r in results:
            if r["workload"] != workload:
                continue
            if r["backend"] == "tensorflow":
                tf = r
                continue
            if r["backend"] != "jax" or tf is None:
                continue
            # `total` starts after every import on both backends; `script` counts them all
            line = (f"- {workload}, {r['variant']}{', gc.freeze' if r['gc_freeze'] else ''}: "
                    f"JAX / TF total {r['total'] / tf['total']:.2f}, script "
                    f"{r['script'] / tf['script']:.2f} (target <= {target})")
            if workload == "tour":
                t = [x["time"] for x in r["epochs"]]
                line += f"; epoch 2 - (epoch 3 + 1 s) = {t[1] - t[2] - 1:+.2f} s (target <= 0)"
            lines.append(line)
    return "\n".join(lines)


def run(n: int, variants: tuple[str, ...], runs: int, stall_dump: float, gc_freeze: bool,
        per_length: bool, dump_dir: Path, pyspy: str | None = None,
        tf_runs: int = 1, time_fetches: bool = False) -> list[dict]:
    plan: list[tuple[str, str, str, bool]] = []
    for i in range(runs):  # TensorFlow and JAX interleaved: a load change hits both
        if i < tf_runs:
            plan.append(("tour", "tensorflow", "auto", False))
        plan += [("tour", "jax", v, False) for v in variants]
        if gc_freeze:
            plan += [("tour", "jax", v, True) for v in variants]
    if per_length:
        plan += [("per length", "tensorflow", "-", False), ("per length", "jax", "-", False)]
    results = []
    for workload, backend, variant, freeze in plan:
        results.append(_run(workload, backend, variant, n, stall_dump, freeze, dump_dir, pyspy,
                            time_fetches))
        r = results[-1]
        print(f"  {workload} {backend} {variant}{' gc.freeze' if freeze else ''}: "
              f"{r['total']:.1f} s, epochs {[round(e['time'], 2) for e in r['epochs']]}",
              flush=True)
    return results


def test_first_epoch_table():
    dump_dir = Path(tempfile.mkdtemp(prefix="seqprep_bench_first_epoch_"))
    print(f"\nstall dumps in {dump_dir}")
    print(table(run(int(os.environ.get("SEQPREP_BENCH_N", "1000")), VARIANTS, 1, 1.0, False,
                    True, dump_dir)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1000, help="tour sequences (README: 1000)")
    parser.add_argument("--max-length", type=int, default=200,
                        help="tour lengths are 5 .. this - 1 (README: 200; issue 21: 300)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help='JAX tour variants: "auto", "grid K", "batch", "bucket"')
    parser.add_argument("--runs", type=int, default=1, help="JAX tour runs per variant")
    parser.add_argument("--stall-dump", type=float, default=1.0)
    parser.add_argument("--gc-freeze", action="store_true",
                        help="also run each variant with gc.freeze() after epoch 1")
    parser.add_argument("--no-per-length", action="store_true")
    parser.add_argument("--dump-dir", default=None)
    parser.add_argument("--tf-runs", type=int, default=1, help="TensorFlow tour runs")
    parser.add_argument("--time-fetches", action="store_true",
                        help="time Keras's waits for tf.data batches on JAX (wraps a private "
                        "Keras method; off by default)")
    parser.add_argument("--pyspy", default=None, help="path of a py-spy binary (a dev tool, "
                        "not a dependency): native stacks of slow first batches")
    args = parser.parse_args()
    variants = tuple(v.strip() for v in args.variants.split(","))
    os.environ["SEQPREP_BENCH_TOUR_MAX_LENGTH"] = str(args.max_length)  # the workers read it
    if args.worker:
        print(json.dumps(_worker(args.worker, variants[0], args.n, args.stall_dump,
                                 args.gc_freeze, args.time_fetches)), flush=True)
        return
    dump_dir = Path(args.dump_dir or tempfile.mkdtemp(prefix="seqprep_bench_first_epoch_"))
    dump_dir.mkdir(parents=True, exist_ok=True)
    print(f"stall dumps in {dump_dir}", flush=True)
    results = run(args.n, variants, args.runs, args.stall_dump, args.gc_freeze,
                  not args.no_per_length, dump_dir, args.pyspy, args.tf_runs,
                  args.time_fetches)
    (dump_dir / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
