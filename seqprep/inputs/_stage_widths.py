"""Widths for the input stage (:mod:`seqprep.inputs._stage`): which field each column of a 2-D
sampler plans (checked against the fields' lengths), each field's ``pad_to`` resolved for the
backend (the padded width of each batch is :func:`~seqprep.inputs._stage.batch_widths`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from seqprep._core.checks import (
    check_choice,
    check_int,
    check_sampler,
)
from seqprep.inputs._stage_fields import Key, Kind
from seqprep.planning._plan import check_width_grid
from seqprep.planning._shapes import budget_field_grids


def _sampler_columns(sampler: Any, kind: Kind, keys: tuple[Key, ...], labels: list[str],
                     raw: list[np.ndarray], sampler_type: type) -> list[int | None]:
    """Which sampler column plans each field (see the module docstring), checked."""
    if not isinstance(sampler, sampler_type):
        check_sampler(sampler, raw[0], sampler_type)  # raises the TypeError
    planned = np.asarray(sampler.lengths)
    limit = sampler.length_limit
    if planned.ndim == 2:
        names = getattr(sampler, "field_names", None)
        k = planned.shape[1]
        if kind == "single":
            raise ValueError(
                f"Argument `sampler` plans {k} fields (lengths of shape {planned.shape}), but "
                "`x` is one sequence collection.\n- Pass `x` as a dict or tuple of the "
                f"{k} fields the sampler was built on, or build a 1-D sampler: "
                "`BucketSampler(sequence_lengths(x), ...)`."
            )
        if k != len(keys):
            raise ValueError(
                f"Argument `sampler` plans {k} fields (lengths of shape {planned.shape}), but "
                f"`x` has {len(keys)}: {list(keys)!r}\n- Build the sampler with one length "
                "column per field of `x`, in the same order."
            )
        columns: list[int | None] = list(range(k))
        if names is not None and kind == "dict" and all(isinstance(k, str) for k in names):
            names = list(names)
            if sorted(map(str, names)) != sorted(keys):
                raise ValueError(
                    f"Argument `sampler` was built on the fields {names!r}, but `x` has "
                    f"{list(keys)!r}\n- Name the sampler's length columns as the fields of `x`."
                )
            columns = [names.index(key) for key in keys]
        for j, col in enumerate(columns):
            lim = limit if limit is None or np.ndim(limit) == 0 else np.asarray(limit)[col]
            _check_planned(planned[:, col], raw[j], lim, labels[j],
                           f"column {col} of its lengths")
        return columns
    n = raw[0].size
    if kind == "single":
        check_sampler(sampler, raw[0], sampler_type)
        return [0]
    if planned.size != n:
        raise ValueError(
            f"Argument `sampler` was built on {planned.size} lengths, but the fields of `x` "
            f"hold {n} sequences each.\n- Build the sampler from one field's lengths, e.g. "
            f"`BucketSampler(sequence_lengths(x[{keys[0]!r}]), ...)`."
        )
    for j, lengths in enumerate(raw):
        kept = lengths if limit is None else np.minimum(lengths, limit)
        if np.array_equal(kept, planned):
            return [0 if i == j else None for i in range(len(raw))]
    shown = "; ".join(
        f"`{label}`: {_first_difference(planned, raw[j], limit)}" for j, label in enumerate(labels)
    )
    raise ValueError(
        f"Argument `sampler` was built on lengths that match no field of `x` ({shown}).\n"
        "- Build the sampler from the lengths of the field it should bucket, e.g. "
        f"`BucketSampler(sequence_lengths(x[{keys[0]!r}]), ...)`, or a 2-D sampler on every "
        "field's lengths."
    )


def _first_difference(planned: np.ndarray, lengths: np.ndarray, limit: Any) -> str:
    kept = lengths if limit is None else np.minimum(lengths, limit)
    i = int(np.flatnonzero(kept != planned)[0])
    return f"sequence {i} has {int(lengths[i])} steps, the sampler {int(planned[i])}"


def _check_planned(planned: np.ndarray, lengths: np.ndarray, limit: Any, label: str,
                   where: str) -> None:
    kept = lengths if limit is None else np.minimum(lengths, limit)
    if planned.size != kept.size or not np.array_equal(planned, kept):
        detail = (f"{planned.size} lengths for {kept.size} sequences" if planned.size != kept.size
                  else _first_difference(planned, lengths, limit))
        raise ValueError(
            f"Argument `sampler` was built on other lengths than `{label}`'s ({where}: "
            f"{detail}).\n- Build the sampler from this data's lengths, one column per field."
        )


def _check_pad_to(pad_to: Any, label: str) -> Any:
    if isinstance(pad_to, str) or pad_to is None:
        check_choice("pad_to", pad_to, ("auto", "batch", "bucket"))
    elif np.isscalar(pad_to):
        pad_to = check_int("pad_to", pad_to, minimum=1,
                           fix='Pass pad_to="batch", pad_to="bucket" or a positive width.')
    return pad_to


def _quantile_grid(lengths: np.ndarray, max_widths: int = 16) -> np.ndarray:
    """At most ``max_widths`` widths covering ``lengths`` (its upper quantiles), for a field
    that no sampler column plans on a backend that compiles one program per shape."""
    if not lengths.size:
        return np.array([1], np.int64)
    q = np.quantile(lengths, np.linspace(0, 1, max_widths + 1)[1:], method="higher")
    return np.unique(np.maximum(q.astype(np.int64), 1))


def resolve_pad_to(
    pad_to: Any, field_lengths: np.ndarray, column: int | None, sampler: Any, label: str,
    backend: str | None, epoch: int, resolve_planned: Callable[..., Any],
) -> Any:
    """One field's ``pad_to`` as ``"batch"``, ``"bucket"``, an int or a width grid.

    A field a 1-D sampler plans takes the sampler's rule (``resolve_planned``:
    :func:`seqprep.planning._shapes.resolve_pad_to`). A field of a 2-D sampler pads to its
    batch's longest (``"auto"``; on a compiling backend, the field's width grid of the
    compile budget, :func:`seqprep.planning._shapes.budget_field_grids`, or ``"bucket"``
    under a token budget), its bucket width (``"bucket"``), a fixed int, or the smallest
    width of a grid that covers its bucket. A
    field no sampler column plans pads to its batch's longest (``"auto"``; on a compiling
    backend, a grid of at most 16 widths from its lengths' quantiles), a fixed int, or the
    smallest grid width that covers its batch's longest; ``"bucket"`` is refused there.
    """
    planned_1d = column is not None and np.ndim(sampler.lengths) == 1
    if planned_1d:
        pad_to = resolve_planned(pad_to, sampler, backend=backend, epoch=epoch)
    elif isinstance(pad_to, str):
        if pad_to == "auto":
            if backend is None:
                pad_to = "batch"
            elif column is None:
                pad_to = _quantile_grid(field_lengths)
            elif sampler.max_tokens is not None:  # a token budget: never wider than the bucket
                pad_to = "bucket"
            else:  # a 2-D sampler's field: its grid of the fields' compile budget
                pad_to = budget_field_grids(sampler)[column]
        elif pad_to == "bucket":
            if column is None:
                raise ValueError(
                    f'Argument `pad_to`="bucket" for `{label}`, which the sampler does not '
                    f"bucket (it plans another field).\n- Pass pad_to=\"batch\", an int or a "
                    "width grid for that field (a dict of per-field pad_to), or build a 2-D "
                    "sampler on every field's lengths."
                )
    elif np.ndim(pad_to) == 1:
        pad_to = check_width_grid(pad_to, int(field_lengths.max()) if field_lengths.size else 0)
    if isinstance(pad_to, int) and field_lengths.size and int(field_lengths.max()) > pad_to:
        i = int(np.argmax(field_lengths))
        what = "`x`" if label == "x" else f"`{label}`"
        raise ValueError(
            f"Argument `pad_to`={pad_to} is shorter than sequence {i} of {what} "
            f"(length {int(field_lengths[i])}).\n"
            f"- Pass pad_to>={int(field_lengths.max())}, or build the sampler with "
            f"max_length={pad_to}, overlong='truncate'."
        )
    return pad_to
