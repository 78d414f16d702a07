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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import seqprep as sp  # noqa: E402

N = 45  # odd: a bucket's leftovers are shared between the replicas
EPOCHS = 3
META = "seqprep_training_metadata.json"
SAVE_FREQ = 3  # an odd step: resuming by pipeline elements would swap the replicas' batches


def data(n: int = N):
    """Token sequences whose first token names the example (``i + 1``), and float labels."""
    rng = np.random.default_rng(0)
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


def build(steps: Steps) -> keras.Model:
    class RecordingModel(keras.Model):
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
    with strategy.scope():
        model = build(steps)
    if job["route"] == "distributed":
        dd = sp.distributed_bucketed_dataset(strategy, x, y, sampler=sampler_of(x))
        backup = sp.BackupAndRestore(job["backup"], save_freq=SAVE_FREQ, dataset=dd)
    else:  # found among sp.live_epoch_streams()
        dd = strategy.distribute_datasets_from_function(
            sp.replica_dataset_fn(x, y, sampler=sampler_of(x)))
        backup = sp.BackupAndRestore(job["backup"], save_freq=SAVE_FREQ)
    model.fit(dd, epochs=EPOCHS, callbacks=[backup, steps], verbose=0, shuffle=False)
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
