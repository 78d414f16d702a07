"""The TBPTT runner: the model's checks and the window math, written once for every backend.

A :class:`_Runner` is a model checked for TBPTT (stateful, forward in time, built for the batch
size and window, per-step outputs or a plain classifier) and the math of one window in
``keras.ops``: zero the state of the rows that start a sequence, run the model with the padding
mask, put back the state of rows that were all padding, pick the outputs the targets refer to,
and weigh the loss and metrics so that padding counts for nothing. :class:`_DenseRunner` runs a
dense window in one call of the model's dense twin (:mod:`seqprep.running._tbptt_twin`).

Compiling a window and taking its gradient is the only backend-specific part; it lives in one
file per backend (``_tbptt_step_tensorflow``, ``_tbptt_step_jax``, ``_tbptt_step_torch``), and
:func:`_steps_for` picks the one of ``keras.backend.backend()``.
"""

from __future__ import annotations

import math
import warnings
import weakref
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from seqprep._core.ragged import Ragged
from seqprep.inputs._masking import _step_weights, _WeightOps
from seqprep.inputs._stage_fields import pack
from seqprep.planning._windows import DenseTBPTTPlan
from seqprep.running._keras_private import compiled_identity, keras_mask
from seqprep.running._tbptt_twin import SharedResets, check_no_dropout, dense_twin, unsupported

__all__ = ["InputSpec", "_DenseRunner", "_Runner", "_runner_and_plans", "_runner_for",
           "input_spec"]


class InputSpec(NamedTuple):
    """What a model's windows are made of: ``x``'s structure (``"single"``, or the ``"dict"``
    / ``"tuple"`` of fields and their keys) and each field's dtype and step shape."""

    kind: str
    keys: tuple[Any, ...]
    dtypes: tuple[np.dtype, ...]
    step_shapes: tuple[tuple[int, ...], ...]

    def pack(self, arrays: list[Any]) -> Any:
        return arrays[0] if self.kind == "single" else pack(self.kind, self.keys, arrays)

    def shown(self) -> Any:
        """The step shapes, for messages: one, or one per field."""
        return self.pack(list(self.step_shapes))


def input_spec(data: Any) -> InputSpec:
    """The :class:`InputSpec` of TBPTT's ``x``: a :class:`Ragged`, or the fields of one time
    axis (``seqprep.running._tbptt_data._Fields``: ``kind``, ``keys``, ``rags``)."""
    if isinstance(data, Ragged):
        return InputSpec("single", (None,), (data.values.dtype,), (data.step_shape,))
    return InputSpec(data.kind, tuple(data.keys), tuple(r.values.dtype for r in data.rags),
                     tuple(r.step_shape for r in data.rags))


def _how_to_build(batch_size: int, window: int) -> str:
    return (
        "- Build the model with a fixed batch size, stateful recurrent layers and per-step "
        f"outputs, e.g. `seqprep.models.reference_rnn(..., stateful=True, "
        f"return_sequences=True, batch_size={batch_size})`, or "
        f"`inputs = keras.Input(batch_shape=({batch_size}, {window}, d))` followed by "
        "`keras.layers.LSTM(units, stateful=True, return_sequences=True)(inputs)`."
    )


def _walk_layers(layer: Any) -> list[Any]:
    """Every layer nested in ``layer`` (models, wrappers), depth first, without duplicates."""
    found: list[Any] = []
    seen: set[int] = set()
    stack = list(reversed(getattr(layer, "layers", [])))
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        found.append(item)
        children = list(getattr(item, "layers", []) or [])
        if isinstance(item, keras.layers.Bidirectional):
            children = [item.forward_layer, item.backward_layer]
        elif isinstance(item, keras.layers.Wrapper):
            children = [item.layer]
        stack.extend(reversed(children))
    return found


class _Runner:
    """Runs a plan on one model: per-row state resets and compiled per-window steps.

    The window math (resets, masking, picking the outputs the targets refer to, the loss) is
    written once with ``keras.ops`` and variable assignments; :class:`_TFSteps`,
    :class:`_JAXSteps` and :class:`_TorchSteps` only compile it and take its gradient the way
    each backend does.
    """

    def __init__(self, model: Any, *, window: int, batch_size: int, data: Any) -> None:
        if not isinstance(model, keras.Model):
            raise TypeError(
                "Argument `model` must be a `keras.Model`. Received: "
                f"model of type {type(model).__name__}\n" + _how_to_build(batch_size, window)
            )
        self.model = model
        self.window = window
        self.batch_size = batch_size
        self.spec = input_spec(data)  # data: a Ragged, or _tbptt_data._Fields
        self.dtype, self.step_shape = self.spec.dtypes[0], self.spec.step_shapes[0]
        self._check_input_count()
        layers = _walk_layers(model)
        rnns = self._check_layers(layers)
        self._layers, self._rnns = layers, rnns
        self.net = model  # what a window is run through; the dense twin in _DenseRunner
        self._dense: _DenseRunner | None = None
        self._dense_tried = False
        # A plain classifier: the last recurrent layer returns one output per window (the
        # output at the row's last real step, as the padding mask holds the state over the
        # padded tail), so the window where a sequence ends yields that sequence's output.
        self.per_window = not rnns[-1].return_sequences
        self._check_input_shape()
        if not model.built or any(layer.states is None for layer in rnns):
            model(self.zeros_batch(), training=False)
        self.state_variables = [v for layer in rnns for v in keras.tree.flatten(layer.states)]
        built_for = {int(v.shape[0]) for v in self.state_variables}
        if built_for != {batch_size}:
            raise ValueError(
                f"Argument `batch_size` must be the batch size the model was built for. "
                f"Received: batch_size={batch_size}, but the model's stateful layers hold "
                f"states for batch size {sorted(built_for)}\n- If you meant that batch size, "
                f"pass `batch_size={min(built_for)}`; otherwise rebuild the model.\n"
                + _how_to_build(batch_size, window)
            )
        self.steps = _steps_for(keras.backend.backend(), self)
        self._masker = _MaskOutputs()
        self.prepared: set[bool] = set()  # kinds of target whose loss/metrics are built

    def _check_layers(self, layers: list[Any]) -> list[Any]:
        """The model's recurrent layers, after checking they can carry state across windows."""
        batch_size, window = self.batch_size, self.window
        backwards = [
            layer.name
            for layer in layers
            if isinstance(layer, keras.layers.Bidirectional)
            or (isinstance(layer, keras.layers.RNN) and layer.go_backwards)
        ]
        if backwards:
            raise ValueError(
                f"Argument `model` has layers that run backwards in time: {backwards}. TBPTT "
                "carries state forward from one window to the next, so a backward RNN would "
                "only ever see one window.\n- If you need a bidirectional model, train it on "
                "whole (bucketed) sequences with `seqprep.fit_per_length` instead."
            )
        rnns = [layer for layer in layers if isinstance(layer, keras.layers.RNN)]
        if not rnns:
            raise ValueError(
                "Argument `model` has no recurrent layer, so nothing carries over from one "
                "window to the next.\n" + _how_to_build(batch_size, window)
            )
        stateless = [layer.name for layer in rnns if not layer.stateful]
        if stateless:
            raise ValueError(
                f"Argument `model` must be stateful: its recurrent layers {stateless} have "
                "`stateful=False`, so they would forget everything between windows.\n"
                + _how_to_build(batch_size, window)
            )
        return rnns

    def _check_input_count(self) -> None:
        inputs = getattr(self.model, "inputs", None)
        fields = len(self.spec.keys)
        if not inputs or len(inputs) == fields:
            return
        if fields == 1:
            raise ValueError(
                "Argument `model` must take exactly one input for TBPTT, or `x` must be a "
                f"dict of fields, one per input. Received a model with {len(inputs)} inputs "
                f"{[i.name for i in inputs]} and one sequence collection\n- Pass `x` as a "
                "dict of fields named after the model's inputs, every field with the same "
                "lengths (the windows slide over all of them together)."
            )
        raise ValueError(
            f"Argument `x` has {fields} fields {list(self.spec.keys)}, but the model takes "
            f"{len(inputs)} input(s) {[i.name for i in inputs]}.\n- Pass one field per model "
            "input, named after it."
        )

    def _model_inputs(self) -> list[tuple[str, Any]]:
        """``(label, model input)`` of each field of ``x``, in the fields' order."""
        inputs = list(self.model.inputs)
        if self.spec.kind != "dict":
            labels = ["x"] if self.spec.kind == "single" else [f"x[{k}]" for k in self.spec.keys]
            return list(zip(labels, inputs, strict=True))
        by_name = {i.name: i for i in inputs}
        missing = [k for k in self.spec.keys if k not in by_name]
        if missing:
            raise ValueError(
                f"Argument `x` has fields {list(self.spec.keys)}, but the model's inputs are "
                f"named {sorted(by_name)}: no input for {missing}.\n- Name the fields after "
                "the model's inputs (`keras.Input(..., name=...)`)."
            )
        return [(f"x[{k!r}]", by_name[k]) for k in self.spec.keys]

    def _check_input_shape(self) -> None:
        if not getattr(self.model, "inputs", None):
            return
        for (label, model_input), step_shape in zip(self._model_inputs(),
                                                    self.spec.step_shapes, strict=True):
            self._check_one_input(label, tuple(model_input.shape), step_shape)

    def _check_one_input(self, label: str, shape: tuple[Any, ...],
                         step_shape: tuple[int, ...]) -> None:
        if shape[0] is not None and shape[0] != self.batch_size:
            raise ValueError(
                f"Argument `batch_size` must be the batch size the model was built for. "
                f"Received: batch_size={self.batch_size}, but the model's input has batch "
                f"shape {shape}\n" + _how_to_build(self.batch_size, self.window)
            )
        if len(shape) < 2 or (shape[1] is not None and shape[1] != self.window):
            raise ValueError(
                f"Argument `window` must match the time axis of the model's input. Received: "
                f"window={self.window}, but the model's input has batch shape {shape}\n"
                "- If the model should accept any window, give its input a time axis of "
                "`None`: `keras.Input(batch_shape=(batch_size, None, d))`.\n"
                + _how_to_build(self.batch_size, self.window)
            )
        if tuple(shape[2:]) != tuple(step_shape) and None not in shape[2:]:
            raise ValueError(
                f"Argument `{label}` has steps of shape {tuple(step_shape)}, but the model "
                f"expects steps of shape {tuple(shape[2:])} (input batch shape {shape}).\n"
                "- If every step is one number, give the sequences a feature axis: "
                "`[np.asarray(s).reshape(-1, 1) for s in x]`."
            )

    def zeros_batch(self) -> Any:
        """A window of zeros in the structure of ``x``."""
        return self.spec.pack([
            np.zeros((self.batch_size, self.window, *shape), dtype=dtype)
            for dtype, shape in zip(self.spec.dtypes, self.spec.step_shapes, strict=True)])

    def dense_runner(self) -> _DenseRunner | None:
        """The runner of dense windows in one call each, or None (then warns why).

        Built once: the dense twin of the model (see :mod:`seqprep.running._tbptt_twin`).
        """
        if not self._dense_tried:
            check_no_dropout(self._rnns)
            self._dense_tried = True
            reason = unsupported(self.model, self._layers, self._rnns)
            if reason is None:
                shared = SharedResets(self.batch_size, self.window)
                twin, reason = dense_twin(self.model, self._rnns, shared)
            if reason is None:
                dense = _DenseRunner(self, twin, shared)
                reason = dense.check_twin(self)
            if reason is None:
                self._dense = dense
            else:
                warnings.warn(
                    f"dense=True runs each window as several model calls (exact, but not "
                    f"faster than dense=False): {reason}.", stacklevel=4,
                )
        return self._dense

    def check_output(self, y_pred: Any) -> None:
        shape = tuple(y_pred.shape)
        if self.per_window:
            if len(shape) < 1 or shape[0] != self.batch_size:
                raise ValueError(
                    "Argument `model` must return one output per row, of shape (batch_size, "
                    f"...) = ({self.batch_size}, ...). Received outputs of shape {shape}\n"
                    + _how_to_build(self.batch_size, self.window)
                )
            return
        self._check_per_step(shape)

    def _check_per_step(self, shape: tuple[Any, ...]) -> None:
        if len(shape) < 3 or shape[:2] != (self.batch_size, self.window):
            raise ValueError(
                "Argument `model` must return one output per time step, of shape "
                f"(batch_size, window, ...) = ({self.batch_size}, {self.window}, ...). "
                f"Received outputs of shape {shape}\n- If the last recurrent layer has "
                "`return_sequences=True`, every layer after it must keep the time axis.\n"
                + _how_to_build(self.batch_size, self.window)
            )

    def check_targets(self, many_to_one: bool, name: str = "y") -> None:
        if self.per_window and not many_to_one:
            raise ValueError(
                f"Argument `{name}` holds one target per step (many-to-many), but the model "
                "returns one output per sequence: its last recurrent layer has "
                "`return_sequences=False`.\n- If you have one target per sequence, pass "
                f"`{name}` as an array of shape (n, ...); for per-step targets, build the "
                "model with `return_sequences=True`."
            )

    # -- the window math, backend-neutral; run inside each backend's compiled step ----------
    def _reset_rows(self, reset: Any) -> list[Any]:
        """Zero the state of rows where ``reset``; return the states after the reset."""
        kept = []
        for v in self.state_variables:
            rows = ops.reshape(reset, (-1,) + (1,) * (len(v.shape) - 1))
            value = ops.where(rows, ops.zeros_like(v.value), v.value)
            v.assign(value)
            kept.append(value)
        return kept

    def _restore_rows(self, idle: Any, before: list[Any]) -> None:
        """Put back the state of rows that were all padding in this window."""
        for v, old in zip(self.state_variables, before, strict=True):
            rows = ops.reshape(idle, (-1,) + (1,) * (len(v.shape) - 1))
            v.assign(ops.where(rows, old, v.value))

    def reset_all(self) -> None:
        for v in self.state_variables:
            v.assign(ops.zeros(v.shape, dtype=v.dtype))

    def select(self, y_pred: Any, pick: Any, many_to_one: bool) -> Any:
        """The outputs the targets refer to, as a new tensor without a Keras mask.

        Keras losses would fold the mask attached to ``y_pred`` into the weights a second time
        (and it marks idle rows as real); the weights passed with the targets already say
        which outputs count.
        """
        if many_to_one and not self.per_window:
            hit = ops.arange(self.window, dtype="int32")[None, :] == ops.cast(
                pick, "int32"
            )[:, None]
            hit = ops.reshape(hit, tuple(hit.shape) + (1,) * (len(y_pred.shape) - 2))
            return ops.sum(ops.where(hit, y_pred, ops.zeros_like(y_pred)), axis=1)
        return ops.copy(y_pred)

    def _call(self, x: Any, mask: Any, training: bool) -> Any:
        with warnings.catch_warnings():
            # Functional/Sequential wrappers warn that they "do not support masking" although
            # they pass the mask on to their layers; the recurrent layers do use it.
            warnings.filterwarnings("ignore", message=".*was passed an input with a mask")
            if mask is not None and self.spec.kind != "single":  # one mask per field
                mask = self.spec.pack([mask] * len(self.spec.keys))
            return self.net(x, training=training, mask=mask)

    def run_window(self, x: Any, mask: Any, reset: Any, idle: Any, training: bool) -> Any:
        """One window: reset rows, run the model, keep idle rows' state; per-step outputs."""
        before = self._reset_rows(reset)
        y_pred = self._call(x, mask, training=training)
        self._restore_rows(idle, before)
        return y_pred

    def window_loss(
        self, feed: tuple[Any, ...], y: Any, weight: Any, pick: Any, *, training: bool,
        many_to_one: bool,
    ) -> tuple[Any, Any, Any, Any]:
        """``(loss, scaled loss, picked outputs, weights)`` of one window; updates the carried
        state. The weights are ``weight`` with Keras's rule for per-step targets applied: a
        step whose output a masking layer masked (``Masking``, ``Embedding(mask_zero=True)``)
        is no target, as in ``model.fit`` on whole sequences."""
        x, mask, reset, idle = feed
        y_pred = self.run_window(x, mask, reset, idle, training)
        weight = ops.convert_to_tensor(weight)
        if not many_to_one:
            weight = _unmasked(y_pred, weight)
        picked = self.select(y_pred, pick, many_to_one)
        loss = self.model.compute_loss(x, y, picked, _mean_weights(weight), training=training)
        scaled = self.model.optimizer.scale_loss(loss) if training else loss
        return loss, scaled, picked, weight

    def window_metrics(self, x: Any, y: Any, picked: Any, weight: Any) -> dict[str, Any]:
        """Update the compiled metrics with the window's real targets only.

        Keras applies ``sample_weight`` to ``weighted_metrics`` only; plain ``metrics`` would
        count padding and rows without a target. A Keras mask on the outputs reaches both.
        """
        weight = ops.convert_to_tensor(weight)
        picked = self._masker(picked, mask=ops.greater(weight, 0))
        logs = dict(self.model.compute_metrics(x, y, picked, weight))
        # How many targets the window's loss averaged over (the epoch's mean weighs by it).
        logs[_TARGETS] = ops.sum(ops.cast(ops.greater(weight, 0), "float32"))
        return logs

    # -- compiled steps (one per backend) ---------------------------------------------------
    def forward(self, feed: tuple[np.ndarray, ...], *, training: bool = False) -> Any:
        """Run one window without gradients; returns the per-step outputs.

        ``training=True`` (windows of ``fit_tbptt`` that hold no target) runs the layers in
        training mode, so dropout acts on the carried state as in the windows that learn.
        """
        return self.steps.forward(feed, training)

    def train(self, feed, y, weight, pick, *, many_to_one: bool) -> tuple[Any, dict[str, Any]]:
        """One optimizer step on one window; returns the window's loss and metric results."""
        return self.steps.train(feed, y, weight, pick, many_to_one)

    def test(self, feed, y, weight, pick, *, many_to_one: bool) -> tuple[Any, dict[str, Any]]:
        """Loss and metrics of one window, without updating weights."""
        return self.steps.test(feed, y, weight, pick, many_to_one)


class _DenseRunner(_Runner):
    """Runs a dense window in one call of the model's dense twin.

    The twin resets each row's state at the steps flagged in the window's ``reset`` (B, W)
    (assigned to the twin's shared reset flags inside the compiled step) and holds it over
    padding, so there is nothing to reset or restore around the call. Its outputs are per step
    even for a plain classifier; the windows lay per-sequence targets at each sequence's last
    step, so the loss and metrics read per-step outputs only.
    """

    def __init__(self, base: _Runner, twin: keras.Model, shared: SharedResets) -> None:
        for name in ("model", "window", "batch_size", "spec", "dtype", "step_shape",
                     "per_window"):
            setattr(self, name, getattr(base, name))
        self.net = twin
        self.resets = shared.resets
        # The flags ride with the carried state, so the JAX step maps and returns them too.
        self.state_variables = [*base.state_variables, shared.resets]
        self.steps = _steps_for(keras.backend.backend(), self)
        self._masker = base._masker
        self.prepared = set()

    def check_twin(self, base: _Runner) -> str | None:
        """Why the twin's outputs are not the model's outputs per step (None if they are)."""
        saved = [ops.copy(v.value) for v in self.state_variables]
        x = keras.tree.map_structure(ops.convert_to_tensor, self.zeros_batch())
        got = tuple(self._call(x, None, training=False).shape)
        want = tuple(base._call(x, None, training=False).shape)
        for v, value in zip(self.state_variables, saved, strict=True):
            v.assign(value)
        if self.per_window:
            want = (want[0], self.window, *want[1:])
        if got != want:
            return f"its dense twin returns outputs of shape {got}, not {want}"
        return None

    def check_output(self, y_pred: Any) -> None:
        self._check_per_step(tuple(y_pred.shape))

    def run_window(self, x: Any, mask: Any, reset: Any, idle: Any, training: bool) -> Any:
        self.resets.assign(ops.cast(reset, "float32"))
        return self._call(x, mask, training=training)

    def select(self, y_pred: Any, pick: Any, many_to_one: bool) -> Any:
        return ops.copy(y_pred)


class _MaskOutputs(keras.layers.Layer):
    """Returns a copy of its input carrying the ``mask`` it is called with (as a Keras mask)."""

    def __init__(self) -> None:
        super().__init__(name="tbptt_mask_outputs", trainable=False)
        self.supports_masking = True

    def call(self, inputs: Any, mask: Any = None) -> Any:
        return ops.copy(inputs)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return mask


def _steps_for(backend: str, runner: _Runner) -> Any:
    """The compiled window steps of ``backend`` for ``runner`` (its file is imported here, on
    first use, so that a backend's own library is imported only on that backend)."""
    if backend == "tensorflow":
        from seqprep.running._tbptt_step_tensorflow import _TFSteps as steps
    elif backend == "jax":
        from seqprep.running._tbptt_step_jax import _JAXSteps as steps
    elif backend == "torch":
        from seqprep.running._tbptt_step_torch import _TorchSteps as steps
    else:
        raise ValueError(
            f"TBPTT runs on the TensorFlow, JAX and PyTorch backends. Received: Keras backend "
            f"{backend!r}\n- If you can, set `KERAS_BACKEND` to 'tensorflow', 'jax' or 'torch'."
        )
    return steps(runner)


# Compiled per-window steps are traced once per model and layout and reused by later calls
# (fit, then evaluate, then predict); a new optimizer, loss or metrics (a new `compile`) or a
# different window, batch size or input dtype makes a new runner.
_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_RUNNERS_PER_MODEL = 4  # e.g. fit at one window, predict at another, without recompiling


def _runner_for(model: Any, *, window: int, batch_size: int, data: Any) -> _Runner:
    if not isinstance(model, keras.Model):  # _Runner refuses it, naming what it got
        return _Runner(model, window=window, batch_size=batch_size, data=data)
    try:
        cache = _RUNNERS.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no caching
        return _Runner(model, window=window, batch_size=batch_size, data=data)
    key = (
        window,
        batch_size,
        input_spec(data),
        id(getattr(model, "optimizer", None)),
        *compiled_identity(model),  # a new compile()
    )
    if key not in cache:
        for stale in [k for k in cache if k[3:] != key[3:]]:  # a new compile()
            del cache[stale]
        while len(cache) >= _RUNNERS_PER_MODEL:
            del cache[next(iter(cache))]
        cache[key] = _Runner(model, window=window, batch_size=batch_size, data=data)
    return cache[key]


_TARGETS = "_seqprep_targets"  # a key of the step logs, read and removed by _run_epoch


def _unmasked(y_pred: Any, weight: Any) -> Any:
    """``weight`` (B, W) with 0 where the Keras mask of the per-step outputs is False."""
    out_mask = keras_mask(y_pred)
    if out_mask is None:
        return weight
    return weight * ops.cast(ops.reshape(out_mask, ops.shape(weight)), weight.dtype)


def _mean_weights(weight: Any) -> Any:
    """Scale 0/1 weights so Keras's ``sum_over_batch_size`` gives the mean over real targets."""
    return _step_weights(weight, mean=True, ops=_KERAS_WEIGHT_OPS)


# The per-step weight formula (seqprep.inputs._masking._step_weights) spelled in keras.ops, so
# that it runs inside the compiled TBPTT step on every backend.
_KERAS_WEIGHT_OPS = _WeightOps(
    as_float32=lambda a: ops.cast(a, "float32"),
    count=lambda a: ops.cast(math.prod(a.shape), "float32"),
    total=ops.sum,
    divide_no_nan=ops.divide_no_nan,
)



def _runner_and_plans(runner: _Runner, plans: list[Any]) -> tuple[_Runner, list[Any]]:
    """Who runs ``plans``: dense plans run one call per window on the dense twin when it can
    be built, else as the calls of :meth:`DenseTBPTTPlan.as_calls` on the model."""
    if not isinstance(plans[0], DenseTBPTTPlan):
        return runner, plans
    dense = runner.dense_runner()
    if dense is not None:
        return dense, plans
    return runner, [plan.as_calls() for plan in plans]
