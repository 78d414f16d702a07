"""seqprep.BackupAndRestore on real jobs: a training process killed with SIGKILL and started
again ends with the weights, learning rate and logged metrics of an uninterrupted run, with
Dropout and noise layers with ReduceLROnPlateau on ``loss``, ReduceLROnPlateau on ``val_loss``
with a validation set built like the training set, killed during validation, EarlyStopping,
packed_dataset and fit_per_length, on TensorFlow; and on JAX, the Dropout model with
ReduceLROnPlateau.

The jobs run in tests/_resume_worker.py. To keep the number of processes (and TensorFlow
imports) low, one process runs every uninterrupted baseline, and then each process finishes
the previous scenario's killed run and starts the next scenario until its kill.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_resume_worker.py")
META = "seqprep_training_metadata.json"

# Where each scenario is killed: [phase, Keras epoch, batch (1-based)], and the checkpoint
# (epoch, step) the kill leaves. save_freq=3: a checkpoint after batches 3 and 6 of an
# epoch (written when the next batch begins), none at the last batch, one at each epoch end.
# Each scenario costs a killed process and a restarted one, so one scenario holds every case
# that can share a kill: Dropout and noise layers with ReduceLROnPlateau on `loss`; a validation
# set built exactly like the training set with ReduceLROnPlateau on `val_loss`, killed during
# validation.
KILLS = {
    "dropout_plateau": (["train", 2, 5], (2, 3)),
    # During validation of epoch 1: the last checkpoint is at batch 6 of its 7, so the
    # restarted run trains batch 7 and validates epoch 1 again.
    "plateau_val": (["test", 1, 2], (1, 6)),
    "early": (["train", 2, 4], (2, 3)),
    "packed": (["train", 1, 5], (1, 3)),
    "per_length": (["train", 1, 5], (1, 3)),
}
# On JAX, the Dropout and ReduceLROnPlateau case (three processes).
JAX_KILLS = {"dropout_plateau": KILLS["dropout_plateau"]}


def _run(jobs: list[dict], backend: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
           "CUDA_VISIBLE_DEVICES": "-1", "KERAS_BACKEND": backend}
    return subprocess.run([sys.executable, str(WORKER), json.dumps(jobs)], env=env,
                          capture_output=True, text=True, timeout=900)


def _chain(tmp: Path, kills: dict, backend: str) -> dict[str, dict]:
    """Baselines in one process, then kill and resume every scenario (see module doc)."""
    def job(s, kind, kill=None):
        return {"scenario": s, "backup": str(tmp / f"{kind}_{s}"), "out": str(tmp / f"{kind}_{s}"),
                "kill": kill}

    scenarios = list(kills)
    done = _run([job(s, "ref") for s in scenarios], backend)
    assert done.returncode == 0, done.stderr[-3000:]
    results: dict[str, dict] = {s: {} for s in scenarios}
    previous = None
    for s in [*scenarios, None]:
        jobs = [] if previous is None else [job(previous, "run")]
        if s is not None:
            jobs.append(job(s, "run", kills[s][0]))
        proc = _run(jobs, backend)
        if previous is not None:
            results[previous]["resumed_ok"] = (tmp / f"run_{previous}.json").exists()
            results[previous]["stderr"] = proc.stderr[-3000:]
        if s is not None:
            results[s]["killed_rc"] = proc.returncode
            meta = tmp / f"run_{s}" / META
            saved = json.loads(meta.read_text()) if meta.exists() else None
            results[s]["saved"] = None if saved is None else (saved["epoch"], saved["step"])
            results[s]["kill_stderr"] = proc.stderr[-3000:]
        previous = s
    for s in scenarios:
        for kind in ("ref", "run"):
            path = tmp / f"{kind}_{s}"
            if Path(str(path) + ".json").exists():
                results[s][kind] = json.loads(Path(str(path) + ".json").read_text())
                with np.load(str(path) + ".npz") as f:
                    results[s][kind + "_weights"] = [
                        f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))
                    ]
        results[s]["backup_left"] = (tmp / f"run_{s}").exists()
    return results


@pytest.fixture(scope="module")
def tf_runs(tmp_path_factory):
    return _chain(tmp_path_factory.mktemp("resume_tf"), KILLS, "tensorflow")


@pytest.fixture(scope="module")
def jax_runs(tmp_path_factory):
    pytest.importorskip("jax")
    return _chain(tmp_path_factory.mktemp("resume_jax"), JAX_KILLS, "jax")


def _check_exact(r: dict, scenario: str, kills: dict = KILLS) -> None:
    assert r["killed_rc"] == -9, r["kill_stderr"]
    assert r["saved"] == kills[scenario][1]
    assert r["resumed_ok"], r["stderr"]
    ref, run = r["ref"], r["run"]
    diff = max(float(np.abs(a - b).max())
               for a, b in zip(r["ref_weights"], r["run_weights"], strict=True))
    assert diff <= 1e-6, diff
    assert abs(ref["lr"] - run["lr"]) <= 1e-6 * ref["lr"], (ref["lr"], run["lr"])
    # The restarted run logs the epochs from the checkpoint's on, each over the whole epoch
    # (the metric state is restored), validation included: equal to the uninterrupted run's.
    first = kills[scenario][1][0]
    assert run["epoch"] == ref["epoch"][first:]
    assert set(run["history"]) == set(ref["history"])
    for key, values in ref["history"].items():
        np.testing.assert_allclose(run["history"][key], values[first:], rtol=1e-6, atol=0,
                                   err_msg=key)
    assert not r["backup_left"]  # deleted when training completed


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(KILLS))
def test_killed_run_resumes_exactly_on_tensorflow(tf_runs, scenario):
    r = tf_runs[scenario]
    _check_exact(r, scenario)
    ref = r["ref"]
    # The cases are what they claim to be (so that this test can fail).
    if "plateau" in scenario:
        assert ref["history"]["learning_rate"][-1] < ref["history"]["learning_rate"][0]
        assert ref["lr"] == pytest.approx(0.005)
    if scenario == "early":
        assert len(ref["epoch"]) == 3 < 6  # stopped early, at the end of epoch 2
    if scenario == "plateau_val":
        assert len(ref["history"]["val_loss"]) == len(ref["epoch"])


@pytest.mark.slow
def test_killed_dropout_run_with_reduce_lr_on_plateau_resumes_exactly_on_jax(jax_runs):
    r = jax_runs["dropout_plateau"]
    _check_exact(r, "dropout_plateau", JAX_KILLS)
    assert r["ref"]["lr"] == pytest.approx(0.005)  # halved twice by ReduceLROnPlateau
