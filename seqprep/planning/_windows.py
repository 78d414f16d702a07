"""Chunk planner for truncated backpropagation through time (numpy only, no TensorFlow).

The planner decides where every step of every sequence goes when variable-length sequences are
trained window by window with a stateful RNN of a fixed batch size:

* each sequence gets one batch **row**; a row holds several sequences one after another;
* rows are cut into **windows** of ``window`` steps; one window of all rows is one model call;
* every sequence starts at a window boundary. The tail of a sequence's last window is padding,
  so a row's state only ever has to be reset *before* a window, never in the middle of one, and
  the padding inside a window is always at the end of a row (post-padding, the layout the cuDNN
  kernel accepts). The price is at most ``window - 1`` padded steps per sequence; the plan reports
  it as :attr:`TBPTTPlan.padding_fraction`.

Cells are stored compactly, one entry per (window, row): which sequence the cell holds, the step
of that sequence at the cell's first position and how many of its steps are real. Per-step views
(:attr:`TBPTTPlan.mask`, :attr:`TBPTTPlan.source_step`, ...) are computed from those on demand.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np

from seqprep._core.checks import check_bool, check_choice, check_int, check_lengths
from seqprep.planning._protocol import EpochPlanner

# How sequences are placed in window rows (bucketing.per_length.BatchOrder orders batches).
WindowOrder = Literal["longest_first", "shuffle", "input"]
ORDERS: tuple[str, ...] = ("longest_first", "shuffle", "input")


@dataclass(frozen=True, eq=False)
class _WindowGrid:
    """What every TBPTT plan derives the same way from its fields ``lengths``, ``batch_size``
    and ``window`` and its ``n_windows``, and the fields it shares with
    :class:`~seqprep.BatchPlan` (``epoch``, ``num_dropped``, ``batches``)."""

    window: int
    batch_size: int
    lengths: np.ndarray
    row: np.ndarray

    def __post_init__(self) -> None:
        # Plans are read-only, as BatchPlan's arrays are: every array field, whoever built it.
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    def _first_steps(self) -> np.ndarray:  # pragma: no cover - abstract
        """Position of each sequence's first step in its row's stream of steps."""
        raise NotImplementedError

    @property
    def num_dropped(self) -> int:
        """Sequences left out of the plan: always 0 (every step of every sequence is planned)."""
        return 0

    @property
    def batches(self) -> tuple[np.ndarray, ...]:
        """The sequences that start in each window, as read-only int64 arrays (by row, then
        position); one per window, so every non-empty sequence appears exactly once. The
        view a :class:`~seqprep.BatchPlan` gives of its batches; empty sequences take no
        window and appear in none."""
        placed = np.flatnonzero(self.lengths > 0)
        first = self._first_steps()[placed]
        windows = first // self.window
        ordered = placed[np.lexsort((first, self.row[placed], windows))]
        counts = np.bincount(windows, minlength=self.n_windows)
        parts = np.split(ordered, np.cumsum(counts)[:-1]) if self.n_windows else []
        for part in parts:
            part.flags.writeable = False
        return tuple(parts)

    @property
    def last_window(self) -> np.ndarray:
        """int64 ``(n,)``: window holding each sequence's last step (``-1`` if empty)."""
        end = self._first_steps() + self.lengths - 1
        return np.where(self.lengths > 0, end // self.window, -1)

    @property
    def last_row(self) -> np.ndarray:
        """int64 ``(n,)``: row holding each sequence's last step (``-1`` if empty)."""
        return self.row.copy()

    @property
    def last_offset(self) -> np.ndarray:
        """int64 ``(n,)``: position of each sequence's last step inside its last window
        (``-1`` if empty)."""
        end = self._first_steps() + self.lengths - 1
        return np.where(self.lengths > 0, end % self.window, -1)

    @property
    def num_sequences(self) -> int:
        """Number of sequences planned."""
        return int(self.lengths.shape[0])

    @property
    def real_steps(self) -> int:
        """Total real steps, ``lengths.sum()``."""
        return int(self.lengths.sum())

    @property
    def total_steps(self) -> int:
        """Total positions in the plan, ``n_windows * batch_size * window``."""
        return self.n_windows * self.batch_size * self.window

    @property
    def padding_fraction(self) -> float:
        """Share of the plan's positions that are padding (0.0 for an empty plan)."""
        total = self.total_steps
        return 0.0 if total == 0 else 1.0 - self.real_steps / total

    def _checked_offsets(self, offsets: np.ndarray) -> np.ndarray:
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.shape != (self.num_sequences + 1,) or np.any(
            np.diff(offsets) != self.lengths
        ):
            raise ValueError(
                "Argument `offsets` does not match the plan's lengths: expected "
                f"{self.num_sequences + 1} offsets whose differences are the lengths. "
                f"Received offsets of shape {offsets.shape}.\n"
                "- Pass the offsets of the same sequences the plan was made from."
            )
        return offsets


@dataclass(frozen=True, eq=False)
class TBPTTPlan(_WindowGrid):
    """Where every step of every sequence goes, window by window.

    Made by :func:`plan_tbptt`; read-only. Window ``w`` of the plan is one model call on a batch
    of shape ``(batch_size, window, ...)``. Sequence ``i`` lives in row ``row[i]`` and covers the
    windows ``first_window[i]`` to ``last_window[i]`` (inclusive) of that row, starting at offset 0
    of its first window.

    Attributes:
        window: Steps per window.
        batch_size: Rows per window (the model's fixed batch size).
        lengths: int64 ``(n,)``, the length of every sequence.
        row: int64 ``(n,)``, the row of every sequence (``-1`` for an empty sequence).
        first_window: int64 ``(n,)``, the window where each sequence starts (``-1`` if empty).
        sequence: int64 ``(n_windows, batch_size)``, the sequence held by each cell, ``-1`` for a
            cell that is all padding.
        start: int64 ``(n_windows, batch_size)``, the step of that sequence at the cell's first
            position (0 for padding cells).
        count: int64 ``(n_windows, batch_size)``, the number of real steps in each cell; they are
            always the cell's first ``count`` positions.
        epoch: the ``epoch`` it was planned for (it changes the plan only with
            ``order="shuffle"``).
    """

    first_window: np.ndarray
    sequence: np.ndarray
    start: np.ndarray
    count: np.ndarray
    epoch: int = 0

    def _first_steps(self) -> np.ndarray:
        return self.first_window * self.window

    @property
    def n_windows(self) -> int:
        """Number of windows (model calls) in one pass over the data."""
        return int(self.sequence.shape[0])

    @property
    def resets(self) -> np.ndarray:
        """bool ``(n_windows, batch_size)``: rows whose state must be zeroed before window ``w``.

        True exactly where a new sequence starts, so a row that holds several sequences is reset
        once per sequence and a row that has run out is never reset again.
        """
        return (self.sequence >= 0) & (self.start == 0)

    @property
    def ends(self) -> np.ndarray:
        """bool ``(n_windows, batch_size)``: cells holding the last real step of their sequence."""
        held = np.maximum(self.sequence, 0)
        return (self.sequence >= 0) & (self.start + self.count == self.lengths[held])

    @property
    def idle(self) -> np.ndarray:
        """bool ``(n_windows, batch_size)``: cells that are all padding (the row has run out)."""
        return self.count == 0

    @property
    def mask(self) -> np.ndarray:
        """bool ``(n_windows, batch_size, window)``: True on real steps, False on padding."""
        return np.arange(self.window) < self.count[..., None]

    @property
    def source_sequence(self) -> np.ndarray:
        """int64 ``(n_windows, batch_size, window)``: sequence of each step, ``-1`` on padding."""
        return np.where(self.mask, self.sequence[..., None], -1)

    @property
    def source_step(self) -> np.ndarray:
        """int64 ``(n_windows, batch_size, window)``: step (time index) within its sequence of
        each position, ``-1`` on padding."""
        return np.where(self.mask, self.start[..., None] + np.arange(self.window), -1)

    @property
    def n_windows_of(self) -> np.ndarray:
        """int64 ``(n,)``: windows each sequence spans, ``ceil(length / window)``."""
        return -(-self.lengths // self.window)

    def flat_index(self, offsets: np.ndarray, window: int | None = None) -> np.ndarray:
        """Indices into flat (concatenated) sequence values, ``-1`` on padding.

        Args:
            offsets: int ``(n + 1,)``, where each sequence starts in the flat values
                (``offsets[i + 1] - offsets[i] == lengths[i]``).
            window: Only this window (shape ``(batch_size, window)``); default all windows
                (shape ``(n_windows, batch_size, window)``).

        Returns:
            int64 array of indices; gather ``values[index]`` and overwrite where ``index < 0``.
        """
        offsets = self._checked_offsets(offsets)
        cells = slice(None) if window is None else window
        sequence, start, count = self.sequence[cells], self.start[cells], self.count[cells]
        base = offsets[np.maximum(sequence, 0)] + start
        positions = np.arange(self.window)
        return np.where(
            positions < count[..., None], base[..., None] + positions, np.int64(-1)
        )

    def __repr__(self) -> str:
        return (
            f"TBPTTPlan(num_sequences={self.num_sequences}, batch_size={self.batch_size}, "
            f"window={self.window}, n_windows={self.n_windows}, "
            f"padding_fraction={self.padding_fraction:.3f})"
        )


def plan_tbptt(
    lengths: np.ndarray | list[int],
    *,
    window: int,
    batch_size: int,
    order: WindowOrder = "longest_first",
    seed: int = 0,
    epoch: int = 0,
    dense: bool = False,
) -> TBPTTPlan | DenseTBPTTPlan:
    """Lay variable-length sequences into batch rows and cut the rows into windows.

    Each sequence is placed, whole, at the end of the row that is currently the shortest (ties go
    to the lowest row), so a row holds several sequences one after another. Sequences take whole
    windows: a sequence of length ``L`` spans ``ceil(L / window)`` windows and the next sequence
    of its row starts at the following window boundary. State resets therefore happen only before
    a window, and padding sits only at the end of a sequence's last window or after a row has run
    out. Empty sequences take no space.

    Args:
        lengths: Length of each sequence (non-negative integers).
        window: Steps per window (the truncation length of backpropagation), at least 1.
        batch_size: Number of rows, the batch size of the stateful model, at least 1.
        order: Order in which sequences are placed: ``"longest_first"`` (greedy
            longest-processing-time packing, the fewest windows), ``"shuffle"`` (a seeded random
            order; different for every ``epoch``) or ``"input"`` (as given).
        seed: Seed for ``order="shuffle"``.
        epoch: Epoch number, mixed into the seed for ``order="shuffle"``.
        dense: Lay each row's sequences back to back instead (the next sequence starts right
            after the previous one ends, inside the same window) and return a
            :class:`DenseTBPTTPlan` with per-step reset flags; rows are then padded only after
            their last sequence. Placement goes by steps onto the row with the fewest steps so
            far (or keeps the windowed rows where those come out shorter), so a dense plan never
            has more windows than the windowed one.

    Returns:
        A :class:`TBPTTPlan`, or a :class:`DenseTBPTTPlan` if ``dense=True``.

    Raises:
        ValueError: If ``window`` or ``batch_size`` is below 1, ``order`` is unknown or
            ``lengths`` is empty or negative.
        TypeError: If an argument has the wrong type.

    Example:
        >>> plan = plan_tbptt([5, 2, 3], window=2, batch_size=2)
        >>> plan.sequence.tolist()  # window x row: row 1 holds sequence 2, then sequence 1
        [[0, 2], [0, 2], [0, 1]]
        >>> plan.resets.tolist()  # row 1 is reset again when sequence 1 starts
        [[True, True], [False, False], [False, True]]
        >>> plan.count.tolist()  # real steps per cell, always at the start of the cell
        [[2, 2], [2, 1], [1, 2]]
        >>> plan.last_window.tolist(), plan.last_row.tolist(), plan.last_offset.tolist()
        ([2, 2, 1], [0, 1, 1], [0, 1, 0])
        >>> [b.tolist() for b in plan.batches]  # the sequences that start in each window
        [[0, 2], [], [1]]
        >>> dense = plan_tbptt([5, 2, 3], window=2, batch_size=2, dense=True)
        >>> dense.source_sequence[:, 1].tolist()  # row 1: sequence 2, then 1 mid-window
        [[2, 2], [2, 1], [1, -1]]
        >>> dense.resets[:, 1].astype(int).tolist()
        [[1, 0], [0, 1], [0, 0]]
        >>> lengths = [3, 3, 3, 3, 2]  # padded steps: windowed vs dense
        >>> [plan_tbptt(lengths, window=4, batch_size=2, dense=d).total_steps - sum(lengths)
        ...  for d in (False, True)]
        [10, 2]
    """
    lengths = check_lengths(lengths)
    window = check_int("window", window, minimum=1, fix="If you want no truncation, set "
                       "`window` to the longest length.")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    check_choice("order", order, ORDERS)
    seed = check_int("seed", seed)
    epoch = check_int("epoch", epoch, minimum=0)
    check_bool("dense", dense)

    n = lengths.shape[0]
    spans = -(-lengths // window)  # windows per sequence
    if order == "longest_first":
        placing = np.argsort(-lengths, kind="stable")
    elif order == "shuffle":
        placing = np.random.default_rng([seed & 0xFFFFFFFF, epoch]).permutation(n)
    else:
        placing = np.arange(n)
    if dense:
        return _plan_dense(lengths, placing, window, batch_size, epoch)

    row = np.full(n, -1, dtype=np.int64)
    first_window = np.full(n, -1, dtype=np.int64)
    loads = [(0, r) for r in range(batch_size)]  # (windows used, row): a heap
    for i in placing[spans[placing] > 0].tolist():
        used, r = loads[0]
        row[i] = r
        first_window[i] = used
        heapq.heapreplace(loads, (used + int(spans[i]), r))
    n_windows = max(used for used, _ in loads)

    sequence = np.full((n_windows, batch_size), -1, dtype=np.int64)
    start = np.zeros((n_windows, batch_size), dtype=np.int64)
    count = np.zeros((n_windows, batch_size), dtype=np.int64)
    placed = np.flatnonzero(spans > 0)
    cell_seq = np.repeat(placed, spans[placed])
    first_cell = np.cumsum(spans[placed]) - spans[placed]
    within = np.arange(cell_seq.shape[0]) - np.repeat(first_cell, spans[placed])
    cell_window = first_window[cell_seq] + within
    cell_row = row[cell_seq]
    sequence[cell_window, cell_row] = cell_seq
    start[cell_window, cell_row] = within * window
    count[cell_window, cell_row] = np.minimum(window, lengths[cell_seq] - within * window)

    return TBPTTPlan(
        window=window,
        batch_size=batch_size,
        lengths=lengths,
        row=row,
        first_window=first_window,
        sequence=sequence,
        start=start,
        count=count,
        epoch=epoch,
    )


class TBPTTPlanner(EpochPlanner):
    """The TBPTT planner: sequences laid into ``batch_size`` rows, cut into windows, per epoch.

    ``plan(epoch)`` is :func:`plan_tbptt` of the lengths for that epoch (a :class:`TBPTTPlan`,
    or a :class:`DenseTBPTTPlan` with ``dense=True``); its batches are the windows (the
    sequences that start in each). A :class:`~seqprep.Planner`: ``len`` is the current
    epoch's number of windows (the same every epoch unless ``order="shuffle"``), iteration
    yields the current epoch's remaining windows' sequences, and ``state_dict`` /
    ``load_state_dict`` resume mid-epoch.

    Args:
        lengths: length of each sequence (not modified).
        window: steps per window, at least 1.
        batch_size: rows (the stateful model's batch size), at least 1.
        order: ``"longest_first"``, ``"shuffle"`` or ``"input"`` (see :func:`plan_tbptt`).
        seed: seed for ``order="shuffle"``.
        dense: lay each row's sequences back to back (see :func:`plan_tbptt`).

    Raises:
        ValueError: as :func:`plan_tbptt`.

    Example:
        >>> planner = TBPTTPlanner([5, 2, 3], window=2, batch_size=2)
        >>> len(planner), planner.plan(0).sequence.tolist()
        (3, [[0, 2], [0, 2], [0, 1]])
        >>> [b.tolist() for b in planner]  # the sequences that start in each window
        [[0, 2], [], [1]]
    """

    _RESUME_OPTIONS = "the same lengths, window, batch_size, order and dense"
    num_shards = 1
    shard_index = 0

    def __init__(
        self,
        lengths: np.ndarray | list[int],
        *,
        window: int,
        batch_size: int,
        order: WindowOrder = "longest_first",
        seed: int = 0,
        dense: bool = False,
    ) -> None:
        self.lengths = check_lengths(lengths).copy()
        self.lengths.flags.writeable = False
        # Epoch 0's plan, which checks every option the way plan_tbptt does.
        self._cache = plan_tbptt(self.lengths, window=window, batch_size=batch_size,
                                 order=order, seed=seed, dense=dense)
        self.window, self.batch_size, self.order = int(window), int(batch_size), order
        self.seed, self.dense = int(seed), bool(dense)
        self._options = {"window": self.window, "batch_size": self.batch_size, "order": order,
                         "seed": self.seed, "dense": self.dense}
        self._start_at(0, 0)

    def _plan(self, epoch: int) -> TBPTTPlan | DenseTBPTTPlan:
        return plan_tbptt(self.lengths, epoch=epoch, **self._options)

    def __len__(self) -> int:
        return len(self.plan(self.epoch).batches)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # An epoch's length is its windows: check the position against the saved epoch's.
        before = self._state()
        epoch = state.get("epoch") if isinstance(state, dict) else None
        if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0:
            self._start_at(epoch, 0)
        try:
            super().load_state_dict(state)
        except ValueError:
            self._start_at(*before)
            raise

    def _fingerprint_parts(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        return (self.lengths,), (self.window, self.batch_size, self.order, self.dense)

    def __repr__(self) -> str:
        return (f"TBPTTPlanner({self.lengths.size} sequences, window={self.window}, "
                f"batch_size={self.batch_size}, order={self.order!r}, dense={self.dense})")


@dataclass(frozen=True, eq=False)
class DenseTBPTTPlan(_WindowGrid):
    """A TBPTT plan whose rows hold sequences back to back, with resets inside windows.

    Made by ``plan_tbptt(..., dense=True)``; read-only. Each row is one stream of steps: the next
    sequence of a row starts right after the previous one ends, even in the middle of a window,
    so padding only follows the end of a row's stream. The recurrent state of a row must then be
    reset at every step flagged in :attr:`resets`, inside the window.

    Attributes:
        window: Steps per window.
        batch_size: Rows per window.
        lengths: int64 ``(n,)``, the length of every sequence.
        row: int64 ``(n,)``, the row of every sequence (``-1`` for an empty sequence).
        offset: int64 ``(n,)``, the position of each sequence's first step in its row's stream
            (``-1`` for an empty sequence).
        n_windows: Number of windows (model calls) in one pass over the data.
        epoch: the ``epoch`` it was planned for (it changes the plan only with
            ``order="shuffle"``).
    """

    offset: np.ndarray
    n_windows: int
    epoch: int = 0

    def _first_steps(self) -> np.ndarray:
        return self.offset

    def _stream(self) -> tuple[np.ndarray, np.ndarray]:
        """(sequence, step) of every row position, shape ``(batch_size, n_windows * window)``."""
        width = self.n_windows * self.window
        sequence = np.full((self.batch_size, width), -1, dtype=np.int64)
        step = np.full((self.batch_size, width), -1, dtype=np.int64)
        placed = np.flatnonzero(self.lengths > 0)
        held = np.repeat(placed, self.lengths[placed])
        first = np.cumsum(self.lengths[placed]) - self.lengths[placed]
        within = np.arange(held.shape[0]) - np.repeat(first, self.lengths[placed])
        sequence[self.row[held], self.offset[held] + within] = held
        step[self.row[held], self.offset[held] + within] = within
        return sequence, step

    def _by_window(self, stream: np.ndarray) -> np.ndarray:
        shaped = stream.reshape(self.batch_size, self.n_windows, self.window)
        return np.ascontiguousarray(shaped.transpose(1, 0, 2))

    @property
    def source_sequence(self) -> np.ndarray:
        """int64 ``(n_windows, batch_size, window)``: sequence of each step, ``-1`` on padding."""
        return self._by_window(self._stream()[0])

    @property
    def source_step(self) -> np.ndarray:
        """int64 ``(n_windows, batch_size, window)``: step within its sequence of each position,
        ``-1`` on padding."""
        return self._by_window(self._stream()[1])

    @property
    def mask(self) -> np.ndarray:
        """bool ``(n_windows, batch_size, window)``: True on real steps, False on padding."""
        return self.source_sequence >= 0

    @property
    def resets(self) -> np.ndarray:
        """bool ``(n_windows, batch_size, window)``: True at each sequence's first step, where
        the row's state must be zeroed before the step is run."""
        return self.source_step == 0

    @property
    def ends(self) -> np.ndarray:
        """bool ``(n_windows, batch_size, window)``: True at each sequence's last step."""
        sequence, step = self._stream()
        last = (sequence >= 0) & (step == self.lengths[np.maximum(sequence, 0)] - 1)
        return self._by_window(last)

    def flat_index(self, offsets: np.ndarray, window: int | None = None) -> np.ndarray:
        """Indices into flat (concatenated) sequence values, ``-1`` on padding.

        Args:
            offsets: int ``(n + 1,)``, where each sequence starts in the flat values.
            window: Only this window (shape ``(batch_size, window)``); default all windows.

        Returns:
            int64 array of indices; gather ``values[index]`` and overwrite where ``index < 0``.
        """
        offsets = self._checked_offsets(offsets)
        sequence, step = self.source_sequence, self.source_step
        if window is not None:
            sequence, step = sequence[window], step[window]
        return np.where(sequence >= 0, offsets[np.maximum(sequence, 0)] + step, np.int64(-1))

    def as_calls(self) -> TBPTTPlan:
        """The model calls that run this plan on a model that resets state only between calls.

        Each window is split at every step where some row starts a new sequence, so every
        piece holds, per row, the steps of at most one sequence (or padding) at its start; the
        pieces are returned, in order, as the cells of a :class:`TBPTTPlan` (one "window" per
        piece, each piece left-aligned and padded to ``window`` steps). Running them one after
        another with the windowed executor gives exactly the outputs of the dense plan. Only
        the cell arrays (``sequence``, ``start``, ``count``, ``row`` and the per-step and
        per-cell views) are meaningful on the result; its per-sequence window properties
        (``first_window``, ``last_window``, ``last_offset``) do not describe the pieces.

        Returns:
            A :class:`TBPTTPlan` with one window per piece.

        Example:
            >>> dense = plan_tbptt([3, 1, 2], window=4, batch_size=1, order="input", dense=True)
            >>> calls = dense.as_calls()
            >>> calls.sequence.tolist(), calls.start.tolist(), calls.count.tolist()
            ([[0], [1], [2]], [[0], [0], [0]], [[3], [1], [2]])
        """
        sequence, step = self.source_sequence, self.source_step
        pieces = []  # (window, first position, end position) of every piece
        for w in range(self.n_windows):
            cuts = np.flatnonzero(self.resets[w].any(axis=0)).tolist()
            bounds = sorted({0, *cuts, self.window})
            pieces += [(w, a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        shape = (len(pieces), self.batch_size)
        cell_sequence = np.full(shape, -1, dtype=np.int64)
        cell_start = np.zeros(shape, dtype=np.int64)
        cell_count = np.zeros(shape, dtype=np.int64)
        for k, (w, a, b) in enumerate(pieces):
            cell_count[k] = (sequence[w, :, a:b] >= 0).sum(axis=1)
            real = cell_count[k] > 0
            cell_sequence[k, real] = sequence[w, real, a]
            cell_start[k, real] = step[w, real, a]
        first_call = np.full(self.num_sequences, -1, dtype=np.int64)
        starts = (cell_sequence >= 0) & (cell_start == 0)
        first_call[cell_sequence[starts]] = np.nonzero(starts)[0]
        return TBPTTPlan(
            window=self.window,
            batch_size=self.batch_size,
            lengths=self.lengths,
            row=self.row,
            first_window=first_call,
            sequence=cell_sequence,
            start=cell_start,
            count=cell_count,
            epoch=self.epoch,
        )

    def __repr__(self) -> str:
        return (
            f"DenseTBPTTPlan(num_sequences={self.num_sequences}, "
            f"batch_size={self.batch_size}, window={self.window}, n_windows={self.n_windows}, "
            f"padding_fraction={self.padding_fraction:.3f})"
        )


def _greedy_rows(
    sizes: np.ndarray, placing: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Each item goes after the end of the row with the least so far (ties: lowest row).

    Returns each item's row and start (``-1`` for items of size 0) and the largest row load.
    """
    row = np.full(sizes.shape[0], -1, dtype=np.int64)
    start = np.full(sizes.shape[0], -1, dtype=np.int64)
    loads = [(0, r) for r in range(batch_size)]  # (used, row): a heap
    for i in placing[sizes[placing] > 0].tolist():
        used, r = loads[0]
        row[i] = r
        start[i] = used
        heapq.heapreplace(loads, (used + int(sizes[i]), r))
    return row, start, max(used for used, _ in loads)


def _plan_dense(
    lengths: np.ndarray, placing: np.ndarray, window: int, batch_size: int, epoch: int = 0
) -> DenseTBPTTPlan:
    """Greedy placement by steps; falls back to the windowed rows if those are shorter.

    Greedy list scheduling is not monotone in the item sizes, so placing by steps can, rarely,
    end with a longer row than placing by whole windows. The windowed rows with their gaps
    closed are a valid dense layout, so taking the better of the two guarantees the dense plan
    never has more windows (nor padded steps) than the windowed plan of the same order.
    """
    row, offset, longest = _greedy_rows(lengths, placing, batch_size)
    spans = -(-lengths // window)
    windowed_row, _, windowed_longest = _greedy_rows(spans, placing, batch_size)
    if -(-longest // window) > windowed_longest:
        row = windowed_row
        offset = np.full(lengths.shape[0], -1, dtype=np.int64)
        for r in range(batch_size):
            here = placing[row[placing] == r]
            offset[here] = np.cumsum(lengths[here]) - lengths[here]
        longest = int(np.bincount(row[row >= 0], weights=lengths[row >= 0]).max())
    return DenseTBPTTPlan(
        window=window,
        batch_size=batch_size,
        lengths=lengths,
        row=row,
        offset=offset,
        n_windows=-(-longest // window),
        epoch=epoch,
    )
