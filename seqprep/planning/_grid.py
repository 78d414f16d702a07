"""2-D buckets: boundaries for examples with several lengths (encoder–decoder pairs).

An example of an encoder–decoder model has a length per field (source and target). Padding
each field of a batch to that field's longest member, a batch costs::

    rows x (w_1 * longest field 1 + w_2 * longest field 2 + ...)

padded steps (``w_f`` are per-field weights, 1 by default: a recurrent encoder and decoder pay
one step per padded position of their own side). Bucketing on one field leaves the other
unsorted; sorting by one field then the other gives no fresh order per epoch. Here each field
has its own boundaries and an example's bucket is a *cell* of the grid they draw (bucket
``(i, j)`` holds the examples whose first field is in band ``i`` and second in band ``j``,
half-open as in 1-D); cells are numbered row-major (``np.ravel_multi_index``).

The boundaries are chosen jointly (:func:`fit_grid`): for a given number of bands per field,
coordinate descent runs an exact dynamic programme along one field at a time with the bands
of the others fixed, on the cost of padding every example to its cell's longest lengths
(the sum over cells of ``count x sum_f w_f longest_f``). The number of bands per field is
searched on a ladder, each candidate scored by the padded steps of the batches the sampler
actually builds from it (full batches per cell, partial ones merged across neighbouring cells
by :func:`merge_leftovers`), so too fine a grid, whose leftovers cost more than its cells save,
loses.

Numpy only: no TensorFlow or Keras here.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from seqprep.planning._boundaries import (
    _atoms,
    _cuts_from_back,
    _optimal_tables,
    as_boundaries,
    batch_capacity,
    length_histogram,
)

__all__ = [
    "cover_lengths", "fit_grid", "grid_cells", "leftover_buckets", "merge_leftovers",
    "row_lengths", "snake_rank",
]

FieldTokens = Literal["sum", "max"]

# The dynamic programme works on at most this many groups of neighbouring lengths per field.
_MAX_ATOMS = 48
# Bands per field tried by the search; a grid has at most two cells per batch of an epoch (a
# cell of less than half a batch is mostly a leftover: it saves little and merges worse).
_LADDER = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48)
_DESCENT_ROUNDS = 2
# Elements per block of the band-cost computation (bounds its memory to a few MB).
_BAND_BLOCK = 1 << 18


def row_lengths(pads: np.ndarray, field_tokens: FieldTokens) -> np.ndarray:
    """The token length of rows padded to ``pads`` (last axis: fields): their sum or max."""
    return pads.sum(axis=-1) if field_tokens == "sum" else pads.max(axis=-1)


def grid_cells(lengths: np.ndarray, boundaries: Sequence[np.ndarray]) -> np.ndarray:
    """The cell of every row of ``lengths`` ``(n, k)`` in the grid of per-field ``boundaries``.

    Example:
        >>> grid_cells(np.array([[3, 9], [12, 2], [12, 20]]), [np.array([10]), np.array([5])])
        array([1, 2, 3])
    """
    shape = tuple(b.size + 1 for b in boundaries)
    coords = [band_of(lengths[:, f], b) for f, b in enumerate(boundaries)]
    return np.ravel_multi_index(coords, shape).astype(np.int64)


def band_of(values: np.ndarray, boundaries: np.ndarray, side: str = "right") -> np.ndarray:
    """``np.searchsorted(boundaries, values, side)`` for non-negative ``values``, by table
    lookup when they are small (lengths usually are: one pass, no binary search per value)."""
    top = int(values.max()) if values.size else 0
    if values.size > 4096 and top <= max(1 << 20, values.size):
        return np.searchsorted(boundaries, np.arange(top + 1), side=side)[values]
    return np.searchsorted(boundaries, values, side=side)


def cover_lengths(cells: np.ndarray, lengths: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Per cell and field, the longest length in that cell or any cell below it on every axis.

    A batch whose members come from several cells is labelled with their *cover*, the cell of
    the largest band on every field (:func:`merge_leftovers`); these widths cover every such
    batch, so a batch's ``pad_to="bucket"`` widths depend on its label alone.

    Returns:
        int64 ``(cells, fields)``, non-decreasing along every axis of the grid.
    """
    k = lengths.shape[1]
    longest = np.zeros((int(np.prod(shape)), k), np.int64)
    if cells.size:
        np.maximum.at(longest, cells, lengths)
    cover = longest.reshape(*shape, k)
    for axis in range(len(shape)):
        np.maximum.accumulate(cover, axis=axis, out=cover)
    return cover.reshape(-1, k)


def snake_rank(shape: tuple[int, ...]) -> np.ndarray:
    """Each cell's place on a path through the grid that moves to a neighbouring cell at
    every step (boustrophedon: row 0 left to right, row 1 right to left, ...).

    Leftovers are merged along this path, so a merged batch spans neighbouring cells; in 1-D
    it is the bucket order itself.

    Example:
        >>> snake_rank((2, 3)).reshape(2, 3).tolist()
        [[0, 1, 2], [5, 4, 3]]
    """
    coords = np.indices(shape).reshape(len(shape), -1)
    rank = np.zeros(coords.shape[1], np.int64)
    for n, c in zip(shape, coords, strict=True):
        rank = rank * n + np.where(rank % 2 == 0, c, n - 1 - c)
    return rank


def merge_leftovers(
    counts: np.ndarray,
    capacity: np.ndarray,
    shape: tuple[int, ...],
    merge: bool,
) -> tuple[list[int], list[int], list[int]]:
    """Batch the partial leftovers of every bucket, along :func:`snake_rank`:
    ``(begin, size, label)``.

    ``begin`` counts leftover slots (the leftovers of all buckets, one after the other in
    snake order; in 1-D, bucket order). With ``merge`` a leftover fills up the open batch of
    the buckets before it as far as the capacity of the batch's new label allows; the label of
    a batch is the *cover* of its buckets (on a grid of ``shape``, the cell of the largest band
    on every axis; in 1-D simply the last bucket), whose capacity never exceeds any member's,
    so the budget holds.
    """
    strides = np.cumprod((1, *shape[:0:-1]))[::-1].tolist()
    t_begin: list[int] = []
    t_size: list[int] = []
    t_label: list[int] = []
    cur, filled, label = 0, 0, -1
    for b in leftover_buckets(counts, capacity, shape).tolist():
        r = int(counts[b] % capacity[b])
        if merge and cur:
            top = b if len(shape) == 1 else _cover_pair(label, b, shape, strides)
            c = int(capacity[top])
            if c - cur > 0:
                take = min(c - cur, r)
                cur += take
                t_size[-1], t_label[-1] = cur, top
                label = top
                r -= take
                filled += take
                if cur == c:
                    cur = 0
        if r:
            t_begin.append(filled)
            t_size.append(r)
            t_label.append(b)
            cur, label = r, b
            filled += r
    return t_begin, t_size, t_label


def leftover_buckets(counts: np.ndarray, capacity: np.ndarray, shape: tuple[int, ...]):
    """The buckets with a partial batch left over, in the order their leftovers are merged."""
    partial = np.flatnonzero(counts % capacity)
    if len(shape) == 1:
        return partial
    return partial[np.argsort(snake_rank(shape)[partial], kind="stable")]


def _cover_pair(a: int, b: int, shape: tuple[int, ...], strides: list[int]) -> int:
    out = 0
    for n, s in zip(shape, strides, strict=True):
        out += max((a // s) % n, (b // s) % n) * s
    return out


def cover_label(labels: np.ndarray, shape: tuple[int, ...]) -> int:
    """The cover of ``labels`` (buckets, or cells of a grid of ``shape``): see merge_leftovers."""
    if len(shape) == 1:
        return int(labels.max())
    coords = np.unravel_index(np.asarray(labels, np.int64), shape)
    return int(np.ravel_multi_index(tuple(int(c.max()) for c in coords), shape))


# --------------------------------------------------------------------------- boundaries


def as_grid_boundaries(boundaries: Any, names: tuple[Any, ...]) -> tuple[np.ndarray, ...]:
    """Per-field boundaries given by the user: a sequence of ``k`` boundary lists, or a dict by
    field name; each as :func:`~seqprep.planning.as_boundaries` (a fitted Bucketer too)."""
    k = len(names)
    if isinstance(boundaries, dict):
        missing = [n for n in names if n not in boundaries]
        extra = [n for n in boundaries if n not in names]
        if missing or extra:
            raise ValueError(
                f"Argument `boundaries` as a dict must have one entry per field {list(names)}. "
                f"Received keys {list(boundaries)}\n"
                "- Give every field's boundaries under its name, e.g. "
                f"boundaries={{{names[0]!r}: [8, 16], {names[1]!r}: [10, 20]}}."
            )
        items = [boundaries[n] for n in names]
    elif (
        isinstance(boundaries, (list, tuple))
        and len(boundaries) == k
        and all(not isinstance(b, numbers.Integral) for b in boundaries)
    ):
        items = list(boundaries)
    else:
        raise ValueError(
            f"Argument `boundaries` of a sampler of {k} fields must give each field its own "
            f"boundaries: a list of {k} lists (or a dict by field name). "
            f"Received: boundaries={boundaries!r:.120}\n"
            "- Pass e.g. boundaries=[[8, 16], [10, 20]] (bands of field 0, then field 1), or "
            "leave `boundaries` out to plan them jointly."
        )
    return tuple(
        as_boundaries(b, f"boundaries[{n!r}]") for n, b in zip(names, items, strict=True)
    )


def _atom_index(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The last distinct length of each atom of one field (all lengths when few enough)."""
    return values[_atoms(values, counts, _MAX_ATOMS)]


def _band_cost(C: np.ndarray, M: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``W[u, v]``: cost of one band of atoms ``u..v`` along the first axis of ``C``.

    ``C[a, o]`` counts the examples of atom ``a`` in cell ``o`` of the other fields' bands,
    ``M[a, o, f]`` their longest length of field ``f`` (0 where there are none). A band pads
    each of its cells to the cell's longest lengths.
    """
    m = C.shape[0]
    W = np.full((m, m), np.inf)
    # Bands starting at u, for a block of u at a time: entries before u are masked to 0 (no
    # examples, a neutral maximum), so running sums and maxima along v give every band at once.
    step = max(1, _BAND_BLOCK // max(1, m * M[0].size))
    for u0 in range(0, m, step):
        us = np.arange(u0, min(m, u0 + step))
        keep = np.arange(m)[None, :] >= us[:, None]  # (block, m)
        counts = np.cumsum(np.where(keep[:, :, None], C[None], 0.0), axis=1)
        tops = np.maximum.accumulate(np.where(keep[:, :, None, None], M[None], 0.0), axis=1)
        W[us] = np.where(keep, (counts * (tops @ w)).sum(axis=2), np.inf)
    return W


def _best_bands(W: np.ndarray, k: int) -> tuple[float, list[int]]:
    """Cheapest split of atoms ``0..m-1`` into at most ``k`` bands: ``(cost, band starts)``.

    The 1-D bucketing DP (:func:`_optimal_tables`) run to ``k`` bands without early stop."""
    costs, back = _optimal_tables(W, k, real=0.0, target=None)
    layers = int(np.argmin(costs))  # more bands never cost more here, but ties: take fewer
    return float(costs[layers]), _cuts_from_back(back, layers + 1, W.shape[0])


class _GridProblem:
    """One fit's data, reduced to *combos* (examples sharing an atom on every field: the same
    cell under any boundaries the search tries), and the scoring of candidate grids."""

    def __init__(
        self, lengths, weights, batch_size, max_tokens, quadratic_length, field_tokens, merge
    ):
        self.k = lengths.shape[1]
        self.merge = merge
        self.weights = weights
        self.budget = (batch_size, max_tokens, quadratic_length)
        self.field_tokens = field_tokens
        self.atom_values = []
        atom_of = []
        for f in range(self.k):
            ends = _atom_index(*length_histogram(lengths[:, f]))
            self.atom_values.append(ends)
            # The atom of a length is the first atom end at or above it.
            atom_of.append(band_of(lengths[:, f], ends, side="left"))
        sizes = tuple(a.size for a in self.atom_values)
        flat = np.ravel_multi_index(atom_of, sizes)
        per_combo = np.bincount(flat, minlength=int(np.prod(sizes)))
        combo = np.flatnonzero(per_combo)
        inverse = np.searchsorted(combo, flat)
        self.atoms = np.stack(np.unravel_index(combo, sizes), axis=1)  # (combos, k)
        self.count = per_combo[combo].astype(np.float64)
        self.longest = np.zeros((combo.size, self.k), np.int64)
        np.maximum.at(self.longest, inverse, lengths)

    def bounds_of(self, f: int, starts: list[int]) -> np.ndarray:
        ends = self.atom_values[f]
        return np.array([ends[s - 1] + 1 for s in starts], np.int64)

    def descend(self, bounds: list[np.ndarray], bands: tuple[int, ...]) -> list[np.ndarray]:
        """Coordinate descent: each field's bands optimal given the others'."""
        bounds = list(bounds)
        last = np.inf
        for _ in range(_DESCENT_ROUNDS):
            cost = np.inf
            for f in range(self.k):
                if bands[f] == 1:
                    bounds[f] = np.zeros(0, np.int64)
                    continue
                others = [g for g in range(self.k) if g != f]
                shape = tuple(bounds[g].size + 1 for g in others)
                other = np.ravel_multi_index(
                    [np.searchsorted(bounds[g], self.longest[:, g], side="right") for g in others],
                    shape,
                )
                m, o = self.atom_values[f].size, int(np.prod(shape))
                C = np.zeros((m, o), np.float64)
                np.add.at(C, (self.atoms[:, f], other), self.count)
                M = np.zeros((m, o, self.k), np.float64)
                np.maximum.at(M, (self.atoms[:, f], other), self.longest.astype(np.float64))
                cost, starts = _best_bands(_band_cost(C, M, self.weights), bands[f])
                bounds[f] = self.bounds_of(f, starts)
            if cost >= last - 1e-9 * max(abs(last), 1.0):
                break
            last = cost
        return bounds

    def score(self, bounds: list[np.ndarray]) -> float:
        """Weighted padded steps of the batches a sampler builds on this grid (cover widths)."""
        shape = tuple(b.size + 1 for b in bounds)
        cells = grid_cells(self.longest, bounds)
        counts = np.bincount(cells, weights=self.count, minlength=int(np.prod(shape)))
        counts = counts.astype(np.int64)
        cover = cover_lengths(cells, self.longest, shape)
        cap = batch_capacity(row_lengths(cover, self.field_tokens), *self.budget)
        cost_per_row = cover @ self.weights
        full = (counts // cap) * cap
        total = float(np.dot(full, cost_per_row))
        _, sizes, labels = merge_leftovers(counts, cap, shape, self.merge)
        total += float(np.dot(np.array(sizes, np.float64), cost_per_row[labels]))
        return total


def fit_grid(
    lengths: np.ndarray,
    *,
    batch_size: int | None = None,
    max_tokens: int | None = None,
    quadratic_length: int | None = None,
    field_tokens: FieldTokens = "sum",
    weights: np.ndarray | None = None,
    merge_leftovers: bool = True,
) -> tuple[np.ndarray, ...]:
    """Per-field boundaries chosen jointly for lengths ``(n, k)`` (see the module docstring).

    Args:
        lengths: int64 ``(n, k)`` lengths, ``k >= 2``.
        batch_size: rows per batch (exactly one of this and ``max_tokens``).
        max_tokens: token budget per batch, on the sum or the max of a row's fields.
        quadratic_length: the quadratic term of the budget, as in ``BucketSampler``.
        field_tokens: ``"sum"`` or ``"max"``: how a row's fields add up under ``max_tokens``.
        weights: float ``(k,)`` cost of a padded step of each field (default: all 1).
        merge_leftovers: whether the sampler merges the partial batches of neighbouring cells
            (scored as it will batch them).

    Returns:
        A tuple of ``k`` ascending int64 boundary arrays.

    Example:
        Six kinds of pair, eight of each, batches of eight: each kind gets a cell of its own
        (no padding at all), which no 1-D bucketing of either field can do.

        >>> pairs = np.array([[2, 3], [2, 4], [9, 10], [9, 11], [3, 3], [10, 12]] * 8)
        >>> [b.tolist() for b in fit_grid(pairs, batch_size=8)]
        [[3, 10], [4, 11]]
    """
    n, k = lengths.shape
    w = np.ones(k) if weights is None else np.asarray(weights, np.float64)
    problem = _GridProblem(
        lengths, w, batch_size, max_tokens, quadratic_length, field_tokens, merge_leftovers
    )
    limits = [min(a.size, _LADDER[-1]) for a in problem.atom_values]
    rows = batch_size if batch_size is not None else max(
        1, int(np.median(batch_capacity(row_lengths(lengths, field_tokens), *problem.budget)))
    )
    max_cells = max(1, 2 * n // rows)
    bands = (1,) * k
    bounds = [np.zeros(0, np.int64)] * k
    best = problem.score(bounds)
    while True:
        trials = []
        for f in range(k):
            up = [s for s in _LADDER if s > bands[f] and s <= limits[f]]
            if not up:
                continue
            trial = tuple(up[0] if g == f else bands[g] for g in range(k))
            if int(np.prod(trial)) > max_cells:
                continue
            got = problem.descend(bounds, trial)
            trials.append((problem.score(got), trial, got))
        if not trials:
            break
        score, trial, got = min(trials, key=lambda t: t[0])
        if score >= best:
            # A step up the ladder on one field may only pay once the others follow: try all.
            if k > 1 and len(trials) == k:
                both = tuple(max(t[1][g] for t in trials) for g in range(k))
                if int(np.prod(both)) <= max_cells:
                    got = problem.descend(bounds, both)
                    score, trial = problem.score(got), both
            if score >= best:
                break
        best, bands, bounds = score, trial, got
    return tuple(np.asarray(b, np.int64) for b in bounds)
