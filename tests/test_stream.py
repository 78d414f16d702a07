"""The one epoch stream (seqprep/running/_stream.py, issue 19 item 3).

* each planner epoch is planned once per pass, whatever counts its shapes (the ``pad_to``
  rule on a compiling backend plans the first two epochs to count their shapes);
* :func:`seqprep.epoch_stream` finds a dataset's pass counter from the dataset, and
  :func:`seqprep.live_epoch_streams` lists those of the live datasets only;
* the tf.data stream plays exactly the planner's batches, pass after pass, and from the batch
  a driven stream says.
"""

from __future__ import annotations

import gc
import itertools
import pickle
import warnings
from collections import Counter

import numpy as np
import pytest

import seqprep as sp
from seqprep.running import _stream

LENGTHS = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8])
X = [np.arange(1, n + 1) for n in LENGTHS]


class CountingSampler(sp.BucketSampler):
    """A BucketSampler that counts ``plan(epoch)`` calls by epoch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: Counter[int] = Counter()

    def plan(self, epoch=None):
        self.calls[self.epoch if epoch is None else int(epoch)] += 1
        return super().plan(epoch)


def _rows(batches):
    """The examples of each batch, read back from the padded values (row i is arange(1, n+1))."""
    out = []
    for xb in batches:
        xb = np.asarray(xb)
        out.append(sorted(int((row > 0).sum()) for row in xb))
    return out


@pytest.mark.parametrize("backend", [None, "jax"])
@pytest.mark.parametrize("pad_to", ["batch", "auto"])
def test_each_epoch_planned_once_per_pass(monkeypatch, backend, pad_to):
    # On a compiling backend the pad_to rule plans epochs 0 and 1 to count their shapes; the
    # stream then plays them: each is planned once in all.
    monkeypatch.setattr(_stream, "compiling_backend_now", lambda: backend)
    sampler = CountingSampler(LENGTHS, batch_size=4, seed=5)
    with warnings.catch_warnings():  # "new shapes in the second epoch" on JAX, or none
        warnings.simplefilter("ignore", UserWarning)
        ds = sp.bucketed_dataset(X, sampler=sampler, pad_to=pad_to)
    passes = [[xb.numpy() for xb in ds] for _ in range(2)]
    assert sampler.calls == Counter({0: 1, 1: 1})
    fresh = sp.BucketSampler(LENGTHS, batch_size=4, seed=5)
    for e, batches in enumerate(passes):
        want = [sorted(LENGTHS[b].tolist()) for b in fresh.plan(e).batches]
        assert _rows(batches) == want


def test_pydataset_plans_each_epoch_once(monkeypatch):
    monkeypatch.setattr(_stream, "compiling_backend_now", lambda: "jax")
    sampler = CountingSampler(LENGTHS, batch_size=4, seed=5)
    ds = sp.bucketed_pydataset(X, sampler=sampler, pad_to=[4, 9])
    ds.on_epoch_begin()
    for i in range(len(ds)):
        ds[i]
    ds.on_epoch_end()  # moves to epoch 1
    assert ds.epoch == 1 and sampler.calls == Counter({0: 1, 1: 1})


def test_plan_cache_keeps_recent_epochs_and_pickles():
    sampler = CountingSampler(LENGTHS, batch_size=4, seed=1)
    cache = _stream.PlanCache(sampler, size=2)
    for e in (0, 1, 0, 2, 1, 0):
        assert cache.plan(e) == sp.BucketSampler(LENGTHS, batch_size=4, seed=1).plan(e)
    # 0, 1 planned; 0 kept; 2 evicts 1; 1 evicts 0; 0 again.
    assert sampler.calls == Counter({0: 2, 1: 2, 2: 1})
    assert len(cache) == len(sampler) and cache.bucket_pad_lengths is sampler.bucket_pad_lengths
    plain = _stream.PlanCache(sp.BucketSampler(LENGTHS, batch_size=4, seed=1))
    plain.plan(3)
    copy = pickle.loads(pickle.dumps(plain))  # the planner, not its plans or lock
    assert copy.plan(3) == plain.plan(3) and len(copy._plans) == 1


def test_epoch_stream_is_found_from_the_dataset():
    sampler = sp.BucketSampler(LENGTHS, batch_size=4, seed=2)
    ds = sp.bucketed_dataset(X, sampler=sampler, epoch=3)
    stream = sp.epoch_stream(ds)
    assert isinstance(stream, sp.EpochStream)
    assert stream.batches_per_pass == len(sampler) and stream.identity["first_epoch"] == 3
    assert (stream.batches_per_step, stream.steps_per_pass) == (1, len(sampler))
    assert stream.identity["fingerprint"] == sampler.state_dict()["fingerprint"]
    assert stream.data is not None
    assert any(s is stream for s in sp.live_epoch_streams())
    # A driven stream plays the pass it is told, from the batch it is told.
    stream.resume_at(2, 1)
    stream.drive(2)
    want = [sorted(LENGTHS[b].tolist()) for b in sampler.plan(5).batches][1:]
    # The resumed pass is one batch short (BackupAndRestore ends that epoch early).
    got = _rows([xb.numpy() for xb in itertools.islice(iter(ds), len(want))])
    assert got == want
    stream.release()


def test_epoch_stream_positions_are_training_steps():
    """A stream whose training step consumes several batches (a pipeline of local replicas)
    takes and reports positions in steps, and skips that many batches per step."""
    stream = sp.EpochStream(0, 1, 2, 6, {"seed": 0}, batches_per_step=3)
    assert (stream.batches_per_pass, stream.steps_per_pass) == (12, 4)
    stream.resume_at(4, 3)
    stream.drive(4)
    assert stream.start().tolist() == [4, 9] and stream.skip_of(4) == 3
    with pytest.raises(ValueError, match="`batches_per_step` must divide"):
        sp.EpochStream(0, 1, 1, 5, {"seed": 0}, batches_per_step=2)


def test_packed_dataset_and_fit_streams():
    sampler = sp.PackSampler(LENGTHS, batch_size=2, seed=0)
    ds = sp.packed_dataset(X, sampler=sampler)
    assert sp.epoch_stream(ds).batches_per_pass == len(sampler)
    fixed = sp.packed_dataset(X, sampler=sampler,
                             options=sp.Options(reshuffle_each_iteration=False))
    with pytest.raises(ValueError, match="`dataset`"):
        sp.epoch_stream(fixed)


def test_epoch_stream_refuses_other_datasets_and_forgets_dead_ones():
    import tensorflow as tf

    with pytest.raises(ValueError, match=r"`dataset`.*Received: dataset of type _?RangeDataset"):
        sp.epoch_stream(tf.data.Dataset.range(3))
    with pytest.raises(ValueError, match="list"):
        sp.epoch_stream([1, 2])
    sampler = sp.BucketSampler(LENGTHS, batch_size=4)
    fixed = sp.bucketed_dataset(X, sampler=sampler,
                               options=sp.Options(reshuffle_each_iteration=False))
    with pytest.raises(ValueError, match="`dataset`"):
        sp.epoch_stream(fixed)
    ds = sp.bucketed_dataset(X, sampler=sampler)
    stream = sp.epoch_stream(ds)
    del ds
    gc.collect()
    assert not any(s is stream for s in sp.live_epoch_streams())
