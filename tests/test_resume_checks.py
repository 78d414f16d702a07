"""seqprep.BackupAndRestore refuses what it cannot resume exactly, in one process (no kill):
a damaged or foreign checkpoint, changed data with the same lengths, fit_tbptt; it restores the
state of a callback that opts in with get_state/set_state; and the private Keras details it
relies on (seqprep/running/_keras_private.py) still hold.

A "crash" here is an exception raised from a callback in the middle of an epoch: ``fit``
stops there without ``on_train_end``, leaving the checkpoint, as a killed process would.
"""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

import seqprep as sp
from seqprep.layers import PackedRNN
from seqprep.running import _keras_private
from seqprep.running._callbacks import _meta_digest

META = "seqprep_training_metadata.json"


class Crash(RuntimeError):
    pass


class CrashAt(keras.callbacks.Callback):
    """Raise after batch ``batch`` (0-based) of Keras epoch ``epoch``."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise Crash


class CountBatches(keras.callbacks.Callback):
    """A user callback with state, opting in to BackupAndRestore with get/set_state."""

    def __init__(self):
        super().__init__()
        self.count, self.losses = 0, np.zeros(0)

    def on_train_begin(self, logs=None):
        self.count, self.losses = 0, np.zeros(0)

    def on_train_batch_end(self, batch, logs=None):
        self.count += 1
        self.losses = np.append(self.losses, logs["loss"])

    def get_state(self):
        return {"count": self.count, "losses": self.losses, "note": ("a", 1)}

    def set_state(self, state):
        assert state["note"] == ["a", 1]
        self.count, self.losses = state["count"], state["losses"]


def _data(seed=0, n=64):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 10, n)
    x = [rng.integers(1, 20, k) for k in lengths]
    return x, rng.random(n).astype("float32"), rng.random(n).astype("float32") + 0.5


def _model(head=1, dropout=True):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((None,), dtype="int32"), keras.layers.Embedding(20, 4),
              keras.layers.GlobalAveragePooling1D()]
    if dropout:
        layers.append(keras.layers.Dropout(0.3))
    model = keras.Sequential([*layers, keras.layers.Dense(head)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def _fit(backup_dir, *, x=None, y=None, w=None, epochs=2, callbacks=(), model=None, **kw):
    gc.collect()  # no dataset of an earlier test is alive (as after a restart)
    gx, gy, gw = _data()
    x = gx if x is None else x
    y = gy if y is None else y
    w = gw if w is None else w
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=8, seed=1)  # 8 batches
    ds = sp.bucketed_dataset(x, y, sampler=sampler, sample_weight=w)
    model = _model() if model is None else model
    backup = sp.BackupAndRestore(backup_dir, save_freq=2, **kw)
    try:
        return model.fit(ds, epochs=epochs, callbacks=[backup, *callbacks], verbose=0)
    finally:
        del ds
        gc.collect()


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """A checkpoint left by a crash after batch 5 of epoch 0: (epoch 0, step 4)."""
    path = tmp_path_factory.mktemp("crashed") / "backup"
    with pytest.raises(Crash):
        _fit(path, callbacks=[CrashAt(0, 4)])
    meta = json.loads((path / META).read_text())
    assert (meta["epoch"], meta["step"]) == (0, 4)
    return path


def _copy(crashed: Path, tmp_path: Path) -> Path:
    target = tmp_path / "backup"
    shutil.copytree(crashed, target)
    return target


def _edit(path: Path, fix_digest: bool = True, **changes):
    meta = json.loads((path / META).read_text())
    for key, value in changes.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    if fix_digest:
        meta["digest"] = _meta_digest(meta)
    (path / META).write_text(json.dumps(meta))


def _file(path: Path, kind: str) -> Path:
    return path / json.loads((path / META).read_text())[kind]


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "truncated metadata": (lambda p: _truncate(p / META), r"is not valid JSON"),
    "edited metadata": (lambda p: _edit(p, fix_digest=False, step=2),
                        r"was edited: its content does not match the digest"),
    "field removed": (lambda p: _edit(p, weights=None), r"lacks the field 'weights'"),
    "missing weights": (lambda p: _file(p, "weights").unlink(),
                        r"the weights file '.*' it points at is missing"),
    "truncated weights": (lambda p: _truncate(_file(p, "weights")),
                          r"the weights file '.*' is damaged"),
    "missing state": (lambda p: _file(p, "state").unlink(),
                      r"the state file '.*' it points at is missing"),
    "truncated state": (lambda p: _truncate(_file(p, "state")), r"the state file '.*' is damaged"),
    "step 99": (lambda p: _edit(p, step=99), r"its step 99 is impossible: an epoch .* \d+ batches"),
    "step -2": (lambda p: _edit(p, step=-2), r"impossible position: epoch 0, step -2"),
    "epoch -1": (lambda p: _edit(p, epoch=-1), r"impossible position: epoch -1"),
    "epoch 99": (lambda p: _edit(p, epoch=99), r"its epoch 99 lies past the 2 epochs"),
}


class CountTrained(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.batches += 1


def _refused(path: Path, match: str, *, batches: int = 0, callbacks=(), **kw) -> str:
    before = (path / META).read_bytes() if (path / META).exists() else None
    counter = CountTrained()
    with pytest.raises(ValueError, match=match) as err:
        _fit(path, callbacks=[counter, *callbacks], **kw)
    message = str(err.value)
    assert f"`backup_dir`={str(path)!r}" in message
    assert "- Delete `backup_dir` to start this run afresh" in message
    # Refused before any batch is trained, and the checkpoint is left as it was.
    assert counter.batches <= batches
    if before is not None:
        assert (path / META).read_bytes() == before
    return message


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_checkpoint_is_refused_naming_backup_dir(crashed, tmp_path, case):
    damage, match = DAMAGE[case]
    path = _copy(crashed, tmp_path)
    damage(path)
    _refused(path, match)


def test_another_models_checkpoint_is_refused(crashed, tmp_path):
    path = _copy(crashed, tmp_path)
    _refused(path, r"it was written for another model", model=_model(dropout=False))


def test_damaged_latest_falls_back_to_the_previous_with_double_checkpoint(tmp_path):
    path = tmp_path / "backup"
    with pytest.raises(Crash):
        _fit(path, callbacks=[CrashAt(0, 6)], double_checkpoint=True)
    previous = json.loads((path / (META + ".bkp")).read_text())
    assert (previous["epoch"], previous["step"]) == (0, 4)
    _truncate(_file(path, "weights"))
    with pytest.warns(UserWarning, match=r"is damaged .*resuming from the previous one"):
        history = _fit(path, double_checkpoint=True)
    assert history.epoch == [0, 1]


@pytest.mark.parametrize("part", ["x", "y", "sample_weight"])
def test_changed_data_with_the_same_lengths_is_refused(crashed, tmp_path, part):
    path = _copy(crashed, tmp_path)
    x, y, w = _data()
    if part == "x":
        x = list(x)
        x[5] = x[5].copy()
        x[5][0] = x[5][0] % 19 + 1  # another token, same length
    elif part == "y":
        y = y.copy()
        y[3] += 0.25
    else:
        w = w.copy()
        w[-1] *= 2
    # In a new process this is refused before the first batch; here the crashed run's
    # dataset (with the checkpoint's data) may still be alive, and the first batch tells.
    message = _refused(path, r"it was written while training on other data", batches=1,
                       x=x, y=y, w=w)
    names = {"x": "the feature values (`x`)", "y": "the labels or targets (`y`)",
             "sample_weight": "the sample weights (`sample_weight`)"}
    assert names[part] in message
    assert [n for n in names.values() if n in message] == [names[part]]


def test_changed_data_is_refused_with_the_old_dataset_still_alive(crashed, tmp_path):
    # In one process the dataset of the crashed run may still exist: the pass that trains
    # shows, at the first batch, that it is not the checkpoint's data.
    path = _copy(crashed, tmp_path)
    x, y, w = _data()
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=8, seed=1)
    alive = sp.bucketed_dataset(x, y, sampler=sampler, sample_weight=w)  # noqa: F841
    y = y + 1
    counter = CountTrained()
    with pytest.raises(ValueError, match=r"`backup_dir`=.*the labels or targets \(`y`\) differ"):
        _fit(path, y=y, callbacks=[counter])
    assert counter.batches == 1  # one batch trained in memory; nothing saved
    meta = json.loads((path / META).read_text())
    assert (meta["epoch"], meta["step"]) == (0, 4)


def _packed_fit(path, values, epochs=1):
    lengths = sp.sequence_lengths(values)
    sampler = sp.PackSampler(lengths, batch_size=4, seed=0)
    ds = sp.packed_dataset(values, np.ones((len(values), 1), "float32"), sampler=sampler)
    inputs = {
        "values": keras.Input((sampler.row_length, 1), name="values"),
        "segment_ids": keras.Input((sampler.row_length,), dtype="int32", name="segment_ids"),
        "segment_lengths": keras.Input((sampler.max_segments_,), dtype="int32",
                                       name="segment_lengths"),
    }
    h = PackedRNN(keras.layers.SimpleRNN(2))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    model.compile(optimizer="sgd", loss="mse")
    backup = sp.BackupAndRestore(path, delete_checkpoint=False)
    model.fit(ds, epochs=epochs, callbacks=[backup], verbose=0)


def _per_length_fit(path, y, epochs=1):
    x, _, _ = _data()
    model = _model()
    backup = sp.BackupAndRestore(path, delete_checkpoint=False)
    sp.fit_per_length(model, x, y, epochs=epochs, batch_size=8, group_by=[3, 6],
                      callbacks=[backup], verbose=0)


def test_packed_and_per_length_refuse_changed_data(tmp_path):
    rng = np.random.default_rng(3)
    values = [rng.random((n, 1)).astype("float32") for n in rng.integers(1, 8, 30)]
    _packed_fit(tmp_path / "packed", values)
    changed = [v.copy() for v in values]
    changed[7][0, 0] += 1.0
    with pytest.raises(ValueError, match=r"`backup_dir`=.*the feature values \(`x`\) differ"):
        _packed_fit(tmp_path / "packed", changed, epochs=2)

    _, y, _ = _data()
    _per_length_fit(tmp_path / "per_length", y)
    y = y.copy()
    y[0] += 1
    with pytest.raises(ValueError, match=r"`backup_dir`=.*the labels or targets \(`y`\) differ"):
        _per_length_fit(tmp_path / "per_length", y, epochs=2)


def test_a_callback_with_get_state_resumes_where_it_was(tmp_path):
    reference = CountBatches()
    _fit(tmp_path / "ref", callbacks=[reference], epochs=2)
    assert reference.count >= 16
    crashed = CountBatches()
    with pytest.raises(Crash):
        _fit(tmp_path / "b", callbacks=[crashed, CrashAt(1, 2)])
    resumed = CountBatches()
    _fit(tmp_path / "b", callbacks=[resumed])
    # The batches before the checkpoint (epoch 1, step 2) are counted by the restored state.
    assert resumed.count == reference.count
    np.testing.assert_array_equal(resumed.losses, reference.losses)


def test_a_callback_with_unsaveable_state_is_named(tmp_path):
    class Bad(CountBatches):
        def get_state(self):
            return {"model": object()}

    with pytest.raises(TypeError, match=r"cannot save the state of callback .*Bad.*object"):
        _fit(tmp_path / "b", callbacks=[Bad()], epochs=1)


def test_other_stateful_callbacks_on_restart_are_refused(crashed, tmp_path):
    path = _copy(crashed, tmp_path)
    _refused(path, r"holds the state of the callbacks \[\], this run has .*CountBatches",
             callbacks=[CountBatches()])


@pytest.mark.parametrize("backup", [sp.BackupAndRestore, keras.callbacks.BackupAndRestore])
def test_fit_tbptt_refuses_backup_and_restore(tmp_path, backup):
    inputs = keras.Input(batch_shape=(2, 4, 1))
    h = keras.layers.SimpleRNN(3, stateful=True, return_sequences=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    model.compile(optimizer="sgd", loss="mse")
    x = [np.ones((n, 1), "float32") for n in (9, 3, 5)]
    with pytest.raises(ValueError, match=r"Argument `callbacks` holds a .*BackupAndRestore, "
                                         r"which `fit_tbptt` cannot resume exactly.*\n- Remove"):
        sp.fit_tbptt(model, x, np.array([1.0, 0.0, 1.0]), window=4, batch_size=2,
                     callbacks=[backup(str(tmp_path / "b"))], verbose=0)
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------- seqprep/running/_keras_private.py


def test_keras_private_details_still_hold(tmp_path):
    """Fails loudly if Keras changes a detail BackupAndRestore relies on."""
    model = _model()
    seeds = _keras_private.seed_state_variables(model)
    assert len(seeds) == 1 and tuple(seeds[0].shape) == (2,)  # the Dropout's
    keras.utils.set_random_seed(0)
    assert _keras_private.global_seed_generator(create=False) is None
    gen = _keras_private.global_seed_generator(create=True)
    assert gen is _keras_private.global_seed_generator(create=False)
    assert tuple(gen.state.shape) == (2,)

    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["list"] = _keras_private.calling_callback_list(self)

    stateful = [keras.callbacks.ReduceLROnPlateau("loss"), keras.callbacks.EarlyStopping("loss"),
                keras.callbacks.ModelCheckpoint(str(tmp_path / "m.keras"), "loss",
                                                save_best_only=True)]
    probe = Probe()
    x, y, _ = _data()
    model.fit(keras.utils.pad_sequences(x), y, epochs=1,
              callbacks=[probe, *stateful], verbose=0)
    assert any(c is probe for c in seen["list"].callbacks)
    for callback in stateful:
        attrs = _keras_private.KERAS_CALLBACK_STATE[type(callback)]
        missing = [a for a in attrs if a not in vars(callback)]
        assert not missing, (type(callback).__name__, missing)


@pytest.mark.backend
def test_a_crashed_dropout_run_resumes_exactly_in_process(tmp_path):
    """On every backend (make test runs this under JAX and PyTorch too): a Dropout model with
    ReduceLROnPlateau and ModelCheckpoint(save_best_only=True), crashed mid-epoch and resumed
    in the same process, ends with the uninterrupted run's weights, learning rate, logged
    losses and best checkpointed loss."""
    def run(path, crash=None):
        plateau = keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=1,
                                                    min_delta=1.0)
        # min_delta: only epoch 0 counts as an improvement, so `best` stays epoch 0's loss
        # (a ModelCheckpoint that forgot it would take the resumed epoch's).
        best = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.weights.h5"), "loss",
                                               save_best_only=True, save_weights_only=True)
        best.min_delta = 1.0
        model = _model()
        extra = [plateau, best] if crash is None else [plateau, best, crash]
        history = _fit(path, callbacks=extra, model=model, epochs=3)
        return model, history, best

    ref_model, ref, ref_best = run(tmp_path / "ref")
    with pytest.raises(Crash):
        run(tmp_path / "b", CrashAt(1, 4))
    model, resumed, best = run(tmp_path / "b")
    assert float(best.best) == pytest.approx(ref.history["loss"][0], rel=1e-6)
    assert float(ref_best.best) == pytest.approx(ref.history["loss"][0], rel=1e-6)
    for a, b in zip(ref_model.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert lr == pytest.approx(0.0025, rel=1e-6)
    assert resumed.epoch == [1, 2]
    np.testing.assert_allclose(resumed.history["loss"], ref.history["loss"][1:], rtol=1e-6)
