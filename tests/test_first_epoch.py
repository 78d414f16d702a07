"""The first epochs on the Keras backends that read tf.data from Python (JAX, torch): no
tf.data autotuning thread for the next epoch's first batch to wait on (issue 21, item 4; the
measurements are in docs/benchmarks.md and tests/benchmarks/bench_first_epoch.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import seqprep as sp
from seqprep.planning._shapes import keras_backend
from seqprep.running._stream import for_keras_loop


def _autotune(ds: tf.data.Dataset) -> bool:
    enabled = ds.options().autotune.enabled
    return enabled is None or bool(enabled)  # None: tf.data's default, on


@pytest.mark.parametrize(("backend", "autotune"),
                         [("jax", False), ("torch", False), ("tensorflow", True)])
def test_python_loop_backends_get_no_autotuning_thread(backend, autotune):
    ds = tf.data.Dataset.range(5).map(lambda i: i * 2, num_parallel_calls=tf.data.AUTOTUNE)
    out = for_keras_loop(ds.prefetch(tf.data.AUTOTUNE), backend=backend)
    assert _autotune(out) is autotune
    assert [int(v) for v in out] == [0, 2, 4, 6, 8]  # the same elements, in order
    if autotune:
        assert out.options() == ds.prefetch(tf.data.AUTOTUNE).options()


@pytest.mark.backend
@pytest.mark.parametrize("build", ["bucketed", "packed"])
def test_datasets_turn_autotuning_off_on_this_backend_only(build):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, 40)
    x = [np.ones((n, 2), "float32") for n in lengths]
    y = np.zeros(len(x))
    if build == "bucketed":
        sampler = sp.BucketSampler(lengths, batch_size=8, seed=0)
        ds = sp.bucketed_dataset(x, y, sampler=sampler)
    else:
        sampler = sp.PackSampler(lengths, row_length=32, batch_size=4, seed=0)
        ds = sp.packed_dataset(x, y, sampler=sampler)
    assert _autotune(ds) is (keras_backend() not in ("jax", "torch"))
    assert sp.epoch_stream(ds) is not None  # BackupAndRestore still finds the stream
    assert sum(1 for _ in ds) == len(sampler)


@pytest.mark.backend
def test_fit_per_length_reads_its_epochs_without_autotuning_on_python_loop_backends():
    import keras

    rng = np.random.default_rng(1)
    x = [rng.random((n, 2), dtype="float32") for n in rng.integers(2, 6, 24)]
    y = rng.random(len(x)).astype("float32")
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    seen: list[tf.data.Dataset] = []
    plain_fit = model.fit

    def fit(x=None, *args, **kwargs):
        seen.append(x)
        return plain_fit(x, *args, **kwargs)

    model.fit = fit
    sp.fit_per_length(model, x, y, epochs=2, batch_size=8, verbose=0)
    assert len(seen) == 1 and isinstance(seen[0], tf.data.Dataset)
    assert _autotune(seen[0]) is (keras_backend() not in ("jax", "torch"))
