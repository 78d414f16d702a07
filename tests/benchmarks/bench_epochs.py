"""What a new sampler epoch per pass costs, and what sp.BackupAndRestore costs per checkpoint.

Run: .venv/bin/python -m pytest -q -s tests/benchmarks/bench_epochs.py -o addopts="" \
         -o python_files="bench_*.py"

(a) Pipeline passes (no model; wall and process CPU time, as the machine may be shared):
    8192 integer sequences, lengths lognormal(3.5, 0.8) clipped to 2..400, batches of 64.
    ``bucketed_dataset`` with its default (a new epoch planned when each pass begins) vs
    ``reshuffle_each_iteration=False`` (one fixed plan, constants only), passes interleaved,
    the first of each untimed, best of 4 kept.
(b) One epoch-end checkpoint of a small GRU model with Adam, ``sp.BackupAndRestore`` vs
    ``keras.callbacks.BackupAndRestore`` on the same model, best of 5. Each callback is driven
    through its public hooks by a ``keras.callbacks.CallbackList``, as ``model.fit`` drives it:
    what is timed is one epoch's end and the next epoch's begin (Keras's writes its checkpoint
    in ``on_epoch_end``; seqprep's in the next ``on_epoch_begin`` or ``on_train_end``, once
    every callback has seen the epoch end).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import _common  # noqa: F401  (sets a quiet CPU-only environment before TensorFlow loads)
import keras
import numpy as np

import seqprep as sp

N, BATCH = 8192, 64


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(3.5, 0.8, N).astype(np.int64), 2, 400)
    x = [rng.integers(1, 1000, int(n)).astype(np.int32) for n in lengths]
    return x, lengths, (rng.random(N) < 0.5).astype(np.float32)


def _pass_time(ds) -> tuple[float, float]:
    """Wall time and the process's CPU time (all threads) of one pass."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in ds:
        pass
    return time.perf_counter() - start, time.process_time() - cpu


def test_new_epoch_per_pass_costs_about_nothing():
    x, lengths, y = _data()
    sampler = sp.BucketSampler(lengths, batch_size=BATCH, seed=0)
    fresh = sp.bucketed_dataset(x, y, sampler=sampler)
    fixed = sp.bucketed_dataset(x, y, sampler=sampler,
                                options=sp.Options(reshuffle_each_iteration=False))
    times = {"fresh": [], "fixed": []}
    for ds in (fresh, fixed):
        _pass_time(ds)  # warm-up
    for _ in range(4):
        for name, ds in (("fresh", fresh), ("fixed", fixed)):
            times[name].append(_pass_time(ds))
    wall = {k: min(t[0] for t in v) for k, v in times.items()}
    cpu = {k: min(t[1] for t in v) for k, v in times.items()}
    print(
        f"\n[epochs] pass over {N} sequences ({len(sampler)} batches): new epoch per pass "
        f"{wall['fresh'] * 1e3:.0f} ms wall / {cpu['fresh'] * 1e3:.0f} ms CPU, fixed plan "
        f"{wall['fixed'] * 1e3:.0f} ms / {cpu['fixed'] * 1e3:.0f} ms CPU; ratio "
        f"{wall['fresh'] / wall['fixed']:.2f}x wall, {cpu['fresh'] / cpu['fixed']:.2f}x CPU"
    )


def test_checkpoint_cost_against_keras_backup_and_restore():
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(1000, 32),
        keras.layers.GRU(64),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    rounds = 5
    callbacks = {
        "seqprep": sp.BackupAndRestore(tempfile.mkdtemp()),
        "keras": keras.callbacks.BackupAndRestore(tempfile.mkdtemp()),
    }
    lists = {
        name: keras.callbacks.CallbackList(
            [cb], model=model, epochs=rounds + 1, steps=1, verbose=0
        )
        for name, cb in callbacks.items()
    }
    for cbs in lists.values():
        cbs.on_train_begin()
        cbs.on_epoch_begin(0)
    times = {"seqprep": [], "keras": []}
    for epoch in range(rounds):
        for name, cbs in lists.items():
            start = time.perf_counter()
            cbs.on_epoch_end(epoch)
            cbs.on_epoch_begin(epoch + 1)
            times[name].append(time.perf_counter() - start)
    metadata = {"seqprep": "seqprep_training_metadata.json", "keras": "training_metadata.json"}
    for name, cb in callbacks.items():
        # Every round wrote a checkpoint: the metadata names the epoch the last round ended.
        with open(os.path.join(cb.backup_dir, metadata[name])) as f:
            assert json.load(f)["epoch"] == rounds, name
        lists[name].on_train_end()  # deletes the checkpoint (delete_checkpoint=True)
    best = {k: min(v) for k, v in times.items()}
    print(
        f"\n[epochs] one checkpoint (GRU(64), Adam): sp.BackupAndRestore "
        f"{best['seqprep'] * 1e3:.1f} ms, keras.callbacks.BackupAndRestore "
        f"{best['keras'] * 1e3:.1f} ms, ratio {best['seqprep'] / best['keras']:.2f}x"
    )
