"""Training jobs for ``tests/test_resume_mirrored.py``: ``model.fit`` under ``MirroredStrategy``
over 2 logical CPUs (one input pipeline feeding two replicas) with ``seqprep.BackupAndRestore``,
killed mid-epoch with ``os._exit`` and run again.

Usage: ``python _resume_mirrored_worker.py JOBS_JSON``: a list of jobs run one after the other
in this process (logical devices must be set before TensorFlow initialises, so this runs in a
fresh interpreter). A job is ``{"route", "backup", "out", "kill"}``:

* ``route``: ``"distributed"`` (``sp.distributed_bucketed_dataset``, passed to the callback as
  ``dataset=``) or ``"from_function"``
  (``strategy.distribute_datasets_from_function(sp.replica_dataset_fn(...))``, found among the
  live epoch streams);
* ``kill``: ``null`` (run to the end) or ``[epoch, batch, how]``: after the ``batch``-th
  (1-based) training step of Keras epoch ``epoch``, end the process with ``os._exit``
  (``how="exit"``) or raise :class:`Killed` out of ``fit`` (``"raise"``: the next job runs
  in this process, with the killed run's datasets possibly still alive, as in a notebook).

A job with ``"plain": true`` runs ``model.fit(dd, epochs=EPOCHS, validation_data=val_dd)`` on the
``"distributed"`` route WITHOUT ``BackupAndRestore`` (Keras must end each epoch at its last real
step on its own) and writes to ``out + ".plain.json"``: ``optimizer.iterations`` after every
epoch, the step count Keras was given (``params["steps"]``), the batches each epoch ran, the
warnings ``fit`` raised, each validation pass's example ids, the last ``val_loss`` and the
loss of the final model on every validation example, one at a time.

Every step appends one JSON line to ``out + ".steps"``: the Keras epoch and the example ids of
each replica's batch (recorded inside the replicated train step; ``x[i][0]`` is ``i + 1``). A
killed job writes the position of the checkpoint it leaves, ``[epoch, step]``, to
``out + ".saved"``; a job that finishes writes its final weights to ``out + ".npz"``.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import seqprep as sp  # noqa: E402

N = 45  # odd: a bucket's leftovers are shared between the replicas
N_VAL = 21  # the validation set of the "plain" job: odd too
FIRST_EPOCH = 1  # the sampler epoch Keras epoch 0 plays
EPOCHS = 3
META = "seqprep_training_metadata.json"
SAVE_FREQ = 3  # an odd step: resuming by pipeline elements would swap the replicas' batches


def data(n: int = N, seed: int = 0):
    """Token sequences whose first token names the example (``i + 1``), and float labels."""
    rng = np.random.default_rng(seed)
    x = [np.concatenate([[i + 1], rng.integers(1, 20, k - 1)]).astype(np.int32)
         for i, k in enumerate(rng.integers(1, 12, n))]
    return x, rng.random(n).astype(np.float32)


def sampler_of(x) -> sp.BucketSampler:
    return sp.BucketSampler(sp.sequence_lengths(x), batch_size=8, seed=1)


class Killed(Exception):
    """Raised out of ``fit`` to interrupt a run without ending the process."""


class Steps(keras.callbacks.Callback):
    """Collects each replica's example ids inside the train step; writes one line per step."""

    def __init__(self, path: str, kill, backup: str) -> None:
        super().__init__()
        self.path, self.kill, self.backup = path, kill, backup
        self.rows: dict[int, list[int]] = {}
        self.lock = threading.Lock()
        self.epoch = -1

    def record(self, replica, first_tokens) -> np.int64:
        with self.lock:
            self.rows[int(replica)] = (first_tokens - 1).tolist()
        return np.int64(0)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        with self.lock:
            rows, self.rows = self.rows, {}
        with open(self.path, "a") as f:
            f.write(json.dumps({"epoch": self.epoch, "replicas": [rows[0], rows[1]]}) + "\n")
        if self.kill is not None and self.kill[:2] == [self.epoch, batch + 1]:
            with open(os.path.join(self.backup, META)) as f:
                meta = json.load(f)
            with open(self.path[: -len(".steps")] + ".saved", "w") as f:
                json.dump([meta["epoch"], meta["step"]], f)  # the checkpoint left behind
            if self.kill[2] == "raise":
                raise Killed
            os._exit(17)


class Plain(keras.callbacks.Callback):
    """What a run without BackupAndRestore did per epoch (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.out: dict = {"iterations": [], "batches": [], "val_ids": []}
        self.val_ids: list[int] = []
        self.batches = 0
        self.lock = threading.Lock()

    def record_val(self, first_tokens) -> np.int64:
        with self.lock:
            self.val_ids.extend((first_tokens - 1).tolist())
        return np.int64(0)

    def on_train_begin(self, logs=None):
        self.out["steps"] = self.params.get("steps")

    def on_epoch_begin(self, epoch, logs=None):
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1

    def on_test_end(self, logs=None):
        with self.lock:
            self.out["val_ids"].append(sorted(self.val_ids))
            self.val_ids = []

    def on_epoch_end(self, epoch, logs=None):
        self.out["iterations"].append(int(self.model.optimizer.iterations.numpy()))
        self.out["batches"].append(self.batches)


def build(steps: Steps, plain: Plain | None = None) -> keras.Model:
    class RecordingModel(keras.Model):
        def test_step(self, data):  # type: ignore[override]
            x, y = data
            if plain is not None:
                done = tf.numpy_function(plain.record_val, [x[:, 0]], tf.int64, stateful=True)
                with tf.control_dependencies([done]):
                    y = tf.identity(y)
            return super().test_step((x, y))

        def train_step(self, data):  # type: ignore[override]
            x, y = data
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            done = tf.numpy_function(steps.record, [tf.cast(replica, tf.int64), x[:, 0]],
                                     tf.int64, stateful=True)
            with tf.control_dependencies([done]):
                y = tf.identity(y)
            return super().train_step((x, y))

    inputs = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(N + 2, 4, mask_zero=True)(inputs)
    h = keras.layers.GlobalAveragePooling1D()(h)
    h = keras.layers.Dropout(0.3)(h)  # its seed generator's state is in the checkpoint too
    model = RecordingModel(inputs, keras.layers.Dense(1)(h))
    model.compile(keras.optimizers.Adam(0.02), "mse")
    return model


def run(strategy, job: dict) -> keras.Model:
    x, y = data()
    steps = Steps(job["out"] + ".steps", job["kill"], job["backup"])
    if job.get("plain"):
        return run_plain(strategy, job, x, y, steps)
    with strategy.scope():
        model = build(steps)
    if job["route"] == "distributed":
        dd = sp.distributed_bucketed_dataset(strategy, x, y, sampler=sampler_of(x),
                                             epoch=FIRST_EPOCH)
        backup = sp.BackupAndRestore(job["backup"], save_freq=SAVE_FREQ, dataset=dd)
    else:  # found among sp.live_epoch_streams()
        dd = strategy.distribute_datasets_from_function(
            sp.replica_dataset_fn(x, y, sampler=sampler_of(x), epoch=FIRST_EPOCH))
        backup = sp.BackupAndRestore(job["backup"], save_freq=SAVE_FREQ)
    model.fit(dd, epochs=EPOCHS, callbacks=[backup, steps], verbose=0, shuffle=False)
    return model


def run_plain(strategy, job: dict, x, y, steps: Steps) -> keras.Model:
    """``fit`` on ``distributed_bucketed_dataset`` without BackupAndRestore, with validation."""
    plain = Plain()
    with strategy.scope():
        model = build(steps, plain)
    # One epoch earlier: without BackupAndRestore to drive the passes, the iterator Keras
    # draws the model-building batch from (under a strategy) starts a pass of its own, so
    # Keras epoch e plays sampler epoch e + 1, as the BackupAndRestore runs (from FIRST_EPOCH).
    dd = sp.distributed_bucketed_dataset(strategy, x, y, sampler=sampler_of(x),
                                         epoch=FIRST_EPOCH - 1)
    val_x, val_y = data(N_VAL, seed=1)
    val_dd = sp.distributed_bucketed_dataset(strategy, val_x, val_y, sampler=sp.BucketSampler(
        sp.sequence_lengths(val_x), batch_size=6, seed=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(dd, epochs=EPOCHS, validation_data=val_dd, callbacks=[plain, steps],
                            verbose=0, shuffle=False)
    one_by_one = [float(model(v[None], training=False)[0, 0]) for v in val_x]
    plain.out.update(
        warnings=[str(w.message) for w in caught],
        val_loss=float(history.history["val_loss"][-1]),
        val_mse=float(np.mean((np.asarray(one_by_one) - val_y) ** 2)),
    )
    with open(job["out"] + ".plain.json", "w") as f:
        json.dump(plain.out, f)
    return model


def main() -> None:
    tf.config.experimental.enable_op_determinism()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for job in json.loads(sys.argv[1]):
        keras.backend.clear_session()
        gc.collect()
        keras.utils.set_random_seed(0)
        try:
            model = run(strategy, job)
        except Killed:
            continue
        np.savez(job["out"] + ".npz", *model.get_weights())
        del model


if __name__ == "__main__":
    main()
