"""Data parallelism: batches topped up with weight-0 fill rows to a multiple of the device count.

* the fill rule in numpy (:func:`seqprep.planning._fill.fill_batches`), on Hypothesis-drawn
  plans: every example once (across processes too), fill rows only at the end, row counts
  divisible, the scale ``B' / B``;
* the fill row's one step (:func:`seqprep.inputs._kernel.fill_step`), on Hypothesis-drawn
  data: the first finite step that is not padding;
* the weight factors of several processes' parts of a global batch (numpy,
  ``Layout.fill_plan``): Keras's loss over the parts together is the unfilled batch's;
* the executors with ``data_parallel=k`` on this process's backend: ids exactly once, fill
  rows of one step (then padding) with target 0 and weight 0, Keras's loss of every filled
  batch equal to the loss of the unfilled one for each weight mode, and a masked-mean model
  trained by ``fit_per_length`` equal to the unfilled run (finite: no 0 / 0);
* ``keras.distribution.DataParallel`` on two JAX CPU devices (a subprocess: the device count
  is fixed when JAX starts): ``bucketed_dataset`` (a partial batch, a token budget with a
  masked mean, per-step targets behind a mask, also with a per-sequence weight array),
  ``bucketed_pydataset``, ``grain_dataset``, ``packed_dataset`` and ``fit_per_length`` (its
  exact-length groups with a weight array too) train to the weights of the one-device run of
  the same plan within 1e-5, and so does a PyTorch ``DataLoader`` with
  ``PadCollate(data_parallel="auto")``;
* two ``jax.distributed`` processes on localhost (one launch for all of this):
  ``bucketed_dataset`` and ``grain_dataset`` with equal steps, equal widths, every example
  exactly once across the processes, and two epochs ending with the weights of the
  one-device run of the same global plan (per-step weights normalised over the whole global
  batch, not over each process's half); ``sp.predict`` and ``sp.evaluate``, each process
  running its rows of every batch, returning the whole result (equal on both processes and to
  one device's), and the refusals (different plans, ``auto_shard_dataset=True``);
* the gather of those inference outputs in-process (faked processes): every global batch
  from each process's real rows, in plan order.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _processes import free_port, run_processes  # tests/ is on sys.path
from hypothesis import given
from hypothesis import strategies as st

import seqprep as sp
from seqprep.planning._fill import fill_batches, filled_sizes
from seqprep.running._data_parallel import Layout, resolve_data_parallel

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- the rule (numpy)


@st.composite
def _plans(draw):
    sizes = draw(st.lists(st.integers(0, 13), min_size=1, max_size=12), label="batch sizes")
    n = sum(sizes)
    order = draw(st.permutations(range(n)), label="order")
    splits = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return np.asarray(order, np.int64), splits


@given(plan=_plans(), processes=st.integers(1, 4), per_process=st.integers(1, 4))
def test_fill_rule_every_example_once_fill_rows_last(plan, processes, per_process):
    rows, splits = plan
    k = processes * per_process
    fill = int(rows.size)  # the table's zero-length sequence sits after the n examples
    sizes = np.diff(splits)
    parts = [fill_batches(rows, splits, multiple_of=k, fill_index=fill,
                          num_processes=processes, process_index=p) for p in range(processes)]
    expected = filled_sizes(sizes, k)
    assert np.all(expected % k == 0) and np.all(expected >= sizes)
    assert np.all(expected - np.maximum(sizes, 1) < k)  # the fewest rows (k for an empty one)
    for part in parts:
        # Every process: the same step count and the same rows per step.
        np.testing.assert_array_equal(part.sizes, expected // processes)
        scales = np.where(sizes > 0, expected / np.maximum(sizes, 1), 0)
        np.testing.assert_allclose(part.scales, scales)
    for b in range(sizes.size):
        # The global batch is the processes' parts side by side: the plan's batch, then fills.
        glued = np.concatenate([
            part.rows[np.cumsum(part.sizes)[b] - part.sizes[b]: np.cumsum(part.sizes)[b]]
            for part in parts])
        np.testing.assert_array_equal(glued[: sizes[b]], rows[splits[b]: splits[b + 1]])
        assert np.all(glued[sizes[b]:] == fill)
    real = np.concatenate([part.rows[part.rows != fill] for part in parts])
    np.testing.assert_array_equal(np.sort(real), np.arange(rows.size))  # exactly once


@given(steps=st.lists(st.sampled_from([0.0, 1.0, -2.5, float("nan"), float("inf")]),
                     max_size=30),
       features=st.integers(1, 3), chunk=st.integers(1, 8))
def test_fill_step_is_the_first_finite_step_that_is_not_padding(steps, features, chunk):
    from seqprep.inputs._kernel import fill_step, with_pad_row

    values = np.asarray(steps, np.float32).reshape(-1, 1)
    values = np.concatenate([values, np.zeros((values.shape[0], features - 1), np.float32)],
                            axis=1)
    want = next((i for i, v in enumerate(steps) if v != 0 and np.isfinite(v)), None)
    assert fill_step(with_pad_row(values), chunk=chunk) == want  # chunks change nothing


def test_fill_rule_refuses_bad_arguments():
    rows, splits = np.array([0, 1, 2]), np.array([0, 3])
    with pytest.raises(ValueError, match="`multiple_of` must be a multiple of `num_processes`"):
        fill_batches(rows, splits, multiple_of=3, fill_index=3, num_processes=2)
    with pytest.raises(ValueError, match="`process_index` must be below"):
        fill_batches(rows, splits, multiple_of=2, fill_index=3, num_processes=2, process_index=2)
    with pytest.raises(ValueError, match="`fill_index`=1 is a planned index"):
        fill_batches(rows, splits, multiple_of=2, fill_index=1)
    with pytest.raises(ValueError, match="`multiple_of` must be at least 1"):
        fill_batches(rows, splits, multiple_of=0, fill_index=3)


# --------------------------------------------------------------------------- executors


def _id_data(n=37, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 12, n)
    # Every step of sequence i holds i + 1; 0 is padding: a row tells which example it is.
    x = [np.full(int(length), i + 1, np.int32) for i, length in enumerate(lengths)]
    return lengths, x, rng.normal(size=n).astype(np.float32)


def _row_ids(xb):
    return [int(r[r > 0][0]) - 1 if np.any(r > 0) else -1 for r in np.asarray(xb)]


@pytest.mark.parametrize("budget, padding", [({"batch_size": 10}, "pre"),
                                             ({"max_tokens": 40}, "post")])
def test_bucketed_dataset_ids_exactly_once_and_fill_rows_weigh_zero(budget, padding):
    lengths, x, y = _id_data()
    sampler = sp.BucketSampler(lengths, boundaries=[4, 8], seed=2, **budget)
    ds = sp.bucketed_dataset(x, y, sampler=sampler, options=sp.Options(data_parallel=4),
                             pad_to="batch", padding=padding)
    for epoch in range(2):  # every pass plays the next epoch
        ids = []
        plan = sampler.plan(epoch)
        for b, (xb, yb, wb) in enumerate(ds.as_numpy_iterator()):
            xb, yb, wb = np.asarray(xb), np.asarray(yb), np.asarray(wb)
            assert xb.shape[0] % 4 == 0
            real = plan[b].size
            row_ids = _row_ids(xb[:real])
            fill = np.arange(xb.shape[0]) >= real
            # A fill row: one step of the data that is not padding (the first: sequence 0's,
            # at the padded side's far end), then padding; target 0 and weight 0.
            step = xb.shape[1] - 1 if padding == "pre" else 0
            np.testing.assert_array_equal(xb[fill][:, step], 1)
            assert np.count_nonzero(xb[fill]) == fill.sum()
            assert np.all(yb[fill] == 0) and np.all(wb[fill] == 0)
            np.testing.assert_array_equal(row_ids, plan[b])  # the plan's order
            np.testing.assert_allclose(wb[~fill], xb.shape[0] / real, rtol=1e-6)
            np.testing.assert_array_equal(yb[~fill], y[plan[b]])
            ids.extend(i for i in row_ids if i >= 0)
        np.testing.assert_array_equal(np.sort(ids), np.arange(len(x)))


def _keras_loss(loss, yb, pred, wb=None):
    return float(loss(yb, pred, sample_weight=wb))


@pytest.mark.parametrize(
    "sample_weight, reduction",
    [(None, "sum_over_batch_size"), ("per-sequence", "sum_over_batch_size"),
     (None, "mean_with_sample_weight"), ("per-sequence", "mean_with_sample_weight")],
)
def test_filled_batch_loss_equals_unfilled_per_sequence(sample_weight, reduction):
    import keras

    lengths, x, y = _id_data(n=23)
    weights = np.linspace(0.5, 2.0, len(x)).astype(np.float32)
    sw = weights if sample_weight else None
    sampler = sp.BucketSampler(lengths, boundaries=[6], batch_size=7, shuffle=False)
    one = list(sp.bucketed_dataset(x, y, sampler=sampler, sample_weight=sw,
                                   options=sp.Options(data_parallel=None)).as_numpy_iterator())
    four = list(sp.bucketed_dataset(x, y, sampler=sampler, sample_weight=sw,
                                    options=sp.Options(data_parallel=4)).as_numpy_iterator())
    loss = keras.losses.MeanSquaredError(reduction=reduction)
    rng = np.random.default_rng(1)
    for a, b in zip(one, four, strict=True):
        pred = rng.normal(size=(b[0].shape[0], 1)).astype(np.float32)
        real = a[0].shape[0]
        want = _keras_loss(loss, a[1], pred[:real], a[2] if len(a) == 3 else None)
        assert _keras_loss(loss, b[1], pred, b[2]) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("mode", ["timestep", "timestep_mean", None])
def test_filled_batch_loss_equals_unfilled_per_step(mode):
    import keras

    lengths, x, _ = _id_data(n=19)
    y = [np.arange(length, dtype=np.float32)[:, None] for length in lengths]
    sampler = sp.BucketSampler(lengths, boundaries=[6], batch_size=6, shuffle=False)
    one = list(sp.bucketed_dataset(x, y, sampler=sampler, sample_weight=mode,
                                   options=sp.Options(data_parallel=None)).as_numpy_iterator())
    four = list(sp.bucketed_dataset(x, y, sampler=sampler, sample_weight=mode,
                                    options=sp.Options(data_parallel=4)).as_numpy_iterator())
    # The loss each recipe of "Weights and masked losses" is meant with: "timestep" weights
    # with mean_with_sample_weight, "timestep_mean" with the default reduction, and no
    # weights with a Keras mask reaching the loss (the mask is the real steps).
    reduction = "mean_with_sample_weight" if mode == "timestep" else "sum_over_batch_size"
    loss = keras.losses.MeanSquaredError(reduction=reduction)
    rng = np.random.default_rng(2)
    for a, b in zip(one, four, strict=True):
        assert b[0].shape[0] % 4 == 0 and len(b) == 3  # a weight column once filled
        pred = rng.normal(size=b[1].shape).astype(np.float32)
        real = a[0].shape[0]
        if mode is None:
            masked = keras.ops.convert_to_tensor(pred)
            masked._keras_mask = keras.ops.convert_to_tensor(b[0] != 0)
            unfilled = keras.ops.convert_to_tensor(pred[:real])
            unfilled._keras_mask = keras.ops.convert_to_tensor(a[0] != 0)
            want, got = float(loss(a[1], unfilled)), float(loss(b[1], masked, b[2]))
        else:
            want = _keras_loss(loss, a[1], pred[:real], a[2])
            got = _keras_loss(loss, b[1], pred, b[2])
        assert got == pytest.approx(want, rel=1e-5)


def _cat(parts):
    """The processes' parts of a batch (arrays, or dicts of them) made one global batch."""
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def _global_batches(one, filled, plan, widths, processes, per_process):
    """For each batch ``b`` of ``plan``: ``b``, the batch as one device gathers it from
    ``one`` (x, y, w), and the global batch that ``processes`` processes of ``per_process``
    devices each make from ``filled`` with the factors of ``Layout.fill_plan`` (their parts
    concatenated in process order), with those parts."""
    from seqprep.inputs import _stage as _inputs

    k = processes * per_process
    parts = [Layout(k, processes, p).fill_plan(filled, plan.rows, plan.splits, widths)
             for p in range(processes)]
    for b in range(len(plan)):
        alone = _inputs.gather(one, plan.rows[plan.splits[b]:plan.splits[b + 1]], widths[b])
        got = [_inputs.gather(filled, rows[splits[b]:splits[b + 1]], widths[b],
                              scales=scales[b]) for rows, splits, scales in parts]
        yield b, alone, tuple(_cat([g[i] for g in got]) for i in range(3)), got


@pytest.mark.parametrize("processes, per_process", [(2, 1), (2, 2), (3, 1)])
@pytest.mark.parametrize("mode", ["timestep", "timestep_mean", "sequence", "two fields"])
def test_processes_parts_of_a_batch_give_the_one_device_loss(mode, processes, per_process):
    """Each process gathers its rows of every global batch with the factors of
    ``Layout.fill_plan`` (counted over the global batch); Keras's loss over the global batch
    the processes' parts make (what ``jax.distributed`` computes) is the loss of the unfilled
    one-device batch, however unevenly the real steps fall on the processes."""
    import keras

    from seqprep.inputs import _stage as _inputs

    lengths, x, y = _id_data(n=29, seed=3)
    weights = np.linspace(0.5, 2.0, len(x)).astype(np.float32)
    fields, step_lengths = None, lengths
    if mode == "sequence":  # per-sequence targets with per-sequence weights
        y_fit, sw = y, weights
    else:  # "timestep": behind a mask (the divisor is the valid steps); "timestep_mean": none
        if mode == "two fields":  # per-step targets on a second field of its own widths
            step_lengths = lengths % 5 + 1
            x = {"a": x, "b": [np.full(int(n), i + 1, np.int32)
                               for i, n in enumerate(step_lengths)]}
            fields = "b"
        y_fit = [np.arange(n, dtype=np.float32)[:, None] for n in step_lengths]
        sw = "timestep" if mode == "timestep" else "timestep_mean"
    sampler = sp.BucketSampler(lengths, boundaries=[6], batch_size=7, seed=2)
    plan = sampler.plan(0)
    one = _inputs.prepare(x, y_fit, sw, sampler=sampler, targets_field=fields)
    widths = _inputs.batch_widths(plan, one)
    filled = _inputs.with_fill(one)
    k = processes * per_process
    loss = keras.losses.MeanSquaredError()  # the default reduction, sum_over_batch_size
    rng = np.random.default_rng(4)
    uneven = False
    for b, a, (xb, yb, wb), got in _global_batches(one, filled, plan, widths, processes,
                                                   per_process):
        real_steps = [int(np.count_nonzero(g[2])) for g in got]
        uneven |= len(set(real_steps)) > 1
        assert wb.shape[0] == -(-a[2].shape[0] // k) * k
        pred = rng.normal(size=(*yb.shape[:2], 1)).astype(np.float32)  # (B, 1) or (B, T, 1)
        real = a[2].shape[0]
        if mode == "timestep":  # a Keras mask (the non-padding steps) reaches the loss
            masked = keras.ops.convert_to_tensor(pred)
            masked._keras_mask = keras.ops.convert_to_tensor(xb != 0)
            unfilled = keras.ops.convert_to_tensor(pred[:real])
            unfilled._keras_mask = keras.ops.convert_to_tensor(a[0] != 0)
            want, got_loss = float(loss(a[1], unfilled, a[2])), float(loss(yb, masked, wb))
        else:
            want = _keras_loss(loss, a[1], pred[:real], a[2])
            got_loss = _keras_loss(loss, yb, pred, wb)
        assert got_loss == pytest.approx(want, rel=1e-5), b
    assert uneven  # the processes' parts hold different numbers of real steps (or rows)


def test_pydataset_batches_equal_tf_data_batches():
    lengths, x, y = _id_data()
    sampler = sp.BucketSampler(lengths, boundaries=[5], max_tokens=30, seed=4)
    tf_ds = sp.bucketed_dataset(x, y, sampler=sampler, options=sp.Options(data_parallel=2),
                                pad_to="bucket")
    py_ds = sp.bucketed_pydataset(x, y, sampler=sampler, options=sp.Options(data_parallel=2),
                                  pad_to="bucket")
    a = list(tf_ds.as_numpy_iterator())
    assert len(a) == len(py_ds)
    for i, batch in enumerate(a):
        for u, v in zip(batch, py_ds[i], strict=True):
            np.testing.assert_array_equal(u, v)


def test_data_parallel_one_or_none_changes_nothing():
    lengths, x, y = _id_data(n=11)
    sampler = sp.BucketSampler(lengths, batch_size=4, shuffle=False)
    base = list(sp.bucketed_dataset(x, y, sampler=sampler).as_numpy_iterator())
    for dp in (None, 1):
        got = list(sp.bucketed_dataset(x, y, sampler=sampler, options=sp.Options(data_parallel=dp))
                   .as_numpy_iterator())
        assert len(got) == len(base)
        for u, v in zip(got, base, strict=True):
            assert len(u) == 2
            np.testing.assert_array_equal(u[0], v[0])


@pytest.mark.parametrize(
    "value, error, match",
    [("all", ValueError, r'`data_parallel` must be "auto", None or a positive int'),
     (0, ValueError, "`data_parallel` must be at least 1"),
     (2.0, TypeError, "`data_parallel` must be an integer")],
)
def test_bad_data_parallel(value, error, match):
    lengths, x, y = _id_data(n=5)
    sampler = sp.BucketSampler(lengths, batch_size=2)
    with pytest.raises(error, match=match):
        sp.bucketed_dataset(x, y, sampler=sampler, options=sp.Options(data_parallel=value))


class _FakeDistribution:
    """What seqprep reads of a keras.distribution layout (public attributes only)."""

    def __init__(self, devices, processes, auto_shard=False, axis="batch"):
        self.device_mesh = type("Mesh", (), {"shape": (devices,), "axis_names": ["batch"]})()
        self.batch_dim_name = axis
        self.num_processes = processes
        self.auto_shard_dataset = auto_shard


def test_layout_read_from_keras_distribution(monkeypatch):
    from seqprep.running import _data_parallel
    monkeypatch.setattr(_data_parallel, "_keras_distribution", lambda: _FakeDistribution(4, 1))
    assert resolve_data_parallel("auto", caller="f") == Layout(4, 1, 0)
    monkeypatch.setattr(_data_parallel, "_keras_distribution",
                        lambda: _FakeDistribution(4, 1, axis="model"))
    assert resolve_data_parallel("auto", caller="f") is None  # no batch axis: no filling
    monkeypatch.setattr(_data_parallel, "_keras_distribution",
                        lambda: _FakeDistribution(4, 2, auto_shard=True))
    with pytest.raises(ValueError, match="auto_shard_dataset=False"):
        resolve_data_parallel("auto", caller="bucketed_dataset")
    monkeypatch.setattr(_data_parallel, "_keras_distribution", lambda: _FakeDistribution(4, 2))
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        resolve_data_parallel(3, caller="bucketed_dataset")


def test_keras_distribution_public_api_is_there():
    """What ``data_parallel="auto"`` reads: fails loudly if Keras renames it."""
    import keras

    assert keras.distribution.distribution() is None
    assert resolve_data_parallel("auto", caller="f") is None
    for name in ("batch_dim_name", "device_mesh", "num_processes", "auto_shard_dataset"):
        assert isinstance(getattr(keras.distribution.DataParallel, name), property), name
    for name in ("shape", "axis_names"):
        assert isinstance(getattr(keras.distribution.DeviceMesh, name), property), name


# --------------------------------------------------------------------------- JAX, two devices


def _jax_env(devices=2):
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return env


@pytest.mark.slow
def test_data_parallel_on_two_jax_devices_equals_one_device(tmp_path):
    """bucketed_dataset (batch_size=30 with a partial batch; max_tokens with a masked mean;
    per-step targets behind a mask, with and without a per-sequence weight array),
    bucketed_pydataset, grain_dataset, packed_dataset, a DataLoader with PadCollate and
    fit_per_length (a masked mean; per-step, with and without a weight array) under
    DataParallel on two CPU devices end with the weights of the one-device run of the same
    plan."""
    pytest.importorskip("jax")
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(HERE / "_jax_dp_worker.py"), str(out)],
                          env=_jax_env(), cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["devices"] == 2
    optional = {"pad_collate": "torch", "grain": "grain"}  # cases that need a package
    assert set(result["cases"]) == {
        "batch_size=30", "max_tokens, masked mean", "per-step, masked", "pydataset", "packed",
        "fit_per_length, masked mean", "fit_per_length, step",
        "per-step, weight array, masked", "fit_per_length, step, weight array",
        *(case for case, package in optional.items()
          if importlib.util.find_spec(package) is not None)}
    for name, case in result["cases"].items():
        assert case["divisible"], name  # every batch's rows split over both devices
        assert case["had_fill"], name  # the case exercises fill rows
        assert case["max_weight_diff"] < 1e-5, (name, case)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """What each of two ``jax.distributed`` processes on localhost (one CPU device each, Gloo
    collectives) saw and trained: ``tests/_jax_distributed_worker.py``, run once for the
    tests below."""
    pytest.importorskip("jax")
    tmp_path = tmp_path_factory.mktemp("two_processes")
    port = free_port()
    run_processes([[sys.executable, str(HERE / "_jax_distributed_worker.py"), str(port),
                    str(i), str(tmp_path / f"{i}.json")] for i in range(2)],
                  env=_jax_env(devices=1), cwd=tmp_path, timeout=900)
    return tuple(json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2))


@pytest.mark.slow
def test_two_jax_distributed_processes_each_example_once(two_processes):
    a, b = two_processes
    assert a["devices"] == b["devices"] == 2 and a["local_devices"] == 1
    assert a["steps"] == b["steps"] == len(a["rows"]) > 0  # the same global step count
    assert a["widths"] == b["widths"] and a["rows"] == b["rows"]  # same shapes every step
    ids = a["ids"] + b["ids"]
    assert sorted(ids) == list(range(45))  # every example exactly once, across processes
    # grain_dataset on the same plan: the same steps and shapes, every example once.
    if importlib.util.find_spec("grain") is None:
        return
    assert a["grain_rows"] == b["grain_rows"] == a["rows"]
    assert a["grain_widths"] == b["grain_widths"] == a["widths"]
    assert sorted(a["grain_ids"] + b["grain_ids"]) == list(range(45))
    for u, v in zip(a["weights"], b["weights"], strict=True):  # one model, replicated
        # A masked mean over the fill rows' one step is finite: the weights are too.
        assert np.all(np.isfinite(u))
        np.testing.assert_allclose(u, v, rtol=0, atol=0)


@pytest.mark.slow
def test_two_jax_distributed_processes_train_as_one_device(two_processes):
    """Two epochs under a two-process ``DataParallel`` end with the weights of the one-device
    run of the same global plan: per-step targets ("timestep" behind a mask, "timestep_mean"
    without) whose halves of a batch hold different numbers of real steps, and per-sequence
    targets in odd batches (fill rows only in the second process's half); bucketed_dataset,
    bucketed_pydataset and grain_dataset."""
    a, b = two_processes
    grain = importlib.util.find_spec("grain") is not None  # a case only where installed
    assert set(a["cases"]) == set(b["cases"]) == {
        "timestep, masked", "timestep_mean", "timestep_mean, pydataset",
        "sequence, odd batches", *(["grain, timestep_mean"] if grain else [])}
    for name in ("timestep, masked", "timestep_mean", *(["grain, timestep_mean"] * grain)):
        steps_a, steps_b = a["cases"][name]["real_steps"], b["cases"][name]["real_steps"]
        assert len(steps_a) == len(steps_b) and steps_a != steps_b, name  # equal step counts
    assert any(size % 2 for size in a["odd_sizes"])
    for name in a["cases"]:
        for process in (a, b):
            assert process["cases"][name]["max_weight_diff"] < 1e-5, (name, process["cases"])


@pytest.mark.slow
def test_two_jax_distributed_processes_predict_and_evaluate_as_one_device(two_processes):
    """sp.predict and sp.evaluate under a two-process DataParallel, in batches of 9 rows (a
    fill row in the second process's half of each): both processes run the same steps at the
    same widths, each its half of every batch, and both return the whole result in input
    order, equal to one device's, and the same figures."""
    a, b = (p["inference"] for p in two_processes)
    assert a["shapes"] == b["shapes"] == [[[5, 1], [5, 11, 1]]] * 3  # 27 rows: 3 x (9 + 1)
    assert a["pooled"] == b["pooled"] and a["tagged"] == b["tagged"]  # the same on both
    for p in (a, b):
        assert len(p["pooled"]) == 27 and p["tagged_lengths_ok"]
        assert p["pooled_diff"] <= 1e-6 and p["tagged_diff"] <= 1e-6
        assert set(p["logs"]) == set(p["ref_logs"]) >= {"loss", "pooled_mae", "tagged_mae"}
        for key, value in p["ref_logs"].items():
            assert p["logs"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert a["logs"] == b["logs"]
    for p in (a, b):  # refused on every process alike, with the fix
        assert "Pass the same whole `x`" in p["refused"]["different x"]
        assert "auto_shard_dataset=False" in p["refused"]["auto_shard_dataset"]


def test_gathered_batches_are_every_process_real_rows_in_plan_order(monkeypatch):
    """The bytes each of three processes sends (real rows and indices only, any count) come
    back as every global batch in plan order, dtypes and shapes kept; indices that disagree
    with the plan are refused. The gather itself is faked (in-process)."""
    from seqprep.planning._fill import fill_batches
    from seqprep.planning._inference import InferencePlan
    from seqprep.running import _inference_outputs

    rng = np.random.default_rng(0)
    rows = rng.permutation(11).astype(np.int64)
    splits = np.array([0, 5, 6, 11], np.int64)  # 5, 1 and 5 rows over 3 processes of 2 rows
    plan = InferencePlan(rows, splits, np.array([[3], [2], [4]]), 0)
    per_step = {i: rng.normal(size=(4, 2)).astype(np.float32) for i in range(11)}

    def local(p):
        filled = fill_batches(rows, splits, multiple_of=6, fill_index=11, num_processes=3,
                              process_index=p)
        out_splits = np.concatenate([[0], np.cumsum(filled.sizes)])
        idxs = [filled.rows[out_splits[b]:out_splits[b + 1]] for b in range(3)]
        idxs = [i[i < 11] for i in idxs]
        return [[i.astype(np.int32) * 2, np.stack([per_step[j][: plan.widths[b, 0]] for j in i])
                 if i.size else np.zeros((0, plan.widths[b, 0], 2), np.float32),
                 np.ones((i.size, plan.widths[b, 0]), bool)] for b, i in enumerate(idxs)], idxs

    payloads = []  # what each process sends
    monkeypatch.setattr(_inference_outputs, "_allgather",
                        lambda payload, processes: payloads.append(payload) or [payload])
    for p in range(3):
        with pytest.raises(RuntimeError):  # alone, a process's rows are not the whole batch
            _inference_outputs._gather_batches(*local(p), plan, 1)
    assert [len(payloads[p]) for p in range(3)] != [len(payloads[0])] * 3  # counts differ
    monkeypatch.setattr(_inference_outputs, "_allgather", lambda payload, processes: payloads)
    out = _inference_outputs._gather_batches(*local(0), plan, 3)
    for b in range(3):
        idx = plan.batch(b)
        ids, steps, masks = out[b]
        np.testing.assert_array_equal(ids, idx * 2)
        assert ids.dtype == np.int32 and masks.dtype == bool and masks.all()
        np.testing.assert_array_equal(steps, np.stack([per_step[j][: plan.widths[b, 0]]
                                                       for j in idx]))
    shuffled = InferencePlan(rows[::-1].copy(), splits, plan.widths, 0)
    with pytest.raises(RuntimeError, match="not that batch's examples"):
        _inference_outputs._gather_batches(*local(0), shuffled, 3)


def test_fit_per_length_refuses_a_model_nan_on_a_fill_row_only_when_data_is_all_padding():
    """A fill row shows one step of the data that is not padding; only data with no such
    step leaves it all padding, and then a masked mean over it is 0 / 0: refused."""
    import keras

    model = keras.Sequential([keras.Input((None, 1)), keras.layers.Masking(0.0),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = [np.zeros((n, 1), np.float32) for n in (2, 3, 2, 1, 3)]  # every step the pad value
    with pytest.raises(ValueError, match="non-finite output on a fill row"):
        sp.fit_per_length(model, x, np.ones(5, np.float32), batch_size=2,
                          options=sp.Options(data_parallel=2), verbose=0)


def _masked_mean():
    import keras

    return keras.Sequential([keras.Input((None, 1)), keras.layers.Masking(0.0),
                             keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])


def _masked_rnn():
    import keras

    return keras.Sequential([keras.Input((None, 1)), keras.layers.Masking(0.0),
                             keras.layers.SimpleRNN(2), keras.layers.Dense(1)])


@pytest.mark.parametrize("build", [_masked_rnn,
                                   pytest.param(_masked_mean, marks=pytest.mark.backend)])
def test_fit_per_length_with_fill_rows_trains_as_one_device(build):
    """On this process's backend, data_parallel=4 (fill rows, no mesh) trains to the weights
    of the unfilled run: the fill rows and the weight scale change nothing, and a masked mean
    (0 / 0 on a row of padding only) stays finite."""
    import keras

    lengths, x, y = _id_data(n=21)
    x = [np.asarray(s, np.float32)[:, None] / 21 for s in x]  # ids in (0, 1]: no divergence

    def trained(dp):
        keras.utils.set_random_seed(3)
        model = build()
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        sp.fit_per_length(model, x, y, epochs=2, batch_size=5, group_by=[4, 8],
                          options=sp.Options(data_parallel=dp), verbose=0)
        return model.get_weights()

    for a, b in zip(trained(None), trained(4), strict=True):
        assert np.all(np.isfinite(b))
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("per_step", [False, True])
def test_packed_dataset_fill_rows_are_empty_and_keep_the_loss(per_step):
    import keras

    lengths, x, _ = _id_data(n=29)
    y = ([np.arange(length, dtype=np.float32)[:, None] for length in lengths] if per_step
         else np.linspace(-1, 1, len(x)).astype(np.float32))
    sampler = sp.PackSampler(lengths, batch_size=3, shuffle=True, seed=1)
    one = list(sp.packed_dataset(
        x, y, sampler=sampler,
        options=sp.Options(data_parallel=None, reshuffle_each_iteration=False),
    ).as_numpy_iterator())
    four = list(sp.packed_dataset(
        x, y, sampler=sampler,
        options=sp.Options(data_parallel=4, reshuffle_each_iteration=False),
    ).as_numpy_iterator())
    loss = keras.losses.MeanSquaredError()
    rng = np.random.default_rng(3)
    ids = []
    for (xa, ya, wa), (xb, yb, wb) in zip(one, four, strict=True):
        rows = xa["values"].shape[0]
        assert xb["values"].shape[0] % 4 == 0
        np.testing.assert_array_equal(xb["values"][:rows], xa["values"])
        assert np.all(xb["values"][rows:] == 0) and np.all(xb["segment_ids"][rows:] == 0)
        assert np.all(wb[rows:] == 0)
        ids.extend(int(v) - 1 for v in np.unique(xb["values"]) if v > 0)
        shape = yb.shape if per_step else (*yb.shape, 1)
        pred = rng.normal(size=shape).astype(np.float32)
        target_b = yb if per_step else yb[..., None]
        target_a = ya if per_step else ya[..., None]
        want = float(loss(target_a, pred[:rows], wa))
        assert float(loss(target_b, pred, wb)) == pytest.approx(want, rel=1e-5)
    assert sorted(ids) == list(range(len(x)))


# ------------------------------------------- per-step targets with a per-sequence weight array


def _loss_of(loss, yb, pred, wb, xb, mask):
    """Keras's loss of one batch, with the mask ``mask`` derives from the inputs ``xb`` (None:
    no mask reaches the loss) on the predictions, as the masking layer would put it there."""
    import keras

    pred = keras.ops.convert_to_tensor(pred)
    if mask == "Embedding(mask_zero)":
        pred._keras_mask = keras.layers.Embedding(30, 2, mask_zero=True).compute_mask(xb)
    elif mask == "Masking":
        pred._keras_mask = keras.layers.Masking(0.0).compute_mask(
            keras.ops.convert_to_tensor(xb[..., None].astype(np.float32)))
    return float(loss(yb, pred, wb))


@pytest.mark.parametrize("processes, per_process", [(1, 4), (2, 1), (3, 1)])
@pytest.mark.parametrize("mask", ["Embedding(mask_zero)", "Masking", None])
def test_per_step_targets_with_a_weight_array_keep_the_one_device_loss(
    mask, processes, per_process
):
    """Per-step targets weighed by one number per sequence (on each of its real steps): the
    global batch the processes' parts make has the unfilled batch's loss under
    the default reduction, behind a mask (its valid steps, fill steps included, divide the
    loss) and without one (every position divides it: the table says no mask reaches)."""
    import dataclasses

    import keras

    from seqprep.inputs import _stage as _inputs

    lengths, x, _ = _id_data(n=29, seed=3)
    y = [np.arange(n, dtype=np.float32)[:, None] for n in lengths]
    weights = np.linspace(0.5, 2.0, len(x)).astype(np.float32)
    sampler = sp.BucketSampler(lengths, boundaries=[6], batch_size=7, seed=2)
    plan = sampler.plan(0)
    one = _inputs.prepare(x, y, weights, sampler=sampler)
    widths = _inputs.batch_widths(plan, one)
    filled = _inputs.with_fill(one)
    if mask is None:
        filled = dataclasses.replace(filled, targets=tuple(
            dataclasses.replace(t, table=dataclasses.replace(t.table, loss_mask=False))
            for t in filled.targets))
    loss = keras.losses.MeanSquaredError()  # the default reduction, sum_over_batch_size
    rng = np.random.default_rng(4)
    partial = False
    for b, (xa, ya, wa), (xb, yb, wb), _ in _global_batches(one, filled, plan, widths,
                                                            processes, per_process):
        # Each sequence's weight on its real steps (Keras broadcasts no (B,) weights over a
        # (B, T) loss), as the one-device run gets them.
        np.testing.assert_array_equal(wa, np.where(xa != 0, wa.max(axis=1, keepdims=True), 0))
        real = xa.shape[0]
        partial |= xb.shape[0] > real
        pred = rng.normal(size=(*yb.shape[:2], 1)).astype(np.float32)
        want = _loss_of(loss, ya, pred[:real], wa, xa, mask)
        assert _loss_of(loss, yb, pred, wb, xb, mask) == pytest.approx(want, rel=1e-5), b
    assert partial  # the plan has batches that fill rows top up


@pytest.mark.parametrize("executor", ["bucketed_dataset", "PadCollate"])
def test_weight_array_on_per_step_targets_every_executor_gives_the_one_device_loss(executor):
    """The executors that fill take the factor from the one rule: a per-step target behind
    a mask (``Embedding(mask_zero=True)``) with one weight per sequence keeps its loss."""
    import keras

    lengths, x, _ = _id_data(n=19, seed=5)
    y = [np.arange(n, dtype=np.float32)[:, None] for n in lengths]
    weights = np.linspace(0.5, 2.0, len(x)).astype(np.float32)
    sampler = sp.BucketSampler(lengths, boundaries=[6], batch_size=6, shuffle=False)

    def batches(dp):
        if executor == "PadCollate":
            collate = sp.PadCollate(return_tensors="np", targets="step", data_parallel=dp)
            return [collate([(x[i], y[i], weights[i]) for i in idx])
                    for idx in sampler.plan(0)]
        return list(sp.bucketed_dataset(x, y, sampler=sampler, sample_weight=weights,
                                        options=sp.Options(data_parallel=dp))
                    .as_numpy_iterator())

    loss = keras.losses.MeanSquaredError()
    rng = np.random.default_rng(6)
    for (xa, ya, wa), (xb, yb, wb) in zip(batches(None), batches(4), strict=True):
        assert xb.shape[0] % 4 == 0
        pred = rng.normal(size=(*yb.shape[:2], 1)).astype(np.float32)
        want = _loss_of(loss, ya, pred[:xa.shape[0]], wa, xa, "Embedding(mask_zero)")
        got = _loss_of(loss, yb, pred, wb, xb, "Embedding(mask_zero)")
        assert got == pytest.approx(want, rel=1e-5)
