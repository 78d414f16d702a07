"""Bucketed training scaled out with TensorFlow's own engines, on one machine.

Four parts, each on the bundled UCI Japanese Vowels data (speaker recognition, 9 classes,
sequences of 7 to 29 frames of 12 features):

1. ``MirroredStrategy`` over 2 logical CPU devices, two routes:
   a. ``seqprep.distributed_bucketed_dataset`` (``distribute_datasets_from_function``): each
      replica plays its shard of one plan; same steps, bucket and padded length everywhere;
   b. a plain ``seqprep.bucketed_dataset`` passed to ``fit`` under ``strategy.scope()``:
      Keras splits every global batch between the replicas.
2. ``MultiWorkerMirroredStrategy`` with 2 worker processes on loopback ports
   (``--multi-worker``; this script starts them as subprocesses), trained with
   ``seqprep.running._distributed.fit_distributed`` because Keras 3's ``fit`` fails under it.
3. The ``tf.data`` service: a dispatcher and 2 workers in this process, batches served with
   ``processing_mode="distributed_epoch"`` (every batch exactly once).
4. Streaming from Parquet: the data written in long format (one row per frame), streamed
   back with ``parquet_sequence_dataset`` and bucketed with ``bucket_by_length``.

    python examples/distributed_training.py                  # parts 1, 3, 4; 3 epochs each
    python examples/distributed_training.py --multi-worker   # and part 2
    python examples/distributed_training.py --quick          # 1 epoch, small model
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402

# Logical devices must be configured before TensorFlow touches a device.
if "TF_CONFIG" not in os.environ:
    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )

import keras  # noqa: E402

import seqprep as sp  # noqa: E402
from seqprep.running._distributed import (  # noqa: E402
    fit_distributed,
    local_data_service,
    parquet_sequence_dataset,
    service_bucketed_dataset,
)

BOUNDARIES = [12, 16, 20]


def build_model(units: int) -> keras.Model:
    model = sp.models.reference_rnn(input_dim=12, num_classes=9, units=units, seed=0)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def accuracy(model: keras.Model, x, y) -> float:
    sampler = sp.BucketSampler(sp.sequence_lengths(x), boundaries=BOUNDARIES, batch_size=64,
                               shuffle=False)
    ds = sp.bucketed_dataset(x, y, sampler=sampler)
    return float(model.evaluate(ds, verbose=0, return_dict=True)["accuracy"])


def mirrored(x, y, xt, yt, epochs: int, units: int) -> None:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    print(f"\n1a. MirroredStrategy, {strategy.num_replicas_in_sync} replicas: "
          "distributed_bucketed_dataset + fit")
    with strategy.scope():
        model = build_model(units)
    # The global plan: batch_size is per step over all replicas (each gets 32 / 2 rows).
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=32, boundaries=BOUNDARIES)
    dd = sp.distributed_bucketed_dataset(strategy, x, y, sampler=sampler)
    model.fit(dd, epochs=epochs, verbose=0)
    print(f"    test accuracy {accuracy(model, xt, yt):.3f}")

    print("1b. MirroredStrategy: plain bucketed_dataset + fit (Keras splits each batch)")
    with strategy.scope():
        model = build_model(units)
    # Every batch must split evenly between the replicas, the first one above all (Keras
    # builds the model from it): an even batch size and drop_remainder=True guarantee it.
    sampler = sp.BucketSampler(sp.sequence_lengths(x), boundaries=BOUNDARIES, batch_size=32,
                               drop_remainder=True)
    ds = sp.bucketed_dataset(
        x, y, sampler=sampler,
        options=sp.Options(epochs=epochs, reshuffle_each_iteration=False))
    model.fit(ds, epochs=epochs, steps_per_epoch=len(sampler), verbose=0)
    print(f"    test accuracy {accuracy(model, xt, yt):.3f} "
          f"({sampler.num_dropped_} sequences left out per epoch by drop_remainder)")


def multi_worker(epochs: int, units: int, quick: bool) -> None:
    print("\n2. MultiWorkerMirroredStrategy: 2 worker processes on loopback ports")
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    try:
        for i in range(2):
            env = dict(os.environ, TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": i}}))
            args = [sys.executable, __file__, "--worker", f"--epochs={epochs}",
                    f"--units={units}"]
            procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
        for i, proc in enumerate(procs):
            out, _ = proc.communicate(timeout=600)
            lines = [ln for ln in out.splitlines() if ln.startswith("worker ")]
            print("    " + ("\n    ".join(lines) if lines else f"worker {i} failed:\n{out}"))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def worker_main(epochs: int, units: int) -> None:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    x, y = sp.datasets.load_japanese_vowels("train")
    with strategy.scope():
        model = build_model(units)
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=32, boundaries=BOUNDARIES)
    dd = sp.distributed_bucketed_dataset(strategy, x, y, sampler=sampler)
    history = fit_distributed(model, dd, epochs=epochs)
    print(f"worker {task}: steps per epoch {history.history['steps']}, "
          f"loss {[round(v, 3) for v in history.history['loss']]}", flush=True)


def data_service(x, y, xt, yt, epochs: int, units: int) -> None:
    print("\n3. tf.data service: dispatcher + 2 workers in-process, distributed_epoch")
    model = build_model(units)
    lengths = sp.sequence_lengths(x)
    sampler = sp.BucketSampler(lengths, boundaries=BOUNDARIES, batch_size=32, seed=0)
    with local_data_service(num_workers=2) as service:
        # Each pass (Keras epoch) plays the next of `distinct_epochs` registered epochs.
        ds = service_bucketed_dataset(service, x, y, sampler=sampler,
                                      distinct_epochs=min(epochs, 4))
        model.fit(ds, epochs=epochs, verbose=0)
    print(f"    test accuracy {accuracy(model, xt, yt):.3f}")


def streaming(x, y, xt, yt, epochs: int, units: int) -> None:
    print("\n4. Streaming Parquet (long format, rows grouped by id) into bucket_by_length")

    frame = sp.to_dataframe(x, targets=y)
    print(f"    {len(frame)} rows, columns {list(frame.columns)}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vowels.parquet")
        frame.to_parquet(path, row_group_size=1000)
        features = [c for c in frame.columns if c not in ("id", "time", "target")]
        ds = parquet_sequence_dataset(path, id="id", time="time", features=features,
                                      target="target", rows_per_read=2048)
        batches = ds.apply(sp.bucket_by_length(BOUNDARIES, batch_size=32, buffer_size=512,
                                               seed=0))
        model = build_model(units)
        model.fit(batches, epochs=epochs, verbose=0)
    print(f"    test accuracy {accuracy(model, xt, yt):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch, small model")
    parser.add_argument("--multi-worker", action="store_true", help="also run part 2")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--units", type=int, default=None)
    args = parser.parse_args()
    epochs = args.epochs or (1 if args.quick else 3)
    units = args.units or (8 if args.quick else 32)
    if args.worker:
        worker_main(epochs, units)
        return
    x, y = sp.datasets.load_japanese_vowels("train")
    xt, yt = sp.datasets.load_japanese_vowels("test")
    print(f"Japanese Vowels: {len(x)} training sequences, lengths "
          f"{int(min(map(len, x)))}..{int(max(map(len, x)))}")
    mirrored(x, y, xt, yt, epochs, units)
    if args.multi_worker:
        multi_worker(epochs, units, args.quick)
    data_service(x, y, xt, yt, epochs, units)
    streaming(x, y, xt, yt, epochs, units)


if __name__ == "__main__":
    main()
