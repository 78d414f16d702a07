"""Keras's float type (``floatx``) as the executors read it for the one dtype rule.

The input stage (:mod:`seqprep.inputs._stage`) is numpy only, so it never asks Keras: every
executor reads ``floatx`` here and passes it in (``prepare(..., floatx=...)``), where
:func:`seqprep.inputs._stage_rules.working_float` turns it into the float type wider floating
data become (``floatx``, but never narrower than float32).
"""

from __future__ import annotations

import sys

__all__ = ["keras_floatx"]


def keras_floatx(*, import_keras: bool = True) -> str:
    """``keras.config.floatx()``, or ``"float32"`` (Keras's default) without Keras.

    Args:
        import_keras: False for executors that plain PyTorch or numpy programs use too
            (``PadCollate``, ``PackCollate``): Keras is then asked only if it is already
            imported (a program that feeds a Keras model has imported it), so that padding a
            batch never imports Keras (and its backend) as a side effect.

    Example:
        >>> keras_floatx() in ("bfloat16", "float16", "float32", "float64")
        True
    """
    keras = sys.modules.get("keras")
    if keras is None and import_keras:
        try:
            import keras
        except ImportError:  # Grain or PyTorch without Keras
            return "float32"
    if keras is None:
        return "float32"
    return str(keras.config.floatx())
