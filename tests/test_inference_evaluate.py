"""sp.evaluate against Keras's one-batch model.evaluate on padded-to-max arrays: several
outputs (per-sequence and per-step heads, losses and metrics per output, loss weights),
every loss reduction, per-step sample weights; and the refusals where Keras's one-batch value
cannot be reproduced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqprep as sp
from seqprep.running._inference_scoring import _LossSum, padded_rows

HERE = Path(__file__).resolve().parent
ATOL = 1e-5
DIM = 2
LENGTHS = [3, 1, 9, 4, 2, 6, 12, 5, 2, 7]  # odd sizes, several batches under max_tokens=24


def _frames(lengths, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, DIM)).astype("float32") + 0.1 for n in lengths]


def _padded(x):
    dtype = "float32" if np.asarray(x[0]).dtype.kind == "f" else "int64"
    return sp.pad_sequences(x, padding="post", dtype=dtype)


def _two_heads(seed=0, dict_outputs=False):
    """A masked GRU tagger head (per step, 3 classes) and a classifier head (per sequence,
    2 values): the two kinds of output in one model."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, DIM), name="frames")
    masked = keras.layers.Masking()(inputs)
    steps = keras.layers.GRU(4, return_sequences=True)(masked)
    tag = keras.layers.Dense(3, name="tag")(steps)
    cls = keras.layers.Dense(2, name="cls")(keras.layers.GRU(4)(masked))
    return keras.Model(inputs, {"tag": tag, "cls": cls} if dict_outputs else [tag, cls])


def _targets(lengths, seed):
    rng = np.random.default_rng(seed)
    tags = [rng.integers(0, 3, n) for n in lengths]
    values = rng.normal(size=(len(lengths), 2)).astype("float32")
    return tags, values


def _assert_equal_logs(logs, ref):
    assert set(logs) == set(ref), (sorted(logs), sorted(ref))
    for k in ref:
        assert abs(logs[k] - ref[k]) < ATOL * max(1.0, abs(ref[k])), (k, logs[k], ref[k])


def _check(model, x, y, y_padded, sample_weight=None, padded_weight=None, **kwargs):
    logs = sp.evaluate(model, x, y, sample_weight=sample_weight, max_tokens=24, verbose=0,
                       **kwargs)
    ref = model.evaluate(_padded(x), y_padded, sample_weight=padded_weight,
                         batch_size=len(x), verbose=0, return_dict=True)
    _assert_equal_logs(logs, ref)
    return logs


# --------------------------------------------------------------------------- several outputs


@pytest.mark.backend
def test_two_heads_list_losses_loss_weights_and_metrics_per_output():
    x = _frames(LENGTHS, 1)
    tags, values = _targets(LENGTHS, 2)
    model = _two_heads(seed=3)
    model.compile(loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True), "mse"],
                  loss_weights=[0.3, 2.0],
                  metrics=[["sparse_categorical_accuracy"], ["mae", "mse"]])
    logs = _check(model, x, [tags, values], [_padded(tags), values])
    assert {"loss", "tag_loss", "cls_loss", "tag_sparse_categorical_accuracy", "cls_mae",
            "cls_mse"} <= set(logs)
    assert abs(logs["loss"] - (0.3 * logs["tag_loss"] + 2.0 * logs["cls_loss"])) < ATOL


@pytest.mark.backend
def test_two_heads_dict_outputs_dict_losses_and_weights_per_output():
    """Dict outputs, dict losses, metrics and targets; one weight per sequence for the
    classifier and one per step for the tagger (Keras: padded 2-D weights)."""
    x = _frames(LENGTHS, 4)
    tags, values = _targets(LENGTHS, 5)
    rng = np.random.default_rng(6)
    step_w = [rng.uniform(0.0, 2.0, n).astype("float32") for n in LENGTHS]
    seq_w = rng.uniform(0.5, 1.5, len(LENGTHS)).astype("float32")
    model = _two_heads(seed=7, dict_outputs=True)
    model.compile(loss={"tag": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        "cls": "mse"},
                  loss_weights={"tag": 1.5, "cls": 0.5},
                  metrics={"tag": ["sparse_categorical_accuracy"], "cls": ["mae"]},
                  weighted_metrics={"tag": ["sparse_categorical_accuracy"], "cls": ["mae"]})
    _check(model, x, {"tag": tags, "cls": values}, {"tag": _padded(tags), "cls": values},
           sample_weight={"tag": step_w, "cls": seq_w},
           padded_weight={"tag": _padded(step_w), "cls": seq_w})


def test_a_dict_loss_over_a_list_of_outputs_and_one_loss_for_both():
    """A dict of losses keyed by output name over a model returning a list; and one loss
    given for every output (Keras applies it to each), with one weight per sequence that
    weighs every output."""
    x = _frames(LENGTHS, 8)
    rng = np.random.default_rng(9)
    step_targets = [rng.normal(size=(n, 3)).astype("float32") for n in LENGTHS]
    values = rng.normal(size=(len(LENGTHS), 2)).astype("float32")
    model = _two_heads(seed=10)
    model.compile(loss={"cls": "mae", "tag": "mse"}, metrics={"tag": "mae", "cls": "mse"})
    _check(model, x, [step_targets, values], [_padded(step_targets), values])
    model.compile(loss="mse", weighted_metrics={"tag": "mae", "cls": "mae"})
    w = rng.uniform(0.0, 2.0, len(LENGTHS)).astype("float32")  # one per sequence, every output
    # Keras: a list, each output its weights (per step for the tagger: the sequence's weight)
    _check(model, x, {"cls": values, "tag": step_targets}, [_padded(step_targets), values],
           sample_weight=w, padded_weight=[np.repeat(w[:, None], max(LENGTHS), axis=1), w])


# --------------------------------------------------------------------------- reductions


def _classifier(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, DIM))
    h = keras.layers.GRU(4)(keras.layers.Masking()(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(h))


def _tagger(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, DIM))
    h = keras.layers.GRU(4, return_sequences=True)(keras.layers.Masking()(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(h))


@pytest.mark.parametrize("reduction", ["sum", "mean_with_sample_weight", None, "mean"])
def test_every_reduction_per_sequence_equals_one_batch_keras(reduction):
    x = _frames(LENGTHS, 11)
    rng = np.random.default_rng(12)
    y = rng.integers(0, 3, len(x))
    w = rng.uniform(0.0, 2.0, len(x)).astype("float32")
    model = _classifier(13)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                  reduction=reduction),
                  metrics=["sparse_categorical_accuracy"])
    _check(model, x, y, y, sample_weight=w, padded_weight=w)
    if reduction == "mean_with_sample_weight":  # without weights: divided by the targets
        _check(model, x, y, y)


@pytest.mark.backend
@pytest.mark.parametrize("reduction", ["sum", "mean_with_sample_weight"])
def test_reductions_per_step_with_per_step_weights(reduction):
    x = _frames(LENGTHS, 14)
    x[2][3] = 0.0  # a step the model masks: no target, as in Keras
    rng = np.random.default_rng(15)
    y = [rng.integers(0, 3, n) for n in LENGTHS]
    w = [rng.uniform(0.0, 2.0, n).astype("float32") for n in LENGTHS]
    model = _tagger(16)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                  reduction=reduction),
                  weighted_metrics=["sparse_categorical_accuracy"])
    _check(model, x, y, _padded(y), sample_weight=w, padded_weight=_padded(w))


def test_per_step_weights_default_reduction_and_several_outputs_reductions():
    x = _frames(LENGTHS, 17)
    tags, values = _targets(LENGTHS, 18)
    rng = np.random.default_rng(19)
    w = [rng.uniform(0.0, 2.0, n).astype("float32") for n in LENGTHS]
    model = _tagger(20)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["sparse_categorical_accuracy"],
                  weighted_metrics=["sparse_categorical_accuracy"])
    _check(model, x, tags, _padded(tags), sample_weight=w, padded_weight=_padded(w))
    heads = _two_heads(seed=21)
    heads.compile(loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                   reduction="sum"),
                        keras.losses.MeanSquaredError(reduction="mean_with_sample_weight")],
                  loss_weights=[0.1, 1.0])
    _check(heads, x, [tags, values], [_padded(tags), values])


@settings(max_examples=25, deadline=None)
@given(reduction=st.sampled_from(["sum_over_batch_size", "sum", "mean_with_sample_weight",
                                  None]),
       sizes=st.lists(st.integers(0, 9), min_size=1, max_size=5), weighted=st.booleans(),
       seed=st.integers(0, 999))
def test_a_loss_accumulated_over_any_batches_equals_its_one_batch_value(reduction, sizes,
                                                                        weighted, seed):
    """Whatever the batches (any sizes, empty ones, rows padded to a power of two), the
    accumulated loss equals Keras's loss on all rows at once."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    y = rng.normal(size=(n, 2)).astype("float32")
    p = rng.normal(size=(n, 2)).astype("float32")
    w = rng.uniform(0.0, 2.0, n).astype("float32") if weighted else None
    loss = keras.losses.MeanSquaredError(reduction=reduction)
    total = _LossSum("none" if reduction is None else reduction)
    start = 0
    for size in sizes:
        if size:
            yb, pb = padded_rows(y[start:start + size], p[start:start + size], size)
            weight = total.weights(None if w is None else w[start:start + size], size,
                                   yb.shape[0])
            total.add(loss(yb, pb, weight), weight, size)
        start += size
    if n == 0:
        assert total.result() == 0.0
        return
    one_batch = np.asarray(keras.ops.convert_to_numpy(loss(y, p, w)), np.float64).mean()
    assert abs(total.result() - one_batch) < 1e-5 * max(1.0, abs(one_batch))


# --------------------------------------------------------------------------- refusals


@pytest.mark.backend
def test_weight_regularization_is_added_activity_regularization_refused():
    keras.utils.set_random_seed(31)
    inputs = keras.Input((None, DIM))
    h = keras.layers.GRU(3, kernel_regularizer="l2")(keras.layers.Masking()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, kernel_regularizer="l1")(h))
    model.compile(loss="mse", metrics=["mae"])
    x = _frames(LENGTHS, 32)
    y = np.random.default_rng(33).normal(size=(len(x), 1)).astype("float32")
    _check(model, x, y, y)
    active = keras.Model(inputs, keras.layers.Dense(1, activity_regularizer="l2",
                                                    name="active")(h))
    active.compile(loss="mse")
    with pytest.raises(ValueError, match=r"activity regularizer \['active'\].*depends on the "
                                         r"batch.*\n- Evaluate a copy"):
        sp.evaluate(active, x, y, verbose=0)


def test_what_cannot_be_reproduced_is_refused_clearly():
    x = _frames([3, 1, 4], 22)
    tagger = _tagger(23)
    tagger.compile(loss=keras.losses.SparseCategoricalCrossentropy(reduction=None))
    y = [np.zeros(n, "int64") for n in (3, 1, 4)]
    with pytest.raises(ValueError, match=r"reduction=None: Keras's evaluate then averages.*"
                                         r"padding included.*\n- Compile with"):
        sp.evaluate(tagger, x, y, verbose=0)
    heads = _two_heads(seed=24)
    heads.compile(loss=["sparse_categorical_crossentropy", "mse"])
    tags, values = _targets([3, 1, 4], 25)
    with pytest.raises(ValueError, match=r"`y` must hold one entry per output of the model "
                                         r"\(2: \['tag', 'cls'\]\). Received a list of 3"):
        sp.evaluate(heads, x, [tags, values, values], verbose=0)
    with pytest.raises(ValueError, match=r"`y` must hold the targets of each of the model's 2 "
                                         r"outputs"):
        sp.evaluate(heads, x, values, verbose=0)
    with pytest.raises(ValueError, match=r"`y` gives no targets for the model's output 'cls'"):
        sp.evaluate(heads, x, {"tag": tags}, verbose=0)
    with pytest.raises(ValueError, match=r"no output named 'clz'"):
        sp.evaluate(heads, x, {"tag": tags, "clz": values}, verbose=0)
    with pytest.raises(ValueError, match=r"`sample_weight\['cls'\]` holds one weight per step, "
                                         r"but its output's targets `y\['cls'\]` are one per "
                                         r"sequence"):
        sp.evaluate(heads, x, [tags, values],
                    sample_weight={"cls": [np.ones(n) for n in (3, 1, 4)]}, verbose=0)
    with pytest.raises(ValueError, match=r"`sample_weight\['tag'\]` must hold one 1-D array per "
                                         r"sequence.*sample_weight\['tag'\]\[2\] has 3 weights "
                                         r"for 4 steps"):
        sp.evaluate(heads, x, [tags, values],
                    sample_weight={"tag": [np.ones(n) for n in (3, 1, 3)]}, verbose=0)
    with pytest.raises(ValueError, match=r"`sample_weight\['tag'\]` must hold finite numbers. "
                                         r"Received: sample_weight\['tag'\]\[1\]\[0\]=.*nan"):
        sp.evaluate(heads, x, [tags, values],
                    sample_weight={"tag": [np.ones(3), [np.nan], np.ones(4)]}, verbose=0)


# --------------------------------------------------------------------------- data parallelism


@pytest.mark.slow
def test_predict_and_evaluate_on_two_jax_devices_equal_one_device(tmp_path):
    """Under keras.distribution.DataParallel on two CPU devices, with odd batch sizes under a
    token budget, every batch reaches the model with an even row count (fill rows), and
    sp.predict / sp.evaluate equal the one-device run: fill rows are in no output and no
    metric."""
    pytest.importorskip("jax")
    out = tmp_path / "result.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(HERE.parent),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(HERE / "_jax_dp_inference_worker.py"), str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["devices"] == 2
    assert any(r % 2 for r in result["one_device_rows"])  # the plan has odd batches to fill
    assert all(r % 2 == 0 for r in result["rows"]), result["rows"]
    assert len(result["rows"]) == len(result["one_device_rows"])
    assert result["shapes_equal"] and result["keys_equal"]
    assert result["predict_diff"] < 1e-5 and result["evaluate_diff"] < 1e-5, result


def test_processes_that_plan_different_batches_are_refused_for_inference(monkeypatch):
    """Under a distribution over several processes every process must plan the same batches
    (it runs its rows of each); the check's gather is faked here (the other process holds one
    sequence less). A LengthEnsemble is refused there. The two-process run is in
    tests/test_data_parallel.py."""
    from seqprep.running import _data_parallel, _inference_batches

    monkeypatch.setattr(_inference_batches, "resolve_data_parallel",
                        lambda value, caller: _data_parallel.Layout(4, 2, 0))

    def other_process_differs(payload, processes):
        other = payload.view(np.int64).copy()
        other[0] -= 1
        return [payload, other.view(np.uint8)]

    monkeypatch.setattr(_inference_batches, "_allgather", other_process_differs)
    x = _frames([3, 1], 26)
    with pytest.raises(ValueError, match=r"(?s)`predict` under a Keras distribution over 2 "
                                         r"processes.*process 1: 1 sequences.*same whole `x`"):
        sp.predict(_classifier(27), x, verbose=0)
    ensemble = sp.LengthEnsemble({3: _classifier(27)})  # runs whole batches: one process only
    for run in (sp.predict, lambda *a, **k: sp.evaluate(*a, np.zeros(2), **k)):
        with pytest.raises(ValueError, match=r"of a seqprep.LengthEnsemble runs in one process, "
                                             r"but the Keras distribution spans 2 processes"):
            run(ensemble, x, verbose=0)


def test_explicit_data_parallel_fills_batches_and_drops_the_fill_rows():
    """options=sp.Options(data_parallel=3) without a distribution: every batch's rows a
    multiple of 3 (the model sees fill rows), outputs and metrics as without it."""
    x = _frames(LENGTHS, 28)
    rng = np.random.default_rng(29)
    y = [rng.integers(0, 3, n) for n in LENGTHS]
    model = _tagger(30)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["sparse_categorical_accuracy"])

    class Rows(keras.callbacks.Callback):
        rows: list = []

        def on_predict_batch_end(self, batch, logs=None):
            self.rows.append(int(logs["outputs"].shape[0]))

    filled = sp.predict(model, x, max_tokens=24, verbose=0, callbacks=[Rows()],
                        options=sp.Options(data_parallel=3))
    assert Rows.rows and all(r % 3 == 0 for r in Rows.rows)
    plain = sp.predict(model, x, max_tokens=24, verbose=0)
    assert [a.shape for a in filled] == [a.shape for a in plain]
    assert all(np.allclose(a, b, atol=ATOL) for a, b in zip(filled, plain, strict=True))
    logs = sp.evaluate(model, x, y, max_tokens=24, verbose=0,
                       options=sp.Options(data_parallel=3))
    _assert_equal_logs(logs, sp.evaluate(model, x, y, max_tokens=24, verbose=0))



def test_per_step_targets_are_cast_by_the_input_stage_rule():
    """evaluate builds per-step targets through the input stage's table builder: a float64
    value float32 cannot hold is refused with the stage's message (the argument, the
    position, and the way to keep float64), before the model runs."""
    x = _frames([3, 1, 2], 26)
    tagger = _tagger(27)
    tagger.compile(loss="mse")
    y = [np.array([0.5, 1.0, 2.0]), np.array([3.0]), np.array([1.0, 1e39])]
    with pytest.raises(ValueError, match=r"(?s)`y` does not fit float32, the float type of the "
                                         r"batches.*set_floatx\('float64'\).*1e\+39 at "
                                         r"y\[2\]\[1\]"):
        sp.evaluate(tagger, x, y, targets="step", verbose=0)
