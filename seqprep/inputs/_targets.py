"""One rule for "are these targets one per sequence or one per time step?".

Every entry point that takes targets (:func:`seqprep.bucketed_dataset`,
:func:`seqprep.packed_dataset`, :func:`seqprep.fit_per_length`,
:func:`seqprep.fit_separate_models`, :func:`seqprep.fit_tbptt`,
:func:`seqprep.evaluate_tbptt`) decides it here, with :func:`resolve_targets`, so the same
``y`` means the same thing everywhere. The rule, with ``targets="auto"``:

* a dense array (numpy, a TensorFlow tensor, a pandas object that converts to a numeric
  array) of shape ``(n, ...)`` holds one target per sequence;
* a ragged type (:class:`seqprep._core.ragged.Ragged`, ``tf.RaggedTensor``) holds one target per
  step: the type says so;
* any other collection (a list, a tuple, a pandas Series of arrays) is read both ways. It is
  per-sequence if it converts to a rectangular numeric array with ``n`` rows, per-step if its
  row lengths equal ``x``'s. When only one reading fits, that one is used; when both fit
  (every row has as many entries as its sequence has steps and all sequences share one
  length, e.g. one-hot labels of same-length sequences) nothing is guessed: a ``ValueError``
  asks for ``targets="sequence"`` or ``targets="step"``.

An explicit ``targets="sequence"`` or ``targets="step"`` always wins. The module is numpy
only (no TensorFlow import).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from seqprep._core.checks import check_choice
from seqprep._core.ragged import Ragged, as_ragged, lengths_of

__all__ = ["resolve_targets"]

Targets = Literal["auto", "sequence", "step"]
TargetKind = Literal["sequence", "step"]

_CHOICES = ("auto", "sequence", "step")


def _is_ragged_type(y: Any) -> bool:
    return isinstance(y, Ragged) or hasattr(y, "row_splits")


def _is_dense_type(y: Any) -> bool:
    if isinstance(y, np.ndarray):
        return y.dtype != object
    return type(y).__module__.startswith("tensorflow") and hasattr(y, "numpy")


def _as_rectangular(y: Any) -> np.ndarray | None:
    """``y`` as a non-object ndarray with at least one axis, or None if it is not one."""
    if _is_ragged_type(y):
        return None
    if type(y).__module__.startswith("tensorflow") and hasattr(y, "numpy"):
        y = y.numpy()
    if type(y).__module__.startswith("pandas"):
        y = y.to_numpy()
    try:
        arr = np.asarray(y)
    except (ValueError, TypeError):
        return None
    if arr.dtype == object or arr.ndim == 0:
        return None
    return arr


def _row_lengths(y: Any, name: str) -> np.ndarray | None:
    """The per-row lengths of ``y`` read as sequences, or None if its rows are not sequences."""
    try:
        return lengths_of(y, name)
    except (TypeError, ValueError):
        return None


def _as_sequence(y: Any, n: int, name: str, xname: str) -> np.ndarray:
    arr = _as_rectangular(y)
    if arr is None:
        raise ValueError(
            f"Argument `{name}` must hold one target per sequence of `{xname}`, as an array "
            f"of shape (n, ...) with n={n}. Received a value of type {type(y).__name__} that "
            "is not a rectangular numeric array\n"
            f"- If `{name}` holds one target per step, pass targets=\"step\"."
        )
    if arr.shape[0] != n:
        raise ValueError(
            f"Arguments `{xname}` and `{name}` must have the same number of sequences: "
            f"`{name}` must have one entry per sequence of `{xname}` (one target per "
            f"sequence). Received len({xname})={n}, len({name})={arr.shape[0]}\n"
            f"- Pass one target per sequence of `{xname}`, in the same order."
        )
    return arr


def _as_step(y: Any, lengths: np.ndarray, name: str, xname: str) -> Ragged:
    rag = as_ragged(y, name)
    n = lengths.size
    if len(rag) != n:
        raise ValueError(
            f"Arguments `{xname}` and `{name}` must have the same number of sequences: "
            f"`{name}` must hold one target per step of every sequence of `{xname}`. "
            f"Received len({xname})={n}, len({name})={len(rag)}\n"
            f"- Pass one target sequence per sequence of `{xname}`, in the same order."
        )
    diff = np.flatnonzero(rag.lengths != lengths)
    if diff.size:
        i = int(diff[0])
        raise ValueError(
            f"Argument `{name}` holds per-step targets whose lengths differ from `{xname}`'s: "
            f"{name}[{i}] has {int(rag.lengths[i])} steps, {xname}[{i}] has "
            f"{int(lengths[i])}.\n- Per-timestep targets need one target per step of each "
            f"input sequence; if `{name}` holds one target per sequence, pass it as an array "
            "of shape (n, ...) or pass targets=\"sequence\"."
        )
    return rag


def _auto_kind(y: Any, lengths: np.ndarray, name: str, xname: str) -> TargetKind:
    """The kind under ``targets="auto"`` (see the module docstring)."""
    if _is_ragged_type(y):
        return "step"
    if _is_dense_type(y):
        return "sequence"
    n = lengths.size
    arr = _as_rectangular(y)
    seq_fits = arr is not None and arr.shape[0] == n
    rows = _row_lengths(y, name)
    step_fits = rows is not None and np.array_equal(rows, lengths)
    if seq_fits and step_fits and n:
        width = int(lengths[0])
        raise ValueError(
            f"Argument `{name}` fits both readings: one target per sequence (an array of "
            f"shape {arr.shape}) and one target per step (every sequence of `{xname}` has "
            f"{width} steps and every row of `{name}` has {width} entries). Received: "
            "targets='auto'\n"
            "- Pass targets=\"sequence\" if each row is one sequence's target (e.g. one-hot "
            "labels), or targets=\"step\" if each row holds a target for every step."
        )
    if seq_fits:
        return "sequence"
    if step_fits:
        return "step"
    # Neither fits: report against the reading the shape of `y` points to.
    if rows is not None and arr is None:
        return "step"
    return "sequence"


def resolve_targets(
    y: Any,
    lengths: Any,
    *,
    targets: Targets = "auto",
    name: str = "y",
    xname: str = "x",
) -> tuple[TargetKind, np.ndarray | Ragged]:
    """Decide whether ``y`` holds one target per sequence or one per step, and normalise it.

    The one rule every seqprep entry point uses (see the module docstring): ``targets=``
    wins when it is ``"sequence"`` or ``"step"``; with ``"auto"`` a dense array is
    per-sequence, a ragged type per-step, and a list is read both ways; when both readings
    fit (same-length sequences whose target rows have that length too) a ``ValueError``
    asks for ``targets=``. Values are not cast: callers apply their own dtype rules.

    Args:
        y: the targets: an array ``(n, ...)``, a list of per-step arrays, a ragged tensor.
        lengths: the lengths of the input sequences, shape ``(n,)``.
        targets: ``"auto"`` (default), ``"sequence"`` or ``"step"``.
        name: the argument name used in error messages.
        xname: the inputs' argument name used in error messages.

    Returns:
        ``("sequence", array of shape (n, ...))`` or ``("step", Ragged with x's lengths)``.

    Raises:
        ValueError: an unknown ``targets``, an ambiguous ``y`` under ``"auto"``, or a ``y``
            whose count or lengths do not match ``lengths`` under the chosen reading.

    Example:
        >>> resolve_targets([0, 1], [3, 1])[0]
        'sequence'
        >>> kind, rag = resolve_targets([[1, 2, 3], [4]], [3, 1])
        >>> kind, rag.lengths.tolist()
        ('step', [3, 1])
        >>> resolve_targets([[1, 0], [0, 1]], [2, 2], targets="sequence")[1].shape
        (2, 2)
    """
    check_choice("targets", targets, _CHOICES)
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    kind = targets if targets != "auto" else _auto_kind(y, lengths, name, xname)
    if kind == "sequence":
        return "sequence", _as_sequence(y, lengths.size, name, xname)
    return "step", _as_step(y, lengths, name, xname)
