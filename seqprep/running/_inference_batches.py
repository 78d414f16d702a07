"""The batches of :func:`seqprep.predict` and :func:`seqprep.evaluate`, in their planned order.

What kind of model runs (plain, packed, stateful, ensemble) and what its inputs accept; the
fields of ``x`` checked once (:class:`_Fields`); the inference plan (sorted by length, cut by a
token budget, widths for the backend); each planned batch padded and packed for the model
(:class:`_Batches`); and the arguments both share, Keras's own ``verbose`` / ``callbacks``
among them.
"""

from __future__ import annotations

import weakref
import zlib
from dataclasses import dataclass, replace
from typing import Any, Literal

import keras
import numpy as np
from keras import ops
from numpy.typing import DTypeLike

from seqprep._core.checks import check_choice, check_finite_features, check_int
from seqprep._core.options import Options, options_for
from seqprep._core.ragged import Ragged, as_ragged, lengths_of
from seqprep.inputs import _kernel
from seqprep.inputs._stage_fields import field_label, pack, per_field, split_fields
from seqprep.inputs._stage_rules import resolve_dtype, values_with_pad_row
from seqprep.planning._inference import InferencePlan, plan_inference
from seqprep.planning._shapes import length_grid
from seqprep.running._data_parallel import Layout, resolve_data_parallel
from seqprep.running._floatx import keras_floatx
from seqprep.running._keras_private import keras_mask

# Padded steps per batch (rows x width, summed over the fields). On 20,000 long-tailed
# sequences with a masked GRU (docs/benchmarks.md, TensorFlow on CPU) 16384 was the fastest of
# 4096 / 8192 / 16384 / 32768 (0.98 / 0.86 / 0.61 / 0.68 s); a batch of per-step outputs over
# a 10,000-class vocabulary then stays near 650 MB of float32.
DEFAULT_MAX_TOKENS = 16384

PadTo = Literal["auto", "batch"]
_PACKED_KEYS = ("values", "segment_ids", "segment_lengths")


@dataclass(frozen=True)
class _Fields:
    """The inputs as one or more ragged fields (the one input stage's structure rule,
    :func:`seqprep.inputs._stage_fields.split_fields`), each with its kernel table."""

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
    dtypes = per_field("dtype", dtype, kind, tuple(keys))
    floatx = keras_floatx()
    for rag, label, field_dtype in zip(rags, labels, dtypes, strict=True):
        check_finite_features(rag.values, label, offsets=rag.offsets,
                              allow_nonfinite=allow_nonfinite)
        values = values_with_pad_row(
            rag, resolve_dtype(field_dtype, rag.values.dtype, label, floatx), value, label)
        tables.append(_kernel.table(values, rag.offsets[:-1], rag.lengths))
    return _Fields(kind, tuple(keys), rags, tuple(tables))


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


def _filled(
    fields: _Fields, plan: InferencePlan, data_parallel: Any, caller: str,
) -> tuple[_Fields, InferencePlan, Layout | None]:
    """``fields`` and this process's part of ``plan`` with every batch a multiple of the
    data-parallel size, and the layout (None without one: both unchanged).

    Fill rows (index ``len(fields)``, the tables' fill sequence) come after each global batch's
    real rows (:func:`seqprep.planning._fill.fill_batches`); with several ``jax.distributed``
    processes each keeps its contiguous ``B' / P`` rows of every batch of the same global plan
    (checked equal on every process first), so its own real rows come first in each of its
    batches. The runners leave fill rows out of outputs and metrics."""
    layout = resolve_data_parallel(data_parallel, caller=caller)
    if layout is None:
        return fields, plan, None
    if layout.num_processes > 1:
        _check_same_plan(plan, len(fields), layout, caller)
    filled = layout.fill(plan.rows, plan.splits, fill_index=len(fields))
    splits = np.concatenate([[0], np.cumsum(filled.sizes)]).astype(np.int64)
    tables = tuple(_kernel.with_fill(t) for t in fields.tables)
    return (replace(fields, tables=tables),
            InferencePlan(filled.rows, splits, plan.widths, plan.epoch), layout)


def _refuse_processes(data_parallel: Any, caller: str) -> None:
    """Refuse a :class:`seqprep.LengthEnsemble` under a layout over several processes: its
    models run whole batches of numpy (``predict_on_batch``), not each process's rows."""
    layout = resolve_data_parallel(data_parallel, caller=caller)
    if layout is not None and layout.num_processes > 1:
        raise ValueError(
            f"`{caller}` of a seqprep.LengthEnsemble runs in one process, but the Keras "
            f"distribution spans {layout.num_processes} processes. Received: a LengthEnsemble "
            "as `model`\n- Run it in one process (keras.distribution.set_distribution(None) "
            "there), or pass options=seqprep.Options(data_parallel=None) to run it whole on "
            "every process."
        )


def _allgather(payload: np.ndarray, processes: int) -> list[np.ndarray]:
    """Every process's bytes (a 1-D uint8 array, of any length), in process order, on every
    process: two ``jax.experimental.multihost_utils.process_allgather`` calls (the lengths,
    then the payloads padded to the longest)."""
    from jax.experimental import multihost_utils

    size = np.array([payload.size], np.int64).view(np.uint8)
    sizes = np.ascontiguousarray(
        np.asarray(multihost_utils.process_allgather(size)).reshape(processes, 8)
    ).view(np.int64).ravel()
    padded = np.zeros(max(int(sizes.max()), 1), np.uint8)
    padded[: payload.size] = payload
    stacked = np.asarray(multihost_utils.process_allgather(padded)).reshape(processes, -1)
    return [stacked[q, : int(sizes[q])] for q in range(processes)]


def _check_same_plan(plan: InferencePlan, n: int, layout: Layout, caller: str) -> None:
    """Refuse, on every process alike, inputs whose global plans differ between processes:
    each process would run its rows of other batches, and the collectives would not match."""
    digest = np.array([n, len(plan), zlib.crc32(np.ascontiguousarray(plan.rows).tobytes()),
                       zlib.crc32(np.ascontiguousarray(plan.widths).tobytes())], np.int64)
    digests = [d.view(np.int64) for d in _allgather(digest.view(np.uint8),
                                                    layout.num_processes)]
    if any(not np.array_equal(d, digests[0]) for d in digests):
        seen = ", ".join(f"process {q}: {int(d[0])} sequences in {int(d[1])} batches"
                         for q, d in enumerate(digests))
        raise ValueError(
            f"`{caller}` under a Keras distribution over {layout.num_processes} processes plays "
            "one global plan of `x` on every process (each process runs its rows of every "
            f"batch), but the processes planned different batches. Received: {seen}\n"
            "- Pass the same whole `x` (and the same arguments) on every process, not each "
            "process's own share; every process gets the whole result back."
        )


def _distributed(x: Any, processes: int = 1) -> Any:
    """``x`` laid out over the devices of the Keras distribution, when one is set (JAX), so
    that each device computes its rows of the batch; ``x`` itself otherwise. With several
    processes ``x`` is this process's rows, made a global array as Keras's JAX trainer makes
    its per-process batches (``jax.make_array_from_process_local_data`` on the data layout)."""
    if keras.backend.backend() != "jax":
        return x
    dist = keras.distribution.distribution()
    if dist is None:
        return x
    if processes > 1:
        import jax

        return keras.tree.map_structure(lambda a: jax.make_array_from_process_local_data(
            dist.get_data_layout(a.shape).backend_layout, a), x)
    return keras.tree.map_structure(
        lambda a: keras.distribution.distribute_tensor(a, dist.get_data_layout(a.shape)), x)


def _host_rows(leaf: Any) -> np.ndarray:
    """This process's rows of a global output (the inverse of
    ``jax.make_array_from_process_local_data`` on the data layout); the array itself when this
    process holds it all."""
    import jax

    if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
        return np.asarray(leaf)
    from jax.experimental import multihost_utils

    dist = keras.distribution.distribution()
    spec = jax.sharding.PartitionSpec(dist.batch_dim_name)
    return np.asarray(multihost_utils.global_array_to_host_local_array(
        leaf, dist.device_mesh.backend_mesh, spec))


class _Forward:
    """``model(x, training=False)`` compiled for the backend; returns the outputs' leaves and
    their Keras masks as numpy (a mask None where the output carries none; under a
    distribution over several processes, this process's rows), and the outputs' structure (a
    leaf for one output, a list or dict for several)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.backend = keras.backend.backend()
        self._fn: Any = None

    def _call(self, x: Any) -> tuple[Any, Any]:
        y = self.model(x, training=False)
        return y, [keras_mask(leaf) for leaf in keras.tree.flatten(y)]

    def __call__(self, x: Any) -> tuple[list[np.ndarray], list[np.ndarray | None], Any]:
        if getattr(self.model, "run_eagerly", False) or self.backend not in ("tensorflow", "jax"):
            if self.backend == "torch":
                import torch

                with torch.no_grad():
                    y, masks = self._call(x)
            else:
                y, masks = self._call(x)
        elif self.backend == "tensorflow":
            if self._fn is None:
                import tensorflow as tf

                self._fn = tf.function(self._call, reduce_retracing=True)
            y, masks = self._fn(x)
        else:
            if self._fn is None:
                import jax

                model = self.model

                def step(trainable, non_trainable, x):
                    y, _ = model.stateless_call(trainable, non_trainable, x, training=False)
                    return y, [keras_mask(leaf) for leaf in keras.tree.flatten(y)]

                self._fn = jax.jit(step)
            y, masks = self._fn([v.value for v in self.model.trainable_variables],
                                [v.value for v in self.model.non_trainable_variables], x)
        if self.backend == "jax":  # this process's rows (all of them on one process)
            leaves = [_host_rows(leaf) for leaf in keras.tree.flatten(y)]
            masks = [None if m is None else _host_rows(m).astype(bool) for m in masks]
        else:
            leaves = [ops.convert_to_numpy(leaf) for leaf in keras.tree.flatten(y)]
            masks = [None if m is None else ops.convert_to_numpy(m).astype(bool) for m in masks]
        return leaves, masks, keras.tree.map_structure(lambda _: None, y)


_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward_of(model: Any) -> _Forward:
    try:
        return _FORWARDS.setdefault(model, _Forward(model))
    except TypeError:  # not weak-referenceable
        return _Forward(model)


def _verbosity(verbose: Any) -> int:
    if verbose == "auto":
        return 1
    if isinstance(verbose, bool) or not isinstance(verbose, (int, np.integer)):
        raise ValueError(
            f"Argument `verbose` must be 'auto', 0, 1 or 2. Received: verbose={verbose!r}"
        )
    return check_choice("verbose", int(verbose), (0, 1, 2))


#: Keras's own predict / evaluate arguments that :func:`seqprep.predict` and
#: :func:`seqprep.evaluate` take in ``**kwargs``, with their defaults.
KERAS_ARGUMENTS = {"verbose": "auto", "callbacks": None}


def _run_arguments(
    caller: str, batch_size: Any, max_tokens: Any, padding: Any, outputs: Any, options: Any,
    kwargs: dict[str, Any],
) -> tuple[int | None, int, int, Any, Options]:
    """The arguments :func:`seqprep.predict` and :func:`seqprep.evaluate` share, checked:
    ``(batch_size, max_tokens, verbose, callbacks, options)``. ``kwargs`` may hold only Keras's
    own ``verbose`` and ``callbacks``; any other key is refused, never ignored."""
    batch_size, max_tokens = _check_common(batch_size, max_tokens, padding, outputs)
    unknown = sorted(set(kwargs) - set(KERAS_ARGUMENTS))
    if unknown:
        raise TypeError(
            f"`{caller}` got unexpected keyword argument(s) {unknown}. Its `**kwargs` take only "
            f"Keras's own {caller} arguments {sorted(KERAS_ARGUMENTS)}.\n- Check the spelling; "
            "`dtype` and `allow_nonfinite` go in `options=seqprep.Options(...)`."
        )
    given = {**KERAS_ARGUMENTS, **kwargs}
    opts = options_for(options, caller, reads=("dtype", "allow_nonfinite", "data_parallel"))
    return batch_size, max_tokens, _verbosity(given["verbose"]), given["callbacks"], opts


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
    """The planned batches of ``fields`` as model inputs (plain or packed), laid out over the
    devices of the Keras distribution with a ``layout`` (batches filled for it, each this
    process's rows of the global batch)."""

    def __init__(
        self, fields: _Fields, plan: InferencePlan, padding: str, packed: Any,
        layout: Layout | None = None,
    ) -> None:
        self.fields, self.plan, self.padding, self.packed = fields, plan, padding, packed
        self.layout = layout

    @property
    def processes(self) -> int:
        """The ``jax.distributed`` processes that share every batch (1 without a layout)."""
        return 1 if self.layout is None else self.layout.num_processes

    def __len__(self) -> int:
        return len(self.plan)

    def real_rows(self, b: int) -> int:
        """Rows of batch ``b`` (as run here) that are examples: they come first."""
        return int(np.count_nonzero(self.plan.batch(b) < len(self.fields)))

    def inputs(self, b: int) -> tuple[np.ndarray, Any]:
        idx = self.plan.batch(b)
        arrays = self.fields.gather(idx, self.plan.widths[b], self.padding)
        if self.packed is not None:
            table = self.fields.tables[0]
            _, real = _kernel.positions(table.starts, table.lengths, idx,
                                        int(self.plan.widths[b, 0]), self.padding,
                                        table.pad_index)
            xb = _packed_inputs(self.packed, arrays[0], real, table.lengths[idx])
        else:
            xb = self.fields.pack(arrays)
        return idx, xb if self.layout is None else _distributed(xb, self.processes)


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


def _packed_returns_sequences(model: Any) -> bool:
    from seqprep.layers import PackedRNN

    packed = [layer for layer in _walk(model) if isinstance(layer, PackedRNN)]
    return packed[0].return_sequences if len(packed) == 1 else packed[-1].return_sequences
