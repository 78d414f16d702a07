"""Fields and targets for the input stage (:mod:`seqprep.inputs._stage`): ``x`` (and ``y``) as
one sequence collection or several named fields (a dict, or a tuple of collections), a
per-field option read for each field, and a per-step target field aligned with the ``x``
field whose lengths it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from seqprep._core.ragged import Ragged, lengths_of
from seqprep.inputs._targets import resolve_targets

__all__ = ["field_label", "pack", "per_field", "split_fields"]


Kind = Literal["single", "dict", "tuple"]
Key = Any  # a field's name (dict), position (tuple) or None (one collection)


_DEFAULTS = {"padding": "post", "value": 0, "pad_to": "auto", "truncating": "post",
             "dtype": None, "maxlen": None, "pad_to_multiple_of": None}


def _is_collection_of_sequences(item: Any, *, dense_rows: int | None) -> bool:
    """Whether ``item`` reads as a whole sequence collection (not as one sequence); with
    ``dense_rows=n``, an array of ``n`` rows (labels, one per example) counts too."""
    if isinstance(item, Ragged) or hasattr(item, "row_splits"):
        return True
    if type(item).__module__.startswith("pandas"):
        return not hasattr(item, "columns")
    shape = getattr(item, "shape", None)
    rows_ok = dense_rows is not None and shape is not None and len(shape) >= 1 and \
        shape[0] == dense_rows
    if hasattr(item, "numpy") and type(item).__module__.startswith("tensorflow"):
        return len(shape) >= 2 or rows_ok
    if isinstance(item, np.ndarray):
        return item.dtype == object or item.ndim >= 2 or rows_ok
    if isinstance(item, list) and item:
        first = item[0]
        return hasattr(first, "__len__") and not isinstance(first, (str, bytes))
    return False


def split_fields(
    x: Any, *, dense_rows: int | None = None
) -> tuple[Kind, tuple[Key, ...], list[Any]]:
    """``(kind, keys, items)`` of a structure of fields.

    A dict is fields (keys: its names); a tuple is fields when every item reads as a whole
    sequence collection (a list of sequences, an array of rank 2 or more, a ragged tensor, a
    pandas Series; with ``dense_rows=n``, as for targets, an array of ``n`` labels too);
    anything else is one collection (``"single"``).

    Example:
        >>> split_fields({"a": [[1]], "b": [[2, 3]]})[:2]
        ('dict', ('a', 'b'))
        >>> split_fields(([[1, 2]], [[3]]))[:2], split_fields(([1, 2], [3]))[:2]
        (('tuple', (0, 1)), ('single', (None,)))
    """
    if isinstance(x, Mapping):
        if not x:
            raise ValueError(
                "Argument `x` is an empty dict: there are no fields to batch. Received: x={}\n"
                "- Pass a dict of sequence collections, e.g. {'encoder': src, 'decoder': dec}."
            )
        bad = [k for k in x if not isinstance(k, str)]
        if bad:
            raise TypeError(
                f"A dict of fields must have string keys (Keras input names). Received key "
                f"{bad[0]!r} of type {type(bad[0]).__name__}\n- Name every field with a string."
            )
        return "dict", tuple(x), list(x.values())
    if isinstance(x, tuple) and x and all(
        _is_collection_of_sequences(item, dense_rows=dense_rows) for item in x
    ):
        return "tuple", tuple(range(len(x))), list(x)
    return "single", (None,), [x]


def field_label(name: str, kind: Kind, key: Key) -> str:
    """How messages name a field: ``x``, ``x['encoder']`` or ``x[0]``."""
    if kind == "single":
        return name
    return f"{name}[{key!r}]"


def pack(kind: Kind, keys: tuple[Key, ...], items: list[Any]) -> Any:
    """The inverse of :func:`split_fields`: one item, a dict or a tuple."""
    if kind == "single":
        return items[0]
    if kind == "dict":
        return dict(zip(keys, items, strict=True))
    return tuple(items)


def per_field(option: str, given: Any, kind: Kind, keys: tuple[Key, ...]) -> list[Any]:
    """``given`` for each field: the same value, or a dict keyed by field (missing: default)."""
    if not isinstance(given, Mapping):
        return [given] * len(keys)
    if kind == "single":
        raise TypeError(
            f"Argument `{option}` is a dict, but `x` is one sequence collection, not a dict or "
            f"tuple of fields. Received: {option}={given!r:.80}\n"
            f"- Pass one {option} for the collection."
        )
    unknown = [k for k in given if k not in keys]
    if unknown:
        raise ValueError(
            f"Argument `{option}` names field {unknown[0]!r}, which `x` does not have. "
            f"Received keys {list(given)!r}; the fields are {list(keys)!r}\n"
            f"- Key `{option}` by the field names of `x` (by position for a tuple)."
        )
    return [given.get(k, _DEFAULTS[option]) for k in keys]


def _check_counts(label_lengths: list[tuple[str, np.ndarray]], what: str) -> None:
    (first, lengths), *rest = label_lengths
    for label, other in rest:
        if other.size != lengths.size:
            raise ValueError(
                f"The fields of `{what}` must hold one sequence per example each. Received "
                f"{lengths.size} in `{first}` and {other.size} in `{label}`\n"
                "- Pass the same examples, in the same order, in every field."
            )


def _align(
    y: Any, key: Key, label: str, fields_raw: list[np.ndarray], field_labels: list[str],
    x_keys: tuple[Key, ...], targets: str, forced: int | None, multi: bool,
) -> tuple[str, Any, int]:
    """``(kind, resolved, field)``: a target field read by the targets rule and the ``x``
    field it aligns with (see the module docstring)."""
    if forced is not None:
        kind, resolved = resolve_targets(y, fields_raw[forced], targets=targets, name=label,
                                         xname=field_labels[forced])
        return kind, resolved, forced
    try:
        rows = lengths_of(y, label)
    except (TypeError, ValueError):
        rows = None
    matches = [] if rows is None else [
        j for j, lengths in enumerate(fields_raw) if np.array_equal(rows, lengths)
    ]
    ref = matches[0] if matches else 0
    try:
        kind, resolved = resolve_targets(y, fields_raw[ref], targets=targets, name=label,
                                         xname=field_labels[ref])
    except ValueError:
        if not multi or matches or rows is None or rows.size != fields_raw[0].size:
            raise
        i = int(np.flatnonzero(rows != fields_raw[0])[0])
        shown = ", ".join(f"`{lab}` {int(fields_raw[j][i])}"
                          for j, lab in enumerate(field_labels))
        raise ValueError(
            f"Argument `{label}` holds per-step targets whose lengths match no field of `x`: "
            f"{label}[{i}] has {int(rows[i])} steps; at that position {shown}.\n"
            "- Per-step targets need one target per step of one input field (e.g. decoder "
            "outputs aligned with decoder inputs); if they hold one target per sequence, pass "
            "an array of shape (n, ...) or targets=\"sequence\"."
        ) from None
    if kind == "step" and len(matches) > 1:
        names = ", ".join(f"`{field_labels[j]}`" for j in matches)
        raise ValueError(
            f"Argument `{label}` holds per-step targets whose lengths equal those of several "
            f"fields of `x` ({names}), so which field's padding they follow is ambiguous. "
            "Received: targets_field=None\n"
            f"- Pass targets_field= one of {[x_keys[j] for j in matches]!r}."
        )
    return kind, resolved, ref


def _target_field(targets_field: Any, key: Key, kind: Kind, keys: tuple[Key, ...],
                  y_kind: Kind) -> int | None:
    """The ``x`` field index ``targets_field`` names for target ``key`` (None: by lengths)."""
    given = targets_field
    if isinstance(given, Mapping) and y_kind != "single":
        given = given.get(key)
    if given is None:
        return None
    if kind == "single":
        raise ValueError(
            f"Argument `targets_field` names a field, but `x` is one sequence collection. "
            f"Received: targets_field={targets_field!r}\n- Drop `targets_field`: per-step "
            "targets align with `x`."
        )
    if given not in keys:
        raise ValueError(
            f"Argument `targets_field` must name a field of `x`. Received: "
            f"targets_field={targets_field!r}; the fields are {list(keys)!r}\n"
            "- Pass the name (the position, for a tuple) of the field the targets align with."
        )
    return keys.index(given)
