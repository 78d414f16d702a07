"""The inference plan: batches sorted by length and sized by a token budget (numpy only).

Inference has no use for a fresh order per epoch, so the planner of :func:`seqprep.predict`
and :func:`seqprep.evaluate` is simpler than :class:`~seqprep.BucketSampler`:

1. sequences are sorted by length (several fields: by the first field's length, then the
   next field's, ...; ties keep input order);
2. batches are cut from the sorted order greedily: a batch takes rows while
   ``rows * (sum of its padded widths over the fields) <= max_tokens`` and
   ``rows <= batch_size``, so short sequences go in large batches and long ones in small
   batches. A sequence longer than the budget on its own runs alone;
3. each batch's width of a field is its longest length of that field or, with a width grid
   (compiling backends such as JAX), the smallest grid width that covers it, so the batch
   shapes stay few.

Which backend wants a grid is the executor's decision (:mod:`seqprep.running._inference`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from seqprep.planning._protocol import EpochPlanner

__all__ = ["InferencePlan", "InferencePlanner", "plan_inference"]


@dataclass(frozen=True)
class InferencePlan:
    """Batches of an inference run.

    Attributes:
        rows: int64 ``(n,)``, every sequence index once, batch after batch.
        splits: int64 ``(batches + 1,)``: batch ``b`` is ``rows[splits[b]:splits[b + 1]]``.
        widths: int64 ``(batches, fields)``: the padded width of each field in each batch.
        epoch: the epoch it was planned for (every epoch has the same batches).
    """

    rows: np.ndarray
    splits: np.ndarray
    widths: np.ndarray
    epoch: int = 0

    def __len__(self) -> int:
        return int(self.splits.size - 1)

    @property
    def num_dropped(self) -> int:
        """Sequences in no batch: always 0 (inference plans every sequence)."""
        return 0

    @property
    def batches(self) -> tuple[np.ndarray, ...]:
        """Each batch's sequence indices, read-only (the view every plan gives)."""
        out = tuple(self.batch(b) for b in range(len(self)))
        for b in out:
            b.flags.writeable = False
        return out

    def batch(self, b: int) -> np.ndarray:
        """Sequence indices of batch ``b``."""
        return self.rows[self.splits[b] : self.splits[b + 1]]

    def padded_tokens(self) -> int:
        """Steps of all batches, padding included, summed over the fields."""
        return int(((self.splits[1:] - self.splits[:-1])[:, None] * self.widths).sum())


def _padded(run: np.ndarray, grids: list[np.ndarray | None] | None) -> np.ndarray:
    """Padded widths of running maxima ``run`` (rows, fields): at least 1, on the grids (a
    field without a grid pads to its running maximum)."""
    run = np.maximum(run, 1)
    if grids is None:
        return run
    return np.stack(
        [run[:, f] if grid is None else grid[np.minimum(np.searchsorted(grid, run[:, f]),
                                                         grid.size - 1)]
         for f, grid in enumerate(grids)], axis=1,
    )


class InferencePlanner(EpochPlanner):
    """The inference planner, in the one protocol (:class:`seqprep.Planner`): every epoch has
    the same batches (inference wants no fresh order), so ``plan(epoch)`` is
    :func:`plan_inference`'s plan, recorded for that epoch; iteration, ``state_dict`` and
    ``load_state_dict`` resume a run of batches mid-way. Arguments as :func:`plan_inference`'s
    (checked by the caller).

    Example:
        >>> planner = InferencePlanner(np.array([5, 1, 2, 9, 1]), max_tokens=6)
        >>> len(planner), [b.tolist() for b in planner.plan(3).batches], planner.plan(3).epoch
        (3, [[1, 4, 2], [0], [3]], 3)
    """

    _RESUME_OPTIONS = "the same lengths, max_tokens, batch_size and grids"
    seed = 0
    num_shards = 1
    shard_index = 0

    def __init__(
        self, lengths: np.ndarray, *, max_tokens: int, batch_size: int | None = None,
        grids: list[np.ndarray | None] | None = None,
    ) -> None:
        self.lengths = np.array(lengths, np.int64)  # a copy: the caller's array is theirs
        self.lengths.flags.writeable = False
        self.max_tokens, self.batch_size, self.grids = max_tokens, batch_size, grids
        self._cache = self._plan(0)
        self._start_at(0, 0)

    def _plan(self, epoch: int) -> InferencePlan:
        cached = self._cache
        if cached is None:  # the same batches every epoch: planned once (again once unpickled)
            cached = _plan_inference(self.lengths, self.max_tokens, self.batch_size, self.grids)
        return replace(cached, epoch=epoch)

    def __len__(self) -> int:
        return len(self.plan(self.epoch))

    def _fingerprint_parts(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        grids = () if self.grids is None else tuple(g for g in self.grids if g is not None)
        layout = None if self.grids is None else [g is None for g in self.grids]
        return (self.lengths, *grids), (self.max_tokens, self.batch_size, layout)


def plan_inference(
    lengths: np.ndarray,
    *,
    max_tokens: int,
    batch_size: int | None = None,
    grids: list[np.ndarray | None] | None = None,
) -> InferencePlan:
    """Plan inference batches for ``lengths`` ``(n,)`` or ``(n, fields)`` (see the module).

    ``grids`` holds one ascending width grid per field (covering its longest length; None for
    a field padded to each batch's longest), or is None to pad every field to each batch's
    longest. Arguments are checked by the caller.

    Example:
        >>> plan = plan_inference(np.array([5, 1, 2, 9, 1]), max_tokens=6)
        >>> [plan.batch(b).tolist() for b in range(len(plan))], plan.widths[:, 0].tolist()
        ([[1, 4, 2], [0], [3]], [2, 5, 9])
    """
    return InferencePlanner(lengths, max_tokens=max_tokens, batch_size=batch_size,
                            grids=grids).plan(0)


def _plan_inference(
    lengths: np.ndarray, max_tokens: int, batch_size: int | None,
    grids: list[np.ndarray | None] | None,
) -> InferencePlan:
    """:func:`plan_inference`'s plan (the planner's first)."""
    lengths = np.asarray(lengths, np.int64)
    if lengths.ndim == 1:
        lengths = lengths[:, None]
    n = lengths.shape[0]
    order = np.lexsort(lengths.T[::-1]).astype(np.int64) if n else np.zeros(0, np.int64)
    ordered = lengths[order]
    cap_rows = n if batch_size is None else min(n, batch_size)
    splits, widths = [0], []
    start = 0
    while start < n:
        # A row costs at least one step per field, so no batch holds more than this many.
        cap = min(n - start, cap_rows, max(1, max_tokens // lengths.shape[1]))
        padded = _padded(np.maximum.accumulate(ordered[start : start + cap], axis=0), grids)
        cost = np.arange(1, cap + 1) * padded.sum(axis=1)
        rows = max(1, int(np.searchsorted(cost, max_tokens, side="right")))
        splits.append(start + rows)
        widths.append(padded[rows - 1])
        start += rows
    shape = (len(widths), lengths.shape[1])
    return InferencePlan(
        rows=order,
        splits=np.asarray(splits, np.int64),
        widths=np.asarray(widths, np.int64).reshape(shape),
    )
