"""Keras layers for packed rows, written with ``keras.ops`` only (TensorFlow, JAX, torch).

:class:`PackedRNN` runs a Keras recurrent layer over rows that hold several sequences back to
back (see :class:`seqprep.PackSampler` and :func:`seqprep.packed_dataset`), resetting the
recurrent state wherever a new sequence starts, in every row independently.

Packed inputs are a dict:

* ``"values"``: ``(batch, row_length, features)`` float steps;
* ``"segment_ids"``: ``(batch, row_length)`` int, ``0`` on padding and ``1..S`` for the slot of
  the packed sequence a step belongs to (each sequence's steps are contiguous);
* ``"segment_lengths"``: ``(batch, S)`` int, the length of every slot (``0`` when a row has
  fewer than ``S`` sequences). Only its static shape ``S`` is used; it is needed when the layer
  returns one output per sequence.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["PackedRNN"]

_CELL_LAYERS = (keras.layers.SimpleRNN, keras.layers.GRU, keras.layers.LSTM)
_MERGE_MODES = ("concat", "sum", "mul", "ave")
_KEYS = ("values", "segment_ids", "segment_lengths")


def _check_recurrent(layer: Any, role: str) -> None:
    """Refuse what a packed run cannot honour, with the fix."""
    if not isinstance(layer, _CELL_LAYERS):
        raise TypeError(
            f"Argument `layer` must be a keras SimpleRNN, GRU or LSTM layer, or a "
            f"Bidirectional of one. Received: {role} of type {type(layer).__name__}"
        )
    for flag in ("stateful", "return_state"):
        if getattr(layer, flag):
            raise ValueError(
                f"Argument `layer` must have {flag}=False: packed rows carry no state from "
                f"one batch to the next. Received: {role} with {flag}=True\n"
                f"- Build the layer with {flag}=False."
            )
    if layer.go_backwards and role == "layer":
        raise ValueError(
            "Argument `layer` must have go_backwards=False. Received: layer with "
            "go_backwards=True\n- For a backward pass over each sequence, wrap a "
            "Bidirectional layer."
        )
    cell = layer.cell
    for name in ("dropout", "recurrent_dropout"):
        if getattr(cell, name, 0):
            raise ValueError(
                f"Argument `layer` must have {name}=0 in PackedRNN. Received: {role} with "
                f"{name}={getattr(cell, name)}\n"
                "- Put a keras.layers.Dropout before or after PackedRNN instead."
            )


@keras.saving.register_keras_serializable(package="seqprep")
class PackedRNN(keras.layers.Wrapper):
    """Run a recurrent layer over packed rows, resetting the state at every sequence start.

    Each row of a packed batch holds several sequences back to back. ``PackedRNN`` steps the
    wrapped layer's own cell along the row and zeroes the state at the first step of every
    packed sequence (for the backward direction of a Bidirectional layer: at its last step),
    so each sequence sees exactly what it would see alone. The weights are the wrapped
    layer's: a model trained packed can be served with the plain layer on unpadded sequences.

    Args:
        layer: a ``keras.layers.SimpleRNN``, ``GRU`` or ``LSTM`` (``stateful=False``,
            ``return_state=False``, ``go_backwards=False``, no dropout), or a
            ``keras.layers.Bidirectional`` of one with ``merge_mode`` ``"concat"``, ``"sum"``,
            ``"mul"`` or ``"ave"``.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ...).

    Call arguments:
        inputs: a dict with ``"values"`` ``(B, P, F)``, ``"segment_ids"`` ``(B, P)`` and
            ``"segment_lengths"`` ``(B, S)`` (see the module docstring); the last is optional
            when the wrapped layer has ``return_sequences=True``.
        training: passed to the cell.

    Returns:
        With ``return_sequences=True`` on the wrapped layer: ``(B, P, units)``, zero on padding
        steps. Otherwise ``(B, S, units)``: the output at each packed sequence's last step
        (for a Bidirectional layer, the backward direction's output at its first step, as the
        plain layer returns), zero for empty slots.

    Raises:
        TypeError: ``layer`` is not a supported recurrent layer.
        ValueError: ``layer`` is stateful, returns its state, runs backwards or uses dropout.

    Example:
        >>> import numpy as np
        >>> gru = keras.layers.GRU(3)
        >>> packed = PackedRNN(gru)
        >>> x = np.random.default_rng(0).normal(size=(1, 5, 2)).astype("float32")
        >>> out = packed({"values": x, "segment_ids": np.array([[1, 1, 1, 2, 2]]),
        ...               "segment_lengths": np.array([[3, 2]])})
        >>> tuple(out.shape)
        (1, 2, 3)
        >>> alone = gru(x[:, 3:])  # the second packed sequence on its own, same weights
        >>> to_numpy = keras.ops.convert_to_numpy
        >>> bool(np.allclose(to_numpy(out[:, 1]), to_numpy(alone), atol=1e-6))
        True
    """

    def __init__(self, layer: keras.layers.Layer, **kwargs: Any) -> None:
        if isinstance(layer, keras.layers.Bidirectional):
            if layer.merge_mode not in _MERGE_MODES:
                raise ValueError(
                    f"Argument `layer` must be a Bidirectional with merge_mode one of "
                    f"{list(_MERGE_MODES)}. Received: merge_mode={layer.merge_mode!r}\n"
                    "- Use merge_mode='concat' (the default)."
                )
            _check_recurrent(layer.forward_layer, "layer.forward_layer")
            _check_recurrent(layer.backward_layer, "layer.backward_layer")
        else:
            _check_recurrent(layer, "layer")
        super().__init__(layer, **kwargs)
        self.return_sequences = bool(self._directions[0].return_sequences)
        self.merge_mode = getattr(layer, "merge_mode", None)

    @property
    def _directions(self) -> tuple[Any, ...]:
        # A property, not an attribute: Keras would track the sub-layers a second time.
        if isinstance(self.layer, keras.layers.Bidirectional):
            return (self.layer.forward_layer, self.layer.backward_layer)
        return (self.layer,)

    # ------------------------------------------------------------------ validation and build

    def _split(self, inputs: Any) -> tuple[Any, Any, Any]:
        if not isinstance(inputs, dict) or "values" not in inputs or "segment_ids" not in inputs:
            got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(
                "PackedRNN takes a dict with keys 'values', 'segment_ids' and "
                f"'segment_lengths'. Received: {got}\n"
                "- Pass the inputs that seqprep.packed_dataset yields."
            )
        extra = sorted(set(inputs) - set(_KEYS))
        if extra:
            raise ValueError(f"PackedRNN got unknown input keys {extra}; expected {list(_KEYS)}.")
        lengths = inputs.get("segment_lengths")
        if lengths is None and not self.return_sequences:
            raise ValueError(
                "PackedRNN needs inputs['segment_lengths'] (B, S) to return one output per "
                "packed sequence (the wrapped layer has return_sequences=False).\n"
                "- Pass the inputs that seqprep.packed_dataset yields."
            )
        return inputs["values"], inputs["segment_ids"], lengths

    def build(self, input_shape: Any) -> None:
        if not isinstance(input_shape, dict) or "values" not in input_shape:
            raise ValueError(
                "PackedRNN takes a dict with keys 'values', 'segment_ids' and "
                f"'segment_lengths'. Received input shape: {input_shape!r}"
            )
        if not self.layer.built:
            self.layer.build(tuple(input_shape["values"]))
        self.built = True

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        values = tuple(input_shape["values"])
        units = self._directions[0].cell.output_size
        if len(self._directions) == 2 and self.merge_mode == "concat":
            units *= 2
        if self.return_sequences:
            return (values[0], values[1], units)
        return (values[0], tuple(input_shape["segment_lengths"])[1], units)

    # ------------------------------------------------------------------ compute

    def _run(self, values: Any, keeps: list[Any], training: Any) -> list[Any]:
        """Scan every direction's cell over time, all in one loop (fewer loop iterations).

        ``keeps[d]`` (B, P) is 0 where direction ``d`` must start from a zero state; the
        second direction, if any, runs on the time-reversed row.
        """
        cells = [d.cell for d in self._directions]
        batch = ops.shape(values)[0]
        features = int(values.shape[-1])
        time_major = ops.moveaxis(values, 1, 0)
        streams, init, counts = [], [], []
        for d, (cell, keep) in enumerate(zip(cells, keeps, strict=True)):
            sizes = cell.state_size if isinstance(cell.state_size, (list, tuple)) else [
                cell.state_size
            ]
            init += [ops.zeros((batch, int(size)), dtype=self.compute_dtype) for size in sizes]
            counts.append(len(sizes))
            keep = ops.cast(ops.moveaxis(keep[:, :, None], 1, 0), time_major.dtype)
            stream = ops.concatenate([time_major, keep], axis=-1)
            streams.append(stream if d == 0 else ops.flip(stream, axis=0))
        # One tensor to scan over: TensorFlow's scan cannot take several inputs whose time
        # axis is unknown when traced (a serving model's rows have any length).
        xs = streams[0] if len(streams) == 1 else ops.concatenate(streams, axis=-1)

        def step(carry: Any, x: Any) -> Any:
            new_carry, at = [], 0
            for d, (cell, count) in enumerate(zip(cells, counts, strict=True)):
                part = x[:, d * (features + 1) : (d + 1) * (features + 1)]
                x_t = part[:, :features]
                keep_t = ops.cast(part[:, features:], self.compute_dtype)
                states = [s * keep_t for s in carry[at : at + count]]
                _, new = cell(x_t, states, training=training)
                new_carry += list(new) if isinstance(new, (list, tuple)) else [new]
                at += count
            # SimpleRNN, GRU and LSTM all output their first state; emitting the carry
            # itself keeps TensorFlow's scan happy (its outputs must match the carry).
            return new_carry, new_carry

        _, ys = ops.scan(step, init, xs)
        outs = [ops.moveaxis(ys[0], 0, 1)]
        if len(cells) == 2:
            outs.append(ops.moveaxis(ops.flip(ys[counts[0]], axis=0), 0, 1))
        return outs

    def _merge(self, forward: Any, backward: Any) -> Any:
        if self.merge_mode == "concat":
            return ops.concatenate([forward, backward], axis=-1)
        if self.merge_mode == "sum":
            return forward + backward
        if self.merge_mode == "mul":
            return forward * backward
        return (forward + backward) / 2

    def call(self, inputs: Any, training: Any = None) -> Any:
        values, segment_ids, segment_lengths = self._split(inputs)
        seg = ops.cast(segment_ids, "int32")
        edge = ops.full_like(seg[:, :1], -1)
        starts = ops.not_equal(seg, ops.concatenate([edge, seg[:, :-1]], axis=1))
        ends = ops.not_equal(seg, ops.concatenate([seg[:, 1:], edge], axis=1))
        real = ops.cast(ops.greater(seg, 0), self.compute_dtype)
        dtype = self.compute_dtype
        keeps = [1 - ops.cast(starts, dtype), 1 - ops.cast(ends, dtype)]
        outs = self._run(values, keeps[: len(self._directions)], training)
        if self.return_sequences:
            outs = [o * real[:, :, None] for o in outs]
            return outs[0] if len(outs) == 1 else self._merge(*outs)
        # One output per slot: a 0/1 selection summed over time (exact: one term is nonzero).
        num_slots = ops.shape(segment_lengths)[1]  # may be dynamic on TensorFlow
        slot = ops.equal(seg[:, :, None], ops.arange(1, num_slots + 1, dtype="int32"))
        picks = [ops.logical_and(slot, ends[:, :, None]), ops.logical_and(slot, starts[:, :, None])]
        outs = [
            ops.einsum("bts,btu->bsu", ops.cast(pick, dtype), o)
            for pick, o in zip(picks, outs, strict=False)
        ]
        return outs[0] if len(outs) == 1 else self._merge(*outs)
