"""Bucket boundaries: the :class:`Bucketer` estimator and its cost model.

Bucket ``i`` holds the lengths in ``[boundaries[i-1], boundaries[i])``; the first bucket starts at
0 and the last is open-ended. Everything here works on the histogram of *distinct* lengths, so
fitting on ten million lengths costs one ``np.bincount`` plus work that depends only on how many
distinct lengths there are.

The cost model (see ``docs/bucketing.md``): the expected number of padded tokens of an epoch, when
the sampler cuts each bucket, in random order, into batches of a fixed number of rows ``k``,
each padded to its own longest sequence. A batch is then a uniformly random ``k``-subset of its
bucket, so the expected longest length of a bucket with sorted distinct lengths ``v`` and
``F(v)`` sequences of length ``<= v`` out of ``N`` is::

    E[max] = v_last - sum_j (v_{j+1} - v_j) * C(F(v_j), k) / C(N, k)

and the bucket costs ``N * E[max]`` tokens. ``k`` is ``batch_size``; with ``max_tokens`` it is
``max_tokens // longest length in the bucket`` (what :class:`~seqprep.BucketSampler` uses); with
neither, every sequence is padded to its bucket's longest length (``pad_to="bucket"``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from seqprep._core.checks import check_choice, check_increasing, check_int, check_lengths

Strategy = Literal["optimal", "quantile", "geometric"]

# The dynamic programme is exact on at most this many distinct lengths; beyond, it runs on
# groups of neighbouring lengths ("atoms") and is then compared with quantile and geometric
# boundaries, so it is never worse than either.
_MAX_ATOMS = 512
_MAX_ATOMS_TOKENS = 192
# Largest bucket count tried when `num_buckets=None`, for strategies without a DP.
_MAX_SEARCH = 512


class NotFittedError(ValueError, AttributeError):
    """Raised when a :class:`Bucketer` is used before ``fit``."""


# --------------------------------------------------------------------------- histogram and maths


def length_histogram(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(values, counts)``: the distinct lengths, ascending, and how often each occurs."""
    if lengths.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = int(lengths.max())
    if top <= max(1 << 22, 4 * lengths.size):
        counts = np.bincount(lengths)
        values = np.flatnonzero(counts)
        return values.astype(np.int64), counts[values].astype(np.int64)
    values, counts = np.unique(lengths, return_counts=True)
    return values.astype(np.int64), counts.astype(np.int64)


_LOG_FACTORIAL_TABLE = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, 257)))])


def _log_factorial(x: np.ndarray) -> np.ndarray:
    """``log(x!)`` for non-negative integer-valued ``x``: a table below 257, Stirling above."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    small = x < 257
    out[small] = _LOG_FACTORIAL_TABLE[x[small].astype(np.int64)]
    y = x[~small]
    out[~small] = y * np.log(y) - y + 0.5 * np.log(2 * np.pi * y) + 1 / (12 * y) - 1 / (360 * y**3)
    return out


def _log_falling(x: np.ndarray, k: np.ndarray | int) -> np.ndarray:
    """``log(x! / (x-k)!)``, ``-inf`` where ``x < k`` (no ``k``-subset fits below that length)."""
    x = np.asarray(x, dtype=np.float64)
    k = np.broadcast_to(np.asarray(k, dtype=np.float64), x.shape)
    ok = x >= k
    out = np.full(x.shape, -np.inf)
    out[ok] = _log_factorial(x[ok]) - _log_factorial(x[ok] - k[ok])
    return out


def batch_capacity(
    longest: np.ndarray | int,
    batch_size: int | None,
    max_tokens: int | None,
    quadratic_length: int | None = None,
):
    """Rows per batch for buckets whose longest length is ``longest`` (``None``: unbounded).

    Under ``max_tokens`` a row padded to length ``L`` costs ``L`` tokens, or
    ``L + L**2 / quadratic_length`` when ``quadratic_length`` is set (attention-like models);
    the capacity is the most rows whose total cost fits the budget (at least 1), computed in
    exact integer arithmetic: ``rows * L * (q + L) <= max_tokens * q``.
    """
    if batch_size is not None:
        return np.full(np.shape(longest), batch_size, dtype=np.int64)
    if max_tokens is not None:
        length = np.maximum(np.asarray(longest, np.int64), 1)
        if quadratic_length is None:
            return np.maximum(max_tokens // length, 1)
        q = np.int64(quadratic_length)
        return np.maximum(np.int64(max_tokens) * q // (length * (q + length)), 1)
    return None


def check_quadratic_length(
    quadratic_length: Any, max_tokens: int | None
) -> int | None:
    """Validate ``quadratic_length``: a positive int, only together with ``max_tokens``."""
    q = check_int("quadratic_length", quadratic_length, minimum=1, allow_none=True)
    if q is None:
        return None
    if max_tokens is None:
        raise ValueError(
            "Argument `quadratic_length` only changes a `max_tokens` budget (a row of length L "
            f"costs L + L**2 / quadratic_length tokens). Received: quadratic_length={q}, "
            "max_tokens=None\n- Pass max_tokens=<budget>, or drop `quadratic_length`."
        )
    if max_tokens * q >= 2**62:
        raise ValueError(
            f"Arguments `max_tokens`={max_tokens} and `quadratic_length`={q} are too large: "
            "their product must stay below 2**62 for exact integer budgets.\n"
            "- Express the budget in coarser units, or lower `quadratic_length`."
        )
    if max_tokens * q < q + 1:
        # Not even a row of one step fits (it costs 1 + 1/q tokens): every batch would break
        # the budget, so refuse the pair instead of planning batches that exceed it.
        raise ValueError(
            f"Argument `max_tokens` cannot hold a single step when `quadratic_length` is set: "
            f"a row of length 1 costs 1 + 1/{q} tokens. Received: max_tokens={max_tokens}, "
            f"quadratic_length={q}\n- Pass max_tokens >= 2, or drop `quadratic_length`."
        )
    return q


def token_length_limit(max_tokens: int, quadratic_length: int | None = None) -> int:
    """The longest length ``L`` whose single row fits ``max_tokens`` (see :func:`batch_capacity`).

    Example:
        >>> token_length_limit(100), token_length_limit(100, quadratic_length=100)
        (100, 61)
    """
    if quadratic_length is None:
        return int(max_tokens)
    q, budget = int(quadratic_length), int(max_tokens) * int(quadratic_length)
    # Largest L with L * (q + L) <= budget: the positive root, then an exact integer fix-up.
    length = (math.isqrt(q * q + 4 * budget) - q) // 2
    while length * (q + length) > budget:
        length -= 1
    while (length + 1) * (q + length + 1) <= budget:
        length += 1
    return int(length)


def expected_bucket_tokens(values: np.ndarray, counts: np.ndarray, capacity: int | None) -> float:
    """Expected padded tokens of one bucket (distinct ``values`` ascending, their ``counts``).

    Each batch is a uniformly random ``capacity``-subset of the bucket, padded to its longest.
    ``capacity=None`` pads every sequence to the bucket's longest length.
    """
    n = int(counts.sum())
    if n == 0:
        return 0.0
    top = float(values[-1])
    if capacity is None or n <= capacity or values.size == 1:
        return n * top
    below = np.cumsum(counts)[:-1]
    p_max_at_most = np.exp(_log_falling(below, capacity) - _log_falling(np.array([n]), capacity))
    return n * (top - float(np.sum(np.diff(values) * p_max_at_most)))


def expected_tokens(
    values: np.ndarray,
    counts: np.ndarray,
    boundaries: np.ndarray,
    batch_size: int | None = None,
    max_tokens: int | None = None,
    quadratic_length: int | None = None,
) -> float:
    """Expected padded tokens of a histogram split at ``boundaries`` (the module's model)."""
    if values.size == 0:
        return 0.0
    bucket = np.searchsorted(boundaries, values, side="right")
    cuts = np.flatnonzero(np.diff(bucket)) + 1
    total = 0.0
    for seg_values, seg_counts in zip(np.split(values, cuts), np.split(counts, cuts), strict=True):
        cap = batch_capacity(int(seg_values[-1]), batch_size, max_tokens, quadratic_length)
        total += expected_bucket_tokens(seg_values, seg_counts, None if cap is None else int(cap))
    return total


def _fraction(padded: float, real: float) -> float:
    return 0.0 if padded <= 0 else max(0.0, 1.0 - real / padded)


# --------------------------------------------------------------------------- strategies


def _atoms(values: np.ndarray, counts: np.ndarray, cap: int) -> np.ndarray:
    """Indices of the last distinct length of each atom (all of them when few enough)."""
    m = values.size
    if m <= cap:
        return np.arange(m)
    cum = np.cumsum(counts)
    by_mass = np.searchsorted(cum, np.linspace(0, cum[-1], cap // 2 + 1)[1:], side="left")
    logv = np.log1p(values.astype(np.float64))
    by_value = np.searchsorted(logv, np.linspace(logv[0], logv[-1], cap // 2 + 1)[1:], "right")
    ends = np.concatenate([by_mass, by_value - 1, [m - 1]])
    return np.unique(np.clip(ends, 0, m - 1))


def _cost_matrix(
    values: np.ndarray,
    counts: np.ndarray,
    batch_size: int | None,
    max_tokens: int | None,
    quadratic_length: int | None = None,
) -> np.ndarray:
    """``W[i, j]``: expected tokens of one bucket of atoms ``i..j`` (``inf`` below diagonal)."""
    m = values.size
    v = values.astype(np.float64)
    cum = np.concatenate([[0], np.cumsum(counts)])
    W = np.full((m, m), np.inf)
    for i in range(m):
        inside = cum[i + 1 :] - cum[i]  # sequences in atoms i..j, for every j >= i
        top = v[i:]
        if batch_size is None and max_tokens is None:
            W[i, i:] = inside * top
            continue
        if batch_size is not None:
            # P(max <= v_k) = C(F_k, B) / C(F_j, B) = exp(g_k - g_j): a running log-sum-exp.
            g = _log_falling(inside, batch_size)
            terms = np.log(np.diff(top)) + g[:-1]
            acc = np.logaddexp.accumulate(terms) if terms.size else terms
            shave = np.zeros(top.size)
            ok = np.isfinite(g[1:]) & np.isfinite(acc)
            shave[1:][ok] = np.exp(acc[ok] - g[1:][ok])
        else:
            cap = batch_capacity(values[i:], None, max_tokens, quadratic_length)
            lf = _log_factorial(inside)
            rest = inside[:-1, None] - cap[None, :]  # rows k < last, columns j
            gk = lf[:-1, None] - _log_factorial(np.maximum(rest, 0))
            gj = _log_falling(inside, cap)
            with np.errstate(invalid="ignore", over="ignore"):
                p = np.exp(gk - gj[None, :])
            p[(rest < 0) | ~np.isfinite(p)] = 0.0
            p = np.triu(p, 1)  # only k < j counts
            shave = (np.diff(top)[:, None] * p).sum(0)
        W[i, i:] = inside * (top - shave)
    return W


def _optimal_tables(
    W: np.ndarray, max_buckets: int, real: float, target: float | None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Min cost of splitting atoms into ``K = 1..`` buckets; stops early once ``target`` is met."""
    m = W.shape[0]
    best = W[0].copy()  # best[j]: atoms 0..j in K buckets
    costs = [best[-1]]
    back: list[np.ndarray] = []
    for _ in range(2, min(max_buckets, m) + 1):
        if target is not None and _fraction(costs[-1], real) <= target:
            break
        # cand[i, j]: atoms 0..i-1 in K-1 buckets, then one bucket i..j.
        cand = np.full((m, m), np.inf)
        cand[1:] = best[:-1, None] + W[1:]
        arg = np.argmin(cand, axis=0)
        best = cand[arg, np.arange(m)]
        back.append(arg)
        costs.append(best[-1])
    return np.array(costs), back


def _cuts_from_back(back: list[np.ndarray], k: int, m: int) -> list[int]:
    """Atom indices where buckets 2..k start, read back from the DP tables."""
    starts = []
    j = m - 1
    for layer in range(k - 2, -1, -1):
        i = int(back[layer][j])
        starts.append(i)
        j = i - 1
    return starts[::-1]


def quantile_boundaries(values: np.ndarray, counts: np.ndarray, num_buckets: int) -> np.ndarray:
    """Boundaries that put about the same number of sequences in each bucket."""
    if values.size == 0 or num_buckets <= 1:
        return np.zeros(0, np.int64)
    cum = np.cumsum(counts)
    at = np.searchsorted(cum, cum[-1] * np.arange(1, num_buckets) / num_buckets, side="left")
    bounds = np.unique(values[np.minimum(at, values.size - 1)] + 1)
    return bounds[bounds <= values[-1]].astype(np.int64)


def geometric_boundaries(values: np.ndarray, counts: np.ndarray, num_buckets: int) -> np.ndarray:
    """Boundaries spaced evenly on a log scale between the shortest and longest length."""
    if values.size == 0 or num_buckets <= 1:
        return np.zeros(0, np.int64)
    lo, hi = max(int(values[0]), 1), int(values[-1]) + 1
    if hi <= lo + 1:
        return np.zeros(0, np.int64)
    edges = np.ceil(np.geomspace(lo, hi, num_buckets + 1)[1:-1]).astype(np.int64)
    bounds = np.unique(edges)
    return bounds[(bounds > values[0]) & (bounds <= values[-1])]


def as_boundaries(boundaries: Any, name: str = "boundaries") -> np.ndarray:
    """Return bucket boundaries, given as a list, an array or a fitted Bucketer, as int64.

    Args:
        boundaries: ascending positive integers, or a fitted :class:`Bucketer`.
        name: argument name used in error messages.

    Returns:
        A fresh, strictly increasing 1-D ``int64`` array (possibly empty: one bucket).

    Raises:
        TypeError: if the boundaries are not integers.
        ValueError: if they are not strictly increasing positive integers, or the Bucketer is
            not fitted.

    Example:
        >>> as_boundaries([8, 16, 32]).tolist()
        [8, 16, 32]
        >>> as_boundaries(Bucketer(2, strategy="quantile").fit([1, 2, 3, 4])).tolist()
        [3]
    """
    if isinstance(boundaries, Bucketer):
        boundaries._check_fitted(name)
        return boundaries.boundaries_.copy()
    try:
        arr = np.asarray(boundaries)
    except (ValueError, TypeError):
        arr = np.asarray(boundaries, dtype=object)
    if arr.ndim != 1:
        raise ValueError(
            f"Argument `{name}` must be a 1-D list of integers or a fitted Bucketer. "
            f"Received: {name}={boundaries!r} (shape {arr.shape})\n"
            f"- Pass ascending ints, e.g. {name}=[8, 16, 32], or a fitted `Bucketer`."
        )
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"Argument `{name}` must hold integers. Received: {name}={boundaries!r}\n"
            f"- Pass ascending ints, e.g. {name}=[8, 16, 32] (a boundary is a length)."
        )
    return check_increasing(
        name, arr,
        fix=f"Bucket i holds lengths in [{name}[i-1], {name}[i]); sort and deduplicate them.")


# --------------------------------------------------------------------------- the estimator


class Bucketer:
    """Choose length-bucket boundaries (a scikit-learn-style estimator).

    Bucket ``i`` holds lengths in ``[boundaries_[i-1], boundaries_[i])``; the first bucket starts
    at 0 and the last is open-ended. ``"optimal"`` minimises the expected number of padded tokens
    (a dynamic programme over the histogram of distinct lengths, under the batching given by
    ``batch_size`` or ``max_tokens``; with neither, every sequence is padded to its bucket's
    longest length). ``"quantile"`` puts equal counts in each bucket; ``"geometric"`` spaces
    boundaries evenly on a log scale.

    Args:
        num_buckets: how many buckets; ``None`` picks the fewest whose expected padding fraction
            is at most ``target_padding``. Fewer are returned when the data has fewer distinct
            lengths, or (``"optimal"``) when fewer buckets are cheaper under the batching.
        strategy: ``"optimal"``, ``"quantile"`` or ``"geometric"``.
        target_padding: padding fraction to reach when ``num_buckets`` is ``None``.
        batch_size: rows per batch, for the cost model (at most one of this and ``max_tokens``).
        max_tokens: padded tokens per batch, for the cost model.
        quadratic_length: with ``max_tokens``, a row of length ``L`` costs
            ``L + L**2 / quadratic_length`` tokens (an attention-like model: the quadratic term
            equals the linear one at ``L = quadratic_length``); as in :class:`BucketSampler`.

    Attributes:
        boundaries_: ascending int64 array, one fewer than the number of buckets.
        padding_fraction_: expected fraction of padded tokens that are padding.
        num_buckets_: number of buckets found (``len(boundaries_) + 1``).

    Example:
        >>> b = Bucketer(2, strategy="optimal").fit([2, 2, 3, 9, 10, 10])
        >>> b.boundaries_.tolist()
        [4]
        >>> b.bucket_of([0, 3, 4, 100]).tolist()
        [0, 0, 1, 1]
        >>> round(b.padding_fraction_, 3)
        0.077
    """

    def __init__(
        self,
        num_buckets: int | None = None,
        *,
        strategy: Strategy = "optimal",
        target_padding: float = 0.02,
        batch_size: int | None = None,
        max_tokens: int | None = None,
        quadratic_length: int | None = None,
    ) -> None:
        self.num_buckets = num_buckets
        self.strategy = strategy
        self.target_padding = target_padding
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.quadratic_length = quadratic_length
        self._validate()  # fail at the line that holds the mistake, not at fit

    def _validate(self) -> None:
        check_int("num_buckets", self.num_buckets, minimum=1, allow_none=True)
        check_choice("strategy", self.strategy, ("optimal", "quantile", "geometric"))
        t = self.target_padding
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 <= t < 1:
            raise ValueError(
                f"Argument `target_padding` must be a number in [0, 1). "
                f"Received: target_padding={t!r}\n"
                "- Pass a fraction of padded tokens, e.g. target_padding=0.02."
            )
        check_int("batch_size", self.batch_size, minimum=1, allow_none=True)
        check_int("max_tokens", self.max_tokens, minimum=1, allow_none=True)
        if self.batch_size is not None and self.max_tokens is not None:
            raise ValueError(
                "Pass at most one of `batch_size` and `max_tokens`. "
                f"Received: batch_size={self.batch_size}, max_tokens={self.max_tokens}\n"
                "- Give the cost model the budget your sampler will use, and only that one."
            )
        check_quadratic_length(self.quadratic_length, self.max_tokens)

    def fit(self, lengths: Sequence[int] | np.ndarray) -> Bucketer:
        """Learn boundaries from ``lengths``.

        Args:
            lengths: non-negative integer lengths (not modified).

        Returns:
            ``self``, with ``boundaries_``, ``padding_fraction_`` and ``num_buckets_`` set.

        Raises:
            ValueError: if ``lengths`` is empty or negative, or an argument is invalid.
            TypeError: if ``lengths`` does not hold integers.

        Example:
            >>> Bucketer(3, strategy="quantile").fit([1, 2, 3, 4, 5, 6]).boundaries_.tolist()
            [3, 5]
        """
        self._validate()
        values, counts = length_histogram(check_lengths(lengths))
        real = float(np.dot(values.astype(np.float64), counts))
        bs, mt, q = self.batch_size, self.max_tokens, self.quadratic_length

        def cost(bounds: np.ndarray) -> float:
            return expected_tokens(values, counts, bounds, bs, mt, q)

        if self.strategy == "optimal":
            bounds = self._fit_optimal(values, counts, real, cost)
        else:
            make = quantile_boundaries if self.strategy == "quantile" else geometric_boundaries
            if self.num_buckets is not None:
                bounds = make(values, counts, self.num_buckets)
            else:
                bounds = make(values, counts, 1)
                for k in range(1, min(values.size, _MAX_SEARCH) + 1):
                    bounds = make(values, counts, k)
                    if _fraction(cost(bounds), real) <= self.target_padding:
                        break
        self.boundaries_ = bounds.astype(np.int64)
        self.padding_fraction_ = _fraction(cost(self.boundaries_), real)
        self.num_buckets_ = int(self.boundaries_.size + 1)
        return self

    def _fit_optimal(self, values, counts, real, cost) -> np.ndarray:
        cap = _MAX_ATOMS if self.max_tokens is None else _MAX_ATOMS_TOKENS
        ends = _atoms(values, counts, cap)
        coarse = ends.size < values.size
        cum = np.cumsum(counts)
        atom_values = values[ends]
        atom_counts = np.diff(np.concatenate([[0], cum[ends]]))
        W = _cost_matrix(
            atom_values, atom_counts, self.batch_size, self.max_tokens, self.quadratic_length
        )
        target = None if self.num_buckets is not None else self.target_padding
        limit = self.num_buckets if self.num_buckets is not None else ends.size
        costs, back = _optimal_tables(W, limit, real, target)
        # More buckets can cost more under batching (a small bucket pads all its rows to its
        # longest), so a fixed `num_buckets` is an upper bound: take the cheapest count <= it.
        k = len(costs) if target is not None else int(np.argmin(costs)) + 1
        starts = _cuts_from_back(back, k, ends.size)
        bounds = np.array([atom_values[s - 1] + 1 for s in starts], dtype=np.int64)
        if coarse:  # atoms are an approximation: keep the guarantee against the baselines
            alternatives = [
                quantile_boundaries(values, counts, k),
                geometric_boundaries(values, counts, k),
            ]
            bounds = min([bounds, *alternatives], key=cost)
        return bounds

    def _check_fitted(self, name: str | None = None) -> None:
        if not hasattr(self, "boundaries_"):
            what = f"Argument `{name}` is a Bucketer that" if name else "This Bucketer"
            raise NotFittedError(
                f"{what} is not fitted yet (it has no `boundaries_`). Received: {self!r}\n"
                "- Call `.fit(lengths)` first, or pass explicit boundaries instead."
            )

    def bucket_of(self, lengths: Sequence[int] | np.ndarray) -> np.ndarray:
        """Return the bucket index of each length (a length equal to a boundary goes up).

        Args:
            lengths: non-negative integer lengths.

        Returns:
            int64 array of bucket indices in ``[0, num_buckets_)``.

        Raises:
            NotFittedError: before ``fit``.

        Example:
            >>> Bucketer(2, strategy="quantile").fit([1, 2, 3, 4]).bucket_of([2, 3]).tolist()
            [0, 1]
        """
        self._check_fitted()
        arr = check_lengths(lengths, allow_empty=True)
        return np.searchsorted(self.boundaries_, arr, side="right").astype(np.int64)

    def __repr__(self) -> str:
        defaults = {
            "strategy": "optimal",
            "target_padding": 0.02,
            "batch_size": None,
            "max_tokens": None,
            "quadratic_length": None,
        }
        parts = [] if self.num_buckets is None else [repr(self.num_buckets)]
        shown_args = {k: getattr(self, k, d) for k, d in defaults.items()}
        parts += [f"{k}={v!r}" for k, v in shown_args.items() if v != defaults[k]]
        text = f"Bucketer({', '.join(parts)})"
        if hasattr(self, "boundaries_"):
            b = self.boundaries_.tolist()
            shown = str(b) if len(b) <= 12 else f"[{', '.join(map(str, b[:10]))}, ... {b[-1]}]"
            text += (
                f" fitted: {self.num_buckets_} buckets, boundaries_={shown}, "
                f"expected padding {self.padding_fraction_:.1%}"
            )
        return text
