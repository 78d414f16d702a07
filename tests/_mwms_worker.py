"""Subprocess body for the tf.distribute tests in ``tests/test_distributed.py``.

Runs in a fresh interpreter because logical devices and ``TF_CONFIG`` must be set before
TensorFlow initialises, which must not happen inside the pytest process (it is shared with
other tests). Prints one JSON line prefixed ``RESULT `` on success.

Modes:
    ``mirrored``: MirroredStrategy over 2 logical CPUs; trains one epoch through both
    routes (``distributed_bucketed_dataset`` + ``model.fit``, and a plain ``bucketed_dataset``
    + ``model.fit`` that Keras splits per replica, then ``fit_distributed`` on it) and records,
    per replica and step, the ids and padded width it trained on.
    ``worker``: one MultiWorkerMirroredStrategy worker (``TF_CONFIG`` from the environment);
    trains one epoch with ``fit_distributed`` and records the same.
"""

from __future__ import annotations

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

N = 61  # odd: leftover batches and a remainder group are exercised


def make_data(n: int = N, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Sequences of lengths 1..24 with one feature; y[:, 0] label, y[:, 1] the sequence id."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 25, size=n)
    x = [rng.normal(size=(t, 1)).astype("float32") for t in lengths]
    y = np.stack([rng.integers(0, 2, size=n), np.arange(n)], axis=1).astype("float32")
    return x, y


class Recorder:
    """Collects (replica, width, ids) from inside the replicated train step."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, list[int]]] = []
        self._lock = threading.Lock()

    def __call__(self, replica: tf.Tensor, width: tf.Tensor, ids: tf.Tensor) -> int:
        with self._lock:
            self.rows.append(
                (int(replica), int(width), [int(i) for i in np.asarray(ids).tolist()])
            )
        return 0

    def per_replica(self, num_replicas: int) -> list[list[dict]]:
        out: list[list[dict]] = [[] for _ in range(num_replicas)]
        for replica, width, ids in self.rows:
            out[replica].append({"width": width, "ids": ids})
        return out


def label_loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy on the label column (column 1 holds the sequence id)."""
    return keras.losses.binary_crossentropy(y_true[:, :1], y_pred)


def build_model(recorder: Recorder) -> keras.Model:
    class RecordingModel(keras.Model):
        def train_step(self, data):  # type: ignore[override]
            x, y = data
            ctx = tf.distribute.get_replica_context()
            replica = ctx.replica_id_in_sync_group if ctx is not None else 0
            done = tf.numpy_function(
                recorder,
                [tf.cast(replica, tf.int64), tf.shape(x, out_type=tf.int64)[1],
                 tf.cast(y[:, 1], tf.int64)],
                tf.int64,
                stateful=True,
            )
            with tf.control_dependencies([done]):
                y = tf.identity(y)
            return super().train_step((x, y))

    inputs = keras.Input((None, 1))
    h = keras.layers.Masking()(inputs)
    h = keras.layers.LSTM(4)(h)
    outputs = keras.layers.Dense(1, activation="sigmoid")(h)
    model = RecordingModel(inputs, outputs)
    model.compile(optimizer="sgd", loss=label_loss)
    return model


def run_mirrored() -> dict:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x, y = make_data()
    result: dict = {"num_replicas": strategy.num_replicas_in_sync}

    # Route 1: distribute_datasets_from_function, then Keras fit.
    recorder = Recorder()
    with strategy.scope():
        model = build_model(recorder)
    dd = sp.distributed_bucketed_dataset(strategy, x, y, sampler=sp.BucketSampler(
        sp.sequence_lengths(x), batch_size=8, boundaries=[6, 12, 18]))
    steps = int(dd.cardinality)
    history = model.fit(dd, epochs=1, verbose=0)
    result["route1"] = {
        "cardinality": steps,
        "iterations": int(model.optimizer.iterations.numpy()),
        "loss": history.history["loss"],
        "replicas": recorder.per_replica(2),
    }

    # Route 2: a plain bucketed_dataset of global batches; Keras splits each batch in two.
    recorder = Recorder()
    with strategy.scope():
        model = build_model(recorder)
    n_even = 64
    x2, y2 = make_data(n_even, seed=1)
    sampler = sp.BucketSampler(sp.sequence_lengths(x2), boundaries=[6, 12, 18], batch_size=8)
    ds = sp.bucketed_dataset(x2, y2, sampler=sampler)
    history = model.fit(ds, epochs=1, verbose=0)
    result["route2"] = {
        "n": n_even,
        "num_batches": len(sampler),
        "loss": history.history["loss"],
        "replicas": recorder.per_replica(2),
    }
    # fit_distributed on the same global batches: experimental_distribute_dataset counts steps
    # (each global batch split between the replicas), so all of them train.
    split = strategy.experimental_distribute_dataset(ds)
    result["route2"]["fit_distributed_steps"] = sp.fit_distributed(model, split).history["steps"]
    return result


def run_worker() -> dict:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    x, y = make_data()
    recorder = Recorder()
    with strategy.scope():
        model = build_model(recorder)
    dd = sp.distributed_bucketed_dataset(strategy, x, y, sampler=sp.BucketSampler(
        sp.sequence_lengths(x), batch_size=8, boundaries=[6, 12, 18]))
    history = sp.fit_distributed(model, dd, epochs=1)
    return {
        "task": task,
        "num_replicas": strategy.num_replicas_in_sync,
        "steps": history.history["steps"],
        "loss": history.history["loss"],
        "weights": [float(np.asarray(w).sum()) for w in model.get_weights()],
        "replicas": recorder.per_replica(strategy.num_replicas_in_sync)[task : task + 1],
    }


if __name__ == "__main__":
    mode = sys.argv[1]
    out = run_mirrored() if mode == "mirrored" else run_worker()
    print("RESULT " + json.dumps(out), flush=True)
