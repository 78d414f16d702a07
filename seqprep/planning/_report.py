"""What a batching plan costs: padding, shapes, largest batch, RNN steps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from seqprep._core.checks import check_field_lengths

__all__ = ["PaddingReport", "padding_report"]

# Display order and labels of the printed report; other keys (added by callers) follow.
_LABELS = {
    "padding_fraction": "padding",
    "n_batches": "batches",
    "n_examples": "examples",
    "n_shapes": "shapes (rows, width)",
    "n_lengths": "padded widths",
    "max_batch_tokens": "largest batch (tokens)",
    "real_tokens": "real tokens",
    "padded_tokens": "padded tokens",
    "steps_cost": "RNN steps per epoch",
}


class PaddingReport(dict):
    """A :func:`padding_report` result: a plain ``dict`` that prints as an aligned table.

    Every dict operation works as on a ``dict`` (``r["padding_fraction"]``, ``==``, ``json``);
    only ``str()``/``print()`` differ, showing one labelled line per entry.

    Example:
        >>> r = padding_report([1, 2, 3, 4], [[0, 1], [2, 3]])
        >>> r["n_batches"], isinstance(r, dict)
        (2, True)
        >>> print(r)  # doctest: +NORMALIZE_WHITESPACE
        padding report
          padding                 16.7% (2 of 12 padded tokens)
          batches                 2
          examples                4
          shapes (rows, width)    2
          padded widths           2
          largest batch (tokens)  8
          real tokens             10
          padded tokens           12
          RNN steps per epoch     6
    """

    def _lines(self) -> list[str]:
        keys = [k for k in _LABELS if k in self] + [k for k in self if k not in _LABELS]
        width = max((len(_LABELS.get(k, k)) for k in keys), default=0)
        lines = ["padding report"]
        for key in keys:
            value = self[key]
            if key == "padding_fraction" and {"real_tokens", "padded_tokens"} <= self.keys():
                pads = self["padded_tokens"] - self["real_tokens"]
                shown = f"{value:.1%} ({pads} of {self['padded_tokens']} padded tokens)"
                if "fields" in self:
                    shown = shown.replace("padded tokens", "padded tokens, all fields")
            elif key == "fields":
                lines += [
                    f"  {f'padding of {name}':<{width}}  {r['padding_fraction']:.1%} "
                    f"({r['padded_tokens'] - r['real_tokens']} of {r['padded_tokens']} padded "
                    f"tokens), {r['steps_cost']} steps"
                    for name, r in value.items()
                ]
                continue
            elif isinstance(value, float):
                shown = f"{value:.4g}"
            else:
                shown = str(value)
            lines.append(f"  {_LABELS.get(key, key):<{width}}  {shown}")
        return lines

    def __str__(self) -> str:
        return "\n".join(self._lines())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython / Jupyter display
        printer.text("PaddingReport(...)" if cycle else str(self))


def _refuse_repeats(flat: np.ndarray, sizes: np.ndarray) -> None:
    """Refuse an index that appears twice (within a batch or in two batches): it would be
    counted twice, and no plan of one epoch holds an example twice."""
    order = np.argsort(flat, kind="stable")
    repeated = np.flatnonzero(flat[order][1:] == flat[order][:-1])
    if not repeated.size:
        return
    index = int(flat[order][repeated[0]])
    where = np.flatnonzero(flat == index)
    batch_of = np.searchsorted(np.cumsum(sizes), where, side="right")
    raise ValueError(
        f"Argument `batches` holds index {index} {where.size} times (in batches "
        f"{batch_of.tolist()[:5]}), so its tokens would be counted more than once. Received "
        f"{flat.size - np.unique(flat).size} repeated entries in all\n- Pass the batches of "
        "one epoch, each index at most once (as `sampler.batches(epoch)` returns); report "
        "several epochs one at a time."
    )


def padding_report(
    lengths: Sequence[int] | np.ndarray | dict[Any, Sequence[int] | np.ndarray],
    batches: Sequence[Sequence[int] | np.ndarray],
    *,
    pad_lengths: Sequence[int] | np.ndarray | None = None,
) -> PaddingReport:
    """Summarise the padding cost of ``batches`` of indices into ``lengths``.

    Each batch is padded to its longest sequence, or to ``pad_lengths[i]`` when given (for
    example ``BucketSampler.plan(epoch).pad_lengths``, the ``pad_to="bucket"`` shapes). For
    the shapes :func:`seqprep.bucketed_dataset` will run on your backend (``pad_to="auto"``
    is a width grid on JAX), use ``sampler.report()`` or :func:`seqprep.count_shapes`.

    Examples with several ragged fields (an encoder–decoder's source and target) pass
    ``lengths`` of shape ``(n, fields)`` or a dict of per-field lengths: each field of a batch
    is padded to its own longest entry (or to ``pad_lengths[i, f]``, e.g.
    ``plan.field_pad_lengths``). The report is then of all fields together (padded tokens of
    every field; a batch's RNN steps are the sum of its fields' widths, encoder plus decoder;
    a shape is ``(rows, width of every field)``), plus ``fields``: one report per field.

    Args:
        lengths: length of every sequence; or ``(n, fields)`` lengths, or a dict of them.
        batches: index arrays into ``lengths``, one per batch.
        pad_lengths: optional padded length of each batch (``(batches, fields)`` for several
            fields); each must be at least the batch's longest length.

    Returns:
        A :class:`PaddingReport` (a ``dict`` that prints as a table) with
        ``padding_fraction`` (padding / padded tokens), ``n_batches``, ``n_examples``,
        ``n_shapes`` (distinct ``(rows, padded_length)`` shapes: a partial batch is a shape of
        its own, as for a backend that compiles per shape), ``n_lengths``
        (distinct padded lengths), ``max_batch_tokens`` (largest batch, rows x padded length),
        ``real_tokens``, ``padded_tokens`` and ``steps_cost`` (sum over batches of the padded
        length: what one epoch of an RNN costs in timesteps); with several fields also
        ``fields``, a dict of one such report per field name (or column position).

    Raises:
        ValueError: if an index is out of range or appears twice, or a ``pad_lengths`` entry
            is shorter than its batch's longest sequence, or lengths with a wrong shape.

    Example:
        >>> r = padding_report([1, 2, 3, 4], [[0, 1], [2, 3]])
        >>> r["padded_tokens"], r["real_tokens"], r["steps_cost"], round(r["padding_fraction"], 3)
        (12, 10, 6, 0.167)
        >>> r = padding_report({"src": [1, 2, 3, 4], "tgt": [2, 2, 5, 1]}, [[0, 1], [2, 3]])
        >>> r["padded_tokens"], r["fields"]["tgt"]["padded_tokens"], r["steps_cost"]
        (26, 14, 13)
    """
    arr, names = check_field_lengths(lengths)
    try:
        parts = [np.asarray(b, dtype=np.int64).reshape(-1) for b in batches]
    except (TypeError, ValueError):
        raise TypeError(
            f"Argument `batches` must be a list of index arrays (one per batch). Received: "
            f"batches={batches!r:.80}\n- Pass e.g. `sampler.batches(epoch)` or "
            "[[0, 1], [2, 3]]."
        ) from None
    sizes = np.array([p.size for p in parts], dtype=np.int64)
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    n = arr.shape[0]
    if flat.size and (flat.min() < 0 or flat.max() >= n):
        bad = flat[(flat < 0) | (flat >= n)][:5].tolist()
        raise ValueError(
            f"Argument `batches` holds indices outside [0, {n}). Received indices {bad}\n"
            "- Pass batches of indices into `lengths` (as a sampler built on them returns)."
        )
    _refuse_repeats(flat, sizes)
    if arr.ndim == 1:
        report, _ = _one_field(arr, flat, sizes, pad_lengths)
        return report
    k = arr.shape[1]
    pads = None
    if pad_lengths is not None:
        pads = np.asarray(pad_lengths, dtype=np.int64)
        if pads.shape != (sizes.size, k):
            raise ValueError(
                f"Argument `pad_lengths` must have one row per batch and one column per field "
                f"({sizes.size}, {k}). Received an array of shape {pads.shape}\n"
                "- Pass e.g. `sampler.plan(epoch).field_pad_lengths` with that plan's batches."
            )
    fields, widths = {}, []
    for f, name in enumerate(names):
        fields[name], width = _one_field(
            arr[:, f], flat, sizes, None if pads is None else pads[:, f], name
        )
        widths.append(width)
    wide = np.stack(widths, axis=1) if widths else np.zeros((0, k), np.int64)
    total = wide.sum(axis=1)
    padded = sum(r["padded_tokens"] for r in fields.values())
    real = sum(r["real_tokens"] for r in fields.values())
    shapes = {(int(z), *map(int, w)) for z, w in zip(sizes.tolist(), wide, strict=True)}
    return PaddingReport({
        "padding_fraction": 0.0 if padded == 0 else 1.0 - real / padded,
        "n_batches": int(sizes.size),
        "n_examples": int(flat.size),
        "n_shapes": len(shapes),
        "n_lengths": len({s[1:] for s in shapes}),
        "max_batch_tokens": int((sizes * total).max()) if sizes.size else 0,
        "real_tokens": int(real),
        "padded_tokens": int(padded),
        "steps_cost": int(total.sum()),
        "fields": fields,
    })


def _one_field(
    arr: np.ndarray, flat: np.ndarray, sizes: np.ndarray, pad_lengths: Any, field: Any = None
) -> tuple[PaddingReport, np.ndarray]:
    """The report of one field's lengths ``arr`` under the batches (``flat``, ``sizes``), and
    each batch's padded width."""
    longest = np.zeros(sizes.size, dtype=np.int64)
    nonempty = sizes > 0
    if flat.size:
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])[nonempty]
        longest[nonempty] = np.maximum.reduceat(arr[flat], starts)
    of = "" if field is None else f" (field {field!r})"
    if pad_lengths is None:
        padded_to = longest
    else:
        padded_to = np.asarray(pad_lengths, dtype=np.int64).reshape(-1)
        if padded_to.size != sizes.size:
            raise ValueError(
                f"Argument `pad_lengths` must have one entry per batch ({sizes.size}). "
                f"Received {padded_to.size} entries"
            )
        short = np.flatnonzero(padded_to < longest)
        if short.size:
            i = int(short[0])
            raise ValueError(
                f"Argument `pad_lengths` is shorter than the longest sequence of batch {i}"
                f"{of}: pad_lengths[{i}]={int(padded_to[i])} < {int(longest[i])}\n"
                "- Pass each batch's padded length (at least its longest member), e.g. "
                "`sampler.plan(epoch).pad_lengths` with that plan's batches."
            )
    batch_tokens = sizes * padded_to
    padded = int(batch_tokens.sum())
    real = int(arr[flat].sum()) if flat.size else 0
    shapes = {(int(s), int(t)) for s, t in zip(sizes.tolist(), padded_to.tolist(), strict=True)}
    return PaddingReport({
        "padding_fraction": 0.0 if padded == 0 else 1.0 - real / padded,
        "n_batches": int(sizes.size),
        "n_examples": int(flat.size),
        "n_shapes": len(shapes),
        "n_lengths": len({t for _, t in shapes}),
        "max_batch_tokens": int(batch_tokens.max()) if sizes.size else 0,
        "real_tokens": real,
        "padded_tokens": padded,
        "steps_cost": int(padded_to.sum()),
    }), padded_to
