"""PyTorch's DataLoader on seqprep's plan: PadCollate / PackCollate, samplers as batch_sampler,
StatefulDataLoader resume, sharding by rank, and Keras's fit on the loader."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import seqprep as sp
from seqprep.running._torch import PackCollate, PadCollate, RowItems, shard_by_rank

torch = pytest.importorskip("torch")
from _strategies import executor_data as _data  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402


def _np(batch):
    """A collated batch as a tuple of numpy arrays (dicts kept, tensors converted)."""
    def conv(t):
        if isinstance(t, dict):
            return {k: conv(v) for k, v in t.items()}
        return t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    return tuple(conv(t) for t in batch) if isinstance(batch, tuple) else (conv(batch),)


def _assert_same(a, b):
    assert len(a) == len(b)
    for ta, tb in zip(a, b, strict=True):
        if isinstance(ta, dict):
            assert ta.keys() == tb.keys()
            _assert_same(tuple(ta.values()), tuple(tb[k] for k in ta))
            continue
        assert ta.dtype == tb.dtype and ta.shape == tb.shape, (ta.dtype, tb.dtype, ta.shape,
                                                               tb.shape)
        np.testing.assert_array_equal(ta, tb)


def _items(x, y=None, w=None):
    if y is None:
        return list(x)
    if w is None:
        return list(zip(x, y, strict=True))
    return list(zip(x, y, w, strict=True))


# --------------------------------------------------------------------------- PadCollate


@pytest.mark.parametrize("padding", ["post", "pre"])
@pytest.mark.parametrize(
    ("targets", "weights"),
    [("none", None)] + [(t, w) for t in ("sequence", "timestep")
                        for w in (None, "array", "timestep", "timestep_mean")],
)
def test_loader_batches_equal_bucketed_dataset(padding, targets, weights):
    """Every batch of DataLoader + PadCollate is bucketed_dataset's batch for the same plan:
    same values, dtypes and shapes, for each targets kind and weight mode."""
    x, y_seq, y_step = _data(37)
    y = {"none": None, "sequence": y_seq, "timestep": y_step}[targets]
    w_arr = np.linspace(0.5, 2.0, len(x))
    pad_to = "batch" if padding == "post" else 40
    kw = dict(padding=padding, value=-1, pad_to=pad_to)
    lengths = sp.sequence_lengths(x)
    ds = sp.bucketed_dataset(
        x, y, sampler=sp.BucketSampler(lengths, batch_size=4, seed=3),
        sample_weight=w_arr if weights == "array" else weights,
        options=sp.Options(reshuffle_each_iteration=False), **kw,
    )
    collate = PadCollate(sample_weight=None if weights == "array" else weights,
                         targets="step" if targets == "timestep" else "auto", **kw)
    loader = DataLoader(_items(x, y, w_arr if weights == "array" else None),
                        batch_sampler=sp.BucketSampler(lengths, batch_size=4, seed=3),
                        collate_fn=collate)
    got = [_np(b) for b in loader]
    want = [_np(tuple(t.numpy() for t in (b if isinstance(b, tuple) else (b,)))) for b in ds]
    assert len(got) == len(want) == 10
    for a, b in zip(got, want, strict=True):
        assert all(isinstance(t, np.ndarray) for t in a)
        _assert_same(a, b)


@pytest.mark.parametrize(
    ("targets", "weights", "padding"),
    [("none", None, "post"), ("sequence", None, "pre"), ("sequence", "array", "post"),
     ("timestep", None, "post"), ("timestep", "timestep_mean", "pre")],
)
def test_pad_collate_fill_rows_equal_bucketed_dataset(targets, weights, padding):
    """PadCollate(data_parallel=k) tops every batch up as bucketed_dataset does with
    Options(data_parallel=k): the same real rows, weights and scales, and fill rows of one
    step (a step of the data: the batch's first, where bucketed_dataset shows the dataset's
    first), target 0, weight 0."""
    x, y_seq, y_step = _data(37, seed=2)
    y = {"none": None, "sequence": y_seq, "timestep": y_step}[targets]
    w_arr = np.linspace(0.5, 2.0, len(x))
    lengths = sp.sequence_lengths(x)
    kw = dict(padding=padding, value=-1, pad_to="batch")
    ds = sp.bucketed_dataset(
        x, y, sampler=sp.BucketSampler(lengths, batch_size=5, seed=3),
        sample_weight=w_arr if weights == "array" else weights,
        options=sp.Options(reshuffle_each_iteration=False, data_parallel=4), **kw,
    )
    collate = PadCollate(sample_weight=None if weights == "array" else weights,
                         targets="step" if targets == "timestep" else "auto",
                         data_parallel=4, return_tensors="np", **kw)
    loader = DataLoader(_items(x, y, w_arr if weights == "array" else None),
                        batch_sampler=sp.BucketSampler(lengths, batch_size=5, seed=3),
                        collate_fn=collate)
    got = [_np(b) for b in loader]
    want = [_np(tuple(t.numpy() for t in (b if isinstance(b, tuple) else (b,)))) for b in ds]
    assert len(got) == len(want) and any(a[0].shape[0] != 5 for a in got)
    for (xa, *rest_a), (xb, *rest_b), idx in zip(got, want, sp.BucketSampler(
            lengths, batch_size=5, seed=3).batches(0), strict=True):
        assert xa.shape[0] % 4 == 0 and xa.shape == xb.shape
        real = len(idx)
        _assert_same((xa[:real], *rest_a), (xb[:real], *rest_b))  # targets, weights: all rows
        first = x[idx[0]][0]  # the batch's first step, at the far end of the pre side
        fill = xa[real:]
        np.testing.assert_array_equal(fill[:, -1 if padding == "pre" else 0], first)
        assert np.count_nonzero(fill != -1) == fill.shape[0]


def test_pad_collate_data_parallel_auto_reads_keras_and_refuses_several_processes(
        monkeypatch):
    from seqprep.running import _data_parallel

    class Dist:
        device_mesh = type("Mesh", (), {"shape": (2,), "axis_names": ["batch"]})()
        batch_dim_name, num_processes, auto_shard_dataset = "batch", 1, False

    items = [([1, 2], 0.5), ([3], 1.5), ([4, 5, 6], 2.5)]
    collate = PadCollate(data_parallel="auto", return_tensors="np")
    assert len(collate(items)) == 2  # no layout: the batch as fetched, no weights
    monkeypatch.setattr(_data_parallel, "_keras_distribution", lambda: Dist())
    xb, yb, wb = collate(items)  # a layout set after the collate was built counts
    assert xb.shape == (4, 3) and wb.tolist() == pytest.approx([4 / 3] * 3 + [0])
    Dist.num_processes = 2
    with pytest.raises(ValueError, match="over 2 processes"):
        collate(items)
    with pytest.raises(ValueError, match='`data_parallel` must be "auto", None or a positive'):
        PadCollate(data_parallel="all")
    with pytest.raises(ValueError, match="`data_parallel` must be at least 1"):
        PadCollate(data_parallel=0)


def test_loader_plays_a_fresh_epoch_each_pass_with_every_example_once():
    x, y, _ = _data(50, seed=1)
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=6, seed=11)
    loader = DataLoader(_items(x, y), batch_sampler=sampler, collate_fn=PadCollate())
    assert len(loader) == len(sampler)
    orders = []
    for epoch in range(3):
        planned = sp.BucketSampler(sp.sequence_lengths(x), batch_size=6, seed=11).batches(epoch)
        batches = list(loader)
        assert len(batches) == len(planned)
        for (xb, yb), idx in zip(batches, planned, strict=True):
            assert isinstance(xb, torch.Tensor) and isinstance(yb, torch.Tensor)
            want = sp.pad_sequences([x[i] for i in idx], padding="post", dtype=np.int32)
            np.testing.assert_array_equal(xb.numpy(), want)
            np.testing.assert_array_equal(yb.numpy(), y[idx].astype(np.float32))
        order = np.concatenate(planned)
        assert sorted(order.tolist()) == list(range(len(x)))
        orders.append(order.tolist())
    assert orders[0] != orders[1] != orders[2]
    assert sampler.epoch == 3


@st.composite
def _batches(draw):
    n = draw(st.integers(1, 6), label="n")
    lengths = draw(st.lists(st.integers(0, 7), min_size=n, max_size=n), label="lengths")
    step = draw(st.sampled_from([(), (2,)]), label="step_shape")
    kind = draw(st.sampled_from(["int64", "float64", "float32"]), label="dtype")
    rng = np.random.default_rng(draw(st.integers(0, 2**16), label="seed"))
    xs = [(rng.integers(1, 9, (k, *step)) if kind == "int64" else
           rng.random((k, *step)) + 1).astype(kind) for k in lengths]
    ys = [rng.integers(0, 3, k) for k in lengths]
    padding = draw(st.sampled_from(["pre", "post"]), label="padding")
    longest = max(lengths)
    pad_to = draw(st.sampled_from(["batch", longest + 2] if longest else ["batch", 3]),
                  label="pad_to")
    mean = draw(st.booleans(), label="timestep_mean")
    return xs, ys, padding, pad_to, mean


@given(_batches())
def test_pad_collate_is_pad_sequences_with_the_weight_formula(case):
    """x and per-step y are pad_sequences of the batch's sequences; the weights are
    sequence_weights; inputs are never modified and outputs never share their memory."""
    xs, ys, padding, pad_to, mean = case
    before = [a.copy() for a in xs]
    collate = PadCollate(padding=padding, value=-3, pad_to=pad_to, targets="step",
                         sample_weight="timestep_mean" if mean else "timestep")
    xb, yb, wb = (t.numpy() for t in collate(_items(xs, ys)))
    lengths = sp.sequence_lengths(xs)
    width = int(lengths.max()) if pad_to == "batch" else pad_to
    dtype = np.float32 if xs[0].dtype == np.float64 else xs[0].dtype
    want_x = sp.pad_sequences(xs, maxlen=width or None, dtype=dtype, padding=padding, value=-3)
    _assert_same((xb,), (want_x.reshape(len(xs), width, *xs[0].shape[1:]),))
    want_y = sp.pad_sequences(ys, maxlen=width or None, dtype=np.int64, padding=padding)
    _assert_same((yb,), (want_y.reshape(len(xs), width),))
    want_w = sp.sequence_weights(lengths, width, padding, normalize=mean)
    np.testing.assert_allclose(wb, want_w, rtol=1e-6)
    assert wb.dtype == np.float32
    xb[...] = 0
    for a, b in zip(xs, before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pad_collate_scales_timestep_weights_by_item_weights():
    xs, ys = [[1, 2, 3], [4]], [[0, 1, 1], [1]]
    collate = PadCollate(sample_weight="timestep", targets="step", return_tensors="np")
    _, _, wb = collate(_items(xs, ys, [2.0, 0.5]))
    np.testing.assert_array_equal(wb, [[2, 2, 2], [0.5, 0, 0]])
    _, _, wb = PadCollate(return_tensors="np")(_items(xs, [0, 1], [2.0, 0.5]))
    np.testing.assert_array_equal(wb, [2.0, 0.5])


def test_pad_collate_width_grid_and_truncation():
    xs = [np.arange(1, 6), np.arange(1, 3)]
    xb = PadCollate(pad_to=[3, 8, 16], return_tensors="np")(xs)
    assert xb.shape == (2, 8)
    xb = PadCollate(max_length=3, truncating="pre", return_tensors="np")(xs)
    np.testing.assert_array_equal(xb, [[3, 4, 5], [1, 2, 0]])
    xb = PadCollate(max_length=3, return_tensors="np")(xs)
    np.testing.assert_array_equal(xb, [[1, 2, 3], [1, 2, 0]])


def test_pad_collate_dict_fields_each_padded_to_its_own_width():
    rng = np.random.default_rng(0)
    src = [rng.integers(1, 9, k) for k in (5, 2, 7)]
    dec = [rng.integers(1, 9, k) for k in (3, 4, 1)]
    out = [rng.integers(1, 9, len(d)) for d in dec]
    items = [({"encoder": s, "decoder": d}, o) for s, d, o in zip(src, dec, out, strict=True)]
    collate = PadCollate(sample_weight="timestep", value={"encoder": 0, "decoder": -1},
                         targets="step",
                         padding={"encoder": "pre", "decoder": "post"}, return_tensors="np")
    xb, yb, wb = collate(items)
    _assert_same((xb["encoder"],), (sp.pad_sequences(src, padding="pre", dtype=np.int64),))
    _assert_same((xb["decoder"],), (sp.pad_sequences(dec, padding="post", value=-1,
                                                     dtype=np.int64),))
    # Per-step targets align with the field of their lengths; weights follow its padding.
    _assert_same((yb,), (sp.pad_sequences(out, padding="post", dtype=np.int64),))
    np.testing.assert_array_equal(wb, sp.sequence_weights([3, 4, 1]))
    # Fields of equal lengths in this batch: per-step targets need `targets_field`.
    same = [({"a": d, "b": d}, o) for d, o in zip(dec, out, strict=True)]
    with pytest.raises(ValueError, match="targets_field"):
        PadCollate(targets="step", return_tensors="np")(same)
    xb, yb = PadCollate(targets="step", targets_field="b", return_tensors="np")(same)
    assert yb.shape == (3, 4)


def test_pad_collate_returns_numpy_without_torch_and_imports_neither_tf_nor_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import seqprep as sp\n"
        "xb, yb = sp.PadCollate(return_tensors='np')([([1, 2], 0), ([3], 1)])\n"
        "assert xb.tolist() == [[1, 2], [3, 0]], xb\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
        "try:\n"
        "    sp.PadCollate()\n"
        "except ImportError as e:\n"
        "    assert \"return_tensors='np'\" in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(sp.__file__))}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("batch", "kwargs", "match"),
    [
        ([], {}, "non-empty list of items"),
        ([([1], 0), [2]], {}, "same form"),
        ([([1], 0, 1.0, 2)], {}, "tuple of 4 elements"),
        ([({"a": [1]}, 0), ({"b": [1]}, 0)], {}, "fields of the first"),
        ([[1.5, 2.0]], {"dtype": "int32"}, r"x\[0\]\[0\]"),
        ([[1, 2, 3]], {"pad_to": 2}, "pad_to`=2 is shorter"),
        ([[1, 2, 3]], {"pad_to": [1, 2]}, "widest width, 2"),
        ([[1.0, np.nan]], {}, "NaN"),
        ([([1], np.nan)], {}, "NaN"),
        ([([1], 0, np.inf)], {}, "finite"),
        ([([1], "cat")], {}, "integer ids"),
        ([({"a": [1, 2]}, 0)], {"padding": {"b": "pre"}}, "does not have"),
        ([[1, 2]], {"targets_field": "a"}, "has no fields"),
        ([[1, 2]], {"value": 1.5}, "value"),
        ([([1, 2], [0, 1]), ([3], [1])], {}, 'targets="step"'),
        ([({"a": [1, 2]}, [0, 1, 1])], {"targets": "step"}, "no field"),
    ],
)
def test_pad_collate_refuses_bad_batches(batch, kwargs, match):
    with pytest.raises(ValueError, match=match):
        PadCollate(return_tensors="np", **kwargs)(batch)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"padding": "mid"}, ValueError, "padding"),
        ({"pad_to": "bucket"}, ValueError, "pad_to"),
        ({"pad_to": [3, 2]}, ValueError, "ascending"),
        ({"return_tensors": "tf"}, ValueError, "return_tensors"),
        ({"sample_weight": "steps"}, ValueError, "sample_weight"),
        ({"dtype": "nope"}, TypeError, "dtype"),
        ({"max_length": 0}, ValueError, "max_length"),
    ],
)
def test_pad_collate_refuses_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        PadCollate(**kwargs)


def test_per_field_options_default_for_missing_fields_and_refuse_plain_items():
    items = [({"a": [1, 2], "b": [3]}, 0), ({"a": [4], "b": [5, 6]}, 1)]
    xb, _ = PadCollate(padding={"a": "pre"}, value={"b": -1}, return_tensors="np")(items)
    np.testing.assert_array_equal(xb["a"], [[1, 2], [0, 4]])
    np.testing.assert_array_equal(xb["b"], [[3, -1], [5, 6]])
    with pytest.raises(TypeError, match="one sequence collection"):
        PadCollate(padding={"a": "pre"}, return_tensors="np")([[1, 2]])


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize(("kind", "num_workers"), [("bucket", 0), ("bucket", 2), ("pack", 0)])
def test_stateful_dataloader_resumes_mid_epoch_with_the_remaining_batches(kind, num_workers):
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    x, y, _ = _data(40, seed=2)
    lengths = sp.sequence_lengths(x)

    def loader():
        if kind == "pack":
            sampler = sp.PackSampler(lengths, batch_size=2, seed=5)
            return sdl.StatefulDataLoader(
                RowItems(_items(x, y)), batch_sampler=sampler,
                collate_fn=PackCollate(sampler, return_tensors="np"), num_workers=num_workers)
        return sdl.StatefulDataLoader(
            _items(x, y), batch_sampler=sp.BucketSampler(lengths, batch_size=4, seed=5),
            collate_fn=PadCollate(return_tensors="np"), num_workers=num_workers)

    whole = loader()
    full = [list(whole), list(whole)]  # two epochs, uninterrupted
    first = loader()
    it = iter(first)
    head = [next(it) for _ in range(3)]
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(full[0]) > 3
    for a, b in zip(head + rest, full[0], strict=True):
        _assert_same(_np(a), _np(b))
    for a, b in zip(list(resumed), full[1], strict=True):  # and the next epoch is epoch 1
        _assert_same(_np(a), _np(b))


# --------------------------------------------------------------------------- sharding


def test_shards_by_rank_cover_every_example_once_with_equal_batch_counts(monkeypatch):
    x, y, _ = _data(45, seed=4)
    lengths = sp.sequence_lengths(x)
    seen = []
    counts = set()
    for rank in range(3):
        import torch.distributed as dist
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_world_size", lambda group=None: 3)
        monkeypatch.setattr(dist, "get_rank", lambda group=None, r=rank: r)
        shard = shard_by_rank()
        assert shard == {"num_shards": 3, "shard_index": rank}
        sampler = sp.BucketSampler(lengths, batch_size=4, seed=9, **shard)
        sampler.set_epoch(1)  # DistributedSampler's convention
        loader = DataLoader(_items(x, y), batch_sampler=sampler,
                            collate_fn=PadCollate(return_tensors="np"))
        batches = list(loader)
        counts.add(len(batches))
        for idx, (xb, _) in zip(sampler.batches(1), batches, strict=True):
            assert xb.shape[0] == len(idx)
            seen.extend(idx.tolist())
    assert len(counts) == 1
    assert sorted(seen) == list(range(len(x)))


def test_shard_by_rank_is_one_shard_without_a_process_group():
    assert shard_by_rank() == {"num_shards": 1, "shard_index": 0}


def test_shard_by_rank_reads_a_real_process_group():
    import socket

    import torch.distributed as dist

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1)
    try:
        assert shard_by_rank() == {"num_shards": 1, "shard_index": 0}
        assert shard_by_rank(dist.group.WORLD) == {"num_shards": 1, "shard_index": 0}
    finally:
        dist.destroy_process_group()


def test_collates_survive_pickling_for_spawned_workers():
    import pickle

    items = [([1, 2, 3], 0.5), ([4], 1.5)]
    collate = PadCollate(padding="pre", return_tensors="np")
    collate(items)  # fills its per-structure option cache
    _assert_same(_np(pickle.loads(pickle.dumps(collate))(items)), _np(collate(items)))
    sampler = sp.PackSampler([3, 1], batch_size=1, shuffle=False)
    pack = PackCollate(sampler, return_tensors="np")
    rows = [[items[0]], [items[1]]]
    _assert_same(_np(pickle.loads(pickle.dumps(pack))(rows)), _np(pack(rows)))


# --------------------------------------------------------------------------- packing


@pytest.mark.parametrize("targets", ["none", "sequence", "timestep"])
def test_pack_collate_equals_packed_dataset(targets):
    x, y_seq, y_step = _data(30, seed=6, max_len=12)
    y = {"none": None, "sequence": y_seq, "timestep": y_step}[targets]
    w = np.linspace(0.5, 2.0, len(x)) if targets == "sequence" else None
    lengths = sp.sequence_lengths(x)
    ds = sp.packed_dataset(x, y, sampler=sp.PackSampler(lengths, batch_size=3, seed=1),
                           sample_weight=w,
                           options=sp.Options(epochs=2, reshuffle_each_iteration=False))
    sampler = sp.PackSampler(lengths, batch_size=3, seed=1)
    loader = DataLoader(RowItems(_items(x, y, w)), batch_sampler=sampler,
                        collate_fn=PackCollate(sampler, targets="step" if targets == "timestep"
                                               else "auto"))
    got = [_np(b) for b in loader] + [_np(b) for b in loader]
    want = [_np(tuple(np.asarray(t) if not isinstance(t, dict) else
                      {k: v.numpy() for k, v in t.items()}
                      for t in (b if isinstance(b, tuple) else (b,)))) for b in ds]
    assert len(got) == len(want) == 2 * len(sampler)
    for a, b in zip(got, want, strict=True):
        _assert_same(a, b)


def test_pack_collate_refuses_items_that_are_not_rows():
    sampler = sp.PackSampler([2, 1], batch_size=1)
    with pytest.raises(ValueError, match="RowItems"):
        PackCollate(sampler, return_tensors="np")([([1, 2], 0)])
    with pytest.raises(TypeError, match="PackSampler"):
        PackCollate(sp.BucketSampler([2, 1], batch_size=1))
    with pytest.raises(ValueError, match="row_length=2"):
        PackCollate(sampler, return_tensors="np")([[[1, 2, 3]]])
    with pytest.raises(ValueError, match="max_segments_=1"):
        PackCollate(sampler, return_tensors="np")([[[1], [3]]])


# --------------------------------------------------------------------------- Keras


class _Recording:
    """A map-style dataset that records the indices it is asked for."""

    def __init__(self, items):
        self.items, self.asked = items, []

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.asked.append(int(i))
        return self.items[i]


@pytest.mark.backend
def test_keras_fits_on_the_loader_with_a_fresh_order_each_epoch(token_model):
    import keras

    x, _, _ = _data(48, seed=7, max_len=16)
    y = np.array([float(a.sum() % 2) for a in x], np.float32)
    data = _Recording(_items(x, y))
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=8, seed=2)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=PadCollate(dtype="int32"))
    keras.utils.set_random_seed(0)
    model = token_model(50, 8, body="mean")
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(loader, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"])) and len(history.history["loss"]) == 2
    n = len(x)
    epochs = [data.asked[-2 * n : -n], data.asked[-n:]]  # before: Keras's peek at the shapes
    assert [sorted(e) for e in epochs] == [list(range(n))] * 2
    assert epochs[0] != epochs[1]
    assert epochs == [np.concatenate(sampler.batches(e)).tolist() for e in (0, 1)]


# --------------------------------------------------------------------------- real DDP


@pytest.mark.slow
def test_two_ddp_processes_equal_steps_each_example_once_fresh_order(tmp_path):
    """Two gloo processes on localhost, each a DataLoader over its shard of a BucketSampler
    (shard_by_rank, set_epoch) with PadCollate, train a GRU under DistributedDataParallel:
    the same step count on both ranks every epoch (a rank with a step more would hang in the
    gradient all-reduce), every example exactly once across the ranks per epoch, a fresh order
    each epoch, and the same weights on both ranks at the end."""
    import json

    from _processes import free_port, run_processes

    port = free_port()
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.path.dirname(here), "OMP_NUM_THREADS": "1"}
    run_processes([[sys.executable, os.path.join(here, "_torch_ddp_worker.py"), str(port),
                    str(rank), "2", str(tmp_path / f"{rank}.json")] for rank in range(2)],
                  env=env, cwd=tmp_path, timeout=180)
    a, b = (json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(2))
    assert (a["num_shards"], a["shard_index"], b["shard_index"]) == (2, 0, 1)
    assert a["steps"] == b["steps"] and min(a["steps"]) > 0
    for epoch in range(len(a["ids"])):
        assert sorted(a["ids"][epoch] + b["ids"][epoch]) == list(range(53))
    for rank in (a, b):
        assert rank["ids"][0] != rank["ids"][1] != rank["ids"][2]  # a fresh order each epoch
    for u, v in zip(a["weights"], b["weights"], strict=True):
        np.testing.assert_array_equal(u, v)
