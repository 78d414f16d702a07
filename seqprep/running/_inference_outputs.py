"""The outputs of :func:`seqprep.predict` put back in the order of ``x``: which outputs are per
sequence and which per step (and of which field), the padding of per-step outputs cut off, and
the model's output structure rebuilt.
"""

from __future__ import annotations

from typing import Any, Literal

import keras
import numpy as np

from seqprep._core.ragged import as_ragged
from seqprep.inputs import _kernel
from seqprep.planning._inference import InferencePlan
from seqprep.running._inference_batches import _allgather, _Fields, _fixed_time_axes

Outputs = Literal["auto", "sequence", "step"]


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


def _take(
    payload: np.ndarray, at: int, count: int, dtype: np.dtype, tail: tuple[int, ...],
) -> tuple[np.ndarray, int]:
    """``count`` rows of ``tail`` items of ``dtype`` read from bytes ``payload[at:]``, and the
    position after them."""
    size = count * int(np.prod(tail, dtype=np.int64)) * dtype.itemsize
    return payload[at : at + size].view(dtype).reshape((count, *tail)), at + size


def _gather_batches(
    local: list[list[np.ndarray]], idxs: list[np.ndarray], plan: InferencePlan, processes: int,
) -> list[list[np.ndarray]]:
    """Every global batch's output leaves on every process, from each process's real rows.

    ``local[b]`` holds this process's real rows of batch ``b`` (leaves ``(r, ...)``, fill rows
    already cut) and ``idxs[b]`` their input indices. Only those are sent (one
    :func:`._inference_batches._allgather` of their bytes); each process's rows come back in
    process order, which is the order of ``plan.batch(b)`` (a filled global batch keeps its
    real rows first and each process holds a contiguous part of it), and the gathered indices
    are checked against the plan. A leaf's shape past the rows is the same on every process:
    one global program made it.
    """
    counts = np.array([i.size for i in idxs], np.int64)
    parts = [counts, *(np.asarray(i, np.int64) for i in idxs),
             *(np.ascontiguousarray(leaf) for leaves in local for leaf in leaves)]
    payloads = _allgather(np.concatenate([p.view(np.uint8).ravel() for p in parts]), processes)
    batches = len(local)
    gathered: list[list[list[np.ndarray]]] = [[[] for _ in leaves] for leaves in local]
    indices: list[list[np.ndarray]] = [[] for _ in local]
    for payload in payloads:
        theirs, at = _take(payload, 0, batches, np.dtype(np.int64), ())
        for b in range(batches):
            taken, at = _take(payload, at, int(theirs[b]), np.dtype(np.int64), ())
            indices[b].append(taken)
        for b, leaves in enumerate(local):
            for k, leaf in enumerate(leaves):
                taken, at = _take(payload, at, int(theirs[b]), leaf.dtype, leaf.shape[1:])
                gathered[b][k].append(taken)
    for b in range(batches):
        if not np.array_equal(np.concatenate(indices[b]), plan.batch(b)):
            raise RuntimeError(
                f"The processes' rows of inference batch {b} are not that batch's examples "
                "in plan order; seqprep's plan and the Keras data layout disagree on which "
                "rows each process holds.\n- Please report this with your distribution."
            )
    return [[np.concatenate(parts) for parts in leaves] for leaves in gathered]


def _as_ragged_output(result: Any) -> Any:
    """A list of per-step arrays as a ``tf.RaggedTensor`` (``ragged=True`` on delegated runs)."""
    if not isinstance(result, list):
        return result
    import tensorflow as tf

    rag = as_ragged(result, "outputs")
    return tf.RaggedTensor.from_row_splits(rag.values, rag.offsets, validate=False)


def _delegated(result: Any, ragged: bool) -> Any:
    return _as_ragged_output(result) if ragged else result


def _output_structure(model: Any, count: int) -> Any:
    """The structure of the model's outputs (None for one output or when not declared)."""
    try:
        structure = model.output
    except (AttributeError, ValueError):
        return None
    if len(keras.tree.flatten(structure)) != count or count == 1:
        return None
    return structure
