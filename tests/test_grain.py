"""grain_dataset: a grain.MapDataset that plays a sampler's plan, checkpointable with Grain's
iterator state, and trains in Keras's fit."""

from __future__ import annotations

import json

import numpy as np
import pytest

import seqprep as sp

grain = pytest.importorskip("grain")


def _data(n: int, seed: int = 0, max_len: int = 25):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len, n)
    x = [rng.integers(1, 50, k).astype(np.int32) for k in lengths]
    y_seq = rng.random(n)
    y_step = [rng.random(k) for k in lengths]
    return x, y_seq, y_step


def _tuple(b):
    return tuple(np.asarray(t) for t in (b if isinstance(b, tuple) else (b,)))


def _assert_same(a, b):
    assert len(a) == len(b)
    for ta, tb in zip(a, b, strict=True):
        assert ta.dtype == tb.dtype and ta.shape == tb.shape
        np.testing.assert_array_equal(ta, tb)


@pytest.mark.parametrize(
    ("targets", "weights", "pad_to", "data_parallel"),
    [("none", None, "batch", None), ("sequence", "array", 30, None),
     ("timestep", "timestep", "bucket", None), ("timestep", "timestep_mean", "grid", None),
     # Data parallelism: the same fill rows and weight scales as bucketed_dataset's.
     ("sequence", None, "batch", 4), ("timestep", None, "bucket", 3),
     ("sequence", "array", 30, 4)],
)
def test_batches_equal_bucketed_dataset_epoch_after_epoch(targets, weights, pad_to,
                                                          data_parallel):
    x, y_seq, y_step = _data(41)
    y = {"none": None, "sequence": y_seq, "timestep": y_step}[targets]
    w = np.linspace(0.5, 2.0, len(x)) if weights == "array" else weights
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=5, seed=4)
    if pad_to == "grid":
        pad_to = sp.width_grid(sampler, 3)
    kw = dict(sampler=sampler, padding="pre", value=-1, sample_weight=w, pad_to=pad_to)
    ds = sp.grain_dataset(x, y, options=sp.Options(data_parallel=data_parallel), **kw)
    assert isinstance(ds, grain.MapDataset) and len(ds) == len(sampler)
    got = [_tuple(b) for b in ds.repeat(2)]
    replay = sp.Options(epochs=2, reshuffle_each_iteration=False, data_parallel=data_parallel)
    want = [_tuple(b) for b in sp.bucketed_dataset(x, y, options=replay, **kw)]
    assert len(got) == len(want) == 2 * len(sampler)
    for a, b in zip(got, want, strict=True):
        _assert_same(a, b)
        if data_parallel is not None:  # every batch filled; fill rows last, weighing 0
            real = sampler.plan(0).sizes.max()
            assert a[0].shape[0] % data_parallel == 0 and a[0].shape[0] >= 1
            assert np.all(a[-1][real:] == 0)


def test_each_epoch_is_a_fresh_order_with_every_example_once():
    x, y, _ = _data(30, seed=1)
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=4, seed=8)
    ds = sp.grain_dataset(x, np.arange(len(x)), sampler=sampler, epoch=2)
    n = len(sampler)
    ids = [b[1].tolist() for b in ds.repeat(3)]
    epochs = [sum(ids[k * n : (k + 1) * n], []) for k in range(3)]
    assert all(sorted(e) == list(range(len(x))) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs == [np.concatenate(sampler.batches(e)).tolist() for e in (2, 3, 4)]


@pytest.mark.parametrize("steps", [0, 3, 7, 11])
def test_iterator_state_resumes_with_the_remaining_batches(steps):
    """Grain's checkpoint (get_state / set_state, JSON-serialisable) resumes exactly, within an
    epoch and across the epoch boundary; slicing the dataset resumes the same way."""
    x, y, _ = _data(30, seed=2)
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=4, seed=3)

    def dataset():
        return sp.grain_dataset(x, y, sampler=sampler).repeat(2)

    it = iter(dataset())
    head = [next(it) for _ in range(steps)]
    state = json.loads(json.dumps(it.get_state()))
    rest = [_tuple(b) for b in it]
    resumed = iter(dataset())
    resumed.set_state(state)
    again = [_tuple(b) for b in resumed]
    assert len(head) + len(rest) == 2 * len(sampler)
    for a, b in zip(again, rest, strict=True):
        _assert_same(a, b)
    for a, b in zip([_tuple(b) for b in dataset()[steps:]], rest, strict=True):
        _assert_same(a, b)


def test_dict_fields_each_padded_to_their_own_width_without_tensorflow():
    """Several fields, as in bucketed_dataset; the module imports no TensorFlow."""
    code = (
        "import sys, numpy as np, seqprep as sp\n"
        "src, dec = [[1, 2, 3], [4], [5, 6]], [[7], [8, 9], [1, 2, 3, 4]]\n"
        "s = sp.BucketSampler(sp.sequence_lengths(src), batch_size=3, shuffle=False)\n"
        "(xb, yb), = list(sp.grain_dataset({'src': src, 'dec': dec}, dec, sampler=s,\n"
        "                                  pad_to='batch', targets='step'))\n"
        "idx = s.batches(0)[0]\n"
        "pad = lambda seqs: sp.pad_sequences([seqs[i] for i in idx], padding='post').tolist()\n"
        "assert xb['src'].tolist() == pad(src) and xb['dec'].tolist() == pad(dec), xb\n"
        "assert yb.tolist() == pad(dec), yb\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(sp.__file__)),
           "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_grain_dataset_refuses_what_bucketed_dataset_refuses():
    x, y, _ = _data(10)
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=4)
    with pytest.raises(TypeError, match="sampler"):
        sp.grain_dataset(x, y, sampler=sp.PackSampler(sp.sequence_lengths(x), batch_size=2))
    with pytest.raises(ValueError, match="padding"):
        sp.grain_dataset(x, y, sampler=sampler, padding="mid")
    with pytest.raises(ValueError, match="same number|one entry per sequence"):
        sp.grain_dataset(x, y[:3], sampler=sampler)


@pytest.mark.backend
def test_fit_trains_and_a_resumed_run_equals_the_uninterrupted_one(token_model):
    """model.fit on the Grain pipeline (every backend, JAX included); training k batches, then
    the rest from the checkpointed position, gives the weights of one uninterrupted run."""
    import keras

    x, _, _ = _data(40, seed=5, max_len=14)
    y = np.array([float(a.sum() % 2) for a in x], np.float32)
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=8, seed=1)
    ds = sp.grain_dataset(x, y, sampler=sampler, pad_to=16).repeat()
    total, cut = 2 * len(sampler), 3

    def trained(*pieces, **fit_kwargs):
        keras.utils.set_random_seed(0)
        model = token_model(50, 8, body="mean")
        model.compile(optimizer="adam", loss="mse")
        for piece in pieces:
            # steps_per_epoch: on TensorFlow, a fit that reads a dataset to its end counts
            # one optimizer iteration too many (Adam's step), which a resumed run would see.
            kw = fit_kwargs or {"steps_per_epoch": len(piece)}
            history = model.fit(piece, verbose=0, **kw)
            assert np.all(np.isfinite(history.history["loss"]))
            assert len(history.history["loss"]) == kw.get("epochs", 1)
        return model.get_weights()

    # Two Keras epochs of the repeated dataset: sampler epochs 0 and 1.
    uninterrupted = trained(ds, steps_per_epoch=len(sampler), epochs=2)
    it = iter(ds)
    for _ in range(cut):
        next(it)
    at = it.get_state()["next_index"]  # the checkpoint: where the next batch comes from
    resumed = trained(ds[:cut], ds[at:total])
    for a, b in zip(uninterrupted, resumed, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_batch_size_without_a_sampler_says_which_sampler_to_build():
    with pytest.raises(TypeError) as err:
        sp.grain_dataset([[1, 2], [3], [4, 5, 6]], [0, 1, 0], batch_size=64)
    assert ("- Pass sampler=seqprep.BucketSampler(seqprep.sequence_lengths(x), batch_size=64)."
            in str(err.value))
