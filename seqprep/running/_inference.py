"""Inference in input order: :func:`predict` and :func:`evaluate`.

``model.predict(seqprep.bucketed_dataset(x, sampler=s))`` returns rows in the sampler's plan
order, not in the order of ``x``, and per-step outputs come back padded. :func:`predict`
plans its own batches for inference (sorted by length, no shuffle, sized by a token budget;
see :mod:`seqprep.planning._inference`), runs them through the model's own predict step
(``model.predict_on_batch``) and puts every output back where its sequence was: an array for
per-sequence outputs, one unpadded array per sequence (or a ``tf.RaggedTensor``) for per-step
outputs. :func:`evaluate` runs the same batches through the compiled loss and metrics and
accumulates them so that the result is the one-batch value over all real examples and steps.

Other kinds of model go to their own runner: a model with stateful recurrent layers to
:func:`seqprep.predict_tbptt` / :func:`seqprep.evaluate_tbptt`, a
:class:`~seqprep.LengthEnsemble` to its own ``predict`` / ``evaluate``. A model built on
:class:`seqprep.layers.PackedRNN` is fed one sequence per packed row (segment id 1 on its
steps), which is exactly the unpacked computation with the same weights.

Everything here goes through public Keras APIs (``predict_on_batch``, ``compute_loss``,
``compute_metrics``, ``stateless_call``) plus
:func:`seqprep.running._keras_private.keras_mask`, so it runs on TensorFlow, JAX and PyTorch.
TensorFlow is imported only for ``ragged=True``.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import keras
import numpy as np
from keras import ops
from numpy.typing import DTypeLike

from seqprep._core.casts import check_cast
from seqprep._core.checks import check_bool, check_choice, check_finite_features, check_int
from seqprep._core.ragged import Ragged, as_ragged, lengths_of
from seqprep.inputs import _kernel
from seqprep.inputs._padding import Side
from seqprep.inputs._stage import (
    field_label,
    pack,
    resolve_dtype,
    split_fields,
    values_with_pad_row,
)
from seqprep.inputs._targets import Targets, resolve_targets
from seqprep.planning._inference import InferencePlan, plan_inference
from seqprep.planning._shapes import length_grid
from seqprep.running._keras_private import keras_mask

__all__ = ["DEFAULT_MAX_TOKENS", "evaluate", "predict"]

# Padded steps per batch (rows x width, summed over the fields). On 20,000 long-tailed
# sequences with a masked GRU (docs/benchmarks.md, TensorFlow on CPU) 16384 was the fastest of
# 4096 / 8192 / 16384 / 32768 (0.98 / 0.86 / 0.61 / 0.68 s); a batch of per-step outputs over
# a 10,000-class vocabulary then stays near 650 MB of float32.
DEFAULT_MAX_TOKENS = 16384

Outputs = Literal["auto", "sequence", "step"]
PadTo = Literal["auto", "batch"]
_PACKED_KEYS = ("values", "segment_ids", "segment_lengths")


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Fields:
    """The inputs as one or more ragged fields (the one input stage's structure rule,
    :func:`seqprep.inputs._stage.split_fields`), each with its kernel table."""

    kind: str  # "single", "dict" or "tuple"
    keys: tuple[Any, ...]
    rags: tuple[Ragged, ...]
    tables: tuple[_kernel.Table, ...]

    @property
    def keyed(self) -> bool:
        return self.kind != "single"

    @property
    def names(self) -> tuple[str, ...]:
        """Field names: the dict's keys, positions ``"0", "1", ...`` of a tuple, or ``"x"``."""
        return ("x",) if self.kind == "single" else tuple(str(k) for k in self.keys)

    def label(self, f: int) -> str:
        """How messages name field ``f``: ``x``, ``x['encoder']`` or ``x[0]``."""
        return field_label("x", self.kind, self.keys[f])

    @property
    def lengths(self) -> np.ndarray:
        """int64 ``(n, fields)``."""
        return np.stack([r.lengths for r in self.rags], axis=1)

    def __len__(self) -> int:
        return len(self.rags[0])

    def gather(self, idx: np.ndarray, widths: np.ndarray, padding: str) -> list[np.ndarray]:
        """Each field of batch ``idx`` padded to its width (the one kernel)."""
        out = []
        for table, width in zip(self.tables, widths, strict=True):
            src, real = _kernel.positions(table.starts, table.lengths, idx, int(width), padding,
                                          table.pad_index)
            out.append(_kernel.gather_batch(table, src, real, None)[0])
        return out

    def pack(self, arrays: list[Any]) -> Any:
        return pack(self.kind, self.keys, arrays)


def _fields(x: Any, dtype: DTypeLike | None, value: Any, allow_nonfinite: bool) -> _Fields:
    """``x`` as fields: a dict or a tuple of sequence collections, or one collection. Dtypes,
    pad value and non-finite values follow the one input stage's rules."""
    kind, keys, items = split_fields(x)
    labels = [field_label("x", kind, k) for k in keys]
    rags = tuple(as_ragged(item, label) for item, label in zip(items, labels, strict=True))
    counts = {k: len(r) for k, r in zip(keys, rags, strict=True)}
    if len(set(counts.values())) > 1:
        raise ValueError(
            f"Argument `x` holds fields with different numbers of sequences: {counts}\n"
            "- Every field needs one entry per example, in the same order."
        )
    if len(rags[0]) == 0:
        raise ValueError(
            "Argument `x` must hold at least one sequence. Received 0 sequences\n"
            "- Pass the sequences to run the model on."
        )
    tables = []
    for rag, label in zip(rags, labels, strict=True):
        check_finite_features(rag.values, label, offsets=rag.offsets,
                              allow_nonfinite=allow_nonfinite)
        values = values_with_pad_row(rag, resolve_dtype(dtype, rag.values.dtype, label), value,
                                     label)
        tables.append(_kernel.table(values, rag.offsets[:-1], rag.lengths))
    return _Fields(kind, tuple(keys), rags, tuple(tables))


# --------------------------------------------------------------------------- the model


def _walk(layer: Any) -> list[Any]:
    """Every layer inside ``layer`` (models, wrappers and Bidirectional included)."""
    found, stack = [], [layer]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(getattr(current, "layers", None) or [])
        for attr in ("layer", "forward_layer", "backward_layer"):
            inner = getattr(current, attr, None)
            if isinstance(inner, keras.layers.Layer):
                stack.append(inner)
    return found[1:]


def _model_kind(model: Any) -> str:
    """``"ensemble"``, ``"stateful"``, ``"packed"`` or ``"plain"``."""
    from seqprep.running._ensemble import LengthEnsemble

    if isinstance(model, LengthEnsemble):
        return "ensemble"
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `model` must be a Keras model or a seqprep.LengthEnsemble. Received: "
            f"model of type {type(model).__name__}\n- Pass the `keras.Model` to run."
        )
    layers = _walk(model)
    if any(getattr(layer, "stateful", False) for layer in layers):
        return "stateful"
    from seqprep.layers import PackedRNN

    if any(isinstance(layer, PackedRNN) for layer in layers):
        return "packed"
    return "plain"


def _symbolic_inputs(model: Any) -> Any:
    try:
        return model.input
    except (AttributeError, ValueError):
        return None


def _check_model_inputs(model: Any, fields: _Fields) -> None:
    """Refuse ``x`` whose fields do not match the model's inputs, naming both."""
    inputs = _symbolic_inputs(model)
    if inputs is None:
        return
    if isinstance(inputs, dict):
        expected = sorted(inputs)
    else:
        flat = keras.tree.flatten(inputs)
        if len(flat) == 1 and not fields.keyed:
            return
        expected = [getattr(t, "name", str(i)) for i, t in enumerate(flat)]
    if fields.kind == "tuple" and len(expected) == len(fields.rags) \
            and not isinstance(inputs, dict):
        return  # a tuple of fields feeds the model's inputs by position
    got = {"dict": sorted(fields.names), "single": ["x (one sequence collection)"],
           "tuple": [f"a tuple of {len(fields.rags)} fields"]}[fields.kind]
    if fields.kind == "dict" and sorted(fields.names) == sorted(expected):
        return
    raise ValueError(
        f"Argument `x` does not match the inputs of `model`: the model takes {len(expected)} "
        f"input(s) named {expected}. Received: {got}\n"
        + ("- Pass `x` as a dict with one sequence collection per input name, e.g. "
           f"{{{', '.join(repr(e) + ': ...' for e in expected)}}}."
           if len(expected) > 1 or isinstance(inputs, dict) else
           "- Pass one sequence collection (a list of arrays) for the model's one input.")
    )


def _fixed_time_axes(model: Any, fields: _Fields) -> list[int | None]:
    """The concrete time axis the model's input of each field declares, or None."""
    inputs = _symbolic_inputs(model)
    if inputs is None:
        return [None] * len(fields.names)
    if isinstance(inputs, dict) and not fields.keyed and "values" in inputs:  # packed rows
        shapes = [inputs["values"].shape]
    elif isinstance(inputs, dict):
        shapes = [getattr(inputs.get(n), "shape", None) for n in fields.names]
    else:
        flat = keras.tree.flatten(inputs)
        by_name = {getattr(t, "name", None): t for t in flat}
        if fields.kind == "single":
            shapes = [flat[0].shape]
        elif fields.kind == "tuple":
            shapes = [t.shape for t in flat[: len(fields.rags)]]
            shapes += [None] * (len(fields.rags) - len(shapes))
        else:
            shapes = [getattr(by_name.get(n), "shape", None) for n in fields.names]
    return [int(s[1]) if s is not None and len(s) > 1 and s[1] is not None else None
            for s in shapes]


# --------------------------------------------------------------------------- planning


def _compiles_per_shape(model: Any) -> bool:
    """Whether the backend compiles one program per input shape for this model."""
    backend = keras.backend.backend()
    if backend == "jax":
        return not getattr(model, "run_eagerly", False)
    return backend == "tensorflow" and getattr(model, "jit_compile", False) is True


def _plan(
    fields: _Fields, model: Any, *, max_tokens: int, batch_size: int | None, pad_to: Any,
) -> InferencePlan:
    lengths = fields.lengths
    fixed = _fixed_time_axes(model, fields)
    if isinstance(pad_to, str):
        check_choice("pad_to", pad_to, ("auto", "batch"))
    else:
        pad_to = check_int("pad_to", pad_to, minimum=1,
                           fix='Pass pad_to="auto", pad_to="batch" or a positive width.')
    on_grid = pad_to == "auto" and _compiles_per_shape(model)
    grids: list[np.ndarray | None] = []
    for j in range(len(fields.names)):
        width = pad_to if not isinstance(pad_to, str) else fixed[j]
        if width is None:  # this field's longest per batch, or a grid on compiling backends
            grids.append(length_grid(lengths[:, j]) if on_grid else None)
            continue
        longest = int(lengths[:, j].max())
        if longest > width:
            i = int(np.argmax(lengths[:, j]))
            raise ValueError(
                f"Argument `x` holds a sequence longer than the width the model takes: "
                f"{fields.label(j)}[{i}] has {longest} steps, the width is {width} "
                f"(pad_to={pad_to!r}, model input time axis {fixed[j]}).\n- Truncate "
                "the sequences first, or build the model with a time axis of None."
            )
        grids.append(np.array([width], np.int64))
    return plan_inference(lengths, max_tokens=max_tokens, batch_size=batch_size, grids=grids)


# --------------------------------------------------------------------------- running


def _verbosity(verbose: Any) -> int:
    if verbose == "auto":
        return 1
    if isinstance(verbose, bool) or not isinstance(verbose, (int, np.integer)):
        raise ValueError(
            f"Argument `verbose` must be 'auto', 0, 1 or 2. Received: verbose={verbose!r}"
        )
    return check_choice("verbose", int(verbose), (0, 1, 2))


def _callback_list(model: Any, callbacks: Any, verbose: int, steps: int) -> Any:
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return callbacks
    return keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0, verbose=verbose, epochs=1,
        steps=steps, model=model,
    )


def _packed_inputs(model: Any, xb: np.ndarray, real: np.ndarray, lengths: np.ndarray) -> dict:
    """One sequence per packed row: segment id 1 on its steps, its length in slot 1."""
    inputs = _symbolic_inputs(model)
    slots = 1
    if isinstance(inputs, dict) and "segment_lengths" in inputs:
        shape = inputs["segment_lengths"].shape
        slots = int(shape[1]) if len(shape) > 1 and shape[1] is not None else 1
    seg_lengths = np.zeros((xb.shape[0], slots), np.int32)
    seg_lengths[:, 0] = lengths
    packed = {"values": xb, "segment_ids": real.astype(np.int32),
              "segment_lengths": seg_lengths}
    if isinstance(inputs, dict):
        packed = {k: v for k, v in packed.items() if k in inputs}
    return packed


class _Batches:
    """The planned batches of ``fields`` as model inputs (plain or packed)."""

    def __init__(self, fields: _Fields, plan: InferencePlan, padding: str, packed: Any) -> None:
        self.fields, self.plan, self.padding, self.packed = fields, plan, padding, packed

    def __len__(self) -> int:
        return len(self.plan)

    def inputs(self, b: int) -> tuple[np.ndarray, Any]:
        idx = self.plan.batch(b)
        arrays = self.fields.gather(idx, self.plan.widths[b], self.padding)
        if self.packed is not None:
            table = self.fields.tables[0]
            _, real = _kernel.positions(table.starts, table.lengths, idx,
                                        int(self.plan.widths[b, 0]), self.padding,
                                        table.pad_index)
            return idx, _packed_inputs(self.packed, arrays[0], real, table.lengths[idx])
        return idx, self.fields.pack(arrays)


def _run_predict(model: Any, batches: _Batches, callbacks: Any) -> list[list[np.ndarray]]:
    """Every batch's outputs, flattened (one list of leaves per batch), with Keras's
    predict callbacks and progress bar."""
    outs = []
    callbacks.on_predict_begin()
    for b in range(len(batches)):
        callbacks.on_predict_batch_begin(b)
        _, xb = batches.inputs(b)
        with warnings.catch_warnings():
            # Keras warns per call that a structure of inputs does not match the model's
            # declared structure when a dict arrives for a list of named inputs; names match.
            warnings.filterwarnings("ignore", message=".*does not match the expected structure")
            pred = model.predict_on_batch(xb)
        outs.append([np.asarray(leaf) for leaf in keras.tree.flatten(pred)])
        callbacks.on_predict_batch_end(b, {"outputs": pred})
    callbacks.on_predict_end()
    return outs


def _output_spec(model: Any) -> list[Any] | None:
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    return list(outputs) if outputs else None


def _step_field(
    leaf: int, outs: list[list[np.ndarray]], plan: InferencePlan, fields: _Fields,
    outputs: str, model: Any,
) -> int | None:
    """The field a per-step output leaf follows, or None for a per-sequence output."""
    if outputs == "sequence":
        return None
    widths = plan.widths
    matching = []
    for f in range(widths.shape[1]):
        if all(o[leaf].ndim >= 2 and o[leaf].shape[1] == widths[b, f]
               for b, o in enumerate(outs)):
            matching.append(f)
    if outputs not in ("auto", "step"):  # a field name
        if outputs not in fields.names:
            raise ValueError(
                f"Argument `outputs` must be 'auto', 'sequence', 'step' or the name of a field "
                f"of `x` {list(fields.names)}. Received: outputs={outputs!r}"
            )
        f = fields.names.index(outputs)
        if f not in matching:
            shapes = sorted({tuple(o[leaf].shape) for o in outs})[:3]
            raise ValueError(
                f"Argument `outputs`={outputs!r} says the model's output {leaf} has one step "
                f"per step of that field, but its time axis does not follow the field's padded "
                f"width. Received output shapes {shapes}\n- Pass outputs='sequence' if the "
                "output is one per sequence."
            )
        return f
    if not matching:
        if outputs == "step":
            shapes = sorted({tuple(o[leaf].shape) for o in outs})[:3]
            raise ValueError(
                f"Argument `outputs`='step', but the model's output {leaf} has no time axis "
                f"equal to the batches' padded width. Received output shapes {shapes}\n- Pass "
                "outputs='sequence' (or 'auto') for one output per sequence."
            )
        return None
    lengths = fields.lengths
    distinct = [f for f in matching
                if not any(np.array_equal(lengths[:, f], lengths[:, g]) for g in matching
                           if g < f)]
    if len(distinct) > 1:
        names = [fields.names[f] for f in distinct]
        raise ValueError(
            f"The model's output {leaf} has a time axis as wide as several fields of `x` "
            f"{names} in every batch, so which field it follows is ambiguous. Received: "
            f"outputs={outputs!r}\n- Pass outputs=<field name>, e.g. outputs={names[0]!r}."
        )
    f = distinct[0]
    if outputs == "step" or np.unique(widths[:, f]).size > 1:
        return f
    # Every batch had one width: the time axis may equal it by coincidence. Ask the model.
    spec = _output_spec(model)
    if spec is None or leaf >= len(spec) or len(spec[leaf].shape) < 2:
        if np.all(lengths[:, f] == widths[0, f]):
            return f  # no padding at all: both readings give the same values
        raise ValueError(
            f"The model's output {leaf} has shape {tuple(outs[0][leaf].shape)}, whose axis 1 "
            f"equals the padded width ({int(widths[0, f])}) of every batch, and the model does "
            "not declare its output shape, so seqprep cannot tell one output per step from "
            f"one per sequence. Received: outputs={outputs!r}\n"
            "- Pass outputs='step' or outputs='sequence'."
        )
    axis = spec[leaf].shape[1]
    fixed = _fixed_time_axes(model, fields)[f]
    return f if axis is None or (fixed is not None and axis == fixed) else None


def _assemble(
    outs: list[list[np.ndarray]], plan: InferencePlan, fields: _Fields, padding: str,
    outputs: str, model: Any, ragged: bool, slot_axis: bool,
) -> list[Any]:
    """Each output leaf in input order: an array, or per-step outputs unpadded."""
    n = len(fields)
    results = []
    for leaf in range(len(outs[0]) if outs else 0):
        if slot_axis:  # a packed model's one output per slot: slot 0 holds the sequence
            for o in outs:
                o[leaf] = o[leaf][:, 0]
            f = None
        else:
            f = _step_field(leaf, outs, plan, fields, outputs, model)
        first = outs[0][leaf]
        if f is None:
            tails = {o[leaf].shape[1:] for o in outs}
            if len(tails) > 1:
                raise ValueError(
                    f"The model's output {leaf} changes shape from batch to batch "
                    f"({sorted(tails)[:3]}), but not with the padded width of any field of `x`"
                    ", so it is neither one output per sequence nor one per step.\n- Pass "
                    "outputs='step' or a field name if it follows a field's steps."
                )
            result = np.empty((n, *first.shape[1:]), first.dtype)
            for b, o in enumerate(outs):
                result[plan.batch(b)] = o[leaf]
            results.append(result)
            continue
        table, rag = fields.tables[f], fields.rags[f]
        flat = np.empty((int(rag.offsets[-1]), *first.shape[2:]), first.dtype)
        for b, o in enumerate(outs):
            src, real = _kernel.positions(table.starts, table.lengths, plan.batch(b),
                                          int(plan.widths[b, f]), padding, table.pad_index)
            flat[src[real]] = o[leaf][real]
        if ragged:
            import tensorflow as tf

            results.append(tf.RaggedTensor.from_row_splits(flat, rag.offsets, validate=False))
        else:
            results.append(np.split(flat, rag.offsets[1:-1]))
    return results


def _as_ragged_output(result: Any) -> Any:
    """A list of per-step arrays as a ``tf.RaggedTensor`` (``ragged=True`` on delegated runs)."""
    if not isinstance(result, list):
        return result
    import tensorflow as tf

    rag = as_ragged(result, "outputs")
    return tf.RaggedTensor.from_row_splits(rag.values, rag.offsets, validate=False)


def _stateful_sizes(model: Any, x: Any, window: int | None, max_tokens: int) -> tuple[int, int]:
    """``(batch_size, window)`` to run a stateful model's TBPTT plan with."""
    inputs = _symbolic_inputs(model)
    shape = tuple(keras.tree.flatten(inputs)[0].shape) if inputs is not None else ()
    batch = shape[0] if shape else None
    if batch is None:
        states = [v for layer in _walk(model) if getattr(layer, "stateful", False)
                  for v in keras.tree.flatten(getattr(layer, "states", None) or [])]
        batch = int(states[0].shape[0]) if states else None
    if batch is None:
        raise ValueError(
            "Argument `model` is stateful but declares no batch size, so seqprep cannot "
            "tell how many rows its state holds.\n- Build it with "
            "`keras.Input(batch_shape=(batch_size, window, ...))`."
        )
    if window is None:
        if len(shape) > 1 and shape[1] is not None:
            window = int(shape[1])
        else:
            longest = int(lengths_of(x, "x").max(initial=1))
            window = max(1, min(longest, max_tokens // int(batch)))
    return int(batch), check_int("window", window, minimum=1)


def _last_rnn_returns_sequences(model: Any) -> bool:
    rnns = [layer for layer in _walk(model) if isinstance(layer, keras.layers.RNN)]
    ordered = [layer for layer in model.layers if layer in rnns] if hasattr(model, "layers") else []
    last = (ordered or rnns)[-1] if (ordered or rnns) else None
    return bool(getattr(last, "return_sequences", True))


def _check_common(batch_size: Any, max_tokens: Any, padding: Any, outputs: Any) -> tuple:
    batch_size = check_int("batch_size", batch_size, minimum=1, allow_none=True)
    max_tokens = check_int("max_tokens", max_tokens, minimum=1)
    check_choice("padding", padding, ("pre", "post"))
    if not isinstance(outputs, str):
        raise ValueError(
            f"Argument `outputs` must be 'auto', 'sequence', 'step' or a field name. "
            f"Received: outputs={outputs!r}"
        )
    return batch_size, max_tokens


def predict(
    model: Any,
    x: Any,
    *,
    batch_size: int | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    padding: Side = "post",
    value: Any = 0,
    pad_to: PadTo | int = "auto",
    outputs: Outputs | str = "auto",
    ragged: bool = False,
    verbose: int | str = "auto",
    callbacks: Sequence[Any] | None = None,
    dtype: DTypeLike | None = None,
    allow_nonfinite: bool = False,
    window: int | None = None,
) -> Any:
    """The model's outputs for every sequence of ``x``, in the order of ``x``.

    Batches are planned for inference: sequences sorted by length, no shuffle, each batch as
    many rows as fit ``max_tokens`` padded steps (at most ``batch_size``), so short sequences
    go in large batches. Each batch is padded like :func:`seqprep.bucketed_dataset` pads it
    and run through the model's own predict step (``model.predict_on_batch``), then every
    output goes back to its sequence's position. ``model.predict`` on a
    :func:`seqprep.bucketed_dataset` returns rows in the sampler's plan order instead.

    What comes back, per output of the model (a structure of outputs keeps its structure):

    * one output per sequence, ``(B, ...)``: an array ``(n, ...)``, row ``i`` for ``x[i]``;
    * one output per step, ``(B, T, ...)`` with ``T`` the batch's padded width: a list of
      ``n`` arrays ``(T_i, ...)``, the padding cut off (a ``tf.RaggedTensor`` of shape
      ``(n, None, ...)`` with ``ragged=True``). The rule (``outputs="auto"``): an output is
      per step when its axis 1 equals the padded width in every batch and, if every batch had
      the same width, the model declares that axis as its input's time axis.

    Widths (``pad_to="auto"``): each batch's longest sequence on TensorFlow and PyTorch; on
    JAX (and TensorFlow with ``jit_compile=True``), which compile one program per shape, the
    smallest of at most 16 widths chosen for these lengths (:func:`seqprep.width_grid`'s
    rule). A model whose input declares a time axis gets that width.

    Other models: a model with stateful recurrent layers runs through
    :func:`seqprep.predict_tbptt` (its batch size, ``window`` steps at a time); a
    :class:`seqprep.LengthEnsemble` through its own ``predict``; a model built on
    :class:`seqprep.layers.PackedRNN` gets one sequence per packed row, which computes what
    the unpacked layer computes, with the same weights.

    Args:
        model: a Keras model (compiled or not), or a :class:`seqprep.LengthEnsemble`.
        x: a sequence collection (list of ``(T_i, ...)`` arrays or lists, ``tf.RaggedTensor``,
            pandas Series of arrays, array ``(n, T, ...)``), or a dict of them, one per named
            model input, or a tuple of them, one per input in order (each field padded to its
            own width; the structure rule is :func:`seqprep.inputs._stage.split_fields`'s).
        batch_size: the most rows per batch (None: only the token budget limits rows).
        max_tokens: padded steps per batch, rows x width summed over the fields. A sequence
            longer than the budget runs in a batch of its own.
        padding: ``"post"`` (default) or ``"pre"``, as the model was trained.
        value: padding value of the inputs.
        pad_to: ``"auto"``, ``"batch"`` (each batch's longest, also on JAX) or one int width
            for every batch.
        outputs: ``"auto"``, ``"sequence"``, ``"step"``, or the name of the field of a dict
            ``x`` whose steps the per-step outputs follow.
        ragged: return per-step outputs as a ``tf.RaggedTensor`` (imports TensorFlow).
        verbose: ``"auto"`` or 1 (progress bar), 0 (silent), 2 (one line), as Keras's
            ``predict``.
        callbacks: Keras callbacks; they get ``on_predict_*`` calls as in ``model.predict``.
        dtype: dtype of the input batches (default: integers keep theirs, floats become
            float32).
        allow_nonfinite: accept NaN/inf inputs (refused by default).
        window: stateful models only: steps per window (default: the model's time axis, or
            the longest sequence within ``max_tokens``).

    Returns:
        For a single-output model, an array ``(n, ...)`` or a list of ``n`` arrays (or a
        ``tf.RaggedTensor``); for several outputs, the same structure as the model's outputs
        holding one of those each.

    Raises:
        ValueError: ``x`` does not match the model's inputs (count or names), fields of
            different counts, bad ``batch_size``/``max_tokens``/``padding``/``pad_to``/
            ``outputs``, NaN/inf inputs, a sequence longer than the model's fixed time axis,
            or outputs that are neither per sequence nor per step.
        TypeError: ``model`` is not a Keras model or a LengthEnsemble, or ``x`` is not a
            sequence collection.

    Example:
        >>> import keras, numpy as np
        >>> import seqprep as sp
        >>> inputs = keras.Input((None, 2))
        >>> steps = keras.layers.GRU(3, return_sequences=True)(keras.layers.Masking()(inputs))
        >>> model = keras.Model(inputs, [keras.layers.GlobalAveragePooling1D()(steps), steps])
        >>> x = [np.ones((n, 2), "float32") for n in (4, 1, 3)]
        >>> pooled, per_step = sp.predict(model, x, verbose=0)
        >>> pooled.shape, [a.shape for a in per_step]
        ((3, 3), [(4, 3), (1, 3), (3, 3)])
        >>> padded = sp.pad_sequences(x, padding="post", dtype="float32")
        >>> bool(np.allclose(pooled, model.predict(padded, verbose=0)[0], atol=1e-5))
        True
    """
    batch_size, max_tokens = _check_common(batch_size, max_tokens, padding, outputs)
    check_bool("ragged", ragged)
    verbose = _verbosity(verbose)
    kind = _model_kind(model)
    if kind == "ensemble":
        return _delegated(model.predict(x, batch_size=batch_size or 256), ragged)
    if kind == "stateful":
        rows, window = _stateful_sizes(model, x, window, max_tokens)
        per_step = {"step": True, "sequence": False}.get(outputs)
        if per_step is None:
            per_step = _last_rnn_returns_sequences(model)
        from seqprep.running._tbptt import predict_tbptt

        result = predict_tbptt(model, x, window=window, batch_size=rows,
                               return_sequences=per_step, verbose=verbose)
        return _delegated(result, ragged)
    fields = _fields(x, dtype, value, allow_nonfinite)
    packed = model if kind == "packed" else None
    if packed is not None and fields.keyed:
        raise ValueError(
            "Argument `x` is a dict, but a PackedRNN model takes one sequence collection (the "
            f"packed values). Received fields {list(fields.names)}\n- Pass the sequences alone."
        )
    if packed is None:
        _check_model_inputs(model, fields)
    plan = _plan(fields, model, max_tokens=max_tokens, batch_size=batch_size, pad_to=pad_to)
    batches = _Batches(fields, plan, padding, packed)
    outs = _run_predict(model, batches, _callback_list(model, callbacks, verbose, len(plan)))
    slot_axis = packed is not None and not _packed_returns_sequences(model)
    leaves = _assemble(outs, plan, fields, padding, outputs, model, ragged, slot_axis)
    structure = _output_structure(model, len(leaves))
    if structure is None:
        return leaves[0] if len(leaves) == 1 else leaves
    return keras.tree.pack_sequence_as(structure, leaves)


def _delegated(result: Any, ragged: bool) -> Any:
    return _as_ragged_output(result) if ragged else result


def _packed_returns_sequences(model: Any) -> bool:
    from seqprep.layers import PackedRNN

    packed = [layer for layer in _walk(model) if isinstance(layer, PackedRNN)]
    return packed[0].return_sequences if len(packed) == 1 else packed[-1].return_sequences


def _output_structure(model: Any, count: int) -> Any:
    """The structure of the model's outputs (None for one output or when not declared)."""
    try:
        structure = model.output
    except (AttributeError, ValueError):
        return None
    if len(keras.tree.flatten(structure)) != count or count == 1:
        return None
    return structure


# --------------------------------------------------------------------------- evaluate


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
    if isinstance(resolved, Ragged):
        values = resolved.values
        if values.dtype.kind == "f" and values.dtype.itemsize > 4:
            check_cast(values, np.float32, name="y", locate=resolved.locator("y"),
                       header="Argument `y` does not fit float32")
            resolved = Ragged(values.astype(np.float32), resolved.offsets)
    else:
        resolved = np.asarray(resolved)
        if resolved.dtype.kind == "f" and resolved.dtype.itemsize > 4:
            resolved = resolved.astype(np.float32)
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
    verbose: int | str = "auto",
    callbacks: Sequence[Any] | None = None,
    dtype: DTypeLike | None = None,
    allow_nonfinite: bool = False,
    window: int | None = None,
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
        batch_size, max_tokens, padding, value, pad_to, verbose, callbacks, dtype,
            allow_nonfinite, window: as in :func:`predict`.
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
    batch_size, max_tokens = _check_common(batch_size, max_tokens, padding, "auto")
    verbose = _verbosity(verbose)
    kind = _model_kind(model)
    if kind == "ensemble":
        return model.evaluate(x, y, batch_size=batch_size or 256, targets=targets)
    _check_compiled(model)
    if kind == "stateful":
        rows, window = _stateful_sizes(model, x, window, max_tokens)
        from seqprep.running._tbptt import evaluate_tbptt

        return evaluate_tbptt(model, x, y, window=window, batch_size=rows, return_dict=True,
                              verbose=verbose, targets=targets)
    fields = _fields(x, dtype, value, allow_nonfinite)
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
