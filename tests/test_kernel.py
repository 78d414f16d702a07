"""The gather-and-pad kernel (seqprep.inputs._kernel) against a brute-force reference.

Every layout (post/pre padding, packed rows, TBPTT windows) and the gather of inputs, step
and sequence targets and every weight mode is checked three ways on Hypothesis-drawn data:
the numpy kernel, the same code run with TensorFlow ops, and a reference written as plain
loops over rows and steps from the original per-sequence arrays (not from the kernel's table).
The executors that call the kernel are checked against the same reference at the end.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprep._core.ragged import Ragged
from seqprep.inputs import _kernel
from seqprep.planning._windows import plan_tbptt
from seqprep.running._stream import TF_KERNEL_OPS as _TF_KERNEL_OPS

DTYPES = (np.int32, np.float32, np.int64, np.float64)


# --------------------------------------------------------------------------- drawn data


def _sequences(data, n_max=7, len_min=0, len_max=6, label="x"):
    """Sequences with distinct non-zero steps (a padded 0 is never mistaken for data)."""
    lengths = data.draw(st.lists(st.integers(len_min, len_max), min_size=1, max_size=n_max),
                        label=f"{label} lengths")
    step = data.draw(st.sampled_from([(), (2,)]), label=f"{label} step shape")
    dtype = data.draw(st.sampled_from(DTYPES), label=f"{label} dtype")
    size = int(np.prod(step, dtype=np.int64))
    rows, nxt = [], 1
    for k in lengths:
        rows.append((np.arange(nxt, nxt + k * size) % 120 + 1).astype(dtype).reshape(k, *step))
        nxt += k * size
    return rows, np.asarray(lengths, np.int64)


def _targets(data, lengths, mode):
    """Step targets (one float32 or int32 row per sequence) or labels ``(n, 2)``."""
    if mode == "step":
        dtype = data.draw(st.sampled_from([np.int32, np.float32]), label="y dtype")
        return [(-np.arange(k) - 10 * i - 1).astype(dtype) for i, k in enumerate(lengths)]
    if mode == "sequence":
        return (np.arange(lengths.size * 2).reshape(-1, 2) + 3).astype(np.float32)
    return None


def _weights(data, n):
    values = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.25]), min_size=n,
                                max_size=n), label="w")
    return np.asarray(values, np.float32)


def _table(rows, lengths, kept, pre_cut, value, y=None, y_mode=None, w=None, w_mode=None):
    """The kernel's table of ``rows``, keeping ``kept[i]`` steps (the last ones if pre_cut)."""
    x_values = _kernel.with_pad_row(np.concatenate(rows), value)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    starts = offsets[:-1] + (lengths - kept if pre_cut else 0)
    if y_mode == "step":
        y = _kernel.with_pad_row(np.concatenate(y), 0)
    return _kernel.table(x_values, starts, kept, y=y, y_mode=y_mode, w=w, w_mode=w_mode)


# --------------------------------------------------------------------------- reference


def _kept(seq, k, pre_cut):
    return seq[len(seq) - k:] if pre_cut else seq[:k]


def _ref_padded(rows, kept, pre_cut, idx, width, padding, value, dtype):
    """Rows ``idx`` padded to ``width``: a loop over rows and steps."""
    step = rows[0].shape[1:]
    out = np.full((len(idx), width, *step), value, dtype)
    real = np.zeros((len(idx), width), bool)
    for b, i in enumerate(idx):
        seq = _kept(rows[i], kept[i], pre_cut)
        for t in range(len(seq)):
            col = t if padding == "post" else width - len(seq) + t
            out[b, col] = seq[t]
            real[b, col] = True
    return out, real


def _ref_weights(real, idx, w, w_mode, y_mode="sequence"):
    if w_mode == "sequence" and y_mode != "step":
        return np.asarray([w[i] for i in idx], np.float32)
    # Per-step targets: a sequence's weight on each of its real steps (as "timestep" weights).
    out = np.zeros(real.shape, np.float32)
    for b in range(real.shape[0]):
        for t in range(real.shape[1]):
            out[b, t] = np.float32(real[b, t]) * (np.float32(1) if w is None else w[idx[b]])
    if w_mode == "timestep_mean":
        total = np.float32(0)
        for v in out.ravel():
            total = np.float32(total + v)
        scale = np.float32(np.float32(out.size) / total) if total else np.float32(0)
        out = np.asarray([[np.float32(v * scale) for v in row] for row in out], np.float32)
    return out


def _same(got, want):
    got = np.asarray(got)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(got, want)


def _tf(table):
    return table.convert(tf.constant)


def _numpy_of(batch):
    return tuple(np.asarray(a) for a in batch)


# --------------------------------------------------------------------------- padded rows


@settings(max_examples=80)
@given(data=st.data())
def test_padded_batches_match_the_reference(data):
    rows, lengths = _sequences(data)
    n = lengths.size
    pre_cut = data.draw(st.booleans(), label="pre truncation")
    limit = data.draw(st.none() | st.integers(0, 6), label="length limit")
    kept = lengths if limit is None else np.minimum(lengths, limit)
    idx = np.asarray(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5),
                               label="idx"), np.int64)
    width = int(kept[idx].max()) + data.draw(st.integers(0, 3), label="extra width")
    padding = data.draw(st.sampled_from(["post", "pre"]), label="padding")
    value = data.draw(st.sampled_from([0, 7]), label="value")
    y_mode = data.draw(st.sampled_from([None, "step", "sequence"]), label="y mode")
    w_mode = None if y_mode is None else data.draw(
        st.sampled_from([None, "sequence", "timestep", "timestep_mean"]), label="w mode")
    w = _weights(data, n) if w_mode == "sequence" or (
        w_mode is not None and data.draw(st.booleans(), label="scale")) else None
    y = _targets(data, lengths, y_mode)  # step targets keep the steps x keeps
    table = _table(rows, lengths, kept, pre_cut, value, y, y_mode, w, w_mode)

    x_ref, real_ref = _ref_padded(rows, kept, pre_cut, idx, width, padding, value,
                                  rows[0].dtype)
    src, real = _kernel.positions(table.starts, table.lengths, idx, width, padding,
                                  table.pad_index)
    _same(real, real_ref)
    t_table = _tf(table)
    t_src, t_real = _kernel.positions(t_table.starts, t_table.lengths, tf.constant(idx),
                                      tf.constant(width, tf.int64), padding, table.pad_index,
                                      _TF_KERNEL_OPS)
    _same(t_real.numpy(), real_ref)
    _same(t_src.numpy(), src)

    for batch in (_kernel.gather_batch(table, src, real, idx),
                  _numpy_of(_kernel.gather_batch(t_table, t_src, t_real, tf.constant(idx),
                                                 ops=_TF_KERNEL_OPS))):
        assert len(batch) == 1 + (y_mode is not None) + (w_mode is not None)
        _same(batch[0], x_ref)
        if y_mode == "step":
            y_rows = [_kept(t, k, pre_cut) for t, k in zip(y, kept, strict=True)]
            want, _ = _ref_padded(y_rows, kept, False, idx, width, padding, 0, y[0].dtype)
            _same(batch[1], want)
        elif y_mode == "sequence":
            _same(batch[1], y[idx])
        if w_mode is not None:
            _same(batch[2], _ref_weights(real_ref, idx, w, w_mode, y_mode))


def test_timestep_mean_of_an_all_padding_batch_is_zero():
    table = _kernel.table(_kernel.with_pad_row(np.zeros(0, np.int32)), [0, 0], [0, 0],
                          y=np.zeros((2,), np.float32), y_mode="sequence",
                          w_mode="timestep_mean")
    idx = np.array([0, 1])
    src, real = _kernel.positions(table.starts, table.lengths, idx, 3, "post", table.pad_index)
    xb, _, wb = _kernel.gather_batch(table, src, real, idx)
    _same(xb, np.zeros((2, 3), np.int32))
    _same(wb, np.zeros((2, 3), np.float32))


def test_the_table_never_aliases_or_mutates_the_caller_arrays():
    values = np.arange(1, 6, dtype=np.int32)
    before = values.copy()
    padded = _kernel.with_pad_row(values, 9)
    padded[0] = -1
    _same(values, before)
    assert padded[-1] == 9 and padded.dtype == np.int32


# --------------------------------------------------------------------------- packed rows


def _draw_packing(data, lengths):
    """Rows of distinct sequences whose lengths fit ``width``, filled left to right."""
    width = int(lengths.max()) + data.draw(st.integers(0, 6), label="row length")
    order = data.draw(st.permutations(range(lengths.size)), label="order")
    rows, row, used = [], [], 0
    for i in order:
        if row and used + lengths[i] > width:
            rows.append(row)
            row, used = [], 0
        row.append(i)
        used += lengths[i]
    rows.append(row)
    slots = max(len(r) for r in rows) + data.draw(st.integers(0, 1), label="extra slot")
    matrix = np.full((len(rows), slots), -1, np.int64)
    for b, r in enumerate(rows):
        matrix[b, : len(r)] = r
    return matrix, width


def _ref_packed(rows, lengths, matrix, width, y, y_mode, w):
    """Packed values, segment ids, slot lengths, targets and weights: loops only."""
    B, S = matrix.shape
    step = rows[0].shape[1:]
    x = np.zeros((B, width, *step), rows[0].dtype)
    seg = np.zeros((B, width), np.int64)
    slot_lengths = np.zeros((B, S), np.int64)
    yb = wb = None
    if y_mode == "step":
        yb = np.zeros((B, width), y[0].dtype)
        wb = np.zeros((B, width), np.float32)
    elif y_mode == "sequence":
        yb = np.zeros((B, S, *y.shape[1:]), y.dtype)
        wb = np.zeros((B, S), np.float32)
    for b in range(B):
        pos = 0
        for s in range(S):
            i = matrix[b, s]
            if i < 0:
                continue
            slot_lengths[b, s] = lengths[i]
            if y_mode == "sequence":
                yb[b, s] = y[i]
                wb[b, s] = np.float32(1) * (np.float32(1) if w is None else w[i])
            for t in range(lengths[i]):
                x[b, pos] = rows[i][t]
                seg[b, pos] = s + 1
                if y_mode == "step":
                    yb[b, pos] = y[i][t]
                    wb[b, pos] = np.float32(1) * (np.float32(1) if w is None else w[i])
                pos += 1
    return x, seg, slot_lengths, yb, wb


def _packed_batch(table, matrix, width, ops):
    lay = _kernel.packed_positions(matrix, table.starts, table.lengths, width,
                                   table.pad_index, table.pad_sequence, ops)
    if table.y_mode == "sequence":
        batch = _kernel.gather_batch(table, lay.src, lay.filled, lay.slot_owner,
                                     owner=lay.slot_owner, ops=ops)
    else:
        batch = _kernel.gather_batch(table, lay.src, lay.real, lay.slot_owner,
                                     owner=lay.step_owner, ops=ops)
    return _numpy_of((*batch, lay.segment_ids, lay.slot_lengths))


@settings(max_examples=60)
@given(data=st.data())
def test_packed_batches_match_the_reference(data):
    rows, lengths = _sequences(data, len_min=1)
    matrix, width = _draw_packing(data, lengths)
    y_mode = data.draw(st.sampled_from([None, "step", "sequence"]), label="y mode")
    y = _targets(data, lengths, y_mode)
    w = _weights(data, lengths.size) if y_mode and data.draw(st.booleans(), label="w") \
        else None
    table = _table(rows, lengths, lengths, False, 0, y, y_mode, w,
                   "timestep" if y_mode else None)
    x_ref, seg_ref, lens_ref, y_ref, w_ref = _ref_packed(rows, lengths, matrix, width, y,
                                                         y_mode, w)
    got_np = _packed_batch(table, matrix, width, _kernel.NUMPY_OPS)
    got_tf = _packed_batch(_tf(table), tf.constant(matrix), width, _TF_KERNEL_OPS)
    for got in (got_np, got_tf):
        _same(got[0], x_ref)
        _same(got[-2], seg_ref)
        _same(got[-1], lens_ref)
        if y_mode is not None:
            _same(got[1], y_ref)
            _same(got[2], w_ref)


# --------------------------------------------------------------------------- TBPTT windows


def _ref_window(plan, rows, w, dense):
    """Window ``w`` of ``plan`` from the plan's cells (or per-step sources), 0 on padding."""
    B, T = plan.batch_size, plan.window
    out = np.zeros((B, T, *rows[0].shape[1:]), rows[0].dtype)
    real = np.zeros((B, T), bool)
    for b in range(B):
        for t in range(T):
            if dense:
                i, s = plan.source_sequence[w, b, t], plan.source_step[w, b, t]
            else:
                i, s = plan.sequence[w, b], plan.start[w, b] + t
                if t >= plan.count[w, b]:
                    i = -1
            if i >= 0:
                out[b, t] = rows[i][s]
                real[b, t] = True
    return out, real


def _draw_windows(data):
    """Sequences, their flat offsets and a TBPTT plan of them (windowed or dense)."""
    rows, lengths = _sequences(data, len_min=1, len_max=9)
    dense = data.draw(st.booleans(), label="dense")
    plan = plan_tbptt(lengths, window=data.draw(st.integers(1, 4), label="window"),
                      batch_size=data.draw(st.integers(1, 3), label="batch"), dense=dense)
    return rows, lengths, np.concatenate([[0], np.cumsum(lengths)]), plan, dense


@settings(max_examples=40)
@given(data=st.data())
def test_window_positions_match_the_reference(data):
    rows, lengths, offsets, plan, dense = _draw_windows(data)
    table = _table(rows, lengths, lengths, False, 0)
    for w in range(plan.n_windows):
        src, real = _kernel.window_positions(plan, offsets, w, table.pad_index)
        x_ref, real_ref = _ref_window(plan, rows, w, dense)
        _same(real, real_ref)
        _same(_kernel.gather_batch(table, src, real, None)[0], x_ref)


@settings(max_examples=25)
@given(data=st.data())
def test_tbptt_windows_match_the_reference(data):
    from seqprep.running._tbptt import _Windows

    rows, lengths, offsets, plan, dense = _draw_windows(data)
    plan = plan.as_calls() if dense else plan
    many_to_one = data.draw(st.booleans(), label="many to one")
    rag = Ragged(np.concatenate(rows), offsets)
    y = _targets(data, lengths, "sequence" if many_to_one else "step")
    targets = y if many_to_one else Ragged(np.concatenate(y), offsets)
    windows = _Windows(plan, rag, targets, many_to_one)
    for w in range(plan.n_windows):
        x_ref, real_ref = _ref_window(plan, rows, w, False)
        x, mask, _, idle = windows.inputs(w)
        _same(x, x_ref)
        _same(mask, real_ref | idle[:, None])
        yb, wb = windows.targets_of(w)
        if many_to_one:
            held = [max(int(i), 0) for i in plan.sequence[w]]
            _same(yb, y[held])
            _same(wb, plan.ends[w].astype(np.float32))
        else:
            y_ref, _ = _ref_window(plan, y, w, False)
            _same(yb, y_ref)
            _same(wb, real_ref.astype(np.float32))


# --------------------------------------------------------------------------- executors


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("y_kind", ["step", "sequence"])
def test_fit_per_length_batches_match_the_reference(exact, y_kind):
    from seqprep.running._fitting import _BatchSource, _prepare

    lengths = np.array([3, 3, 1, 3, 2, 2, 4] if not exact else [3, 3, 3, 1, 1, 2])
    rows = [np.arange(10 * i + 1, 10 * i + 1 + k, dtype=np.int32) for i, k in
            enumerate(lengths)]
    y = ([np.arange(k, dtype=np.float32) + i for i, k in enumerate(lengths)]
         if y_kind == "step" else np.arange(lengths.size, dtype=np.float32))
    w = np.linspace(0.5, 2.0, lengths.size).astype(np.float32)
    data = _prepare(rows, y, w, targets=y_kind, pad_value=5)  # the stage holds the pad row
    batches = [np.array([0, 2, 1]), np.array([4, 3]), np.array([5])] if exact else [
        np.array([0, 2, 6]), np.array([5, 1])]
    splits = np.concatenate([[0], np.cumsum([b.size for b in batches])])
    for step_weights in (False, True):
        source = _BatchSource(data, exact=exact, step_weights=step_weights)
        ds = source.dataset(np.concatenate(batches), splits)
        assert ds.element_spec[0].shape.as_list() == [None, None]
        for idx, (xb, yb, wb) in zip(batches, ds, strict=True):
            width = int(lengths[idx].max())
            x_ref, real = _ref_padded(rows, lengths, False, idx, width, "post", 5, np.int32)
            _same(xb.numpy(), x_ref)
            if y_kind == "step":
                want, _ = _ref_padded(y, lengths, False, idx, width, "post", 0, np.float32)
                _same(yb.numpy(), want)
            else:
                _same(yb.numpy(), y[idx])
            mean = step_weights and y_kind == "step" and not exact
            want_w = _ref_weights(real, idx, w, "timestep_mean" if mean else "sequence", y_kind)
            _same(wb.numpy(), want_w)


def test_bucketed_executors_match_the_reference():
    from seqprep import BucketSampler, Options, bucketed_dataset, bucketed_pydataset

    lengths = np.array([3, 1, 4, 2, 5, 2, 1])
    rows = [np.arange(10 * i + 1, 10 * i + 1 + k, dtype=np.int64) for i, k in
            enumerate(lengths)]
    y = [np.arange(k, dtype=np.float32) - i for i, k in enumerate(lengths)]
    sampler = BucketSampler(lengths, boundaries=[3], batch_size=2, shuffle=False)
    for padding in ("post", "pre"):
        kwargs = dict(sampler=sampler, padding=padding, value=9, pad_to="batch",
                      sample_weight="timestep_mean")
        replay = Options(reshuffle_each_iteration=False)
        tf_batches = list(bucketed_dataset(rows, y, options=replay, **kwargs))
        py = bucketed_pydataset(rows, y, **kwargs)
        for b, idx in enumerate(sampler.batches(0)):
            width = int(lengths[idx].max())
            x_ref, real = _ref_padded(rows, lengths, False, idx, width, padding, 9, np.int64)
            y_ref, _ = _ref_padded(y, lengths, False, idx, width, padding, 0, np.float32)
            w_ref = _ref_weights(real, idx, None, "timestep_mean")
            for got in (_numpy_of(tf_batches[b]), py[b]):
                _same(got[0], x_ref)
                _same(got[1], y_ref)
                _same(got[2], w_ref)


@settings(max_examples=30)
@given(data=st.data())
def test_exact_width_layout_equals_the_padded_one(data):
    """``pad_index=None`` (an exact-length group) skips the mask but places the same steps."""
    k = data.draw(st.integers(1, 5), label="length")
    n = data.draw(st.integers(1, 6), label="n")
    rows = [np.arange(10 * i + 1, 10 * i + 1 + k, dtype=np.int32) for i in range(n)]
    table = _table(rows, np.full(n, k), np.full(n, k), False, 0)
    idx = np.asarray(data.draw(st.permutations(range(n)), label="idx"), np.int64)
    src, real = _kernel.positions(table.starts, table.lengths, idx, k, "post", table.pad_index)
    assert real.all()
    exact, none = _kernel.positions(table.starts, table.lengths, idx, k, "post", None)
    assert none is None
    _same(exact, src)
    t_table = _tf(table)
    t_exact, t_none = _kernel.positions(t_table.starts, t_table.lengths, tf.constant(idx),
                                        tf.constant(k, tf.int64), "post", None, _TF_KERNEL_OPS)
    assert t_none is None
    _same(t_exact.numpy(), src)
    _same(_kernel.gather_batch(table, exact, None, idx)[0], np.stack([rows[i] for i in idx]))


def test_the_kernel_runs_without_tensorflow_or_keras():
    """The numpy kernel imports neither TensorFlow nor Keras (a fresh interpreter refuses
    them), so ``bucketed_pydataset``-style executors need no TensorFlow runtime."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent("""
        import sys

        class _Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
                    raise ImportError(f"{name} is blocked in this test")

        sys.meta_path.insert(0, _Blocker())
        import numpy as np
        from seqprep.inputs import _kernel
        t = _kernel.table(_kernel.with_pad_row(np.arange(1, 6)), [0, 3], [3, 2],
                          y=np.array([1.0, 2.0]), y_mode="sequence", w_mode="timestep")
        idx = np.array([1, 0])
        src, real = _kernel.positions(t.starts, t.lengths, idx, 3, "pre", t.pad_index)
        xb, yb, wb = _kernel.gather_batch(t, src, real, idx)
        assert xb.tolist() == [[0, 4, 5], [1, 2, 3]], xb
        assert not any(m.split(".")[0] in ("tensorflow", "keras") for m in sys.modules)
        print("ok")
    """)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
