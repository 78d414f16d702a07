"""The input stage's value rules (:mod:`seqprep.inputs._stage`): the one dtype rule, the
padding value checked into a field's table, and labels and weights read and cast.

Integer and boolean steps keep their dtype; floats wider than the *working float type* become
it after a check that no value overflows; ``dtype=`` overrides, and a cast that would change a
value raises. Labels follow the same rule; weights are float32 and must be finite.

The working float type is Keras's ``floatx``, read by the executor (``seqprep.running``) and
passed in as ``floatx=`` (this stage never imports Keras), but never narrower than float32
(:func:`working_float`): under the default ``floatx`` (float32) float64 data become float32;
under ``set_floatx("float64")`` they stay float64; under ``float16``/``bfloat16`` they become
float32, and float32 data stay float32: the data are never rounded to half precision behind the
caller's back (the model's layers cast their inputs to their own compute dtype; ``dtype=``
asks for half-precision batches explicitly).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqprep._core.casts import check_cast, check_pad_value
from seqprep._core.checks import (
    check_choice,
)
from seqprep._core.ragged import Ragged
from seqprep.inputs import _kernel

#: The narrowest working float type (Keras's default ``floatx``).
FLOAT = np.dtype(np.float32)

#: Keras's ``floatx`` values (``keras.config.set_floatx`` takes these).
FLOATX = ("bfloat16", "float16", "float32", "float64")


def working_float(floatx: str = "float32") -> np.dtype:
    """The float type wider floating data become: ``floatx`` (Keras's float type, as the
    executor read it), or float32 when ``floatx`` is narrower (float16, bfloat16): the stage
    never rounds data to half precision unasked.

    Example:
        >>> [working_float(f).name for f in ("float64", "float32", "float16", "bfloat16")]
        ['float64', 'float32', 'float32', 'float32']
    """
    if floatx not in FLOATX:
        raise ValueError(
            f"Argument `floatx` must be one of {FLOATX} (Keras's float types). "
            f"Received: floatx={floatx!r}"
        )
    return np.dtype(np.float64) if floatx == "float64" else FLOAT


def default_dtype(dtype: np.dtype, floatx: str = "float32") -> np.dtype:
    """The dtype data get when the caller does not choose: floats wider than the working
    float type (:func:`working_float` of ``floatx``) become it; everything else keeps its
    dtype.

    Example:
        >>> default_dtype(np.dtype("float64")).name, default_dtype(np.dtype("int64")).name
        ('float32', 'int64')
        >>> default_dtype(np.dtype("float64"), "float64").name
        'float64'
        >>> default_dtype(np.dtype("float32"), "float16").name
        'float32'
    """
    work = working_float(floatx)
    if dtype.kind == "f" and dtype.itemsize > work.itemsize:
        return work
    return dtype


def resolve_dtype(dtype: Any, source: np.dtype, name: str = "x",
                  floatx: str = "float32") -> np.dtype:
    """The dtype of a field's batches: ``dtype`` if given, else :func:`default_dtype`."""
    if dtype is None:
        if source.kind == "O":
            # as_ragged keeps integers no 64-bit dtype holds (or such integers mixed with
            # floats) as Python objects, so that nothing is rounded behind the caller's back.
            raise ValueError(
                f"Argument `dtype` is None, but `{name}` holds integers that no 64-bit dtype "
                "holds exactly (past 64 bits, or past 2**53 mixed with floats). Received: "
                "dtype=None\n- If rounding is fine, pass `dtype='float64'`; if they are ids, "
                "map them to small integers first."
            )
        return default_dtype(source, floatx)
    try:
        return np.dtype(dtype)
    except TypeError:
        raise TypeError(
            f"Argument `dtype` is not a numpy dtype. Received: dtype={dtype!r}"
        ) from None


def values_with_pad_row(rag: Ragged, dtype: np.dtype, value: Any, name: str = "x",
                        by_rule: bool = False) -> np.ndarray:
    """``rag.values`` cast to ``dtype`` (checked: no value may change) plus one pad step,
    ``value`` (checked: ``dtype`` must hold it), at the end, where padded positions gather.
    ``by_rule``: ``dtype`` is the dtype rule's choice, not the caller's (said if it fails).

    Example:
        >>> from seqprep._core.ragged import as_ragged
        >>> rag = as_ragged([np.array([1.0, 1e39])])
        >>> values_with_pad_row(rag, np.dtype("float32"), 0, by_rule=True)
        Traceback (most recent call last):
        ...
        ValueError: Argument `x` does not fit float32, the float type of the batches (Keras's floatx, at least float32; keras.config.set_floatx('float64') keeps float64 data): value 1e+39 at x[0][1] overflows float32 (largest 3.4028234663852886e+38).
        - Pass `dtype='float64'`.
    """  # noqa: E501
    header = None
    if by_rule and rag.values.dtype != dtype:
        header = (f"Argument `{name}` does not fit {dtype.name}, the float type of the batches "
                  "(Keras's floatx, at least float32; keras.config.set_floatx('float64') keeps "
                  "float64 data)")
    check_cast(rag.values, dtype, locate=rag.locator(name), header=header)
    check_pad_value(value, dtype)
    values = rag.values if rag.values.dtype == dtype else rag.values.astype(dtype)
    return _kernel.with_pad_row(values, value)


def label_array(y: Any, name: str, n: int) -> np.ndarray:
    """``y`` as a numeric array with one entry per sequence (``n``), or a clear error."""
    arr = np.asarray(y.numpy() if hasattr(y, "numpy") else y)
    if arr.ndim == 0:
        raise ValueError(
            f"Argument `{name}` must have one entry per sequence (shape (n, ...)). "
            f"Received a scalar: {name}={arr!r}"
        )
    if arr.shape[0] != n:
        raise ValueError(
            f"Argument `{name}` must have one entry per sequence of `x` ({n}). "
            f"Received {arr.shape[0]} entries\n- Pass one {name} per sequence, in the same order."
        )
    if arr.dtype.kind in "OUS":
        raise ValueError(
            f"Argument `{name}` must be numeric. Received dtype {arr.dtype}\n"
            "- If these are class names, map them to integer ids first."
        )
    return arr


def cast_labels(arr: np.ndarray, name: str, floatx: str = "float32") -> np.ndarray:
    """Labels by the dtype rule (:func:`default_dtype`; the cast checked)."""
    target = default_dtype(arr.dtype, floatx)
    if target == arr.dtype:
        return arr
    check_cast(
        arr, target, name=name,
        header=f"Argument `{name}` cannot become {target.name} (the dataset's label dtype) "
               "without losing data",
        locate=lambda i: f"{name}[{', '.join(map(str, np.unravel_index(i, arr.shape)))}]",
    )
    return arr.astype(target)


def sequence_weights_array(sample_weight: Any, n: int, *, fix: str) -> np.ndarray:
    """One finite float32 weight per sequence, or an error naming the first bad one."""
    arr = label_array(sample_weight, "sample_weight", n)
    if arr.ndim != 1 or arr.dtype.kind not in "biuf":
        raise ValueError(
            "Argument `sample_weight` must be one number per sequence (shape (n,)). "
            f"Received an array of shape {arr.shape} and dtype {arr.dtype}\n- {fix}"
        )
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(
            "Argument `sample_weight` must hold finite numbers. "
            f"Received: sample_weight[{bad}]={arr[bad]!r}\n"
            "- Give that sequence a finite weight (0 leaves it out of the loss)."
        )
    check_cast(
        arr, np.float32, name="sample_weight", locate=lambda i: f"sample_weight[{i}]",
        header="Argument `sample_weight` does not fit float32, the type Keras weighs the loss in",
    )
    return arr.astype(np.float32)


def parse_weights(
    sample_weight: Any, n: int, has_y: bool
) -> tuple[str | None, np.ndarray | None]:
    """``(mode, per-sequence weights)``; mode is None, ``"sequence"``, ``"timestep"`` or
    ``"timestep_mean"``."""
    if isinstance(sample_weight, (bool, np.bool_)):
        raise TypeError(
            "Argument `sample_weight` takes no boolean. "
            f"Received: sample_weight={sample_weight!r}\n"
            '- For per-timestep weights that zero the padding, pass sample_weight="timestep" '
            '(or "timestep_mean"); for no weights, pass sample_weight=None.'
        )
    if sample_weight is None:
        return None, None
    if not has_y:
        raise ValueError(
            "Argument `sample_weight` needs `y`: Keras weights the loss against targets.\n"
            "- Pass `y`, or drop `sample_weight`."
        )
    if isinstance(sample_weight, str):
        check_choice("sample_weight", sample_weight, ("timestep", "timestep_mean"))
        return sample_weight, None
    return "sequence", sequence_weights_array(
        sample_weight, n,
        fix="For per-timestep weights that zero the padding, pass sample_weight='timestep'.",
    )
