"""The one input stage: the user's ``x``, ``y`` and ``sample_weight`` -> the kernel's tables.

Every in-memory executor of a plan (``bucketed_dataset``, ``bucketed_pydataset``,
``packed_dataset``, ``fit_per_length``) reads its inputs here, so one set of rules holds:

* **Fields.** ``x`` is one sequence collection, or several *fields*: a dict of them (keys are
  the field names) or a tuple of them (a tuple whose items are collections of sequences; a
  tuple of plain sequences stays one collection, so pass a list for that). Every field holds
  one sequence per example (same count), with its own lengths, and is padded to its own width
  in every batch; a batch carries the same structure (a dict or a tuple of arrays). ``y`` may
  be a dict or a tuple of targets in the same way (one target field per model output).
* **Dtype rule.** Integer and boolean steps keep their dtype. Floating steps wider than the
  working float type become that type after a check that no value overflows; narrower floats
  keep theirs. The working float type is Keras's ``floatx``, which the executor reads and
  passes as ``floatx=`` (float32 by default), but never narrower than float32: under
  ``float16``/``bfloat16`` data are not rounded to half precision
  (:func:`seqprep.inputs._stage_rules.working_float`). ``dtype=`` (per field) overrides, and a
  cast that would change a value raises. Labels follow the same rule; weights are ``float32``.
* **Pad value.** One check, :func:`seqprep._core.casts.check_pad_value`: the value must be
  representable in the field's dtype.
* **Non-finite values.** NaN/inf in ``x`` are refused unless ``allow_nonfinite=True``; NaN/inf
  in ``y`` and in ``sample_weight`` are always refused (message: the position and the fix).
* **Targets.** One target per sequence or one per step, decided by
  :func:`seqprep.resolve_targets`. A per-step target field *aligns* with the ``x`` field whose
  lengths equal its row lengths: its padded steps are that field's, and its timestep weights
  are 0 on that field's padding. ``targets_field=`` names the field explicitly; it is
  required when several fields have those lengths, and a per-step target whose lengths match
  no field is an error. Per-sequence targets need no field (their timestep weights, if asked,
  follow ``targets_field`` or the first field).
* **Per-field options.** ``padding``, ``value``, ``pad_to``, ``truncating`` and ``dtype`` are
  one value for every field, or a dict keyed by field name (by position, 0, 1, ..., for a
  tuple ``x``) whose missing fields take the default.
* **Samplers.** A 1-D sampler plans one field: the first field (in order) whose lengths it was
  built on (``overlong="truncate"`` cuts that field only). A 2-D sampler (lengths ``(n, k)``)
  plans every field: column ``j`` is field ``j`` (or, for a sampler built on a dict of named
  lengths and a dict ``x``, the field of that name).

numpy only: neither TensorFlow nor Keras is imported (the executors pass their array library's
ops to :func:`gather`).

The code: here, the stage itself (:func:`prepare` builds a :class:`Stage`, :func:`gather` pads
a batch of it, :func:`batch_widths` gives its widths); the dtype, label and weight rules in
:mod:`._stage_rules`; the fields and the targets alignment in :mod:`._stage_fields`; the
samplers' columns and ``pad_to`` resolution in :mod:`._stage_widths`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from seqprep._core.checks import (
    check_choice,
    check_finite_features,
    check_finite_labels,
)
from seqprep._core.ragged import Ragged, as_ragged
from seqprep.inputs import _kernel
from seqprep.inputs._stage_fields import (
    Key,
    Kind,
    _align,
    _check_counts,
    _target_field,
    field_label,
    pack,
    per_field,
    split_fields,
)
from seqprep.inputs._stage_rules import (
    cast_labels,
    default_dtype,
    label_array,
    parse_weights,
    resolve_dtype,
    values_with_pad_row,
)
from seqprep.inputs._stage_widths import _check_pad_to, _sampler_columns, resolve_pad_to

__all__ = ["Field", "Stage", "Target", "batch_widths", "gather", "prepare", "weight_scales",
           "with_fill"]


@dataclass(frozen=True)
class Field:
    """One input field, ready for the kernel.

    Attributes:
        key: the field's name (dict), position (tuple) or None.
        label: how messages name it (``x['decoder']``).
        table: the kernel's table of this field (inputs only).
        raw_lengths: the lengths as given.
        padding: ``"post"`` or ``"pre"``.
        pad_to: the ``pad_to`` as resolved for the sampler (see :func:`resolve_pad_to`).
        column: the sampler column that plans this field (0 for a 1-D sampler's field), or
            None if the sampler does not plan it.
    """

    key: Key
    label: str
    table: _kernel.Table
    raw_lengths: np.ndarray
    padding: str
    pad_to: Any
    column: int | None

    @property
    def lengths(self) -> np.ndarray:
        """The lengths kept (after the sampler's truncation)."""
        return self.table.lengths

    @property
    def ragged(self) -> Ragged:
        """The field's sequences as given (cast by the dtype rule), without the pad row."""
        offsets = np.zeros(self.raw_lengths.size + 1, np.int64)
        np.cumsum(self.raw_lengths, out=offsets[1:])
        return Ragged(self.table.x[:-1], offsets)


@dataclass(frozen=True)
class Target:
    """One target field: its table (``x`` is the aligned field's, shared) and that field."""

    key: Key
    field: int
    table: _kernel.Table


@dataclass(frozen=True)
class Stage:
    """What an executor gathers from: the fields of ``x``, the targets and their weights.

    ``x_kind``/``x_keys`` and ``y_kind``/``y_keys`` give the structure every batch carries
    (``y_kind`` None: no targets). Weights, when asked, have ``y``'s structure.
    """

    x_kind: Kind
    x_keys: tuple[Key, ...]
    fields: tuple[Field, ...]
    y_kind: Kind | None
    y_keys: tuple[Key, ...]
    targets: tuple[Target, ...]
    weighted: bool
    sampler_ndim: int = 0  # 0: no sampler; 1: it plans one field; 2: one column per field

    @property
    def n(self) -> int:
        return int(self.fields[0].raw_lengths.size)

    @property
    def single(self) -> bool:
        return self.x_kind == "single"

    def convert(self, constant: Callable[[Any], Any]) -> Stage:
        """The stage with every array passed through ``constant`` once (``tf.constant``): a
        target table shares its field's converted inputs."""
        memo: dict[int, Any] = {}

        def once(a: Any) -> Any:
            if id(a) not in memo:
                memo[id(a)] = constant(a)
            return memo[id(a)]

        fields = tuple(replace(f, table=f.table.convert(once)) for f in self.fields)
        targets = tuple(replace(t, table=t.table.convert(once)) for t in self.targets)
        return replace(self, fields=fields, targets=targets)


def with_fill(stage: Stage) -> Stage:
    """``stage`` (numpy) ready for batches topped up with fill rows (data parallelism).

    Every table gets the kernel's fill row (:func:`seqprep.inputs._kernel.with_fill`: one
    step of the data that is not padding, so no masked mean over it is 0 / 0; target 0,
    weight 0), and every target gets weights when it had none, so that fill rows weigh 0:
    1 per real sequence for per-sequence targets, ``"timestep"`` weights for per-step
    targets (the loss is then the one-device loss wherever that is the mean over real steps:
    a Keras mask reaching the loss, or a loss built with ``"mean_with_sample_weight"``). The
    batches' weight factors are :func:`weight_scales`'s, passed to :func:`gather`.

    Example:
        >>> st = with_fill(prepare([[1, 2], [3]], [5, 6]))
        >>> [a.tolist() for a in gather(st, np.array([1, 2]), 2, scales=np.float32([2]))]
        [[[3, 0], [1, 0]], [6, 0], [2.0, 0.0]]
    """
    def targets_of(t: Target) -> Target:
        table = _kernel.with_fill(t.table)
        if table.w_mode is None and table.y_mode == "sequence":
            ones = np.ones(stage.n + 1, np.float32)
            ones[-1] = 0  # the zero row the fill row (and empty slots) read
            table = replace(table, w=ones, w_mode="sequence")
        elif table.w_mode is None:
            table = replace(table, w_mode="timestep")
        return replace(t, table=table)

    fields = tuple(replace(f, table=_kernel.with_fill(f.table)) for f in stage.fields)
    targets = tuple(targets_of(t) for t in stage.targets)
    return replace(stage, fields=fields, targets=targets,
                   weighted=stage.weighted or bool(targets))


def gather(
    stage: Stage, idx: Any, widths: Any, ops: _kernel.KernelOps = _kernel.NUMPY_OPS,
    scales: Any = None,
) -> tuple[Any, ...]:
    """``(x,)``, ``(x, y)`` or ``(x, y, weights)`` of one batch, in the stage's structure.

    Args:
        stage: what to gather from (numpy, or converted once to the ops' library).
        idx: int64 ``(B,)``: the batch's sequence indices.
        widths: the padded width (one field), or one width per field (``(k,)``).
        ops: the array library.
        scales: a batch of a filled plan (a stage made by :func:`with_fill`): one weight
            factor per target (its row of :func:`weight_scales`; an entry may be None: that
            target's weights are then this batch's own, as without fill rows).

    Example:
        >>> st = prepare({"a": [[1, 2], [3]], "b": [[4], [5, 6, 7]]}, None)
        >>> xb, = gather(st, np.array([0, 1]), np.array([2, 3]))
        >>> xb["a"].tolist(), xb["b"].tolist()
        ([[1, 2], [3, 0]], [[4, 0, 0], [5, 6, 7]])
    """
    xs, layouts = [], []
    for j, field in enumerate(stage.fields):
        t = field.table
        width = widths if stage.single else widths[j]
        src, real = _kernel.positions(t.starts, t.lengths, idx, width, field.padding,
                                      t.pad_index, ops)
        xs.append(ops.gather(t.x, src))
        layouts.append((src, real))
    x = pack(stage.x_kind, stage.x_keys, xs)
    if stage.y_kind is None:
        return (x,)
    ys, ws = [], []
    for j, target in enumerate(stage.targets):
        src, real = layouts[target.field]
        out = _kernel.gather_targets(target.table, src, real, idx, ops=ops,
                                     scale=None if scales is None else scales[j])
        ys.append(out[0])
        ws.extend(out[1:])
    y = pack(stage.y_kind, stage.y_keys, ys)
    if not stage.weighted:
        return x, y
    return x, y, pack(stage.y_kind, stage.y_keys, ws)


def weight_scales(
    stage: Stage, rows: np.ndarray, splits: np.ndarray, widths: np.ndarray, *, multiple_of: int
) -> np.ndarray:
    """The weight factor of every batch and target of a plan filled to ``multiple_of`` rows:
    float32 ``(batches, targets)``, column ``j`` :func:`seqprep.inputs._kernel.weight_scales`
    of target ``j`` (counted over each global batch; row ``b`` is :func:`gather`'s
    ``scales`` for batch ``b``).

    Args:
        stage: a stage made by :func:`with_fill`.
        rows, splits: the global plan's flat form before filling.
        widths: the padded widths of every batch (:func:`batch_widths`).
        multiple_of: the data-parallel size (all processes together).

    Example:
        >>> st = with_fill(prepare([[1, 2], [3], [4]], [5, 6, 7]))
        >>> weight_scales(st, np.array([0, 1, 2]), np.array([0, 3]), np.array([2]),
        ...               multiple_of=2).tolist()
        [[1.3333333730697632]]
    """
    widths = np.asarray(widths)
    columns = [_kernel.weight_scales(t.table, rows, splits,
                                     widths if stage.single else widths[:, t.field],
                                     multiple_of=multiple_of) for t in stage.targets]
    if not columns:  # no targets: nothing to weigh
        return np.ones((len(splits) - 1, 0), np.float32)
    return np.stack(columns, axis=1)


def batch_widths(plan: Any, stage: Stage) -> np.ndarray:
    """The padded width of every batch of ``plan``: ``(len(plan),)`` for one field,
    ``(len(plan), k)`` for ``k`` fields (each field by its own ``pad_to``)."""
    if stage.single:
        f = stage.fields[0]
        return plan.widths(f.pad_to, f.lengths)
    cols = []
    for f in stage.fields:
        if f.column is not None and stage.sampler_ndim == 1:  # the plan's own width rule
            cols.append(plan.widths(f.pad_to, f.lengths))
            continue
        pad_to = f.pad_to
        # A 2-D plan's bucket width of this field, where the plan has them; else its longest.
        field_pads = getattr(plan, "field_pad_lengths", None)
        bucket = None if f.column is None or field_pads is None else field_pads[:, f.column]
        if isinstance(pad_to, str) and pad_to == "bucket":
            cols.append(np.asarray(bucket, np.int64))
            continue
        longest = plan.widths("batch", f.lengths)
        if isinstance(pad_to, str):  # "batch"
            cols.append(longest)
        elif np.ndim(pad_to) == 0:
            cols.append(np.full(len(plan), int(pad_to), np.int64))
        else:  # a width grid covers the bucket (as for one field), else the batch's longest
            grid = np.asarray(pad_to, np.int64)
            cover = longest if bucket is None else bucket
            cols.append(grid[np.searchsorted(grid, cover, side="left")])
    return np.stack(cols, axis=1) if cols else np.zeros((len(plan), 0), np.int64)


def prepare(
    x: Any,
    y: Any = None,
    sample_weight: Any = None,
    *,
    sampler: Any = None,
    sampler_type: type | None = None,
    padding: Any = "post",
    value: Any = 0,
    pad_to: Any = "batch",
    truncating: Any = "post",
    dtype: Any = None,
    allow_nonfinite: bool = False,
    targets: str = "auto",
    targets_field: Any = None,
    backend: str | None = None,
    epoch: int = 0,
    resolve_planned: Callable[..., Any] | None = None,
    names: tuple[str, str] = ("x", "y"),
    floatx: str = "float32",
) -> Stage:
    """Read ``x``, ``y`` and ``sample_weight`` into a :class:`Stage` (the module's rules).

    ``sampler`` (checked to be a ``sampler_type``) decides each field's kept lengths and which
    fields it plans; without a ``sampler_type``, every field keeps its lengths and ``pad_to``
    is only checked (the executor pads). ``floatx`` is Keras's float type as the executor
    read it (the dtype rule's working float type). Order of the checks: the options, the fields
    (counts, non-finite values), the sampler, ``pad_to``, the targets, the weights, then the
    casts of the inputs.

    Example:
        >>> st = prepare([[1, 2, 3], [4]], [[1, 0, 1], [0]], "timestep")
        >>> st.y_kind, st.targets[0].table.y_mode, st.fields[0].lengths.tolist()
        ('single', 'step', [3, 1])
    """
    xname, yname = names
    kind, keys, items = split_fields(x)
    labels = [field_label(xname, kind, k) for k in keys]
    options = {name: per_field(name, given, kind, keys) for name, given in (
        ("padding", padding), ("value", value), ("pad_to", pad_to),
        ("truncating", truncating), ("dtype", dtype))}
    for j, label in enumerate(labels):
        check_choice("padding", options["padding"][j], ("pre", "post"))
        check_choice("truncating", options["truncating"][j], ("pre", "post"))
        options["pad_to"][j] = _check_pad_to(options["pad_to"][j], label)
    rags = [as_ragged(item, label) for item, label in zip(items, labels, strict=True)]
    raw = [r.lengths for r in rags]
    _check_counts(list(zip(labels, raw, strict=True)), "x")
    for j, label in enumerate(labels):
        check_finite_features(rags[j].values, label, offsets=rags[j].offsets,
                              allow_nonfinite=allow_nonfinite)
    if sampler_type is not None:
        columns = _sampler_columns(sampler, kind, keys, labels, raw, sampler_type)
        limit = sampler.length_limit
    else:
        columns, limit = [None] * len(keys), None
    kept = []
    for j, lengths in enumerate(raw):
        col = columns[j]
        lim = None if col is None or limit is None else (
            limit if np.ndim(limit) == 0 else np.asarray(limit)[col])
        kept.append(lengths if lim is None else np.minimum(lengths, lim))
    pads = [
        resolve_pad_to(options["pad_to"][j], kept[j], columns[j], sampler, labels[j], backend,
                       epoch, resolve_planned)
        if resolve_planned is not None else options["pad_to"][j]
        for j in range(len(keys))
    ]
    starts = []
    for j, rag in enumerate(rags):
        s = rag.offsets[:-1].astype(np.int64)
        if options["truncating"][j] == "pre":
            s = s + (raw[j] - kept[j])
        starts.append(s)

    # Targets and weights, checked before the inputs are cast.
    y_kind: Kind | None = None
    y_keys: tuple[Key, ...] = ()
    resolved_targets: list[tuple[Key, str, Any, int]] = []
    if y is not None:
        y_kind, y_keys, y_items = split_fields(y, dense_rows=len(raw[0]))
        for key, item in zip(y_keys, y_items, strict=True):
            label = field_label(yname, y_kind, key)
            forced = _target_field(targets_field, key, kind, keys, y_kind)
            mode, res, field = _align(item, key, label, raw, labels, keys, targets, forced,
                                      kind != "single")
            resolved_targets.append((key, mode, res, field))
    elif targets_field is not None:
        raise ValueError(
            f"Argument `targets_field` needs `y`. Received: targets_field={targets_field!r}, "
            "y=None\n- Pass `y`, or drop `targets_field`."
        )
    w_mode, w = parse_weights(sample_weight, len(raw[0]), y is not None)

    tables = [
        _kernel.table(
            values_with_pad_row(rags[j], resolve_dtype(options["dtype"][j], rags[j].values.dtype,
                                                       labels[j], floatx),
                                options["value"][j], labels[j], options["dtype"][j] is None),
            starts[j], kept[j])
        for j in range(len(keys))
    ]
    target_list = []
    for key, mode, res, field in resolved_targets:
        label = field_label(yname, y_kind, key)
        if mode == "step":
            check_finite_labels(res.values, label, offsets=res.offsets)
            y_table = values_with_pad_row(res, default_dtype(res.values.dtype, floatx), 0, label)
        else:
            y_table = cast_labels(label_array(res, label, len(raw[0])), label, floatx)
            check_finite_labels(y_table, label)
        base = tables[field]
        target_list.append(Target(key, field, _kernel.table(
            base.x, base.starts, base.lengths, y=y_table, y_mode=mode, w=w, w_mode=w_mode)))
    fields = tuple(
        Field(keys[j], labels[j], tables[j], raw[j], options["padding"][j], pads[j], columns[j])
        for j in range(len(keys))
    )
    sampler_ndim = 0 if sampler_type is None else int(np.ndim(sampler.lengths))
    return Stage(kind, keys, fields, y_kind, y_keys, tuple(target_list), w_mode is not None,
                 sampler_ndim)
