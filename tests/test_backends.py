"""Backend-sensitive tests: run on TensorFlow by `make test`, then again under JAX and PyTorch.

Every test here is marked ``backend``; `make test` reruns the marked tests with
``KERAS_BACKEND=jax`` and ``KERAS_BACKEND=torch``. They check, on whatever backend Keras runs on:

* the private Keras / JAX details in ``seqprep/running/_keras_private.py`` still behave as relied on
  (so a Keras upgrade that changes one fails here, by name);
* ``reference_rnn`` masks padding; ``bucketed_dataset`` and a streaming ``bucket_by_length``
  feed ``model.fit`` exactly the batches they yield (fit equals ``train_on_batch`` over those
  batches) and the model learns (the loss falls).

Shapes are kept few: JAX compiles a program per batch shape.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import seqprep as sp
from seqprep.models import compile_reference, reference_rnn
from seqprep.running._keras_private import JAX_TRACE_EVENT, StepTraces, keras_mask

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.backend


def sign_task(seed=0):
    """32 sequences of 3 features; the label says whether the first feature sums above 0.

    16 lengths fall below the boundary 8 and 16 above it: with batches of 16, every batch is
    full, and ``pad_to="bucket"`` gives two batch shapes in all (few compiles on JAX).
    """
    rng = np.random.default_rng(seed)
    lengths = rng.permutation(np.repeat([4, 6, 11, 13], 8))
    x = [rng.normal(size=(k, 3)).astype(np.float32) for k in lengths]
    y = np.array([int(s[:, 0].sum() > 0) for s in x], dtype=np.int32)
    return x, y, lengths


def small_rnn(seed=0):
    keras.utils.set_random_seed(seed)
    model = reference_rnn(input_dim=3, num_classes=2, cell="gru", units=8, seed=seed)
    return compile_reference(model, optimizer=keras.optimizers.Adam(0.03))


def twin_of(model):
    twin = small_rnn()
    twin.set_weights(model.get_weights())
    return twin


def assert_same_weights(a, b):
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- private details


def test_keras_mask_is_found_on_this_backend():
    layer = keras.layers.Embedding(5, 2, mask_zero=True)
    out = layer(np.array([[1, 2, 0]], dtype="int32"))
    assert keras.ops.convert_to_numpy(keras_mask(out)).tolist() == [[True, True, False]]
    assert keras_mask(keras.layers.Dense(2)(np.ones((1, 2), "float32"))) is None


def test_step_traces_counts_what_this_backend_traces():
    def batches():
        for width in (3, 5, 3, 5):
            yield np.ones((2, width), "int32"), np.zeros((2, 1), "float32")

    spec = (tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None, 1), tf.float32))
    ds = tf.data.Dataset.from_generator(batches, output_signature=spec)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(4, 2),
                              keras.layers.SimpleRNN(2), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.build(model.trainable_variables)
    traces = StepTraces(model).start()
    try:
        model.fit(ds, epochs=2, verbose=0, validation_data=ds)
    finally:
        traces.stop()
    # TensorFlow: one trace for the relaxed (None, None) spec; JAX: one per width (2);
    # PyTorch runs eagerly.
    expected = {"tensorflow": {"train": 1, "test": 1}, "jax": {"train": 2, "test": 2}}
    assert traces.counts() == expected.get(BACKEND)


def test_jax_still_reports_traces_by_function_name():
    jax = pytest.importorskip("jax", reason="JAX is not installed")
    seen = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: seen.append(kw.get("fun_name"))
        if event == JAX_TRACE_EVENT else None
    )

    def train_step(v):
        return v * 2

    step = jax.jit(train_step)
    step(np.ones(2, "float32"))
    step(np.ones(2, "float32"))  # cached: no trace
    step(np.ones(3, "float32"))
    assert seen.count("train_step") == 2


def test_compile_reference_picks_jit_per_backend():
    model = compile_reference(reference_rnn(input_dim=3, num_classes=2, units=4))
    assert model.jit_compile is (BACKEND == "jax")
    forced = compile_reference(reference_rnn(input_dim=3, num_classes=2, units=4),
                               jit_compile=False)
    assert forced.jit_compile is False


# --------------------------------------------------------------------------- training


def test_reference_rnn_ignores_padding_on_this_backend():
    x = sign_task()[0][:2]
    model = small_rnn()
    padded = sp.pad_sequences(x, dtype="float32", padding="post")
    together = keras.ops.convert_to_numpy(model(padded))
    alone = np.concatenate([keras.ops.convert_to_numpy(model(s[None])) for s in x])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_bucketed_dataset_fit_trains_on_exactly_its_batches_and_learns():
    x, y, lengths = sign_task()
    sampler = sp.BucketSampler(lengths, boundaries=[8], batch_size=16, seed=3)
    # Replayed (not reshuffled) so that the twin below trains on the very batches fit saw.
    ds = sp.bucketed_dataset(x, y, sampler=sampler, pad_to="bucket",
                             options=sp.Options(epochs=3, reshuffle_each_iteration=False))
    model = small_rnn()
    twin = twin_of(model)
    history = model.fit(ds, epochs=3, steps_per_epoch=len(sampler), verbose=0)
    shapes = set()
    for xb, yb in ds:
        shapes.add(tuple(xb.shape))
        twin.train_on_batch(xb.numpy(), yb.numpy())
    assert shapes == {(16, 6, 3), (16, 13, 3)}  # each bucket padded to its longest
    assert_same_weights(model, twin)
    assert history.history["loss"][-1] < 0.9 * history.history["loss"][0]


def test_streaming_bucket_by_length_fit_trains_on_exactly_its_batches():
    x, y, _ = sign_task()
    stream = tf.data.Dataset.from_tensor_slices((tf.ragged.constant(x, ragged_rank=1), y))
    ds = stream.apply(sp.bucket_by_length([8], batch_size=16, buffer_size=None))
    # A stream's cardinality is unknown; on TensorFlow, Keras 3.15 then advances
    # `optimizer.iterations` once more per epoch than it trains (Adam's bias correction shifts).
    ds = ds.apply(tf.data.experimental.assert_cardinality(2))
    model = small_rnn()
    twin = twin_of(model)
    history = model.fit(ds, epochs=2, verbose=0)
    for _ in range(2):
        for xb, yb in ds:
            assert xb.shape[0] <= 16
            twin.train_on_batch(xb.numpy(), yb.numpy())
    assert_same_weights(model, twin)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_fit_per_length_exact_lengths_equals_train_on_batch_over_its_plan():
    # Two lengths, full batches: two batch shapes, so two compiles on JAX.
    rng = np.random.default_rng(1)
    lengths = [3, 5, 3, 5, 5, 3, 3, 5]
    x = [rng.normal(size=(n, 2)).astype(np.float32) for n in lengths]
    y = rng.normal(size=(8, 1)).astype(np.float32)

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((None, 2)), keras.layers.GRU(3),
                                  keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        return model

    model, twin = build(), build()
    history = sp.fit_per_length(model, x, y, epochs=2, batch_size=4, seed=5, verbose=0)
    for epoch in range(2):
        for idx in sp.plan_per_length(lengths, batch_size=4, seed=5, epoch=epoch):
            twin.train_on_batch(np.stack([x[i] for i in idx]), y[idx])
    assert_same_weights(model, twin)
    assert history.group_stats["sequences"].sum() == 2 * len(lengths)


# --------------------------------------------------------------------------- the demo's --backend


def test_demo_backend_flag_sets_keras_backend_before_keras_is_imported():
    import subprocess
    import sys

    code = ("from seqprep.tools.cli import _use_backend; assert _use_backend('torch'); "
            "import keras; print(keras.backend.backend())")
    env = {k: v for k, v in __import__("os").environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "torch"


def test_demo_backend_flag_reexecs_when_keras_runs_on_another(monkeypatch):
    import subprocess

    from seqprep.tools import cli
    other = next(b for b in ("jax", "tensorflow") if b != BACKEND)
    calls = []

    def fake_run(cmd, env):
        calls.append((cmd, env["KERAS_BACKEND"]))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    argv = ["demo", "--backend", other, "--quick", "--out", "nowhere"]
    assert cli.main(argv) == 0
    assert calls == [([cli.sys.executable, "-m", "seqprep", *argv], other)]
    assert cli._use_backend(BACKEND)  # the running backend needs no re-exec
    assert cli.main(["demo", "--backend", "mxnet"]) == 2
