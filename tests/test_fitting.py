"""Tests for seqprep.running._fitting: per-length plans, fit_per_length, fit_separate_models."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from seqprep.inputs._masking import sequence_weights  # noqa: E402
from seqprep.planning import Bucketer  # noqa: E402
from seqprep.planning._per_length import plan_per_length  # noqa: E402
from seqprep.running._ensemble import LengthEnsemble, fit_separate_models  # noqa: E402
from seqprep.running._fitting import fit_per_length  # noqa: E402

# --------------------------------------------------------------------------- helpers


BACKEND = keras.backend.backend()


class Recorder(keras.layers.Layer):
    """Passes its input through and records every batch the model trains on.

    Only training calls are recorded (not fit_per_length's mask probe or validation). Each
    backend needs its own way out of a compiled step: ``tf.numpy_function`` in a TensorFlow
    graph, ``jax.debug.callback`` in a JAX trace; PyTorch runs the step eagerly.
    """

    def __init__(self, log, **kwargs):
        super().__init__(**kwargs)
        self.append = log.append  # a bound method: Keras does not wrap it like a list

    def call(self, x, training=None):
        if not training:
            return x
        if BACKEND == "tensorflow":
            def record(v):
                self.append(np.array(v))
                return v

            out = tf.numpy_function(record, [x], x.dtype, stateful=True)
            out.set_shape(x.shape)
            return out
        if BACKEND == "jax":
            import jax

            jax.debug.callback(lambda v: self.append(np.array(v)), x, ordered=True)
            return x
        self.append(keras.ops.convert_to_numpy(x))
        return x


def token_data(lengths, seed=0):
    """Sequence i is `lengths[i]` copies of token i + 1, so every batch row names its example."""
    x = [np.full(n, i + 1, dtype=np.int32) for i, n in enumerate(lengths)]
    y = np.random.default_rng(seed).normal(size=(len(lengths), 1)).astype(np.float32)
    return x, y


def rnn_model(vocab, *, log=None, optimizer="sgd", mask_zero=False, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((None,), dtype="int32")]
    if log is not None:
        layers.append(Recorder(log))
    layers += [
        keras.layers.Embedding(vocab, 3, mask_zero=mask_zero),
        keras.layers.SimpleRNN(3),
        keras.layers.Dense(1),
    ]
    model = keras.Sequential(layers)
    model.compile(optimizer=optimizer, loss="mse")
    return model


LENGTHS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]


# --------------------------------------------------------------------------- plans (numpy)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_plan_visits_every_example_once_per_epoch(data):
    lengths = data.draw(st.lists(st.integers(1, 12), min_size=1, max_size=60), label="lengths")
    batch_size = data.draw(st.integers(1, 8), label="batch_size")
    order = data.draw(st.sampled_from(["shuffle", "ascending", "descending"]), label="order")
    by_bucket = data.draw(st.booleans(), label="by_bucket")
    group_by = [3, 7] if by_bucket else "length"
    epoch = data.draw(st.integers(0, 3), label="epoch")
    batches = plan_per_length(lengths, batch_size=batch_size, group_by=group_by, order=order,
                              seed=5, epoch=epoch)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(len(lengths)))
    arr = np.asarray(lengths)
    keys = np.searchsorted([3, 7], arr, side="right") if by_bucket else arr
    for b in batches:
        assert 1 <= len(b) <= batch_size
        assert len(set(keys[b].tolist())) == 1
    # One partial batch per group at most: the batch count is fixed by the group sizes.
    counts = np.unique(keys, return_counts=True)[1]
    assert len(batches) == int(np.sum(-(-counts // batch_size)))
    firsts = [int(keys[b[0]]) for b in batches]
    if order == "ascending":
        assert firsts == sorted(firsts)
    if order == "descending":
        assert firsts == sorted(firsts, reverse=True)


def test_plan_same_seed_same_order_and_epochs_differ():
    a = plan_per_length(LENGTHS, batch_size=2, seed=3, epoch=1)
    b = plan_per_length(LENGTHS, batch_size=2, seed=3, epoch=1)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    c = plan_per_length(LENGTHS, batch_size=2, seed=3, epoch=2)
    d = plan_per_length(LENGTHS, batch_size=2, seed=4, epoch=1)
    assert [x.tolist() for x in a] != [x.tolist() for x in c]
    assert [x.tolist() for x in a] != [x.tolist() for x in d]


def test_plan_sorted_epochs_is_sortagrad():
    kwargs = dict(batch_size=2, order="ascending", sorted_epochs=1, seed=0)
    first = plan_per_length(LENGTHS, epoch=0, **kwargs)
    assert [LENGTHS[b[0]] for b in first] == sorted(LENGTHS[b[0]] for b in first)
    later = plan_per_length(LENGTHS, epoch=1, **kwargs)
    shuffled = plan_per_length(LENGTHS, batch_size=2, order="shuffle", seed=0, epoch=1)
    assert [x.tolist() for x in later] == [x.tolist() for x in shuffled]


def test_plan_drop_remainder_keeps_only_full_batches():
    batches = plan_per_length([2, 2, 2, 3, 3, 3, 3], batch_size=2, drop_remainder=True)
    assert sorted(len(b) for b in batches) == [2, 2, 2]


def test_plan_rejects_unknown_order_and_group_by():
    with pytest.raises(ValueError, match="`order`"):
        plan_per_length([1, 2], order="random")
    with pytest.raises(ValueError, match="`group_by`"):
        plan_per_length([1, 2], group_by="bucket")
    with pytest.raises(ValueError, match="`group_by`"):
        plan_per_length([1, 2], group_by=[5, 3])


# --------------------------------------------------------------------------- fit_per_length


def test_exact_length_batches_have_one_length_no_padding_and_cover_every_example():
    log: list[np.ndarray] = []
    x, y = token_data(LENGTHS)
    model = rnn_model(len(LENGTHS) + 1, log=log)
    history = fit_per_length(model, x, y, epochs=2, batch_size=3, verbose=0, seed=7)
    steps = history.steps_per_epoch
    assert len(log) == 2 * steps
    for epoch in range(2):
        seen = []
        for batch, expected in zip(log[epoch * steps : (epoch + 1) * steps],
                                   plan_per_length(LENGTHS, batch_size=3, seed=7, epoch=epoch),
                                   strict=True):
            assert (batch != 0).all()  # no padding anywhere
            rows = batch[:, 0] - 1
            assert (batch == batch[:, :1]).all()  # each row is one whole example
            assert all(LENGTHS[r] == batch.shape[1] for r in rows)  # one exact length
            assert rows.tolist() == expected.tolist()  # the plan, in order
            seen.extend(rows.tolist())
        assert sorted(seen) == list(range(len(LENGTHS)))
    assert x[0].tolist() == [1, 1, 1]  # inputs untouched


def test_one_epoch_ascending_equals_train_on_batch_sequence():
    x, y = token_data(LENGTHS)
    model = rnn_model(len(LENGTHS) + 1, optimizer=keras.optimizers.SGD(0.1))
    twin = rnn_model(len(LENGTHS) + 1, optimizer=keras.optimizers.SGD(0.1))
    twin.set_weights(model.get_weights())
    fit_per_length(model, x, y, epochs=1, batch_size=3, order="ascending", seed=1, verbose=0)
    for idx in plan_per_length(LENGTHS, batch_size=3, order="ascending", seed=1):
        twin.train_on_batch(np.stack([x[i] for i in idx]), y[idx])
    for a, b in zip(model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


class ControlledMetric(keras.callbacks.Callback):
    """Writes a metric of our choosing into the epoch logs (before EarlyStopping reads them)."""

    def __init__(self, values):
        super().__init__()
        self.values = values
        self.epochs: list[int] = []
        self.batches: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.batches.append(0)

    def on_train_batch_begin(self, batch, logs=None):
        self.batches[-1] += 1

    def on_epoch_end(self, epoch, logs=None):
        logs["ctrl"] = self.values[epoch]


def test_early_stopping_history_epochs_and_batch_numbers():
    x, y = token_data(LENGTHS)
    model = rnn_model(len(LENGTHS) + 1)
    ctrl = ControlledMetric([5.0, 4.0, 4.5, 4.6, 4.7, 1.0, 1.0, 1.0])
    stop = keras.callbacks.EarlyStopping(monitor="ctrl", patience=2, mode="min")
    history = fit_per_length(model, x, y, epochs=8, batch_size=4, callbacks=[ctrl, stop],
                             verbose=0)
    assert ctrl.epochs == [0, 1, 2, 3]  # best at 1, two epochs without improvement
    assert len(history.history["loss"]) == 4 and history.epoch == [0, 1, 2, 3]
    assert ctrl.batches == [history.steps_per_epoch] * 4
    assert sorted(history.group_stats["epoch"].unique()) == [0, 1, 2, 3]


def test_history_has_one_entry_per_epoch_and_lr_schedules_advance():
    x, y = token_data(LENGTHS)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.9)
    model = rnn_model(len(LENGTHS) + 1, optimizer=keras.optimizers.SGD(schedule))
    seen_lr = []

    class LogLR(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen_lr.append(float(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))

    history = fit_per_length(model, x, y, epochs=3, batch_size=4, verbose=0,
                             callbacks=[LogLR()])
    steps = history.steps_per_epoch
    assert len(history.history["loss"]) == 3
    assert int(model.optimizer.iterations.numpy()) == 3 * steps
    assert seen_lr == [0.0, steps, 2 * steps]


def test_learning_rate_scheduler_callback_sets_each_epoch():
    x, y = token_data(LENGTHS)
    model = rnn_model(len(LENGTHS) + 1, optimizer=keras.optimizers.SGD(0.5))
    rates = []

    class LogRate(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                rates.append(float(self.model.optimizer.learning_rate.numpy()))

    sched = keras.callbacks.LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))
    fit_per_length(model, x, y, epochs=3, batch_size=4, verbose=0, callbacks=[sched, LogRate()])
    np.testing.assert_allclose(rates, [0.1, 0.05, 0.1 / 3], rtol=1e-6)


@pytest.mark.backend
def test_traces_are_bounded_and_later_epochs_add_none():
    # TensorFlow traces once for the relaxed spec; JAX once per distinct batch shape (here one
    # per length: one sequence each); PyTorch runs eagerly and traces nothing.
    top = 25 if BACKEND == "tensorflow" else 7  # JAX compiles per shape: keep them few there
    lengths = list(range(1, top))
    x, y = token_data(lengths)
    xv, yv = token_data(list(range(2, top - 2)), seed=1)
    model = rnn_model(len(lengths) + 1, optimizer="adam")  # slot variables: no extra trace
    history = fit_per_length(model, x, y, epochs=2, batch_size=4, verbose=0,
                             validation_data=(xv, yv))
    expected = {"tensorflow": (1, 1), "jax": (len(lengths), len(xv))}.get(BACKEND)
    if expected is None:
        assert history.traces is None
    else:
        assert history.traces["train"] == expected[0]
        assert history.traces["train_by_epoch"] == [expected[0]] * 2
        assert history.traces["test"] == expected[1]
    assert len(history.history["val_loss"]) == 2
    val = history.group_stats[history.group_stats["split"] == "val"]
    assert sorted(val[val["epoch"] == 0]["group"]) == list(range(2, top - 2))


def test_group_stats_loss_matches_evaluate_when_weights_do_not_move():
    x, y = token_data(LENGTHS)
    model = rnn_model(len(LENGTHS) + 1, optimizer=keras.optimizers.SGD(0.0))
    history = fit_per_length(model, x, y, epochs=1, batch_size=2, verbose=0)
    stats = history.group_stats
    assert stats["sequences"].sum() == len(LENGTHS)
    lengths = np.asarray(LENGTHS)
    for _, row in stats.iterrows():
        idx = np.flatnonzero(lengths == row["group"])
        assert row["min_length"] == row["max_length"] == row["group"]
        expected = model.evaluate(np.stack([x[i] for i in idx]), y[idx], verbose=0)
        np.testing.assert_allclose(row["loss"], expected, rtol=2e-3, atol=1e-5)


def test_batch_losses_from_running_means_exact():
    from seqprep.running._fitting import _batch_losses

    sizes = np.array([2, 3, 1, 4])
    losses = np.array([1.0, 2.0, 4.0, 0.5])
    means = np.cumsum(sizes * losses) / np.cumsum(sizes)  # what Keras reports after each batch
    np.testing.assert_allclose(_batch_losses(means, sizes), losses, rtol=1e-12)
    means[1] = np.nan  # a missing report spoils only its own batch and the next
    got = _batch_losses(means, sizes)
    assert np.isnan(got[1]) and np.isnan(got[2])
    np.testing.assert_allclose(got[[0, 3]], losses[[0, 3]], rtol=1e-12)


def test_bucketed_batches_are_post_padded_within_one_bucket():
    log: list[np.ndarray] = []
    x, y = token_data(LENGTHS)
    model = rnn_model(len(LENGTHS) + 1, log=log, mask_zero=True)
    bucketer = Bucketer(3, strategy="quantile")
    history = fit_per_length(model, x, y, group_by=bucketer, batch_size=4, verbose=0)
    bounds = bucketer.boundaries_  # fitted on the lengths by fit_per_length
    assert len(log) == history.steps_per_epoch
    seen = []
    for batch in log:
        rows = batch[:, 0] - 1
        lens = np.asarray(LENGTHS)[rows]
        assert batch.shape[1] == lens.max()
        assert len(set(np.searchsorted(bounds, lens, side="right").tolist())) == 1
        real = np.arange(batch.shape[1])[None, :] < lens[:, None]
        assert (batch[real] != 0).all() and (batch[~real] == 0).all()
        seen.extend(rows.tolist())
    assert sorted(seen) == list(range(len(LENGTHS)))


@pytest.mark.backend
def test_bucketed_per_step_targets_weight_the_mean_over_real_steps():
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(n, 2)).astype(np.float32) for n in LENGTHS]
    y = [rng.normal(size=(n, 1)).astype(np.float32) for n in LENGTHS]

    def build():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((None, 2)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        return model

    model, twin = build(), build()
    fit_per_length(model, x, y, group_by=[4], batch_size=3, order="ascending", verbose=0)
    for idx in plan_per_length(LENGTHS, batch_size=3, group_by=[4], order="ascending"):
        lens = np.asarray(LENGTHS)[idx]
        width = lens.max()
        xb = np.stack([np.pad(x[i], ((0, width - len(x[i])), (0, 0))) for i in idx])
        yb = np.stack([np.pad(y[i], ((0, width - len(y[i])), (0, 0))) for i in idx])
        twin.train_on_batch(xb, yb, sample_weight=sequence_weights(lens, normalize=True))
    for a, b in zip(model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.backend
def test_stateful_model_trains_on_full_batches_and_rejects_small_groups():
    def build():
        model = keras.Sequential([
            keras.Input(batch_shape=(2, None, 1)),
            keras.layers.SimpleRNN(2, stateful=True),
            keras.layers.Dense(1),
        ])
        model.compile(optimizer="sgd", loss="mse")
        return model

    x = [np.ones((n, 1), np.float32) for n in [2, 2, 3, 3, 3, 3]]
    y = np.zeros((6, 1), np.float32)
    history = fit_per_length(build(), x, y, batch_size=2, verbose=0)
    assert history.steps_per_epoch == 3
    with pytest.raises(ValueError, match="`group_by`.*length 4: 1"):
        fit_per_length(build(), [*x, np.ones((4, 1))], np.zeros((7, 1)), batch_size=2,
                       verbose=0)
    with pytest.raises(ValueError, match="`batch_size`"):
        fit_per_length(build(), x, y, batch_size=3, verbose=0)
    with pytest.raises(ValueError, match="`drop_remainder`"):
        fit_per_length(build(), [*x, *x[:3]], np.zeros((9, 1)), batch_size=2, verbose=0)


def test_bad_input_errors_name_the_argument():
    x, y = token_data(LENGTHS)
    uncompiled = keras.Sequential([keras.Input((None,), dtype="int32"),
                                   keras.layers.Embedding(30, 2), keras.layers.SimpleRNN(1)])
    with pytest.raises(ValueError, match="`model` must be compiled"):
        fit_per_length(uncompiled, x, y)
    model = rnn_model(len(LENGTHS) + 1)
    with pytest.raises(ValueError, match=r"`x` and `y`.*len\(x\)=20, len\(y\)=19"):
        fit_per_length(model, x, y[:-1])
    with pytest.raises(ValueError, match="`order` must be .*order='random'"):
        fit_per_length(model, x, y, order="random")
    with pytest.raises(ValueError, match="`group_by`"):
        fit_per_length(model, x, y, group_by="bucket")
    with pytest.raises(ValueError, match="`y`.*y\\[1\\] has 2 steps"):
        fit_per_length(model, x, [np.zeros(n + (i == 1)) for i, n in enumerate(LENGTHS)])
    with pytest.raises(ValueError, match="empty sequences"):
        fit_per_length(model, [[1], []], np.zeros(2))
    with pytest.raises(TypeError, match="steps_per_epoch"):
        fit_per_length(model, x, y, steps_per_epoch=3)
    with pytest.raises(TypeError, match="`model` must be a Keras model"):
        fit_per_length(object(), x, y)


# --------------------------------------------------------------------------- separate models


def pooled_model(group):
    model = keras.Sequential([keras.Input((None, 1)), keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


@pytest.mark.backend
def test_length_ensemble_routes_round_trips_and_evaluates(tmp_path):
    rng = np.random.default_rng(0)
    lengths = [2, 2, 3, 3, 5]
    x = [rng.normal(size=(n, 1)).astype(np.float32) for n in lengths]
    y = rng.normal(size=(5, 1)).astype(np.float32)
    groups = []

    def build(group):
        groups.append(group)
        return pooled_model(group)

    ens = fit_separate_models(build, x, y, epochs=2, verbose=0)
    assert groups == [2, 3, 5] and sorted(ens.models) == [2, 3, 5]
    assert len(ens.histories[3].history["loss"]) == 2
    pred = ens.predict(x)
    assert pred.shape == (5, 1)
    np.testing.assert_allclose(pred[4], ens.models[5].predict(x[4][None], verbose=0)[0],
                               rtol=1e-6)
    ens.save(tmp_path / "ens")
    loaded = LengthEnsemble.load(tmp_path / "ens")
    np.testing.assert_array_equal(loaded.predict(x), pred)
    logs = ens.evaluate(x, y)
    per_model = [ens.models[n].evaluate(np.stack([x[i] for i in idx]), y[idx], verbose=0)
                 for n, idx in [(2, [0, 1]), (3, [2, 3]), (5, [4])]]
    np.testing.assert_allclose(logs["loss"], np.dot(per_model, [2, 2, 1]) / 5, rtol=1e-5)

    with pytest.raises(ValueError, match="(?s)length\\(s\\) \\[4\\].*unseen='nearest'"):
        ens.predict([np.ones((4, 1))])
    near = ens.predict([np.ones((4, 1)), np.ones((9, 1))], unseen="nearest")
    np.testing.assert_allclose(near[0], ens.models[3].predict(np.ones((1, 4, 1)), verbose=0)[0])
    np.testing.assert_allclose(near[1], ens.models[5].predict(np.ones((1, 9, 1)), verbose=0)[0])


@pytest.mark.backend
def test_bucketed_ensemble_pads_to_bucket_width_and_round_trips(tmp_path):
    x = [np.full((n, 1), float(n), np.float32) for n in [1, 2, 2, 4, 6]]
    y = np.arange(5, dtype=np.float32)[:, None]
    groups = []

    def build(group):
        groups.append(group)
        model = keras.Sequential([keras.Input((group[1] - 1 if group[1] else 6, 1)),
                                  keras.layers.Flatten(), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        return model

    ens = fit_separate_models(build, x, y, group_by=[3], unseen="nearest", verbose=0)
    assert groups == [(0, 3), (3, None)]
    assert ens.widths == {0: 2, 1: 6}
    pred = ens.predict([np.ones((1, 1)), np.ones((5, 1))])  # fixed-width models: padded
    ens.save(tmp_path)
    loaded = LengthEnsemble.load(tmp_path)
    assert loaded.boundaries.tolist() == [3] and loaded.unseen == "nearest"
    np.testing.assert_array_equal(loaded.predict([np.ones((1, 1)), np.ones((5, 1))]), pred)


def test_fit_separate_models_bad_input():
    x = [np.ones((2, 1)), np.ones((3, 1))]
    with pytest.raises(ValueError, match="`x` and `y`"):
        fit_separate_models(pooled_model, x, np.zeros(3), verbose=0)
    with pytest.raises(TypeError, match="`build_model`"):
        fit_separate_models(None, x, np.zeros(2))

    def uncompiled(group):
        return keras.Sequential([keras.Input((None, 1)), keras.layers.Dense(1)])

    with pytest.raises(ValueError, match="`model` must be compiled"):
        fit_separate_models(uncompiled, x, np.zeros(2), verbose=0)
    with pytest.raises(ValueError, match="`unseen`"):
        fit_separate_models(pooled_model, x, np.zeros(2), unseen="skip")
    with pytest.raises(ValueError, match="ensemble.json"):
        LengthEnsemble.load(os.devnull + "-missing")
