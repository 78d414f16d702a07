"""What the fitting executors share before any batch is built: inputs read by the one input
stage (:mod:`seqprep.inputs._stage`) and the model checked (numpy only; no TensorFlow or Keras
import).

:mod:`seqprep.running._fitting` and :mod:`seqprep.running._ensemble` both read their inputs
here, so neither imports the other's helpers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from seqprep._core.ragged import Ragged
from seqprep.inputs import _stage as _inputs
from seqprep.inputs import _stage_rules
from seqprep.inputs._targets import Targets

__all__ = ["FitData", "check_model", "prepare_fit_data"]


@dataclass(frozen=True)
class FitData:
    """The stage, and its first field and first target in the forms the fit loops read.

    ``x`` is the field the fit loops group by (the first field of a dict or tuple ``x``),
    ``y`` the first target (rows, or ragged steps aligned with their field), ``weights`` the
    per-sequence sample weights (float32) or None.
    """

    x: Ragged
    y: np.ndarray | Ragged
    y_steps: bool  # targets are per time step (a Ragged with their field's lengths)
    weights: np.ndarray | None
    stage: _inputs.Stage


def prepare_fit_data(
    x: Any, y: Any, sample_weight: Any = None, *, xname: str = "x", yname: str = "y",
    allow_nonfinite: bool = False, targets: Targets = "auto", targets_field: Any = None,
    pad_value: Any = 0, floatx: str = "float32",
) -> FitData:
    """Read ``x``, ``y`` and per-sequence weights through the one input stage.

    On top of the stage's rules: at least one sequence, no empty sequence in any field (a
    model cannot train on zero steps), ``y`` required, and ``sample_weight`` one number per
    sequence. ``floatx`` is Keras's float type, read by the executor (the stage's dtype rule).
    """
    if y is None:
        raise ValueError(f"Argument `{yname}` is required. Received: {yname}=None")
    stage = _inputs.prepare(
        x, y, None, value=pad_value, allow_nonfinite=allow_nonfinite, targets=targets,
        targets_field=targets_field, names=(xname, yname), floatx=floatx,
    )
    if stage.n == 0:
        raise ValueError(f"Argument `{xname}` must hold at least one sequence. Received 0")
    for field in stage.fields:
        if field.raw_lengths.min() == 0:
            bad = np.flatnonzero(field.raw_lengths == 0)[:5].tolist()
            raise ValueError(
                f"Argument `{field.label}` holds empty sequences (at positions {bad}); a "
                "model cannot train on zero time steps.\n- If they are placeholders, drop "
                "them first."
            )
    weights = None
    if sample_weight is not None:
        shape = np.shape(sample_weight)
        if shape != (stage.n,):
            raise ValueError(
                f"Argument `sample_weight` must hold one weight per sequence, shape "
                f"({stage.n},). Received shape {shape}\n"
                f"- Pass one weight per sequence of `{xname}`; for per-step weights, scale "
                "the loss."
            )
        weights = _stage_rules.sequence_weights_array(
            sample_weight, stage.n,
            fix=f"Pass one weight per sequence of `{xname}`; for per-step weights, scale the "
            "loss.")
        stage = _with_weights(stage, weights)
    target = stage.targets[0]
    y_steps = target.table.y_mode == "step"
    ys = target.table.y[:-1]
    resolved = Ragged(ys, stage.fields[target.field].ragged.offsets) if y_steps else ys
    return FitData(stage.fields[0].ragged, resolved, y_steps, weights, stage)


def _with_weights(stage: _inputs.Stage, weights: np.ndarray) -> _inputs.Stage:
    """The stage with per-sequence ``weights`` on every target (mode ``"sequence"``)."""
    w = np.concatenate([weights, np.zeros(1, np.float32)])
    targets = tuple(replace(t, table=replace(t.table, w=w, w_mode="sequence"))
                    for t in stage.targets)
    return replace(stage, targets=targets, weighted=True)


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
