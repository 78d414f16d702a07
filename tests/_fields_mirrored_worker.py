"""Subprocess body for ``tests/test_fields_paths.py``: an encoder–decoder on dict inputs trained
under ``MirroredStrategy`` over 2 logical CPUs through ``distributed_bucketed_dataset`` with a
2-D sampler.

Runs in a fresh interpreter because logical devices must be set before TensorFlow initialises.
Records, inside the replicated train step, every replica's batches (both fields, the targets
and the weights) and prints one JSON line prefixed ``RESULT ``; the test compares them with
``pad_sequences`` of the planned sequences.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_fields_paths import pair_data, two_d_sampler  # noqa: E402

import seqprep as sp  # noqa: E402

N = 37  # odd: a bucket's leftovers are shared between the replicas


class Recorder:
    """Collects each replica's batches from inside the replicated train step."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict]] = []
        self._lock = threading.Lock()

    def __call__(self, replica, enc, dec, y, w) -> np.int64:
        with self._lock:
            self.rows.append((int(replica), {"enc": enc.tolist(), "dec": dec.tolist(),
                                             "y": y.tolist(), "w": w.tolist()}))
        return np.int64(0)


def build(recorder: Recorder) -> keras.Model:
    class RecordingModel(keras.Model):
        def train_step(self, data):  # type: ignore[override]
            x, y, w = data
            ctx = tf.distribute.get_replica_context()
            replica = ctx.replica_id_in_sync_group if ctx is not None else 0
            done = tf.numpy_function(recorder, [tf.cast(replica, tf.int64), x["enc"], x["dec"],
                                                y, w], tf.int64, stateful=True)
            with tf.control_dependencies([done]):
                y = tf.identity(y)
            return super().train_step((x, y, w))

    enc_in = keras.Input((None,), dtype="int32", name="enc")
    dec_in = keras.Input((None,), dtype="int32", name="dec")
    h = keras.layers.Embedding(max(N + 2, 50), 4, mask_zero=True)(enc_in)
    state = keras.layers.GRU(4)(h)
    d = keras.layers.Embedding(50, 4, mask_zero=True)(dec_in)
    d = keras.layers.GRU(4, return_sequences=True)(d, initial_state=state)
    out = keras.layers.Dense(50)(d)
    model = RecordingModel({"enc": enc_in, "dec": dec_in}, out)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def main() -> dict:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    src, dec_in, dec_out = pair_data(N, seed=11)
    recorder = Recorder()
    with strategy.scope():
        model = build(recorder)
    sampler = two_d_sampler(src, dec_in, batch_size=8, seed=4)
    dd = sp.distributed_bucketed_dataset(strategy, {"enc": src, "dec": dec_in}, dec_out,
                                         sampler=sampler, sample_weight="timestep")
    history = model.fit(dd, epochs=1, verbose=0)
    replicas: list[list[dict]] = [[], []]
    for replica, batch in recorder.rows:
        replicas[replica].append(batch)
    return {"num_replicas": strategy.num_replicas_in_sync, "loss": history.history["loss"],
            "replicas": replicas}


if __name__ == "__main__":
    print("RESULT " + json.dumps(main()), flush=True)
