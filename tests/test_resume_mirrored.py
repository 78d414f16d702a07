"""seqprep.BackupAndRestore mid-epoch under ``MirroredStrategy``: one input pipeline feeds two
replicas (2 logical CPUs), so a training step consumes two of the pipeline's batches. A run of
a model with Dropout killed mid-epoch and started again ends with the weights of an
uninterrupted run, and every example is trained exactly once per epoch, on
``distributed_bucketed_dataset`` and on
``strategy.distribute_datasets_from_function(replica_dataset_fn(...))``.

Without ``BackupAndRestore``, ``model.fit(distributed_bucketed_dataset(...), epochs=3)`` runs
exactly the planned steps each epoch (no empty extra step advancing ``optimizer.iterations``),
trains the weights of the run with it, and ``validation_data=`` evaluates every example once.

The jobs run in tests/_resume_mirrored_worker.py, in two processes (two TensorFlow imports):
the first runs both uninterrupted runs, the run without BackupAndRestore, and kills the first
route's run; the second resumes it,
then interrupts the second route's run by raising out of ``fit`` and resumes that in the same
process (the interrupted run's datasets may still be alive, as in a notebook).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_resume_mirrored_worker.py")
META = "seqprep_training_metadata.json"
ROUTES = ("distributed", "from_function")
N, N_VAL = 45, 21  # as in the worker
# Killed after step 5 of Keras epoch 1; with save_freq=3 the last checkpoint holds 3 steps
# of that epoch: an odd step, where a resume counted in pipeline batches (steps x 2) would
# give each replica the other's batches.
KILL, SAVED = [1, 5], (1, 3)
KILLED_RC = 17  # the worker's os._exit status


def _run(jobs: list[dict]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
           "CUDA_VISIBLE_DEVICES": "-1", "KERAS_BACKEND": "tensorflow"}
    env.pop("TF_CONFIG", None)
    return subprocess.run([sys.executable, str(WORKER), json.dumps(jobs)], env=env,
                          capture_output=True, text=True, timeout=180)


def _steps(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("resume_mirrored")

    def job(route, kind, kill=None):
        backup = tmp / (f"backup_ref_{route}" if kind == "ref" else f"backup_{route}")
        return {"route": route, "backup": str(backup), "out": str(tmp / f"{kind}_{route}"),
                "kill": kill, "plain": kind == "plain"}

    first, second = ROUTES
    out: dict = {r: {} for r in ROUTES}
    killed = _run([job(first, "ref"), job(second, "ref"), job(first, "plain"),
                   job(first, "killed", [*KILL, "exit"])])
    resumed = _run([job(first, "resumed"), job(second, "killed", [*KILL, "raise"]),
                    job(second, "resumed")])
    out[first]["killed_rc"], out[second]["killed_rc"] = killed.returncode, resumed.returncode
    for route in ROUTES:
        r = out[route]
        r["stderr"] = killed.stderr[-3000:] + resumed.stderr[-3000:]
        for kind in ("ref", "killed", "resumed", "plain"):
            steps = tmp / f"{kind}_{route}.steps"
            r[kind] = _steps(steps) if steps.exists() else None
            weights = tmp / f"{kind}_{route}.npz"
            r[kind + "_weights"] = _weights(weights) if weights.exists() else None
        saved = tmp / f"killed_{route}.saved"
        r["saved"] = tuple(json.loads(saved.read_text())) if saved.exists() else None
        r["backup_left"] = (tmp / f"backup_{route}").exists()
        plain = tmp / f"plain_{route}.plain.json"
        r["plain_fit"] = json.loads(plain.read_text()) if plain.exists() else None
    return out


@pytest.mark.slow
@pytest.mark.parametrize("route", ROUTES)
def test_killed_mirrored_run_resumes_exactly_and_trains_every_example_once(runs, route):
    r = runs[route]
    # os._exit for the first route, an exception out of `fit` (the process goes on) for the
    # second.
    assert r["killed_rc"] == (KILLED_RC if route == ROUTES[0] else 0), r["stderr"]
    assert r["resumed_weights"] is not None, r["stderr"]
    assert r["saved"] == SAVED
    ref, killed, resumed = r["ref"], r["killed"], r["resumed"]
    # The killed run trained 5 steps of epoch 1 and its checkpoint holds 3: the resumed run
    # trains that epoch from its step 4 on.
    epoch, step = SAVED
    kept = [s for s in killed if s["epoch"] < epoch] + \
        [s for s in killed if s["epoch"] == epoch][:step]
    assert len([s for s in killed if s["epoch"] == epoch]) == KILL[1]
    assert resumed[0]["epoch"] == epoch
    # Step by step, replica by replica, the batches of the uninterrupted run.
    assert kept + resumed == ref
    for e in sorted({s["epoch"] for s in ref}):
        ids = Counter(i for s in kept + resumed if s["epoch"] == e
                      for replica in s["replicas"] for i in replica)
        assert ids == Counter(range(N)), f"epoch {e}: every example exactly once"
    assert {len(s["replicas"]) for s in ref} == {2}
    assert any(len(a) != len(b) for a, b in (s["replicas"] for s in ref)), \
        "some step shares a bucket's leftovers unevenly (the case is what it claims)"
    diff = max(float(np.abs(a - b).max())
               for a, b in zip(r["ref_weights"], r["resumed_weights"], strict=True))
    assert diff <= 1e-6, diff
    assert not r["backup_left"]  # deleted when training completed


@pytest.mark.slow
def test_both_mirrored_routes_train_the_same_plan(runs):
    """``distributed_bucketed_dataset`` is ``distribute_datasets_from_function`` of
    ``replica_dataset_fn``: the same batches and weights."""
    a, b = (runs[route] for route in ROUTES)
    assert a["ref"] == b["ref"]
    for x, y in zip(a["ref_weights"], b["ref_weights"], strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_fit_without_backup_runs_the_planned_steps_and_no_empty_one(runs):
    """``fit(distributed_bucketed_dataset(...), epochs=3)`` with no BackupAndRestore: Keras is
    given the step count (not steps x local replicas), runs exactly those steps per epoch, so
    ``optimizer.iterations`` is steps x epochs (an empty step past the data used to advance it
    by one per epoch) and the weights are those of the run with BackupAndRestore (which ended
    each epoch at its last real step). The validation pass (another distributed dataset)
    evaluates every example once and no step past its data either."""
    r = runs[ROUTES[0]]
    fit, ref = r["plain_fit"], r["ref"]
    assert fit is not None, r["stderr"]
    steps = sum(s["epoch"] == 0 for s in ref)  # the planned steps of an epoch
    epochs = 1 + max(s["epoch"] for s in ref)
    assert fit["steps"] == steps  # the progress bar's and History's step count
    assert fit["batches"] == [steps] * epochs
    assert fit["iterations"] == [steps * (e + 1) for e in range(epochs)]
    assert not [w for w in fit["warnings"] if "ran out of data" in w], fit["warnings"]
    assert r["plain"] == ref  # the same batches, step by step and replica by replica
    diff = max(float(np.abs(a - b).max())
               for a, b in zip(r["ref_weights"], r["plain_weights"], strict=True))
    assert diff <= 1e-6, diff
    assert fit["val_ids"] == [list(range(N_VAL))] * epochs
    assert fit["val_loss"] == pytest.approx(fit["val_mse"], rel=1e-5, abs=1e-6)
