"""Every private Keras / TensorFlow access goes through seqprep/running/_keras_private.py, and each
one still does what seqprep relies on (so a Keras or TensorFlow change fails here, by name).

The older accesses (the Keras mask, step trace counts, the seed generators, the calling
``CallbackList``, Keras callbacks' state) are checked in tests/test_backends.py and
tests/test_resume_checks.py.
"""

from __future__ import annotations

import ast
import pathlib
import re
import warnings

import keras
import numpy as np
import pytest

import seqprep as sp
from seqprep.running import _keras_private as kp

ROOT = pathlib.Path(sp.__file__).parent
PRIVATE_MODULE = ROOT / "running" / "_keras_private.py"


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


# --------------------------------------------------------------------------- each access


@pytest.mark.backend
def test_compiled_identity_changes_with_every_compile_even_with_the_same_arguments():
    model = _model()
    first = kp.compiled_identity(model)
    assert first == kp.compiled_identity(model)  # reading does not change it
    assert model._compile_loss is not None
    model.compile(optimizer=model.optimizer, loss="mse")  # same optimizer, same loss string
    second = kp.compiled_identity(model)
    assert second[0] != first[0]
    model.compile(optimizer=model.optimizer, loss="mse", metrics=["mae"])
    assert kp.compiled_identity(model)[1] != second[1]


def test_compiled_losses_gives_each_outputs_loss_path_weight_and_name():
    inputs = keras.Input((3,))
    a = keras.layers.Dense(1, name="a")(inputs)
    b = keras.layers.Dense(2, name="b")(inputs)
    model = keras.Model(inputs, [a, b])
    model.compile(loss={"b": "mae", "a": keras.losses.MeanSquaredError(reduction="sum")},
                  loss_weights={"a": 0.5, "b": 2.0})
    y_pred = [np.zeros((4, 1), "float32"), np.zeros((4, 2), "float32")]
    entries = kp.compiled_losses(model, y_pred, y_pred)  # builds Keras's compiled loss
    by_name = {name: (path, loss, weight) for path, loss, weight, name in entries}
    assert set(by_name) == {"a", "b"}
    # a path into the outputs as Keras structures them: by position or by output name
    assert by_name["a"][0] in ((0,), ("a",)) and by_name["b"][0] in ((1,), ("b",))
    assert by_name["a"][2] == 0.5
    assert by_name["a"][1].reduction == "sum" and by_name["b"][2] == 2.0
    assert isinstance(by_name["b"][1], keras.losses.Loss)  # "mae" wrapped as Keras calls it
    assert kp.compiled_losses(model, y_pred, y_pred) == entries  # built once


@pytest.mark.backend
def test_a_recompiled_model_gets_new_tbptt_steps_that_use_the_new_loss():
    inputs = keras.Input(batch_shape=(2, 3, 1))
    h = keras.layers.SimpleRNN(2, stateful=True, return_sequences=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    x, y = [np.ones((n, 1), "float32") for n in (4, 2, 3)], np.array([3.0, -3.0, 3.0])
    model.compile(optimizer="sgd", loss="mse")
    mse = sp.evaluate_tbptt(model, x, y, window=3, batch_size=2)
    model.compile(optimizer=model.optimizer, loss="mae")
    mae = sp.evaluate_tbptt(model, x, y, window=3, batch_size=2)
    pred = sp.predict_tbptt(model, x, window=3, batch_size=2)[:, 0]
    np.testing.assert_allclose([mse, mae], [np.mean((pred - y) ** 2), np.mean(abs(pred - y))],
                               rtol=1e-5)


@pytest.mark.backend  # each backend's trainer reads it
def test_set_initial_epoch_in_on_train_begin_makes_fit_start_there():
    model = _model()
    assert kp.initial_epoch(model) == 0
    began = []

    class Resume(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            kp.set_initial_epoch(self.model, 2)

        def on_epoch_begin(self, epoch, logs=None):
            began.append(epoch)

    history = model.fit(np.zeros((4, 3)), np.zeros(4), epochs=4, verbose=0, callbacks=[Resume()])
    assert began == [2, 3] and len(history.history["loss"]) == 2
    assert kp.initial_epoch(model) == 2


def test_stop_server_stops_tf_data_service_servers():
    import tensorflow as tf

    svc = tf.data.experimental.service
    dispatcher = svc.DispatchServer(svc.DispatcherConfig(port=0))
    worker = svc.WorkerServer(svc.WorkerConfig(
        dispatcher_address=dispatcher.target.split("://")[1], port=0))
    assert callable(getattr(svc.DispatchServer, "stop", None) or svc.DispatchServer._stop)
    kp.stop_server(worker)
    kp.stop_server(dispatcher)


def test_a_missing_private_attribute_is_an_error_naming_this_module_never_a_default():
    with pytest.raises(RuntimeError, match=r"`_compile_loss`.*_keras_private\.py needs updating"):
        kp.compiled_identity(object())
    with pytest.raises(RuntimeError, match=r"`_initial_epoch`"):
        kp.set_initial_epoch(object(), 1)
    with pytest.raises(RuntimeError, match=r"`_stop`"):
        kp.stop_server(object())


# --------------------------------------------------------------------------- nowhere else

# Private Keras / TensorFlow spellings that may appear in seqprep only in _keras_private.py.
PRIVATE = ("sys._getframe", "_compile_loss", "_compile_metrics", "_initial_epoch", "._stop(",
           "._cardinality",
           "keras.src", "tensorflow.python")
# warn_deprecated (seqprep/_core/checks.py) finds its caller with sys._getframe; it goes with
# the deprecated spellings it announces (issue #19, item 8).
ALLOWED = {("sys._getframe", "_core/checks.py")}


def _sources():
    for path in sorted(ROOT.rglob("*.py")):
        yield path, path.relative_to(ROOT).as_posix(), path.read_text()


def _uses(spelling, text):
    """Whether ``text`` holds ``spelling`` (a name starting with ``_`` not as the end of a
    longer name)."""
    before = r"(?<![A-Za-z0-9_])" if spelling.startswith("_") else ""
    return re.search(before + re.escape(spelling), text) is not None


def test_private_keras_and_tf_access_lives_only_in_keras_private():
    found = [
        (spelling, name)
        for path, name, text in _sources() if path != PRIVATE_MODULE
        for spelling in PRIVATE
        if _uses(spelling, text) and (spelling, name) not in ALLOWED
    ]
    assert found == []
    # and the check sees each spelling where it is used (but not inside a longer name)
    assert _uses("._stop(", "w._stop()") and _uses("_initial_epoch", "m._initial_epoch = 1")
    assert not _uses("_initial_epoch", "kp.set_initial_epoch(m, 1)")


def _unscoped_filter_calls(tree):
    """Calls to warnings.filterwarnings / simplefilter outside a ``with
    warnings.catch_warnings()`` block (those change the filters of the whole process)."""

    def scoped(node):
        return isinstance(node, ast.With) and any(
            isinstance(item.context_expr, ast.Call)
            and ast.unparse(item.context_expr.func).endswith("catch_warnings")
            for item in node.items
        )

    found = []

    def walk(node, inside):
        if (isinstance(node, ast.Call) and not inside
                and ast.unparse(node.func).split(".")[-1] in ("filterwarnings", "simplefilter")):
            found.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            walk(child, inside or scoped(node))

    walk(tree, False)
    return found


def test_no_module_changes_the_process_warnings_filters():
    found = {name: lines for _, name, text in _sources()
             if (lines := _unscoped_filter_calls(ast.parse(text)))}
    assert found == {}
    # and the check sees one: a filter installed outside a catch_warnings block
    assert _unscoped_filter_calls(ast.parse("import warnings\nwarnings.simplefilter('ignore')"))
    assert not _unscoped_filter_calls(ast.parse(
        "import warnings\nwith warnings.catch_warnings():\n    warnings.simplefilter('ignore')"))


def test_building_a_dataset_leaves_the_warnings_filters_alone():
    with warnings.catch_warnings():
        before = list(warnings.filters)
        sampler = sp.BucketSampler([2, 1, 3], batch_size=2)
        sp.bucketed_dataset([[1, 2], [3], [4, 5, 6]], np.zeros(3), sampler=sampler)
        assert warnings.filters == before
