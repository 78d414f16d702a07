"""Phase 1 of the streaming bucketing (:mod:`seqprep.running._streaming`): the arguments of
:func:`~seqprep.running._streaming.bucket_by_length` and
:func:`~seqprep.running._streaming.bucket_by_sequence_length` checked and the batch size of
each bucket planned, in numpy (:class:`_Options`), and the dataset's element spec checked
against them (components, padding values, padded shapes).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from seqprep._core.casts import check_pad_value
from seqprep._core.checks import check_bool, check_int, check_one_of
from seqprep.planning._boundaries import (
    batch_capacity,
    check_quadratic_length,
    token_length_limit,
)
from seqprep.planning._sampler import BATCH_FIX

# A target size meaning "the batch's bucket boundary minus 1" (``pad_to_bucket_boundary``).
_TO_BOUNDARY = -1


@dataclasses.dataclass(frozen=True)
class _Options:
    """What a bucketing transformation decided before it meets a dataset (checked, in numpy).

    ``bounds``: bucket boundaries (non-decreasing int64; bucket ``i`` holds lengths in
    ``[bounds[i-1], bounds[i])``); ``sizes``: rows per batch of each bucket; ``pool_size``:
    elements read per pool; ``shuffled``: permute each pool, seeded with ``seed``; ``padding``:
    ``"post"``, ``"pre"`` (pad on the left) or, with ``per_field``, a structure of them;
    ``value``: the padding value(s), ``None`` for tf.data's defaults (0, ``""``, False);
    ``per_field``: ``padding`` and ``value`` may be partial structures like the elements
    (:func:`_per_component`; ``bucket_by_length``'s), else ``value`` is one value or the whole
    structure, as tf.data takes it; ``spread_args``: call ``length_fn(*components)`` as
    tf.data does, not ``length_fn(element)``; ``max_length``: the longest length allowed.
    The drop-in's own: ``padded_shapes``, ``pad_to_bucket`` and ``no_padding``. ``caller``
    names the public function in error messages.
    """

    bounds: np.ndarray
    sizes: np.ndarray
    pool_size: int
    shuffled: bool = False
    seed: int | None = None
    drop_remainder: bool = False
    padding: Any = "post"
    value: Any = 0
    per_field: bool = False
    length_fn: Callable[..., Any] | None = None
    spread_args: bool = False
    max_length: int | None = None
    padded_shapes: Any = None
    pad_to_bucket: bool = False
    no_padding: bool = False
    caller: str = "bucket_by_length"


def _check_flag(name: str, value: Any) -> bool:
    """``check_bool`` that also takes a constant boolean tensor, as tf.data's arguments may be."""
    if isinstance(value, tf.Tensor) and tf.get_static_value(value) is not None:
        value = tf.get_static_value(value)
    return check_bool(name, value)


def _check_stream_args(
    batch_size: Any, max_tokens: Any, max_length: Any, buffer_size: Any, seed: Any,
    drop_remainder: Any, length_fn: Any,
) -> tuple[int | None, int | None, int | None, int | None, int | None, bool]:
    """``bucket_by_length``'s scalar arguments, checked and as Python values."""
    check_one_of(BATCH_FIX, batch_size=batch_size, max_tokens=max_tokens)
    batch_size = check_int("batch_size", batch_size, minimum=1, allow_none=True)
    max_tokens = check_int("max_tokens", max_tokens, minimum=1, allow_none=True)
    max_length = check_int("max_length", max_length, minimum=1, allow_none=True)
    buffer_size = check_int("buffer_size", buffer_size, minimum=0, allow_none=True)
    seed = check_int("seed", seed, minimum=0, allow_none=True)
    drop_remainder = _check_flag("drop_remainder", drop_remainder)
    if length_fn is not None and not callable(length_fn):
        raise TypeError(
            f"Argument `length_fn` must be callable. Received: {length_fn!r}\n"
            "- Pass a function of one element that returns its length as a scalar tensor, "
            "or None for the length of the first axis."
        )
    return batch_size, max_tokens, max_length, buffer_size, seed, drop_remainder


def _plan_batch_sizes(
    bounds: np.ndarray, batch_size: int | None, max_tokens: int | None,
    max_length: int | None, quadratic_length: int | None,
) -> np.ndarray:
    """Rows per batch of each bucket: ``batch_size``, or the most rows whose padded cost fits
    ``max_tokens`` at the bucket's upper bound (``max_length`` for the open-ended last one)."""
    if max_length is not None and bounds.size and max_length < bounds[-1]:
        raise ValueError(
            f"Argument `max_length`={max_length} is below the last boundary "
            f"{int(bounds[-1])}: the buckets above it could never fill.\n"
            "- Raise `max_length` or drop the boundaries above it."
        )
    quadratic_length = check_quadratic_length(quadratic_length, max_tokens)
    if max_tokens is None:
        return np.full(bounds.size + 1, batch_size, np.int64)
    if max_length is None:
        raise ValueError(
            "Argument `max_tokens` needs `max_length`: the last bucket is open-ended, so "
            "its batch size cannot be set without a longest length.\n"
            "- Pass max_length=<longest sequence length>."
        )
    fits = token_length_limit(max_tokens, quadratic_length)
    if max_length > fits:
        what = f"is below `max_length`={max_length}"
        if quadratic_length is not None:
            what = (f"with quadratic_length={quadratic_length} fits one row of at most "
                    f"{fits} steps, below `max_length`={max_length}")
        raise ValueError(
            f"Argument `max_tokens`={max_tokens} {what}: a "
            "sequence that long would not fit in any batch.\n"
            "- Raise `max_tokens` or lower `max_length`."
        )
    upper = np.append(bounds - 1, max_length).clip(min=1)
    return batch_capacity(upper, None, max_tokens, quadratic_length).astype(np.int64)


def _check_tf_boundaries(bucket_boundaries: Any) -> np.ndarray:
    """tf.data's ``bucket_boundaries``: integers in non-decreasing order (any sign)."""
    arr = np.asarray(list(bucket_boundaries) if isinstance(bucket_boundaries, range)
                     else bucket_boundaries)
    if arr.ndim != 1 or (arr.size and (arr.dtype == bool
                                       or not np.issubdtype(arr.dtype, np.integer))):
        raise TypeError(
            "Argument `bucket_boundaries` must be a list of integers. "
            f"Received: bucket_boundaries={bucket_boundaries!r}"
        )
    arr = arr.astype(np.int64)
    if np.any(np.diff(arr) < 0):
        # tf.data takes the first bucket whose interval holds the length; out of order, that
        # rule puts lengths in buckets nobody meant, so refuse instead.
        raise ValueError(
            "Argument `bucket_boundaries` must be in increasing order. "
            f"Received: bucket_boundaries={arr.tolist()}\n"
            "- Bucket i holds lengths in [bucket_boundaries[i-1], bucket_boundaries[i]): "
            "sort them (and `bucket_batch_sizes` with them)."
        )
    return arr


def _check_tf_batch_sizes(bucket_batch_sizes: Any, bounds: np.ndarray) -> np.ndarray:
    sizes = [check_int("bucket_batch_sizes", s, minimum=1,
                       fix="Every bucket needs at least one row per batch.")
             for s in bucket_batch_sizes]
    if len(sizes) != bounds.size + 1:
        raise ValueError(
            "Argument `bucket_batch_sizes` must have one size per bucket, "
            f"len(bucket_boundaries) + 1 = {bounds.size + 1}. "
            f"Received: bucket_batch_sizes={sizes} ({len(sizes)} sizes)\n"
            "- The last size is for the lengths at or above the last boundary."
        )
    return np.asarray(sizes, np.int64)


def _check_leaves(leaves: list[Any], options: _Options) -> None:
    """Refuse the components a transformation cannot batch, saying what to do instead."""
    for i, s in enumerate(leaves):
        if isinstance(s, tf.RaggedTensorSpec) and s.ragged_rank == 0:
            continue  # a slice of a tf.RaggedTensor: dense in fact
        if isinstance(s, tf.SparseTensorSpec) and options.no_padding:
            continue
        if isinstance(s, tf.RaggedTensorSpec) and options.no_padding and (
            s.shape.rank is not None and s.shape[s.ragged_rank + 1 :].is_fully_defined()
        ):
            continue
        if not isinstance(s, tf.TensorSpec):
            hint = ("- Convert it first, e.g. `dataset.map(lambda e: e.to_tensor())`"
                    + (", or pass no_padding=True to batch sparse or ragged ones." if
                       options.caller == "bucket_by_sequence_length" else "."))
            raise TypeError(
                f"{options.caller} needs elements made of dense tensors (one ragged "
                f"dimension at most, the time axis). Component {i} is {s!r}\n{hint}"
            )
        if s.shape.rank is None and options.caller == "bucket_by_sequence_length":
            raise TypeError(
                f"{options.caller}: component {i} has an unknown rank ({s!r}), so its "
                "padded shape is unknown.\n- Set it, e.g. with `tf.ensure_shape`, or pass "
                "`padded_shapes`."
            )


def _check_default_length(spec: Any) -> None:
    """Without ``length_fn``, the sequence is the element or its first component (the first
    component of that, for a tuple of tuples): the first leaf in ``tf.nest`` order, which the
    default length reads. A dict on the way has no first component: ``length_fn`` is needed."""
    first, path = spec, "e"
    while isinstance(first, (tuple, list)) and first:
        first, path = first[0], f"{path}[0]"
    if isinstance(first, Mapping):
        key = next(iter(first), "tokens")
        where = ("Elements are dicts" if path == "e"
                 else f"The element's first component, {path}, is a dict")
        raise ValueError(
            f"{where} (keys {list(first)}), so which component is the sequence to bucket by "
            f"is ambiguous. Received element_spec={spec!r}\n"
            f"- Pass `length_fn` to say, e.g. length_fn=lambda e: tf.shape({path}[{key!r}])[0] "
            "(or the longest of several fields: its lengths decide the buckets and the "
            "token budget)."
        )
    if getattr(getattr(first, "shape", None), "rank", None) in (None, 0):
        raise ValueError(
            "The sequence (the element, or its first component) must be a tensor of "
            f"rank >= 1. Received element_spec={spec!r}\n"
            "- Pass `length_fn` to say how long an element is."
        )


def _part_specs(leaves: list[Any]) -> list[Any]:
    """Dense parts of the components: a SparseTensor travels as its indices, values and
    dense shape, a RaggedTensor as its flat values and nested row lengths (each batched as a
    dense sequence), and is put back together per batch (``no_padding`` only)."""
    parts = []
    for s in leaves:
        if isinstance(s, tf.SparseTensorSpec):
            rank = s.shape.rank  # None when unknown: the parts are then pooled as ragged
            parts += [tf.TensorSpec([None, rank], tf.int64), tf.TensorSpec([None], s.dtype),
                      tf.TensorSpec([rank], tf.int64)]
        elif isinstance(s, tf.RaggedTensorSpec) and s.ragged_rank:
            inner = s.shape[s.ragged_rank + 1 :] if s.shape.rank is not None else []
            parts += [tf.TensorSpec([None, *inner], s.dtype)]
            parts += [tf.TensorSpec([None], s.row_splits_dtype)] * s.ragged_rank
        else:
            parts.append(s)
    return parts


def _split_leaf(leaf: Any) -> list[Any]:
    """A component as its dense parts (see :func:`_part_specs`)."""
    if isinstance(leaf, tf.SparseTensor):
        return [leaf.indices, leaf.values, leaf.dense_shape]
    if isinstance(leaf, tf.RaggedTensor):
        return [leaf.flat_values, *leaf.nested_row_lengths()]
    return [leaf]


def _part_count(spec: Any) -> int:
    if isinstance(spec, tf.SparseTensorSpec):
        return 3
    if isinstance(spec, tf.RaggedTensorSpec) and spec.ragged_rank:
        return 1 + spec.ragged_rank
    return 1


def _value_leaves(value: Any, spec: Any, leaves: list[Any]) -> list[Any]:
    """The padding value of each component: a number for all, or a structure like ``spec``."""
    if value is None or isinstance(value, (numbers.Number, np.generic, str, bytes)) or (
        isinstance(value, tf.Tensor) and value.shape.rank == 0
    ):
        return [value] * len(leaves)
    values = tf.nest.flatten(value)
    if len(values) != len(leaves):
        raise ValueError(
            "Argument `value` must be a number or a structure like the elements. "
            f"Received: value={value!r} for element_spec={spec!r}"
        )
    return values


def _is_one_value(given: Any) -> bool:
    """Whether a per-component option is one value (for a whole part of the element), not a
    structure of them."""
    return not isinstance(given, (Mapping, tuple, list))


def _check_padding_sides(padding: Any) -> None:
    """Every side named in ``padding`` (one side or a structure of them) is pre or post."""
    for side in tf.nest.flatten(padding):
        if side not in ("pre", "post"):
            raise ValueError(
                f"Argument `padding` must be 'pre' or 'post', or a structure like the "
                f"elements of those (e.g. ({{'encoder': 'pre'}}, 'post')). Received "
                f"{side!r} in padding={padding!r}\n- Use 'pre' to pad before the steps, "
                "'post' to pad after them."
            )


def _check_field_names(name: str, given: Any, spec: Mapping[str, Any], path: str) -> None:
    """An option given for a dict part of the element is a dict naming only its fields."""
    if not isinstance(given, Mapping):
        problem = f"gives a {type(given).__name__} for {path}, which is a dict (keys {list(spec)})"
    else:
        unknown = [k for k in given if k not in spec]
        if not unknown:
            return
        problem = (f"names field {unknown[0]!r}, which {path} does not have; its fields are "
                   f"{list(spec)}")
    raise ValueError(
        f"Argument `{name}` {problem}. Received: {name}={given!r:.120}\n- Key `{name}` by "
        f"the element's field names (a field left out keeps the default), or give one value "
        f"for all of {path}."
    )


def _per_component(name: str, given: Any, spec: Any, default: Any,
                   path: str = "element") -> list[Any]:
    """``given`` for each component of ``spec`` (in ``tf.nest.flatten`` order).

    ``given`` is a structure like ``spec`` in which one value may stand for a whole part of the
    element (``"pre"`` for the dict ``e[0]``, say) and a dict may leave out keys (those
    components take ``default``); a tuple gives one entry per component of the tuple.
    """
    if _is_one_value(given):
        return [given] * len(tf.nest.flatten(spec))
    if isinstance(spec, Mapping):
        _check_field_names(name, given, spec, path)
        # tf.nest flattens a dict in the order of its sorted keys.
        return [v for key in sorted(spec)
                for v in _per_component(name, given.get(key, default), spec[key], default,
                                        f"{path}[{key!r}]")]
    if isinstance(spec, (tuple, list)):
        if isinstance(given, Mapping) or len(given) != len(spec):
            raise ValueError(
                f"Argument `{name}` must give one value for {path}, a tuple of "
                f"{len(spec)} components, or one entry per component. Received: "
                f"{name}={given!r:.120}\n- E.g. {name}=({', '.join(['...'] * len(spec))}), "
                "an entry being one value or a structure like that component."
            )
        return [v for i, (g, s) in enumerate(zip(given, spec, strict=True))
                for v in _per_component(name, g, s, default, f"{path}[{i}]")]
    raise ValueError(
        f"Argument `{name}` gives a structure ({given!r:.80}) for {path}, which is one "
        f"tensor ({spec!r}).\n- Give one value for it."
    )


def _pad_value(value: Any, spec: Any, name: str) -> tf.Tensor:
    """The padding ``value`` of component ``name`` as a scalar tensor of its dtype, refused by the
    one pad-value check (:func:`seqprep._core.casts.check_pad_value`) if the dtype cannot hold
    it exactly."""
    if isinstance(value, tf.Tensor):
        value = tf.get_static_value(value)
        value = value.item() if isinstance(value, np.ndarray) else value
    if value is None:  # tf.data's default: 0, False or ""
        return tf.zeros([], spec.dtype)
    if spec.dtype == tf.string:
        return tf.constant(value if isinstance(value, (str, bytes)) else "", tf.string)
    if isinstance(value, bytes | str):
        raise TypeError(
            f"Argument `value`={value!r} is a string but component {name} holds "
            f"{spec.dtype.name}.\n- Pass a number of that dtype."
        )
    np_dtype = np.dtype(spec.dtype.as_numpy_dtype)
    check_pad_value(value, np_dtype)
    # A Python int of any size stays exact in an object array (numpy 2 would turn 2**63 into
    # float64); numpy scalars keep their dtype.
    exact = np.asarray(value).reshape(1) if isinstance(value, np.generic) else np.array(
        [value], dtype=object
    )
    return tf.constant(exact.astype(np_dtype)[0], spec.dtype)


def _flat_padded_shapes(padded_shapes: Any, spec: Any, caller: str) -> list[tf.TensorShape]:
    """``padded_shapes`` (a structure like the elements, of shapes) as one shape per leaf."""
    if isinstance(spec, dict):
        if not isinstance(padded_shapes, dict) or set(padded_shapes) != set(spec):
            raise ValueError(
                f"Argument `padded_shapes` must have the elements' structure (keys "
                f"{sorted(spec)}). Received: padded_shapes={padded_shapes!r}"
            )
        return [s for key in sorted(spec)
                for s in _flat_padded_shapes(padded_shapes[key], spec[key], caller)]
    if isinstance(spec, (tuple, list)):
        if not isinstance(padded_shapes, (tuple, list)) or len(padded_shapes) != len(spec):
            raise ValueError(
                f"Argument `padded_shapes` must have the elements' structure ({len(spec)} "
                f"components). Received: padded_shapes={padded_shapes!r}"
            )
        return [s for p, sub in zip(padded_shapes, spec, strict=True)
                for s in _flat_padded_shapes(p, sub, caller)]
    shape = tf.TensorShape(padded_shapes)
    if shape.rank is None or shape.rank != spec.shape.rank:
        raise ValueError(
            f"Argument `padded_shapes` gives {shape} for a component of rank "
            f"{spec.shape.rank} ({spec!r}).\n- Give one size (or None) per dimension."
        )
    for d, s in zip(shape.as_list(), spec.shape.as_list(), strict=True):
        if d is not None and s is not None and d < s:
            raise ValueError(
                f"Argument `padded_shapes` gives {shape}, smaller than the component's "
                f"shape {spec.shape}.\n- Padding never truncates: give sizes at least "
                "the component's."
            )
    return [shape]


def _pad_targets(options: _Options, spec: Any, leaves: list[Any]) -> list[Any]:
    """Per part, the size of each padded dimension (the batch axis aside): ``None`` for the
    batch's longest, an int, or ``_TO_BOUNDARY``; ``None`` for the whole part when nothing
    beyond the batch's longest is asked (the common, fast case)."""
    if options.no_padding:
        return [None] * len(_part_specs(leaves))
    if options.padded_shapes is None:
        shapes = [s.shape for s in leaves]
    else:
        shapes = _flat_padded_shapes(options.padded_shapes, spec, options.caller)
    filler = _TO_BOUNDARY if options.pad_to_bucket else None
    targets = []
    for shape, s in zip(shapes, leaves, strict=True):
        dims = [filler if d is None else d for d in shape.as_list()]
        same = all(d is None or d == k for d, k in zip(dims, s.shape.as_list(), strict=True))
        targets.append(None if same else dims)
    return targets


def _traced_leading_dim(fn: Callable[..., Any], spec: Any, spread_args: bool) -> int | None:
    """The component whose leading dimension ``fn`` returns, when that is all it does
    (``tf.shape(x)[0]``, ``tf.size(x)`` of a vector, maybe cast to int32/int64), else None.

    Then the lengths are read off the pooled component (its row lengths) instead of calling
    ``fn`` once per element in a ``map``, which costs more than the rest of the bucketing.
    The traced graph is matched exactly; anything else keeps the ``map``.
    """
    leaves = tf.nest.flatten(spec)
    if not all(isinstance(s, (tf.TensorSpec, tf.RaggedTensorSpec)) for s in leaves) or any(
        isinstance(s, tf.RaggedTensorSpec) and s.ragged_rank for s in leaves
    ):
        return None
    dense = tf.nest.pack_sequence_as(
        spec, [tf.TensorSpec(s.shape, s.dtype) for s in leaves])
    args = tuple(dense) if spread_args and isinstance(dense, tuple) else (dense,)
    try:
        graph = tf.function(fn, autograph=False).get_concrete_function(*args).graph
    except Exception:  # any tracing trouble: keep the per-element map  # noqa: BLE001
        return None
    if len(graph.outputs) != 1:
        return None
    op = graph.outputs[0].op
    while op.type in ("Identity", "Cast") and (
        op.type == "Identity" or op.outputs[0].dtype in (tf.int32, tf.int64)
    ):
        op = op.inputs[0].op
    if op.type == "StridedSlice":
        begin, end, strides = (tf.get_static_value(t) for t in op.inputs[1:4])
        if not (op.inputs[0].op.type == "Shape" and op.get_attr("shrink_axis_mask") == 1
                and list(np.atleast_1d(begin)) == [0] and list(np.atleast_1d(end)) == [1]
                and list(np.atleast_1d(strides)) == [1]):
            return None
        source = op.inputs[0].op.inputs[0]
    elif op.type == "Size" and op.inputs[0].shape.rank == 1:
        source = op.inputs[0]
    else:
        return None
    while source.op.type == "Identity":
        source = source.op.inputs[0]
    inputs = list(graph.inputs[: len(leaves)])
    match = [j for j, t in enumerate(inputs) if t is source]
    if len(match) != 1 or not leaves[match[0]].shape.rank:
        return None
    return match[0]
