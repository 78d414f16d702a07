"""seqprep.BackupAndRestore: a training process killed (SIGKILL) at any step and started again
ends with the weights of an uninterrupted run, on bucketed_dataset and fit_per_length."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# 100 sequences, batch 16: 7 batches per epoch, 3 epochs. The script records which examples
# each trained batch held (y is the example id) to show what a resumed run replays.
SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import keras, tensorflow as tf
    import seqprep as sp

    backup, kill_at, out, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    per_epoch = 8 if mode == "per_length" else 7
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 12, 100)
    if mode == "changed":
        lengths[0] = 12 - lengths[0]
    x = [rng.integers(1, 20, n) for n in lengths]
    y = np.arange(100, dtype="float32") / 100

    class Model(keras.Sequential):
        seen = []

        def train_step(self, data):
            self.seen.append(np.round(data[1].numpy() * 100).astype(int).tolist())
            return super().train_step(data)

    model = Model([keras.Input((None,), dtype="int32"), keras.layers.Embedding(20, 4),
                   keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", run_eagerly=True)

    meta = os.path.join(backup, "seqprep_training_metadata.json")
    start = 0
    if os.path.exists(meta):
        with open(meta) as f:
            saved = json.load(f)
        start = saved["epoch"] * per_epoch + saved["step"]

    class Kill(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if start + len(model.seen) == kill_at:
                with open(out + ".seen.json", "w") as f:
                    json.dump(model.seen, f)
                os.kill(os.getpid(), 9)

    cbs = [sp.BackupAndRestore(backup, save_freq=3), Kill()]
    if mode == "per_length":
        sp.fit_per_length(model, x, y, epochs=3, batch_size=16, group_by=[4, 8],
                          callbacks=cbs, verbose=0)
    else:
        sampler = sp.BucketSampler(lengths, batch_size=16, seed=1)
        ds = sp.bucketed_dataset(x, y, sampler=sampler)
        model.fit(ds, epochs=3, callbacks=cbs, verbose=0)
    np.savez(out, *model.get_weights())
    with open(out + ".seen.json", "w") as f:
        json.dump(model.seen, f)
    """
)


def _run(tmp_path: Path, backup: str, kill_at: int, out: str, mode: str):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
           "CUDA_VISIBLE_DEVICES": "-1"}
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / backup), str(kill_at),
         str(tmp_path / out), mode],
        env=env, capture_output=True, text=True, timeout=600,
    )


def _weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def _seen(path: Path) -> list[list[int]]:
    return json.loads(Path(str(path) + ".seen.json").read_text())


def _saved_step(backup: Path, per_epoch: int) -> int:
    meta = backup / "seqprep_training_metadata.json"
    if not meta.exists():
        return 0
    saved = json.loads(meta.read_text())
    return saved["epoch"] * per_epoch + saved["step"]


# One run killed again and again at these global steps (batches trained since the start), then
# run to the end. bucketed_dataset: 7 batches per epoch; a checkpoint every 3 batches and at
# every epoch end, so at 3, 6, 7, 10, 13, 14, ...: 1 is the first batch, before any
# checkpoint; 8 the first batch of epoch 1 (resumed at its start); 11 its middle; 14 its last
# batch (the kill comes before the epoch-end checkpoint). fit_per_length (three buckets): 8
# batches per epoch, checkpoints at 3, 6, 8, 11, 14, 16, ...
@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "per_epoch", "kills"),
    [("bucketed", 7, {1: 0, 8: 7, 11: 10, 14: 13}), ("per_length", 8, {12: 11})],
)
def test_killed_runs_end_with_the_uninterrupted_weights(tmp_path, mode, per_epoch, kills):
    done = _run(tmp_path, "ref_backup", -1, "ref.npz", mode)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = _weights(tmp_path / "ref.npz")
    ref_seen = _seen(tmp_path / "ref.npz")
    assert len(ref_seen) == 3 * per_epoch
    # Three different orders, every example once in each.
    epochs = [ref_seen[i * per_epoch : (i + 1) * per_epoch] for i in range(3)]
    assert all(sorted(sum(e, [])) == list(range(100)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]

    backup = tmp_path / "backup"
    for i, (kill, saved) in enumerate(kills.items()):
        start = _saved_step(backup, per_epoch)
        killed = _run(tmp_path, "backup", kill, f"killed_{i}.npz", mode)
        assert killed.returncode == -9, killed.stderr[-3000:]
        # Each run trains exactly the batches after its checkpoint, in the uninterrupted order.
        assert _seen(tmp_path / f"killed_{i}.npz") == ref_seen[start:kill], (kill, start)
        assert _saved_step(backup, per_epoch) == saved

    if mode == "bucketed":
        changed = _run(tmp_path, "backup", -1, "changed.npz", "changed")
        assert changed.returncode != 0
        message = changed.stderr
        assert "was written while training on another dataset or sampler" in message
        assert "fingerprint" in message and "`backup_dir`" in message

    start = _saved_step(backup, per_epoch)
    resumed = _run(tmp_path, "backup", -1, "resumed.npz", mode)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _seen(tmp_path / "resumed.npz") == ref_seen[start:]
    got = _weights(tmp_path / "resumed.npz")
    diff = max(float(np.abs(a - b).max()) for a, b in zip(got, reference, strict=True))
    assert diff <= 1e-6, diff
    assert not backup.exists()  # deleted when training completed


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"save_freq": 0}, r"Argument `save_freq` must be .*Received: save_freq=0"),
        ({"save_freq": "batch"}, r"Received: save_freq='batch'\n- Pass"),
        ({"save_freq": True}, r"Received: save_freq=True"),
        ({"dataset": [1, 2]}, r"Argument `dataset` must be a seqprep dataset.*list\n- Pass"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path, kwargs, match):
    import seqprep as sp

    with pytest.raises(ValueError, match=match):
        sp.BackupAndRestore(tmp_path / "b", **kwargs)
    with pytest.raises(ValueError, match=r"Argument `backup_dir` .*Received: backup_dir=''"):
        sp.BackupAndRestore("")


def test_checkpoint_names_the_training_dataset_not_the_validation_one(tmp_path, token_model):

    import seqprep as sp

    rng = np.random.default_rng(4)
    x = [rng.integers(1, 20, n) for n in rng.integers(1, 12, 64)]
    v = [rng.integers(1, 20, n) for n in rng.integers(1, 12, 64)]  # as many batches
    train_s = sp.BucketSampler(sp.sequence_lengths(x), batch_size=16, seed=1)
    val_s = sp.BucketSampler(sp.sequence_lengths(v), batch_size=16, seed=1)
    assert len(train_s) == len(val_s)
    ds = sp.bucketed_dataset(x, np.zeros(64), sampler=train_s)
    val = sp.bucketed_dataset(v, np.zeros(64), sampler=val_s)
    model = token_model(20, 2, body="mean", mask_zero=False)
    model.compile(optimizer="adam", loss="mse")
    backup = sp.BackupAndRestore(tmp_path / "b", save_freq=3, delete_checkpoint=False)
    model.fit(ds, validation_data=val, epochs=3, callbacks=[backup], verbose=0)
    meta = json.loads((tmp_path / "b" / "seqprep_training_metadata.json").read_text())
    assert (meta["epoch"], meta["step"]) == (3, 0)
    assert meta["dataset"]["fingerprint"] == train_s.state_dict()["fingerprint"]
    assert meta["dataset"]["fingerprint"] != val_s.state_dict()["fingerprint"]
    assert len(list((tmp_path / "b").glob("*.weights.h5"))) == 1  # older checkpoints removed
