"""Batch shapes of a plan, and a width grid that keeps them few (planned in numpy).

JAX, TensorFlow with ``jit_compile=True`` and compiled PyTorch build one program per distinct
input shape; on these lengths compiling costs seconds per shape while a batch costs
milliseconds. A shape is ``(rows, width)``: a batch's rows count as much as its width, so the
partial last batch of an epoch is a shape of its own.

The shapes of a :class:`~seqprep.BucketSampler` plan depend on how batches are padded:

- ``pad_to="batch"`` (each batch to its longest member) gives the fewest padded steps, but the
  widths follow the random batch contents, so every epoch meets new shapes;
- ``pad_to="bucket"`` pads each batch to its bucket's longest length: the plan's structure
  (rows and bucket of each batch) is the same every epoch, so the shapes are too, but there are
  as many widths as buckets;
- a *width grid* (:func:`width_grid`) pads each batch to the smallest grid width that covers its
  bucket: at most ``max_widths`` widths, chosen to minimise the padded steps of the plan, and,
  like ``"bucket"``, the same shapes every epoch.

On a compiling backend ``pad_to="auto"`` plays the width grid whose size a *compile budget*
chooses (:func:`budget_grid`): every width saves padded steps in every epoch but costs one
compile, so a short run or a plan of few batches gets few widths. A sampler of several fields
gets one grid per field, sized together (:func:`budget_field_grids`): a shape is then
``(rows, width of each field)``, and the budget counts those tuples.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from seqprep._core.checks import check_int
from seqprep.planning._plan import BatchPlan, check_width_grid


class BucketSampler(Protocol):
    """What these helpers read of a :class:`seqprep.BucketSampler`. This module does not
    import the sampler's: the sampler reads its ``pad_to`` rule from here."""

    lengths: np.ndarray
    bucket_pad_lengths: np.ndarray
    max_tokens: int | None

    @property
    def epoch(self) -> int: ...

    def plan(self, epoch: int | None = None) -> BatchPlan: ...


__all__ = [
    "DEFAULT_COMPILE_COST", "DEFAULT_MAX_WIDTHS", "DEFAULT_TRAIN_EPOCHS", "MANY_SHAPES",
    "budget_field_grids", "budget_grid", "count_shapes", "length_grid", "width_grid",
]

# Keras backends that build one program per distinct input shape, where pad_to="auto" pads to
# a width grid. (TensorFlow traces a tf.data input once whatever its widths, and PyTorch runs
# eagerly unless compiled.)
_COMPILING_BACKENDS = ("jax",)

# Measured on lognormal(3.5, 0.8) lengths, batch 64 (docs/benchmarks.md): 16 widths pad 0.118
# with 16 shapes (12: 0.146, 24: 0.090); each extra width costs a compile and saves little.
DEFAULT_MAX_WIDTHS = 16
# More distinct shapes than this and compiling dominates a short run on a compiling backend.
MANY_SHAPES = 24
# The compile budget of pad_to="auto" (PlanOptions(compile_cost=..., train_epochs=...)): one
# compiled shape costs as much as training this many padded tokens (rows x steps), and the
# grid is sized for this many epochs. Measured on 2 shared CPU cores with the README tour's GRU
# (docs/benchmarks.md, "A first JAX epoch"): a program compiled in 0.9-2.7 s, and 100k more
# padded tokens cost an epoch 0.1-0.5 s, so a compile was worth 0.2M-2.7M tokens; 1M sits in
# that range (a faster accelerator trains more tokens in a compile's time: a larger cost).
DEFAULT_COMPILE_COST = 1_000_000
DEFAULT_TRAIN_EPOCHS = 10


def keras_backend() -> str:
    """The name of the Keras backend this process uses, read without importing Keras.

    Keras's own rule: once Keras is imported, its ``keras.config.backend()``; before, the
    ``KERAS_BACKEND`` environment variable, else the ``"backend"`` of ``keras.json`` in
    ``$KERAS_HOME`` (default ``~/.keras``), else ``"tensorflow"``.

    Example:
        >>> keras_backend() in ("tensorflow", "jax", "torch", "numpy", "openvino")
        True
    """
    keras = sys.modules.get("keras")
    config = getattr(keras, "config", None)
    if config is not None and hasattr(config, "backend"):
        return str(config.backend())
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as f:
            return str(json.load(f).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def compiling_backend(backend: str | None = None) -> str | None:
    """``backend`` (default: this process's Keras backend) if it compiles one program per
    input shape, else None: the one test of where ``pad_to="auto"`` means a width grid.

    Example:
        >>> compiling_backend("jax"), compiling_backend("tensorflow")
        ('jax', None)
    """
    name = keras_backend() if backend is None else backend
    if not isinstance(name, str):
        raise TypeError(
            f"Argument `backend` must be a Keras backend name or None. Received: "
            f"backend={backend!r}\n- Pass e.g. backend=\"jax\", or None for this process's "
            "Keras backend."
        )
    return name if name in _COMPILING_BACKENDS else None


def check_bucket_sampler(sampler: Any, caller: str) -> None:
    """Refuse anything but a BucketSampler where one is needed (`width_grid`, `count_shapes`).

    Read by what the helpers use (a plan per epoch, a padded length per bucket), so that this
    module does not import the sampler's, which reads its ``pad_to`` rule from here.
    """
    if not (hasattr(sampler, "plan") and hasattr(sampler, "bucket_pad_lengths")):
        shown = f"{sampler!r:.60}" if isinstance(sampler, (list, tuple, np.ndarray)) else (
            f"a {type(sampler).__name__}")
        raise TypeError(
            f"Argument `sampler` of `{caller}` must be a seqprep.BucketSampler (its widths "
            f"follow the sampler's buckets and batches). Received: {shown}\n"
            f"- If these are lengths, build the sampler first: "
            f"{caller}(seqprep.BucketSampler(lengths, batch_size=...))."
        )


def _rows_and_buckets(sampler: BucketSampler, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    plan = sampler.plan(epoch)
    return plan.sizes, plan.buckets


def bucket_widths(sampler: BucketSampler, widths: Sequence[int] | np.ndarray) -> np.ndarray:
    """Padded width of each of ``sampler``'s buckets under the width grid ``widths``.

    A bucket pads to the smallest grid width that covers its longest length, so a batch's width
    depends on its bucket alone and every epoch has the same shapes.

    Example:
        >>> from seqprep import BucketSampler
        >>> s = BucketSampler([2, 3, 5, 9, 12], boundaries=[4, 8, 10], batch_size=2)
        >>> bucket_widths(s, [6, 12]).tolist()
        [6, 6, 12, 12]
    """
    pads = np.asarray(sampler.bucket_pad_lengths, np.int64)
    grid = check_width_grid(widths, int(pads.max()) if pads.size else 0)
    return grid[np.searchsorted(grid, pads, side="left")]


def count_shapes(
    sampler: BucketSampler,
    *,
    pad_to: str | int | Sequence[int] | np.ndarray = "auto",
    epoch: int = 0,
    epochs: int = 1,
    backend: str | None = None,
) -> int:
    """Distinct ``(rows, width)`` batch shapes of ``sampler``'s epochs ``epoch .. epoch+epochs-1``.

    What a backend that compiles per shape compiles over those epochs with
    :func:`seqprep.bucketed_dataset` and the same ``pad_to``: ``"auto"`` (the dataset's
    default) is resolved by the dataset's own rule for ``backend``, a width grid on JAX and
    ``"batch"`` elsewhere. For a sampler of several fields a shape is ``(rows, width of each
    field)``, every field padded under ``pad_to`` (:meth:`BatchPlan.field_widths
    <seqprep.BatchPlan.field_widths>`); ``"auto"`` gives each field its own width grid there.

    Args:
        sampler: the :class:`~seqprep.BucketSampler` whose plans are counted.
        pad_to: ``"auto"``, ``"batch"``, ``"bucket"``, an int width or a width grid (see
            :func:`width_grid`), as in :func:`seqprep.bucketed_dataset`.
        epoch: first epoch counted.
        epochs: how many consecutive epochs to count over.
        backend: the Keras backend to count for (``"jax"``, ``"tensorflow"``, ``"torch"``);
            default: this process's (read without importing Keras).

    Returns:
        The number of distinct ``(rows, width)`` pairs.

    Raises:
        TypeError: ``sampler`` is not a :class:`~seqprep.BucketSampler`.
        ValueError: on an unknown ``pad_to`` or a bad ``epoch``/``epochs``.

    Example:
        >>> from seqprep import BucketSampler
        >>> s = BucketSampler([2, 3, 5, 9, 12], boundaries=[4, 8, 10], batch_size=2,
        ...                   shuffle=False)
        >>> count_shapes(s, pad_to="bucket"), count_shapes(s, pad_to=[12])
        (3, 2)
        >>> count_shapes(s, backend="jax") == count_shapes(s, pad_to=budget_grid(s))
        True
        >>> count_shapes(s, backend="tensorflow") == count_shapes(s, pad_to="batch")
        True
    """
    check_bucket_sampler(sampler, "count_shapes")
    epoch = check_int("epoch", epoch, minimum=0)
    epochs = check_int("epochs", epochs, minimum=1)
    backend = compiling_backend(backend)
    several = sampler.num_fields > 1
    if not several:
        pad_to = pad_to_rule(pad_to, sampler, backend)
    shapes: set[tuple[int, ...]] = set()
    for e in range(epoch, epoch + epochs):
        plan = sampler.plan(e)
        if several:
            widths = field_widths_rule(plan, sampler, pad_to, backend)
            shapes.update((r, *w) for r, w in zip(plan.sizes.tolist(), widths.tolist(),
                                                  strict=True))
            continue
        widths = plan.widths(pad_to, sampler.lengths)
        shapes.update(zip(plan.sizes.tolist(), widths.tolist(), strict=True))
    return len(shapes)


def _grid_cuts(values: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Indices into ``values`` of the ``<= k`` widths minimising ``sum(rows * width)``."""
    m = values.size
    cum = np.concatenate([[0], np.cumsum(rows)]).astype(np.float64)
    # cost[i, j]: rows of values[i..j] all padded to values[j] (upper triangle).
    i, j = np.triu_indices(m)
    cost = np.full((m, m), np.inf)
    cost[i, j] = values[j] * (cum[j + 1] - cum[i])
    best = cost[0].copy()  # best[j]: one group covering values[0..j]
    backs = []
    for _ in range(1, min(k, m)):
        # new[j] = min over i <= j of best[i-1] + cost[i, j]
        prev = np.concatenate([[0.0], best[:-1]])
        total = prev[:, None] + cost
        arg = np.argmin(total, axis=0)
        new = total[arg, np.arange(m)]
        improved = new < best
        backs.append(np.where(improved, arg, -1))
        best = np.minimum(best, new)
    cuts, j = [m - 1], m - 1
    for back in reversed(backs):  # -1: this layer did not improve on the one below
        if back[j] == 0:
            break
        if back[j] > 0:
            j = int(back[j]) - 1
            cuts.append(j)
    return np.array(sorted(set(cuts)), np.int64)


def width_grid(
    sampler: BucketSampler, max_widths: int = DEFAULT_MAX_WIDTHS, *, field: Any = None
) -> np.ndarray:
    """At most ``max_widths`` padded widths for ``sampler``'s batches, fewest padded steps.

    Pass the result as ``pad_to`` to :func:`seqprep.bucketed_dataset` (``pad_to="auto"`` on
    JAX plays one of these grids, its size chosen by a compile budget: :func:`budget_grid`):
    each batch is padded to the smallest grid width covering its bucket, so a run
    compiles about ``max_widths`` shapes plus one per partial batch, in the first epoch only.
    The grid is optimal (an exact dynamic programme over the buckets' longest lengths, weighted
    by the rows the plan puts in each bucket).

    Args:
        sampler: a :class:`~seqprep.BucketSampler` built with ``batch_size`` (a token budget
            would be broken by padding a batch wider than its bucket).
        max_widths: the most widths to use.
        field: for a sampler of several fields, the field whose widths to grid (a name in
            ``sampler.field_names``); each field gets a grid of its own.

    Returns:
        Ascending int64 widths; the last is the longest planned length.

    Raises:
        TypeError: ``sampler`` is not a :class:`~seqprep.BucketSampler` (lengths, for example).
        ValueError: ``max_widths < 1``, a sampler built with ``max_tokens``, or a missing or
            unknown ``field``.

    Example:
        >>> from seqprep import BucketSampler
        >>> s = BucketSampler([2, 2, 3, 9, 10, 10, 30], boundaries=[3, 4, 10, 11], batch_size=1)
        >>> width_grid(s, 2).tolist()
        [10, 30]
    """
    check_bucket_sampler(sampler, "width_grid")
    max_widths = check_int("max_widths", max_widths, minimum=1)
    if sampler.max_tokens is not None:
        raise ValueError(
            f"A width grid needs a sampler built with `batch_size`; this one has "
            f"max_tokens={sampler.max_tokens}, whose batches could not be padded wider than "
            "their bucket within the budget.\n- Bound the shapes with few buckets instead: "
            "BucketSampler(lengths, max_tokens=..., boundaries=Bucketer(8, max_tokens=...)) "
            'and pad_to="bucket".'
        )
    rows, buckets = _rows_and_buckets(sampler, sampler.epoch)
    pads = np.asarray(sampler.bucket_pad_lengths, np.int64)
    if sampler.num_fields > 1 or field is not None:
        names = sampler.field_names or ()
        if field not in names or sampler.num_fields == 1:
            raise ValueError(
                "Argument `field` must name one of the sampler's fields (each field gets a "
                f"width grid of its own). Received: field={field!r}, fields {list(names)}\n"
                "- Pass width_grid(sampler, field=name) for each field of a sampler of several "
                "fields; leave `field` out for one."
            )
        pads = pads[:, names.index(field)]
    # A bucket of empty sequences still pads to one step: widths stay positive, as pad_to ints.
    pads = np.maximum(pads, 1)
    per_bucket = np.bincount(buckets, weights=rows, minlength=pads.size)
    values, inverse = np.unique(pads, return_inverse=True)
    weight = np.bincount(inverse, weights=per_bucket, minlength=values.size)
    # Widths nobody is padded to are free to skip, except the longest, which must stay.
    used = (weight > 0) | (values == values[-1])
    values, weight = values[used], weight[used]
    return values[_grid_cuts(values, weight, max_widths)].astype(np.int64)


def budget_grid(sampler: BucketSampler, max_widths: int = DEFAULT_MAX_WIDTHS) -> np.ndarray:
    """The width grid ``pad_to="auto"`` plays on a compiling backend: sized by a compile budget.

    Of the optimal grids of 1 .. ``max_widths`` widths (:func:`width_grid`), the one whose run
    costs least, counting ``train_epochs * padded tokens of an epoch + shapes * compile_cost``
    (the sampler's :class:`~seqprep.PlanOptions`; ``shapes`` counts the ``(rows, width)``
    pairs, the partial batch's included). Each width saves padded tokens in every epoch but
    costs a compile, once: few epochs or few batches want few widths; a long run, more. The
    shapes are the same every epoch, as with any grid. ``compile_cost=None`` turns the budget
    off: the grid of ``max_widths`` widths. Ties go to the grid with fewer padded tokens.

    Example:
        >>> from seqprep import BucketSampler, PlanOptions
        >>> lengths = [3, 4, 10, 11, 30, 31] * 8
        >>> s = BucketSampler(lengths, boundaries=[5, 12], batch_size=8, shuffle=False)
        >>> budget_grid(s).tolist()  # 6 batches an epoch: one width is cheapest
        [31]
        >>> many = BucketSampler(lengths, boundaries=[5, 12], batch_size=8, shuffle=False,
        ...                      options=PlanOptions(compile_cost=100, train_epochs=50))
        >>> budget_grid(many).tolist()  # cheap compiles, many epochs: a width per bucket
        [4, 11, 31]
    """
    cost = getattr(sampler, "compile_cost", DEFAULT_COMPILE_COST)
    if cost is None:
        return width_grid(sampler, max_widths)
    epochs = getattr(sampler, "train_epochs", DEFAULT_TRAIN_EPOCHS)
    plan = sampler.plan(sampler.epoch)
    best: tuple[float, int, np.ndarray] | None = None
    for grid in _candidate_grids(sampler, max_widths):
        widths = plan.widths(grid, sampler.lengths)
        tokens = int(np.dot(plan.sizes, widths))
        shapes = len(set(zip(plan.sizes.tolist(), widths.tolist(), strict=True)))
        total = epochs * tokens + shapes * cost
        if best is None or (total, tokens) < best[:2]:
            best = (total, tokens, grid)
    assert best is not None
    return best[2]


def _candidate_grids(
    sampler: BucketSampler, max_widths: int, field: str | None = None
) -> list[np.ndarray]:
    """The distinct optimal grids of 1, 2, ... ``max_widths`` widths (:func:`width_grid`, of
    ``field`` when given) that a compile budget chooses among: the list stops where a grid of
    ``k`` widths has fewer than ``k`` (larger ``k``, the same grid)."""
    grids = [width_grid(sampler, 1, field=field)]
    for k in range(2, max_widths + 1):
        grid = width_grid(sampler, k, field=field)
        if grid.size < k:
            break
        grids.append(grid)
    return grids


# The most combinations of per-field grids budget_field_grids tries one by one; beyond, it
# improves one field's grid at a time (a coordinate descent from both ends).
_MAX_COMBINATIONS = 4096


def budget_field_grids(
    sampler: BucketSampler, max_widths: int = DEFAULT_MAX_WIDTHS
) -> tuple[np.ndarray, ...]:
    """The width grids ``pad_to="auto"`` plays on a compiling backend for a sampler of several
    fields, one per field (in ``sampler.field_names`` order), sized by one compile budget.

    A batch's shape is ``(rows, width of each field)``, so grids sized field by field could
    meet up to ``16 x 16`` programs. Of every combination of the fields' optimal grids of 1 ..
    ``max_widths`` widths (:func:`width_grid` with ``field=``), this takes the one whose run
    costs least, counting ``train_epochs * padded tokens of an epoch + shape tuples *
    compile_cost`` (the sampler's :class:`~seqprep.PlanOptions`). A row's padded tokens are
    its fields' widths, each times the field's ``field_weights`` (the cost of one padded step
    of it; default 1), added up (``field_tokens`` only counts a ``max_tokens`` budget, and a
    token budget pads to ``"bucket"``, not to a grid). Ties go to fewer padded tokens, then
    fewer shapes, then fewer widths. With more than 4096 combinations the search improves one
    field's grid at a time from both ends (every field's smallest grid, and every field's
    largest) until nothing improves. Never more shape tuples than ``compile_cost=None`` (every
    field's grid of ``max_widths`` widths), the same shapes every epoch, numpy only.

    Example:
        >>> from seqprep import BucketSampler, PlanOptions
        >>> src = [3, 4, 10, 11, 30, 31] * 8
        >>> s = BucketSampler({"src": src, "tgt": [n // 2 + 1 for n in src]},
        ...                   boundaries=[[5, 12], [4, 8]], batch_size=8, shuffle=False)
        >>> [g.tolist() for g in budget_field_grids(s)]  # 6 batches: one width each
        [[31], [16]]
        >>> many = BucketSampler({"src": src, "tgt": [n // 2 + 1 for n in src]},
        ...                      boundaries=[[5, 12], [4, 8]], batch_size=8, shuffle=False,
        ...                      options=PlanOptions(compile_cost=100, train_epochs=50))
        >>> [g.tolist() for g in budget_field_grids(many)]
        [[4, 11, 31], [3, 6, 16]]
    """
    max_widths = check_int("max_widths", max_widths, minimum=1)
    names = list(sampler.field_names)
    # per field: its distinct optimal grids of 1, 2, ... widths
    grids = [_candidate_grids(sampler, max_widths, field=name) for name in names]
    cost = getattr(sampler, "compile_cost", DEFAULT_COMPILE_COST)
    if cost is None:
        return tuple(g[-1] for g in grids)
    epochs = getattr(sampler, "train_epochs", DEFAULT_TRAIN_EPOCHS)
    plan = sampler.plan(sampler.epoch)
    sizes = np.asarray(plan.sizes, np.int64)
    # widths[j][k]: field j's width in every batch under its grid of k + 1 widths.
    widths = [[_grid_widths(plan, j, g) for g in field_grids]
              for j, field_grids in enumerate(grids)]
    weights = np.asarray(getattr(sampler, "field_weights", None) or [1.0] * len(names))

    def key(combo: tuple[int, ...]) -> tuple[float, float, int, int]:
        w = np.stack([widths[j][k] for j, k in enumerate(combo)], axis=1)
        tokens = float(np.dot(sizes, w @ weights))
        shapes = len(np.unique(np.column_stack([sizes, w]), axis=0)) if sizes.size else 0
        return epochs * tokens + shapes * cost, tokens, shapes, sum(combo)

    counts = [len(g) for g in grids]
    if int(np.prod(counts)) <= _MAX_COMBINATIONS:
        best = min(itertools.product(*(range(c) for c in counts)), key=key)
    else:
        best = min((_descend(key, start, counts) for start in
                    (tuple(0 for _ in counts), tuple(c - 1 for c in counts))), key=key)
    return tuple(grids[j][k] for j, k in enumerate(best))


def _grid_widths(plan: BatchPlan, field: int, grid: np.ndarray) -> np.ndarray:
    """Column ``field``'s width in every batch of ``plan`` under that field's width ``grid``:
    the smallest grid width covering the batch's bucket (as :func:`bucket_widths`)."""
    pads = np.asarray(plan.field_pad_lengths, np.int64)[:, field]
    return grid[np.searchsorted(grid, pads, side="left")]


def _descend(key: Any, combo: tuple[int, ...], counts: list[int]) -> tuple[int, ...]:
    """From ``combo``, the best of one field's grids at a time, until none improves ``key``."""
    best = key(combo)
    improved = True
    while improved:
        improved = False
        for j, count in enumerate(counts):
            for k in range(count):
                trial = (*combo[:j], k, *combo[j + 1:])
                value = key(trial)
                if value < best:
                    best, combo, improved = value, trial, True
    return combo


# Candidate widths the exact grid programme of length_grid considers at most (its cost
# matrix is candidates x candidates).
_GRID_CANDIDATES = 512


def length_grid(
    lengths: Sequence[int] | np.ndarray, max_widths: int = DEFAULT_MAX_WIDTHS
) -> np.ndarray:
    """At most ``max_widths`` padded widths for rows of ``lengths``, fewest padded steps.

    Each row is padded to the smallest grid width that covers its length; the grid minimises
    the padded steps of all rows (the programme of :func:`width_grid`, over lengths instead of
    a sampler's buckets). Beyond 512 distinct lengths the candidate widths are the upper ends
    of 512 groups of equal row counts (the longest length always among them). This is how
    :func:`seqprep.predict` keeps the shapes a compiling backend sees few.

    Args:
        lengths: non-negative lengths, one per row.
        max_widths: the most widths to use.

    Returns:
        Ascending int64 widths, each at least 1; the last covers the longest length.

    Example:
        >>> length_grid([1, 1, 2, 9, 10, 10, 30], 2).tolist()
        [10, 30]
    """
    max_widths = check_int("max_widths", max_widths, minimum=1)
    lengths = np.maximum(np.asarray(lengths, np.int64).ravel(), 1)
    if lengths.size == 0:
        return np.ones(1, np.int64)
    values, counts = np.unique(lengths, return_counts=True)
    if values.size > _GRID_CANDIDATES:
        ends = np.searchsorted(np.cumsum(counts), np.linspace(0, lengths.size,
                                                               _GRID_CANDIDATES + 1)[1:])
        keep = np.unique(np.minimum(ends, values.size - 1))
        covered = np.searchsorted(values[keep], values, side="left")
        counts = np.bincount(covered, weights=counts, minlength=keep.size)
        values = values[keep]
    return values[_grid_cuts(values, counts.astype(np.float64), max_widths)].astype(np.int64)


def _many_shapes_message(n: int, later: int, pad_to: Any, backend: str) -> str:
    shown = pad_to if isinstance(pad_to, str) else "a width grid"
    if isinstance(pad_to, str) and pad_to == "auto":  # only a token budget warns: per bucket
        shown = "auto (per bucket under a token budget)"
    what = f"{n} distinct batch shapes in its first epoch"
    if later:
        what += f" and {later} new ones in the next (each fresh order meets new widths)"
    return (
        f"This pipeline has {what} with pad_to={shown!r}; the {backend} backend compiles a "
        "program for each new shape, which can take longer than the training itself.\n"
        '- Pass pad_to="auto" (or pad_to=seqprep.width_grid(sampler)) to pad to a few widths '
        "chosen for this plan; with a token budget, build the sampler with few buckets "
        '(boundaries=Bucketer(8, max_tokens=...)) and pass pad_to="bucket".'
    )


def pad_to_rule(pad_to: Any, sampler: BucketSampler, backend: str | None) -> Any:
    """THE rule for ``pad_to``, which every reader of it applies (the datasets through
    :func:`resolve_pad_to`, :func:`count_shapes`, ``BucketSampler.report``, ``analyze``).

    ``backend`` is :func:`compiling_backend`'s answer: a backend that compiles one program per
    shape, or None. There ``"auto"`` is the width grid the compile budget sizes
    (:func:`budget_grid`; ``"bucket"`` under a token budget), and ``"batch"`` elsewhere; a width
    grid comes back checked as int64, an int as an int, ``"batch"``/``"bucket"`` as they are.

    Example:
        >>> from seqprep import BucketSampler, PlanOptions
        >>> s = BucketSampler([2, 3, 5, 9, 12], boundaries=[4, 8, 10], batch_size=2)
        >>> pad_to_rule("auto", s, None), pad_to_rule("auto", s, "jax").tolist()
        ('batch', [12])
        >>> no_budget = BucketSampler([2, 3, 5, 9, 12], boundaries=[4, 8, 10], batch_size=2,
        ...                           options=PlanOptions(compile_cost=None))
        >>> pad_to_rule("auto", no_budget, "jax").tolist()  # the grid of 16 widths at most
        [3, 9, 12]
    """
    if isinstance(pad_to, str):
        if pad_to != "auto":
            return pad_to
        if backend is None:
            return "batch"
        return "bucket" if sampler.max_tokens is not None else budget_grid(sampler)
    if isinstance(pad_to, (int, np.integer)):
        return int(pad_to)
    pads = np.asarray(sampler.bucket_pad_lengths, np.int64)
    return check_width_grid(pad_to, int(pads.max()) if pads.size else 0)


def field_widths_rule(
    plan: BatchPlan, sampler: BucketSampler, pad_to: Any, backend: str | None
) -> np.ndarray:
    """Each field's padded width per batch of a sampler of several fields, under the one
    ``pad_to`` rule applied field by field: ``"auto"`` is each field's width grid of the
    compile budget (:func:`budget_field_grids`; ``"bucket"`` under a token budget) on a
    compiling ``backend`` and ``"batch"`` elsewhere; any other ``pad_to`` applies to every
    field as :meth:`BatchPlan.field_widths` says."""
    if not (isinstance(pad_to, str) and pad_to == "auto"):
        return plan.field_widths(pad_to, sampler.lengths)
    if backend is None or sampler.max_tokens is not None:
        return plan.field_widths("batch" if backend is None else "bucket", sampler.lengths)
    grids = budget_field_grids(sampler)
    return np.stack([_grid_widths(plan, j, grid) for j, grid in enumerate(grids)], axis=1)


def resolve_pad_to(
    pad_to: Any, sampler: BucketSampler, *, backend: str | None, epoch: int = 0
) -> str | int | np.ndarray:
    """``bucketed_dataset``'s ``pad_to`` as ``"batch"``, ``"bucket"``, an int or a width grid.

    ``backend`` is the name of a backend that compiles one program per input shape (for
    example ``"jax"``), or None. There ``"auto"`` becomes the width grid of :func:`width_grid`
    (``"bucket"`` for a token-budget sampler) and a plan with more than :data:`MANY_SHAPES`
    shapes, or with new shapes in its second epoch, warns; elsewhere ``"auto"`` is
    ``"batch"`` (fewest padded steps). A width grid comes back checked, as an int64 array, for
    :meth:`BatchPlan.widths <seqprep.BatchPlan.widths>`.
    """
    asked = pad_to
    pad_to = pad_to_rule(pad_to, sampler, backend)
    if backend is not None and not isinstance(pad_to, int):
        first = count_shapes(sampler, pad_to=pad_to, epoch=epoch)
        later = 0
        if isinstance(pad_to, str) and pad_to == "batch":
            later = count_shapes(sampler, pad_to=pad_to, epoch=epoch, epochs=2) - first
        if first > MANY_SHAPES or later:
            warnings.warn(
                _many_shapes_message(first, later, asked, backend), UserWarning, stacklevel=3
            )
    return pad_to
