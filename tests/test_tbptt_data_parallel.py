"""TBPTT under data parallelism (issue 21, item 1): every window's rows a multiple of the devices.

The plan keeps its ``batch_size`` lanes; each window is topped up with fill lanes (zero inputs,
no target, weight 0; never a duplicated example) to the rows the model was built for, a
multiple of the device count ``k``. Training then equals the one-device run of the same plan:

* on this process's backend with ``data_parallel=2`` (filling without a distribution);
* under ``keras.distribution.DataParallel`` on two JAX CPU devices (a subprocess: the device
  count is fixed when JAX starts), where the windows are also split over the devices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import seqprep as sp

LENGTHS = (5, 9, 2, 7, 3, 11, 4)


def _model(rows, seed=7):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(batch_shape=(rows, None, 2))
    h = keras.layers.GRU(3, stateful=True, return_sequences=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def _data():
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(n, 2)).astype("float32") for n in LENGTHS]
    return x, rng.normal(size=(len(LENGTHS), 1)).astype("float32"), [
        rng.normal(size=(n, 1)).astype("float32") for n in LENGTHS]


@pytest.mark.backend
@pytest.mark.parametrize("targets,dense", [("sequence", False), ("step", True)])
def test_fill_lanes_train_as_the_one_device_plan(targets, dense):
    x, y_seq, y_step = _data()
    y = y_seq if targets == "sequence" else y_step
    kw = {"window": 4, "batch_size": 3, "dense": dense}
    one, filled = _model(3), _model(4)
    filled.set_weights(one.get_weights())
    h1 = sp.fit_tbptt(one, x, y, epochs=2, verbose=0, validation_data=(x[:4], y[:4]), **kw)
    h2 = sp.fit_tbptt(filled, x, y, epochs=2, verbose=0, validation_data=(x[:4], y[:4]),
                      options=sp.Options(data_parallel=2), **kw)
    for a, b in zip(one.get_weights(), filled.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(h1.history[key], h2.history[key], rtol=1e-5)
    two = sp.Options(data_parallel=2)
    np.testing.assert_allclose(sp.predict_tbptt(filled, x, options=two, **kw),
                               sp.predict_tbptt(one, x, **kw), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sp.evaluate_tbptt(filled, x, y, options=two, **kw),
                               sp.evaluate_tbptt(one, x, y, **kw), rtol=1e-5)


def test_fill_lanes_hold_no_example_and_weigh_nothing():
    from seqprep.running._tbptt_data import _prepare_data, _windows_of

    x, y, _ = _data()
    data, targets, many_to_one = _prepare_data(x, y, return_sequences=None, need_y=True)
    plan = sp.plan_tbptt(data.lengths, window=4, batch_size=3)
    filled = _windows_of(plan, data, targets, many_to_one, rows=4)
    plain = _windows_of(plan, data, targets, many_to_one)
    for w in range(plan.n_windows):
        got, want = filled.inputs(w), plain.inputs(w)
        for a, b in zip(got, want, strict=True):  # the plan's lanes as they were
            np.testing.assert_array_equal(a[:3], b)
        xf, mf, rf, idf = got
        assert not xf[3].any() and mf[3].all() and not rf[3] and idf[3]  # an idle lane
        (yf, wf), (yp, wp) = filled.targets_of(w), plain.targets_of(w)
        np.testing.assert_array_equal(yf[:3], yp)
        assert wf[3] == 0 and yf[3] == 0 and filled.n_targets(w) == plain.n_targets(w)
        np.testing.assert_array_equal(wf[:3], wp)


def test_a_model_not_built_for_the_filled_rows_is_refused_with_the_fix():
    x, y, _ = _data()
    with pytest.raises(ValueError, match=r"(?s)`model` must be built for 4 rows: `fit_tbptt` "
                       r"runs batch_size=3 lanes on 2 devices.*\(1 fill lanes of weight 0\)\. "
                       r"Received a model built for 3 rows\n- Build the model for batch size "
                       r"4 .*or pass a `batch_size` that is a multiple of 2; to run every window "
                       r"whole on each device, pass `options=seqprep\.Options\(data_parallel="
                       r"None\)`\.$"):
        sp.fit_tbptt(_model(3), x, y, window=4, batch_size=3, verbose=0,
                     options=sp.Options(data_parallel=2))
    # a batch_size that divides by the devices needs no fill lane
    sp.predict_tbptt(_model(4), x, window=4, batch_size=4, options=sp.Options(data_parallel=2))


WORKER = textwrap.dedent("""
    import json, sys
    import jax, keras, numpy as np
    import seqprep as sp

    def build(rows):
        keras.utils.set_random_seed(7)
        inputs = keras.Input(batch_shape=(rows, None, 2))
        h = keras.layers.GRU(3, stateful=True, return_sequences=True)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1)(h))
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        return model

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 12, 9)
    x = [rng.normal(size=(n, 2)).astype("float32") for n in lengths]
    y_seq = rng.normal(size=(9, 1)).astype("float32")
    y_step = [rng.normal(size=(n, 1)).astype("float32") for n in lengths]
    cases = {}
    for name, y, dense in (("sequence", y_seq, False), ("step, dense", y_step, True)):
        kw = dict(window=4, batch_size=3, dense=dense)
        keras.distribution.set_distribution(None)
        one = build(3)
        h1 = sp.fit_tbptt(one, x, y, epochs=2, verbose=0, **kw)
        p1 = sp.predict_tbptt(one, x, **kw)
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices()))
        two = build(4)  # 3 lanes + 1 fill lane: 2 rows per device
        h2 = sp.fit_tbptt(two, x, y, epochs=2, verbose=0, **kw)
        p2 = sp.predict_tbptt(two, x, **kw)
        keras.distribution.set_distribution(None)
        cases[name] = {
            "weights": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                           for a, b in zip(one.get_weights(), two.get_weights())),
            "outputs": float(np.max(np.abs(p1 - p2))),
            "loss": max(abs(a - b) for a, b in zip(h1.history["loss"], h2.history["loss"])),
        }
    json.dump({"devices": len(jax.devices()), "cases": cases}, open(sys.argv[1], "w"))
""")


@pytest.mark.slow
def test_data_parallel_on_two_jax_devices_equals_one_device(tmp_path):
    pytest.importorskip("jax")
    out = tmp_path / "result.json"
    # the worker imports this checkout's seqprep (not an installed copy elsewhere)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": "jax", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": root,
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", WORKER, str(out)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["devices"] == 2
    assert set(result["cases"]) == {"sequence", "step, dense"}
    for name, case in result["cases"].items():
        assert max(case.values()) < 1e-5, (name, case)
