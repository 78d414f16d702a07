"""Padding: a fast, loss-refusing drop-in for ``keras.utils.pad_sequences``, and its inverse.

Everything here is numpy; TensorFlow is not imported.
"""

from __future__ import annotations

import numbers
from typing import Any, Literal

import numpy as np
from numpy.typing import DTypeLike

from seqprep._core.casts import check_cast, check_pad_value
from seqprep._core.checks import check_choice, check_int, check_lengths
from seqprep._core.ragged import Ragged, as_ragged, lengths_of

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


def _new_output(shape: tuple[int, ...], dtype: np.dtype, value: Any) -> np.ndarray:
    plain_zero = (
        dtype.kind != "O" and isinstance(value, numbers.Number) and value == 0
        and not np.signbit(np.real(value))
    )
    # np.zeros gets pre-zeroed pages from the OS: much cheaper than filling with 0.
    return np.zeros(shape, dtype=dtype) if plain_zero else np.full(shape, value, dtype=dtype)


def _pad_same_dtype_arrays(
    seqs: list[Any] | tuple[Any, ...], dtype: np.dtype, maxlen: int | None,
    multiple: int | None, padding: str, truncating: str, value: Any,
) -> np.ndarray | None:
    """Pad numpy arrays that already have ``dtype`` by one slice copy per row; else None.

    Nothing can be lost (each array is copied bit for bit), so no value needs checking, and
    each row's copy touches only its kept steps: cheaper than gathering every step into one
    flat array first and scattering it again. Any other input (a list, another dtype, mixed
    step shapes) returns None, and the general path handles (and checks) it.
    """
    if set(map(type, seqs)) != {np.ndarray} or seqs[0].dtype != dtype:
        return None
    if seqs[0].ndim == 1:
        try:
            return _copy_flat_rows(seqs, dtype, maxlen, multiple, padding, truncating, value)
        except (TypeError, ValueError, NotImplementedError):
            return None  # another dtype or step shape among the arrays
    # One C-level pass per property rather than several checks per row in the copy loop.
    if set(map(_dtype_of, seqs)) != {dtype}:
        return None
    ndims = set(map(np.ndim, seqs))
    if len(ndims) != 1 or 0 in ndims:
        return None
    step_shapes = {s.shape[1:] for s in seqs} if ndims != {1} else {()}
    if len(step_shapes) != 1:
        return None
    step_shape = step_shapes.pop()
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    width = maxlen if maxlen is not None else int(lengths.max())
    kept = lengths if maxlen is None else np.minimum(lengths, maxlen)
    if multiple:
        width = -(-width // multiple) * multiple
    if maxlen is not None:
        seqs = _kept_slices(seqs, maxlen, truncating, lengths)
    n = len(seqs)
    out = _new_output((n, width, *step_shape), dtype, value)
    flat = out.reshape((n * width, *step_shape))
    row_start = np.arange(n, dtype=np.int64) * width
    starts = row_start + (width - kept) if padding == "pre" else row_start
    for s, start, stop in zip(seqs, starts.tolist(), (starts + kept).tolist()):  # noqa: B905
        flat[start:stop] = s
    return out


def _copy_flat_rows(
    seqs: list[Any] | tuple[Any, ...], dtype: np.dtype, maxlen: int | None,
    multiple: int | None, padding: str, truncating: str, value: Any,
) -> np.ndarray:
    """The 1-D case: one memoryview slice assignment per row, a plain memcpy.

    A memoryview assignment refuses a source of another format (dtype) or shape with
    ValueError/TypeError, so it doubles as the per-row check at no extra cost.
    """
    # Lengths once, reused by the loops below (len() on an array is not free).
    lengths = list(map(len, seqs)) if maxlen is None else None
    width = maxlen if lengths is None else max(lengths)
    cut = width
    if multiple:
        width = -(-width // multiple) * multiple
    out = _new_output((len(seqs), width), dtype, value)
    pre_pad, pre_cut = padding == "pre", truncating == "pre"
    with memoryview(out.reshape(-1)) as flat:
        row = 0
        if lengths is not None and pre_pad:  # nothing to cut: the leanest loops
            for s, k in zip(seqs, lengths):  # noqa: B905 - same length by construction
                row += width
                flat[row - k:row] = s
            return out
        if lengths is not None:
            for s, k in zip(seqs, lengths):  # noqa: B905
                flat[row:row + k] = s
                row += width
            return out
        for s in seqs:
            k = len(s)
            if k > cut:
                s = s[k - cut:] if pre_cut else s[:cut]
                k = cut
            if pre_pad:
                flat[row + width - k:row + width] = s
            else:
                flat[row:row + k] = s
            row += width
    return out


def _dtype_of(a: np.ndarray) -> np.dtype:
    return a.dtype


def _sized_string_dtype(values: np.ndarray, value: Any, dtype: np.dtype) -> np.dtype:
    """``dtype=str``/``bytes`` as wide as the longest string (numpy would make it 1 wide)."""
    try:
        return np.array([*values.reshape(-1).tolist(), value], dtype=dtype.kind).dtype
    except (UnicodeError, ValueError, TypeError):
        return np.dtype(f"{dtype.kind}1")  # the cast check then names the value at fault


def _kept_slices(
    seqs: list[Any] | tuple[Any, ...], maxlen: int, truncating: str,
    lengths: np.ndarray | None = None,
) -> list[Any] | tuple[Any, ...]:
    """The sequences with every one longer than ``maxlen`` cut to its kept steps (views for
    arrays), so only kept steps are ever gathered."""
    if lengths is None:
        try:
            lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        except TypeError:
            return seqs  # a non-sequence element: as_ragged reports it
    long = np.flatnonzero(lengths > maxlen)
    if long.size == 0:
        return seqs
    out = list(seqs)
    try:
        for i in long.tolist():
            s = out[i]
            out[i] = s[len(s) - maxlen:] if truncating == "pre" else s[:maxlen]
    except TypeError:
        return seqs  # an element that cannot be sliced: gather it whole
    return out


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
    handles without losing data, but faster (only kept steps are copied: arrays already of
    ``dtype`` one memcpy per row, anything else gathered and scattered in a few numpy calls)
    and strict: where Keras would silently truncate floats into an integer ``dtype``, wrap
    values that overflow it, or turn NaN into garbage, this raises ``ValueError`` naming
    ``dtype``, the value, its position and the fix. Integers of any size are compared exactly,
    a float narrowed to a smaller float is rounded to nearest but never overflows to inf, and
    ``dtype=object`` keeps strings byte-exact. Steps may be scalars or arrays (``(T, d, ...)``
    sequences); an all-empty collection keeps its step shape.

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
        ValueError: Argument `dtype`='int32' cannot hold the data without losing it: value 0.5 at sequences[0][0] is not a whole number. keras.utils.pad_sequences would convert silently; seqprep refuses.
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
            f"Argument `dtype` is not a numpy dtype. Received: dtype={dtype!r}\n"
            "- Pass a numpy dtype or its name, e.g. dtype='int32' or dtype='float32'."
        ) from None
    check_pad_value(value, dtype)
    if isinstance(sequences, (list, tuple)) and sequences and dtype.kind not in "OUS":
        out = _pad_same_dtype_arrays(
            sequences, dtype, maxlen, multiple, padding, truncating, value
        )
        if out is not None:
            return out
    return _pad_general(sequences, dtype, maxlen, multiple, padding, truncating, value)


def _pad_general(
    sequences: Any, dtype: np.dtype, maxlen: int | None, multiple: int | None,
    padding: str, truncating: str, value: Any,
) -> np.ndarray:
    """Gather the kept steps into flat values, check the cast, scatter them into the output."""
    source = sequences
    if maxlen is not None and isinstance(sequences, (list, tuple)):
        source = _kept_slices(sequences, maxlen, truncating)
    rag = as_ragged(source, keep_object=dtype.kind in "OUS")
    lengths = rag.lengths
    n = len(lengths)
    kept = np.minimum(lengths, maxlen) if maxlen is not None else lengths
    width = maxlen if maxlen is not None else (int(lengths.max()) if n else 0)
    if multiple:
        width = -(-width // multiple) * multiple

    values, offsets = _gather_kept(rag, lengths, kept, truncating)
    step_shape = values.shape[1:] if values.size or values.ndim > 1 else ()
    if dtype.kind in "US" and dtype.itemsize == 0:
        dtype = _sized_string_dtype(values, value, dtype)

    def cut_steps(row: int) -> int:
        if truncating != "pre" or maxlen is None:
            return 0
        return len(sequences[row]) - int(kept[row]) if source is not sequences else int(
            lengths[row] - kept[row])

    check_cast(values, dtype, locate=Ragged(values, offsets).locator(cut_steps=cut_steps),
               suffix=" keras.utils.pad_sequences would convert silently; seqprep refuses.")

    out = _new_output((n, width, *step_shape), dtype, value)
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
    from seqprep.inputs._masking import length_mask

    check_choice("padding", padding, ("pre", "post"))
    arr = np.asarray(padded)
    if arr.ndim < 2:
        raise ValueError(
            f"Argument `padded` must have shape (n, T, ...). Received shape {arr.shape}\n"
            "- Pass the 2-D (or more) array that `pad_sequences` returned."
        )
    lengths = check_lengths(lengths, allow_empty=True)
    n, width = arr.shape[:2]
    if len(lengths) != n:
        raise ValueError(
            f"Argument `lengths` must have one entry per row of `padded` ({n}). "
            f"Received {len(lengths)} lengths\n"
            "- Pass the lengths of the sequences that were padded into `padded`, in order."
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
