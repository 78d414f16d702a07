"""bucketed_pydataset: the numpy executor plays bucketed_dataset's plan, batch for batch."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from _strategies import executor_data as _data
from hypothesis import given, settings
from hypothesis import strategies as st

import seqprep as sp
from seqprep.running._pydataset import bucketed_pydataset


def _tf_batches(ds):
    return [tuple(np.asarray(t) for t in (b if isinstance(b, tuple) else (b,))) for b in ds]


def _py_batches(pyds):
    return [b if isinstance(b, tuple) else (b,) for b in (pyds[i] for i in range(len(pyds)))]


def _assert_same(tf_batches, py_batches):
    assert len(tf_batches) == len(py_batches)
    for a, b in zip(tf_batches, py_batches, strict=True):
        assert len(a) == len(b)
        for ta, pb in zip(a, b, strict=True):
            assert ta.dtype == pb.dtype and ta.shape == pb.shape
            np.testing.assert_array_equal(ta, pb)


@pytest.mark.parametrize("padding", ["post", "pre"])
@pytest.mark.parametrize("pad_to", ["batch", "bucket", "grid", 40])
@pytest.mark.parametrize(
    ("targets", "weights"),
    [("none", None)] + [(t, w) for t in ("sequence", "timestep")
                        for w in (None, "array", "timestep", "timestep_mean")],
)
def test_every_batch_equals_bucketed_dataset(padding, pad_to, targets, weights):
    x, y_seq, y_step = _data(37)
    y = {"none": None, "sequence": y_seq, "timestep": y_step}[targets]
    w = np.linspace(0.5, 2.0, len(x)) if weights == "array" else weights
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=4, seed=3)
    if pad_to == "grid":
        pad_to = sp.width_grid(sampler, 3)
    kw = dict(sampler=sampler, padding=padding, value=-1, sample_weight=w, pad_to=pad_to)
    for epoch in (0, 2):
        ds = sp.bucketed_dataset(x, y, epoch=epoch,
                                 options=sp.Options(reshuffle_each_iteration=False), **kw)
        _assert_same(_tf_batches(ds), _py_batches(bucketed_pydataset(x, y, epoch=epoch, **kw)))


@settings(max_examples=20, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 25), min_size=1, max_size=40),
    batch_size=st.integers(1, 7),
    padding=st.sampled_from(["post", "pre"]),
    pad_to=st.sampled_from(["batch", "bucket"]),
    seed=st.integers(0, 5),
    truncate_at=st.none() | st.integers(2, 12),
    truncating=st.sampled_from(["post", "pre"]),
)
def test_random_plans_match_bucketed_dataset(
    lengths, batch_size, padding, pad_to, seed, truncate_at, truncating
):
    x = [np.arange(k, dtype=np.float64) + 100 * i for i, k in enumerate(lengths)]
    extra = {} if truncate_at is None else dict(overlong="truncate", max_length=truncate_at)
    sampler = sp.BucketSampler(lengths, batch_size=batch_size, seed=seed, **extra)
    kw = dict(sampler=sampler, padding=padding, pad_to=pad_to)
    y = np.arange(len(lengths))
    replay = sp.Options(reshuffle_each_iteration=False, truncating=truncating)
    ds = sp.bucketed_dataset(x, y, epoch=1, options=replay, **kw)
    py = bucketed_pydataset(x, y, epoch=1, options=sp.Options(truncating=truncating), **kw)
    _assert_same(_tf_batches(ds), _py_batches(py))


def test_each_epoch_plays_every_sequence_once_in_a_fresh_order():
    x, _, _ = _data(50, seed=1)
    ids = np.arange(len(x))
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=6, seed=7)
    pyds = bucketed_pydataset(x, ids, sampler=sampler, pad_to="batch")
    orders = []
    for epoch in range(3):
        assert pyds.epoch == epoch
        batches = _py_batches(pyds)
        order = np.concatenate([yb for _, yb in batches])
        assert sorted(order.tolist()) == ids.tolist()  # every sequence exactly once
        for xb, yb in batches:  # each row is its own sequence, padded after its end
            for row, i in zip(xb, yb, strict=True):
                np.testing.assert_array_equal(row[: len(x[i])], x[i])
                assert not row[len(x[i]) :].any()
        ds = sp.bucketed_dataset(x, ids, sampler=sampler, pad_to="batch", epoch=epoch,
                                 options=sp.Options(reshuffle_each_iteration=False))
        _assert_same(_tf_batches(ds), batches)
        orders.append(order)
        pyds.on_epoch_end()
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])


def test_an_epoch_moves_on_only_when_all_its_batches_were_read():
    # Keras calls on_epoch_end when fit starts, after peeking at a batch: no move then.
    x, _, _ = _data(30)
    pyds = bucketed_pydataset(x, sampler=sp.BucketSampler(sp.sequence_lengths(x), batch_size=4))
    pyds.on_epoch_end()
    assert pyds.epoch == 0
    pyds[0]
    pyds.on_epoch_begin()
    pyds.on_epoch_end()
    assert pyds.epoch == 0
    for i in range(len(pyds)):
        pyds[i]
    pyds.on_epoch_end()
    assert pyds.epoch == 1
    pyds.on_epoch_end()
    assert pyds.epoch == 1


def test_out_of_range_index_raises_index_error():
    x, _, _ = _data(5)
    pyds = bucketed_pydataset(x, sampler=sp.BucketSampler(sp.sequence_lengths(x), batch_size=2))
    with pytest.raises(IndexError):
        pyds[len(pyds)]


def test_bad_arguments_name_the_argument():
    x, y_seq, _ = _data(6)
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=2)
    with pytest.raises(TypeError, match="`sampler`"):
        bucketed_pydataset(x, sampler=object())
    with pytest.raises(ValueError, match="`workers`"):
        bucketed_pydataset(x, sampler=sampler, workers=0)
    with pytest.raises(ValueError, match="`padding`"):
        bucketed_pydataset(x, sampler=sampler, padding="mid")
    with pytest.raises(ValueError, match="`pad_to`"):
        bucketed_pydataset(x, sampler=sampler, pad_to=3)
    with pytest.raises(ValueError, match="`y`"):
        bucketed_pydataset(x, y_seq[:-1], sampler=sampler)
    with pytest.raises(ValueError, match="`y`"):
        bucketed_pydataset(x, [np.zeros(len(s) + 1) for s in x], sampler=sampler)
    with pytest.raises(ValueError, match="`sample_weight`"):
        bucketed_pydataset(x, sample_weight="timestep", sampler=sampler)


@pytest.mark.parametrize("flag", [True, False])
def test_boolean_sample_weight_is_refused(flag):
    x, _, y_step = _data(12)
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=4)
    with pytest.raises(TypeError, match='takes no boolean(.|\n)*sample_weight="timestep"'):
        bucketed_pydataset(x, y_step, sampler=sampler, sample_weight=flag)


def test_the_callers_arrays_are_not_mutated():
    x, y_seq, _ = _data(9)
    before = [a.copy() for a in x], y_seq.copy()
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=3)
    pyds = bucketed_pydataset(x, y_seq, sampler=sampler, value=-5)
    for i in range(len(pyds)):
        pyds[i][0][...] = 0  # writing into a batch must not reach the source data
    for a, b in zip(x, before[0], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(y_seq, before[1])
    np.testing.assert_array_equal(pyds[0][0][pyds[0][0] != -5] != 0, True)


@pytest.mark.backend
def test_fit_trains_two_epochs_on_this_backend(token_model):
    x, y_seq, _ = _data(40, seed=2, max_len=12)
    y = (y_seq > 0.5).astype(np.float32)
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=8, seed=1)
    pyds = bucketed_pydataset(x, y, sampler=sampler)
    keras.utils.set_random_seed(0)
    model = token_model(50, 4, activation="sigmoid")
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(pyds, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert np.isfinite(history.history["loss"]).all()
    assert pyds.epoch == 2  # one sampler epoch per Keras epoch
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_a_pickled_copy_plays_the_same_batches():
    # Keras sends the dataset to worker processes with use_multiprocessing=True.
    import pickle

    x, y_seq, _ = _data(20)
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=3, seed=4)
    pyds = bucketed_pydataset(x, y_seq, sampler=sampler, epoch=1, sample_weight="timestep")
    copy = pickle.loads(pickle.dumps(pyds))
    assert copy.epoch == 1
    _assert_same(_py_batches(pyds), _py_batches(copy))
