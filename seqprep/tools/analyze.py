"""What would batching cost on *these* lengths? The engine behind ``seqprep analyze``.

:func:`analyze_lengths` compares five ways to batch the same sequences under the same batch
size or token budget, all planned in numpy (no TensorFlow):

- **pad to max**: every batch padded to the longest sequence of the data set (what
  ``keras.utils.pad_sequences`` followed by ``model.fit(batch_size=...)`` does);
- **random batches**: shuffled batches, each padded to its own longest sequence (what
  ``dataset.shuffle(...).padded_batch(...)`` does);
- **quantile buckets**: bucketing with equal-count buckets, as one usually feeds
  ``tf.data``'s ``bucket_by_sequence_length``, with as many buckets as the next strategy;
- **seqprep buckets**: :class:`seqprep.BucketSampler` with its default boundaries (an
  ``"optimal"`` :class:`seqprep.Bucketer` under this batch size or token budget);
- **seqprep for JAX**: the same plan padded to the width grid a compile budget sizes
  (:func:`seqprep.width_grid` of as many widths as pay for their compiles, see
  :class:`seqprep.PlanOptions`; per bucket under a token budget), what
  ``bucketed_dataset(pad_to="auto")`` plays on JAX.

Each strategy also reports its distinct ``(rows, width)`` shapes over 10 epochs with a fresh
order each: what a backend that compiles per shape compiles.

Lengths of several fields per example (an encoder–decoder's source and target: an
``(n, fields)`` array or a dict of length arrays) are compared on the padding of all fields
together, each field of a batch padded to its own longest entry: pad to max, random batches,
1-D seqprep buckets on each field, sorted by the fields in order (no fresh order per epoch),
and seqprep's 2-D buckets (:class:`seqprep.BucketSampler` on every field's lengths).

:func:`format_analysis` renders the result as the text the command prints.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqprep._core.checks import check_field_lengths, check_int, check_lengths

__all__ = ["analyze_lengths", "format_analysis"]

# Epochs over which shapes are counted: with a fresh order each epoch, what a backend that
# compiles per shape (JAX) compiles in a short run.
SHAPE_EPOCHS = 10
# Boundary lists up to this long are printed in full; longer ones (60-120 on long-tailed data)
# are shortened, and the recommendation then names the sampler's default instead.
_SHORT = 20
_MAX_PACKED = 200_000


def _length_summary(lengths: np.ndarray) -> dict[str, Any]:
    q = np.percentile(lengths, [10, 50, 90, 99]) if lengths.size else np.zeros(4)
    return {
        "n": int(lengths.size),
        "min": int(lengths.min()),
        "max": int(lengths.max()),
        "mean": float(lengths.mean()),
        "p10": float(q[0]),
        "median": float(q[1]),
        "p90": float(q[2]),
        "p99": float(q[3]),
        "real_tokens": int(lengths.sum()),
    }


def _chunks(order: np.ndarray, size: int) -> list[np.ndarray]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def _pack_tokens(order: np.ndarray, lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Greedy batches in ``order``: add sequences while rows x longest stays within budget."""
    batches, start, longest = [], 0, 0
    for i, length in enumerate(lengths[order].tolist()):
        new_longest = max(longest, length, 1)
        if i > start and (i - start + 1) * new_longest > max_tokens:
            batches.append(order[start:i])
            start, new_longest = i, max(length, 1)
        longest = new_longest
    batches.append(order[start:])
    return batches


def _random_shapes(
    lengths: np.ndarray, batching: dict[str, int], rng: np.random.Generator, first: list
) -> int | None:
    """Distinct shapes of ``SHAPE_EPOCHS`` epochs of random batches, ``first`` the first.

    None under a token budget on more than ``_MAX_PACKED`` lengths (the greedy packing is a
    Python loop; ten of them would dominate the command's time).
    """
    shapes = {(b.size, int(lengths[b].max())) for b in first if b.size}
    if "batch_size" in batching:
        size, n = batching["batch_size"], lengths.size
        full = n // size * size
        for _ in range(SHAPE_EPOCHS - 1):
            drawn = lengths[rng.permutation(n)]
            widths = drawn[:full].reshape(-1, size).max(axis=1)
            shapes.update((size, int(w)) for w in np.unique(widths))
            if full < n:
                shapes.add((n - full, int(drawn[full:].max())))
        return len(shapes)
    if lengths.size > _MAX_PACKED:
        return None
    for _ in range(SHAPE_EPOCHS - 1):
        batches = _pack_tokens(rng.permutation(lengths.size), lengths, batching["max_tokens"])
        shapes.update((b.size, int(lengths[b].max())) for b in batches if b.size)
    return len(shapes)


def _few_shapes(sampler: Any) -> dict[str, Any]:
    """What ``pad_to="auto"`` plays on JAX: a width grid (``"bucket"`` under a token budget)."""
    from seqprep.planning import count_shapes, padding_report
    from seqprep.planning._shapes import pad_to_rule

    plan = sampler.plan(0)
    pad_to = pad_to_rule("auto", sampler, "jax")  # the rule bucketed_dataset applies there
    report = padding_report(sampler.lengths, plan.batches,
                            pad_lengths=plan.widths(pad_to, sampler.lengths))
    return report | {"shapes_over_epochs": count_shapes(sampler, pad_to=pad_to,
                                                        epochs=SHAPE_EPOCHS)}


def analyze_lengths(
    lengths: Any,
    *,
    batch_size: int | None = None,
    max_tokens: int | None = None,
    num_buckets: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare the padding cost of five batching strategies on the given lengths.

    Args:
        lengths: non-negative integer lengths, one per sequence; or, for examples of several
            fields, an ``(n, fields)`` array or a dict of per-field lengths (see the module
            docstring; ``num_buckets`` does not apply then).
        batch_size: rows per batch. At most one of this and ``max_tokens``; with neither,
            ``batch_size=32``.
        max_tokens: padded tokens per batch (rows x padded length); must be at least the
            longest length.
        num_buckets: bucket count of both bucketing strategies (at most this many for
            seqprep's optimal buckets); default: the :class:`seqprep.BucketSampler` default.
        seed: seed of the random orders.

    Returns:
        A dict with ``summary`` (``n``, ``min``, ``max``, ``mean``, ``median``, ``p10``,
        ``p90``, ``p99``, ``real_tokens``), ``batching`` (``{"batch_size": B}`` or
        ``{"max_tokens": K}``), ``strategies`` (name -> :func:`seqprep.padding_report` dict
        plus ``boundaries``, a list or None, and ``shapes_over_epochs``, the distinct shapes
        of 10 epochs in fresh orders), ``recommended_boundaries`` (seqprep's) and
        ``num_buckets`` (as passed). For several fields: ``summary`` has one entry per field,
        ``fields`` names them, each strategy's report has ``fields`` (one report per field),
        ``boundaries`` are one list per field (or None) and ``recommended_boundaries`` too.

    Raises:
        ValueError: empty or negative lengths, both ``batch_size`` and ``max_tokens``, or a
            token budget smaller than the longest sequence.
        TypeError: lengths that are not integers.

    Example:
        >>> result = analyze_lengths([5, 6, 7, 50, 52, 55, 5, 51], batch_size=2)
        >>> result["strategies"]["pad to max"]["padding_fraction"] == 1 - 231 / (8 * 55)
        True
        >>> 8 in result["recommended_boundaries"]  # the gap between short and long
        True
        >>> result["strategies"]["seqprep buckets"]["padding_fraction"] < 0.05
        True
    """
    from seqprep.planning import Bucketer, BucketSampler, count_shapes, padding_report

    if isinstance(lengths, dict) or np.ndim(lengths) == 2:
        arr, names = check_field_lengths(lengths)
        if arr.ndim == 2:
            return _analyze_fields(arr, names, batch_size, max_tokens, num_buckets, seed)
        lengths = arr
    lengths = check_lengths(lengths)
    _check_one_budget(batch_size, max_tokens)
    batching = _batching(batch_size, max_tokens)
    batch_size, max_tokens = batching.get("batch_size"), batching.get("max_tokens")
    seed = check_int("seed", seed, minimum=0)
    num_buckets = check_int("num_buckets", num_buckets, minimum=1, allow_none=True)
    longest = int(lengths.max())
    if max_tokens is not None and max_tokens < longest:
        raise ValueError(
            f"Argument `max_tokens`={max_tokens} is smaller than the longest sequence "
            f"({longest} steps), which could never be batched.\n- If so, raise the budget to at "
            f"least {longest}, or truncate long sequences first."
        )

    n = lengths.size
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    strategies: dict[str, dict[str, Any]] = {}

    rows = batch_size if batch_size is not None else max(1, max_tokens // max(longest, 1))
    chunks = _chunks(np.arange(n), rows)
    strategies["pad to max"] = padding_report(
        lengths, chunks, pad_lengths=np.full(len(chunks), longest)
    ) | {"boundaries": None}

    if batch_size is not None:
        random_batches = _chunks(order, batch_size)
    else:
        random_batches = _pack_tokens(order, lengths, max_tokens)
    strategies["random batches"] = padding_report(lengths, random_batches) | {"boundaries": None}

    strategies["pad to max"]["shapes_over_epochs"] = strategies["pad to max"]["n_shapes"]
    strategies["random batches"]["shapes_over_epochs"] = _random_shapes(
        lengths, batching, rng, first=random_batches
    )

    bucketer = None if num_buckets is None else Bucketer(num_buckets, **batching).fit(lengths)
    seqprep_sampler = BucketSampler(lengths, boundaries=bucketer, seed=seed, **batching)
    boundaries = [int(b) for b in seqprep_sampler.boundaries]
    quantile = Bucketer(len(boundaries) + 1, strategy="quantile").fit(lengths)
    quantile_sampler = BucketSampler(lengths, boundaries=quantile, seed=seed, **batching)
    for name, sampler in (("quantile buckets", quantile_sampler),
                          ("seqprep buckets", seqprep_sampler)):
        strategies[name] = padding_report(lengths, sampler.batches(0)) | {
            "boundaries": [int(b) for b in sampler.boundaries],
            "shapes_over_epochs": count_shapes(sampler, pad_to="batch", epochs=SHAPE_EPOCHS),
        }
    strategies["seqprep for JAX"] = _few_shapes(seqprep_sampler) | {"boundaries": boundaries}
    return {
        "summary": _length_summary(lengths),
        "batching": batching,
        "strategies": strategies,
        "recommended_boundaries": boundaries,
        "num_buckets": num_buckets,
    }


def format_analysis(result: dict[str, Any]) -> str:
    """Render :func:`analyze_lengths`'s result as a plain-text report.

    Args:
        result: the dict returned by :func:`analyze_lengths`.

    Returns:
        Several lines of text: the length summary, a table with one row per strategy
        (padding, batches, distinct shapes, largest batch, RNN time steps per epoch) and the
        recommended boundaries.

    Example:
        >>> text = format_analysis(analyze_lengths([3, 4, 30, 31], batch_size=2))
        >>> print(text.splitlines()[0])
        4 sequences, lengths 3..31 (mean 17.0, median 17.0, p90 30.7, p99 31.0)
    """
    if "fields" in result:
        return _format_fields(result)
    s = result["summary"]
    (key, value), = result["batching"].items()
    k, recommended = result.get("num_buckets"), result["recommended_boundaries"]
    if len(recommended) <= _SHORT:  # short enough to copy; longer ones the sampler finds itself
        bucketer = f"boundaries={recommended}, "
    elif k is None:
        bucketer = ""
    else:
        bucketer = f"boundaries=seqprep.Bucketer({k}, {key}={value}), "
    lines = [
        f"{s['n']} sequences, lengths {s['min']}..{s['max']} (mean {s['mean']:.1f}, "
        f"median {s['median']:.1f}, p90 {s['p90']:.1f}, p99 {s['p99']:.1f})",
        f"{s['real_tokens']} real time steps; batching with {key}={value}",
        "",
        f"{'strategy':<20} {'padding':>8} {'batches':>8} {'shapes':>7} "
        f"{'shapes/' + str(SHAPE_EPOCHS) + 'ep':>10} {'buckets':>8} {'max batch':>10} "
        f"{'RNN steps':>10}",
    ]
    for name, r in result["strategies"].items():
        buckets = "-" if r["boundaries"] is None else str(len(r["boundaries"]) + 1)
        lines.append(
            f"{name:<20} {100 * r['padding_fraction']:>7.1f}% {r['n_batches']:>8} "
            f"{r['n_shapes']:>7} {r.get('shapes_over_epochs') or '-':>10} {buckets:>8} "
            f"{r['max_batch_tokens']:>10} {r['steps_cost']:>10}"
        )
    lines.append("")
    shown = set()
    for name, r in result["strategies"].items():
        if r["boundaries"] is not None and tuple(r["boundaries"]) not in shown:
            shown.add(tuple(r["boundaries"]))
            lines.append(f"{name} boundaries: {_short_list(r['boundaries'])}")
    lines += [
        "padding: share of the padded tensor that is padding; shapes: distinct (rows, length) "
        f"batch shapes in one epoch and over {SHAPE_EPOCHS} epochs in fresh orders (what JAX "
        "compiles); RNN steps: padded time steps summed over one epoch's batches.",
        f"Recommended: seqprep.BucketSampler(lengths, {bucketer}{key}={value}) "
        f"({len(result['recommended_boundaries']) + 1} buckets); bucketed_dataset's default "
        'pad_to="auto" plays the "seqprep for JAX" row on JAX and the "seqprep buckets" row '
        "on TensorFlow and PyTorch.",
    ]
    return "\n".join(lines)


def _short_list(values: list[int], head: int = 8, tail: int = 3) -> str:
    """``values`` in full when short, else its first and last few (the count in between)."""
    if len(values) <= _SHORT:
        return str(values)
    inner = ", ".join(map(str, values[:head]))
    end = ", ".join(map(str, values[-tail:]))
    return f"[{inner}, ... {len(values) - head - tail} more ..., {end}] ({len(values)} in all)"


# --------------------------------------------------------------------------- several fields


def _pack_fields(order: np.ndarray, lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Greedy batches in ``order``: add examples while rows x (sum of each field's longest)
    stays within budget."""
    batches, start = [], 0
    widths = np.zeros(lengths.shape[1], np.int64)
    for i, row in enumerate(lengths[order]):
        new = np.maximum(widths, row)
        if i > start and (i - start + 1) * max(int(new.sum()), 1) > max_tokens:
            batches.append(order[start:i])
            start, new = i, row
        widths = new
    batches.append(order[start:])
    return batches


def _check_one_budget(batch_size: Any, max_tokens: Any) -> None:
    if batch_size is not None and max_tokens is not None:
        raise ValueError(
            "Pass at most one of `batch_size` and `max_tokens`. Received: "
            f"batch_size={batch_size!r}, max_tokens={max_tokens!r}"
        )


def _batching(batch_size: Any, max_tokens: Any) -> dict[str, int]:
    """The sampler's budget: ``max_tokens`` when given, else ``batch_size`` (default 32)."""
    if max_tokens is None:
        return {"batch_size": check_int(
            "batch_size", 32 if batch_size is None else batch_size, minimum=1)}
    return {"max_tokens": check_int("max_tokens", max_tokens, minimum=1)}


def _analyze_fields(
    lengths: np.ndarray, names: tuple[Any, ...], batch_size: Any, max_tokens: Any,
    num_buckets: Any, seed: Any,
) -> dict[str, Any]:
    """:func:`analyze_lengths` for ``(n, fields)`` lengths (see the module docstring)."""
    from seqprep.planning import BucketSampler, padding_report

    _check_one_budget(batch_size, max_tokens)
    if num_buckets is not None:
        raise ValueError(
            "Argument `num_buckets` sets one field's bucket count; with several length columns "
            "the 2-D buckets are planned jointly. Received: num_buckets="
            f"{num_buckets!r} with {lengths.shape[1]} fields\n- Leave `num_buckets` out."
        )
    batching = _batching(batch_size, max_tokens)
    batch_size, max_tokens = batching.get("batch_size"), batching.get("max_tokens")
    if max_tokens is not None:
        longest = int(lengths.sum(axis=1).max())
        if max_tokens < longest:
            raise ValueError(
                f"Argument `max_tokens`={max_tokens} is smaller than the longest example "
                f"({longest} steps over all fields), which could never be batched.\n- If so, "
                f"raise the budget to at least {longest}, or truncate long sequences first."
            )
    seed = check_int("seed", seed, minimum=0)
    n, k = lengths.shape
    by_name = dict(zip(names, lengths.T, strict=True))
    rng = np.random.default_rng(seed)

    def batches_of(order: np.ndarray) -> list[np.ndarray]:
        if batch_size is not None:
            return _chunks(order, batch_size)
        return _pack_fields(order, lengths, max_tokens)

    strategies: dict[str, dict[str, Any]] = {}
    to_max = batches_of(np.arange(n))
    pads = np.broadcast_to(lengths.max(axis=0), (len(to_max), k))
    if max_tokens is not None:  # every batch padded to the maxima: as many rows as fit them
        to_max = _chunks(np.arange(n), max(1, max_tokens // max(int(pads[0].sum()), 1)))
        pads = np.broadcast_to(lengths.max(axis=0), (len(to_max), k))
    strategies["pad to max"] = padding_report(by_name, to_max, pad_lengths=pads) | {
        "boundaries": None}
    strategies["random batches"] = padding_report(
        by_name, batches_of(rng.permutation(n))) | {"boundaries": None}
    for f, name in enumerate(names):
        one = BucketSampler(lengths[:, f], seed=seed, **batching)
        batches = one.batches(0)
        if max_tokens is not None:  # the budget counts every field, as the 2-D sampler's
            batches = [b for batch in batches for b in _pack_fields(batch, lengths, max_tokens)]
        strategies[f"1-D buckets on {name}"] = padding_report(by_name, batches) | {
            "boundaries": [[int(b) for b in one.boundaries] if g == f else [] for g in range(k)]}
    order = np.lexsort(lengths.T[::-1])
    strategies["sorted by " + ", ".join(map(str, names))] = padding_report(
        by_name, batches_of(order)) | {"boundaries": None}
    joint = BucketSampler(by_name, seed=seed, **batching)
    recommended = [[int(b) for b in bounds] for bounds in joint.boundaries]
    strategies["seqprep 2-D buckets"] = padding_report(by_name, joint.batches(0)) | {
        "boundaries": recommended}
    return {
        "summary": {name: _length_summary(col) for name, col in by_name.items()},
        "fields": list(names),
        "batching": batching,
        "strategies": strategies,
        "recommended_boundaries": recommended,
        "num_buckets": None,
    }


def _format_fields(result: dict[str, Any]) -> str:
    """:func:`format_analysis` for several fields."""
    (key, value), = result["batching"].items()
    names = result["fields"]
    summary = result["summary"]
    first = summary[names[0]]
    lines = [f"{first['n']} examples of {len(names)} fields; batching with {key}={value}"]
    for name in names:
        s = summary[name]
        lines.append(
            f"  {name}: lengths {s['min']}..{s['max']} (mean {s['mean']:.1f}, median "
            f"{s['median']:.1f}, p90 {s['p90']:.1f}), {s['real_tokens']} real steps"
        )
    field_cols = "".join(f" {str(name)[:9]:>9}" for name in names)
    lines += [
        "",
        f"{'strategy':<28} {'padding':>8}{field_cols} {'batches':>8} {'shapes':>7} "
        f"{'max batch':>10} {'RNN steps':>10}",
    ]
    for label, r in result["strategies"].items():
        per_field = "".join(
            f" {100 * r['fields'][name]['padding_fraction']:>8.1f}%" for name in names
        )
        lines.append(
            f"{label:<28} {100 * r['padding_fraction']:>7.1f}%{per_field} {r['n_batches']:>8} "
            f"{r['n_shapes']:>7} {r['max_batch_tokens']:>10} {r['steps_cost']:>10}"
        )
    bounds = result["recommended_boundaries"]
    given = "{" + ", ".join(f"{name!r}: {_short_list(b)}" for name, b in
                            zip(names, bounds, strict=True)) + "}"
    lines += [
        "",
        "padding: share of the padded tensors (all fields) that is padding; per field: that "
        "field's share; shapes: distinct (rows, width of each field) batch shapes in one epoch; "
        "RNN steps: padded steps of every field summed over one epoch's batches (encoder plus "
        "decoder).",
        f"Recommended: seqprep.BucketSampler({{name: lengths, ...}}, {key}={value}) "
        f"(2-D buckets planned jointly; boundaries {given}).",
    ]
    return "\n".join(lines)
