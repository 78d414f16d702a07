"""The one gather-and-pad kernel: (ragged data, a plan's batch) -> padded arrays.

Every executor builds its batches here, in two steps:

1. a **layout** turns one batch of a plan into ``(src, real)``: ``src`` holds, for every
   output position, the flat position of the step it shows (or the pad row's position),
   ``real`` says which positions hold real steps. :func:`positions` lays out pre- or
   post-padded rows (``bucketed_dataset``, ``bucketed_pydataset``, ``fit_per_length``),
   :func:`packed_positions` several sequences back to back per row (``packed_dataset``),
   :func:`window_positions` a TBPTT window (``plan.flat_index``);
2. :func:`gather_batch` gathers inputs, per-step targets (by the same ``src``), per-sequence
   targets (by sequence index) and weights (by :func:`seqprep.inputs._masking._step_weights`, the
   one weight formula) from a :class:`Table`; :func:`gather_targets` is the same without
   the inputs. A batch topped up with fill rows (data parallelism) has its weights
   multiplied by its factor from :func:`weight_scales`, counted in numpy over the whole
   global batch.

The code is written once against an ops namespace (:class:`KernelOps`): numpy here
(:data:`NUMPY_OPS`), TensorFlow in the executors that run it inside a ``tf.data`` map, so
this module imports neither TensorFlow nor Keras. Which targets are per step and which
weights apply is decided upstream (:func:`seqprep.inputs._targets.resolve_targets` and each
executor's argument checks) and recorded in the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, NamedTuple

import numpy as np

from seqprep.inputs._masking import _NUMPY_OPS, _step_weights, _WeightOps
from seqprep.planning._fill import filled_sizes, row_scales

TargetMode = Literal["step", "sequence"]
WeightMode = Literal["sequence", "timestep", "timestep_mean"]


@dataclass(frozen=True)
class KernelOps:
    """How one array library spells the operations of the kernel (see the module docstring).

    Arithmetic, comparisons and ``a[:, None]`` slicing are shared by numpy arrays and
    TensorFlow tensors and are written directly.
    """

    gather: Callable[[Any, Any], Any]  # params[indices] along the first axis
    gather_rows: Callable[[Any, Any], Any]  # out[b, j] = params[b, indices[b, j]]
    where: Callable[[Any, Any, Any], Any]
    arange: Callable[[Any], Any]  # int64 steps 0 .. n - 1
    cumsum_rows: Callable[[Any], Any]  # running sum along axis 1
    count_true: Callable[[Any], Any]  # int64 number of True entries along the last axis
    maximum: Callable[[Any, Any], Any]
    weights: _WeightOps


NUMPY_OPS = KernelOps(
    gather=lambda params, indices: params[indices],
    gather_rows=lambda params, indices: np.take_along_axis(params, indices, axis=1),
    where=np.where,
    arange=lambda n: np.arange(n, dtype=np.int64),
    cumsum_rows=lambda a: np.cumsum(a, axis=1),
    count_true=lambda a: np.count_nonzero(a, axis=-1).astype(np.int64),
    maximum=np.maximum,
    weights=_NUMPY_OPS,
)


def with_pad_row(values: np.ndarray, value: Any = 0) -> np.ndarray:
    """``values`` with one more entry, ``value`` in ``values``'s dtype, at the end.

    Every padded position of a batch gathers from that entry. Callers that must refuse a
    lossy ``value`` check it first (``seqprep.inputs._stage_rules.values_with_pad_row`` does).
    """
    values = np.asarray(values)
    pad = np.full((1, *values.shape[1:]), value, dtype=values.dtype)
    return np.concatenate([values, pad])


@dataclass(frozen=True)
class Table:
    """The data a kernel gathers from, built once per dataset.

    Attributes:
        x: inputs, ``(total_steps + 1, *step_shape)``: the flat steps and one pad row.
        starts: int64 ``(n,)``, where each sequence's first kept step sits in ``x``.
        lengths: int64 ``(n,)``, the steps each sequence keeps (after any truncation).
        y: targets or None: ``"step"``: flat steps plus one pad row, like ``x``;
            ``"sequence"``: one row per sequence plus one zero row (what empty slots get).
        y_mode: ``"step"``, ``"sequence"`` or None (no targets).
        w: float32 ``(n + 1,)`` per-sequence weights with a 0 at the end, or None.
        w_mode: None (no weights), ``"sequence"`` (``w`` per sequence; per-step targets
            get it on each real step, 0 on padding: Keras broadcasts no ``(B,)`` weights over
            a ``(B, T)`` loss), ``"timestep"``
            (1 on real positions, times ``w`` when given) or ``"timestep_mean"`` (those,
            scaled to mean 1 over the batch: see ``_step_weights``).
        fill: whether ``starts`` and ``lengths`` end with one more sequence at index
            :attr:`pad_sequence`: the *fill row* that tops batches up to a multiple of the
            data-parallel size (see :func:`with_fill`: one step, the zero target row,
            weight 0).
        loss_mask: per-step targets weighed by ``"sequence"`` or ``"timestep"`` weights:
            whether a Keras mask reaches their loss (True, the default: the mask's valid
            steps divide it under the default reduction) or not (every position of the batch
            divides it). Only the weight factor of a filled batch depends on it
            (:func:`weight_scales`): no weight array gives the one-device loss in both cases.
    """

    x: Any
    starts: Any
    lengths: Any
    y: Any = None
    y_mode: TargetMode | None = None
    w: Any = None
    w_mode: WeightMode | None = None
    fill: bool = False
    loss_mask: bool = True

    @property
    def pad_index(self) -> int:
        """Position of the pad row in ``x`` (and in step targets)."""
        return int(self.x.shape[0]) - 1

    @property
    def pad_sequence(self) -> int:
        """Index of the zero row of per-sequence targets and weights (and of the fill row)."""
        return int(self.lengths.shape[0]) - (1 if self.fill else 0)

    def convert(self, constant: Callable[[Any], Any]) -> Table:
        """The same table with every array passed through ``constant`` (e.g. ``tf.constant``)."""
        arrays = ("x", "starts", "lengths", "y", "w")
        return replace(self, **{
            f.name: constant(getattr(self, f.name))
            for f in fields(self) if f.name in arrays and getattr(self, f.name) is not None
        })


def table(
    x_values: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    *,
    y: np.ndarray | None = None,
    y_mode: TargetMode | None = None,
    w: np.ndarray | None = None,
    w_mode: WeightMode | None = None,
    fill: bool = False,
) -> Table:
    """A numpy :class:`Table`; ``x_values`` and step ``y`` already end with their pad row.

    Per-sequence ``y`` and ``w`` get their zero row here, and with ``fill=True`` the
    sequences get the fill row (see :func:`with_fill`). Nothing is cast: the dtypes are the
    executor's decision.

    Example:
        >>> t = table(with_pad_row(np.array([1, 2, 3])), [0, 2], [2, 1], fill=True)
        >>> t.pad_sequence, t.lengths.tolist()
        (2, [2, 1, 1])
    """
    if y is not None and y_mode == "sequence":
        y = with_pad_row(y, 0)
    if w is not None:
        w = with_pad_row(np.asarray(w, np.float32), 0)
    t = Table(
        x=x_values, starts=np.asarray(starts, np.int64), lengths=np.asarray(lengths, np.int64),
        y=y, y_mode=y_mode if y is not None else None, w=w, w_mode=w_mode,
    )
    return with_fill(t) if fill else t


def fill_step(x_values: np.ndarray, chunk: int = 4096) -> int | None:
    """The flat position of the step a fill row shows: the first step of the data that
    differs from the pad row (in any feature) and is finite, or None if there is none.

    Example:
        >>> fill_step(with_pad_row(np.array([0, 0, 5, 6])))
        2
        >>> fill_step(with_pad_row(np.array([[0.0, 0.0], [np.nan, 1.0], [0.0, 2.0]])))
        2
        >>> fill_step(with_pad_row(np.array([0, 0]))) is None
        True
    """
    values = np.asarray(x_values)
    pad = values[-1]
    for begin in range(0, values.shape[0] - 1, chunk):  # stop early: usually the first step
        block = values[begin: min(begin + chunk, values.shape[0] - 1)]
        flat = block.reshape(block.shape[0], -1)
        ok = np.any(flat != pad.reshape(-1), axis=1)
        if np.issubdtype(flat.dtype, np.inexact):
            ok &= np.all(np.isfinite(flat), axis=1)
        if ok.any():
            return begin + int(np.argmax(ok))
    return None


def with_fill(t: Table) -> Table:
    """``t`` (numpy) with the fill row: one more sequence, at index :attr:`Table.pad_sequence`.

    A fill row tops a batch up to a multiple of the data-parallel size. It reads the zero
    target row and weighs 0, and it holds **one step**: a finite step of the data that is
    not the pad value (:func:`fill_step`), then padding. So every mask a model derives from
    the values (``Masking(value)``, ``Embedding(mask_zero=True)``) keeps one step of it:
    a masked mean is finite (0 / 0 on a row of padding only would be NaN, and ``0 * NaN`` is
    NaN in the loss and the gradient), and recurrent layers never see an all-False mask row
    (which cuDNN refuses). The step is a value the model already reads, and its weight and
    target are 0: it moves no loss, no metric and no gradient. Where no step qualifies (the
    data is all padding), the fill row has zero steps. :func:`gather_targets` keeps the
    step out of every weight and per-step target.

    Example:
        >>> t = with_fill(table(with_pad_row(np.array([1, 2, 3])), [0, 2], [2, 1]))
        >>> t.lengths.tolist(), t.starts.tolist()
        ([2, 1, 1], [0, 2, 0])
    """
    if t.fill:
        return t
    at = fill_step(t.x)
    return replace(t, starts=np.append(np.asarray(t.starts, np.int64), 0 if at is None else at),
                   lengths=np.append(np.asarray(t.lengths, np.int64), 0 if at is None else 1),
                   fill=True)


# --------------------------------------------------------------------------- layouts


def positions(
    starts: Any, lengths: Any, idx: Any, width: Any, padding: str, pad_index: int | None,
    ops: KernelOps = NUMPY_OPS,
) -> tuple[Any, Any]:
    """Layout of one batch of whole sequences, one per row, padded to ``width``.

    Args:
        starts, lengths: int64 ``(n,)`` of the table.
        idx: int64 ``(B,)``, the batch's sequence indices.
        width: the padded width ``T`` (at least the longest length in the batch).
        padding: ``"post"`` (steps first, then padding) or ``"pre"``.
        pad_index: where padded positions gather from; None when every sequence of the
            batch is exactly ``width`` long (an exact-length group), which skips the mask.
        ops: the array library.

    Returns:
        ``(src, real)``: int64 ``(B, T)`` flat positions and bool ``(B, T)`` (None when
        ``pad_index`` is None: every position is real, and timestep weights cannot be asked).

    Example:
        >>> t = table(with_pad_row(np.array([1, 2, 3, 4])), [0, 3], [3, 1])
        >>> src, real = positions(t.starts, t.lengths, np.array([1, 0]), 3, "pre", t.pad_index)
        >>> src.tolist(), t.x[src].tolist()
        ([[4, 4, 3], [0, 1, 2]], [[0, 0, 4], [1, 2, 3]])
    """
    steps = ops.arange(width)[None, :]
    if pad_index is None:  # every row is exactly `width` long: no mask, no pad row
        return ops.gather(starts, idx)[:, None] + steps, None
    lens = ops.gather(lengths, idx)[:, None]
    if padding == "post":
        real = steps < lens
        src = ops.gather(starts, idx)[:, None] + steps
    else:
        shift = width - lens
        real = steps >= shift
        src = ops.gather(starts, idx)[:, None] + steps - shift
    return ops.where(real, src, pad_index), real


class PackedLayout(NamedTuple):
    """Layout of one packed batch: the ``(src, real)`` pair and what packing adds."""

    src: Any  # int64 (B, P) flat positions
    real: Any  # bool (B, P)
    segment_ids: Any  # int64 (B, P): 0 on padding, 1..S for the slot a step belongs to
    step_owner: Any  # int64 (B, P): the sequence of each step (the zero row on padding)
    slot_owner: Any  # int64 (B, S): the sequence in each slot (the zero row if empty)
    slot_lengths: Any  # int64 (B, S): 0 for an empty slot
    filled: Any  # bool (B, S)


def packed_positions(
    slot: Any, starts: Any, lengths: Any, width: int, pad_index: int, pad_sequence: int,
    ops: KernelOps = NUMPY_OPS,
) -> PackedLayout:
    """Layout of one ``(B, S)`` slot matrix (sequence indices, -1: empty) packed in rows of
    ``width`` steps: slot ``s``'s sequence follows slot ``s - 1``'s in its row."""
    filled = slot >= 0
    item = ops.where(filled, slot, 0)
    lens = ops.where(filled, ops.gather(lengths, item), 0)  # (B, S)
    ends = ops.cumsum_rows(lens)  # (B, S)
    steps = ops.arange(width)[None, :, None]  # (1, P, 1)
    # A step's slot is one more than the number of slots that end at or before it.
    before = ops.count_true(ends[:, None, :] <= steps)  # (B, P)
    real = steps[:, :, 0] < ends[:, -1:]
    seg = ops.where(real, before + 1, 0)
    at = ops.maximum(seg - 1, 0)
    step_item = ops.gather_rows(item, at)
    step_begin = ops.gather_rows(ends - lens, at)
    src = ops.gather(starts, step_item) + steps[:, :, 0] - step_begin
    return PackedLayout(
        src=ops.where(real, src, pad_index), real=real, segment_ids=seg,
        step_owner=ops.where(real, step_item, pad_sequence),
        slot_owner=ops.where(filled, slot, pad_sequence), slot_lengths=lens, filled=filled,
    )


def window_positions(
    plan: Any, offsets: np.ndarray, window: int, pad_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Layout of TBPTT window ``window`` of ``plan`` (numpy; ``plan.flat_index`` places the
    steps, -1 on padding)."""
    return index_positions(plan.flat_index(offsets, window), pad_index)


def index_positions(index: np.ndarray, pad_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Layout of flat value indices with ``-1`` on padding (a TBPTT plan's ``flat_index``, for
    one window or all of them): the pad row's position there, and the real-step mask."""
    real = index >= 0
    return np.where(real, index, np.int64(pad_index)), real


# --------------------------------------------------------------------------- gather


def gather_batch(
    table: Table, src: Any, real: Any, idx: Any, *, owner: Any = None,
    ops: KernelOps = NUMPY_OPS, scale: Any = None,
) -> tuple[Any, ...]:
    """``(x,)``, ``(x, y)`` or ``(x, y, weights)`` of one batch laid out as ``(src, real)``.

    Args:
        table: what to gather from (numpy, or converted once to the ops' library).
        src: int64 flat positions of the layout (``x`` and step targets).
        real: bool mask the timestep weights follow (the layout's ``real``, or the slots a
            packed batch fills when its targets are per sequence).
        idx: int64 sequence indices of per-sequence targets and weights, ``(B,)`` or
            ``(B, S)``.
        owner: the sequence whose weight scales each position of ``real`` when that is not
            ``idx``'s row (a packed batch's ``step_owner``); default ``idx``.
        ops: the array library.
        scale: a batch topped up with fill rows: its rows over its real rows
            (:func:`seqprep.planning._fill.fill_batches`); see :func:`gather_targets`.

    Example:
        >>> t = table(with_pad_row(np.array([1, 2, 3, 4])), [0, 3], [3, 1],
        ...           y=np.array([7, 8]), y_mode="sequence", w_mode="timestep_mean")
        >>> idx = np.array([0, 1])
        >>> src, real = positions(t.starts, t.lengths, idx, 3, "post", t.pad_index)
        >>> xb, yb, wb = gather_batch(t, src, real, idx)
        >>> xb.tolist(), yb.tolist(), wb.tolist()
        ([[1, 2, 3], [4, 0, 0]], [7, 8], [[1.5, 1.5, 1.5], [1.5, 0.0, 0.0]])
    """
    return (ops.gather(table.x, src), *gather_targets(table, src, real, idx, owner=owner,
                                                     ops=ops, scale=scale))


def gather_targets(
    table: Table, src: Any, real: Any, idx: Any, *, owner: Any = None,
    ops: KernelOps = NUMPY_OPS, scale: Any = None,
) -> tuple[Any, ...]:
    """``()``, ``(y,)`` or ``(y, weights)``: :func:`gather_batch` without the inputs.

    Fill rows (the table's fill sequence, see :func:`with_fill`) get the zero target row
    (per-step targets: the pad row on their one step too) and weight 0. ``scale`` is the
    batch's weight factor from :func:`weight_scales` (a batch of a filled plan, counted over
    the whole global batch, every process's rows): per-sequence weights (of either kind of
    targets) are multiplied by it, and per-step ``"timestep"`` / ``"timestep_mean"`` weights
    are the real steps' (times the per-sequence weights) multiplied by it instead of
    normalised over ``src``'s rows. Without ``scale`` (a batch without fill rows, on one
    process), ``"timestep_mean"`` weights are normalised to the mean over this batch's real
    steps.

    Example:
        >>> t = table(with_pad_row(np.array([1, 2, 3])), [0, 2], [2, 1], y=np.array([5, 6]),
        ...           y_mode="sequence", w=np.ones(2), w_mode="sequence", fill=True)
        >>> idx = np.array([1, 2])  # sequence 1 and the fill row (one step: the data's first)
        >>> src, real = positions(t.starts, t.lengths, idx, 2, "post", t.pad_index)
        >>> [a.tolist() for a in gather_batch(t, src, real, idx, scale=np.float32(2.0))]
        [[[3, 0], [1, 0]], [6, 0], [2.0, 0.0]]
    """
    if table.y_mode is None:
        return ()
    fill = table.fill and owner is None  # packed batches have no fill sequence
    is_fill = (idx == table.pad_sequence)[:, None] if fill else None
    if table.y_mode == "step":
        yb = ops.gather(table.y, src if is_fill is None else ops.where(~is_fill, src,
                                                                        table.pad_index))
    else:
        yb = ops.gather(table.y, idx)
    if table.w_mode is None:
        return (yb,)
    kept = real if is_fill is None or real is None else real & ~is_fill
    if kept is None and table.y_mode == "step":  # an exact-length batch: every step is real
        kept = src >= 0
    if scale is None:  # a batch without fill rows: its own weights
        return yb, _weights(table, kept, idx, owner, ops)
    if _scaled_steps(table):  # per step: the global batch's factor normalises them
        return yb, _weights(table, kept, idx, owner, ops, mean=False) * scale
    return yb, _weights(table, kept, idx, owner, ops) * scale  # per-sequence weights


def _scaled_steps(table: Table) -> bool:
    """Whether ``table``'s weights are per step and normalised by a filled batch's scale."""
    return table.y_mode == "step" and table.w_mode in ("timestep", "timestep_mean")


def weight_scales(
    table: Table, rows: np.ndarray, splits: np.ndarray, widths: np.ndarray, *, multiple_of: int
) -> np.ndarray:
    """The weight factor of every batch of a plan filled to ``multiple_of`` rows (numpy).

    THE rule by which a batch topped up with fill rows (:func:`seqprep.planning._fill.
    fill_batches`: ``B`` real rows become ``B'``) gives the loss of its ``B`` real rows under
    Keras's default ``"sum_over_batch_size"`` reduction, which divides by every row or every
    valid step of the batch, fill rows included. It is counted over each **global** batch
    (every process's rows; every process plans the same batches, so no communication), and
    :func:`gather_targets` multiplies each process's weights by it. By what Keras divides:

    * every row (per-sequence targets with weights), or every position ``B' * T`` (per-step
      targets with ``"sequence"`` or ``"timestep"`` weights and no mask reaching the loss,
      ``table.loss_mask`` False): ``B' / B`` (0 when ``B`` is 0);
    * the valid steps of a Keras mask reaching the loss (per-step targets with
      ``"sequence"`` or ``"timestep"`` weights, ``table.loss_mask`` True, the default),
      which count the fill rows' one step each: (real steps + fill steps) / real steps,
      unweighted (the per-sequence weights are in the numerator, not the divisor);
    * ``"timestep_mean"`` weights (meant without a mask) normalise themselves: ``B' * T``
      over the real steps, each times its sequence's weight, so that the loss is their
      weighted mean, as the one-device batch's;
    * no weights: 1.

    Args:
        table: the target's table, with its fill row (:func:`with_fill`).
        rows, splits: the global plan's flat form before filling (real rows only).
        widths: int ``(batches,)``, the padded width of the target's field in each batch.
        multiple_of: the data-parallel size ``k`` (all processes together).

    Returns:
        float32 ``(batches,)``.

    Example:
        >>> t = table(with_pad_row(np.arange(1.0, 8.0)), [0, 3, 4], [3, 1, 3],
        ...           y=with_pad_row(np.zeros(7)), y_mode="step", w_mode="timestep", fill=True)
        >>> rows, splits = np.array([0, 1, 2]), np.array([0, 3])  # 7 real steps, 1 fill row
        >>> weight_scales(t, rows, splits, np.array([3]), multiple_of=2) * 7  # (7 + 1) / 7
        array([8.], dtype=float32)
        >>> t = replace(t, w=np.float32([2, 1, 1, 0]), w_mode="sequence")  # the same rule
        >>> weight_scales(t, rows, splits, np.array([3]), multiple_of=2) * 7
        array([8.], dtype=float32)
        >>> weight_scales(replace(t, loss_mask=False), rows, splits, np.array([3]),
        ...               multiple_of=2) * 3  # no mask: 4 rows over 3
        array([4.], dtype=float32)
        >>> t = replace(t, w=None, w_mode="timestep_mean")  # 4 rows x 3 steps over 7 real steps
        >>> weight_scales(t, rows, splits, np.array([3]), multiple_of=2) * 7
        array([12.], dtype=float32)
    """
    splits = np.asarray(splits, np.int64)
    sizes = np.diff(splits)
    if table.y_mode is None or table.w_mode is None:
        return np.ones(sizes.size, np.float32)
    if table.y_mode == "sequence" or (table.w_mode != "timestep_mean" and not table.loss_mask):
        return row_scales(sizes, multiple_of).astype(np.float32)
    filled = filled_sizes(sizes, multiple_of).astype(np.float64)
    rows = np.asarray(rows, np.int64)
    widths = np.asarray(widths, np.int64)
    batch_of = np.repeat(np.arange(sizes.size), sizes)
    steps = np.minimum(np.asarray(table.lengths)[rows], widths[batch_of]).astype(np.float64)
    if table.w_mode != "timestep_mean":  # behind a mask: its valid steps divide the loss
        real = np.bincount(batch_of, steps, minlength=sizes.size)
        fill_length = int(table.lengths[table.pad_sequence]) if table.fill else 0
        fill_steps = (filled - sizes) * np.minimum(fill_length, widths)
        return _ratio(real + fill_steps, real).astype(np.float32)
    if table.w is not None:  # timestep_mean: each real step weighs its sequence's weight
        steps = steps * np.asarray(table.w, np.float64)[rows]
    total = np.bincount(batch_of, steps, minlength=sizes.size)
    return _ratio(filled * widths, total).astype(np.float32)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b``, 0 where ``b`` is 0 (a batch without a real row or step)."""
    b = np.asarray(b, np.float64)
    return np.where(b > 0, a / np.where(b > 0, b, 1.0), 0.0)


def _weights(
    table: Table, real: Any, idx: Any, owner: Any, ops: KernelOps, *, mean: bool | None = None
) -> Any:
    """The weights of ``real`` by ``table``'s mode; ``mean=False`` leaves ``"timestep_mean"``
    weights unnormalised (a filled batch's scale normalises them). ``"sequence"`` weights
    of per-step targets are those of ``"timestep"`` times ``w`` (each on its real steps)."""
    if table.w_mode == "sequence" and (table.y_mode != "step" or owner is not None):
        return ops.gather(table.w, idx)
    if mean is None:
        mean = table.w_mode == "timestep_mean"
    if table.w is None:
        return _step_weights(real, mean=mean, ops=ops.weights)
    if owner is None:  # one weight per row
        return _step_weights(real, mean=mean, scale=ops.gather(table.w, idx), ops=ops.weights)
    if mean:
        raise ValueError("timestep_mean weights scale whole rows; `owner` must be None")
    return _step_weights(real, mean=False, ops=ops.weights) * ops.gather(table.w, owner)
