"""Truncated backpropagation through time (TBPTT) over long variable-length sequences.

Long sequences are cut into windows of ``window`` steps and fed, window after window, to a
*stateful* Keras RNN whose state carries over from one window to the next; gradients flow back at
most ``window`` steps. :func:`plan_tbptt` (numpy only) decides the layout: sequences are packed one
after another into ``batch_size`` rows, every sequence starts at a window boundary. The executors
here run that plan:

* before each window, the state of exactly the rows that start a new sequence is zeroed
  (``keras.ops.where`` on the RNN layers' state variables; ``layer.reset_state()`` would zero
  all rows);
* a row that is all padding in a window (it has run out of sequences) keeps its state unchanged;
* the model is called as ``model(x, mask=mask)`` with the padding mask, so recurrent layers hold
  their state over padded steps: after each window, every row's state is the state at its last
  real step. Padding only ever follows a sequence's last real step, and the row is reset before
  its next sequence, so even a layer that drops the mask cannot leak padding into a real output
  of a causal model. Losses and metrics are weighted so that padding counts for nothing.

Dense plans (``dense=True``) run one call per window on the model's dense twin
(:mod:`seqprep.running._tbptt_twin`), which resets each row's state at the steps where its sequences
start, inside the call; see :func:`fit_tbptt`.

The window math is ``keras.ops`` and variable assignments, so it runs on TensorFlow, JAX and
PyTorch; only compiling a window step and taking its gradient is done per backend
(``tf.function`` + ``GradientTape``; ``jax.jit`` + ``keras.StatelessScope`` +
``jax.value_and_grad``; eager PyTorch + ``torch.autograd.grad``).

How the model must be built:
    One input of batch shape ``(batch_size, window, *step_shape)`` (or ``None`` for the time
    axis), one output **per time step** (the last recurrent layer has
    ``return_sequences=True``) or, for many-to-one targets, a plain classifier whose last
    recurrent layer has ``return_sequences=False`` (its output for a window is the one at the
    row's last real step), every recurrent layer ``stateful=True`` and running forward in
    time (no ``Bidirectional``, no ``go_backwards``). The model must be causal: the output at
    step ``t`` may depend on steps up to ``t`` only (recurrent, dense and ``TimeDistributed``
    layers are; attention over the window or a centred ``Conv1D`` are not). Compile it with an
    optimizer and a loss as usual; for example::

        inputs = keras.Input(batch_shape=(batch_size, window, d))
        h = keras.layers.LSTM(32, stateful=True, return_sequences=True)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1)(h))
        model.compile(optimizer="adam", loss="mse")

Targets:
    Many-to-one: ``y`` of shape ``(n, ...)``; the loss of sequence ``i`` uses the output at its
    last real step and is computed in the window where that step falls (so with ``window`` smaller
    than a sequence, the gradient reaches only its last ``window`` steps; earlier steps still act
    through the carried state). Many-to-many: ``y`` a list of ``(T_i, ...)`` arrays, one target
    per step; the loss averages over real steps.

Loss:
    ``model.compute_loss`` (the loss given to ``compile``, plus regularisation losses) with
    sample weights scaled so that each window's loss is the mean over the targets it holds
    (sequences ending in it, or real steps), whatever the batch size and padding. The optimizer
    is ``model.optimizer``. One optimizer step per window that holds a target.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import keras
import numpy as np
from keras import ops

from seqprep._core.casts import check_cast
from seqprep._core.checks import (
    check_bool,
    check_choice,
    check_finite_features,
    check_finite_labels,
    check_int,
)
from seqprep._core.ragged import Ragged, as_ragged
from seqprep.inputs import _kernel
from seqprep.inputs._masking import _step_weights, _WeightOps
from seqprep.inputs._targets import Targets, resolve_targets
from seqprep.planning._windows import (
    ORDERS,
    DenseTBPTTPlan,
    TBPTTPlan,
    WindowOrder,
    plan_tbptt,
)
from seqprep.running._callbacks import refuse_backup_in
from seqprep.running._keras_private import keras_mask
from seqprep.running._tbptt_twin import SharedResets, check_no_dropout, dense_twin, unsupported

__all__ = [
    "fit_tbptt", "predict_tbptt", "evaluate_tbptt"
]


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

    def __init__(self, model: Any, *, window: int, batch_size: int, data: Ragged) -> None:
        if not isinstance(model, keras.Model):
            raise TypeError(
                "Argument `model` must be a `keras.Model`. Received: "
                f"model of type {type(model).__name__}\n" + _how_to_build(batch_size, window)
            )
        self.model = model
        self.window = window
        self.batch_size = batch_size
        self.dtype = data.values.dtype
        self.step_shape = data.step_shape
        if getattr(model, "inputs", None) and len(model.inputs) != 1:
            raise ValueError(
                "Argument `model` must take exactly one input for TBPTT. Received a model with "
                f"{len(model.inputs)} inputs"
            )
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

    def _check_input_shape(self) -> None:
        inputs = getattr(self.model, "inputs", None)
        if not inputs:
            return
        shape = tuple(inputs[0].shape)
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
        if tuple(shape[2:]) != tuple(self.step_shape) and None not in shape[2:]:
            raise ValueError(
                f"Argument `x` has steps of shape {tuple(self.step_shape)}, but the model "
                f"expects steps of shape {tuple(shape[2:])} (input batch shape {shape}).\n"
                "- If every step is one number, give the sequences a feature axis: "
                "`[np.asarray(s).reshape(-1, 1) for s in x]`."
            )

    def zeros_batch(self) -> np.ndarray:
        return np.zeros((self.batch_size, self.window, *self.step_shape), dtype=self.dtype)

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
        for name in ("model", "window", "batch_size", "dtype", "step_shape", "per_window"):
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
        x = ops.convert_to_tensor(self.zeros_batch())
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


class _TFSteps:
    """``tf.function`` steps; gradients with ``tf.GradientTape``."""

    def __init__(self, runner: _Runner) -> None:
        import tensorflow as tf

        self.tf = tf
        self.runner = runner
        self._compiled: dict[tuple[str, bool], Any] = {}

    def _tensors(self, *arrays: Any) -> list[Any]:
        # numpy arguments would make tf.function retrace for every new value
        return self.tf.nest.map_structure(self.tf.convert_to_tensor, list(arrays))

    def forward(self, feed, training):
        key = ("forward", training)
        if key not in self._compiled:
            self._compiled[key] = self.tf.function(
                lambda x, mask, reset, idle: self.runner.run_window(x, mask, reset, idle, training)
            )
        return self._compiled[key](*self._tensors(*feed))

    def train(self, feed, y, weight, pick, many_to_one):
        key = ("train", many_to_one)
        if key not in self._compiled:
            runner, model = self.runner, self.runner.model

            def step(feed, y, weight, pick):
                with self.tf.GradientTape() as tape:
                    loss, scaled, picked, weight = runner.window_loss(
                        feed, y, weight, pick, training=True, many_to_one=many_to_one
                    )
                variables = model.trainable_variables
                gradients = tape.gradient(scaled, variables)
                model.optimizer.apply_gradients(zip(gradients, variables, strict=True))
                return loss, runner.window_metrics(feed[0], y, picked, weight)

            self._compiled[key] = self.tf.function(step)
        return self._compiled[key](*self._tensors(feed, y, weight, pick))

    def test(self, feed, y, weight, pick, many_to_one):
        key = ("test", many_to_one)
        if key not in self._compiled:
            runner = self.runner

            def step(feed, y, weight, pick):
                loss, _, picked, weight = runner.window_loss(
                    feed, y, weight, pick, training=False, many_to_one=many_to_one
                )
                return loss, runner.window_metrics(feed[0], y, picked, weight)

            self._compiled[key] = self.tf.function(step)
        return self._compiled[key](*self._tensors(feed, y, weight, pick))


class _JAXSteps:
    """``jax.jit`` steps over the model's variables as values (``keras.StatelessScope``)."""

    def __init__(self, runner: _Runner) -> None:
        import jax

        self.jax = jax
        self.runner = runner
        self._compiled: dict[tuple[str, bool], Any] = {}

    def _groups(self, *names: str) -> list[list[Any]]:
        model = self.runner.model
        found = {
            "trainable": lambda: model.trainable_variables,
            "non_trainable": self._non_trainable,
            "optimizer": lambda: model.optimizer.variables,
            "metrics": lambda: model.metrics_variables,
        }
        return [list(found[name]()) for name in names]

    def _non_trainable(self) -> list[Any]:
        """Non-trainable variables, including the RNN states (Keras does not track those)."""
        found = list(self.runner.model.non_trainable_variables)
        seen = {id(v) for v in found}
        return found + [v for v in self.runner.state_variables if id(v) not in seen]

    @staticmethod
    def _scoped(groups: list[list[Any]], values: list[list[Any]]) -> keras.StatelessScope:
        mapping = [
            (v, value)
            for group, vals in zip(groups, values, strict=True)
            for v, value in zip(group, vals, strict=True)
        ]
        return keras.StatelessScope(state_mapping=mapping, collect_losses=True)

    @staticmethod
    def _after(scope: keras.StatelessScope, group: list[Any], values: list[Any]) -> list[Any]:
        out = []
        for v, old in zip(group, values, strict=True):
            new = scope.get_current_value(v)
            out.append(old if new is None else new)
        return out

    def _run(self, key, names, build, *args):
        groups = self._groups(*names)
        if key not in self._compiled:
            self._compiled[key] = self.jax.jit(build(groups))
        values = [[v.value for v in group] for group in groups]
        result, new_values = self._compiled[key](values, *args)
        for group, vals in zip(groups, new_values, strict=True):
            for v, value in zip(group, vals, strict=True):
                v.assign(value)
        return result

    def forward(self, feed, training):
        runner = self.runner

        def build(groups):
            def step(values, feed):
                with self._scoped(groups, values) as scope:
                    y_pred = runner.run_window(*feed, training)
                return y_pred, [values[0], self._after(scope, groups[1], values[1])]

            return step

        names = ("trainable", "non_trainable")
        return self._run(("forward", training), names, build, tuple(feed))

    def train(self, feed, y, weight, pick, many_to_one):
        runner, model = self.runner, self.runner.model

        def build(groups):
            def loss_fn(trainable, values, feed, y, weight, pick):
                with self._scoped(groups, [trainable, *values[1:]]) as scope:
                    loss, scaled, picked, weight = runner.window_loss(
                        feed, y, weight, pick, training=True, many_to_one=many_to_one
                    )
                return scaled, (loss, picked, weight, self._after(scope, groups[1], values[1]))

            def step(values, feed, y, weight, pick):
                grad_fn = self.jax.value_and_grad(loss_fn, has_aux=True)
                (_, (loss, picked, weight, non_trainable)), grads = grad_fn(
                    values[0], values, feed, y, weight, pick
                )
                trainable, optimizer = model.optimizer.stateless_apply(
                    values[2], grads, values[0]
                )
                with self._scoped(groups, [trainable, non_trainable, optimizer, values[3]]) as s:
                    logs = runner.window_metrics(feed[0], y, picked, weight)
                metrics = self._after(s, groups[3], values[3])
                return (loss, logs), [trainable, non_trainable, optimizer, metrics]

            return step

        names = ("trainable", "non_trainable", "optimizer", "metrics")
        return self._run(
            ("train", many_to_one), names, build, tuple(feed), y, weight, pick
        )

    def test(self, feed, y, weight, pick, many_to_one):
        runner = self.runner

        def build(groups):
            def step(values, feed, y, weight, pick):
                with self._scoped(groups, values) as scope:
                    loss, _, picked, weight = runner.window_loss(
                        feed, y, weight, pick, training=False, many_to_one=many_to_one
                    )
                    logs = runner.window_metrics(feed[0], y, picked, weight)
                new = [self._after(scope, g, v) for g, v in zip(groups, values, strict=True)]
                return (loss, logs), new

            return step

        names = ("trainable", "non_trainable", "metrics")
        return self._run(("test", many_to_one), names, build, tuple(feed), y, weight, pick)


class _TorchSteps:
    """Eager steps; gradients with ``torch.autograd.grad``."""

    def __init__(self, runner: _Runner) -> None:
        import torch

        self.torch = torch
        self.runner = runner

    @staticmethod
    def _tensors(*arrays: Any) -> list[Any]:
        return [ops.convert_to_tensor(a) for a in arrays]

    def forward(self, feed, training):
        with self.torch.no_grad():
            return self.runner.run_window(*self._tensors(*feed), training)

    def train(self, feed, y, weight, pick, many_to_one):
        model = self.runner.model
        feed = tuple(self._tensors(*feed))
        y, weight, pick = self._tensors(y, weight, pick)
        loss, scaled, picked, weight = self.runner.window_loss(
            feed, y, weight, pick, training=True, many_to_one=many_to_one
        )
        variables = model.trainable_variables
        gradients = self.torch.autograd.grad(
            scaled, [v.value for v in variables], allow_unused=True
        )
        gradients = [
            self.torch.zeros_like(v.value) if g is None else g
            for g, v in zip(gradients, variables, strict=True)
        ]
        with self.torch.no_grad():
            model.optimizer.apply(gradients, variables)
            logs = self.runner.window_metrics(feed[0], y, picked.detach(), weight)
        return loss.detach(), logs

    def test(self, feed, y, weight, pick, many_to_one):
        feed = tuple(self._tensors(*feed))
        y, weight, pick = self._tensors(y, weight, pick)
        with self.torch.no_grad():
            loss, _, picked, weight = self.runner.window_loss(
                feed, y, weight, pick, training=False, many_to_one=many_to_one
            )
            return loss, self.runner.window_metrics(feed[0], y, picked, weight)


def _steps_for(backend: str, runner: _Runner) -> Any:
    steps = {"tensorflow": _TFSteps, "jax": _JAXSteps, "torch": _TorchSteps}
    if backend not in steps:
        raise ValueError(
            f"TBPTT runs on the TensorFlow, JAX and PyTorch backends. Received: Keras backend "
            f"{backend!r}\n- If you can, set `KERAS_BACKEND` to 'tensorflow', 'jax' or 'torch'."
        )
    return steps[backend](runner)

# Compiled per-window steps are traced once per model and layout and reused by later calls
# (fit, then evaluate, then predict); a new optimizer, loss or metrics (a new `compile`) or a
# different window, batch size or input dtype makes a new runner.
_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_RUNNERS_PER_MODEL = 4  # e.g. fit at one window, predict at another, without recompiling


def _runner_for(model: Any, *, window: int, batch_size: int, data: Ragged) -> _Runner:
    try:
        cache = _RUNNERS.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no caching
        return _Runner(model, window=window, batch_size=batch_size, data=data)
    key = (
        window,
        batch_size,
        str(data.values.dtype),
        data.step_shape,
        id(getattr(model, "optimizer", None)),
        # Keras rebuilds these on every compile(); only their identity is read.
        id(getattr(model, "_compile_loss", None)),
        id(getattr(model, "_compile_metrics", None)),
    )
    if key not in cache:
        for stale in [k for k in cache if k[4:] != key[4:]]:  # a new compile()
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


class _Windows:
    """Per-window numpy arrays (inputs, targets, weights) for one plan, built on demand by
    the kernel (:func:`seqprep.inputs._kernel.window_positions` + ``gather_batch``)."""

    def __init__(
        self,
        plan: TBPTTPlan,
        data: Ragged,
        targets: np.ndarray | Ragged | None,
        many_to_one: bool,
    ) -> None:
        self.plan = plan
        self.data = data
        self.targets = targets
        self.many_to_one = many_to_one
        self.resets = plan.resets
        self.idle = self._idle(plan)
        self.ends = plan.ends
        # Step targets share x's offsets (resolve_targets checked their lengths), so one
        # layout places both; padded steps gather the pad rows (0, weight 0).
        if targets is None:
            y, y_mode = None, None
        elif many_to_one:
            y, y_mode = targets, "sequence"
        else:
            y, y_mode = _kernel.with_pad_row(targets.values, 0), "step"
        self.table = _kernel.table(
            _kernel.with_pad_row(data.values, 0), data.offsets[:-1], data.lengths,
            y=y, y_mode=y_mode, w_mode="timestep",
        )
        self._inputs_table = replace(self.table, y=None, y_mode=None)
        self._last: tuple[int, np.ndarray, np.ndarray] | None = None

    def _idle(self, plan: Any) -> np.ndarray:
        return plan.idle

    def _layout(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        # inputs(w) and targets_of(w) are asked in turn: lay each window out once.
        last = self._last
        if last is None or last[0] != w:
            last = (w, *_kernel.window_positions(self.plan, self.data.offsets, w,
                                                 self.table.pad_index))
            self._last = last
        return last[1], last[2]

    def inputs(self, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(x, mask, reset, idle)`` of window ``w``.

        The mask is True on real steps. A row that is all padding gets an all-True mask instead
        (its state is restored after the window anyway): an all-False row is what the cuDNN
        kernel cannot take.
        """
        src, real = self._layout(w)
        (x,) = _kernel.gather_batch(self._inputs_table, src, real, None)
        idle = self.idle[w]
        return x, real | idle[:, None], self.resets[w], idle

    def pick(self, w: int) -> np.ndarray:
        # a cell's real steps are its first `count`, so a sequence's last one is at count - 1
        return np.where(self.ends[w], self.plan.count[w] - 1, 0).astype(np.int32)

    def targets_of(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Targets and 0/1 float32 weights of window ``w`` (per sequence: 1 where a
        sequence ends in this window; per step: 1 on real steps)."""
        if self.many_to_one:
            held = np.maximum(self.plan.sequence[w], 0)
            return _kernel.gather_targets(self.table, None, self.ends[w], held)
        src, real = self._layout(w)
        return _kernel.gather_targets(self.table, src, real, None)

    def n_targets(self, w: int) -> int:
        if self.many_to_one:
            return int(self.ends[w].sum())
        return int(self.plan.count[w].sum())


class _DenseWindows(_Windows):
    """Per-window numpy arrays of a :class:`DenseTBPTTPlan`, for one call per window, built by
    the same kernel as :class:`_Windows`.

    Unlike :class:`_Windows`, ``reset`` is per step ``(B, W)``, the mask is False on every
    padded step (the dense twin holds the state there; no row is restored), and per-sequence
    targets sit at each sequence's last step with weight 1, so both kinds of target are read
    per step.
    """

    def __init__(
        self,
        plan: DenseTBPTTPlan,
        data: Ragged,
        targets: np.ndarray | Ragged | None,
        many_to_one: bool,
    ) -> None:
        super().__init__(plan, data, targets, many_to_one)
        # Whole-plan layout once: the plan derives it from its full stream on each access.
        self.index = plan.flat_index(data.offsets)
        self.positions = _kernel.index_positions(self.index, self.table.pad_index)
        self.sequence = plan.source_sequence

    def _idle(self, plan: Any) -> np.ndarray:
        return np.zeros((plan.n_windows, plan.batch_size), dtype=bool)

    def _layout(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        return self.positions[0][w], self.positions[1][w]

    def inputs(self, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(x, mask, reset, idle)`` of window ``w``; ``reset`` and ``mask`` are ``(B, W)``."""
        src, real = self._layout(w)
        (x,) = _kernel.gather_batch(self._inputs_table, src, real, None)
        return x, real, self.resets[w], self.idle[w]

    def pick(self, w: int) -> np.ndarray:
        return np.zeros(self.plan.batch_size, dtype=np.int32)  # targets are laid out per step

    def targets_of(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-step targets ``(B, W, ...)`` and 0/1 float32 weights ``(B, W)`` of window ``w``."""
        if self.many_to_one:
            held = np.maximum(self.sequence[w], 0)
            return _kernel.gather_targets(self.table, None, self.ends[w], held)
        src, real = self._layout(w)
        return _kernel.gather_targets(self.table, src, real, None)

    def n_targets(self, w: int) -> int:
        return int(self.ends[w].sum() if self.many_to_one else self._layout(w)[1].sum())

    def scatter(self, w: int, y_pred: np.ndarray, outputs: np.ndarray, per_step: bool) -> None:
        """Write window ``w``'s outputs into ``outputs``: every real step (flat order) if
        ``per_step``, else each sequence ending in the window (one row per sequence)."""
        hit = self.index[w] >= 0 if per_step else self.ends[w]
        where = self.index[w] if per_step else self.sequence[w]
        outputs[where[hit]] = y_pred[hit]


def _runner_and_plans(runner: _Runner, plans: list[Any]) -> tuple[_Runner, list[Any]]:
    """Who runs ``plans``: dense plans run one call per window on the dense twin when it can
    be built, else as the calls of :meth:`DenseTBPTTPlan.as_calls` on the model."""
    if not isinstance(plans[0], DenseTBPTTPlan):
        return runner, plans
    dense = runner.dense_runner()
    if dense is not None:
        return dense, plans
    return runner, [plan.as_calls() for plan in plans]


def _windows_of(
    plan: Any, data: Ragged, targets: np.ndarray | Ragged | None, many_to_one: bool
) -> _Windows | _DenseWindows:
    kind = _DenseWindows if isinstance(plan, DenseTBPTTPlan) else _Windows
    return kind(plan, data, targets, many_to_one)


def _prepare_data(
    x: Any,
    y: Any,
    *,
    return_sequences: bool | None,
    need_y: bool,
    names: tuple[str, str] = ("x", "y"),
    targets: Targets = "auto",
) -> tuple[Ragged, np.ndarray | Ragged | None, bool]:
    """Normalise inputs and targets; returns ``(data, targets, many_to_one)``."""
    xn, yn = names
    kind = _targets_kind(return_sequences, targets)
    data = as_ragged(x, xn)
    lengths = data.lengths
    if len(lengths) == 0:
        raise ValueError(f"Argument `{xn}` must hold at least one sequence. Received 0 sequences")
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise ValueError(
            f"Argument `{xn}` must not hold empty sequences; sequences {empty[:5].tolist()} have "
            "length 0.\n- If they carry no information, drop them (and their targets) first."
        )
    if data.values.dtype == np.float64:
        data = Ragged(_to_floatx(data.values, xn), data.offsets)
    if not need_y:
        return data, None, kind != "step"
    kind, resolved = resolve_targets(y, lengths, targets=kind, name=yn, xname=xn)
    if isinstance(resolved, Ragged):
        if resolved.values.dtype == np.float64:
            resolved = Ragged(_to_floatx(resolved.values, yn), resolved.offsets)
    elif resolved.dtype == np.float64:
        resolved = _to_floatx(resolved, yn)
    return data, resolved, kind == "sequence"


def _targets_kind(return_sequences: bool | None, targets: Targets) -> Targets:
    """``targets=`` and the older ``return_sequences=`` as one ``targets`` value."""
    check_choice("targets", targets, ("auto", "sequence", "step"))
    if return_sequences is None:
        return targets
    check_bool("return_sequences", return_sequences)
    implied = "step" if return_sequences else "sequence"
    if targets not in ("auto", implied):
        raise ValueError(
            f"Arguments `return_sequences` and `targets` disagree. Received: "
            f"return_sequences={return_sequences}, targets={targets!r}\n"
            f"- Pass only targets=\"sequence\" (many-to-one) or targets=\"step\" "
            "(many-to-many)."
        )
    return implied


def _to_floatx(values: np.ndarray, name: str) -> np.ndarray:
    """float64 values as Keras's floatx, refusing a value that would overflow to inf."""
    floatx = keras.backend.floatx()
    check_cast(
        values, floatx, name=name,
        header=f"Argument `{name}` does not fit Keras's float type ({floatx})",
    )
    return values.astype(floatx)


def _check_finite(
    data: Ragged, targets: Any, allow_nonfinite: bool, names: tuple[str, str] = ("x", "y")
) -> None:
    """The refusal of NaN/inf every TBPTT entry point shares (fit, evaluate, predict and
    validation data): features unless ``allow_nonfinite``, targets always."""
    xn, yn = names
    check_finite_features(data.values, xn, offsets=data.offsets, allow_nonfinite=allow_nonfinite)
    if isinstance(targets, Ragged):
        check_finite_labels(targets.values, yn, offsets=targets.offsets)
    elif targets is not None:
        check_finite_labels(targets, yn)


def _check_sizes(window: int, batch_size: int) -> tuple[int, int]:
    window = check_int(
        "window",
        window,
        minimum=1,
        fix="If you want no truncation, set `window` to the longest sequence length.",
    )
    return window, check_int("batch_size", batch_size, minimum=1)


def _verbosity(verbose: int | str) -> int:
    if verbose == "auto":
        return 1
    if isinstance(verbose, str) or not isinstance(verbose, int):
        raise ValueError(
            f"Argument `verbose` must be 'auto', 0, 1 or 2. Received: verbose={verbose!r}"
        )
    return check_choice("verbose", int(verbose), (0, 1, 2))


def _numpy_logs(logs: dict[str, Any]) -> dict[str, float]:
    return {k: float(ops.convert_to_numpy(v)) for k, v in logs.items()}


def _run_epoch(
    runner: _Runner,
    windows: _Windows,
    *,
    training: bool,
    loss_mean: keras.metrics.Mean,
    callbacks: keras.callbacks.CallbackList | None = None,
    progbar: keras.utils.Progbar | None = None,
) -> dict[str, float]:
    """One pass over a plan; returns the epoch logs (loss = mean over all targets)."""
    model = runner.model
    model.reset_metrics()
    loss_mean.reset_state()
    runner.reset_all()
    logs: dict[str, float] = {}
    for w in range(windows.plan.n_windows):
        if callbacks is not None:
            callbacks.on_train_batch_begin(w) if training else callbacks.on_test_batch_begin(w)
        feed = windows.inputs(w)
        n_targets = windows.n_targets(w)
        if n_targets == 0:
            runner.forward(feed, training=training)  # advance the state only
        else:
            y, weight = windows.targets_of(w)
            step = runner.train if training else runner.test
            loss, step_logs = step(
                feed, y, weight, windows.pick(w), many_to_one=windows.many_to_one
            )
            logs = _numpy_logs(step_logs)
            # The targets the loss averaged over: fewer than n_targets where a masking layer
            # masked steps inside a sequence.
            counted = logs.pop(_TARGETS)
            if counted > 0:
                loss_mean.update_state(loss, sample_weight=counted)
        logs["loss"] = float(loss_mean.result())
        if callbacks is not None:
            if training:
                callbacks.on_train_batch_end(w, logs)
            else:
                callbacks.on_test_batch_end(w, logs)
        if progbar is not None:
            progbar.update(w + 1, list(logs.items()))
    return dict(logs)


def _first_call(runner: _Runner, windows: _Windows) -> None:
    """Build loss and metrics eagerly (no variable may be created in a compiled step).

    Once per runner and kind of target: later calls reuse what the first one built.
    """
    runner.check_targets(windows.many_to_one)
    if windows.many_to_one in runner.prepared:
        return
    x, mask, _, _ = (ops.convert_to_tensor(a) for a in windows.inputs(0))
    y_pred = runner._call(x, mask, training=False)
    runner.check_output(y_pred)
    y, weight = (ops.convert_to_tensor(a) for a in windows.targets_of(0))
    picked = runner.select(y_pred, ops.convert_to_tensor(windows.pick(0)), windows.many_to_one)
    runner.model.compute_loss(x, y, picked, ops.zeros_like(weight), training=False)
    runner.window_metrics(x, y, picked, ops.zeros_like(weight))
    runner.model.reset_metrics()
    runner.reset_all()
    runner.prepared.add(windows.many_to_one)


def fit_tbptt(
    model: keras.Model,
    x: Any,
    y: Any,
    *,
    window: int,
    batch_size: int,
    epochs: int = 1,
    order: WindowOrder = "longest_first",
    seed: int = 0,
    return_sequences: bool | None = None,
    validation_data: tuple[Any, Any] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    verbose: int | str = "auto",
    allow_nonfinite: bool = False,
    dense: bool = False,
    targets: Targets = "auto",
) -> keras.callbacks.History:
    """Train a stateful RNN with truncated backpropagation through time.

    Sequences are laid out by :func:`plan_tbptt` (packed into ``batch_size`` rows, cut into
    windows of ``window`` steps, every sequence starting at a window boundary). Each window is one
    compiled step: the state of the rows that start a new sequence is zeroed (the other rows carry
    their state over), the model runs on the window, the loss of the targets that fall in the
    window is minimised with ``model.optimizer``, and rows that were all padding keep their state.
    See the module docstring for how the model must be built.

    Callbacks see one batch per window (``on_train_batch_begin/end(w)``, ``w`` counting windows in
    the epoch) and one epoch per pass; ``logs["loss"]`` is the running mean over targets
    (sequences for many-to-one, real steps for many-to-many), plus the compiled metrics.

    Args:
        model: A compiled stateful Keras model built for ``batch_size``, with per-step outputs
            or (many-to-one only) a last recurrent layer with ``return_sequences=False``.
        x: Sequence collection of ``n`` sequences of shape ``(T_i, *step_shape)``, ``T_i >= 1``.
        y: Many-to-one: array of shape ``(n, ...)``. Many-to-many: collection of ``(T_i, ...)``
            arrays.
        window: Steps per window, the truncation length of backpropagation, at least 1.
        batch_size: Rows per window; must be the batch size the model was built for.
        epochs: Passes over the data.
        order: Packing order, see :func:`plan_tbptt`; ``"shuffle"`` draws a new order each
            epoch.
        seed: Seed for ``order="shuffle"``.
        return_sequences: True for many-to-many targets, False for many-to-one (the same as
            ``targets="step"`` / ``"sequence"``). ``None`` leaves it to ``targets``.
        targets: ``"auto"`` (default), ``"sequence"`` (many-to-one) or ``"step"``
            (many-to-many). ``"auto"`` follows :func:`seqprep.resolve_targets`: a numpy array
            is many-to-one, a list of arrays with the lengths of ``x`` (not all equal) is
            many-to-many, and a ``y`` that fits both raises ``ValueError``.
        validation_data: Optional ``(x_val, y_val)``, evaluated with :func:`evaluate_tbptt` after
            every epoch; logged as ``val_loss`` and ``val_<metric>``.
        callbacks: Keras callbacks.
        verbose: ``"auto"`` (= 1) or 1 for a progress bar, 2 for one line per epoch, 0 for
            silence.
        allow_nonfinite: accept NaN/inf in ``x`` (refused by default; NaN/inf in ``y`` are
            always refused).
        dense: Lay each row's sequences back to back (``plan_tbptt(..., dense=True)``): a
            sequence starts right after the previous one of its row, inside a window, so no
            window pads a sequence's tail. Each window is then one model call on the model's
            *dense twin*: the model rebuilt with ``keras.models.clone_model`` with every
            stateful recurrent layer replaced by a scan over the same cell that zeroes a
            row's state at each step where a sequence starts (all other layers and all
            weights are the model's own, so training the twin trains the model). The twin
            needs SimpleRNN/GRU/LSTM cells (or ``keras.layers.RNN`` of one) without
            ``return_state``, and, after a last recurrent layer with
            ``return_sequences=False``, only layers that act per step (``Dense``,
            ``Dropout``, activations, ``LayerNormalization``...). Otherwise (a subclassed
            model, another cell, e.g. a ``BatchNormalization`` after the recurrent layer) it
            warns and falls back to several model calls per window, split where any row
            starts a sequence (:meth:`DenseTBPTTPlan.as_calls`; each call one optimizer step,
            backpropagation also truncated there): exact, but slower than the windowed plan.
            Cell ``dropout``/``recurrent_dropout`` is refused with ``dense=True``.

    Returns:
        The Keras ``History`` of the run.

    Raises:
        ValueError: If ``window`` or ``batch_size`` is below 1, the model is not stateful, is
            bidirectional, was built for another batch size or window, does not return per-step
            outputs (or one output per row, for a plain classifier) or is not compiled, or
            ``y`` does not match ``x`` (per-step targets need per-step outputs), or
            ``dense=True`` with cell dropout.
        TypeError: If ``model`` is not a Keras model or an argument has the wrong type.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input(batch_shape=(2, 4, 1))
        >>> h = keras.layers.SimpleRNN(3, stateful=True, return_sequences=True)(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(1)(h))
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> x = [np.ones((n, 1), "float32") for n in (9, 3, 5)]
        >>> history = fit_tbptt(model, x, np.array([1.0, 0.0, 1.0]), window=4, batch_size=2,
        ...                     epochs=2, verbose=0)
        >>> len(history.history["loss"])
        2
    """
    window, batch_size = _check_sizes(window, batch_size)
    epochs = check_int("epochs", epochs, minimum=1)
    check_choice("order", order, ORDERS)
    seed = check_int("seed", seed)
    verbose = _verbosity(verbose)
    refuse_backup_in(callbacks, "fit_tbptt")  # no exact resume of windows and states yet
    data, targets, many_to_one = _prepare_data(
        x, y, return_sequences=return_sequences, need_y=True, targets=targets
    )
    _check_finite(data, targets, allow_nonfinite)
    runner = _runner_for(model, window=window, batch_size=batch_size, data=data)
    validation = None
    if validation_data is not None:
        validation = _validation_windows(validation_data, runner, many_to_one, allow_nonfinite)
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", True):
        raise ValueError(
            "Argument `model` must be compiled before training: "
            "`model.compile(optimizer=..., loss=...)`."
        )
    dense = check_bool("dense", dense)
    plans = [
        _plan(
            data.lengths, runner, dense, order=order, seed=seed,
            epoch=epoch if order == "shuffle" else 0,
        )
        for epoch in range(epochs if order == "shuffle" else 1)
    ]
    run, plans = _runner_and_plans(runner, plans)
    steps = {plan.n_windows for plan in plans}
    _first_call(run, _windows_of(plans[0], data, targets, many_to_one))
    if validation is not None:
        _first_call(runner, validation)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)

    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps.pop() if len(steps) == 1 else None,
    )
    loss_mean = keras.metrics.Mean(name="loss")
    model.stop_training = False
    callback_list.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(epochs):
        windows = _windows_of(plans[epoch % len(plans)], data, targets, many_to_one)
        callback_list.on_epoch_begin(epoch)
        logs = _run_epoch(
            run, windows, training=True, loss_mean=loss_mean, callbacks=callback_list
        )
        if validation is not None:
            val = _run_epoch(runner, validation, training=False, loss_mean=loss_mean)
            logs.update({f"val_{k}": v for k, v in val.items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    runner.reset_all()
    history = model.history
    return history


def _plan(
    lengths: np.ndarray, runner: _Runner, dense: bool, **kwargs: Any
) -> TBPTTPlan | DenseTBPTTPlan:
    return plan_tbptt(
        lengths, window=runner.window, batch_size=runner.batch_size, dense=dense, **kwargs
    )


def _scatter_windowed(
    windows: _Windows, w: int, y_pred: np.ndarray, outputs: np.ndarray, per_step: bool,
    per_row: bool,
) -> None:
    """Write window ``w``'s outputs of a windowed plan into ``outputs`` (as predict returns)."""
    plan = windows.plan
    if per_step:
        index = plan.flat_index(windows.data.offsets, w)
        real = index >= 0
        outputs[index[real]] = y_pred[real]
        return
    rows = np.flatnonzero(windows.ends[w])
    held = plan.sequence[w, rows]
    last = plan.count[w, rows] - 1
    outputs[held] = y_pred[rows] if per_row else y_pred[rows, last]


def _validation_windows(
    validation_data: Any, runner: _Runner, many_to_one: bool, allow_nonfinite: bool
) -> _Windows:
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError(
            "Argument `validation_data` must be a pair `(x_val, y_val)`. Received: "
            f"validation_data of type {type(validation_data).__name__}"
        )
    names = ("validation_data[0]", "validation_data[1]")
    data, targets, _ = _prepare_data(
        *validation_data, return_sequences=not many_to_one, need_y=True, names=names,
    )
    _check_finite(data, targets, allow_nonfinite, names)
    if data.step_shape != runner.step_shape:
        raise ValueError(
            f"Argument `validation_data` has steps of shape {data.step_shape}, but `x` has "
            f"steps of shape {runner.step_shape}."
        )
    data = Ragged(data.values.astype(runner.dtype, copy=False), data.offsets)
    plan = plan_tbptt(data.lengths, window=runner.window, batch_size=runner.batch_size)
    return _Windows(plan, data, targets, many_to_one)


def evaluate_tbptt(
    model: keras.Model,
    x: Any,
    y: Any,
    *,
    window: int,
    batch_size: int,
    return_sequences: bool | None = None,
    return_dict: bool = False,
    verbose: int | str = 0,
    dense: bool = False,
    targets: Targets = "auto",
    allow_nonfinite: bool = False,
) -> float | dict[str, float]:
    """Loss (and compiled metrics) of a stateful RNN over long sequences, window by window.

    Runs the same plan and state handling as :func:`fit_tbptt` without updating weights. The loss
    is the mean over all targets (sequences for many-to-one, real steps for many-to-many).

    Args:
        model: A compiled stateful Keras model built for ``batch_size`` (per-step outputs, or a
            plain classifier for many-to-one targets).
        x: Sequence collection of ``n`` sequences, each at least one step long.
        y: Targets, as for :func:`fit_tbptt`.
        window: Steps per window, at least 1.
        batch_size: Rows per window; must be the batch size the model was built for.
        return_sequences: Many-to-many (True) or many-to-one (False); ``None`` leaves it to
            ``targets``.
        return_dict: Return ``{"loss": ..., <metric>: ...}`` instead of the loss alone.
        verbose: 1 (or ``"auto"``) for a progress bar, 0 for silence.
        dense: Run the dense plan, as in :func:`fit_tbptt` (same result; one model call per
            window on the dense twin, or the fallback).
        targets: ``"auto"``, ``"sequence"`` or ``"step"``, as in :func:`fit_tbptt`.
        allow_nonfinite: accept NaN/inf in ``x``, as in :func:`fit_tbptt` (refused by
            default; NaN/inf in ``y`` are always refused).

    Returns:
        The loss as a float, or a dict of the loss and metrics.

    Raises:
        ValueError: As for :func:`fit_tbptt`.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input(batch_shape=(2, 4, 1))
        >>> h = keras.layers.GRU(2, stateful=True, return_sequences=True)(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(1)(h))
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> x = [np.ones((n, 1), "float32") for n in (6, 3, 2)]
        >>> loss = evaluate_tbptt(model, x, np.zeros(3), window=4, batch_size=2)
        >>> loss >= 0.0
        True
    """
    window, batch_size = _check_sizes(window, batch_size)
    verbose = _verbosity(verbose)
    data, targets, many_to_one = _prepare_data(
        x, y, return_sequences=return_sequences, need_y=True, targets=targets
    )
    _check_finite(data, targets, allow_nonfinite)
    runner = _runner_for(model, window=window, batch_size=batch_size, data=data)
    if getattr(model, "loss", None) is None and not model.losses:
        raise ValueError(
            "Argument `model` must be compiled with a loss: `model.compile(loss=...)`."
        )
    run, (plan,) = _runner_and_plans(
        runner, [_plan(data.lengths, runner, check_bool("dense", dense))]
    )
    windows = _windows_of(plan, data, targets, many_to_one)
    _first_call(run, windows)
    progbar = keras.utils.Progbar(plan.n_windows, verbose=verbose) if verbose else None
    logs = _run_epoch(
        run, windows, training=False, loss_mean=keras.metrics.Mean(name="loss"),
        progbar=progbar,
    )
    runner.reset_all()
    return logs if return_dict else logs["loss"]


def predict_tbptt(
    model: keras.Model,
    x: Any,
    *,
    window: int,
    batch_size: int,
    return_sequences: bool = False,
    verbose: int | str = 0,
    dense: bool = False,
    allow_nonfinite: bool = False,
) -> np.ndarray | list[np.ndarray]:
    """Outputs of a stateful RNN over long sequences, carrying state across windows.

    For a many-to-one model (``return_sequences=False``) the result is the output at each
    sequence's last real step, one row per input sequence in input order: within float tolerance
    the same as a non-stateful twin of the model (same weights) run on each whole sequence. With
    ``return_sequences=True`` it is the list of per-step outputs, one ``(T_i, ...)`` array per
    sequence.

    Args:
        model: A stateful Keras model built for ``batch_size`` (it need not be compiled), with
            per-step outputs or a last recurrent layer with ``return_sequences=False`` (then
            only ``return_sequences=False`` here).
        x: Sequence collection of ``n`` sequences, each at least one step long.
        window: Steps per window, at least 1. Any window gives the same outputs; larger windows
            make fewer, bigger model calls.
        batch_size: Rows per window; must be the batch size the model was built for.
        return_sequences: Return every step's output instead of the last step's.
        verbose: 1 (or ``"auto"``) for a progress bar, 0 for silence.
        dense: Run the dense plan, as in :func:`fit_tbptt` (same outputs; one model call per
            window on the dense twin, or the fallback).
        allow_nonfinite: accept NaN/inf in ``x`` (refused by default, as by
            :func:`fit_tbptt`: a NaN input makes NaN outputs).

    Returns:
        ndarray of shape ``(n, ...)``, or a list of ``n`` arrays of shape ``(T_i, ...)``.

    Raises:
        ValueError: As for :func:`fit_tbptt`.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input(batch_shape=(2, 3, 1))
        >>> h = keras.layers.LSTM(2, stateful=True, return_sequences=True)(inputs)
        >>> model = keras.Model(inputs, h)
        >>> x = [np.ones((n, 1), "float32") for n in (7, 2, 4)]
        >>> predict_tbptt(model, x, window=3, batch_size=2).shape
        (3, 2)
        >>> [a.shape for a in predict_tbptt(model, x, window=3, batch_size=2,
        ...                                 return_sequences=True)]
        [(7, 2), (2, 2), (4, 2)]
        >>> dense = predict_tbptt(model, x, window=3, batch_size=2, dense=True)  # back to back
        >>> bool(np.allclose(dense, predict_tbptt(model, x, window=3, batch_size=2), atol=1e-5))
        True
        >>> from seqprep.models import reference_rnn  # a plain classifier works too
        >>> clf = reference_rnn(input_dim=1, num_classes=4, units=2, stateful=True, batch_size=2)
        >>> predict_tbptt(clf, x, window=3, batch_size=2).shape
        (3, 4)
    """
    verbose = _verbosity(verbose)
    check_bool("return_sequences", return_sequences)
    window, batch_size = _check_sizes(window, batch_size)
    data, _, _ = _prepare_data(x, None, return_sequences=return_sequences, need_y=False)
    _check_finite(data, None, allow_nonfinite)
    runner = _runner_for(model, window=window, batch_size=batch_size, data=data)
    if return_sequences and runner.per_window:
        raise ValueError(
            "Argument `return_sequences=True` needs a model with per-step outputs, but the "
            "model's last recurrent layer has `return_sequences=False`.\n- If you want each "
            "sequence's last output, pass `return_sequences=False`."
        )
    run, (plan,) = _runner_and_plans(
        runner, [_plan(data.lengths, runner, check_bool("dense", dense))]
    )
    windows = _windows_of(plan, data, None, not return_sequences)
    runner.reset_all()
    progbar = keras.utils.Progbar(plan.n_windows, verbose=verbose) if verbose else None
    outputs: np.ndarray | None = None
    per_row = run.per_window and run is runner  # one output per row, not per step
    for w in range(plan.n_windows):
        y_pred = ops.convert_to_numpy(run.forward(windows.inputs(w)))
        if w == 0:
            run.check_output(y_pred)
            size = plan.num_sequences if not return_sequences else plan.real_steps
            outputs = np.empty((size, *y_pred.shape[1 if per_row else 2 :]), y_pred.dtype)
        if isinstance(windows, _DenseWindows):
            windows.scatter(w, y_pred, outputs, per_step=return_sequences)
        else:
            _scatter_windowed(windows, w, y_pred, outputs, return_sequences, per_row)
        if progbar is not None:
            progbar.update(w + 1)
    runner.reset_all()
    if return_sequences:
        return [outputs[a:b] for a, b in zip(data.offsets[:-1], data.offsets[1:], strict=True)]
    return outputs
