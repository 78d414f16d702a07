"""The compiled loss and metrics over real examples and steps: :func:`seqprep.evaluate`.

It runs the batches :func:`seqprep.predict` plans (:mod:`._inference_batches`) through the
model's compiled loss and metrics and accumulates them so that the result is the one-batch
value over all real examples and steps (per-step targets laid out as one-step rows).
"""

from __future__ import annotations

import weakref
from typing import Any

import keras
import numpy as np
from keras import ops

from seqprep._core.casts import check_cast
from seqprep._core.checks import check_choice
from seqprep._core.options import Options
from seqprep._core.ragged import Ragged, lengths_of
from seqprep.inputs import _kernel
from seqprep.inputs._padding import Side
from seqprep.inputs._stage_rules import cast_labels, default_dtype
from seqprep.inputs._targets import Targets, resolve_targets
from seqprep.running._floatx import keras_floatx
from seqprep.running._inference_batches import (
    DEFAULT_MAX_TOKENS,
    PadTo,
    _Batches,
    _callback_list,
    _check_model_inputs,
    _Fields,
    _fields,
    _model_kind,
    _packed_returns_sequences,
    _plan,
    _run_arguments,
    _stateful_sizes,
)
from seqprep.running._keras_private import keras_mask

__all__ = ["evaluate"]


class _Forward:
    """``model(x, training=False)`` compiled for the backend; returns ``(y_pred, mask)`` as
    numpy (mask None when the output carries no Keras mask)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.backend = keras.backend.backend()
        self._fn: Any = None

    def _call(self, x: Any) -> tuple[Any, Any]:
        y = self.model(x, training=False)
        return y, keras_mask(y)

    def __call__(self, x: Any) -> tuple[np.ndarray, np.ndarray | None]:
        if getattr(self.model, "run_eagerly", False) or self.backend not in ("tensorflow", "jax"):
            if self.backend == "torch":
                import torch

                with torch.no_grad():
                    y, mask = self._call(x)
            else:
                y, mask = self._call(x)
        elif self.backend == "tensorflow":
            if self._fn is None:
                import tensorflow as tf

                self._fn = tf.function(self._call, reduce_retracing=True)
            y, mask = self._fn(x)
        else:
            if self._fn is None:
                import jax

                model = self.model

                def step(trainable, non_trainable, x):
                    y, _ = model.stateless_call(trainable, non_trainable, x, training=False)
                    return y, keras_mask(y)

                self._fn = jax.jit(step)
            y, mask = self._fn([v.value for v in self.model.trainable_variables],
                               [v.value for v in self.model.non_trainable_variables], x)
        return (ops.convert_to_numpy(y),
                None if mask is None else ops.convert_to_numpy(mask).astype(bool))


_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward_of(model: Any) -> _Forward:
    try:
        return _FORWARDS.setdefault(model, _Forward(model))
    except TypeError:  # not weak-referenceable
        return _Forward(model)


def _check_compiled(model: Any) -> None:
    if not getattr(model, "compiled", False):
        raise ValueError(
            f"Argument `model` must be compiled with a loss to be evaluated. Received an "
            f"uncompiled {type(model).__name__} named {getattr(model, 'name', '?')!r}\n"
            "- Call `model.compile(loss=..., metrics=[...])` first."
        )
    loss = getattr(model, "loss", None)
    if isinstance(loss, (dict, list, tuple)) and len(keras.tree.flatten(loss)) > 1:
        raise ValueError(
            "seqprep.evaluate supports models with one output and one loss. Received a model "
            f"compiled with {len(keras.tree.flatten(loss))} losses\n- Evaluate each output "
            "with its own model, or use model.evaluate on padded arrays."
        )
    reduction = getattr(loss, "reduction", "sum_over_batch_size")
    if reduction not in ("sum_over_batch_size", None):
        raise ValueError(
            "seqprep.evaluate reproduces Keras's default loss reduction, "
            f"'sum_over_batch_size'. Received a loss with reduction={reduction!r}\n- Compile "
            "with a loss of the default reduction for evaluation."
        )


def _weights_array(sample_weight: Any, n: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    arr = np.asarray(sample_weight)
    if arr.shape != (n,) or arr.dtype.kind not in "biuf":
        raise ValueError(
            f"Argument `sample_weight` must hold one number per sequence, shape ({n},). "
            f"Received shape {arr.shape} and dtype {arr.dtype}\n- Pass one weight per "
            "sequence of `x`; padding is left out of the loss and metrics without weights."
        )
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(
            f"Argument `sample_weight` must hold finite numbers. Received: "
            f"sample_weight[{bad}]={arr[bad]!r}\n- Give that sequence a finite weight (0 "
            "leaves it out)."
        )
    return arr.astype(np.float32)


def _targets(y: Any, fields: _Fields, targets: Targets) -> tuple[str, Any, int]:
    """``(kind, targets, field)``: per-sequence rows, or per-step targets (a Ragged) that
    follow field ``field`` (the field whose lengths they have)."""
    check_choice("targets", targets, ("auto", "sequence", "step"))
    field = 0
    if fields.keyed and targets != "sequence":
        try:
            y_lengths = lengths_of(y, "y")
        except (TypeError, ValueError):
            y_lengths = None
        if y_lengths is not None:
            same = [f for f, r in enumerate(fields.rags)
                    if r.lengths.shape == y_lengths.shape and np.array_equal(r.lengths, y_lengths)]
            field = same[0] if same else 0
    xname = fields.label(field)
    kind, resolved = resolve_targets(y, fields.rags[field].lengths, targets=targets,
                                     name="y", xname=xname)
    floatx = keras_floatx()  # the one dtype rule (seqprep.inputs._stage_rules.default_dtype)
    if isinstance(resolved, Ragged):
        values = resolved.values
        target = default_dtype(values.dtype, floatx)
        if target != values.dtype:
            check_cast(values, target, name="y", locate=resolved.locator("y"),
                       header=f"Argument `y` does not fit {target.name}")
            resolved = Ragged(values.astype(target), resolved.offsets)
    else:
        resolved = cast_labels(np.asarray(resolved), "y", floatx)
    return kind, resolved, field


def evaluate(
    model: Any,
    x: Any,
    y: Any,
    *,
    sample_weight: Any = None,
    batch_size: int | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    padding: Side = "post",
    value: Any = 0,
    pad_to: PadTo | int = "auto",
    targets: Targets = "auto",
    window: int | None = None,
    options: Options | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """The compiled loss and metrics of ``model`` on ``(x, y)``, over real examples and steps.

    What is computed: the value Keras's ``evaluate`` gives on the padded-to-max arrays in ONE
    batch (``model.evaluate(padded_x, padded_y, batch_size=len(x))``), with padding
    masked. Keras's own ``evaluate`` with smaller batches averages per-batch losses weighted
    by rows, so its value depends on how the batches are made; this one does not: the loss is
    the sum over batches of each batch's loss times the targets it holds (rows, or real steps
    for per-step targets), divided by all targets, i.e. exactly the mean over every real
    example (or step), weighted by ``sample_weight`` as Keras weighs it. Metrics are Keras's
    compiled metrics, accumulated over the batches as Keras accumulates them (their state is
    sums and counts), with padding masked: per-step targets count on real steps only (and not
    where a masking layer of the model masks the output, as in Keras). Per-step losses and
    metrics are computed on each batch's real steps laid out as one-step rows, so every step
    weighs the same whatever its batch's width (Keras's streaming metrics average each row
    over its padded width first); this holds for any loss or metric that treats steps
    independently, which every Keras per-step loss and metric does.

    Per-step targets and masks: a model whose output carries a Keras mask (``Masking``,
    ``Embedding(mask_zero=True)``) gives exactly Keras's one-batch value on padded arrays. For
    a model without a mask, Keras's padded-to-max value would count the padded steps; this
    function still counts real steps only (Keras gives the same with 0/1 timestep weights and
    a loss of ``reduction="mean_with_sample_weight"``).

    Batches are planned as in :func:`predict`; stateful models go to
    :func:`seqprep.evaluate_tbptt`, a :class:`seqprep.LengthEnsemble` to its own
    ``evaluate``. Encoder-decoder models are scored teacher-forced by passing a dict ``x``
    (``{"encoder": sources, "decoder": decoder_inputs}``) and the decoder targets as ``y``;
    per-step targets follow the field of ``x`` whose lengths they have.

    Args:
        model: a compiled Keras model with one output and one loss (Keras's default
            ``"sum_over_batch_size"`` reduction), or a :class:`seqprep.LengthEnsemble`.
        x: a sequence collection, or a dict (or tuple) of them, as in :func:`predict`.
        y: one target per sequence (an array ``(n, ...)``) or one per step (a list of
            ``(T_i, ...)`` arrays); see :func:`seqprep.resolve_targets`.
        sample_weight: optional weights ``(n,)``, one per sequence (applied to every step of
            per-step targets).
        batch_size, max_tokens, padding, value, pad_to, window: as in :func:`predict`.
        options: :class:`seqprep.Options`; read: ``dtype`` and ``allow_nonfinite`` of the
            inputs ``x``, as in :func:`predict`.
        **kwargs: Keras's own ``evaluate`` arguments ``verbose`` and ``callbacks`` (which get
            ``on_test_*`` calls), as in :func:`predict`. Any other key is refused.
        targets: ``"auto"``, ``"sequence"`` or ``"step"`` (see :func:`seqprep.resolve_targets`).

    Returns:
        A dict ``{"loss": ..., <metric name>: ...}`` of floats, as
        ``model.evaluate(..., return_dict=True)``.

    Raises:
        ValueError: an uncompiled model, several outputs or losses, a loss with another
            reduction, ``y`` or ``sample_weight`` of another count than ``x``, ``x`` that
            does not match the model's inputs, or bad options (as in :func:`predict`).
        TypeError: as in :func:`predict`.

    Example:
        >>> import keras, numpy as np
        >>> import seqprep as sp
        >>> inputs = keras.Input((None, 1))
        >>> h = keras.layers.GRU(2)(keras.layers.Masking()(inputs))
        >>> model = keras.Model(inputs, keras.layers.Dense(1)(h))
        >>> model.compile(loss="mse", metrics=["mae"])
        >>> x = [np.full((n, 1), n, "float32") for n in (5, 1, 2, 8, 3)]
        >>> y = np.array([1.0, 0.0, 0.5, 2.0, 1.0], "float32")
        >>> logs = sp.evaluate(model, x, y, max_tokens=8, verbose=0)
        >>> padded = sp.pad_sequences(x, padding="post", dtype="float32")
        >>> ref = model.evaluate(padded, y, batch_size=len(x), verbose=0, return_dict=True)
        >>> all(abs(logs[k] - ref[k]) < 1e-5 for k in ref)
        True
    """
    batch_size, max_tokens, verbose, callbacks, opts = _run_arguments(
        "evaluate", batch_size, max_tokens, padding, "auto", options, kwargs)
    kind = _model_kind(model)
    if kind == "ensemble":
        return model.evaluate(x, y, batch_size=batch_size or 256, targets=targets)
    _check_compiled(model)
    if kind == "stateful":
        rows, window = _stateful_sizes(model, x, window, max_tokens)
        from seqprep.running._tbptt import evaluate_tbptt

        return evaluate_tbptt(model, x, y, window=window, batch_size=rows, return_dict=True,
                              verbose=verbose, targets=targets)
    fields = _fields(x, opts.dtype, value, opts.allow_nonfinite)
    packed = model if kind == "packed" else None
    if packed is None:
        _check_model_inputs(model, fields)
    y_kind, y_data, field = _targets(y, fields, targets)
    weights = _weights_array(sample_weight, len(fields))
    plan = _plan(fields, model, max_tokens=max_tokens, batch_size=batch_size, pad_to=pad_to)
    batches = _Batches(fields, plan, padding, packed)
    y_table = None
    if y_kind == "step":
        y_table = _kernel.table(_kernel.with_pad_row(y_data.values, 0),
                                y_data.offsets[:-1], y_data.lengths)
    slot_axis = packed is not None and not _packed_returns_sequences(model)
    callbacks = _callback_list(model, callbacks, verbose, len(plan))
    forward = _forward_of(model)
    masker = _RowMask()
    model.reset_metrics()
    callbacks.on_test_begin()
    total, count, logs = 0.0, 0, {}
    for b in range(len(plan)):
        callbacks.on_test_batch_begin(b)
        idx, xb = batches.inputs(b)
        y_pred, mask = forward(xb)
        wb = None if weights is None else weights[idx]
        if slot_axis:  # a packed model's one output per slot: slot 0 holds the sequence
            y_pred = y_pred[:, 0]
        if y_kind == "step":
            yb, y_pred, wb = _real_steps(y_table, idx, int(plan.widths[b, field]), padding,
                                         y_pred, mask, wb)
        else:
            yb = y_data[idx]
        held = int(y_pred.shape[0])
        if held:
            loss, logs = _score(model, xb, yb, y_pred, wb, masker)
            total += loss * held
            count += held
        callbacks.on_test_batch_end(b, {"loss": total / max(count, 1)})
    results = {k: float(ops.convert_to_numpy(v)) for k, v in dict(logs).items()}
    results["loss"] = total / count if count else 0.0
    callbacks.on_test_end(results)
    return results


class _RowMask(keras.layers.Layer):
    """A copy of its input carrying the given Keras mask (which rows the metrics count)."""

    def __init__(self) -> None:
        super().__init__(name="seqprep_row_mask", trainable=False)
        self.supports_masking = True

    def call(self, inputs: Any, mask: Any = None) -> Any:
        return ops.copy(inputs)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return mask


def _score(
    model: Any, xb: Any, yb: np.ndarray, y_pred: np.ndarray, wb: np.ndarray | None,
    masker: _RowMask,
) -> tuple[float, dict[str, Any]]:
    """Update the compiled metrics with one batch's rows; return its loss (the mean over the
    rows, weighted as Keras weighs them) and the metrics' results so far.

    The rows are padded to a power of two by repeating the first one with weight 0 (and a
    Keras mask that leaves them out of the metrics), so that backends that compile eager ops
    per shape (JAX) meet a few row counts instead of one per batch. The loss's weights are
    scaled by ``padded / real`` so that ``sum_over_batch_size`` divides by the real rows.
    """
    held = int(y_pred.shape[0])
    size = 1 << (held - 1).bit_length()
    weight = np.ones(held, np.float32) if wb is None else wb.astype(np.float32)
    if size > held:
        fill = np.zeros(size - held, np.int64)
        yb = np.concatenate([yb, yb[fill]])
        y_pred = np.concatenate([y_pred, y_pred[fill]])
        weight = np.concatenate([weight, np.zeros(size - held, np.float32)])
    y_true, y_out = ops.convert_to_tensor(yb), ops.convert_to_tensor(y_pred)
    loss_weight = None if wb is None and size == held else weight * np.float32(size / held)
    loss = model.compute_loss(
        x=xb, y=y_true, y_pred=y_out, training=False,
        sample_weight=None if loss_weight is None else ops.convert_to_tensor(loss_weight),
    )
    if size > held:
        rows = (np.arange(size) < held).reshape((size,) + (1,) * max(0, y_pred.ndim - 2))
        y_out = masker(y_out, mask=ops.convert_to_tensor(rows))
    metric_weight = None if wb is None else ops.convert_to_tensor(weight)
    logs = model.compute_metrics(xb, y_true, y_out, metric_weight)
    return float(ops.convert_to_numpy(loss)), logs


def _real_steps(
    y_table: _kernel.Table, idx: np.ndarray, width: int, padding: str, y_pred: np.ndarray,
    mask: np.ndarray | None, wb: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A batch's real steps (not padding, not masked by the model) as a batch of one-step
    sequences: ``(targets (N, 1, ...), outputs (N, 1, ...), weights (N,) or None)``.

    Keras's streaming metrics average each row over its padded width, so batches of other
    widths would weigh their steps differently; one-step rows weigh every real step alike,
    and Keras's ``sum_over_batch_size`` then divides the loss by the real steps.
    """
    src, real = _kernel.positions(y_table.starts, y_table.lengths, idx, width, padding,
                                  y_table.pad_index)
    if y_pred.ndim < 2 or y_pred.shape[:2] != real.shape:
        raise ValueError(
            f"Argument `y` holds one target per step, but the model's output has shape "
            f"{tuple(y_pred.shape)}, not (batch, steps, ...) = ({real.shape[0]}, "
            f"{real.shape[1]}, ...)\n- Pass one target per sequence (an array (n, ...)) for a "
            "model with one output per sequence."
        )
    if mask is not None:  # steps a masking layer of the model masks are no targets (Keras)
        real = real & mask.reshape(real.shape)
    weights = None
    if wb is not None:
        weights = np.broadcast_to(wb[:, None], real.shape)[real]
    return y_table.x[src[real]][:, None], y_pred[real][:, None], weights
