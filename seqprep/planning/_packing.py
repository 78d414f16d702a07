"""PackSampler: several sequences back to back in each row, planned in numpy.

How an epoch is planned:

1. Once, at construction, the sequences are packed into rows of at most ``row_length`` steps by
   best-fit decreasing, worked on the length histogram: every length, longest first, goes into
   the open row with the least room that still fits it, or opens a new row. Rows with the same
   history are kept as one group, so the packing costs about one step per (distinct length,
   group) rather than one per sequence, and millions of lengths pack in well under a second.
   The packing fixes how many rows there are and which *lengths* each row holds.
2. Each epoch, from ``np.random.default_rng([seed, epoch])``: the sequences of each length are
   dealt at random to that length's slots, each row's slots are put in a random order, the rows
   are shuffled and cut into batches of ``batch_size`` rows.
3. Batches are grouped ``num_shards`` at a time; shard ``k`` takes the ``k``-th batch of every
   group, so every shard has the same number of batches. The last incomplete group is re-split
   into smaller batches (or dropped with ``drop_remainder=True``).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from seqprep._core.checks import check_bool, check_choice, check_int, check_lengths, check_shard
from seqprep.planning._plan import PackedPlan
from seqprep.planning._resumable import ResumableSampler

__all__ = ["PackSampler"]

Overlong = Literal["error", "truncate", "drop"]


def _best_fit_decreasing(
    values: np.ndarray, counts: np.ndarray, row_length: int
) -> list[tuple[int, tuple[tuple[int, int], ...]]]:
    """Pack ``counts[i]`` items of length ``values[i]`` into rows of ``row_length`` steps.

    Returns groups ``(rows, ((length, how_many), ...))``: ``rows`` identical rows, each holding
    ``how_many`` items of every listed length. Equal to item-by-item best-fit decreasing: a row
    that just took an item is the tightest fit for the next item of the same length as long as
    that still fits, so a group of equally full rows takes ``room // length`` items per row.
    """
    keys: list[int] = []  # remaining room of open groups, ascending
    at: dict[int, list[tuple[int, tuple[tuple[int, int], ...]]]] = {}

    def add(room: int, rows: int, comp: tuple[tuple[int, int], ...]) -> None:
        if room not in at:
            bisect.insort(keys, room)
            at[room] = []
        at[room].append((rows, comp))

    for length, count in zip(values[::-1].tolist(), counts[::-1].tolist(), strict=True):
        left = count
        while left:
            i = bisect.bisect_left(keys, length)
            if i == len(keys):
                room, rows, comp = row_length, None, ()
            else:
                room = keys[i]
                rows, comp = at[room].pop(0)
                if not at[room]:
                    del at[room]
                    keys.pop(i)
            per_row = room // length
            if rows is not None and rows * per_row <= left:
                add(room - per_row * length, rows, (*comp, (length, per_row)))
                left -= rows * per_row
                continue
            full, rest = divmod(left, per_row)
            if full:
                add(room - per_row * length, full, (*comp, (length, per_row)))
            if rest:
                add(room - rest * length, 1, (*comp, (length, rest)))
            if rows is not None and rows - full - (rest > 0):
                add(room, rows - full - (rest > 0), comp)
            left = 0
    return [g for room in keys for g in at[room]]


class PackSampler(ResumableSampler):
    """Plan epochs of packed rows: several sequences back to back per row, seeded and shardable.

    Every row holds whole sequences, one after the other, in at most ``row_length`` steps; a
    batch is ``batch_size`` rows. Padded to ``row_length``, every batch has one shape. The
    packing (which lengths share a row) is best-fit decreasing, fixed at construction; each
    epoch deals the sequences to the slots, orders each row and shuffles the rows, all from
    ``(seed, epoch)`` alone.

    Args:
        lengths: length of every sequence (not modified). Every length must be at least 1: a
            packed sequence is only known by its steps.
        row_length: steps per row. Default: the longest length.
        batch_size: rows per batch.
        shuffle: deal, order and shuffle from ``(seed, epoch)``. When False every epoch is the
            packing order (longest sequences first) with sequences in index order.
        seed: non-negative seed.
        num_shards: number of data-parallel replicas.
        shard_index: this replica, in ``[0, num_shards)``.
        drop_remainder: leave out the rows that do not fill a group of ``num_shards`` full
            batches; their sequences are counted in ``num_dropped_``. When False nothing is
            dropped: the last incomplete group is re-split into ``num_shards`` (or
            ``m * num_shards``, for the smallest ``m`` that gives each batch a row) smaller
            batches.
        overlong: sequences longer than ``row_length``: ``"error"``, ``"truncate"`` (planned
            at ``row_length``; the pipeline cuts them, see ``length_limit``) or ``"drop"``
            (never planned; counted in ``num_dropped_``).

    Attributes:
        lengths: read-only int64 lengths as planned (after truncation).
        row_length: steps per row.
        length_limit: the length overlong sequences are truncated to, or None.
        num_rows_: rows per epoch, over all shards (before ``drop_remainder``).
        max_segments_: most sequences in one row (the ``S`` of packed per-sequence outputs).
        fill_: real steps / (rows x ``row_length``) of the packing.
        num_truncated_: sequences truncated.
        num_dropped_: sequences in no batch of an epoch (on any shard); the same every epoch.

    Raises:
        ValueError: bad or zero lengths, ``shard_index >= num_shards``, a sequence longer than
            ``row_length`` with ``overlong="error"``, or (with ``drop_remainder=False``) rows
            that cannot be shared out in equal batch counts per shard: fewer rows than shards,
            or ``batch_size=1`` and a row count that is not a multiple of ``num_shards``.

    Example:
        >>> s = PackSampler([5, 1, 2, 6, 2, 7, 1, 3], row_length=8, batch_size=2, seed=0)
        >>> len(s), s.num_rows_, round(s.fill_, 3)
        (2, 4, 0.844)
        >>> sorted(int(i) for batch in s.batches(0) for row in batch for i in row)
        [0, 1, 2, 3, 4, 5, 6, 7]
        >>> all(s.lengths[row].sum() <= 8 for batch in s.batches(0) for row in batch)
        True
    """

    _RESUME_OPTIONS = (
        "the same lengths, row_length, batch_size, shuffle, drop_remainder and overlong"
    )

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        *,
        row_length: int | None = None,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        num_shards: int = 1,
        shard_index: int = 0,
        drop_remainder: bool = False,
        overlong: Overlong = "error",
    ) -> None:
        raw = check_lengths(lengths)
        self._row_length_arg = check_int("row_length", row_length, minimum=1, allow_none=True)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.shuffle = check_bool("shuffle", shuffle)
        self.seed = check_int("seed", seed, minimum=0)
        self.num_shards, self.shard_index = check_shard(num_shards, shard_index)
        self.drop_remainder = check_bool("drop_remainder", drop_remainder)
        self.overlong = check_choice("overlong", overlong, ("error", "truncate", "drop"))
        self._setup(raw)
        self._start_at(0, 0)

    # ------------------------------------------------------------------ construction

    def _limit_lengths(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Apply ``overlong``; return the planned lengths and the kept indices (None: all)."""
        if int(raw.min()) < 1:
            pos = int(np.argmin(raw))
            raise ValueError(
                f"Argument `lengths` must hold lengths of at least 1 to pack. Received a "
                f"length of 0 at position {pos}\n"
                "- A packed sequence is only known by its steps: remove empty sequences "
                "first, or give them one step."
            )
        limit = self._row_length_arg
        self.num_truncated_ = 0
        self.length_limit: int | None = None
        if limit is None or int(raw.max()) <= limit:
            return raw, None
        over = raw > limit
        count = int(over.sum())
        if self.overlong == "error":
            pos = int(np.argmax(raw))
            raise ValueError(
                f"{count} sequence(s) are longer than `row_length`={limit}: the longest has "
                f"length {int(raw[pos])} (position {pos}). Received: overlong='error'\n"
                "- If they may be cut, pass overlong='truncate'; to leave them out, "
                "overlong='drop'; or raise `row_length` (default: the longest length)."
            )
        if self.overlong == "truncate":
            self.num_truncated_ = count
            self.length_limit = limit
            return np.minimum(raw, limit), None
        return raw, np.flatnonzero(~over)

    def _setup(self, raw: np.ndarray) -> None:
        self._raw = raw
        lengths, kept = self._limit_lengths(raw)
        lengths.flags.writeable = False
        self.lengths = lengths
        kept_lengths = lengths if kept is None else lengths[kept]
        width = int(kept_lengths.max()) if self._row_length_arg is None else self._row_length_arg
        self._width = width
        self.row_length = width
        counts = np.bincount(kept_lengths) if kept_lengths.size else np.zeros(1, np.int64)
        values = np.flatnonzero(counts)
        groups = _best_fit_decreasing(values, counts[values], width)

        # Expand the groups to rows: slot lengths in row order, and each row's slot count.
        row_parts, size_parts = [], []
        for rows, comp in groups:
            one = np.repeat([c[0] for c in comp], [c[1] for c in comp]).astype(np.int64)
            row_parts.append(np.tile(one, rows))
            size_parts.append(np.full(rows, one.size, np.int64))
        slot_len = np.concatenate(row_parts) if row_parts else np.zeros(0, np.int64)
        sizes = np.concatenate(size_parts) if size_parts else np.zeros(0, np.int64)
        self._row_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._slot_row = np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)
        self._slot_by_length = np.argsort(slot_len, kind="stable")
        items = np.arange(lengths.size, dtype=np.int64) if kept is None else kept
        self._items = items[np.argsort(kept_lengths, kind="stable")]
        self.num_rows_ = int(sizes.size)
        self.max_segments_ = int(sizes.max()) if sizes.size else 0
        self.fill_ = float(slot_len.sum() / max(1, self.num_rows_ * width))
        self._num_overlong = 0 if kept is None else int(lengths.size - kept.size)
        self._build_batches()
        self._fingerprint: str | None = None
        self._cache: PackedPlan | None = None

    def _build_batches(self) -> None:
        """Positions in the shuffled row order of every batch of this shard."""
        rows, bs, ns = self.num_rows_, self.batch_size, self.num_shards
        group = bs * ns
        full = rows // group
        starts = [np.arange(full * ns, dtype=np.int64) * bs]
        sizes = [np.full(full * ns, bs, np.int64)]
        rest = rows - full * group
        dropped_rows = 0
        if rest and self.drop_remainder:
            dropped_rows = rest
        elif rest:
            # Re-split the last m groups (with the incomplete one) into m * ns batches, for the
            # smallest m that gives every batch a row; each then holds at most bs rows.
            per_shard = full + 1
            m = next((m for m in range(1, per_shard + 1) if rest + (m - 1) * group >= m * ns), 0)
            if not m:
                raise ValueError(
                    f"Cannot give each of the num_shards={ns} shards the same number of "
                    f"batches: the sequences pack into {rows} row(s) of {self._width} steps "
                    f"and batch_size={bs}.\n"
                    "- Pass drop_remainder=True, use fewer shards, a larger `batch_size` or a "
                    "shorter `row_length`."
                )
            pool = rest + (m - 1) * group
            keep = (full - m + 1) * ns
            starts[0], sizes[0] = starts[0][:keep], sizes[0][:keep]
            cut = np.array_split(np.arange(rows - pool, rows, dtype=np.int64), m * ns)
            starts.append(np.array([c[0] for c in cut], np.int64))
            sizes.append(np.array([c.size for c in cut], np.int64))
        begin, size = np.concatenate(starts), np.concatenate(sizes)
        self._b_begin = begin[self.shard_index :: ns]
        self._b_size = size[self.shard_index :: ns]
        self._dropped_rows = dropped_rows

    @property
    def num_dropped_(self) -> int:
        return self._num_overlong + self._dropped_count

    # ------------------------------------------------------------------ planning

    def _deal(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """This epoch's sequence in every slot, and the row order."""
        slots = np.empty(self._slot_by_length.size, np.int64)
        if not self.shuffle:
            slots[self._slot_by_length] = self._items
            return slots, np.arange(self.num_rows_, dtype=np.int64)
        rng = np.random.default_rng([self.seed, epoch])
        items = rng.permutation(self._items)
        items = items[np.argsort(self.lengths[items], kind="stable")]
        slots[self._slot_by_length] = items
        # Row number plus a uniform fraction: one float sort orders each row at random while
        # keeping rows contiguous (cheaper than a two-key lexsort on millions of slots).
        slots = slots[np.argsort(self._slot_row + rng.random(slots.size))]
        # Rows left out by drop_remainder stay last: the same (least full) rows every epoch.
        kept = self.num_rows_ - self._dropped_rows
        order = np.concatenate([rng.permutation(kept), np.arange(kept, self.num_rows_)])
        return slots, order

    def plan(self, epoch: int | None = None) -> PackedPlan:
        """Plan one epoch for this shard (the current epoch when ``epoch`` is None).

        Args:
            epoch: non-negative epoch number.

        Returns:
            A :class:`~seqprep.PackedPlan`: this shard's batches, as index arrays (every
            sequence of a batch, row after row) and laid out in rows: ``slots`` is the
            ``(rows, S)`` matrix of the sequences in each row (``-1``: empty slot,
            ``S = max(1, max_segments_)``), ``rows_per_batch`` the rows of each batch.

        Example:
            >>> s = PackSampler([3, 1, 2, 4, 2], batch_size=2, shuffle=False)
            >>> p = s.plan(0)
            >>> p.slots.tolist(), p.rows_per_batch.tolist(), [b.tolist() for b in p]
            ([[3, -1], [2, 4], [0, 1]], [2, 1], [[3, 2, 4], [0, 1]])
        """
        epoch = self.epoch if epoch is None else self._check_epoch(epoch)
        if self._cache is None or self._cache.epoch != epoch:
            self._cache = self._plan(epoch)
        return self._cache

    def _plan(self, epoch: int) -> PackedPlan:
        slots, row_order = self._deal(epoch)
        sizes = self._b_size
        splits = np.zeros(sizes.size + 1, np.int64)
        np.cumsum(sizes, out=splits[1:])
        # This shard's rows in batch order, then their slots laid left-aligned in a matrix.
        within = np.arange(splits[-1], dtype=np.int64) - np.repeat(splits[:-1], sizes)
        rows = row_order[np.repeat(self._b_begin, sizes) + within]
        off = self._row_offsets
        counts = off[rows + 1] - off[rows]
        first = np.cumsum(counts) - counts
        col = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(first, counts)
        matrix = np.full((rows.size, max(1, self.max_segments_)), -1, np.int64)
        matrix[np.repeat(np.arange(rows.size), counts), col] = slots[np.repeat(off[rows], counts)
                                                                     + col]
        return PackedPlan.from_slots(matrix, splits, row_length=self._width, epoch=epoch,
                                     num_dropped=self.num_dropped_)

    def batches(self, epoch: int | None = None) -> list[list[np.ndarray]]:
        """This shard's batches of ``epoch`` (default: the current epoch).

        Args:
            epoch: non-negative epoch number.

        Returns:
            A new list of batches; each batch a list of rows; each row a read-only int64 array
            of sequence indices in the order they are laid in the row (``plan(epoch)``'s
            ``row_batches``).

        Example:
            >>> s = PackSampler([3, 1, 2, 4, 2], batch_size=2, shuffle=False)
            >>> [[row.tolist() for row in batch] for batch in s.batches(0)]
            [[[3], [2, 4]], [[0, 1]]]
        """
        return [list(b) for b in self.plan(epoch).row_batches]

    @property
    def _dropped_count(self) -> int:
        if not self._dropped_rows:
            return 0
        first = self._row_offsets[self.num_rows_ - self._dropped_rows]
        return int(self._row_offsets[-1] - first)

    def __len__(self) -> int:
        return int(self._b_begin.size)

    # ------------------------------------------------------------------ resuming

    def _fingerprint_parts(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        config = (
            self._row_length_arg, self.batch_size, self.shuffle, self.drop_remainder,
            self.overlong,
        )
        return (self._raw,), config

    # ------------------------------------------------------------------ pickling

    def __getstate__(self) -> dict[str, Any]:
        names = (
            "_row_length_arg", "batch_size", "shuffle", "seed", "num_shards", "shard_index",
            "drop_remainder", "overlong",
        )
        state = {k: getattr(self, k) for k in names}
        state.update(self._position_state())
        state["_raw"] = self._raw
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        raw = state.pop("_raw")
        position = {k: state.pop(k) for k in ("_epoch", "_position")}
        self.__dict__.update(state)
        self._setup(raw)
        self._restore_position(position)

    def __repr__(self) -> str:
        shards = "" if self.num_shards == 1 else f", shard {self.shard_index}/{self.num_shards}"
        return (
            f"PackSampler(n={self.lengths.size}, row_length={self._width}, "
            f"batch_size={self.batch_size}, shuffle={self.shuffle}, seed={self.seed}{shards}): "
            f"{len(self)} batches per epoch, {self.num_rows_} rows, fill {self.fill_:.1%}, "
            f"up to {self.max_segments_} sequences per row, {self.num_dropped_} dropped, "
            f"{self.num_truncated_} truncated"
        )
