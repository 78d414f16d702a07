"""Per-length planning in numpy: the batches ``fit_per_length`` trains on, epoch by epoch.

Sequences are grouped by exact length (or by bucket), each group is cut into batches, and the
batches are ordered per epoch from ``(seed, epoch)`` alone. No TensorFlow or Keras here:
:func:`plan_per_length` works with neither installed.

Example:
    >>> from seqprep.planning._per_length import plan_per_length
    >>> [b.tolist() for b in plan_per_length([2, 1, 2], batch_size=2, order="ascending")]
    [[1], [2, 0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from seqprep._core.checks import check_bool, check_choice, check_int, check_lengths, report_dropped
from seqprep.planning._boundaries import as_boundaries
from seqprep.planning._plan import BatchPlan
from seqprep.planning._protocol import EpochPlanner

__all__ = ["BatchOrder", "GroupBy", "PerLengthPlanner", "plan_per_length"]

# How batches follow each other in an epoch (_tbptt_plan.WindowOrder places sequences in rows).
BatchOrder = Literal["shuffle", "ascending", "descending"]
GroupBy = Any  # "length", a list of boundaries, or a Bucketer (duck typed: `boundaries_`, `fit`)

_ORDERS = ("shuffle", "ascending", "descending")


# --------------------------------------------------------------------------- grouping (numpy)


def _resolve_group_by(group_by: GroupBy, lengths: np.ndarray | None) -> np.ndarray | None:
    """Return the bucket boundaries ``group_by`` stands for, or ``None`` for exact lengths.

    A Bucketer (anything with ``boundaries_`` or ``fit`` and ``bucket_of``) is fitted on
    ``lengths`` first when it has not been fitted yet.
    """
    if isinstance(group_by, str):
        check_choice("group_by", group_by, ("length",))
        return None
    if hasattr(group_by, "boundaries_") or (
        hasattr(group_by, "fit") and hasattr(group_by, "bucket_of")
    ):
        if not hasattr(group_by, "boundaries_"):
            if lengths is None:
                raise ValueError(
                    "Argument `group_by` is a Bucketer that is not fitted.\n"
                    "- Call `.fit(lengths)` on it first."
                )
            group_by.fit(lengths)
        raw = group_by.boundaries_
    else:
        raw = group_by
    arr = np.asarray(raw)
    if arr.ndim != 1:
        raise ValueError(
            'Argument `group_by` must be "length", a list of bucket boundaries or a Bucketer. '
            f"Received: group_by={group_by!r}\n"
            '- Pass group_by="length", ascending ints such as group_by=[8, 16, 32], or '
            "`seqprep.Bucketer()`."
        )
    return as_boundaries(raw, name="group_by")


def _group_keys(
    lengths: np.ndarray, boundaries: np.ndarray | None, name: str = "lengths"
) -> np.ndarray:
    """Group of each sequence: its length, or its bucket (``searchsorted(..., 'right')``).
    Exact-length groups refuse length 0 (``name`` is the argument the lengths come from)."""
    if boundaries is None:
        _refuse_empty_groups(lengths, name)
        return lengths.astype(np.int64, copy=True)
    return np.searchsorted(boundaries, lengths, side="right").astype(np.int64)


def _plan_epoch(
    keys: np.ndarray,
    batch_size: int,
    order: str,
    seed: int,
    epoch: int,
    drop_remainder: bool = False,
    *,
    lengths: np.ndarray,
) -> BatchPlan:
    """One epoch of ``keys``'s groups cut into batches; ``lengths`` give the pad lengths."""
    rng = np.random.default_rng([seed, epoch])
    # Shuffle members, then a stable sort by group: groups are contiguous, members random.
    perm = rng.permutation(len(keys))
    members = perm[np.argsort(keys[perm], kind="stable")]
    uniq, starts, counts = np.unique(keys[members], return_index=True, return_counts=True)
    per_group = -(-counts // batch_size)
    batch_group = np.repeat(uniq, per_group)
    within = np.arange(per_group.sum()) - np.repeat(np.cumsum(per_group) - per_group, per_group)
    b_start = np.repeat(starts, per_group) + within * batch_size
    b_end = np.minimum(b_start + batch_size, np.repeat(starts + counts, per_group))
    if drop_remainder:
        full = (b_end - b_start) == batch_size
        b_start, b_end, batch_group = b_start[full], b_end[full], batch_group[full]
    if order == "shuffle":
        sel = rng.permutation(len(b_start))
    elif order == "descending":
        # Longest group first; inside a group the batches keep their (random) order.
        sel = np.argsort(-batch_group, kind="stable")
    else:
        sel = np.arange(len(b_start))
    b_start, b_end, batch_group = b_start[sel], b_end[sel], batch_group[sel]
    sizes = b_end - b_start
    splits = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=splits[1:])
    # Gather each batch's slice of `members` into one flat array without a Python loop.
    within_rows = np.arange(splits[-1]) - np.repeat(splits[:-1], sizes)
    rows = members[np.repeat(b_start, sizes) + within_rows]
    longest = np.zeros(sizes.size, np.int64)
    if rows.size:  # every batch holds at least one row
        longest = np.maximum.reduceat(lengths[rows], splits[:-1]).astype(np.int64)
    return BatchPlan._owning(rows.astype(np.int64, copy=False), splits,
                             batch_group.astype(np.int64, copy=False), longest, epoch,
                             len(keys) - rows.size)


def _epoch_order(order: str, epoch: int, sorted_epochs: int | None) -> str:
    if order != "shuffle" and sorted_epochs is not None and epoch >= sorted_epochs:
        return "shuffle"
    return order


class PerLengthPlanner(EpochPlanner):
    """The per-length planner: batches of one length (or one bucket) each, a new order per epoch.

    What :func:`fit_per_length` trains on and :func:`plan_per_length` returns one epoch of.
    Sequences are grouped (by exact length, or by bucket when ``group_by`` holds boundaries),
    each group's members are shuffled (seeded by ``(seed, epoch)``) and cut into batches of
    ``batch_size``; a group whose size is not a multiple of ``batch_size`` ends with one
    smaller batch. The batches are then ordered: ``"shuffle"`` interleaves all groups at
    random, ``"ascending"`` goes from the shortest group to the longest (a curriculum),
    ``"descending"`` from the longest (fail fast on memory). Every index appears exactly once
    per epoch (unless ``drop_remainder``), and the number of batches is the same every epoch.

    A :class:`~seqprep.Planner`: ``plan(epoch)``, ``len`` (batches per epoch), iteration over
    the current epoch, ``set_epoch`` and ``state_dict`` / ``load_state_dict`` to resume
    mid-epoch, as :class:`~seqprep.BucketSampler`.

    Args:
        lengths: the sequence lengths (not modified).
        batch_size: rows per batch (at least 1).
        group_by: ``"length"``, a list of bucket boundaries (bucket ``i`` holds
            ``[b[i-1], b[i])``), or a fitted Bucketer (an unfitted one is fitted on
            ``lengths``).
        order: ``"shuffle"``, ``"ascending"`` or ``"descending"``.
        seed: non-negative seed; the plan depends only on ``(seed, epoch)``.
        sorted_epochs: with ``order="ascending"``/``"descending"``, only the first
            ``sorted_epochs`` epochs are sorted and later ones shuffled (``order="ascending",
            sorted_epochs=1`` is SortaGrad). ``None`` sorts every epoch.
        drop_remainder: drop each group's last batch when it is smaller than ``batch_size``.

    Raises:
        ValueError: an invalid argument (named in the message).

    Example:
        >>> planner = PerLengthPlanner([3, 1, 3, 2, 3], batch_size=2, order="ascending")
        >>> len(planner), [b.tolist() for b in planner.plan(0)]
        (4, [[1], [3], [2, 4], [0]])
        >>> it = iter(planner); _ = next(it)
        >>> resumed = PerLengthPlanner([3, 1, 3, 2, 3], batch_size=2, order="ascending")
        >>> resumed.load_state_dict(planner.state_dict())
        >>> [b.tolist() for b in resumed]
        [[3], [2, 4], [0]]
    """

    _RESUME_OPTIONS = "the same lengths, batch_size, group_by, order and drop_remainder"
    num_shards = 1
    shard_index = 0

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        *,
        batch_size: int = 32,
        group_by: GroupBy = "length",
        order: BatchOrder = "shuffle",
        seed: int = 0,
        sorted_epochs: int | None = None,
        drop_remainder: bool = False,
    ) -> None:
        lengths = check_lengths(lengths, allow_empty=True)
        self.keys, self.batch_size, self.order, self.seed, _ = _check_plan_args(
            lengths, batch_size, group_by, order, seed, 0
        )
        self.lengths = lengths.copy()
        self.lengths.flags.writeable = False
        self.sorted_epochs = check_int("sorted_epochs", sorted_epochs, minimum=0,
                                       allow_none=True)
        self.drop_remainder = check_bool("drop_remainder", drop_remainder)
        counts = np.unique(self.keys, return_counts=True)[1]
        per_group = counts // self.batch_size if self.drop_remainder else -(-counts //
                                                                            self.batch_size)
        self._len = int(per_group.sum())
        self._start_at(0, 0)

    def _plan(self, epoch: int) -> BatchPlan:
        return _plan_epoch(self.keys, self.batch_size,
                           _epoch_order(self.order, epoch, self.sorted_epochs), self.seed, epoch,
                           self.drop_remainder, lengths=self.lengths)

    def __len__(self) -> int:
        return self._len

    def _fingerprint_parts(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        return ((self.keys, self.lengths),
                (self.batch_size, self.order, self.sorted_epochs, self.drop_remainder))

    def __repr__(self) -> str:
        return (f"PerLengthPlanner({self.lengths.size} sequences, {len(self)} batches per "
                f"epoch, order={self.order!r}, seed={self.seed})")


def plan_per_length(
    lengths: Sequence[int] | np.ndarray,
    *,
    batch_size: int = 32,
    group_by: GroupBy = "length",
    order: BatchOrder = "shuffle",
    seed: int = 0,
    epoch: int = 0,
    sorted_epochs: int | None = None,
    drop_remainder: bool = False,
) -> BatchPlan:
    """The batches :func:`fit_per_length` trains on in one epoch, as a :class:`BatchPlan`.

    ``PerLengthPlanner(lengths, ...).plan(epoch)``: see :class:`PerLengthPlanner` for the
    grouping and ordering rules, and for the planner object (iteration, resuming).

    Args:
        lengths: the sequence lengths.
        batch_size: rows per batch, as in :class:`PerLengthPlanner`.
        group_by: ``"length"``, bucket boundaries or a Bucketer, as in the planner.
        order: ``"shuffle"``, ``"ascending"`` or ``"descending"``.
        seed: non-negative seed; the plan depends only on ``(seed, epoch)``.
        epoch: the epoch number.
        sorted_epochs: how many epochs a sorted ``order`` sorts (``None``: all), as in the
            planner.
        drop_remainder: drop each group's last batch when it is smaller than ``batch_size``.

    Returns:
        A :class:`~seqprep.BatchPlan`: a read-only sequence of int64 index arrays, one per
        batch, in training order, with each batch's group (``groups``: its length, or its
        bucket with ``group_by`` boundaries), its longest length (``pad_lengths``) and the
        count left out by ``drop_remainder`` (``num_dropped``).

    Raises:
        ValueError: an invalid argument (named in the message).

    Example:
        >>> [b.tolist() for b in plan_per_length([3, 1, 3, 2, 3], batch_size=2,
        ...                                      order="ascending")]
        [[1], [3], [2, 4], [0]]
        >>> plan = plan_per_length([3, 1, 3, 2, 3], batch_size=2, order="ascending")
        >>> plan.groups.tolist(), plan.rows.tolist(), plan.splits.tolist()
        ([1, 2, 3, 3], [1, 3, 2, 4, 0], [0, 1, 2, 4, 5])
    """
    planner = PerLengthPlanner(lengths, batch_size=batch_size, group_by=group_by, order=order,
                               seed=seed, sorted_epochs=sorted_epochs,
                               drop_remainder=drop_remainder)
    plan = planner.plan(check_int("epoch", epoch, minimum=0))
    _report_group_drops(plan, planner.keys, planner.batch_size)
    return plan


def _report_group_drops(plan: BatchPlan, keys: np.ndarray, batch_size: int) -> None:
    """Warn (or refuse, when nothing is left) about the partial batches ``drop_remainder`` cut."""
    n = len(keys)
    if plan.rows.size == n:
        return
    counts = np.unique(keys, return_counts=True)[1]
    partial = int(np.count_nonzero(counts % batch_size))
    report_dropped(
        n - int(plan.rows.size), n,
        why=f"drop_remainder=True leaves out the partial last batch of {partial} of the "
        f"{counts.size} length group(s), and each batch holds one group",
        keep="To keep them, pass drop_remainder=False (each group then ends with one smaller "
        "batch), a smaller `batch_size`, or `group_by=Bucketer()` for larger groups.",
        argument="drop_remainder", received=f"drop_remainder=True, batch_size={batch_size}",
        stacklevel=4,
    )


def _check_plan_args(lengths, batch_size, group_by, order, seed, epoch):
    lengths = check_lengths(lengths, allow_empty=True)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    check_choice("order", order, _ORDERS)
    seed = check_int("seed", seed, minimum=0)
    epoch = check_int("epoch", epoch, minimum=0)
    keys = _group_keys(lengths, _resolve_group_by(group_by, lengths))
    return keys, batch_size, order, seed, epoch


def _refuse_empty_groups(lengths: np.ndarray, name: str) -> None:
    """Exact-length groups of length 0 would be batches zero steps wide, which a recurrent
    layer cannot run (and whose loss is a mean over no steps): refuse them by name."""
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        shown = ", ".join(map(str, empty[:5].tolist())) + (", ..." if empty.size > 5 else "")
        raise ValueError(
            f"Argument `{name}` holds {empty.size} sequences of length 0 (positions "
            f"[{shown}]); grouped by exact length they would make batches zero steps wide, "
            "which a recurrent layer cannot run. Received: group_by='length'\n"
            "- Drop them (and their targets) first, or group by buckets "
            "(group_by=[...] or a Bucketer), where each is padded to one masked step."
        )
