"""The dense twin of a stateful model: per-step, per-row state resets inside one model call.

A dense TBPTT window (:class:`seqprep.DenseTBPTTPlan`) holds several sequences back to back per
row, so a row's state must be zeroed at the step where each sequence starts, in the middle of
the window. A Keras RNN layer can only start from its state at the beginning of a call. The
twin built here is the user's model with every stateful recurrent layer replaced by a
:class:`_ResettingRNN` that steps the *same* cell (so the same weights) with ``keras.ops.scan``,
zeroing a row's state where the shared reset flags say so. Every other layer is the user's
layer itself, so training the twin trains the model.

Built with public Keras API only (``keras.models.clone_model`` with a ``clone_function``).
:func:`dense_twin` returns ``None`` with the reason when the twin cannot be made exact; the
caller then falls back to running the window as several calls.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

_TF_PARALLEL_ITERATIONS = 32
_CELLS = (keras.layers.SimpleRNNCell, keras.layers.GRUCell, keras.layers.LSTMCell)

# Layers known to act on each step alone, whatever the rank of their input: the only ones
# allowed after a recurrent layer with return_sequences=False (the twin feeds them every step).
_PER_STEP_LAYERS = (
    keras.layers.Dense,
    keras.layers.Dropout,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.LayerNormalization,
    keras.layers.Identity,
)


class SharedResets:
    """Holds what every replaced layer shares (the reset flags), out of Keras's tracking."""

    def __init__(self, batch_size: int, window: int) -> None:
        self.resets = keras.Variable(
            ops.zeros((batch_size, window), dtype="float32"),
            trainable=False,
            dtype="float32",
            name="tbptt_dense_resets",
        )


class _Source:
    """The replaced layer, kept out of Keras's tracking (its cell is tracked by the twin)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer


class _ResettingRNN(keras.layers.Layer):
    """Steps ``source.cell`` over a window, zeroing a row's state where a sequence starts.

    The state starts from, and ends in, the source layer's state variables. At step ``t`` of
    row ``b``: the state is zeroed if ``resets[b, t]``; the cell runs; on a masked step the
    state is held (Keras's mask semantics). The output at each step is the cell's output, the
    held one on masked steps (zeros if the source has ``zero_output_for_mask``), for every step
    whatever the source's ``return_sequences``.
    """

    def __init__(self, source: Any, shared: SharedResets, **kwargs: Any) -> None:
        super().__init__(name=f"{source.name}_dense", dtype=source.dtype_policy, **kwargs)
        self.cell = source.cell  # tracked: the twin's trainable variables are the model's
        self._source = _Source(source)
        self._shared = shared
        self.supports_masking = True

    def build(self, input_shape: Any) -> None:
        self.built = True

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (input_shape[0], input_shape[1], self.cell.output_size)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return mask

    def call(self, inputs: Any, mask: Any = None, training: Any = None) -> Any:
        source = self._source.layer
        cell, dtype = self.cell, self.compute_dtype
        states = [ops.cast(ops.copy(v.value), dtype) for v in source.states]
        # (B, W, 1) factors built once, so each step only multiplies and selects
        keep = ops.cast(ops.less(self._shared.resets.value, 0.5), dtype)[:, :, None]
        real = ops.ones_like(keep, "bool") if mask is None else ops.cast(mask, "bool")[:, :, None]
        xs = (ops.moveaxis(inputs, 1, 0), ops.moveaxis(keep, 1, 0), ops.moveaxis(real, 1, 0))

        def step(carry: Any, x: Any) -> Any:
            x_t, keep_t, real_t = x
            # a finite state times 0 is exactly 0: the row starts afresh
            kept = [s * keep_t for s in carry]
            _, new = cell(x_t, kept, training=training)
            new = list(new) if isinstance(new, (list, tuple)) else [new]
            held = [ops.where(real_t, n, s) for n, s in zip(new, kept, strict=True)]
            # The three cells' output is their first state; emitting the carry keeps
            # TensorFlow's scan happy (its outputs must match the carry).
            return held, held

        final, ys = ops.scan(step, states, xs, unroll=_scan_unroll())
        for v, value in zip(source.states, final, strict=True):
            v.assign(ops.cast(value, v.dtype))
        outputs = ops.moveaxis(ys[0], 0, 1)
        if source.zero_output_for_mask and mask is not None:
            outputs = ops.where(real, outputs, 0)
        return outputs


def _scan_unroll() -> int:
    """On TensorFlow ``unroll`` is the loop's ``parallel_iterations``: 32, as Keras's own RNN
    loop uses, lets each step's input projection run ahead of the recurrence. Elsewhere it
    would unroll the compiled loop; 1 keeps JAX compiles small."""
    return _TF_PARALLEL_ITERATIONS if keras.backend.backend() == "tensorflow" else 1


def _unsupported_rnn(layer: Any, last: bool) -> str | None:
    """Why the twin cannot replace ``layer`` exactly (None if it can)."""
    if type(layer.cell) not in _CELLS:  # a subclass may step differently
        return f"its recurrent layer {layer.name!r} has a {type(layer.cell).__name__}"
    if layer.return_state:
        return f"its recurrent layer {layer.name!r} has return_state=True"
    if layer.activity_regularizer is not None:
        return f"its recurrent layer {layer.name!r} has an activity regularizer"
    if not layer.return_sequences and not last:
        return f"its recurrent layer {layer.name!r} is not the last and returns one output"
    return None


def check_no_dropout(rnns: list[Any]) -> None:
    """Refuse cell dropout: a mask per sequence cannot be kept inside one scan call."""
    for layer in rnns:
        for name in ("dropout", "recurrent_dropout"):
            rate = getattr(layer.cell, name, 0) or 0
            if rate:
                raise ValueError(
                    f"Argument `dense=True` cannot run the recurrent layer {layer.name!r} "
                    f"with {name}={rate}: one call per dense window would share one dropout "
                    "mask between the sequences of a row.\n- Use dense=False, or put a "
                    "keras.layers.Dropout before or after the recurrent layer instead."
                )


def _layers_after_last_rnn(layers: list[Any], rnns: list[Any]) -> list[Any]:
    at = max(i for i, layer in enumerate(layers) if layer is rnns[-1])
    return [
        layer for layer in layers[at + 1 :]
        if not isinstance(layer, keras.layers.InputLayer) and not isinstance(layer, keras.Model)
    ]


def _not_per_step(layer: Any) -> bool:
    if not isinstance(layer, _PER_STEP_LAYERS):
        return True
    axis = getattr(layer, "axis", -1)
    return axis not in (-1, [-1], (-1,))


def unsupported(model: Any, layers: list[Any], rnns: list[Any]) -> str | None:
    """Why no exact twin can be built for ``model`` (None if one can)."""
    try:
        outputs = model.outputs or [None]
    except (AttributeError, ValueError):  # a subclassed or unbuilt model: clone_model decides
        outputs = [None]
    if len(outputs) != 1:
        return "the model has several outputs"
    for i, layer in enumerate(rnns):
        reason = _unsupported_rnn(layer, last=i == len(rnns) - 1)
        if reason:
            return reason
    if not rnns[-1].return_sequences:
        after = [layer.name for layer in _layers_after_last_rnn(layers, rnns)
                 if _not_per_step(layer)]
        if after:
            return (
                f"layers {after} after the last recurrent layer (return_sequences=False) are "
                "not known to act on each step alone"
            )
    return None


def dense_twin(model: Any, rnns: list[Any], shared: SharedResets) -> tuple[Any, str | None]:
    """``(twin, None)``, or ``(None, reason)`` if the twin cannot be built."""
    replaced: set[int] = set()
    targets = {id(layer) for layer in rnns}

    def clone(layer: Any) -> Any:
        if id(layer) in targets:
            replaced.add(id(layer))
            return _ResettingRNN(layer, shared)
        return layer

    try:
        twin = keras.models.clone_model(model, clone_function=clone, recursive=True)
    except (ValueError, TypeError, NotImplementedError) as error:
        return None, f"keras.models.clone_model cannot rebuild it ({error})"
    if replaced != targets:
        return None, "some recurrent layers sit inside a layer or model that cannot be cloned"
    return twin, None
