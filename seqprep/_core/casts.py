"""The one exact cast check: does ``values.astype(dtype)`` keep every value?

Every path that casts data (``pad_sequences``, dataset labels, ingestion, the Parquet reader)
asks :func:`find_loss` or :func:`check_cast` before it casts. The checks are exact:

* integers are compared in integer arithmetic (never through float64, which cannot tell
  ``2**63`` from ``2**63 - 1``), Python ints of any size included (they arrive in object arrays);
* an integer goes into a float only if that float holds it exactly (``2**60 + 1`` does not fit
  float64's 53-bit mantissa) and does not overflow it (70000 into float16);
* a float goes into an integer only if it is a whole number within range (NaN and inf refused);
* a float goes into a narrower float rounded to nearest, the usual IEEE rounding, but never
  overflows to inf;
* strings go only into string dtypes that keep them byte-exact (numpy's ``U``/``S`` dtypes
  strip trailing NUL characters and cut long strings: use ``object`` then).

numpy only; TensorFlow is never imported.
"""

from __future__ import annotations

import decimal
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Loss", "check_cast", "check_pad_value", "find_loss"]


@dataclass(frozen=True)
class Loss:
    """The first value a cast would change: its flat index, the value, why and the fix."""

    index: int
    value: Any
    reason: str
    fix: str


def _dname(dst: np.dtype) -> str:
    return dst.name if dst.kind not in "US" else dst.str.lstrip("<>|=")


def _int_fix(dst: np.dtype, v: int) -> str:
    """The fix for an integer ``v`` out of ``dst``'s range: the narrowest 64-bit dtype or object."""
    if -(2**63) <= v < 2**63 and dst != np.int64:
        return "Pass `dtype='int64'`."
    if 0 <= v < 2**64 and dst != np.uint64:
        return "Pass `dtype='uint64'`."
    return "Pass `dtype=object` to keep integers beyond 64 bits exactly."


def _digits_fix(dst: np.dtype) -> str:
    if dst.itemsize < 8:
        return "Pass `dtype='int64'` or `dtype='float64'` (check the fix holds them)."
    return "Pass `dtype='int64'` to keep every digit (`dtype=object` beyond 64 bits)."


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def _item(flat: np.ndarray, i: int) -> Any:
    return flat[i].item() if flat.dtype.kind != "O" else flat[i]


# --------------------------------------------------------------------------- numeric arrays


def _int_to_int(flat: np.ndarray, dst: np.dtype) -> Loss | None:
    src_info, info = np.iinfo(flat.dtype), np.iinfo(dst)
    if info.min <= int(flat.min()) and int(flat.max()) <= info.max:
        return None  # the usual case, decided without a mask
    bad = np.zeros(flat.shape, dtype=bool)
    # Each bound is compared only where the source dtype holds it, so the comparison is exact.
    if info.min > src_info.min:
        bad |= flat < info.min
    if info.max < src_info.max:
        bad |= flat > info.max
    i = _first(bad)
    if i is None:
        return None
    v = int(flat[i])
    return Loss(i, v, f"is out of the range {dst.name} holds, [{info.min}, {info.max}]",
                _int_fix(dst, v))


def _magnitudes(flat: np.ndarray) -> np.ndarray:
    """|values| as uint64, exact for every int64 (including -2**63) and uint64."""
    if flat.dtype.kind == "u":
        return flat.astype(np.uint64)
    signed = flat.astype(np.int64)
    neg = signed < 0
    # -(v + 1) fits int64 for every negative v; adding 1 back in uint64 cannot overflow.
    mag = signed.astype(np.uint64)
    mag[neg] = (-(signed[neg] + 1)).astype(np.uint64) + np.uint64(1)
    return mag


def _int_to_float(flat: np.ndarray, dst: np.dtype) -> Loss | None:
    finfo = np.finfo(dst)
    digits = finfo.nmant + 1
    src_bits = flat.dtype.itemsize * 8 - (flat.dtype.kind == "i")
    if src_bits <= digits and 2**src_bits <= int(finfo.max):
        return None  # every value of the source dtype is held exactly
    if max(-int(flat.min()), int(flat.max())) <= 2**digits:
        return None  # every value is within the mantissa: the usual case
    mag = _magnitudes(flat)
    cand = np.flatnonzero(mag > np.uint64(2**digits))
    if cand.size == 0:
        return None
    big = mag[cand]
    lowest_bit = big & (~big + np.uint64(1))
    # Exact iff the significant bits fit the mantissa and the value is below the float's max.
    bad = (big // lowest_bit) >= np.uint64(2**digits)
    if int(finfo.max) < 2**64:
        bad |= big > np.uint64(int(finfo.max))
    j = _first(bad)
    if j is None:
        return None
    i = int(cand[j])
    v = int(flat[i])
    if abs(v) > int(finfo.max):
        return Loss(i, v, f"overflows {dst.name} (largest {finfo.max})",
                    "Pass `dtype='float64'` or `dtype='int64'`.")
    return Loss(i, v, f"is an integer with more digits than {dst.name} keeps", _digits_fix(dst))


def _float_to_int(flat: np.ndarray, dst: np.dtype) -> Loss | None:
    nan = np.isnan(flat)
    inf = np.isinf(flat)
    with np.errstate(invalid="ignore"):
        frac = flat != np.trunc(flat)
    if dst.kind == "b":
        out_of_range = (flat != 0) & (flat != 1)
    else:
        bits = np.iinfo(dst).bits
        # Powers of two are exact in every float dtype (or overflow to inf, which still
        # bounds correctly), so these comparisons never round.
        with np.errstate(over="ignore"):
            low = np.asarray(-float(2 ** (bits - 1)) if dst.kind == "i" else 0.0, flat.dtype)
            high = np.asarray(float(2 ** (bits - (dst.kind == "i"))), flat.dtype)
        out_of_range = (flat < low) | (flat >= high)
    i = _first(nan | inf | frac | out_of_range)
    if i is None:
        return None
    v = _item(flat, i)
    if nan[i]:
        return Loss(i, v, f"is NaN ({int(nan.sum())} value(s) are NaN)",
                    "If NaN marks missing steps, fill or drop them first, or pass "
                    "`dtype='float32'`.")
    if inf[i]:
        return Loss(i, v, "is infinite", "Pass `dtype='float32'`.")
    if frac[i]:
        return Loss(i, v, "is not a whole number",
                    "If the data are real-valued features, pass `dtype='float32'`.")
    if dst.kind == "b":
        return Loss(i, v, "is not 0 or 1", "Pass an integer or float `dtype`.")
    info = np.iinfo(dst)
    return Loss(i, v, f"is out of the range {dst.name} holds, [{info.min}, {info.max}]",
                "Pass `dtype='float64'` (or an integer dtype wide enough).")


def _float_to_float(flat: np.ndarray, dst: np.dtype) -> Loss | None:
    if dst.itemsize >= flat.dtype.itemsize:
        return None
    with np.errstate(over="ignore"):
        out = flat.astype(dst)
    i = _first(np.isinf(out) & np.isfinite(flat))
    if i is None:
        return None
    return Loss(i, _item(flat, i), f"overflows {dst.name} (largest {np.finfo(dst).max})",
                "Pass `dtype='float64'`.")


def _numeric_loss(flat: np.ndarray, dst: np.dtype) -> Loss | None:
    src = flat.dtype
    if src.kind == "b":
        return None
    if src.kind == "c":
        if dst.kind != "c":
            i = _first(flat.imag != 0)
            if i is not None:
                return Loss(i, _item(flat, i), "is complex",
                            "Pass `dtype='complex128'` or drop the imaginary part yourself.")
            return _numeric_loss(flat.real.copy(), dst)
        return _float_to_float(flat.real, np.finfo(dst).dtype) or _float_to_float(
            flat.imag, np.finfo(dst).dtype)
    if dst.kind == "c":
        return _numeric_loss(flat, np.finfo(dst).dtype)
    if src.kind in "iu":
        if dst.kind in "iu":
            return _int_to_int(flat, dst)
        if dst.kind == "b":
            i = _first((flat != 0) & (flat != 1))
            return None if i is None else Loss(i, _item(flat, i), "is not 0 or 1",
                                               "Pass an integer `dtype`.")
        return _int_to_float(flat, dst)
    if dst.kind in "iub":
        return _float_to_int(flat, dst)
    return _float_to_float(flat, dst)


# --------------------------------------------------------------------------- Python objects


def _int_fits(v: int, dst: np.dtype) -> tuple[str, str] | None:
    """Why the exact integer ``v`` does not survive a cast to ``dst``, or None."""
    if dst.kind == "b":
        return None if v in (0, 1) else ("is not 0 or 1", "Pass an integer `dtype`.")
    if dst.kind in "iu":
        info = np.iinfo(dst)
        if info.min <= v <= info.max:
            return None
        return (f"is out of the range {dst.name} holds, [{info.min}, {info.max}]",
                _int_fix(dst, v))
    finfo = np.finfo(dst)
    mag = abs(v)
    if mag > int(finfo.max):
        return (f"overflows {dst.name} (largest {finfo.max})",
                "Pass `dtype=object` to keep integers this large exactly.")
    significant = mag.bit_length() - ((mag & -mag).bit_length() - 1) if mag else 0
    if significant > finfo.nmant + 1:
        return (f"is an integer with more digits than {dst.name} keeps", _digits_fix(dst))
    return None


def _real_fits(x: Any, dst: np.dtype) -> tuple[str, str] | None:
    """Why the real number ``x`` (not an integer type) does not survive a cast to ``dst``."""
    if dst.kind == "f":
        with np.errstate(over="ignore"):
            out = dst.type(x)
        if math.isinf(float(out)) and not math.isinf(float(x)):
            return (f"overflows {dst.name} (largest {np.finfo(dst).max})",
                    "Pass `dtype='float64'`.")
        return None
    f = float(x)
    if math.isnan(f):
        return ("is NaN", "If NaN marks missing steps, fill or drop them first, or pass "
                          "`dtype='float32'`.")
    if math.isinf(f):
        return ("is infinite", "Pass `dtype='float32'`.")
    # Floats compare as floats; Fraction and Decimal keep their exact value.
    exact = f if isinstance(x, (float, np.floating)) else x
    if exact != math.floor(exact):
        return ("is not a whole number",
                "If the data are real-valued features, pass `dtype='float32'`.")
    return _int_fits(int(exact), dst)


def _object_loss(flat: np.ndarray, dst: np.dtype) -> Loss | None:
    for i, x in enumerate(flat.tolist()):
        if isinstance(x, (bool, np.bool_)):
            continue
        if isinstance(x, (str, bytes)):
            why = (f"is a {type(x).__name__}, which {dst.name} cannot hold",
                   "If these are tokens, map them to integer ids first; to pad them as "
                   "they are, pass `dtype=object`.")
        elif isinstance(x, numbers.Integral):
            why = _int_fits(int(x), dst)
        elif isinstance(x, (numbers.Real, decimal.Decimal)) and dst.kind in "iubf":
            why = _real_fits(x, dst)
        elif isinstance(x, numbers.Complex) and dst.kind == "c":
            part = np.finfo(dst).dtype
            why = _real_fits(x.real, part) or _real_fits(x.imag, part)
        elif isinstance(x, numbers.Complex) and x.imag == 0 and dst.kind in "iubf":
            why = _real_fits(x.real, dst)
        elif isinstance(x, numbers.Complex):
            why = ("is complex", "Pass `dtype='complex128'` or drop the imaginary part.")
        else:
            why = (f"is a {type(x).__name__}, not a number",
                   "Convert the values to numbers, or pass `dtype=object`.")
        if why is not None:
            return Loss(i, x, *why)
    return None


# --------------------------------------------------------------------------- strings


def _string_loss(flat: np.ndarray, dst: np.dtype) -> Loss | None:
    if flat.dtype.kind not in "OUS":
        return Loss(0, _item(flat, 0), f"is a number, not a {_dname(dst)} string",
                    "Pass a numeric `dtype`, or `dtype=object`.")
    want = str if dst.kind == "U" else bytes
    for i, x in enumerate(flat.tolist()):
        if not isinstance(x, (str, bytes)):
            return Loss(i, x, f"is a {type(x).__name__}, not a string",
                        "Pass `dtype=object` to pad mixed values.")
        try:
            kept = np.array([x], dtype=dst)[0].item()
        except (UnicodeError, ValueError, TypeError):
            kept = None
        if isinstance(x, str) and want is bytes:
            try:
                x = x.encode("ascii")
            except UnicodeError:
                kept = None
        if kept != x:
            return Loss(i, x, f"does not survive {_dname(dst)} unchanged (numpy string dtypes "
                              "cut long strings and strip trailing NUL characters)",
                        "Pass `dtype=object` to keep strings byte-exact.")
    return None


# --------------------------------------------------------------------------- public helpers


def find_loss(values: np.ndarray, dtype: Any) -> Loss | None:
    """Return the first value that ``values.astype(dtype)`` would change, or None.

    Args:
        values: any numpy array (object arrays may hold Python ints of any size).
        dtype: the target dtype.

    Returns:
        A :class:`Loss` naming the flat index (C order) of the first changed value, or None
        when the cast keeps every value (float narrowing may round, see the module docstring).

    Example:
        >>> find_loss(np.array([1, 2**60 + 1]), "float64").index
        1
        >>> find_loss(np.array([1.0, 2.0]), "int8") is None
        True
    """
    dst = np.dtype(dtype)
    if values.size == 0 or dst.kind == "O":
        return None
    flat = values.reshape(-1)
    if flat.dtype == dst and dst.kind != "O":
        return None
    if dst.kind in "US":
        return _string_loss(flat, dst)
    if flat.dtype.kind in "US":
        return Loss(0, _item(flat, 0), f"is a string, which {dst.name} cannot hold",
                    "If these are tokens, map them to integer ids first; to pad them as they "
                    "are, pass `dtype=object`.")
    if flat.dtype.kind == "O":
        return _object_loss(flat, dst)
    if flat.dtype.kind in "biufc" and dst.kind in "biufc":
        return _numeric_loss(flat, dst)
    if np.can_cast(flat.dtype, dst, casting="safe") and flat.dtype.kind == dst.kind:
        return None  # e.g. datetime64[s] into datetime64[ns]
    return Loss(0, _item(flat, 0), f"is a {flat.dtype} value, which {dst.name} cannot hold "
                                   "exactly", "Pass a dtype of the same kind.")


def check_cast(
    values: np.ndarray,
    dtype: Any,
    *,
    name: str = "dtype",
    locate: Callable[[int], str] | None = None,
    suffix: str = "",
    header: str | None = None,
) -> None:
    """Raise ``ValueError`` if ``values.astype(dtype)`` would change any value.

    Args:
        values: the values about to be cast.
        dtype: the target dtype.
        name: the argument that chose ``dtype`` (named in the message).
        locate: maps a flat index of ``values`` to where the value sits in the caller's
            input (e.g. ``"sequences[3][5]"``); default ``"position i"``.
        suffix: extra text for the message's first line.
        header: replaces the opening ``Argument `name`='dtype' cannot hold the data without
            losing it`` where the dtype was not the caller's choice.

    Raises:
        ValueError: names ``name``, the value and its position, and says the fix.

    Example:
        >>> check_cast(np.array([3, 300]), "int8")
        Traceback (most recent call last):
        ...
        ValueError: Argument `dtype`='int8' cannot hold the data without losing it: value 300 at position 1 is out of the range int8 holds, [-128, 127].
        - Pass `dtype='int64'`.
    """  # noqa: E501
    dst = np.dtype(dtype)
    loss = find_loss(values, dst)
    if loss is None:
        return
    where = locate(loss.index) if locate is not None else f"position {loss.index}"
    if header is None:
        header = f"Argument `{name}`={_dname(dst)!r} cannot hold the data without losing it"
    raise ValueError(
        f"{header}: value {loss.value!r} at {where} {loss.reason}.{suffix}\n- {loss.fix}"
    )


def check_pad_value(value: Any, dtype: np.dtype, name: str = "value") -> None:
    """Refuse a padding ``value`` that ``dtype`` cannot hold exactly: the one pad-value check
    (``pad_sequences``, every in-memory executor, per field).

    Example:
        >>> check_pad_value(-1, np.dtype("uint8"))
        Traceback (most recent call last):
        ...
        ValueError: Argument `value`=-1 cannot be represented in `dtype`='uint8': it is out of the range uint8 holds, [0, 255].
        - Pick a padding value the dtype holds (0 for integer tokens) or a wider dtype.
    """  # noqa: E501
    if dtype.kind == "O":
        return
    if isinstance(value, (str, bytes)) and dtype.kind not in "US":
        raise ValueError(
            f"Argument `{name}`={value!r} is a string but `dtype`={dtype.name!r} is not.\n"
            "- Pass `dtype=object` to pad with strings."
        )
    if isinstance(value, (numbers.Number, str, bytes)):
        # An object array keeps a Python int of any size exactly for the check.
        check = np.array([value], dtype=object)
    else:
        check = np.asarray(value)
        if check.ndim != 0 or check.dtype.kind not in "biufc":
            raise TypeError(
                f"Argument `{name}` must be a scalar number. Received: {name}={value!r}"
            )
        check = check.reshape(1)
    if dtype.kind == "V":  # e.g. bfloat16 (ml_dtypes), a float numpy does not class as one
        cast = check.astype(np.float64).astype(dtype)
        same = cast.astype(np.float64) == check.astype(np.float64)
        if not (bool(same[0]) or bool(np.isnan(np.float64(cast[0])) and np.isnan(check[0]))):
            raise ValueError(
                f"Argument `{name}`={value!r} cannot be represented in `dtype`={_dname(dtype)!r}: "
                "it changes in the cast.\n- Pick a padding value the dtype holds (0 for integer "
                "tokens) or a wider dtype."
            )
        return
    loss = find_loss(check, dtype)
    if loss is not None:
        raise ValueError(
            f"Argument `{name}`={value!r} cannot be represented in `dtype`={_dname(dtype)!r}: "
            f"it {loss.reason}.\n- Pick a padding value the dtype holds (0 for integer tokens) "
            "or a wider dtype."
        )
