"""Argument checks shared by every module, so errors read the same everywhere.

Each check names the argument in backticks, echoes what was received and, where there is one,
says the fix on a line of its own ("- If ..., do ...").
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError``."""
    choices = tuple(choices)
    if value not in choices:
        shown = " or ".join(repr(c) for c in choices)
        raise ValueError(f"Argument `{name}` must be {shown}. Received: {name}={value!r}")
    return value


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
        raise TypeError(f"Argument `{name}` must be an integer. Received: {name}=None")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Argument `{name}` must be an integer. Received: {name}={value!r} "
            f"of type {type(value).__name__}"
        )
    value = int(value)
    if minimum is not None and value < minimum:
        message = f"Argument `{name}` must be at least {minimum}. Received: {name}={value}"
        if fix:
            message += f"\n- {fix}"
        raise ValueError(message)
    return value


def check_lengths(lengths: Any, name: str = "lengths", *, allow_empty: bool = False) -> np.ndarray:
    """Return ``lengths`` as a fresh 1-D int64 array of non-negative integers.

    Accepts any array-like of integers (floats that are whole numbers are refused too: a
    length of ``3.0`` usually means the caller passed the wrong column).
    """
    arr = np.asarray(lengths)
    if arr.ndim != 1:
        raise ValueError(
            f"Argument `{name}` must be a 1-D sequence of integers. "
            f"Received an array of shape {arr.shape}"
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
        raise ValueError(f"Argument `{name}` has values too large for int64.")
    out = arr.astype(np.int64, copy=True)
    if out.min() < 0:
        bad = np.flatnonzero(out < 0)[:5].tolist()
        raise ValueError(
            f"Argument `{name}` must hold non-negative integers. "
            f"Received negative values at positions {bad}"
        )
    return out
