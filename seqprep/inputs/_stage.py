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
  float type (``float32``, Keras's default ``floatx``) become that type after a check that no
  value overflows; narrower floats keep theirs. ``dtype=`` (per field) overrides, and a cast
  that would change a value raises. Labels follow the same rule; weights are ``float32``.
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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from seqprep._core.casts import check_cast, check_pad_value
from seqprep._core.checks import (
    check_choice,
    check_finite_features,
    check_finite_labels,
    check_int,
    check_sampler,
    warn_deprecated,
)
from seqprep._core.ragged import Ragged, as_ragged, lengths_of
from seqprep.inputs import _kernel
from seqprep.inputs._targets import resolve_targets
from seqprep.planning._plan import check_width_grid
from seqprep.planning._shapes import width_grid

__all__ = ["Field", "Stage", "Target", "prepare", "split_fields"]

Kind = Literal["single", "dict", "tuple"]
Key = Any  # a field's name (dict), position (tuple) or None (one collection)

#: The float type floating steps wider than it become (Keras's default ``floatx``).
FLOAT = np.dtype(np.float32)

_DEFAULTS = {"padding": "post", "value": 0, "pad_to": "auto", "truncating": "post",
             "dtype": None, "maxlen": None, "pad_to_multiple_of": None}


# --------------------------------------------------------------------------- dtype rule


def default_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype data get when the caller does not choose: floats wider than float32 become
    float32; everything else keeps its dtype.

    Example:
        >>> default_dtype(np.dtype("float64")).name, default_dtype(np.dtype("int64")).name
        ('float32', 'int64')
    """
    if dtype.kind == "f" and dtype.itemsize > FLOAT.itemsize:
        return FLOAT
    return dtype


def resolve_dtype(dtype: Any, source: np.dtype, name: str = "x") -> np.dtype:
    """The dtype of a field's batches: ``dtype`` if given, else :func:`default_dtype`."""
    if dtype is None:
        if source.kind == "O":
            # as_ragged keeps integers no 64-bit dtype holds (or such integers mixed with
            # floats) as Python objects, so that nothing is rounded behind the caller's back.
            raise ValueError(
                f"Argument `dtype` is None, but `{name}` holds integers that no 64-bit dtype "
                "holds exactly (past 64 bits, or past 2**53 mixed with floats). Received: "
                "dtype=None\n- If rounding is fine, pass `dtype='float64'`; if they are ids, "
                "map them to small integers first."
            )
        return default_dtype(source)
    try:
        return np.dtype(dtype)
    except TypeError:
        raise TypeError(
            f"Argument `dtype` is not a numpy dtype. Received: dtype={dtype!r}"
        ) from None


def values_with_pad_row(rag: Ragged, dtype: np.dtype, value: Any, name: str = "x") -> np.ndarray:
    """``rag.values`` cast to ``dtype`` (checked: no value may change) plus one pad step,
    ``value`` (checked: ``dtype`` must hold it), at the end, where padded positions gather."""
    check_cast(rag.values, dtype, locate=rag.locator(name))
    check_pad_value(value, dtype)
    values = rag.values if rag.values.dtype == dtype else rag.values.astype(dtype)
    return _kernel.with_pad_row(values, value)


def label_array(y: Any, name: str, n: int) -> np.ndarray:
    """``y`` as a numeric array with one entry per sequence (``n``), or a clear error."""
    arr = np.asarray(y.numpy() if hasattr(y, "numpy") else y)
    if arr.ndim == 0:
        raise ValueError(
            f"Argument `{name}` must have one entry per sequence (shape (n, ...)). "
            f"Received a scalar: {name}={arr!r}"
        )
    if arr.shape[0] != n:
        raise ValueError(
            f"Argument `{name}` must have one entry per sequence of `x` ({n}). "
            f"Received {arr.shape[0]} entries\n- Pass one {name} per sequence, in the same order."
        )
    if arr.dtype.kind in "OUS":
        raise ValueError(
            f"Argument `{name}` must be numeric. Received dtype {arr.dtype}\n"
            "- If these are class names, map them to integer ids first."
        )
    return arr


def cast_labels(arr: np.ndarray, name: str) -> np.ndarray:
    """Labels by the dtype rule (floats wider than float32 become float32, checked)."""
    target = default_dtype(arr.dtype)
    if target == arr.dtype:
        return arr
    check_cast(
        arr, target, name=name,
        header=f"Argument `{name}` cannot become {target.name} (the dataset's label dtype) "
               "without losing data",
        locate=lambda i: f"{name}[{', '.join(map(str, np.unravel_index(i, arr.shape)))}]",
    )
    return arr.astype(target)


def sequence_weights_array(sample_weight: Any, n: int, *, fix: str) -> np.ndarray:
    """One finite float32 weight per sequence, or an error naming the first bad one."""
    arr = label_array(sample_weight, "sample_weight", n)
    if arr.ndim != 1 or arr.dtype.kind not in "biuf":
        raise ValueError(
            "Argument `sample_weight` must be one number per sequence (shape (n,)). "
            f"Received an array of shape {arr.shape} and dtype {arr.dtype}\n- {fix}"
        )
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise ValueError(
            "Argument `sample_weight` must hold finite numbers. "
            f"Received: sample_weight[{bad}]={arr[bad]!r}\n"
            "- Give that sequence a finite weight (0 leaves it out of the loss)."
        )
    check_cast(
        arr, np.float32, name="sample_weight", locate=lambda i: f"sample_weight[{i}]",
        header="Argument `sample_weight` does not fit float32, the type Keras weighs the loss in",
    )
    return arr.astype(np.float32)


def parse_weights(
    sample_weight: Any, n: int, has_y: bool
) -> tuple[str | None, np.ndarray | None]:
    """``(mode, per-sequence weights)``; mode is None, ``"sequence"``, ``"timestep"`` or
    ``"timestep_mean"`` (``True``/``False``: deprecated spellings of the last and None)."""
    if sample_weight is True or sample_weight is False:
        instead = '"timestep"' if sample_weight else "None"
        warn_deprecated(
            f"`sample_weight={sample_weight}` is deprecated and will be removed; pass "
            f"`sample_weight={instead}` instead (same result)."
        )
    if sample_weight is None or sample_weight is False:
        return None, None
    if not has_y:
        raise ValueError(
            "Argument `sample_weight` needs `y`: Keras weights the loss against targets.\n"
            "- Pass `y`, or drop `sample_weight`."
        )
    if sample_weight is True:
        return "timestep", None
    if isinstance(sample_weight, str):
        check_choice("sample_weight", sample_weight, ("timestep", "timestep_mean"))
        return sample_weight, None
    return "sequence", sequence_weights_array(
        sample_weight, n,
        fix="For per-timestep weights that zero the padding, pass sample_weight='timestep'.",
    )


# --------------------------------------------------------------------------- structure


def _is_collection_of_sequences(item: Any, *, dense_rows: int | None) -> bool:
    """Whether ``item`` reads as a whole sequence collection (not as one sequence); with
    ``dense_rows=n``, an array of ``n`` rows (labels, one per example) counts too."""
    if isinstance(item, Ragged) or hasattr(item, "row_splits"):
        return True
    if type(item).__module__.startswith("pandas"):
        return not hasattr(item, "columns")
    shape = getattr(item, "shape", None)
    rows_ok = dense_rows is not None and shape is not None and len(shape) >= 1 and \
        shape[0] == dense_rows
    if hasattr(item, "numpy") and type(item).__module__.startswith("tensorflow"):
        return len(shape) >= 2 or rows_ok
    if isinstance(item, np.ndarray):
        return item.dtype == object or item.ndim >= 2 or rows_ok
    if isinstance(item, list) and item:
        first = item[0]
        return hasattr(first, "__len__") and not isinstance(first, (str, bytes))
    return False


def split_fields(
    x: Any, *, dense_rows: int | None = None
) -> tuple[Kind, tuple[Key, ...], list[Any]]:
    """``(kind, keys, items)`` of a structure of fields.

    A dict is fields (keys: its names); a tuple is fields when every item reads as a whole
    sequence collection (a list of sequences, an array of rank 2 or more, a ragged tensor, a
    pandas Series; with ``dense_rows=n``, as for targets, an array of ``n`` labels too);
    anything else is one collection (``"single"``).

    Example:
        >>> split_fields({"a": [[1]], "b": [[2, 3]]})[:2]
        ('dict', ('a', 'b'))
        >>> split_fields(([[1, 2]], [[3]]))[:2], split_fields(([1, 2], [3]))[:2]
        (('tuple', (0, 1)), ('single', (None,)))
    """
    if isinstance(x, Mapping):
        if not x:
            raise ValueError(
                "Argument `x` is an empty dict: there are no fields to batch. Received: x={}\n"
                "- Pass a dict of sequence collections, e.g. {'encoder': src, 'decoder': dec}."
            )
        bad = [k for k in x if not isinstance(k, str)]
        if bad:
            raise TypeError(
                f"A dict of fields must have string keys (Keras input names). Received key "
                f"{bad[0]!r} of type {type(bad[0]).__name__}\n- Name every field with a string."
            )
        return "dict", tuple(x), list(x.values())
    if isinstance(x, tuple) and x and all(
        _is_collection_of_sequences(item, dense_rows=dense_rows) for item in x
    ):
        return "tuple", tuple(range(len(x))), list(x)
    return "single", (None,), [x]


def field_label(name: str, kind: Kind, key: Key) -> str:
    """How messages name a field: ``x``, ``x['encoder']`` or ``x[0]``."""
    if kind == "single":
        return name
    return f"{name}[{key!r}]"


def pack(kind: Kind, keys: tuple[Key, ...], items: list[Any]) -> Any:
    """The inverse of :func:`split_fields`: one item, a dict or a tuple."""
    if kind == "single":
        return items[0]
    if kind == "dict":
        return dict(zip(keys, items, strict=True))
    return tuple(items)


def per_field(option: str, given: Any, kind: Kind, keys: tuple[Key, ...]) -> list[Any]:
    """``given`` for each field: the same value, or a dict keyed by field (missing: default)."""
    if not isinstance(given, Mapping):
        return [given] * len(keys)
    if kind == "single":
        raise TypeError(
            f"Argument `{option}` is a dict, but `x` is one sequence collection, not a dict or "
            f"tuple of fields. Received: {option}={given!r:.80}\n"
            f"- Pass one {option} for the collection."
        )
    unknown = [k for k in given if k not in keys]
    if unknown:
        raise ValueError(
            f"Argument `{option}` names field {unknown[0]!r}, which `x` does not have. "
            f"Received keys {list(given)!r}; the fields are {list(keys)!r}\n"
            f"- Key `{option}` by the field names of `x` (by position for a tuple)."
        )
    return [given.get(k, _DEFAULTS[option]) for k in keys]


# --------------------------------------------------------------------------- the stage


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

    Every table gets the kernel's fill row (:func:`seqprep.inputs._kernel.with_fill`: zero steps,
    target 0, weight 0), and every target gets weights when it had none, so that fill rows
    weigh 0: 1 per real sequence for per-sequence targets (scaled by the batch's rows over
    its real rows in :func:`gather`), ``"timestep"`` weights for per-step targets (the loss
    is then the one-device loss wherever that is the mean over real steps: a Keras mask
    reaching the loss, or a loss built with ``"mean_with_sample_weight"``).

    Example:
        >>> st = with_fill(prepare([[1, 2], [3]], [5, 6]))
        >>> [a.tolist() for a in gather(st, np.array([1, 2]), 2, scale=np.float32(2))]
        [[[3, 0], [0, 0]], [6, 0], [2.0, 0.0]]
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
    scale: Any = None,
) -> tuple[Any, ...]:
    """``(x,)``, ``(x, y)`` or ``(x, y, weights)`` of one batch, in the stage's structure.

    Args:
        stage: what to gather from (numpy, or converted once to the ops' library).
        idx: int64 ``(B,)``: the batch's sequence indices.
        widths: the padded width (one field), or one width per field (``(k,)``).
        ops: the array library.
        scale: a batch with fill rows (a stage made by :func:`with_fill`): its rows over
            its real rows, by which per-sequence weights are scaled.

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
    for target in stage.targets:
        src, real = layouts[target.field]
        out = _kernel.gather_targets(target.table, src, real, idx, ops=ops, scale=scale)
        ys.append(out[0])
        ws.extend(out[1:])
    y = pack(stage.y_kind, stage.y_keys, ys)
    if not stage.weighted:
        return x, y
    return x, y, pack(stage.y_kind, stage.y_keys, ws)


# --------------------------------------------------------------------------- building it


def _check_counts(label_lengths: list[tuple[str, np.ndarray]], what: str) -> None:
    (first, lengths), *rest = label_lengths
    for label, other in rest:
        if other.size != lengths.size:
            raise ValueError(
                f"The fields of `{what}` must hold one sequence per example each. Received "
                f"{lengths.size} in `{first}` and {other.size} in `{label}`\n"
                "- Pass the same examples, in the same order, in every field."
            )


def _sampler_columns(sampler: Any, kind: Kind, keys: tuple[Key, ...], labels: list[str],
                     raw: list[np.ndarray], sampler_type: type) -> list[int | None]:
    """Which sampler column plans each field (see the module docstring), checked."""
    if not isinstance(sampler, sampler_type):
        check_sampler(sampler, raw[0], sampler_type)  # raises the TypeError
    planned = np.asarray(sampler.lengths)
    limit = sampler.length_limit
    if planned.ndim == 2:
        names = getattr(sampler, "field_names", None)
        k = planned.shape[1]
        if kind == "single":
            raise ValueError(
                f"Argument `sampler` plans {k} fields (lengths of shape {planned.shape}), but "
                "`x` is one sequence collection.\n- Pass `x` as a dict or tuple of the "
                f"{k} fields the sampler was built on, or build a 1-D sampler: "
                "`BucketSampler(sequence_lengths(x), ...)`."
            )
        if k != len(keys):
            raise ValueError(
                f"Argument `sampler` plans {k} fields (lengths of shape {planned.shape}), but "
                f"`x` has {len(keys)}: {list(keys)!r}\n- Build the sampler with one length "
                "column per field of `x`, in the same order."
            )
        columns: list[int | None] = list(range(k))
        if names is not None and kind == "dict" and all(isinstance(k, str) for k in names):
            names = list(names)
            if sorted(map(str, names)) != sorted(keys):
                raise ValueError(
                    f"Argument `sampler` was built on the fields {names!r}, but `x` has "
                    f"{list(keys)!r}\n- Name the sampler's length columns as the fields of `x`."
                )
            columns = [names.index(key) for key in keys]
        for j, col in enumerate(columns):
            lim = limit if limit is None or np.ndim(limit) == 0 else np.asarray(limit)[col]
            _check_planned(planned[:, col], raw[j], lim, labels[j],
                           f"column {col} of its lengths")
        return columns
    n = raw[0].size
    if kind == "single":
        check_sampler(sampler, raw[0], sampler_type)
        return [0]
    if planned.size != n:
        raise ValueError(
            f"Argument `sampler` was built on {planned.size} lengths, but the fields of `x` "
            f"hold {n} sequences each.\n- Build the sampler from one field's lengths, e.g. "
            f"`BucketSampler(sequence_lengths(x[{keys[0]!r}]), ...)`."
        )
    for j, lengths in enumerate(raw):
        kept = lengths if limit is None else np.minimum(lengths, limit)
        if np.array_equal(kept, planned):
            return [0 if i == j else None for i in range(len(raw))]
    shown = "; ".join(
        f"`{label}`: {_first_difference(planned, raw[j], limit)}" for j, label in enumerate(labels)
    )
    raise ValueError(
        f"Argument `sampler` was built on lengths that match no field of `x` ({shown}).\n"
        "- Build the sampler from the lengths of the field it should bucket, e.g. "
        f"`BucketSampler(sequence_lengths(x[{keys[0]!r}]), ...)`, or a 2-D sampler on every "
        "field's lengths."
    )


def _first_difference(planned: np.ndarray, lengths: np.ndarray, limit: Any) -> str:
    kept = lengths if limit is None else np.minimum(lengths, limit)
    i = int(np.flatnonzero(kept != planned)[0])
    return f"sequence {i} has {int(lengths[i])} steps, the sampler {int(planned[i])}"


def _check_planned(planned: np.ndarray, lengths: np.ndarray, limit: Any, label: str,
                   where: str) -> None:
    kept = lengths if limit is None else np.minimum(lengths, limit)
    if planned.size != kept.size or not np.array_equal(planned, kept):
        detail = (f"{planned.size} lengths for {kept.size} sequences" if planned.size != kept.size
                  else _first_difference(planned, lengths, limit))
        raise ValueError(
            f"Argument `sampler` was built on other lengths than `{label}`'s ({where}: "
            f"{detail}).\n- Build the sampler from this data's lengths, one column per field."
        )


def _check_pad_to(pad_to: Any, label: str) -> Any:
    if isinstance(pad_to, str) or pad_to is None:
        check_choice("pad_to", pad_to, ("auto", "batch", "bucket"))
    elif np.isscalar(pad_to):
        pad_to = check_int("pad_to", pad_to, minimum=1,
                           fix='Pass pad_to="batch", pad_to="bucket" or a positive width.')
    return pad_to


def _quantile_grid(lengths: np.ndarray, max_widths: int = 16) -> np.ndarray:
    """At most ``max_widths`` widths covering ``lengths`` (its upper quantiles), for a field
    that no sampler column plans on a backend that compiles one program per shape."""
    if not lengths.size:
        return np.array([1], np.int64)
    q = np.quantile(lengths, np.linspace(0, 1, max_widths + 1)[1:], method="higher")
    return np.unique(np.maximum(q.astype(np.int64), 1))


def resolve_pad_to(
    pad_to: Any, field_lengths: np.ndarray, column: int | None, sampler: Any, label: str,
    backend: str | None, epoch: int, resolve_planned: Callable[..., Any],
) -> Any:
    """One field's ``pad_to`` as ``"batch"``, ``"bucket"``, an int or a width grid.

    A field a 1-D sampler plans takes the sampler's rule (``resolve_planned``:
    :func:`seqprep.planning._shapes.resolve_pad_to`). A field of a 2-D sampler pads to its
    batch's longest (``"auto"``; on a compiling backend, the field's own
    :func:`seqprep.width_grid`, or ``"bucket"`` under a token budget), its bucket width
    (``"bucket"``), a fixed int, or the smallest width of a grid that covers its bucket. A
    field no sampler column plans pads to its batch's longest (``"auto"``; on a compiling
    backend, a grid of at most 16 widths from its lengths' quantiles), a fixed int, or the
    smallest grid width that covers its batch's longest; ``"bucket"`` is refused there.
    """
    planned_1d = column is not None and np.ndim(sampler.lengths) == 1
    if planned_1d:
        pad_to = resolve_planned(pad_to, sampler, backend=backend, epoch=epoch)
    elif isinstance(pad_to, str):
        if pad_to == "auto":
            if backend is None:
                pad_to = "batch"
            elif column is None:
                pad_to = _quantile_grid(field_lengths)
            elif sampler.max_tokens is not None:  # a token budget: never wider than the bucket
                pad_to = "bucket"
            else:  # a 2-D sampler's field: a grid of its bucket widths
                pad_to = width_grid(sampler, field=sampler.field_names[column])
        elif pad_to == "bucket":
            if column is None:
                raise ValueError(
                    f'Argument `pad_to`="bucket" for `{label}`, which the sampler does not '
                    f"bucket (it plans another field).\n- Pass pad_to=\"batch\", an int or a "
                    "width grid for that field (a dict of per-field pad_to), or build a 2-D "
                    "sampler on every field's lengths."
                )
    elif np.ndim(pad_to) == 1:
        pad_to = check_width_grid(pad_to, int(field_lengths.max()) if field_lengths.size else 0)
    if isinstance(pad_to, int) and field_lengths.size and int(field_lengths.max()) > pad_to:
        i = int(np.argmax(field_lengths))
        what = "`x`" if label == "x" else f"`{label}`"
        raise ValueError(
            f"Argument `pad_to`={pad_to} is shorter than sequence {i} of {what} "
            f"(length {int(field_lengths[i])}).\n"
            f"- Pass pad_to>={int(field_lengths.max())}, or build the sampler with "
            f"max_length={pad_to}, overlong='truncate'."
        )
    return pad_to


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


def _align(
    y: Any, key: Key, label: str, fields_raw: list[np.ndarray], field_labels: list[str],
    x_keys: tuple[Key, ...], targets: str, forced: int | None, multi: bool,
) -> tuple[str, Any, int]:
    """``(kind, resolved, field)``: a target field read by the targets rule and the ``x``
    field it aligns with (see the module docstring)."""
    if forced is not None:
        kind, resolved = resolve_targets(y, fields_raw[forced], targets=targets, name=label,
                                         xname=field_labels[forced])
        return kind, resolved, forced
    try:
        rows = lengths_of(y, label)
    except (TypeError, ValueError):
        rows = None
    matches = [] if rows is None else [
        j for j, lengths in enumerate(fields_raw) if np.array_equal(rows, lengths)
    ]
    ref = matches[0] if matches else 0
    try:
        kind, resolved = resolve_targets(y, fields_raw[ref], targets=targets, name=label,
                                         xname=field_labels[ref])
    except ValueError:
        if not multi or matches or rows is None or rows.size != fields_raw[0].size:
            raise
        i = int(np.flatnonzero(rows != fields_raw[0])[0])
        shown = ", ".join(f"`{lab}` {int(fields_raw[j][i])}"
                          for j, lab in enumerate(field_labels))
        raise ValueError(
            f"Argument `{label}` holds per-step targets whose lengths match no field of `x`: "
            f"{label}[{i}] has {int(rows[i])} steps; at that position {shown}.\n"
            "- Per-step targets need one target per step of one input field (e.g. decoder "
            "outputs aligned with decoder inputs); if they hold one target per sequence, pass "
            "an array of shape (n, ...) or targets=\"sequence\"."
        ) from None
    if kind == "step" and len(matches) > 1:
        names = ", ".join(f"`{field_labels[j]}`" for j in matches)
        raise ValueError(
            f"Argument `{label}` holds per-step targets whose lengths equal those of several "
            f"fields of `x` ({names}), so which field's padding they follow is ambiguous. "
            "Received: targets_field=None\n"
            f"- Pass targets_field= one of {[x_keys[j] for j in matches]!r}."
        )
    return kind, resolved, ref


def _target_field(targets_field: Any, key: Key, kind: Kind, keys: tuple[Key, ...],
                  y_kind: Kind) -> int | None:
    """The ``x`` field index ``targets_field`` names for target ``key`` (None: by lengths)."""
    given = targets_field
    if isinstance(given, Mapping) and y_kind != "single":
        given = given.get(key)
    if given is None:
        return None
    if kind == "single":
        raise ValueError(
            f"Argument `targets_field` names a field, but `x` is one sequence collection. "
            f"Received: targets_field={targets_field!r}\n- Drop `targets_field`: per-step "
            "targets align with `x`."
        )
    if given not in keys:
        raise ValueError(
            f"Argument `targets_field` must name a field of `x`. Received: "
            f"targets_field={targets_field!r}; the fields are {list(keys)!r}\n"
            "- Pass the name (the position, for a tuple) of the field the targets align with."
        )
    return keys.index(given)


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
) -> Stage:
    """Read ``x``, ``y`` and ``sample_weight`` into a :class:`Stage` (the module's rules).

    ``sampler`` (checked to be a ``sampler_type``) decides each field's kept lengths and which
    fields it plans; without a ``sampler_type``, every field keeps its lengths and ``pad_to``
    is only checked (the executor pads). Order of the checks: the options, the fields
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
                                                       labels[j]),
                                options["value"][j], labels[j]),
            starts[j], kept[j])
        for j in range(len(keys))
    ]
    target_list = []
    for key, mode, res, field in resolved_targets:
        label = field_label(yname, y_kind, key)
        if mode == "step":
            check_finite_labels(res.values, label, offsets=res.offsets)
            y_table = values_with_pad_row(res, default_dtype(res.values.dtype), 0, label)
        else:
            y_table = cast_labels(label_array(res, label, len(raw[0])), label)
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
