"""The compiled loss and metrics over real examples and steps: :func:`seqprep.evaluate`.

It runs the batches :func:`seqprep.predict` plans (:mod:`._inference_batches`) through the
model's compiled loss and metrics and accumulates them so that the result is the one-batch
value over all real examples and steps (per-step targets laid out as one-step rows). Over
several ``jax.distributed`` processes every batch is first run on each process's rows and the
real rows' outputs and masks gathered (:func:`._inference_outputs._gather_batches`), then every
process scores the same global batches.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from seqprep._core.options import Options
from seqprep.inputs._padding import Side
from seqprep.inputs._targets import Targets
from seqprep.running._inference_batches import (
    DEFAULT_MAX_TOKENS,
    PadTo,
    _Batches,
    _callback_list,
    _check_model_inputs,
    _fields,
    _filled,
    _forward_of,
    _model_kind,
    _packed_returns_sequences,
    _plan,
    _refuse_processes,
    _run_arguments,
    _stateful_sizes,
    _walk,
)
from seqprep.running._inference_outputs import _gather_batches
from seqprep.running._inference_scoring import (
    _LossSum,
    _Target,
    batch_targets,
    check_reduction,
    output_targets,
    padded_rows,
)
from seqprep.running._keras_private import compiled_losses
from seqprep.running._tbptt_runner import _MaskOutputs

__all__ = ["evaluate"]


def _check_compiled(model: Any) -> None:
    if not getattr(model, "compiled", False):
        raise ValueError(
            f"Argument `model` must be compiled with a loss to be evaluated. Received an "
            f"uncompiled {type(model).__name__} named {getattr(model, 'name', '?')!r}\n"
            "- Call `model.compile(loss=..., metrics=[...])` first."
        )
    regularized = [layer.name for layer in _walk(model)
                   if getattr(layer, "activity_regularizer", None) is not None]
    if regularized:
        raise ValueError(
            f"Argument `model` has layers with an activity regularizer {regularized}: Keras adds "
            "its value on each batch to the loss, a figure that depends on the batch (padding "
            "included), which seqprep.evaluate cannot reproduce.\n- Evaluate a copy of the "
            "model without activity regularizers (the weights are the same)."
        )


def _output_names(model: Any) -> list[str]:
    """The model's output names in the order of its flattened outputs (one unnamed output
    for a model that declares none)."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    names = list(getattr(model, "output_names", None) or []) if outputs else []
    return names if names and len(names) == len(outputs) else ["output"]


def _output_index(path: tuple, structure: Any, names: list[str]) -> int:
    """The flat output a compiled loss's ``path`` names (a path into the outputs, or an
    output name where Keras keyed a list of outputs by name)."""
    paths = [tuple(p) for p, _ in keras.tree.flatten_with_path(structure)]
    if path in paths:
        return paths.index(path)
    if len(path) == 1 and path[0] in names:
        return names.index(path[0])
    raise ValueError(
        f"seqprep.evaluate cannot tell which output of the model the compiled loss at {path!r} "
        f"scores (outputs {names}).\n- Compile with one loss per output, as a list in the "
        "order of the outputs or a dict keyed by output name."
    )


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
    by rows, so its value depends on how the batches are made; this one does not: each
    output's loss is accumulated over the batches to its one-batch value, for Keras's default
    reduction the sum over batches of each batch's loss times the targets it holds (rows, or
    real steps for per-step targets) divided by all targets, i.e. exactly the mean over every
    real example (or step), weighted by ``sample_weight`` as Keras weighs it (``"sum"`` and
    ``"mean_with_sample_weight"`` likewise; see :mod:`._inference_scoring`). Metrics are Keras's
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

    Several outputs (a list or dict, per sequence or per step, e.g. a tagger head and a
    classifier head) take ``y`` and ``sample_weight`` as a matching list or dict; each output
    is scored with its compiled loss, loss weight and metrics, and the result has Keras's keys
    (``loss``, ``<output>_loss``, ``<output>_<metric>``).

    Batches are planned as in :func:`predict` (with fill rows under data parallelism, left
    out of the metrics; over several ``jax.distributed`` processes each runs its rows of
    every batch, the real rows' outputs are gathered, and every process scores all of them:
    the same figures on every process, those of one device); stateful models go to
    :func:`seqprep.evaluate_tbptt`, a :class:`seqprep.LengthEnsemble` to its own
    ``evaluate``. Encoder-decoder models are scored teacher-forced by passing a dict ``x``
    (``{"encoder": sources, "decoder": decoder_inputs}``) and the decoder targets as ``y``;
    per-step targets follow the field of ``x`` whose lengths they have.

    Args:
        model: a compiled Keras model (one or several outputs; losses of reduction
            ``"sum_over_batch_size"``, ``"mean"``, ``"sum"``, ``"mean_with_sample_weight"``,
            or ``None`` on one per-sequence output), or a :class:`seqprep.LengthEnsemble`.
        x: a sequence collection, or a dict (or tuple) of them, as in :func:`predict`.
        y: one target per sequence (an array ``(n, ...)``) or one per step (a list of
            ``(T_i, ...)`` arrays); see :func:`seqprep.resolve_targets`. Several outputs: a
            list (one entry per output) or a dict keyed by output name.
        sample_weight: optional weights: ``(n,)``, one per sequence (applied to every step of
            per-step targets), or one per step (a list of 1-D arrays of the targets'
            lengths). Several outputs: one of those for all, or a list or dict per output.
        batch_size, max_tokens, padding, value, pad_to, window: as in :func:`predict`.
        options: :class:`seqprep.Options`; read: ``dtype``, ``allow_nonfinite`` and
            ``data_parallel``, as in :func:`predict`.
        **kwargs: Keras's own ``evaluate`` arguments ``verbose`` and ``callbacks`` (which get
            ``on_test_*`` calls), as in :func:`predict`. Any other key is refused.
        targets: ``"auto"``, ``"sequence"`` or ``"step"`` (see :func:`seqprep.resolve_targets`).

    Returns:
        A dict ``{"loss": ..., <metric name>: ...}`` of floats, as
        ``model.evaluate(..., return_dict=True)``.

    Raises:
        ValueError: an uncompiled model, a loss whose one-batch value depends on padding
            (``reduction=None`` on per-step targets or with several losses), ``y`` or
            ``sample_weight`` of another count than ``x`` or the outputs, per-step weights
            of other lengths than the targets, ``x`` that does not match the model's inputs,
            or bad options (as in :func:`predict`).
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
        _refuse_processes(opts.data_parallel, "evaluate")
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
    names = _output_names(model)
    outputs = output_targets(y, sample_weight, fields, targets, names)
    plan = _plan(fields, model, max_tokens=max_tokens, batch_size=batch_size, pad_to=pad_to)
    unfilled = fields
    fields, filled, layout = _filled(fields, plan, opts.data_parallel, "evaluate")
    batches = _Batches(fields, filled, padding, packed, layout)
    forward = _forward_of(model)
    gathered = None
    if batches.processes > 1:  # every batch's outputs, all processes' real rows, in plan order
        gathered, structure = _gathered_forward(forward, batches, plan)
        batches = _Batches(unfilled, plan, padding, packed)  # x as one device has it
    slot_axis = packed is not None and not _packed_returns_sequences(model)
    callbacks = _callback_list(model, callbacks, verbose, len(batches))
    scorer: _Scorer | None = None
    model.reset_metrics()
    callbacks.on_test_begin()
    for b in range(len(batches)):
        callbacks.on_test_batch_begin(b)
        idx, xb = batches.inputs(b)
        if gathered is None:
            preds, masks, structure = forward(xb)
            real = batches.real_rows(b)  # fill rows (data parallelism) are no examples
            idx, preds = idx[:real], [p[:real] for p in preds]
            masks = [None if m is None else m[:real] for m in masks]
        else:
            preds, masks = gathered[b]
        if slot_axis:  # a packed model's one output per slot: slot 0 holds the sequence
            preds = [p[:, 0] for p in preds]
        if scorer is None:
            scorer = _Scorer(model, structure, names, outputs)
        widths = [int(batches.plan.widths[b, t.field]) for t in outputs]
        scorer.add(xb, [batch_targets(t, idx, w, padding, p, m)
                        for t, w, p, m in zip(outputs, widths, preds, masks, strict=True)])
        callbacks.on_test_batch_end(b, {"loss": scorer.loss()})
    results = scorer.results()
    callbacks.on_test_end(results)
    return results


def _gathered_forward(
    forward: Any, batches: _Batches, plan: Any,
) -> tuple[list[tuple[list[np.ndarray], list[np.ndarray | None]]], Any]:
    """Under a distribution over several processes: every batch run on this process's rows,
    then every global batch's outputs and masks (all processes' real rows, in the order of
    ``plan``, the global plan without fill rows) on every process, and the outputs' structure.
    The scoring then runs on every process over the same outputs: the same figures everywhere,
    those of one device."""
    local, idxs, structure, present = [], [], None, None
    for b in range(len(batches)):
        idx, xb = batches.inputs(b)
        preds, masks, structure = forward(xb)
        present = [m is not None for m in masks]
        real = batches.real_rows(b)
        local.append([p[:real] for p in preds] + [m[:real] for m in masks if m is not None])
        idxs.append(idx[:real])
    out = []
    for leaves in _gather_batches(local, idxs, plan, batches.processes):
        preds, rest = leaves[: len(present)], iter(leaves[len(present):])
        out.append((preds, [next(rest) if p else None for p in present]))
    return out, structure


class _Scorer:
    """The compiled losses and metrics of one evaluation, fed batch after batch."""

    def __init__(self, model: Any, structure: Any, names: list[str],
                 outputs: list[_Target]) -> None:
        count = len(keras.tree.flatten(structure))
        if count != len(outputs):
            raise ValueError(
                f"Argument `y` holds targets for {len(outputs)} output(s), but the model "
                f"returns {count}.\n- Pass a list with one entry per output, or a dict "
                "keyed by output name."
            )
        self.model, self.structure, self.outputs = model, structure, outputs
        self.names = names if len(names) == count else [str(i) for i in range(count)]
        self.masker = _MaskOutputs()  # which rows the metrics count, as a Keras mask
        self.weighted = any(t.weights is not None or t.step_weights is not None
                            for t in outputs)
        self.losses: list[tuple[int, Any, float, str, _LossSum]] | None = None
        self.logs: dict[str, Any] = {}

    def _compiled_losses(self, y_true: Any, y_pred: Any) -> list:
        entries = compiled_losses(self.model, y_true, y_pred)
        out = []
        for path, loss, loss_weight, name in entries:
            k = _output_index(path, self.structure, self.names)
            reduction = check_reduction(loss, name, self.outputs[k], len(entries))
            out.append((k, loss, 1.0 if loss_weight is None else float(loss_weight), name,
                        _LossSum(reduction)))
        return out

    def add(self, xb: Any, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> None:
        """Score one batch: per output, its targets, outputs and weights as rows."""
        y_true, y_pred, weights, held = [], [], [], []
        for yb, pb, wb in rows:
            n = int(pb.shape[0])
            yb, pb = padded_rows(yb, pb, n)
            y_true.append(yb)
            y_pred.append(pb)
            weights.append(wb)
            held.append(n)
        pack = lambda leaves: keras.tree.pack_sequence_as(self.structure, leaves)  # noqa: E731
        tensors_true = [ops.convert_to_tensor(t) for t in y_true]
        tensors_pred = [ops.convert_to_tensor(p) for p in y_pred]
        if self.losses is None:
            self.losses = self._compiled_losses(pack(tensors_true), pack(tensors_pred))
        for k, loss, _, _, total in self.losses:
            if not held[k]:
                continue
            w = total.weights(weights[k], held[k], int(y_pred[k].shape[0]))
            value = loss(tensors_true[k], tensors_pred[k],
                         None if w is None else ops.convert_to_tensor(w))
            total.add(value, w, held[k])
        masked, metric_weights = [], []
        for k, p in enumerate(tensors_pred):
            size = int(y_pred[k].shape[0])
            w = np.zeros(size, np.float32)
            w[: held[k]] = 1.0 if weights[k] is None else weights[k]
            metric_weights.append(ops.convert_to_tensor(w))
            if size > held[k]:  # rows added for the shape: masked out of the metrics
                rows_kept = (np.arange(size) < held[k]).reshape(
                    (size,) + (1,) * max(0, y_pred[k].ndim - 2))
                p = self.masker(p, mask=ops.convert_to_tensor(rows_kept))
            masked.append(p)
        self.logs = self.model.compute_metrics(
            xb, pack(tensors_true), pack(masked),
            pack(metric_weights) if self.weighted else None)

    def loss(self) -> float:
        """The total loss so far: each output's, times its loss weight, summed."""
        return sum(w * total.result() for _, _, w, _, total in self.losses or [])

    def results(self) -> dict[str, float]:
        results = {k: float(ops.convert_to_numpy(v)) for k, v in dict(self.logs).items()}
        results["loss"] = self.loss() + _regularization(self.model)
        if self.losses and len(self.losses) > 1:  # Keras logs each output's unweighted loss
            for _, _, _, name, total in self.losses:
                results[f"{name}_loss"] = total.result()
        return results


def _regularization(model: Any) -> float:
    """The weight regularization Keras adds to the loss: each trainable variable's
    regularizer on its value (as ``model.losses`` computes it)."""
    return float(sum(float(ops.convert_to_numpy(v.regularizer(v)))
                     for v in model.trainable_weights
                     if getattr(v, "regularizer", None) is not None))
