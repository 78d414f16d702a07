"""Masks and per-timestep weights from lengths, and the cuDNN right-padding rule.

Everything here is numpy; TensorFlow is not imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from seqprep._core.checks import check_choice, check_int, check_lengths

__all__ = ["check_cudnn_mask", "length_mask", "sequence_weights"]


@dataclass(frozen=True)
class _WeightOps:
    """How one array library spells the four operations of the per-step weight formula.

    The formula is written once (:func:`_step_weights`); numpy, TensorFlow graphs (tf.data)
    and ``keras.ops`` (TBPTT steps) each pass their spelling, so no module keeps a copy.
    """

    as_float32: Callable[[Any], Any]
    count: Callable[[Any], Any]  # number of entries, as a float32 scalar
    total: Callable[[Any], Any]  # sum of entries
    divide_no_nan: Callable[[Any, Any], Any]


def _np_divide_no_nan(a: Any, b: Any) -> np.float32:
    return np.float32(0.0) if b == 0 else np.float32(np.float32(a) / np.float32(b))


_NUMPY_OPS = _WeightOps(
    as_float32=lambda a: np.asarray(a, dtype=np.float32),
    count=lambda a: np.float32(a.size),
    total=lambda a: a.sum(dtype=np.float32),
    divide_no_nan=_np_divide_no_nan,
)


def _step_weights(
    real: Any, *, mean: bool, scale: Any = None, ops: _WeightOps = _NUMPY_OPS
) -> Any:
    """Per-step loss weights of one batch: THE formula every seqprep executor uses.

    ``real`` is the ``(batch, T)`` "real step" mask; the weights are 1.0 on real steps and 0.0
    on padding, times ``scale[i]`` (per-sequence weights, shape ``(batch,)``) when given. With
    ``mean=True`` they are multiplied by ``batch * T / sum(weights)`` (0 when that sum is 0),
    so that Keras's default ``"sum_over_batch_size"`` reduction returns the weighted mean over
    real steps of this batch.
    """
    weights = ops.as_float32(real)
    if scale is not None:
        weights = weights * scale[:, None]
    if mean:
        weights = weights * ops.divide_no_nan(ops.count(weights), ops.total(weights))
    return weights


def length_mask(
    lengths: Any, maxlen: int | None = None, padding: Literal["pre", "post"] = "post"
) -> np.ndarray:
    """Boolean mask of the real (non-padded) steps of a padded batch.

    Row ``i`` has ``min(lengths[i], maxlen)`` True entries, at the end of the row for
    ``padding="pre"`` and at the start for ``padding="post"``: exactly where
    :func:`seqprep.pad_sequences` puts the data. A length above ``maxlen`` means the
    sequence was truncated to ``maxlen``, so its row is all True.

    Args:
        lengths: non-negative integer lengths, shape ``(n,)``.
        maxlen: width of the mask; ``None`` uses the longest length (0 when empty).
        padding: side the padding is on, ``"pre"`` or ``"post"``.

    Returns:
        bool array of shape ``(n, maxlen)``.

    Raises:
        ValueError: negative lengths, ``maxlen < 0``, an unknown ``padding``, or a mask too
            large to allocate.

    Example:
        >>> length_mask([3, 1], padding="post").astype(int).tolist()
        [[1, 1, 1], [1, 0, 0]]
        >>> length_mask([3, 1], maxlen=4, padding="pre").astype(int).tolist()
        [[0, 1, 1, 1], [0, 0, 0, 1]]
    """
    check_choice("padding", padding, ("pre", "post"))
    lengths = check_lengths(lengths, allow_empty=True)
    width = check_int("maxlen", maxlen, minimum=0, allow_none=True)
    if width is None:
        width = int(lengths.max()) if lengths.size else 0
    needed = lengths.size * width + 8 * width  # the mask, plus the step counter
    memory = _physical_memory()
    try:
        if memory is not None and needed > memory:
            raise MemoryError  # refuse before the allocation: overcommit could grant it
        steps = np.arange(width)
        if padding == "post":
            return steps < lengths[:, None]
        return steps >= (width - np.minimum(lengths, width))[:, None]
    except MemoryError:
        raise ValueError(
            f"Argument `lengths` asks for a mask of {lengths.size} x {width} steps, which "
            f"needs {lengths.size * width:,} bytes: more than this machine can allocate. "
            f"Received: lengths with maximum {int(lengths.max()) if lengths.size else 0}, "
            f"maxlen={maxlen!r}\n- If a length is wrong, fix it; for very long sequences, "
            "mask per batch (each batch padded to its own width) or train with "
            "seqprep.fit_tbptt."
        ) from None


def _physical_memory() -> int | None:
    """Bytes of physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def sequence_weights(
    lengths: Any,
    maxlen: int | None = None,
    padding: Literal["pre", "post"] = "post",
    *,
    normalize: bool = False,
) -> np.ndarray:
    """Per-timestep sample weights: 1 on real steps, 0 on padding.

    Pass them as ``sample_weight`` (shape ``(n, T)``) with a sequence-output model so padded
    steps add nothing to the loss. Keras's default loss reduction
    (``"sum_over_batch_size"``) divides the weighted sum by ``n * T``, *including* the
    padded steps, so 0/1 weights alone undercount the loss. The recipe that gives the mean
    over real steps in every case is 0/1 weights with a loss built with
    ``reduction="mean_with_sample_weight"``: it holds whether or not a Keras mask also
    reaches the loss (RNN layers may stop propagating masks, keras#23235).

    ``normalize=True`` scales the weights by ``n * T / real_steps`` so that the *default*
    reduction returns the mean over real steps of this batch. Use it only where no Keras
    mask reaches the loss (custom training loops, models without mask-producing layers):
    Keras rescales a propagated mask the same way, and the two scalings compound. Compute
    normalised weights per batch, never for a whole data set later cut into batches.

    Args:
        lengths: non-negative integer lengths, shape ``(n,)``.
        maxlen: width; ``None`` uses the longest length.
        padding: side the padding is on, ``"pre"`` or ``"post"``.
        normalize: scale so that the array's mean is 1 (see above).

    Returns:
        float32 array of shape ``(n, maxlen)``.

    Example:
        >>> sequence_weights([2, 1]).tolist()
        [[1.0, 1.0], [1.0, 0.0]]
        >>> sequence_weights([2, 1], normalize=True).tolist()
        [[1.3333333730697632, 1.3333333730697632], [1.3333333730697632, 0.0]]
    """
    return _step_weights(length_mask(lengths, maxlen, padding), mean=bool(normalize))


def _rows(rows: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(r) for r in rows[:limit].tolist())
    return shown + (f", ... ({len(rows)} rows in all)" if len(rows) > limit else "")


def check_cudnn_mask(mask: Any) -> None:
    """Check the cuDNN RNN kernel's rule for masks: strictly right-padded, no empty row.

    Keras runs LSTM/GRU layers with the fast cuDNN kernel only when every row of the mask is
    a run of True followed by a run of False (post-padding). A left-padded mask silently
    falls back to the slow kernel on a GPU (or fails, depending on the version), and a row
    with no True at all crashes the kernel. This check runs anywhere, without a GPU.

    Args:
        mask: boolean array-like of shape ``(n, T)`` (numpy array or eager tensor).

    Raises:
        ValueError: listing the rows that are not right-padded and the rows that are all
            padding, with what to do about each.

    Example:
        >>> check_cudnn_mask([[True, True, False], [True, False, False]])
        >>> check_cudnn_mask([[False, True, True]])
        Traceback (most recent call last):
        ...
        ValueError: Argument `mask` breaks the cuDNN RNN rule (strictly right-padded, no all-False row): rows [0] are not right-padded (a False step comes before a True step).
        - If you padded with `padding='pre'`, use padding='post' (the Keras default is 'pre').
    """  # noqa: E501
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(
            f"Argument `mask` must have shape (n, T). Received shape {arr.shape}\n"
            "- Pass a 2-D mask, one row per sequence (e.g. `seqprep.length_mask(lengths)`)."
        )
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(
                f"Argument `mask` must be boolean (or 0/1). Received dtype {arr.dtype} with "
                f"other values, e.g. {arr[~np.isin(arr, (0, 1))].reshape(-1)[0]!r}\n"
                "- Pass the boolean mask itself (e.g. `mask != 0`), not weights or ids."
            )
        arr = arr.astype(bool)
    real = arr.sum(axis=1)
    right_padded = np.arange(arr.shape[1]) < real[:, None]
    not_right = np.flatnonzero((arr != right_padded).any(axis=1))
    empty = np.flatnonzero(real == 0)
    problems, fixes = [], []
    if len(not_right):
        problems.append(
            f"rows [{_rows(not_right)}] are not right-padded (a False step comes before a "
            "True step)"
        )
        fixes.append(
            "- If you padded with `padding='pre'`, use padding='post' (the Keras default is "
            "'pre')."
        )
    if len(empty):
        problems.append(f"rows [{_rows(empty)}] are all padding (length 0)")
        fixes.append(
            "- Drop empty sequences before batching (`[s for s in seqs if len(s)]`), or give "
            "each at least one step."
        )
    if problems:
        raise ValueError(
            "Argument `mask` breaks the cuDNN RNN rule (strictly right-padded, no all-False "
            "row): " + "; ".join(problems) + ".\n" + "\n".join(fixes)
        )
