"""What the fitting executors share before any batch is built: inputs made ragged, the
targets rule applied, and the model checked (numpy only; no TensorFlow or Keras import).

:mod:`seqprep.fitting` and :mod:`seqprep.ensemble` both read their inputs here, so neither
imports the other's helpers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from seqprep._checks import check_finite_features, check_finite_labels
from seqprep._ragged import Ragged, as_ragged
from seqprep.targets import Targets, resolve_targets

__all__ = ["FitData", "check_model", "prepare_fit_data"]


@dataclass(frozen=True)
class FitData:
    """Inputs in ragged form, targets as rows (one per sequence) or ragged steps."""

    x: Ragged
    y: np.ndarray | Ragged
    y_steps: bool  # targets are per time step (a Ragged with x's lengths)
    weights: np.ndarray | None  # per-sequence sample weights


def prepare_fit_data(
    x: Any, y: Any, sample_weight: Any = None, *, xname: str = "x", yname: str = "y",
    allow_nonfinite: bool = False, targets: Targets = "auto",
) -> FitData:
    """Validate ``x`` (non-empty sequences, finite unless allowed), read ``y`` by the one
    targets rule (:func:`seqprep.resolve_targets`) and check per-sequence weights."""
    rag = as_ragged(x, xname)
    check_finite_features(rag.values, xname, offsets=rag.offsets, allow_nonfinite=allow_nonfinite)
    n = len(rag)
    lengths = rag.lengths
    if n == 0:
        raise ValueError(f"Argument `{xname}` must hold at least one sequence. Received 0")
    if lengths.min() == 0:
        bad = np.flatnonzero(lengths == 0)[:5].tolist()
        raise ValueError(
            f"Argument `{xname}` holds empty sequences (at positions {bad}); a model cannot "
            "train on zero time steps.\n- If they are placeholders, drop them first."
        )
    if y is None:
        raise ValueError(f"Argument `{yname}` is required. Received: {yname}=None")
    kind, resolved = resolve_targets(y, lengths, targets=targets, name=yname, xname=xname)
    y_steps = kind == "step"
    if isinstance(resolved, Ragged):
        check_finite_labels(resolved.values, yname, offsets=resolved.offsets)
    else:
        check_finite_labels(resolved, yname)
    weights = None
    if sample_weight is not None:
        weights = np.asarray(sample_weight, dtype=np.float32)
        if weights.shape != (n,):
            raise ValueError(
                f"Argument `sample_weight` must hold one weight per sequence, shape ({n},). "
                f"Received shape {weights.shape}\n"
                "- Pass one weight per sequence of `x`; for per-step weights, scale the loss."
            )
    return FitData(rag, resolved, y_steps, weights)


def check_model(model: Any) -> None:
    """Refuse anything but a compiled Keras model (duck-typed: no Keras import here)."""
    if not (hasattr(model, "fit") and hasattr(model, "train_step")):
        raise TypeError(
            f"Argument `model` must be a Keras model. Received: {type(model).__name__}\n"
            "- Pass a compiled `keras.Model` (e.g. `seqprep.models.reference_rnn(...)`)."
        )
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise ValueError(
            f"Argument `model` must be compiled before fitting. Received an uncompiled "
            f"{type(model).__name__} named {getattr(model, 'name', '?')!r}\n"
            "- Call `model.compile(optimizer=..., loss=...)` first."
        )
