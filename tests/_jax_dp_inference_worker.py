"""The two-device half of tests/test_inference_evaluate.py's data-parallel test, run in a
subprocess.

Started with ``KERAS_BACKEND=jax`` and ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
(JAX fixes its device count when it starts). It runs ``sp.predict`` and ``sp.evaluate`` on a
two-head model (a per-step tagger and a per-sequence classifier) with odd batch sizes under a
token budget, first on one device (no distribution), then under
``keras.distribution.DataParallel`` over both devices, and writes to ``argv[1]`` the largest
differences, the rows of every batch the data-parallel run gave the model, and whether the
one-device plan had batches of an odd row count (which the data-parallel run must fill).
"""

import json
import sys

import jax
import keras
import numpy as np

import seqprep as sp

LENGTHS = [3, 1, 9, 4, 2, 6, 12, 5, 2, 7, 1]  # 11 sequences: odd batches under the budget
MAX_TOKENS = 24


class _Rows(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rows = []

    def on_predict_batch_end(self, batch, logs=None):
        self.rows.append(int(keras.tree.flatten(logs["outputs"])[0].shape[0]))


def _model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, 2))
    masked = keras.layers.Masking()(inputs)
    tag = keras.layers.Dense(3, name="tag")(keras.layers.GRU(4, return_sequences=True)(masked))
    cls = keras.layers.Dense(2, name="cls")(keras.layers.GRU(4)(masked))
    model = keras.Model(inputs, [tag, cls])
    model.compile(loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True), "mse"],
                  loss_weights=[0.5, 1.0], metrics=[["sparse_categorical_accuracy"], ["mae"]],
                  weighted_metrics=[["sparse_categorical_accuracy"], ["mae"]])
    return model


def _run(model):
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(n, 2)).astype("float32") for n in LENGTHS]
    tags = [rng.integers(0, 3, n) for n in LENGTHS]
    values = rng.normal(size=(len(LENGTHS), 2)).astype("float32")
    weights = [rng.uniform(0.0, 2.0, n).astype("float32") for n in LENGTHS]
    rows = _Rows()
    tag, cls = sp.predict(model, x, max_tokens=MAX_TOKENS, verbose=0, callbacks=[rows])
    logs = sp.evaluate(model, x, [tags, values], sample_weight=[weights, None],
                       max_tokens=MAX_TOKENS, verbose=0)
    return tag, cls, logs, rows.rows


def main(out_path):
    model = _model()
    tag1, cls1, logs1, rows1 = _run(model)
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    replicated = _model()  # built under the distribution: its variables on both devices
    replicated.set_weights(model.get_weights())
    tag2, cls2, logs2, rows2 = _run(replicated)
    result = {
        "devices": len(jax.devices()),
        "one_device_rows": rows1,
        "rows": rows2,
        "predict_diff": max([float(np.abs(cls1 - cls2).max())]
                            + [float(np.abs(a - b).max())
                               for a, b in zip(tag1, tag2, strict=True)]),
        "shapes_equal": [a.shape for a in tag1] == [a.shape for a in tag2]
        and cls1.shape == cls2.shape,
        "keys_equal": sorted(logs1) == sorted(logs2),
        "evaluate_diff": max(abs(logs1[k] - logs2[k]) for k in logs1),
    }
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
