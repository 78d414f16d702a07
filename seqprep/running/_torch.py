"""PyTorch's ``DataLoader`` on seqprep's plan: collate functions and sharding by rank.

A :class:`~seqprep.BucketSampler` (or :class:`~seqprep.PackSampler`) is already a
``batch_sampler``: iterating it yields the current epoch's batches of indices, every new
``for`` loop plays the next epoch, ``set_epoch(epoch)`` is ``DistributedSampler``'s convention
and ``state_dict()`` / ``load_state_dict()`` is what ``torchdata``'s ``StatefulDataLoader``
saves and restores. What a ``DataLoader`` still needs is the function that turns the list of
items it fetched into one padded batch:

* :class:`PadCollate` pads ``x``, ``(x, y)`` or ``(x, y, w)`` items exactly as
  :func:`seqprep.bucketed_dataset` pads a batch (same side, value, dtype, targets and weights
  rules; dict fields each padded to their own width);
* :class:`PackCollate` lays a :class:`~seqprep.PackSampler` batch out in packed rows, exactly
  as :func:`seqprep.packed_dataset` does (the inputs :class:`seqprep.layers.PackedRNN` takes);
  :class:`RowItems` is the dataset view that fetches a packed row's items.

:func:`shard_by_rank` reads ``torch.distributed``'s world size and rank as the
``num_shards=`` / ``shard_index=`` of a sampler.

The collates are numpy (the same :mod:`seqprep.inputs._kernel` gather and pad as every other
executor): they import neither TensorFlow nor Keras, and import PyTorch only to return
tensors (``return_tensors="pt"``), so ``return_tensors="np"`` works without PyTorch.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import DTypeLike

from seqprep._core.casts import check_cast, check_pad_value
from seqprep._core.checks import (
    check_bool,
    check_choice,
    check_finite_features,
    check_finite_labels,
    check_int,
)
from seqprep._core.options import _data_parallel
from seqprep._core.ragged import Ragged, as_ragged
from seqprep.inputs import _kernel, _stage_fields, _stage_rules
from seqprep.inputs._targets import Targets, resolve_targets
from seqprep.planning._fill import fill_batches
from seqprep.planning._packing import PackSampler
from seqprep.running._floatx import keras_floatx

__all__ = ["PackCollate", "PadCollate", "RowItems", "shard_by_rank"]

ReturnTensors = Literal["pt", "np"]
_ITEM_FORMS = "`x`, `(x,)`, `(x, y)` or `(x, y, w)`"


# --------------------------------------------------------------------------- sharding


def shard_by_rank(group: Any = None) -> dict[str, int]:
    """``num_shards`` and ``shard_index`` of a sampler from ``torch.distributed``.

    Pass the result to :class:`~seqprep.BucketSampler` or :class:`~seqprep.PackSampler`,
    ``BucketSampler(lengths, batch_size=32, **shard_by_rank())``, as ``DistributedSampler``
    takes ``num_replicas`` and ``rank``: every rank plans the same epoch from the same seed and
    keeps its own share, the same number of batches on every rank, every example exactly once
    per epoch over all ranks (unless ``drop_remainder``). Without an initialised process group
    (or without PyTorch) it is one shard, so the same script runs on one process.

    Args:
        group: the ``torch.distributed`` process group (default: the world).

    Returns:
        ``{"num_shards": world_size, "shard_index": rank}``.

    Example:
        >>> shard_by_rank()  # not launched by torchrun
        {'num_shards': 1, 'shard_index': 0}
    """
    try:
        import torch.distributed as dist
    except ImportError:
        return {"num_shards": 1, "shard_index": 0}
    if not (dist.is_available() and dist.is_initialized()):
        return {"num_shards": 1, "shard_index": 0}
    return {
        "num_shards": int(dist.get_world_size(group)),
        "shard_index": int(dist.get_rank(group)),
    }


# --------------------------------------------------------------------------- shared rules


def _values_with_pad_row(rag: Ragged, dtype: np.dtype, value: Any, name: str) -> np.ndarray:
    """:func:`seqprep.inputs._stage_rules.values_with_pad_row` (the one input stage's table: the
    cast and the padding value checked) with the padding value checked once per dtype and value, not
    once per batch."""
    check_cast(rag.values, dtype, locate=rag.locator(name))
    try:
        _check_pad_value_once(dtype, value)
    except TypeError:  # an unhashable value: check it every time
        check_pad_value(value, dtype)
    values = rag.values if rag.values.dtype == dtype else rag.values.astype(dtype)
    return _kernel.with_pad_row(values, value)


@functools.lru_cache(maxsize=64)
def _check_pad_value_once(dtype: np.dtype, value: Any) -> None:
    check_pad_value(value, dtype)


def _labels(y: Any, n: int, floatx: str) -> np.ndarray:
    """Per-sequence targets by the one input stage's label rules."""
    arr = _stage_rules.cast_labels(_stage_rules.label_array(y, "y", n), "y", floatx)
    check_finite_labels(arr, "y")
    return arr


def _item_weights(ws: list[Any]) -> np.ndarray:
    return _stage_rules.sequence_weights_array(
        ws, len(ws),
        fix="For per-step weights that zero the padding, drop the weight from the items and "
            "pass PadCollate(sample_weight='timestep').",
    )


def _check_return_tensors(return_tensors: Any) -> str:
    check_choice("return_tensors", return_tensors, ("pt", "np"))
    if return_tensors == "pt":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ImportError(
                "Argument `return_tensors`='pt' needs PyTorch, which is not installed. "
                "Received: return_tensors='pt'\n"
                "- Install torch, or pass return_tensors='np' for numpy arrays."
            ) from None
    return return_tensors


def _to_torch(tree: Any) -> Any:
    import torch

    if isinstance(tree, dict):
        return {k: _to_torch(v) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(_to_torch(v) for v in tree)
    try:
        return torch.from_numpy(np.ascontiguousarray(tree))
    except TypeError:
        raise TypeError(
            f"A batch of dtype {tree.dtype} has no PyTorch tensor type. Received an array of "
            f"dtype {tree.dtype}\n- Pass `dtype=` with a type PyTorch has (e.g. 'int64' or "
            "'float32'), or return_tensors='np'."
        ) from None


def _split_items(batch: Any, who: str) -> tuple[list[Any], list[Any] | None, list[Any] | None]:
    """``(xs, ys, ws)`` of a list of items (see ``_ITEM_FORMS``); ys/ws None when absent."""
    if not isinstance(batch, Sequence) or isinstance(batch, (str, bytes)) or not len(batch):
        raise ValueError(
            f"{who} must be called with a non-empty list of items ({_ITEM_FORMS}). "
            f"Received: {type(batch).__name__} {batch!r:.80}\n"
            "- Pass it as `collate_fn=` of a torch.utils.data.DataLoader with a "
            "`batch_sampler`."
        )
    first = batch[0]
    arity = len(first) if isinstance(first, tuple) else 0
    if isinstance(first, tuple) and not 1 <= arity <= 3:
        raise ValueError(
            f"Items must be {_ITEM_FORMS}. Received a tuple of {arity} elements\n"
            "- Return `(x, y)` or `(x, y, sample_weight)` from the dataset."
        )
    for i, item in enumerate(batch):
        if (len(item) if isinstance(item, tuple) else 0) != arity:
            raise ValueError(
                f"Every item of a batch must have the same form ({_ITEM_FORMS}). Received "
                f"batch item 0 with {max(arity, 1)} element(s) and batch item {i} with "
                f"{len(item) if isinstance(item, tuple) else 1}\n"
                "- Return the same structure for every index from the dataset."
            )
    if arity == 0:
        return list(batch), None, None
    columns = list(zip(*batch, strict=True))
    xs = list(columns[0])
    ys = list(columns[1]) if arity > 1 else None
    ws = list(columns[2]) if arity > 2 else None
    return xs, ys, ws


def _fields(xs: list[Any]) -> tuple[str, ...] | None:
    """The field names of dict items (in the first item's order), or None for plain items."""
    if not isinstance(xs[0], Mapping):
        if any(not isinstance(x, (np.ndarray, list)) and isinstance(x, Mapping) for x in xs):
            raise ValueError(
                "Items' `x` must all be sequences or all be dicts of named fields. "
                "Received a mix\n- Return the same structure for every index."
            )
        return None
    names = tuple(xs[0])
    for i, x in enumerate(xs):
        if not isinstance(x, Mapping) or set(x) != set(names):
            got = sorted(x) if isinstance(x, Mapping) else type(x).__name__
            raise ValueError(
                f"Every item's `x` must have the fields of the first. Received fields "
                f"{sorted(names)} in batch item 0 and {got} in batch item {i}\n"
                "- Return the same fields for every index."
            )
    return names


def _per_field(name: str, option: Any, field: str | None,
               fields: tuple[str, ...] | None) -> Any:
    """``option`` for ``field``: the same value for every field, or a dict keyed by field name
    whose missing fields take the default (the one input stage's rule,
    ``_stage_fields.per_field``)."""
    keys = (None,) if fields is None else fields
    picked = _stage_fields.per_field(name, option, "single" if fields is None else "dict", keys)
    value = picked[keys.index(field)]
    return "batch" if name == "pad_to" and value == "auto" else value  # the collate's default


def _item_targets(ys: list[Any], lengths: np.ndarray, targets: str, who: str, floatx: str
                  ) -> tuple[str, np.ndarray]:
    """``(mode, y)`` for the kernel's table: the items' targets read by the one targets rule
    (:func:`_target_kind` under ``"auto"``); per-step targets checked finite and laid out with
    their pad row, per-sequence ones as a label array."""
    mode, resolved = resolve_targets(ys, lengths, targets=_target_kind(targets, ys, who))
    if mode == "step":
        check_finite_labels(resolved.values, "y", offsets=resolved.offsets)
        return mode, _values_with_pad_row(
            resolved, _stage_rules.default_dtype(resolved.values.dtype, floatx), 0, "y")
    return mode, _labels(resolved, len(ys), floatx)


def _target_kind(targets: str, ys: list[Any], who: str) -> str:
    """``targets``, or under ``"auto"`` "sequence" for scalar targets. A collate sees one
    batch at a time, where per-step targets and vector targets can look alike (a batch
    whose sequences share one length), so array targets must say which they are."""
    if targets != "auto":
        return targets
    try:
        scalars = np.asarray(ys)
    except ValueError:  # rows of different lengths: not numbers
        scalars = None
    if scalars is not None and scalars.ndim == 1:
        return "sequence"
    raise ValueError(
        f"Items' `y` are sequences or arrays, and {who} reads one batch at a time: in a "
        "batch whose sequences share one length, per-step targets and per-sequence vector "
        "targets look alike. Received: targets='auto'\n"
        f"- Pass {who}(targets=\"step\") if each `y` holds one target per step of its `x`, "
        "or targets=\"sequence\" if it is one target (e.g. a one-hot label)."
    )


@dataclass(frozen=True)
class _FieldOptions:
    padding: str
    value: Any
    pad_to: Any
    dtype: Any


def _check_pad_to(pad_to: Any, name: str = "pad_to") -> Any:
    if isinstance(pad_to, str):
        return check_choice(name, pad_to, ("batch",))
    if np.ndim(pad_to) == 0:
        return check_int(name, pad_to, minimum=1,
                         fix='Pass pad_to="batch", a positive width or a width grid.')
    grid = np.asarray(pad_to)
    if grid.ndim != 1 or not grid.size or grid.dtype.kind not in "iu" or grid.min() < 1 \
            or np.any(np.diff(grid) <= 0):
        raise ValueError(
            f"Argument `{name}` must be \"batch\", a positive int or a width grid (strictly "
            f"ascending positive ints). Received: {name}={pad_to!r}\n"
            "- Pass seqprep.width_grid(sampler) for a grid fitted to a sampler."
        )
    return grid.astype(np.int64)


def _width(pad_to: Any, longest: int, field: str) -> int:
    """The padded width of a batch whose longest member has ``longest`` steps."""
    if isinstance(pad_to, str):
        return longest
    if isinstance(pad_to, int):
        if longest > pad_to:
            raise ValueError(
                f"Argument `pad_to`={pad_to} is shorter than a sequence of this batch"
                f"{field} (length {longest}).\n"
                f"- Pass pad_to>={longest}, or build the sampler with max_length={pad_to}, "
                "overlong='drop'."
            )
        return pad_to
    at = int(np.searchsorted(pad_to, longest, side="left"))
    if at == pad_to.size:
        raise ValueError(
            f"Argument `pad_to`'s widest width, {int(pad_to[-1])}, is shorter than a sequence "
            f"of this batch{field} (length {longest}).\n"
            "- Pass a grid that reaches the longest length, e.g. seqprep.width_grid(sampler)."
        )
    return int(pad_to[at])


# --------------------------------------------------------------------------- PadCollate


class PadCollate:
    """A ``collate_fn`` for ``torch.utils.data.DataLoader`` that pads like ``bucketed_dataset``.

    Give it to a ``DataLoader`` whose ``batch_sampler`` is a :class:`~seqprep.BucketSampler`
    (or any sampler of index batches) over a map-style dataset of items ``x``, ``(x,)``,
    ``(x, y)`` or ``(x, y, w)``; it returns the batch that :func:`seqprep.bucketed_dataset`
    returns for the same sequences, in the same structure:

    * ``x``: ``(B, T, *step_shape)``, ``T`` from ``pad_to``, padded with ``value`` on the
      ``padding`` side (``pad_sequences`` of the batch's sequences). Integer and boolean
      steps keep their dtype; floats wider than Keras's ``floatx`` (float32 unless set;
      never narrower than float32; read only when Keras is imported) become it after a check
      that none overflows (``dtype=`` overrides; a cast that would change a value raises).
      A dict ``x`` (named fields, e.g. ``{"encoder": ..., "decoder": ...}``) gives a dict
      of such arrays, each field padded to its own width; ``padding``, ``value``, ``pad_to``
      and ``dtype`` may then be dicts keyed by field name (a missing field takes the
      default), as in ``bucketed_dataset``.
    * ``y``: per-sequence targets ``(B, ...)`` or per-step targets ``(B, T, ...)`` padded
      with 0 like ``x``, as ``targets`` says (with dict ``x``, per-step targets align with
      ``targets_field``, or with the one field whose lengths they share in the batch).
    * weights: the items' ``w`` (one number per sequence) give ``(B,)`` (with per-step
      targets ``(B, T)``: each item's ``w`` on its real steps, 0 on padding);
      ``sample_weight="timestep"`` gives float32 ``(B, T)``, 1 on real steps and 0 on
      padding (times ``w`` when the items carry one), ``"timestep_mean"`` those scaled to
      mean 1 over the batch, as in ``bucketed_dataset``.

    Why ``return_tensors="pt"`` by default: it is what ``default_collate`` returns, what
    ``pin_memory=True`` and a PyTorch training loop need, and Keras takes it on every backend.
    ``"np"`` returns numpy arrays (no PyTorch needed); both come from the same numpy batch.

    ``targets="auto"`` reads numbers (one per item) as per-sequence targets and refuses
    any other ``y``: a collate sees one batch at a time, and in a batch whose sequences
    share one length per-step targets and per-sequence vectors look alike, so the library's
    rule (:func:`seqprep.resolve_targets`) would read batches of one epoch differently.
    Pass ``targets="step"`` or ``targets="sequence"`` when the items' ``y`` are arrays.

    Args:
        padding: ``"post"`` (default; what the cuDNN RNN kernel needs) or ``"pre"``.
        value: padding value of ``x``; must be representable in its dtype.
        pad_to: ``"batch"`` (the batch's longest sequence, the default), a positive int (every
            batch; a longer sequence raises) or a width grid (ascending ints: the smallest
            width that holds the batch's longest sequence; ``seqprep.width_grid(sampler)``).
        dtype: dtype of the ``x`` batches (default: see above).
        sample_weight: None (the items' ``w`` when they carry one), ``"timestep"`` or
            ``"timestep_mean"``.
        targets: ``"auto"`` (numbers only, see above), ``"sequence"`` or ``"step"``: how
            to read the items' ``y``.
        targets_field: with dict ``x``, the field per-step targets align with.
        max_length: cut longer sequences to this many steps, as a sampler built with
            ``max_length=..., overlong="truncate"`` planned them (default: no cut).
        truncating: which steps ``max_length`` cuts: ``"post"`` keeps the first ones,
            ``"pre"`` the last ones (``bucketed_dataset``'s ``truncating``).
        allow_nonfinite: accept NaN/inf in ``x`` (NaN/inf in ``y`` are always refused).
        return_tensors: ``"pt"`` (torch tensors, the default) or ``"np"``.
        data_parallel: None (the default: batches as fetched), an int ``k`` or ``"auto"``
            (read the ``keras.distribution`` layout, as ``bucketed_dataset`` does; this
            imports Keras): every batch is topped up to a multiple of ``k`` rows with
            weight-0 fill rows and its real rows' weights scaled as ``bucketed_dataset(...,
            options=sp.Options(data_parallel=k))`` does (a fill row's one step is the
            batch's first step), for Keras's ``DataParallel`` on JAX fed by a
            ``DataLoader``. PyTorch's DDP needs none: each rank pads its own
            batches, and what it needs, the same number of batches on every rank, is the
            sampler's (:func:`shard_by_rank`).

    Raises:
        ValueError: an unknown option, or (when called) items of mixed forms, a lossy
            ``dtype``, NaN/inf features or targets, targets that fit no reading, a sequence
            longer than an int ``pad_to``, or a ``keras.distribution`` layout over several
            processes (``"auto"``: a collate sees one process's batch, but every process
            must hold its rows of one global batch; use ``grain_dataset`` or
            ``bucketed_dataset``).
        ImportError: ``return_tensors="pt"`` without PyTorch.

    Example:
        >>> import seqprep as sp
        >>> collate = sp.PadCollate(return_tensors="np")
        >>> xb, yb = collate([([1, 2, 3], 0), ([4], 1)])
        >>> xb.tolist(), yb.tolist()
        ([[1, 2, 3], [4, 0, 0]], [0, 1])
        >>> xb, yb, wb = sp.PadCollate(sample_weight="timestep", return_tensors="np")(
        ...     [([1, 2], 0), ([3], 1)])
        >>> wb.tolist()
        [[1.0, 1.0], [1.0, 0.0]]
        >>> xb, yb, wb = sp.PadCollate(data_parallel=4, return_tensors="np")(
        ...     [([1, 2, 3], 0), ([4], 1)])  # two fill rows: one step each, weight 0
        >>> xb.tolist(), yb.tolist(), wb.tolist()  # real rows weigh rows / real rows
        ([[1, 2, 3], [4, 0, 0], [1, 0, 0], [1, 0, 0]], [0, 1, 0, 0], [2.0, 2.0, 0.0, 0.0])
    """

    def __init__(
        self,
        *,
        padding: Literal["pre", "post"] | Mapping[str, str] = "post",
        value: Any = 0,
        pad_to: Any = "batch",
        dtype: DTypeLike | Mapping[str, DTypeLike] | None = None,
        sample_weight: Literal["timestep", "timestep_mean"] | None = None,
        targets: Targets = "auto",
        targets_field: str | None = None,
        max_length: int | None = None,
        truncating: Literal["pre", "post"] = "post",
        allow_nonfinite: bool = False,
        return_tensors: ReturnTensors = "pt",
        data_parallel: int | Literal["auto"] | None = None,
    ) -> None:
        for side in padding.values() if isinstance(padding, Mapping) else [padding]:
            check_choice("padding", side, ("pre", "post"))
        for p in pad_to.values() if isinstance(pad_to, Mapping) else [pad_to]:
            _check_pad_to(p)
        for d in dtype.values() if isinstance(dtype, Mapping) else [dtype]:
            if d is not None:
                try:
                    np.dtype(d)
                except TypeError:
                    raise TypeError(
                        f"Argument `dtype` is not a numpy dtype. Received: dtype={d!r}\n"
                        "- Pass a numpy dtype or its name, e.g. dtype='float32'."
                    ) from None
        self.padding, self.value, self.pad_to, self.dtype = padding, value, pad_to, dtype
        self.sample_weight = sample_weight if sample_weight is None else check_choice(
            "sample_weight", sample_weight, ("timestep", "timestep_mean"))
        self.targets = check_choice("targets", targets, ("auto", "sequence", "step"))
        if targets_field is not None and not isinstance(targets_field, str):
            raise TypeError(
                "Argument `targets_field` must be the name of a field of the items' `x`. "
                f"Received: targets_field={targets_field!r}"
            )
        self.targets_field = targets_field
        self.max_length = check_int("max_length", max_length, minimum=1, allow_none=True)
        self.truncating = check_choice("truncating", truncating, ("pre", "post"))
        self.allow_nonfinite = check_bool("allow_nonfinite", allow_nonfinite)
        self.return_tensors = _check_return_tensors(return_tensors)
        self.data_parallel = _data_parallel("data_parallel", data_parallel)  # Options' check

    def __repr__(self) -> str:
        return (
            f"PadCollate(padding={self.padding!r}, value={self.value!r}, pad_to={self.pad_to!r}, "
            f"dtype={self.dtype!r}, sample_weight={self.sample_weight!r}, "
            f"targets={self.targets!r}, return_tensors={self.return_tensors!r}, "
            f"data_parallel={self.data_parallel!r})"
        )

    def _fill_to(self) -> int | None:
        """The row multiple of this batch (None: no fill rows); ``"auto"`` reads Keras now,
        so a layout set after the collate was built counts."""
        if self.data_parallel is None or isinstance(self.data_parallel, int):
            return None if self.data_parallel in (None, 1) else self.data_parallel
        from seqprep.running._data_parallel import resolve_data_parallel

        layout = resolve_data_parallel("auto", caller="PadCollate")
        if layout is not None and layout.num_processes > 1:
            raise ValueError(
                "PadCollate(data_parallel='auto') reads a keras.distribution layout over "
                f"{layout.num_processes} processes, but a collate sees one process's batch, "
                "and every process must hold its rows of one global batch, all at one width. "
                "Received: data_parallel='auto'\n- Use seqprep.grain_dataset or "
                "seqprep.bucketed_dataset (each process reads its rows of every batch)."
            )
        return None if layout is None else layout.size

    def _options(self, field: str | None, fields: tuple[str, ...] | None) -> _FieldOptions:
        """The options of ``field`` (checked once per field structure, then remembered)."""
        cache = self.__dict__.setdefault("_option_cache", {})
        key = (field, fields)
        if key not in cache:
            cache[key] = self._pick_options(field, fields)
        return cache[key]

    def _pick_options(self, field: str | None, fields: tuple[str, ...] | None) -> _FieldOptions:
        padding, value, pad_to, dtype = (
            _per_field(name, getattr(self, name), field, fields)
            for name in ("padding", "value", "pad_to", "dtype"))
        return _FieldOptions(check_choice("padding", padding, ("pre", "post")), value,
                             _check_pad_to(pad_to), dtype)

    def __call__(self, batch: Sequence[Any]) -> Any:
        """Pad one list of items (what the ``DataLoader`` fetched) into a batch."""
        xs, ys, ws = _split_items(batch, "PadCollate")
        fields = _fields(xs)
        if fields is None:
            rags = {None: as_ragged(xs, "x")}
        else:
            rags = {f: as_ragged([x[f] for x in xs], f"x[{f!r}]") for f in fields}
        y_field = self._target_field(rags, ys)
        fill_to = self._fill_to()
        floatx = keras_floatx(import_keras=False)
        rows = len(xs)
        # Data parallelism: fill rows (each table's index `rows`) after the items, and the
        # weight factor of the targets (seqprep.inputs._kernel.weight_scales).
        filled = None if fill_to is None else fill_batches(
            np.arange(rows), np.array([0, rows]), multiple_of=fill_to, fill_index=rows)
        idx = np.arange(rows, dtype=np.int64) if filled is None else filled.rows
        out = {}
        extra: tuple[Any, ...] = ()
        for field, rag in rags.items():
            label = "x" if field is None else f"x[{field!r}]"
            check_finite_features(rag.values, label, offsets=rag.offsets,
                                  allow_nonfinite=self.allow_nonfinite)
            opt = self._options(field, fields)
            dtype = _stage_rules.resolve_dtype(opt.dtype, rag.values.dtype, label, floatx)
            raw = rag.lengths
            lengths = raw if self.max_length is None else np.minimum(raw, self.max_length)
            starts = rag.offsets[:-1] + (raw - lengths if self.truncating == "pre" else 0)
            width = _width(opt.pad_to, int(lengths.max()), "" if field is None
                           else f" in field {field!r}")
            kw = {}
            if field == y_field and ys is not None:
                kw = self._target_columns(ys, ws, rag, floatx, fill=filled is not None)
            table = _kernel.table(_values_with_pad_row(rag, dtype, opt.value, label),
                                  starts, lengths, fill=filled is not None, **kw)
            src, real = _kernel.positions(table.starts, table.lengths, idx, width, opt.padding,
                                          table.pad_index)
            scale = None if filled is None or field != y_field else _kernel.weight_scales(
                table, np.arange(rows), np.array([0, rows]), np.array([width]),
                multiple_of=fill_to)[0]
            got = _kernel.gather_batch(table, src, real, idx, scale=scale)
            out[field] = got[0]
            if field == y_field:
                extra = got[1:]
        x_batch = out[None] if fields is None else out
        result = (x_batch, *extra) if ys is not None else x_batch
        return _to_torch(result) if self.return_tensors == "pt" else result

    def _target_field(self, rags: dict[Any, Ragged], ys: list[Any] | None) -> Any:
        """The field per-step targets align with and weights follow (None for plain ``x``)."""
        if None in rags:
            if self.targets_field is not None:
                raise ValueError(
                    "Argument `targets_field` names a field, but the items' `x` has no fields. "
                    f"Received: targets_field={self.targets_field!r}\n"
                    "- Drop `targets_field`, or return dicts of named fields as `x`."
                )
            return None
        if self.targets_field is not None:
            if self.targets_field not in rags:
                raise ValueError(
                    f"Argument `targets_field` must be a field of the items' `x`, one of "
                    f"{sorted(rags)}. Received: targets_field={self.targets_field!r}"
                )
            return self.targets_field
        if ys is None or _target_kind(self.targets, ys, "PadCollate") == "sequence":
            return next(iter(rags))  # weights follow the first field
        rows = as_ragged(ys, "y").lengths
        matching = [f for f, r in rags.items() if np.array_equal(r.lengths, rows)]
        if len(matching) > 1:
            raise ValueError(
                f"The items' per-step `y` has the lengths of several fields of `x` in this "
                f"batch: {matching}. Received: targets_field=None\n"
                "- Pass PadCollate(targets_field=...) naming the field the targets align with."
            )
        if not matching:
            raise ValueError(
                "The items' per-step `y` has the lengths of no field of `x` in this batch. "
                f"Received y lengths {rows.tolist()}, fields {sorted(rags)}\n"
                "- Give each item one target per step of the field they align with, and "
                "name it with targets_field=..."
            )
        return matching[0]

    def _target_columns(
        self, ys: list[Any], ws: list[Any] | None, rag: Ragged, floatx: str,
        fill: bool = False,
    ) -> dict:
        """The table's targets and weights for this batch (kernel ``table`` keywords); with
        ``fill`` rows, targets without weights get the weights that make fill rows weigh 0
        (as ``seqprep.inputs._stage.with_fill`` gives them)."""
        if isinstance(ys[0], Mapping):
            raise TypeError(
                "Items' `y` must be a target or a sequence of targets; dict targets are not "
                "supported by PadCollate. Received: a dict\n"
                "- Return one target (or one per-step target sequence) per item."
            )
        mode, y = _item_targets(ys, rag.lengths, self.targets, "PadCollate", floatx)
        w = _item_weights(ws) if ws is not None else None
        w_mode = self.sample_weight or ("sequence" if w is not None else None)
        if fill and w_mode is None:
            w_mode = "timestep" if mode == "step" else "sequence"
            w = None if mode == "step" else np.ones(len(ys), np.float32)
        return {"y": y, "y_mode": mode, "w": w, "w_mode": w_mode}


# --------------------------------------------------------------------------- packing


class RowItems:
    """A map-style dataset view whose item at a packed row (an array of indices) is the list
    of those items, for a ``DataLoader`` whose ``batch_sampler`` is a
    :class:`~seqprep.PackSampler` (its batches are lists of rows).

    Args:
        dataset: any map-style dataset (``dataset[i]`` for an int ``i``), e.g.
            ``list(zip(x, y))``.

    Example:
        >>> rows = RowItems(["a", "b", "c"])
        >>> rows[[2, 0]], len(rows)
        (['c', 'a'], 3)
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, row: Any) -> list[Any]:
        return [self.dataset[int(i)] for i in np.asarray(row).reshape(-1)]


class PackCollate:
    """A ``collate_fn`` for a :class:`~seqprep.PackSampler` batch: packed rows, as
    :func:`seqprep.packed_dataset` builds them.

    :class:`PadCollate` pads one sequence per row; a packed batch lays several back to back,
    which needs the row structure. Use it with a ``DataLoader`` over :class:`RowItems`:
    ``DataLoader(RowItems(list(zip(x, y))), batch_sampler=pack_sampler,
    collate_fn=PackCollate(pack_sampler))``. The batch then is the dict
    :class:`seqprep.layers.PackedRNN` takes, ``{"values": (B, P, ...), "segment_ids": (B, P)
    int32, "segment_lengths": (B, S) int32}`` with ``P = sampler.row_length`` and
    ``S = max(1, sampler.max_segments_)``; with ``y`` it is ``(inputs, targets, weights)``:
    per-sequence targets laid out per slot ``(B, S, ...)`` with weights 1 on filled slots,
    per-step targets packed like the values ``(B, P, ...)`` with weights 1 on real steps,
    times the items' ``w`` when they carry one.

    Args:
        sampler: the :class:`~seqprep.PackSampler` whose batches the loader fetches (for
            ``P``, ``S`` and the truncation limit).
        truncating: which steps a sampler built with ``overlong="truncate"`` cuts:
            ``"post"`` keeps the first ``row_length`` steps, ``"pre"`` the last.
        dtype: dtype of the values (default as in :class:`PadCollate`).
        targets: ``"auto"`` (numbers only, as in :class:`PadCollate`), ``"sequence"`` or
            ``"step"``.
        allow_nonfinite: accept NaN/inf in ``x``.
        return_tensors: ``"pt"`` (default) or ``"np"``.

    Example:
        >>> import seqprep as sp
        >>> x, y = [[1, 2, 3], [4], [5, 6], [7, 8]], [10, 11, 12, 13]
        >>> s = sp.PackSampler(sp.sequence_lengths(x), batch_size=2, shuffle=False)
        >>> items = RowItems(list(zip(x, y)))
        >>> batch = next(iter(s))
        >>> inputs, yb, wb = PackCollate(s, return_tensors="np")([items[r] for r in batch])
        >>> inputs["values"].tolist(), inputs["segment_ids"].tolist(), yb.tolist()
        ([[1, 2, 3], [5, 6, 4]], [[1, 1, 1], [1, 1, 2]], [[10, 0], [12, 11]])
    """

    def __init__(
        self,
        sampler: PackSampler,
        *,
        truncating: Literal["pre", "post"] = "post",
        dtype: DTypeLike | None = None,
        targets: Targets = "auto",
        allow_nonfinite: bool = False,
        return_tensors: ReturnTensors = "pt",
    ) -> None:
        if not isinstance(sampler, PackSampler):
            raise TypeError(
                "Argument `sampler` must be the seqprep.PackSampler of the loader's "
                f"batch_sampler. Received: sampler of type {type(sampler).__name__}\n"
                "- For one sequence per row, use PadCollate instead."
            )
        self.sampler = sampler
        self.truncating = check_choice("truncating", truncating, ("pre", "post"))
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.targets = check_choice("targets", targets, ("auto", "sequence", "step"))
        self.allow_nonfinite = check_bool("allow_nonfinite", allow_nonfinite)
        self.return_tensors = _check_return_tensors(return_tensors)

    def __call__(self, batch: Sequence[Sequence[Any]]) -> Any:
        """Pack one batch: a list of rows, each the list of its items (``RowItems``)."""
        if (not isinstance(batch, Sequence) or not len(batch)
                or not all(isinstance(r, list) and len(r) for r in batch)):
            raise ValueError(
                "PackCollate must be called with a non-empty list of packed rows, each a "
                f"non-empty list of items. Received: {type(batch).__name__} {batch!r:.80}\n"
                "- Wrap the dataset in seqprep.RowItems so that each row of the "
                "PackSampler's batch fetches a list of items."
            )
        counts = np.array([len(r) for r in batch], np.int64)
        xs, ys, ws = _split_items([item for row in batch for item in row], "PackCollate")
        s = self.sampler
        width, num_slots = int(s.row_length), max(1, s.max_segments_)
        if counts.max() > num_slots:
            raise ValueError(
                f"A row of this batch holds {int(counts.max())} sequences, more than the "
                f"sampler's max_segments_={s.max_segments_}.\n"
                "- Pass the PackSampler that is the loader's batch_sampler."
            )
        rag = as_ragged(xs, "x")
        check_finite_features(rag.values, "x", offsets=rag.offsets,
                              allow_nonfinite=self.allow_nonfinite)
        raw = rag.lengths
        lengths = raw if s.length_limit is None else np.minimum(raw, s.length_limit)
        starts = rag.offsets[:-1] + (raw - lengths if self.truncating == "pre" else 0)
        row_of = np.repeat(np.arange(counts.size), counts)
        used = np.bincount(row_of, weights=lengths, minlength=counts.size)
        if used.max() > width:
            raise ValueError(
                f"A row of this batch needs {int(used.max())} steps, more than the sampler's "
                f"row_length={width}.\n- Pass the PackSampler that is the loader's "
                "batch_sampler (and its data, in the same order)."
            )
        slot = np.full((counts.size, num_slots), -1, np.int64)
        slot[row_of, np.arange(row_of.size) - np.repeat(np.cumsum(counts) - counts, counts)] = (
            np.arange(row_of.size))
        kw: dict[str, Any] = {}
        floatx = keras_floatx(import_keras=False)
        if ys is not None:
            mode, y = _item_targets(ys, raw, self.targets, "PackCollate", floatx)
            w = _item_weights(ws) if ws is not None else None
            kw = {"y": y, "y_mode": mode, "w": w, "w_mode": "timestep"}
        dtype = _stage_rules.resolve_dtype(self.dtype, rag.values.dtype, "x", floatx)
        t = _kernel.table(_values_with_pad_row(rag, dtype, 0, "x"), starts, lengths, **kw)
        lay = _kernel.packed_positions(slot, t.starts, t.lengths, width, t.pad_index,
                                       t.pad_sequence)
        if t.y_mode == "sequence":
            got = _kernel.gather_batch(t, lay.src, lay.filled, lay.slot_owner,
                                       owner=lay.slot_owner)
        else:
            got = _kernel.gather_batch(t, lay.src, lay.real, lay.slot_owner,
                                       owner=lay.step_owner)
        inputs = {
            "values": got[0],
            "segment_ids": lay.segment_ids.astype(np.int32),
            "segment_lengths": lay.slot_lengths.astype(np.int32),
        }
        result = inputs if ys is None else (inputs, *got[1:])
        return _to_torch(result) if self.return_tensors == "pt" else result
