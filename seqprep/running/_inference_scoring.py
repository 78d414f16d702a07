"""What :func:`seqprep.evaluate` scores, output by output: targets, weights and losses.

A model may have several outputs, some per sequence and some per step (a tagger head and a
classifier head). Each output gets its own targets (``y`` as a list or dict, one entry per
output), its own weights (one array for all, or a list or dict of them), and its compiled
loss, reduced as Keras reduces it *in one batch* of all examples (:class:`_LossSum`):

* ``"sum_over_batch_size"`` (Keras's default; also ``"mean"`` and ``None``/``"none"`` on
  per-sequence outputs, whose one-batch log is the same mean): ``sum(w * loss) / targets``;
* ``"sum"``: ``sum(w * loss)``;
* ``"mean_with_sample_weight"``: ``sum(w * loss) / sum(w)``.

"Targets" are the output's rows, or its real steps for per-step targets (not padding, not
steps a masking layer of the model masks, as Keras leaves those out). Per-step targets are
scored on their real steps laid out as one-step rows, so every step weighs the same whatever
its batch's width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from keras import ops

from seqprep._core.checks import check_choice
from seqprep._core.ragged import Ragged, as_ragged, lengths_of
from seqprep.inputs import _kernel
from seqprep.inputs._stage_rules import cast_labels, default_dtype, values_with_pad_row
from seqprep.inputs._targets import Targets, resolve_targets
from seqprep.running._floatx import keras_floatx
from seqprep.running._inference_batches import _Fields

# Keras's reductions, each with what the one-batch value divides by.
_PER_TARGET = ("sum_over_batch_size", "mean")
_REDUCTIONS = (*_PER_TARGET, "sum", "mean_with_sample_weight", "none")


@dataclass
class _Target:
    """One output's targets: ``kind`` ``"sequence"`` (``data`` an array ``(n, ...)``) or
    ``"step"`` (``table`` the kernel table of the targets, which follow field ``field``;
    ``data`` None);
    ``weights`` None, float32 ``(n,)`` per sequence, or per step (``step_weights``: float32
    values aligned with the table's, pad row last)."""

    label: str
    kind: str
    data: Any
    field: int
    table: _kernel.Table | None = None
    weights: np.ndarray | None = None
    step_weights: np.ndarray | None = None


def _targets(y: Any, fields: _Fields, targets: Targets, name: str = "y") -> tuple[str, Any, int]:
    """``(kind, targets, field)``: per-sequence rows, or per-step targets (the kernel table
    of their steps, built as the input stage builds its targets') that follow field
    ``field`` (the field whose lengths they have)."""
    check_choice("targets", targets, ("auto", "sequence", "step"))
    field = 0
    if fields.keyed and targets != "sequence":
        try:
            y_lengths = lengths_of(y, name)
        except (TypeError, ValueError):
            y_lengths = None
        if y_lengths is not None:
            same = [f for f, r in enumerate(fields.rags)
                    if r.lengths.shape == y_lengths.shape and np.array_equal(r.lengths, y_lengths)]
            field = same[0] if same else 0
    xname = fields.label(field)
    kind, resolved = resolve_targets(y, fields.rags[field].lengths, targets=targets,
                                     name=name, xname=xname)
    floatx = keras_floatx()
    if isinstance(resolved, Ragged):  # the input stage's table: the one dtype rule and check
        values = values_with_pad_row(resolved, default_dtype(resolved.values.dtype, floatx), 0,
                                     name, by_rule=True)
        return kind, _kernel.table(values, resolved.offsets[:-1], resolved.lengths), field
    return kind, cast_labels(np.asarray(resolved), name, floatx), field


def _check_weights(values: np.ndarray, name: str, where: Any) -> np.ndarray:
    if values.dtype.kind not in "biuf":
        raise ValueError(
            f"Argument `{name}` must hold numbers. Received dtype {values.dtype}\n- Pass "
            "float weights (0 leaves a target out)."
        )
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(
            f"Argument `{name}` must hold finite numbers. Received: {where(bad)}="
            f"{values[bad]!r}\n- Give it a finite weight (0 leaves it out)."
        )
    return values.astype(np.float32)


def _is_per_sequence(weights: Any) -> bool:
    """Whether ``weights`` is one number per sequence (a 1-D numeric array or list), not a
    collection of per-step arrays."""
    if isinstance(weights, Ragged):
        return False
    try:
        arr = np.asarray(weights)
    except (TypeError, ValueError):  # arrays of different lengths
        return False
    return arr.ndim == 1 and arr.dtype != object


def _weights_of(weights: Any, target: _Target, n: int, name: str) -> None:
    """Set ``target``'s weights from ``weights``: one per sequence ``(n,)``, or one per step
    (a list of 1-D arrays of the target's lengths) for per-step targets."""
    if weights is None:
        return
    if _is_per_sequence(weights):
        arr = np.asarray(weights)
        if arr.shape != (n,):
            raise ValueError(
                f"Argument `{name}` must hold one number per sequence, shape ({n},). Received "
                f"shape {arr.shape}\n- Pass one weight per sequence of `x`, or, for per-step "
                "targets, a list of 1-D arrays, one per sequence, with one weight per step."
            )
        target.weights = _check_weights(arr, name, lambda i: f"{name}[{i}]")
        return
    try:
        rag = as_ragged(weights, name)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"Argument `{name}` must be one weight per sequence, shape ({n},), or one weight "
            f"per step (a list of 1-D arrays). Received {type(weights).__name__}: {err}"
        ) from None
    if target.kind != "step":
        raise ValueError(
            f"Argument `{name}` holds one weight per step, but its output's targets "
            f"`{target.label}` are one per sequence.\n- Pass one weight per sequence, shape "
            f"({n},), for that output."
        )
    lengths = target.table.lengths
    if rag.values.ndim != 1:
        raise ValueError(
            f"Argument `{name}` must hold one weight per step: 1-D arrays, one per sequence. "
            f"Received arrays of shape (T_i, {', '.join(map(str, rag.values.shape[1:]))})\n"
            "- Pass one number per step of each sequence."
        )
    bad = _first_mismatch(rag.lengths, lengths)
    if bad is not None:
        raise ValueError(
            f"Argument `{name}` must hold one 1-D array per sequence with one weight per "
            f"step of `{target.label}`. Received {len(rag)} arrays for {len(lengths)} "
            "sequences" + (f"; {name}[{bad}] has {rag.lengths[bad]} weights for "
                           f"{lengths[bad]} steps" if len(rag) == len(lengths) else "")
            + "\n- Pass weights of the targets' lengths (one per step)."
        )
    values = _check_weights(rag.values, name, rag.locator(name))
    target.step_weights = _kernel.with_pad_row(values, 0)


def _first_mismatch(a: np.ndarray, b: np.ndarray) -> int | None:
    """The first sequence whose count differs (0 if the counts differ), or None."""
    if a.shape != b.shape:
        return 0
    diff = np.flatnonzero(a != b)
    return int(diff[0]) if diff.size else None


def _per_output(value: Any, names: list[str], count: int, name: str) -> list[Any]:
    """``value`` (``y`` or ``sample_weight``) split over ``count`` outputs: a dict by output
    name, a list or tuple by position; anything else is every output's (``sample_weight``) or
    the one output's."""
    if count == 1:
        if isinstance(value, dict) and len(value) == 1 and set(value) == set(names):
            return [value[names[0]]]
        return [value]
    if isinstance(value, dict):
        for key in value:
            if key not in names:
                raise ValueError(
                    f"Argument `{name}` is a dict keyed by output name, but the model has no "
                    f"output named {key!r}. Its outputs: {names}\n- Key `{name}` by the "
                    "model's output names."
                )
        return [value.get(k) for k in names]
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(
                f"Argument `{name}` must hold one entry per output of the model ({count}: "
                f"{names}). Received a {type(value).__name__} of {len(value)}\n- Pass a list "
                f"with one entry per output, or a dict keyed by output name."
            )
        return list(value)
    if name == "y":
        raise ValueError(
            f"Argument `y` must hold the targets of each of the model's {count} outputs "
            f"{names}. Received one {type(value).__name__}\n- Pass a list with one entry per "
            "output, or a dict keyed by output name."
        )
    return [value] * count


def output_targets(
    y: Any, sample_weight: Any, fields: _Fields, targets: Targets, names: list[str],
) -> list[_Target]:
    """Every output's :class:`_Target`, in the order of the model's flattened outputs."""
    count = len(names)
    ys = _per_output(y, names, count, "y")
    ws = _per_output(sample_weight, names, count, "sample_weight")
    per_output_weights = count > 1 and isinstance(sample_weight, (dict, list, tuple))
    out: list[_Target] = []
    for k, (y_k, w_k) in enumerate(zip(ys, ws, strict=True)):
        label = "y" if count == 1 else f"y[{names[k]!r}]"
        wname = f"sample_weight[{names[k]!r}]" if per_output_weights else "sample_weight"
        if y_k is None:
            raise ValueError(
                f"Argument `y` gives no targets for the model's output {names[k]!r}; "
                "seqprep.evaluate scores every output, as model.evaluate does.\n- Give "
                f"`y` one entry per output {names}."
            )
        kind, data, field = _targets(y_k, fields, targets, label)
        target = (_Target(label, kind, None, field, table=data) if kind == "step"
                  else _Target(label, kind, data, field))
        _weights_of(w_k, target, len(fields), wname)
        out.append(target)
    return out


def batch_targets(
    target: _Target, idx: np.ndarray, width: int, padding: str, y_pred: np.ndarray,
    mask: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One batch of one output: ``(targets, outputs, weights or None)`` as rows. Per-step
    targets give the batch's real steps (not padding, not masked by the model) as one-step
    rows ``(N, 1, ...)``: Keras's streaming metrics average each row over its padded width, so
    batches of other widths would weigh their steps differently."""
    if target.kind == "sequence":
        return target.data[idx], y_pred, None if target.weights is None else target.weights[idx]
    table = target.table
    src, real = _kernel.positions(table.starts, table.lengths, idx, width, padding,
                                  table.pad_index)
    if y_pred.ndim < 2 or y_pred.shape[:2] != real.shape:
        raise ValueError(
            f"Argument `{target.label}` holds one target per step, but the model's output has "
            f"shape {tuple(y_pred.shape)}, not (batch, steps, ...) = ({real.shape[0]}, "
            f"{real.shape[1]}, ...)\n- Pass one target per sequence (an array (n, ...)) for a "
            "model with one output per sequence."
        )
    if mask is not None:  # steps a masking layer of the model masks are no targets (Keras)
        real = real & mask.reshape(real.shape)
    weights = None
    if target.step_weights is not None:
        weights = target.step_weights[src[real]]
    elif target.weights is not None:
        weights = np.broadcast_to(target.weights[idx][:, None], real.shape)[real]
    return table.x[src[real]][:, None], y_pred[real][:, None], weights


def reduction_of(loss: Any) -> str:
    """A compiled loss's reduction, standardized (``None`` is ``"none"``)."""
    reduction = getattr(loss, "reduction", "sum_over_batch_size")
    return "none" if reduction is None else str(reduction)


def check_reduction(loss: Any, name: str, target: _Target | None, losses: int) -> str:
    """The loss's reduction, or a clear refusal where no one-batch value can be reproduced."""
    reduction = reduction_of(loss)
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"seqprep.evaluate reproduces Keras's reductions {list(_REDUCTIONS)}. Received the "
            f"loss of output {name!r} with reduction={reduction!r}\n- Compile with one of them."
        )
    if reduction == "none" and (losses > 1 or (target is not None and target.kind == "step")):
        raise ValueError(
            f"The loss of output {name!r} has reduction=None: Keras's evaluate then averages "
            "the unreduced values over the padded cells of each batch"
            + (" (padding included)" if losses == 1 else " and adds outputs of different "
               "shapes") + ", a figure that depends on the padding, which seqprep.evaluate "
            "cannot reproduce.\n- Compile with reduction='sum_over_batch_size' (the same "
            "value for real targets)."
        )
    return reduction


class _LossSum:
    """One output's loss accumulated over batches to its one-batch value (see the module)."""

    def __init__(self, reduction: str) -> None:
        self.reduction = reduction
        self.total, self.count, self.weight = 0.0, 0, 0.0

    def weights(self, wb: np.ndarray | None, held: int, size: int) -> np.ndarray | None:
        """The weights to call the loss with on ``size`` rows of which ``held`` are real:
        fill rows weigh 0; a per-target mean is scaled to divide by the real rows."""
        if wb is None and size == held:
            return None
        weight = np.zeros(size, np.float32)
        weight[:held] = 1.0 if wb is None else wb
        if self.reduction in (*_PER_TARGET, "none"):
            weight *= np.float32(size / held)
        return weight

    def add(self, value: Any, weight: np.ndarray | None, held: int) -> None:
        value = np.asarray(ops.convert_to_numpy(value), np.float64)
        value = float(value.mean()) if value.ndim else float(value)
        if self.reduction == "sum":
            self.total += value
        elif self.reduction == "mean_with_sample_weight":
            w = float(held if weight is None else np.sum(weight, dtype=np.float64))
            self.total += value * w
            self.weight += w
        else:
            self.total += value * held
            self.count += held

    def result(self) -> float:
        if self.reduction == "sum":
            return self.total
        if self.reduction == "mean_with_sample_weight":
            return self.total / self.weight if self.weight else 0.0
        return self.total / self.count if self.count else 0.0


def padded_rows(yb: np.ndarray, y_pred: np.ndarray, held: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows padded to a power of two (at least 1) by repeating the first row (or zeros), so
    that backends that compile eager ops per shape (JAX) meet a few row counts instead of one
    per batch. The caller weighs and masks the extra rows out."""
    size = 1 << max(0, (max(held, 1) - 1).bit_length())
    if size == held:
        return yb, y_pred
    if held:
        fill = np.zeros(size - held, np.int64)
        return np.concatenate([yb, yb[fill]]), np.concatenate([y_pred, y_pred[fill]])
    return (np.zeros((size, *yb.shape[1:]), yb.dtype),
            np.zeros((size, *y_pred.shape[1:]), y_pred.dtype))
