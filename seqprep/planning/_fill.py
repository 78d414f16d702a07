"""Fill rows: every batch of a plan made a multiple of the data-parallel size, in numpy.

Data parallelism splits each batch's rows evenly over ``k`` devices, so a batch of ``B`` rows
must have a multiple of ``k`` rows. :func:`fill_batches` tops each batch up with *fill rows*:
the index ``fill_index`` (the kernel table's fill sequence: one step of the data that is not
padding, then padding; target 0, weight 0; see ``seqprep.inputs._kernel.with_fill``), never a
second copy of an example. A batch of ``B`` real rows becomes ``B' = k * ceil(B / k)`` rows
(``k`` rows for an empty batch), real rows first, in the plan's order.

Each batch also gets ``scale = B' / B`` (0 for a batch without real rows): the factor by which
the kernel multiplies the weights of its real rows when the loss is per sequence, so that
Keras's default ``"sum_over_batch_size"`` reduction, which divides by every row the batch
holds, fill rows included, gives the loss of the ``B`` real rows. Both are counted over the
whole global batch (every process's rows), so each process's share of the loss adds up to
the one-device loss; per-step targets get their factors the same way, from
``seqprep.inputs._kernel.weight_scales`` (which reads the table's lengths and weights).

With several processes (``jax.distributed``), every process plans the same global batches
(plans depend on ``(seed, epoch)`` only) and keeps its own contiguous ``B' / P`` rows of each:
every process has the same step count, and each example is in exactly one process's rows.

Numpy only: no TensorFlow or Keras here.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from seqprep._core.checks import check_int

__all__ = ["FilledBatches", "fill_batches", "filled_sizes", "row_scales"]


class FilledBatches(NamedTuple):
    """One process's rows of a plan whose batches were filled (see :func:`fill_batches`)."""

    rows: np.ndarray  # int64: this process's rows, batch after batch (``fill_index``: a fill)
    sizes: np.ndarray  # int64 (batches,): this process's rows of every batch (all equal to B'/P)
    scales: np.ndarray  # float64 (batches,): B' / B of every global batch (0 if B == 0)


def filled_sizes(sizes: np.ndarray, multiple_of: int) -> np.ndarray:
    """Rows of every batch once filled: ``sizes`` rounded up to a multiple (at least one
    multiple, so that an empty batch still has rows on every device).

    Example:
        >>> filled_sizes(np.array([30, 32, 1, 0]), 4).tolist()
        [32, 32, 4, 4]
    """
    k = check_int("multiple_of", multiple_of, minimum=1)
    sizes = np.asarray(sizes, np.int64)
    return np.maximum(-(-sizes // k), 1) * k


def row_scales(sizes: np.ndarray, multiple_of: int) -> np.ndarray:
    """``B' / B`` of every batch of ``sizes`` real rows filled to a multiple of ``multiple_of``
    (0 for a batch without real rows): float64.

    Example:
        >>> row_scales(np.array([3, 4, 0]), 4).tolist()
        [1.3333333333333333, 1.0, 0.0]
    """
    sizes = np.asarray(sizes, np.int64)
    filled = filled_sizes(sizes, multiple_of)
    return np.where(sizes > 0, filled / np.maximum(sizes, 1), 0.0).astype(np.float64)


def fill_batches(
    rows: np.ndarray,
    splits: np.ndarray,
    *,
    multiple_of: int,
    fill_index: int,
    num_processes: int = 1,
    process_index: int = 0,
) -> FilledBatches:
    """Fill every batch of a plan's flat form up to a multiple of ``multiple_of`` rows.

    Args:
        rows: int64 flat plan (every planned index, batch after batch).
        splits: int64 ``(batches + 1,)``: batch ``i`` is ``rows[splits[i]:splits[i + 1]]``.
        multiple_of: the data-parallel size ``k`` (devices along the batch axis, all
            processes together); a multiple of ``num_processes``.
        fill_index: the index a fill row gets (the kernel table's fill sequence); must not
            be a planned index.
        num_processes: processes that share each batch.
        process_index: which of them this is: it keeps rows ``[p * B'/P, (p + 1) * B'/P)``
            of every filled batch.

    Returns:
        :class:`FilledBatches`: this process's rows and row counts, and every batch's
        weight scale ``B' / B``.

    Raises:
        ValueError: ``multiple_of`` is not a positive multiple of ``num_processes``, a bad
            ``process_index``, or ``fill_index`` among the planned indices.

    Example:
        >>> out = fill_batches(np.array([4, 1, 0, 2, 3]), np.array([0, 2, 5]),
        ...                    multiple_of=2, fill_index=9)
        >>> out.rows.tolist(), out.sizes.tolist(), out.scales.tolist()
        ([4, 1, 0, 2, 3, 9], [2, 4], [1.0, 1.3333333333333333])
        >>> fill_batches(np.array([4, 1, 0, 2, 3]), np.array([0, 2, 5]), multiple_of=2,
        ...              fill_index=9, num_processes=2, process_index=1).rows.tolist()
        [1, 3, 9]
    """
    k = check_int("multiple_of", multiple_of, minimum=1)
    processes = check_int("num_processes", num_processes, minimum=1)
    p = check_int("process_index", process_index, minimum=0)
    if k % processes:
        raise ValueError(
            f"Argument `multiple_of` must be a multiple of `num_processes` ({processes}): every "
            f"process holds the same number of devices. Received: multiple_of={k}\n"
            "- Pass the data-parallel size of all processes together."
        )
    if p >= processes:
        raise ValueError(
            f"Argument `process_index` must be below `num_processes` ({processes}). "
            f"Received: process_index={p}"
        )
    rows = np.asarray(rows, np.int64)
    splits = np.asarray(splits, np.int64)
    if rows.size and bool(np.any(rows == fill_index)):
        raise ValueError(
            f"Argument `fill_index`={fill_index} is a planned index; a fill row must be "
            "told apart from every example.\n- Pass the table's fill sequence index."
        )
    sizes = np.diff(splits)
    filled = filled_sizes(sizes, k)
    local = filled // processes
    # Position of every planned row inside its filled batch, then inside this process's part.
    batch_of = np.repeat(np.arange(sizes.size), sizes)
    within = np.arange(rows.size, dtype=np.int64) - splits[:-1][batch_of]
    mine = (within >= p * local[batch_of]) & (within < (p + 1) * local[batch_of])
    out_splits = np.concatenate([[0], np.cumsum(local)]).astype(np.int64)
    out = np.full(int(out_splits[-1]), fill_index, np.int64)
    out[out_splits[:-1][batch_of[mine]] + within[mine] - p * local[batch_of[mine]]] = rows[mine]
    return FilledBatches(out, local, row_scales(sizes, k))
