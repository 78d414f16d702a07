"""Argument checks shared by every module, so errors read the same everywhere.

Each check names the argument in backticks, echoes what was received and, where there is one,
says the fix on a line of its own ("- If ..., do ...").
"""

from __future__ import annotations

import functools
import inspect
import numbers
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np

F = TypeVar("F", bound=Callable[..., Any])


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError``."""
    choices = tuple(choices)
    if value not in choices:
        shown = " or ".join(repr(c) for c in choices)
        raise ValueError(
            f"Argument `{name}` must be {shown}. Received: {name}={value!r}\n"
            f"- Pass one of: {', '.join(f'{name}={c!r}' for c in choices)}."
        )
    return value


def _at_least(minimum: int | None) -> str:
    return "" if minimum is None else f" >= {minimum}"


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    allow_none: bool = False,
    fix: str | None = None,
) -> int | None:
    """Return ``value`` as a Python int after checking its type and lower bound."""
    if value is None:
        if allow_none:
            return None
        raise TypeError(
            f"Argument `{name}` must be an integer. Received: {name}=None\n"
            f"- Pass an integer{_at_least(minimum)}."
        )
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Argument `{name}` must be an integer. Received: {name}={value!r} "
            f"of type {type(value).__name__}\n"
            f"- Pass a Python or numpy integer{_at_least(minimum)} (not a bool, float or string)."
        )
    value = int(value)
    if minimum is not None and value < minimum:
        message = f"Argument `{name}` must be at least {minimum}. Received: {name}={value}"
        message += f"\n- {fix}" if fix else f"\n- Pass {name}>={minimum}."
        raise ValueError(message)
    return value


def _describe(arr: np.ndarray) -> str:
    if arr.ndim == 0:
        return f"a single {type(arr.item()).__name__}: {arr.item()!r:.60}"
    if arr.dtype == object and arr.ndim == 1 and arr.size and np.ndim(arr[0]):
        return f"a collection of {arr.size} sequences (element 0 has length {len(arr[0])})"
    return f"an array of shape {arr.shape}"


def check_lengths(lengths: Any, name: str = "lengths", *, allow_empty: bool = False) -> np.ndarray:
    """Return ``lengths`` as a fresh 1-D int64 array of non-negative integers.

    Accepts any array-like of integers (floats that are whole numbers are refused too: a
    length of ``3.0`` usually means the caller passed the wrong column).
    """
    try:
        arr = np.asarray(lengths)
    except (ValueError, TypeError):  # ragged nested lists: numpy's "inhomogeneous shape"
        arr = np.asarray(lengths, dtype=object)
    if arr.ndim != 1 or (arr.dtype == object and any(np.ndim(v) for v in arr)):
        raise ValueError(
            f"Argument `{name}` must be a 1-D sequence of integers (one length per sequence). "
            f"Received {_describe(arr)}\n"
            f"- If you passed the sequences themselves, pass `seqprep.sequence_lengths(...)` "
            f"of them instead."
        )
    if arr.size == 0:
        if allow_empty:
            return np.zeros(0, dtype=np.int64)
        raise ValueError(
            f"Argument `{name}` must not be empty. Received: {name} with 0 elements\n"
            "- If your data set is empty, there is nothing to batch: check the input pipeline."
        )
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"Argument `{name}` must hold integers. Received dtype {arr.dtype}\n"
            f"- If these are lengths stored as floats, convert them with "
            f"`np.asarray({name}).astype('int64')` after checking they are whole numbers."
        )
    if arr.dtype == np.uint64 and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(
            f"Argument `{name}` has values too large for int64. Received: max={arr.max()}\n"
            "- Pass lengths that fit int64 (a length this large is usually a wrong column)."
        )
    out = arr.astype(np.int64, copy=True)
    if out.min() < 0:
        bad = np.flatnonzero(out < 0)[:5].tolist()
        raise ValueError(
            f"Argument `{name}` must hold non-negative integers. "
            f"Received negative values at positions {bad}: "
            f"{arr[bad].tolist()}\n- Pass the length (number of steps) of each sequence, "
            "which is never negative."
        )
    return out


FieldNames = tuple[Any, ...]


def check_field_lengths(
    lengths: Any, name: str = "lengths"
) -> tuple[np.ndarray, FieldNames | None]:
    """Lengths of one field or of several, as int64, with the fields' names.

    One field: a 1-D sequence (as :func:`check_lengths`); names ``None``. Several fields: an
    ``(n, k)`` array with ``k >= 2`` columns (names ``0 .. k-1``), a tuple of ``k`` equally
    long 1-D length arrays (one per field, as a tuple of ragged fields; names ``0 .. k-1``), or
    a dict of them (names: its keys, in order; a dict of one field is one field, named). Every
    length is a non-negative integer.

    Returns:
        ``(lengths, names)``: a fresh int64 array, 1-D or ``(n, k)``, and the names.

    Example:
        >>> arr, names = check_field_lengths({"src": [3, 5], "tgt": [4, 4]})
        >>> arr.tolist(), names
        ([[3, 4], [5, 4]], ('src', 'tgt'))
    """
    if isinstance(lengths, tuple) and lengths and all(np.ndim(v) == 1 for v in lengths):
        arr, _ = check_field_lengths(dict(enumerate(lengths)), name)
        return arr, tuple(range(len(lengths)))
    if isinstance(lengths, dict):
        if not lengths:
            raise ValueError(
                f"Argument `{name}` is an empty dict. Received: {name}={{}}\n"
                "- Pass one array of lengths per field, e.g. {'src': src_lengths, "
                "'tgt': tgt_lengths}."
            )
        names = tuple(lengths)
        cols = [check_lengths(v, f"{name}[{k!r}]") for k, v in lengths.items()]
        sizes = {k: c.size for k, c in zip(names, cols, strict=True)}
        if len(set(sizes.values())) > 1:
            raise ValueError(
                f"Argument `{name}` has fields of different counts: every field needs one "
                f"length per example. Received: {sizes}\n"
                "- Pass the lengths of the same examples for every field (e.g. "
                "sequence_lengths(x[name]) for each name)."
            )
        if len(cols) == 1:
            return cols[0], names
        return np.stack(cols, axis=1), names
    try:
        arr = np.asarray(lengths)
    except (ValueError, TypeError):
        arr = None
    if arr is None or arr.ndim != 2 or arr.dtype == object:
        return check_lengths(lengths, name), None
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"Argument `{name}` must hold integer lengths: shape (n,) for one field, or "
            f"(n, fields) for several. Received a {arr.dtype} array of shape {arr.shape}\n"
            f"- If you passed the (padded) sequences themselves, pass "
            f"`seqprep.sequence_lengths(...)` of them instead; if these are lengths stored as "
            f"floats, convert them with `np.asarray({name}).astype('int64')`."
        )
    if arr.shape[1] < 2:
        raise ValueError(
            f"Argument `{name}` as a 2-D array must have one row per example and one column "
            f"per field, with at least 2 fields. Received an array of shape {arr.shape}\n"
            f"- For one field pass a 1-D array (e.g. {name}[:, 0]); for several pass shape "
            "(examples, fields), e.g. np.stack([src_lengths, tgt_lengths], axis=1)."
        )
    if arr.shape[1] > max(arr.shape[0], 8):
        raise ValueError(
            f"Argument `{name}` as a 2-D array has more columns (fields) than rows (examples). "
            f"Received an array of shape {arr.shape}\n"
            f"- If its rows are the fields, pass {name}.T, a tuple of per-field arrays, or a "
            "dict of them."
        )
    cols = [check_lengths(arr[:, f], f"{name}[:, {f}]") for f in range(arr.shape[1])]
    return np.stack(cols, axis=1), tuple(range(arr.shape[1]))


def check_sampler_fields(sampler: Any, n_fields: int, *, fields: Any = None) -> None:
    """Refuse a sampler planned on another number of fields than the data has.

    An executor calls this before reading a sampler's plan: a sampler built on one length per
    example cannot batch examples of several ragged fields (it does not know their other
    lengths), and a sampler built on several fields cannot batch one field.

    Args:
        sampler: a planner with ``num_fields`` (a :class:`~seqprep.BucketSampler`); one
            without the attribute counts as one field.
        n_fields: the ragged fields the executor was given (1 for one ``x``).
        fields: the data's field names, when known, to show in the message.

    Raises:
        ValueError: the counts differ.

    Example:
        >>> from seqprep import BucketSampler
        >>> check_sampler_fields(BucketSampler([[3, 4], [5, 2]], batch_size=2), 2)
    """
    planned = int(getattr(sampler, "num_fields", 1))
    if planned == n_fields:
        return
    names = getattr(sampler, "field_names", None)
    shown = "" if fields is None else f" ({list(fields)})"
    if planned == 1:
        raise ValueError(
            f"Argument `sampler` was built on one length per example, but the data has "
            f"{n_fields} ragged fields{shown}. Received: sampler with num_fields=1\n"
            "- Build the sampler on every field's lengths: BucketSampler({name: "
            "sequence_lengths(x[name]) for name in x}, ...), or an (n, fields) array."
        )
    raise ValueError(
        f"Argument `sampler` was built on {planned} fields ({list(names or ())}), but the data "
        f"has {n_fields} ragged field(s){shown}. Received: sampler with num_fields={planned}\n"
        "- Build the sampler on the lengths of exactly the data's ragged fields: "
        "BucketSampler(sequence_lengths(x), ...) for one field, a dict of lengths for several."
    )


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` as a Python bool; refuse anything but ``True``/``False``.

    ``0``/``1``, ``None`` and strings such as ``"false"`` are refused: a truthy string would
    silently mean True.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"Argument `{name}` must be True or False. Received: {name}={value!r} "
            f"of type {type(value).__name__}\n- Pass {name}=True or {name}=False."
        )
    return bool(value)


def check_one_of(fix: str, **values: Any) -> str:
    """Check that exactly one of the keyword ``values`` is not None; return its name.

    Args:
        fix: the "what to pass" line shown after the error (without the leading "- ").
        **values: the mutually exclusive arguments, by name.
    """
    given = [k for k, v in values.items() if v is not None]
    if len(given) != 1:
        names = " and ".join(f"`{k}`" for k in values)
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        what = "both" if len(given) > 1 else "neither"
        if len(values) > 2:
            what = f"{len(given)} of them"
        raise ValueError(
            f"Pass exactly one of {names} (got {what}). Received: {shown}\n- {fix}"
        )
    return given[0]


# ----------------------------------------------------------------- non-finite values
#
# The one rule for NaN and infinity, shared by every entry point that trains on data
# (`bucketed_dataset`, `fit_per_length`, `fit_tbptt`, `fit_separate_models`):
#
# * labels (`y`) must be finite, always: a NaN target turns the loss, then every weight, into
#   NaN, and there is no model that learns from it. To leave a target out, give it weight 0.
# * features (`x`) must be finite unless the caller passes `allow_nonfinite=True` (for
#   models that handle NaN themselves, e.g. a first layer that imputes them).
#
# Each check is one vectorised pass over the flat values; integer and bool arrays cannot hold
# NaN and are not scanned.


def _first_nonfinite(values: np.ndarray) -> int | None:
    """Flat position of the first NaN/inf in ``values``, or None (one pass when all finite)."""
    if values.dtype.kind not in "fc" or values.size == 0:
        return None
    finite = np.isfinite(values)
    if finite.all():
        return None
    return int(np.argmin(finite.reshape(-1)))


def _nonfinite_at(values: np.ndarray, offsets: Any) -> tuple[int, int | None, Any, int] | None:
    """Where the first NaN/inf is: ``(row, step within the row or None, the value, how many)``,
    or None; rows are ``offsets``' sequences, or ``values``' rows when ``offsets`` is None."""
    pos = _first_nonfinite(values)
    if pos is None:
        return None
    per_step = int(np.prod(values.shape[1:], dtype=np.int64)) if values.ndim > 1 else 1
    step = pos // per_step
    count = int(values.size - np.count_nonzero(np.isfinite(values)))
    bad = values.reshape(-1)[pos]
    if offsets is None:
        return step, None, bad, count
    offsets = np.asarray(offsets)
    row = int(np.searchsorted(offsets, step, side="right")) - 1
    return row, step - int(offsets[row]), bad, count


def check_finite_labels(values: np.ndarray, name: str = "y", *, offsets: Any = None) -> None:
    """Refuse NaN/inf labels, naming the first bad sequence.

    Args:
        values: the label array (one row per sequence), or the flat steps of per-step targets.
        name: the argument's name.
        offsets: for per-step targets, the row offsets into ``values`` (``Ragged.offsets``).
    """
    found = _nonfinite_at(np.asarray(values), offsets)
    if found is None:
        return
    row, step, bad, count = found
    where = f"{name}[{row}]" if step is None else f"{name}[{row}] at step {step}"
    raise ValueError(
        f"Argument `{name}` holds {count} NaN or infinite value(s); the first is in "
        f"{where}. Received: {name}[{row}] contains {bad!r}\n"
        f"- If these targets are missing, drop those sequences or give them sample weight 0 "
        f"and replace the NaN with any finite value (e.g. `np.nan_to_num({name})`)."
    )


def check_finite_features(
    values: np.ndarray, name: str = "x", *, offsets: Any = None, allow_nonfinite: bool = False
) -> None:
    """Refuse NaN/inf features unless ``allow_nonfinite`` (see the rule above).

    Args:
        values: the flat steps of the sequences (``Ragged.values``).
        name: the argument's name.
        offsets: row offsets into ``values``, to name the sequence holding the first bad value.
        allow_nonfinite: the caller's opt-out.
    """
    if check_bool("allow_nonfinite", allow_nonfinite):
        return
    found = _nonfinite_at(np.asarray(values), offsets)
    if found is None:
        return
    row, step, bad, count = found
    where = f"{name}[{row}]" if step is None else f"{name}[{row}] at step {step}"
    raise ValueError(
        f"Argument `{name}` holds {count} NaN or infinite value(s); the first is in {where}. "
        f"Received: {bad!r}\n"
        "- If the model handles NaN/inf itself, pass `allow_nonfinite=True`; otherwise "
        f"impute or drop them first (e.g. `np.nan_to_num`)."
    )


# ----------------------------------------------------------------- empty sequences


def warn_empty_sequences(lengths: np.ndarray, name: str = "lengths", stacklevel: int = 3) -> None:
    """Warn, with a count, that some sequences have no steps (the documented rule, faq).

    Where it is harmless a zero-length sequence becomes a fully padded row: a recurrent layer
    behind a Keras mask returns its initial state for it, and with per-step targets it has no
    target (weight 0). Where it would break training (a batch zero steps wide, a mean over no
    steps) the entry point refuses instead; this warning is for the rest.
    """
    empty = np.flatnonzero(np.asarray(lengths).reshape(len(lengths), -1).max(axis=1) == 0)
    if not empty.size:
        return
    shown = ", ".join(map(str, empty[:5].tolist())) + (", ..." if empty.size > 5 else "")
    warnings.warn(
        f"{empty.size} of {len(lengths)} sequences in `{name}` have length 0 (positions "
        f"[{shown}]). Each becomes a fully padded row: the model sees only padding (a masked "
        "recurrent layer returns its initial state; a masked mean over its steps, such as "
        "GlobalAveragePooling1D, is NaN) and, with per-step targets, it adds no target.\n"
        "- If they are missing data, drop them and their targets first: "
        "`keep = np.flatnonzero(lengths > 0)`.",
        UserWarning,
        stacklevel=stacklevel,
    )


# ----------------------------------------------------------------- data left out


def report_dropped(
    dropped: int,
    total: int,
    *,
    why: str,
    keep: str,
    argument: str,
    received: str,
    unit: str = "sequence",
    stacklevel: int = 3,
) -> None:
    """Warn with counts when data is left out; refuse when all of it would be.

    Args:
        dropped: how many ``unit`` are left out.
        total: how many there are.
        why: what leaves them out (e.g. ``"drop_remainder=True leaves out partial batches"``).
        keep: how to keep them (the fix line, without the leading ``"- "``).
        argument: the argument to name when everything would be dropped.
        received: what was received, shown as ``Received: ...``.
        unit: what is counted (singular).
        stacklevel: passed to :func:`warnings.warn` (the caller's caller by default).
    """
    if dropped <= 0:
        return
    if dropped >= total:
        raise ValueError(
            f"Argument `{argument}` would leave out all {total} {unit}(s): {why}. "
            f"Received: {received}\n- {keep}"
        )
    warnings.warn(
        f"{dropped} of {total} {unit}(s) ({dropped / total:.1%}) are left out of every epoch: "
        f"{why}. Received: {received}\n- {keep}",
        UserWarning,
        stacklevel=stacklevel,
    )


def check_shard(num_shards: Any, shard_index: Any) -> tuple[int, int]:
    """``(num_shards, shard_index)`` as ints, with ``0 <= shard_index < num_shards``.

    Example:
        >>> check_shard(4, 3)
        (4, 3)
    """
    num_shards = check_int("num_shards", num_shards, minimum=1)
    shard_index = check_int("shard_index", shard_index, minimum=0)
    check_less("shard_index", shard_index, "num_shards", num_shards,
               fix="Shards are numbered 0 to num_shards - 1.")
    return num_shards, shard_index


def check_increasing(name: str, values: Any, *, fix: str) -> np.ndarray:
    """``values`` (non-empty, integer) as int64, refused unless strictly increasing and >= 1.

    Example:
        >>> check_increasing("boundaries", [8, 16], fix="Sort them.").tolist()
        [8, 16]
    """
    arr = np.asarray(values).astype(np.int64)
    if arr[0] < 1 or np.any(np.diff(arr) <= 0):
        raise ValueError(
            f"Argument `{name}` must be strictly increasing positive integers "
            f"(each at least 1). Received: {name}={arr.tolist()}\n- {fix}"
        )
    return arr


def check_less(name: str, value: int, bound_name: str, bound: int, *, fix: str) -> None:
    """Refuse ``value >= bound``, where the bound is another argument (``bound_name``).

    Example:
        >>> check_less("start", 5, "stop", 3, fix="Pass stop>5.")
        Traceback (most recent call last):
        ...
        ValueError: Argument `start` must be less than `stop`=3. Received: start=5
        - Pass stop>5.
    """
    if value >= bound:
        raise ValueError(
            f"Argument `{name}` must be less than `{bound_name}`={bound}. "
            f"Received: {name}={value}\n- {fix}"
        )


# ----------------------------------------------------------------- samplers


def check_sampler(sampler: Any, lengths: np.ndarray, kind: type) -> np.ndarray:
    """Check that ``sampler`` is a ``kind`` (``BucketSampler``, ``PackSampler``: passed in, so
    this module imports no planner) that planned these sequences; return the lengths it
    planned (truncated ones capped at the sampler's ``length_limit``).

    ``lengths`` is 1-D for one ragged field, ``(n, fields)`` for several (one column per
    field, in the sampler's field order); a sampler of another number of fields is refused
    (:func:`check_sampler_fields`)."""
    name = kind.__name__
    if not isinstance(sampler, kind):
        raise TypeError(
            f"Argument `sampler` must be a seqprep.{name}. "
            f"Received: sampler of type {type(sampler).__name__}\n"
            f"- Build one from the lengths: `{name}(sequence_lengths(x), batch_size=...)`."
        )
    # Lengths of several ragged fields come as (n, fields): one column per field.
    check_sampler_fields(sampler, 1 if lengths.ndim == 1 else int(lengths.shape[1]))
    planned = np.asarray(sampler.lengths)
    if planned.shape[0] != lengths.shape[0]:
        raise ValueError(
            f"Argument `sampler` was built on {planned.shape[0]} lengths, but `x` has "
            f"{lengths.shape[0]} sequences.\n"
            f"- Build the sampler from this data: `{name}(sequence_lengths(x), ...)`."
        )
    limit = sampler.length_limit
    expected = lengths if limit is None else np.minimum(lengths, limit)
    differ = np.flatnonzero(planned != expected) if lengths.ndim == 1 else np.flatnonzero(
        (planned != expected).any(axis=1))
    if differ.size:
        i = int(differ[0])
        raise ValueError(
            f"Argument `sampler` was built on other lengths than `x`'s: {differ.size} differ, "
            f"the first at position {i} (sampler: {planned[i].tolist()}, x: "
            f"{lengths[i].tolist()}).\n"
            f"- Build the sampler from this data: `{name}(sequence_lengths(x), ...)`."
        )
    return planned


# ----------------------------------------------------------------- deprecations


def warn_deprecated(message: str) -> None:
    """Emit a ``DeprecationWarning`` attributed to the first caller outside seqprep.

    The deprecated spellings are reachable through several public entry points (some calling
    others), so a fixed ``stacklevel`` would blame seqprep's own code for some of them.
    """
    frame, level = sys._getframe(1), 2  # stacklevel 2 is warn_deprecated's caller
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "seqprep":
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DeprecationWarning, stacklevel=level)


# ----------------------------------------------------------------- executors of a sampler

# Options of a sampler that a Keras or tf.data user passes to the dataset out of habit.
_SAMPLER_OPTIONS = (
    "batch_size", "max_tokens", "boundaries", "row_length", "shuffle", "seed",
    "drop_remainder", "num_shards", "shard_index", "max_length", "overlong",
)


def needs_sampler(kind: str) -> Callable[[F], F]:
    """Decorate an executor whose batching comes from ``sampler=`` (a seqprep ``kind``).

    A call without ``sampler`` or with the sampler's options (``batch_size=64``: the first
    thing a Keras user types) gets a ``TypeError`` that spells out the sampler to build from
    those very options, instead of Python's bare "unexpected keyword argument". Any other
    call goes through unchanged.

    Example:
        >>> @needs_sampler("BucketSampler")
        ... def run(x, *, sampler):
        ...     return sampler
        >>> run([[1]], batch_size=64)
        Traceback (most recent call last):
        ...
        TypeError: `run` batches as its `sampler` plans, so it takes no `batch_size`. Received: batch_size=64
        - Pass sampler=seqprep.BucketSampler(seqprep.sequence_lengths(x), batch_size=64).
    """  # noqa: E501

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)
        own = set(signature.parameters)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            misplaced = {k: v for k, v in kwargs.items()
                         if k in _SAMPLER_OPTIONS and k not in own}
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                bound = None
            missing = bound is None and "sampler" not in kwargs
            if misplaced or missing:
                received = ", ".join(f"{k}={v!r}" for k, v in misplaced.items())
                options = received or "batch_size=32"
                what = (f"so it takes no `{'`, `'.join(misplaced)}`" if misplaced
                        else "and none was given")
                raise TypeError(
                    f"`{fn.__name__}` batches as its `sampler` plans, {what}. Received: "
                    f"{received or 'no sampler'}\n"
                    f"- Pass sampler=seqprep.{kind}(seqprep.sequence_lengths(x), {options})."
                )
            return fn(*bound.args, **bound.kwargs) if bound is not None else fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
