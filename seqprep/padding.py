"""Padding: a vectorised, loss-refusing drop-in for ``keras.utils.pad_sequences``, and its inverse.

Everything here is numpy; TensorFlow is not imported.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import DTypeLike

from seqprep._checks import check_choice, check_int, check_lengths
from seqprep._ragged import Ragged, as_ragged, lengths_of

# The one definition of a padding/truncating side (data.py and distributed.py import it).
Side = Literal["pre", "post"]

__all__ = ["pad_sequences", "sequence_lengths", "unpad"]


def sequence_lengths(sequences: Any) -> np.ndarray:
    """Return the length (number of time steps) of every sequence.

    Args:
        sequences: a sequence collection: a list of arrays or lists, a ``tf.RaggedTensor``, an
            array of shape ``(n, T, ...)`` or a pandas Series of arrays.

    Returns:
        int64 array of shape ``(n,)``.

    Raises:
        ValueError: an element is not a sequence.

    Example:
        >>> sequence_lengths([[1, 2, 3], [], [4]]).tolist()
        [3, 0, 1]
    """
    return lengths_of(sequences)


def _first(mask: np.ndarray, values: np.ndarray) -> Any:
    return values.reshape(-1)[np.flatnonzero(mask)[0]].item() if mask.any() else None


def _lossy(detail: str, dtype: np.dtype, fix: str) -> ValueError:
    return ValueError(
        f"Argument `dtype`={dtype.name!r} cannot hold the data without losing it: {detail}. "
        f"keras.utils.pad_sequences would convert silently; seqprep refuses.\n- {fix}"
    )


def _check_lossless(values: np.ndarray, dtype: np.dtype) -> None:
    """Raise ``ValueError`` if casting ``values`` to ``dtype`` would change any value."""
    src = values.dtype
    if values.size == 0 or dtype.kind == "O" or np.can_cast(src, dtype, casting="safe"):
        return
    if src.kind in "OUS":
        raise ValueError(
            f"Argument `dtype`={dtype.name!r} cannot hold {src} values (strings or objects).\n"
            "- If these are tokens, map them to integer ids first; to pad them as they are, "
            "pass `dtype=object`."
        )
    if src.kind == "c" and dtype.kind != "c":
        raise _lossy("the values are complex", dtype, "Pass `dtype='complex64'` or drop the "
                     "imaginary part yourself.")
    if dtype.kind in "iub":
        if src.kind == "f":
            nan = np.isnan(values)
            if nan.any():
                raise _lossy(
                    f"{int(nan.sum())} value(s) are NaN", dtype,
                    "If NaN marks missing steps, fill or drop them first, or pass "
                    "`dtype='float32'`.",
                )
            inf = np.isinf(values)
            if inf.any():
                raise _lossy(f"value {_first(inf, values)} is infinite", dtype,
                             "Pass `dtype='float32'`.")
            frac = values != np.trunc(values)
            if frac.any():
                raise _lossy(
                    f"value {_first(frac, values)!r} is not a whole number", dtype,
                    "If the data are real-valued features, pass `dtype='float32'`.",
                )
        if dtype.kind == "b":
            bad = (values != 0) & (values != 1)
            if bad.any():
                raise _lossy(f"value {_first(bad, values)!r} is not 0 or 1", dtype,
                             "Pass an integer or float `dtype`.")
            return
        info = np.iinfo(dtype)
        low, high = values.min(), values.max()
        if low < info.min or high > info.max:
            wider = "int64" if dtype.kind == "i" or low < 0 else "uint64"
            raise _lossy(
                f"values range over [{low}, {high}] but {dtype.name} holds "
                f"[{info.min}, {info.max}]", dtype, f"Pass `dtype='{wider}'`.",
            )
    elif dtype.kind == "f":
        if src.kind in "iu":
            mantissa = np.finfo(dtype).nmant + 1
            big = np.abs(values.astype(np.float64)) > 2.0**mantissa
            if big.any():
                raise _lossy(
                    f"integer {_first(big, values)} has more digits than {dtype.name} keeps",
                    dtype, "Pass `dtype='int64'` or `dtype='float64'`.",
                )
        elif src.kind == "f":
            finite = np.isfinite(values)
            big = finite & (np.abs(values) > np.finfo(dtype).max)
            if big.any():
                raise _lossy(f"value {_first(big, values)!r} overflows {dtype.name}", dtype,
                             "Pass `dtype='float64'`.")


def _check_pad_value(value: Any, dtype: np.dtype) -> None:
    if dtype.kind in "OUS":
        return
    if isinstance(value, (str, bytes)):
        raise ValueError(
            f"Argument `value`={value!r} is a string but `dtype`={dtype.name!r} is not.\n"
            "- Pass `dtype=object` to pad with strings."
        )
    try:
        check = np.asarray(value)
    except Exception:  # pragma: no cover - np.asarray accepts nearly anything
        check = None
    if check is None or check.ndim != 0 or check.dtype.kind not in "biufc":
        raise TypeError(f"Argument `value` must be a scalar number. Received: value={value!r}")
    try:
        _check_lossless(check.reshape(1), dtype)
    except ValueError:
        raise ValueError(
            f"Argument `value`={value!r} cannot be represented in `dtype`={dtype.name!r}.\n"
            "- Pick a padding value the dtype holds (0 for integer tokens) or a wider dtype."
        ) from None


def _gather_kept(
    rag: Ragged, lengths: np.ndarray, kept: np.ndarray, truncating: str
) -> tuple[np.ndarray, np.ndarray]:
    """Values and offsets of the steps that survive truncation to ``kept`` steps per row."""
    offsets = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum(kept, out=offsets[1:])
    if np.array_equal(kept, lengths):
        return rag.values, offsets
    src_start = rag.offsets[:-1] + (lengths - kept if truncating == "pre" else 0)
    within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], kept)
    return rag.values[np.repeat(src_start, kept) + within], offsets


def pad_sequences(
    sequences: Any,
    maxlen: int | None = None,
    dtype: DTypeLike = "int32",
    padding: Side = "pre",
    truncating: Side = "pre",
    value: Any = 0.0,
    *,
    pad_to_multiple_of: int | None = None,
) -> np.ndarray:
    """Pad (and optionally truncate) sequences to one length: a drop-in for Keras's function.

    Same arguments, defaults and output as ``keras.utils.pad_sequences`` for every input Keras
    handles without losing data, but vectorised (no Python loop per sequence on the hot path)
    and strict: where Keras would silently truncate floats into an integer ``dtype``, wrap
    values that overflow it, or turn NaN into garbage, this raises ``ValueError`` naming
    ``dtype`` and the fix. Steps may be scalars or arrays (``(T, d, ...)`` sequences).

    Note the Keras default ``padding="pre"``: the cuDNN RNN kernel needs right-padded masks,
    so pass ``padding="post"`` when the result feeds a masked RNN.

    Args:
        sequences: a sequence collection: a list of arrays or (nested) lists, a
            ``tf.RaggedTensor``, an array ``(n, T, ...)``, a pandas Series of arrays, or any
            iterable of sequences (a generator is consumed once).
        maxlen: length of the output's time axis. ``None`` uses the longest sequence.
            Longer sequences are truncated (that is the one loss you ask for).
        dtype: output dtype. Use ``object`` to pad strings.
        padding: ``"pre"`` pads at the start of each row, ``"post"`` at the end.
        truncating: ``"pre"`` drops steps from the start of sequences longer than ``maxlen``,
            ``"post"`` from the end.
        value: the padding value; must be representable in ``dtype``.
        pad_to_multiple_of: round the time axis up to a multiple of this (handy for XLA and
            tensor cores). Truncation still happens at ``maxlen``.

    Returns:
        Array of shape ``(n, T, *step_shape)``. An empty collection gives shape
        ``(0, maxlen or 0)``.

    Raises:
        ValueError: bad ``maxlen``/``padding``/``truncating``/``pad_to_multiple_of``, steps of
            different shapes, a non-sequence element, or a ``dtype`` that would lose data.
        TypeError: ``sequences`` is not a collection of sequences.

    Example:
        >>> pad_sequences([[1, 2, 3], [4, 5], [6]]).tolist()
        [[1, 2, 3], [0, 4, 5], [0, 0, 6]]
        >>> pad_sequences([[1, 2, 3], [4]], maxlen=2, padding="post", truncating="post").tolist()
        [[1, 2], [4, 0]]
        >>> pad_sequences([[0.5, 1.7]])
        Traceback (most recent call last):
        ...
        ValueError: Argument `dtype`='int32' cannot hold the data without losing it: value 0.5 is not a whole number. keras.utils.pad_sequences would convert silently; seqprep refuses.
        - If the data are real-valued features, pass `dtype='float32'`.
    """  # noqa: E501
    check_choice("padding", padding, ("pre", "post"))
    check_choice("truncating", truncating, ("pre", "post"))
    maxlen = check_int(
        "maxlen", maxlen, minimum=1, allow_none=True,
        fix="Pass `maxlen=None` to pad to the longest sequence.",
    )
    multiple = check_int("pad_to_multiple_of", pad_to_multiple_of, minimum=1, allow_none=True)
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(
            f"Argument `dtype` is not a numpy dtype. Received: dtype={dtype!r}"
        ) from None
    _check_pad_value(value, dtype)

    rag = as_ragged(sequences, keep_object=dtype.kind in "OUS")
    lengths = rag.lengths
    n = len(lengths)
    kept = np.minimum(lengths, maxlen) if maxlen is not None else lengths
    width = maxlen if maxlen is not None else (int(lengths.max()) if n else 0)
    if multiple:
        width = -(-width // multiple) * multiple

    values, offsets = _gather_kept(rag, lengths, kept, truncating)
    step_shape = values.shape[1:] if values.size or values.ndim > 1 else ()
    _check_lossless(values, dtype)

    shape = (n, width, *step_shape)
    # np.zeros gets pre-zeroed pages from the OS: much cheaper than filling with 0.
    is_zero = dtype.kind != "O" and not isinstance(value, (str, bytes)) and value == 0
    out = np.zeros(shape, dtype=dtype) if is_zero else np.full(shape, value, dtype=dtype)
    total = int(offsets[-1])
    if total == 0:
        return out
    # One boolean run per row and side (real steps, padding), laid out in output order; a
    # run-length mask is cheaper to build than per-step destination indices and turns the
    # scatter into one sequential masked copy.
    runs = np.empty(2 * n, dtype=np.int64)
    real_first = padding == "post"
    runs[0 if real_first else 1 :: 2] = kept
    runs[1 if real_first else 0 :: 2] = width - kept
    run_values = np.array([real_first, not real_first])
    mask = np.repeat(np.tile(run_values, n), runs)
    out.reshape((n * width, *step_shape))[mask] = values
    return out


def unpad(padded: Any, lengths: Any, padding: Side = "post") -> list[np.ndarray]:
    """Undo padding: cut each row of a padded batch back to its real length.

    ``unpad(pad_sequences(x, padding=p), sequence_lengths(x), padding=p)`` returns ``x``
    (as arrays) for either side ``p``, provided nothing was truncated.

    Args:
        padded: array-like of shape ``(n, T, ...)`` (a numpy array or an eager tensor).
        lengths: the ``n`` real lengths, each at most ``T``.
        padding: the side the padding is on, ``"pre"`` or ``"post"``.

    Returns:
        A list of ``n`` arrays of shapes ``(lengths[i], ...)``. They share one freshly
        allocated buffer, never ``padded``'s memory.

    Raises:
        ValueError: ``padded`` is not at least 2-D, ``lengths`` has the wrong size, or a
            length exceeds ``T``.

    Example:
        >>> [row.tolist() for row in unpad([[1, 2, 0], [3, 0, 0]], [2, 1])]
        [[1, 2], [3]]
        >>> [row.tolist() for row in unpad([[0, 1, 2], [0, 0, 3]], [2, 1], padding="pre")]
        [[1, 2], [3]]
    """
    from seqprep.masking import length_mask

    check_choice("padding", padding, ("pre", "post"))
    arr = np.asarray(padded)
    if arr.ndim < 2:
        raise ValueError(
            f"Argument `padded` must have shape (n, T, ...). Received shape {arr.shape}"
        )
    lengths = check_lengths(lengths, allow_empty=True)
    n, width = arr.shape[:2]
    if len(lengths) != n:
        raise ValueError(
            f"Argument `lengths` must have one entry per row of `padded` ({n}). "
            f"Received {len(lengths)} lengths"
        )
    if n and lengths.max() > width:
        row = int(np.argmax(lengths))
        raise ValueError(
            f"Argument `lengths` has length {lengths[row]} at row {row}, longer than the "
            f"padded width {width}.\n- If the batch was truncated, the cut steps cannot be "
            "recovered: pass the truncated lengths (`np.minimum(lengths, maxlen)`)."
        )
    flat = arr[length_mask(lengths, width, padding=padding)]
    return np.split(flat, np.cumsum(lengths)[:-1]) if n else []
