"""The plan every batch planner returns: which sequences make each batch, in training order.

A :class:`BatchPlan` holds one epoch of one shard in two equal forms: the batches as index
arrays (it is a read-only sequence of them), and the flat form an executor reads without a
Python loop, ``rows`` (every planned index, batch after batch) with ``splits`` (batch ``i`` is
``rows[splits[i]:splits[i + 1]]``). Beside them: the group (bucket, or length) of each batch,
its padded length under ``pad_to="bucket"``, the epoch and the examples left out. The padded
width of each batch under any ``pad_to`` is decided here, once, by :meth:`BatchPlan.widths`.

A :class:`PackedPlan` is the plan of a packing planner: a ``BatchPlan`` whose batches are also
laid out in packed rows (several sequences back to back per row).

Numpy only: no TensorFlow or Keras here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from seqprep._core.checks import check_increasing, check_int

__all__ = ["BatchPlan", "PackedPlan"]

PAD_TO_FIX = '- Pass pad_to="batch", "bucket", a positive int, or a width grid (ascending ints).'


def _frozen_int64(values: Any, name: str, ndim: int = 1) -> np.ndarray:
    """A read-only int64 copy of ``values`` (a copy: the caller's array is never touched)."""
    arr = np.asarray(values)
    if arr.size == 0:
        arr = arr.astype(np.int64)
    if arr.dtype == bool or arr.dtype.kind not in "iu":
        raise TypeError(
            f"Argument `{name}` must hold integers. Received an array of dtype {arr.dtype}\n"
            "- Pass integer indices (casting floats could change them)."
        )
    if arr.ndim != ndim:
        raise ValueError(
            f"Argument `{name}` must be {ndim}-D. Received an array of shape {arr.shape}"
        )
    out = arr.astype(np.int64, copy=True)
    out.flags.writeable = False
    return out


def check_width_grid(widths: Any, longest: int) -> np.ndarray:
    """``widths`` as a checked width grid: ascending positive int64 widths reaching ``longest``.

    Example:
        >>> check_width_grid([8, 16], longest=12).tolist()
        [8, 16]
    """
    arr = np.asarray(widths)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype == bool or arr.dtype.kind not in "iu":
        raise ValueError(
            "Argument `pad_to` as a width grid must be a non-empty 1-D sequence of integers. "
            f"Received: pad_to={widths!r}\n"
            '- Pass pad_to="batch", "bucket", "auto", an int, or seqprep.width_grid(sampler).'
        )
    arr = check_increasing("pad_to", arr, fix="Sort and deduplicate the widths of the grid.")
    if int(arr[-1]) < longest:
        raise ValueError(
            f"Argument `pad_to` as a width grid must reach the longest planned length "
            f"({longest}). Received: pad_to={arr.tolist()}\n"
            f"- Append {longest} to the grid, or build it with seqprep.width_grid(sampler)."
        )
    return arr


def _check_splits(splits: np.ndarray, size: int) -> None:
    if splits.size == 0 or splits[0] != 0 or splits[-1] != size or np.any(np.diff(splits) < 0):
        raise ValueError(
            "Argument `splits` must start at 0, never decrease and end at the number of rows "
            f"({size}). Received: splits={splits.tolist()[:8]}{'...' if splits.size > 8 else ''}"
            "\n- Pass the batch boundaries in `rows`: batch i is rows[splits[i]:splits[i+1]]."
        )


class BatchPlan(Sequence):
    """One epoch's batches for one shard: what every seqprep batch planner returns.

    A read-only sequence of int64 index arrays (``len(plan)`` batches, ``plan[i]``, iteration),
    in training order, with the same batches in flat form and what an executor needs to shape
    them. Made by :meth:`BucketSampler.plan <seqprep.BucketSampler.plan>`,
    :func:`~seqprep.plan_per_length` and :func:`~seqprep.replica_plans` (and, as
    :class:`PackedPlan`, by :meth:`PackSampler.plan <seqprep.PackSampler.plan>`). Every array is
    read-only; plans compare equal when all their fields do, and pickle.

    Args:
        epoch: the epoch planned.
        batches: the index arrays, one per batch (copied).
        buckets: the bucket (group key) of each batch.
        pad_lengths: the padded length of each batch under ``pad_to="bucket"``; at least the
            longest member's length.
        num_dropped: examples of this epoch left out of every shard's batches.
        field_pad_lengths: for a plan of examples with several fields (a 2-D
            :class:`~seqprep.BucketSampler`), the padded length of every field of each batch
            under ``pad_to="bucket"``, shape ``(len(plan), num_fields)``; ``pad_lengths`` is
            then their maximum over fields. None (the default) for one field.

    Attributes:
        epoch: the epoch planned.
        rows: int64 ``(examples,)``: every planned index, batch after batch.
        splits: int64 ``(len(plan) + 1,)``: batch ``i`` is ``rows[splits[i]:splits[i + 1]]``.
        groups: int64 ``(len(plan),)``: the group of each batch: its bucket for a
            :class:`~seqprep.BucketSampler`, its length (or bucket) for
            :func:`~seqprep.plan_per_length`. ``buckets`` is the same array.
        pad_lengths: int64 ``(len(plan),)``: the padded length of each batch under
            ``pad_to="bucket"``.
        num_dropped: examples of this epoch in no shard's batches (see the planner).
        field_pad_lengths: int64 ``(len(plan), num_fields)`` or None: each field's padded
            length under ``pad_to="bucket"`` (see :meth:`field_widths`).
        num_fields: 1, or the number of fields of a plan with ``field_pad_lengths``.

    Example:
        >>> plan = BatchPlan(0, [[4, 1], [0, 2, 3]], buckets=[0, 1], pad_lengths=[3, 9])
        >>> len(plan), plan[1].tolist(), plan.rows.tolist(), plan.splits.tolist()
        (2, [0, 2, 3], [4, 1, 0, 2, 3], [0, 2, 5])
        >>> lengths = [7, 3, 2, 9, 1]
        >>> plan.widths("batch", lengths).tolist(), plan.widths("bucket").tolist()
        ([3, 9], [3, 9])
        >>> plan.widths([4, 8, 16]).tolist(), plan.widths(12).tolist()
        ([4, 16], [12, 12])
    """

    def __init__(
        self,
        epoch: int,
        batches: Sequence[Sequence[int] | np.ndarray],
        buckets: Sequence[int] | np.ndarray,
        pad_lengths: Sequence[int] | np.ndarray,
        num_dropped: int = 0,
        *,
        field_pad_lengths: Sequence[Sequence[int]] | np.ndarray | None = None,
    ) -> None:
        parts = [_frozen_int64(b, "batches") for b in batches]
        rows = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        splits = np.zeros(len(parts) + 1, np.int64)
        np.cumsum(np.array([p.size for p in parts], np.int64), out=splits[1:])
        self._set_flat(rows, splits, buckets, pad_lengths, epoch, num_dropped)
        self._set_field_pads(field_pad_lengths)

    @classmethod
    def from_flat(
        cls,
        rows: Sequence[int] | np.ndarray,
        splits: Sequence[int] | np.ndarray,
        *,
        groups: Sequence[int] | np.ndarray,
        pad_lengths: Sequence[int] | np.ndarray,
        epoch: int = 0,
        num_dropped: int = 0,
        field_pad_lengths: Sequence[Sequence[int]] | np.ndarray | None = None,
    ) -> BatchPlan:
        """A plan from its flat form: batch ``i`` is ``rows[splits[i]:splits[i + 1]]``.

        Example:
            >>> plan = BatchPlan.from_flat([2, 0, 1], [0, 1, 3], groups=[5, 7], pad_lengths=[5, 7])
            >>> [b.tolist() for b in plan]
            [[2], [0, 1]]
        """
        plan = cls.__new__(cls)
        plan._set_flat(rows, splits, groups, pad_lengths, epoch, num_dropped)
        plan._set_field_pads(field_pad_lengths)
        return plan

    @classmethod
    def _owning(
        cls, rows: np.ndarray, splits: np.ndarray, groups: np.ndarray, pad_lengths: np.ndarray,
        epoch: int, num_dropped: int,
    ) -> BatchPlan:
        """A plan that takes over fresh int64 arrays a planner made for it (no copies)."""
        plan = cls.__new__(cls)
        plan._set_flat(rows, splits, groups, pad_lengths, epoch, num_dropped, owned=True)
        return plan

    @classmethod
    def _of_slices(
        cls, sources: tuple[np.ndarray, ...], source: np.ndarray, begin: np.ndarray,
        splits: np.ndarray, groups: np.ndarray, pad_lengths: np.ndarray, epoch: int,
        num_dropped: int, field_pad_lengths: np.ndarray | None = None,
    ) -> BatchPlan:
        """A plan whose batch ``i`` is ``sources[source[i]][begin[i]:][:size_i]``.

        ``sources`` are read-only int64 arrays a planner keeps; the flat ``rows`` are joined
        from them on first use, so a caller that only wants the batches pays for views alone.
        """
        plan = cls._owning(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64),
                           np.zeros(0, np.int64), epoch, num_dropped)
        for arr in (splits, groups, pad_lengths):
            arr.flags.writeable = False
        for name, value in (("splits", splits), ("groups", groups),
                            ("pad_lengths", pad_lengths), ("_rows", None),
                            ("_slices", (sources, source, begin))):
            object.__setattr__(plan, name, value)
        plan._set_field_pads(field_pad_lengths)
        return plan

    def _set_flat(
        self, rows: Any, splits: Any, groups: Any, pad_lengths: Any, epoch: int,
        num_dropped: int, owned: bool = False,
    ) -> None:
        if owned:  # a planner's own fresh int64 arrays: freeze them in place
            for arr in (rows, splits, groups, pad_lengths):
                arr.flags.writeable = False
        else:
            rows, splits = _frozen_int64(rows, "rows"), _frozen_int64(splits, "splits")
            groups = _frozen_int64(groups, "buckets")
            pad_lengths = _frozen_int64(pad_lengths, "pad_lengths")
        _check_splits(splits, rows.size)
        if groups.size != splits.size - 1 or pad_lengths.size != splits.size - 1:
            raise ValueError(
                f"A plan of {splits.size - 1} batch(es) needs one bucket and one pad length "
                f"per batch. Received {groups.size} bucket(s) and {pad_lengths.size} pad "
                "length(s)\n- Pass one entry per batch, in the batches' order."
            )
        fields = dict(
            epoch=check_int("epoch", epoch, minimum=0), _rows=rows, splits=splits,
            groups=groups, pad_lengths=pad_lengths,
            num_dropped=check_int("num_dropped", num_dropped, minimum=0), _batches=None,
            _slices=None, field_pad_lengths=None,
        )
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def _set_field_pads(self, field_pad_lengths: Any) -> None:
        """Attach each field's ``pad_to="bucket"`` length per batch (None: one field)."""
        if field_pad_lengths is None:
            return
        pads = _frozen_int64(field_pad_lengths, "field_pad_lengths", ndim=2)
        if pads.shape[0] != len(self) or pads.shape[1] < 1:
            raise ValueError(
                f"Argument `field_pad_lengths` must have one row per batch ({len(self)}) and "
                f"one column per field. Received an array of shape {pads.shape}\n"
                "- Pass an int array of shape (batches, fields), in the batches' order."
            )
        if pads.size and np.any(pads.max(axis=1) > self.pad_lengths):
            raise ValueError(
                "Argument `pad_lengths` must cover every field's pad length (it is their "
                "maximum over fields). Received pad_lengths smaller than a row of "
                "`field_pad_lengths`\n- Pass pad_lengths=field_pad_lengths.max(axis=1)."
            )
        object.__setattr__(self, "field_pad_lengths", pads)

    @property
    def num_fields(self) -> int:
        """Fields per example: 1, or the columns of ``field_pad_lengths``."""
        return 1 if self.field_pad_lengths is None else int(self.field_pad_lengths.shape[1])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only: cannot set `{name}`")

    # ------------------------------------------------------------------ the sequence view

    @property
    def rows(self) -> np.ndarray:
        """int64 ``(examples,)``: every planned index, batch after batch (read-only)."""
        if self._rows is None:
            object.__setattr__(self, "_rows", self._gather())
            object.__setattr__(self, "_slices", None)
        return self._rows

    def _gather(self) -> np.ndarray:
        """The flat rows of a plan of slices: its batches (views) joined, one copy."""
        batches = self.batches
        rows = np.concatenate(batches) if batches else np.zeros(0, np.int64)
        rows.flags.writeable = False
        return rows

    @property
    def batches(self) -> tuple[np.ndarray, ...]:
        """The batches as read-only int64 index arrays, in order."""
        if self._batches is None:
            cuts = self.splits.tolist()
            pairs = zip(cuts[:-1], cuts[1:], strict=True)
            slices = self._slices
            if slices is None:
                rows = self.rows
                parts = tuple(rows[a:z] for a, z in pairs)
            else:
                sources, source, begin = slices
                parts = tuple(
                    sources[k][b : b + z - a]
                    for k, b, (a, z) in zip(source.tolist(), begin.tolist(), pairs, strict=True)
                )
            object.__setattr__(self, "_batches", parts)
        return self._batches

    @property
    def buckets(self) -> np.ndarray:
        """The bucket of each batch: the same array as ``groups``."""
        return self.groups

    @property
    def sizes(self) -> np.ndarray:
        """int64 ``(len(plan),)``: examples in each batch."""
        return np.diff(self.splits)

    def __len__(self) -> int:
        return int(self.splits.size - 1)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list(self.batches[index])
        i = int(index)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"batch index {index} out of range for a plan of {n} batches")
        i %= n
        if self._slices is not None:
            return self.batches[i]
        return self.rows[self.splits[i] : self.splits[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches)

    # Sequence's mixins compare with ``==``, which on arrays is elementwise.
    def __contains__(self, value: object) -> bool:
        return any(np.array_equal(b, value) for b in self.batches)

    def index(self, value: Any, start: int = 0, stop: int | None = None) -> int:
        """Position of the first batch equal to ``value`` (``ValueError`` if none)."""
        for i in range(*slice(start, stop).indices(len(self))):
            if np.array_equal(self.batches[i], value):
                return i
        raise ValueError(f"{value!r} is not a batch of this plan")

    def count(self, value: Any) -> int:
        """Number of batches equal to ``value``."""
        return sum(np.array_equal(b, value) for b in self.batches)

    # ------------------------------------------------------------------ widths

    def widths(self, pad_to: Any = "batch", lengths: Any = None) -> np.ndarray:
        """The padded width of each batch under ``pad_to``: the one rule every executor uses.

        Args:
            pad_to: ``"batch"`` (each batch's longest member; needs ``lengths``),
                ``"bucket"`` (``pad_lengths``), a positive int (every batch), or a width
                grid: ascending ints, each batch padded to the smallest grid width that
                covers its ``pad_lengths`` entry (so, like ``"bucket"``, a batch's width
                depends only on its bucket).
            lengths: the length of every sequence the plan indexes (for ``"batch"``).

        Returns:
            A new int64 array ``(len(plan),)``; an empty batch has width 0 under ``"batch"``,
            and a batch whose sequences all have length 0 has width 1 (one padded step)
            under ``"batch"`` and ``"bucket"``.

        Raises:
            ValueError: an unknown ``pad_to``, a width grid that does not reach the longest
                pad length, or ``"batch"`` without ``lengths`` that cover the plan's indices.
        """
        if isinstance(pad_to, str):
            if pad_to == "batch":
                return self._at_least_one_step(self._longest(lengths))
            if pad_to == "bucket":
                return self._at_least_one_step(self.pad_lengths.copy())
            raise ValueError(
                f'Argument `pad_to` must be "batch", "bucket", an int or a width grid. '
                f"Received: pad_to={pad_to!r}\n{PAD_TO_FIX}"
            )
        if np.ndim(pad_to) == 0:
            return np.full(len(self), check_int("pad_to", pad_to, minimum=1), np.int64)
        longest = int(self.pad_lengths.max()) if self.pad_lengths.size else 0
        grid = check_width_grid(pad_to, longest)
        return grid[np.searchsorted(grid, self.pad_lengths, side="left")]

    def _at_least_one_step(self, widths: np.ndarray) -> np.ndarray:
        """A batch of only zero-length sequences is one (fully padded) step wide, not zero:
        a recurrent layer cannot run over zero steps (TensorFlow fails to stack its outputs)."""
        widths[(widths == 0) & (self.sizes > 0)] = 1
        return widths

    def field_widths(self, pad_to: Any = "batch", lengths: Any = None) -> np.ndarray:
        """The padded width of every field of each batch under ``pad_to``.

        The rule of :meth:`widths`, applied to each field on its own: ``"batch"`` pads a
        field to the batch's longest entry of that field, ``"bucket"`` to
        ``field_pad_lengths`` (the bucket's widths), an int pads every field to it, and a
        width grid rounds each field's bucket width up to the grid. A plan of one field gives
        one column (``widths`` as a column).

        Args:
            pad_to: ``"batch"``, ``"bucket"``, a positive int, or a width grid.
            lengths: the lengths the plan indexes, ``(n, num_fields)`` (for ``"batch"``;
                1-D for a plan of one field).

        Returns:
            A new int64 array ``(len(plan), num_fields)``.

        Raises:
            ValueError: as :meth:`widths`, or ``lengths`` with another number of fields.

        Example:
            >>> plan = BatchPlan(0, [[0, 2], [1]], buckets=[0, 3], pad_lengths=[5, 9],
            ...                  field_pad_lengths=[[5, 4], [2, 9]])
            >>> plan.field_widths("batch", [[3, 4], [2, 7], [5, 1]]).tolist()
            [[5, 4], [2, 7]]
            >>> plan.field_widths("bucket").tolist(), plan.field_widths([4, 8, 16]).tolist()
            ([[5, 4], [2, 9]], [[8, 4], [4, 16]])
        """
        pads = self.field_pad_lengths
        if pads is None:
            one = None if lengths is None else np.asarray(lengths)
            if one is not None and one.ndim == 2 and one.shape[1] == 1:
                one = one[:, 0]
            return self.widths(pad_to, one)[:, None]
        k = pads.shape[1]
        if isinstance(pad_to, str) and pad_to == "batch":
            arr = np.asarray(lengths) if lengths is not None else None
            if arr is None or arr.ndim != 2 or arr.shape[1] != k:
                shown = "None" if arr is None else f"an array of shape {arr.shape}"
                raise ValueError(
                    f'Argument `lengths` must be an (n, {k}) array of every field\'s lengths '
                    f'for pad_to="batch" on a plan of {k} fields. Received {shown}\n'
                    "- Pass the sampler's `lengths` (its planned (n, fields) lengths)."
                )
            return np.stack([self._longest(arr[:, f]) for f in range(k)], axis=1)
        if isinstance(pad_to, str) or np.ndim(pad_to) == 0:
            if isinstance(pad_to, str) and pad_to == "bucket":
                return pads.copy()
            self.widths(pad_to)  # the one place that judges the argument
            return np.full(pads.shape, int(pad_to), np.int64)
        grid = check_width_grid(pad_to, int(pads.max()) if pads.size else 0)
        return grid[np.searchsorted(grid, pads, side="left")]

    def _checked_lengths(self, lengths: Any) -> np.ndarray:
        if lengths is None:
            raise ValueError(
                'Argument `lengths` is needed for pad_to="batch" (the width of a batch is its '
                "longest member's length). Received: lengths=None\n"
                "- Pass the lengths of the sequences the plan indexes."
            )
        arr = np.asarray(lengths)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise ValueError(
                "Argument `lengths` must be a 1-D array of integer lengths. Received an array "
                f"of shape {arr.shape} and dtype {arr.dtype}"
            )
        if self.rows.size and int(self.rows.max()) >= arr.size:
            raise ValueError(
                f"Argument `lengths` has {arr.size} entries but the plan indexes sequence "
                f"{int(self.rows.max())}.\n- Pass the lengths the plan was made from."
            )
        return arr

    def _longest(self, lengths: Any) -> np.ndarray:
        """Longest member of each batch (0 for an empty batch)."""
        arr = self._checked_lengths(lengths)
        sizes = self.sizes
        out = np.zeros(sizes.size, np.int64)
        nonempty = sizes > 0
        if self.rows.size:
            out[nonempty] = np.maximum.reduceat(arr[self.rows], self.splits[:-1][nonempty])
        return out

    # ------------------------------------------------------------------ equality, pickling

    _FIELDS: tuple[str, ...] = (
        "epoch", "rows", "splits", "groups", "pad_lengths", "num_dropped", "field_pad_lengths",
    )

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(
            np.array_equal(getattr(self, f), getattr(other, f)) for f in self._FIELDS
        )

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self._FIELDS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "field_pad_lengths", None)  # pickled before fields existed
        for name, value in state.items():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False  # unpickled arrays come back writable
            object.__setattr__(self, "_rows" if name == "rows" else name, value)
        object.__setattr__(self, "_batches", None)
        object.__setattr__(self, "_slices", None)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(epoch={self.epoch}, batches={len(self)}, "
            f"examples={self.rows.size}, num_dropped={self.num_dropped})"
        )


class PackedPlan(BatchPlan):
    """A :class:`BatchPlan` whose batches are laid out in packed rows (see ``PackSampler``).

    As a ``BatchPlan``, batch ``i`` is every sequence of its rows, in the order they are laid
    (row after row); ``groups`` are all 0 and ``pad_lengths`` are ``row_length``. On top, the
    layout: ``slots`` holds the sequences of every row of the epoch, batch after batch, and
    ``slot_splits`` says which rows make each batch. :meth:`widths` measures rows: under
    ``"batch"`` a batch's width is its fullest row's steps.

    Args:
        epoch: the epoch planned.
        batches: each batch a list of rows; each row the sequence indices laid in it, in order.
        row_length: steps per row.
        num_dropped: sequences of this epoch left out of every shard's batches.
        max_segments: columns of ``slots`` (at least the most sequences in a row; default
            that many, and at least 1).

    Attributes:
        slots: int64 ``(rows, S)``: the sequences laid in each row, left-aligned; ``-1`` marks
            an empty slot.
        slot_splits: int64 ``(len(plan) + 1,)``: batch ``i`` is the rows
            ``slots[slot_splits[i]:slot_splits[i + 1]]``.
        row_length: steps per row.

    Example:
        >>> plan = PackedPlan(0, [[[3], [2, 4]], [[0, 1]]], row_length=4)
        >>> plan.slots.tolist(), plan.rows_per_batch.tolist()
        ([[3, -1], [2, 4], [0, 1]], [2, 1])
        >>> [b.tolist() for b in plan], plan.widths("batch", [3, 1, 2, 4, 2]).tolist()
        ([[3, 2, 4], [0, 1]], [4, 4])
    """

    _FIELDS = (*BatchPlan._FIELDS, "slots", "slot_splits", "row_length")

    def __init__(
        self,
        epoch: int,
        batches: Sequence[Sequence[Sequence[int] | np.ndarray]],
        row_length: int,
        num_dropped: int = 0,
        max_segments: int | None = None,
    ) -> None:
        rows = [_frozen_int64(r, "batches") for batch in batches for r in batch]
        counts = np.array([r.size for r in rows], np.int64)
        width = max(1, int(counts.max()) if counts.size else 0)
        if max_segments is not None:
            width = check_int("max_segments", max_segments, minimum=width)
        slots = np.full((len(rows), width), -1, np.int64)
        if rows:
            slots[np.arange(width) < counts[:, None]] = np.concatenate(rows)
        slot_splits = np.zeros(len(batches) + 1, np.int64)
        np.cumsum(np.array([len(b) for b in batches], np.int64), out=slot_splits[1:])
        self._set_slots(slots, slot_splits, row_length, epoch, num_dropped)

    @classmethod
    def from_slots(
        cls,
        slots: np.ndarray,
        slot_splits: Sequence[int] | np.ndarray,
        *,
        row_length: int,
        epoch: int = 0,
        num_dropped: int = 0,
    ) -> PackedPlan:
        """A packed plan from its slot matrix (``-1``: empty slot; real slots left-aligned).

        Example:
            >>> plan = PackedPlan.from_slots([[0, 1], [2, -1]], [0, 2], row_length=5)
            >>> [[r.tolist() for r in b] for b in plan.row_batches]
            [[[0, 1], [2]]]
        """
        plan = cls.__new__(cls)
        plan._set_slots(slots, slot_splits, row_length, epoch, num_dropped)
        return plan

    def _set_slots(
        self, slots: Any, slot_splits: Any, row_length: int, epoch: int, num_dropped: int
    ) -> None:
        slots = _frozen_int64(slots, "slots", ndim=2)
        slot_splits = _frozen_int64(slot_splits, "slot_splits")
        _check_splits(slot_splits, slots.shape[0])
        real = slots >= 0
        if np.any(real[:, 1:] & ~real[:, :-1]):
            raise ValueError(
                "Argument `slots` must hold each row's sequences left-aligned: an empty slot "
                "(-1) is followed by a sequence.\n- Put the -1 entries at the end of each row."
            )
        row_length = check_int("row_length", row_length, minimum=1)
        # Sequences before each batch's first row: the flat form's splits.
        before_row = np.concatenate([[0], np.cumsum(real.sum(axis=1))]).astype(np.int64)
        splits = before_row[slot_splits]
        n = slot_splits.size - 1
        self._set_flat(slots[real], splits, np.zeros(n, np.int64),
                       np.full(n, row_length, np.int64), epoch, num_dropped)
        for name, value in (("slots", slots), ("slot_splits", slot_splits),
                            ("row_length", row_length), ("_row_batches", None)):
            object.__setattr__(self, name, value)

    @property
    def rows_per_batch(self) -> np.ndarray:
        """int64 ``(len(plan),)``: packed rows in each batch."""
        return np.diff(self.slot_splits)

    @property
    def row_batches(self) -> tuple[list[np.ndarray], ...]:
        """Each batch as a list of rows; each row a read-only int64 array of the sequences
        laid in it, in order (what ``PackSampler.batches`` returns)."""
        if self._row_batches is None:
            counts = (self.slots >= 0).sum(axis=1).tolist()
            rows = [self.slots[k, :c] for k, c in enumerate(counts)]
            cuts = self.slot_splits.tolist()
            out = tuple(rows[a:z] for a, z in zip(cuts[:-1], cuts[1:], strict=True))
            object.__setattr__(self, "_row_batches", out)
        return self._row_batches

    def _longest(self, lengths: Any) -> np.ndarray:
        """Steps of the fullest row of each batch (0 for a batch without rows)."""
        arr = self._checked_lengths(lengths)
        steps = np.where(self.slots >= 0, arr[np.maximum(self.slots, 0)], 0).sum(axis=1)
        sizes = self.rows_per_batch
        out = np.zeros(sizes.size, np.int64)
        nonempty = sizes > 0
        if steps.size:
            out[nonempty] = np.maximum.reduceat(steps, self.slot_splits[:-1][nonempty])
        return out

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        object.__setattr__(self, "_row_batches", None)
