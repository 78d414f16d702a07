"""The gather-and-pad kernel against the batch builders it replaced, in one process.

Run: .venv/bin/python -m pytest -q -s tests/benchmarks/bench_kernel.py -o addopts="" \
         -o python_files="bench_*.py"

Data: ``SEQPREP_BENCH_N`` int32 sequences (default 8192), lengths lognormal(3.5, 0.8) clipped
to 2..400, per-sequence float32 labels, batches of 64. Pipeline throughput only (no model):
every contender is a ``tf.data`` map over the same batches of indices, and the rates are the
best of ``SEQPREP_BENCH_REPEATS`` interleaved passes (default 15), in wall and CPU time.

* ``fit_per_length(group_by="length")``: exact-length groups (no padding). The kernel
  (``_BatchSource``: positions + one gather) against the previous builder
  (``tf.ragged.range`` + gather + reshape), re-created here as the baseline.
* ``fit_per_length(group_by=Bucketer())``: groups padded to each batch's longest length. The
  kernel against the previous ``tf.RaggedTensor.to_tensor`` builder.
* ``bucketed_dataset``'s batch function over a ``BucketSampler``'s plan (``pad_to="batch"``,
  post-padding, labels): the kernel against the previous inline ``make_batch``, re-created
  here; ``bucketed_dataset`` itself and ``bucketed_pydataset`` (numpy kernel) for context.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from seqprep._core.options import Options  # noqa: E402
from seqprep.inputs import _kernel  # noqa: E402
from seqprep.planning import Bucketer, BucketSampler  # noqa: E402
from seqprep.planning._per_length import plan_per_length  # noqa: E402
from seqprep.running._fitting import _BatchSource, _prepare  # noqa: E402
from seqprep.running._pydataset import bucketed_pydataset  # noqa: E402
from seqprep.running._stream import TF_KERNEL_OPS as _TF_KERNEL_OPS  # noqa: E402
from seqprep.running._tfdata import bucketed_dataset  # noqa: E402

N = int(os.environ.get("SEQPREP_BENCH_N", "8192"))
REPEATS = int(os.environ.get("SEQPREP_BENCH_REPEATS", "15"))
BATCH = 64


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(3.5, 0.8, N)), 2, 400).astype(np.int64)
    x = [rng.integers(1, 1000, size=int(t), dtype=np.int32) for t in lengths]
    y = rng.integers(0, 2, size=(N, 1)).astype(np.float32)
    return x, y, lengths


def _ragged_builder(data, exact: bool):
    """The batch builder ``_BatchSource`` had before the kernel (inputs and labels)."""
    values = tf.constant(data.x.values)
    offsets = tf.constant(data.x.offsets[:-1])
    lengths = tf.constant(data.x.lengths)
    labels = tf.constant(data.y)

    def make(idx):
        lens = tf.gather(lengths, idx)
        starts = tf.gather(offsets, idx)
        flat = tf.gather(values, tf.ragged.range(starts, starts + lens).flat_values)
        if exact:
            xb = tf.reshape(flat, tf.stack([tf.shape(lens, out_type=tf.int64)[0], lens[0]]))
        else:
            xb = tf.RaggedTensor.from_row_lengths(flat, lens).to_tensor(default_value=0)
        xb.set_shape([None, None])
        return xb, tf.gather(labels, idx)

    return make


def _previous_make_batch(x_values, starts, lengths, labels):
    """``bucketed_dataset``'s batch function before the kernel (post-padding, labels)."""
    t_x, t_start = tf.constant(x_values), tf.constant(starts)
    t_len, t_y = tf.constant(lengths), tf.constant(labels)
    pad_index = x_values.shape[0] - 1

    def make_batch(idx, width):
        lens = tf.gather(t_len, idx)[:, None]
        steps = tf.range(width, dtype=tf.int64)[None, :]
        real = steps < lens
        src = tf.where(real, tf.gather(t_start, idx)[:, None] + steps, pad_index)
        return tf.gather(t_x, src), tf.gather(t_y, idx)

    return make_batch


def _kernel_make_batch(x_values, starts, lengths, labels):
    """``bucketed_dataset``'s batch function now: the kernel with TensorFlow ops."""
    table = _kernel.table(x_values, starts, lengths, y=labels, y_mode="sequence")
    consts = table.convert(tf.constant)

    def make_batch(idx, width):
        src, real = _kernel.positions(consts.starts, consts.lengths, idx, width, "post",
                                      table.pad_index, _TF_KERNEL_OPS)
        return _kernel.gather_batch(consts, src, real, idx, ops=_TF_KERNEL_OPS)

    return make_batch


def _sampler_batches(batches, lengths, make):
    widths = np.asarray([int(lengths[b].max()) for b in batches], np.int64)
    rows = tf.RaggedTensor.from_row_lengths(np.concatenate(batches).astype(np.int64),
                                            [b.size for b in batches])
    ds = tf.data.Dataset.from_tensor_slices((rows, widths))
    ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _batches(rows, splits, make):
    rows_t, splits_t = tf.constant(rows), tf.constant(splits)
    ds = tf.data.Dataset.range(len(splits) - 1)
    ds = ds.map(lambda b: rows_t[splits_t[b] : splits_t[b + 1]])
    ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _rates(contenders: dict) -> dict:
    """``(wall, cpu)`` batches per second of each contender (a dataset, or a function
    returning an iterable of batches): best of REPEATS passes, interleaved so that load from
    other processes hits every contender alike. CPU time (all threads of this process) is
    the steadier figure on a shared machine."""
    best = {name: [float("inf"), float("inf")] for name in contenders}
    for _ in range(REPEATS):
        for name, batches in contenders.items():
            wall, cpu = time.perf_counter(), time.process_time()
            count = sum(1 for _ in (batches() if callable(batches) else batches))
            best[name][0] = min(best[name][0], (time.perf_counter() - wall) / count)
            best[name][1] = min(best[name][1], (time.process_time() - cpu) / count)
    return {name: (1.0 / w, 1.0 / c) for name, (w, c) in best.items()}


PAIRS = ("fit_per_length exact", "fit_per_length bucketed", "bucketed make_batch")


def test_kernel_against_previous_builders():
    x, y, lengths = _data()
    data = _prepare(x, y)
    contenders = {}
    for name, group_by in (("exact", "length"), ("bucketed", Bucketer())):
        batches = plan_per_length(lengths, batch_size=BATCH, group_by=group_by)
        splits = np.concatenate([[0], np.cumsum([b.size for b in batches])]).astype(np.int64)
        rows = np.concatenate(batches).astype(np.int64)
        source = _BatchSource(data, exact=name == "exact", step_weights=False)
        contenders[f"fit_per_length {name}: kernel"] = source.dataset(rows, splits)
        contenders[f"fit_per_length {name}: previous builder"] = _batches(
            rows, splits, _ragged_builder(data, name == "exact"))

    sampler = BucketSampler(lengths, batch_size=BATCH, seed=0)
    batches = sampler.batches(0)
    args = (_kernel.with_pad_row(data.x.values, 0), data.x.offsets[:-1], lengths, y)
    contenders["bucketed make_batch: kernel"] = _sampler_batches(
        batches, lengths, _kernel_make_batch(*args))
    contenders["bucketed make_batch: previous builder"] = _sampler_batches(
        batches, lengths, _previous_make_batch(*args))
    contenders["bucketed_dataset (TF kernel)"] = bucketed_dataset(
        x, y, sampler=sampler, pad_to="batch", options=Options(reshuffle_each_iteration=False))
    py = bucketed_pydataset(x, y, sampler=sampler, pad_to="batch")
    contenders["bucketed_pydataset (numpy kernel)"] = lambda: (py[i] for i in range(len(py)))

    # Same batches from both builders before timing anything.
    for name in PAIRS:
        kernel, previous = contenders[f"{name}: kernel"], contenders[f"{name}: previous builder"]
        for (xa, ya), (xb, yb) in zip(kernel, previous, strict=True):
            np.testing.assert_array_equal(xa.numpy(), xb.numpy())
            np.testing.assert_array_equal(ya.numpy(), yb.numpy())

    rates = _rates(contenders)
    print(f"\nbatch builders, {N} sequences, batch {BATCH}, best of {REPEATS} passes")
    print(f"{'builder':<45} {'wall b/s':>9} {'cpu b/s':>9}")
    for name, (wall, cpu) in rates.items():
        print(f"{name:<45} {wall:9.0f} {cpu:9.0f}")
    for name in PAIRS:
        ours, prev = rates[f"{name}: kernel"], rates[f"{name}: previous builder"]
        print(f"ratio kernel / previous builder ({name}): wall {ours[0] / prev[0]:.2f}x, "
              f"cpu {ours[1] / prev[1]:.2f}x (higher is faster)")
    assert all(min(rate) > 0 for rate in rates.values())
