"""TBPTT's data: inputs and targets read and checked, and each window's arrays laid out.

:func:`_prepare_data` reads ``x`` and ``y`` through the one input stage
(:func:`seqprep.inputs._stage.prepare`: the dtype rule with Keras's ``floatx``, the non-finite
refusal, the targets rule) and adds TBPTT's own rules (one field, at least one sequence, no
empty sequence); every TBPTT entry point and the validation data go through it.
:class:`_Windows` and :class:`_DenseWindows` lay out a plan's windows with the input stage's
kernel (:mod:`seqprep.inputs._kernel`); :func:`_scatter_windowed` puts window outputs back in
input order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from seqprep._core.checks import check_bool, check_choice
from seqprep._core.ragged import Ragged, lengths_of
from seqprep.inputs import _kernel
from seqprep.inputs._stage import prepare
from seqprep.inputs._stage_fields import Key, Kind, field_label, pack, split_fields
from seqprep.inputs._targets import Targets
from seqprep.planning._windows import DenseTBPTTPlan, TBPTTPlan, plan_tbptt
from seqprep.running._floatx import keras_floatx
from seqprep.running._tbptt_runner import _Runner, input_spec

__all__ = [
    "_DenseWindows", "_Fields", "_FilledWindows", "_Windows", "_prepare_data",
    "_validation_windows", "_windows_of",
]


@dataclass(frozen=True)
class _Fields:
    """TBPTT's ``x`` of several fields on one time axis: every field has the same lengths
    (named inputs of one model, e.g. features and ids of each step), and the windows slide over
    all of them together. One field is a plain :class:`Ragged` instead."""

    kind: Kind  # "dict" or "tuple"
    keys: tuple[Key, ...]
    rags: tuple[Ragged, ...]

    @property
    def offsets(self) -> np.ndarray:
        return self.rags[0].offsets

    @property
    def lengths(self) -> np.ndarray:
        return self.rags[0].lengths

    def pack(self, arrays: list[Any]) -> Any:
        """One array per field, in the structure of ``x`` (a dict or a tuple)."""
        return pack(self.kind, self.keys, arrays)


def _rags(data: Ragged | _Fields) -> tuple[Ragged, ...]:
    return data.rags if isinstance(data, _Fields) else (data,)


def _packed(data: Ragged | _Fields, arrays: list[Any]) -> Any:
    return data.pack(arrays) if isinstance(data, _Fields) else arrays[0]


class _Windows:
    """Per-window numpy arrays (inputs, targets, weights) for one plan, built on demand by
    the kernel (:func:`seqprep.inputs._kernel.window_positions` + ``gather_batch``)."""

    def __init__(
        self,
        plan: TBPTTPlan,
        data: Ragged | _Fields,
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
        first, *others = _rags(data)
        self.table = _kernel.table(
            _kernel.with_pad_row(first.values, 0), data.offsets[:-1], data.lengths,
            y=y, y_mode=y_mode, w_mode="timestep",
        )
        # Fields share the lengths, so one layout (the same positions) places every field.
        inputs = replace(self.table, y=None, y_mode=None)
        self._inputs_tables = [inputs] + [
            replace(inputs, x=_kernel.with_pad_row(rag.values, 0)) for rag in others]
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
        idle = self.idle[w]
        return self._gather_inputs(src, real), real | idle[:, None], self.resets[w], idle

    def _gather_inputs(self, src: np.ndarray, real: np.ndarray) -> Any:
        """The window's ``x`` (one array per field, in the structure of ``x``)."""
        return _packed(self.data, [_kernel.gather_batch(t, src, real, None)[0]
                                   for t in self._inputs_tables])

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
        data: Ragged | _Fields,
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
        return self._gather_inputs(src, real), real, self.resets[w], self.idle[w]

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


class _FilledWindows:
    """A plan's windows topped up to ``rows`` rows (a multiple of the data-parallel device
    count) with fill lanes: zero inputs, no reset, no target, weight 0 (never a duplicated
    example). In a windowed plan a fill lane is an idle row (all-True mask, state restored, as
    any row that has run out of sequences); in a dense plan it is masked throughout (the dense
    twin holds its state). The loss is the mean over the targets, so it is the one of the
    plan's own rows."""

    def __init__(self, windows: _Windows, rows: int) -> None:
        self.windows = windows
        self.plan, self.data = windows.plan, windows.data
        self.many_to_one = windows.many_to_one
        self.extra = rows - windows.plan.batch_size
        self.dense = isinstance(windows, _DenseWindows)

    def _fill(self, a: np.ndarray, value: Any) -> np.ndarray:
        return np.concatenate([a, np.full((self.extra, *a.shape[1:]), value, a.dtype)])

    def inputs(self, w: int) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        x, mask, reset, idle = self.windows.inputs(w)
        if isinstance(x, dict):
            x = {k: self._fill(v, 0) for k, v in x.items()}
        elif isinstance(x, tuple):
            x = tuple(self._fill(v, 0) for v in x)
        else:
            x = self._fill(x, 0)
        idle_lane = not self.dense
        return (x, self._fill(mask, idle_lane), self._fill(reset, False),
                self._fill(idle, idle_lane))

    def targets_of(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        y, weight = self.windows.targets_of(w)
        return self._fill(y, 0), self._fill(weight, 0)

    def pick(self, w: int) -> np.ndarray:
        return self._fill(self.windows.pick(w), 0)

    def n_targets(self, w: int) -> int:
        return self.windows.n_targets(w)


def _windows_of(
    plan: Any, data: Ragged | _Fields, targets: np.ndarray | Ragged | None, many_to_one: bool,
    rows: int | None = None,
) -> _Windows | _DenseWindows | _FilledWindows:
    """The windows of ``plan``; topped up with fill lanes to ``rows`` rows if it has fewer."""
    kind = _DenseWindows if isinstance(plan, DenseTBPTTPlan) else _Windows
    windows = kind(plan, data, targets, many_to_one)
    if rows is not None and rows > plan.batch_size:
        return _FilledWindows(windows, rows)
    return windows


def _prepare_data(
    x: Any,
    y: Any,
    *,
    return_sequences: bool | None,
    need_y: bool,
    names: tuple[str, str] = ("x", "y"),
    targets: Targets = "auto",
    allow_nonfinite: bool = False,
) -> tuple[Ragged | _Fields, np.ndarray | Ragged | None, bool]:
    """``x`` and ``y`` read through the one input stage; returns ``(data, targets,
    many_to_one)``; ``data`` is a :class:`Ragged`, or :class:`_Fields` for a dict or tuple
    ``x``.

    The stage applies the dtype rule (with Keras's ``floatx``), refuses NaN/inf (in ``x``
    unless ``allow_nonfinite``; in ``y`` always) and resolves the targets; TBPTT adds: fields
    of one time axis (equal lengths), one target, at least one sequence, no empty sequence.
    """
    xn, yn = names
    kind = _targets_kind(return_sequences, targets)
    if need_y and y is None:
        raise ValueError(
            f"Argument `{yn}` is required. Received: {yn}=None\n- Pass one target per "
            f"sequence of `{xn}` (many-to-one) or one per step (many-to-many)."
        )
    x_kind, x_keys, items = split_fields(x)
    if x_kind != "single":
        _refuse_ragged_fields(x_kind, x_keys, items, xn)
    stage = prepare(
        x, y if need_y else None, allow_nonfinite=allow_nonfinite, targets=kind, names=names,
        floatx=keras_floatx(),
        # every field has the target's lengths: per-step targets follow the first one
        targets_field=None if x_kind == "single" or not need_y else x_keys[0],
    )
    field = stage.fields[0]
    lengths = field.raw_lengths
    if len(lengths) == 0:
        raise ValueError(f"Argument `{xn}` must hold at least one sequence. Received 0 sequences")
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise ValueError(
            f"Argument `{xn}` must not hold empty sequences; sequences {empty[:5].tolist()} have "
            "length 0.\n- If they carry no information, drop them (and their targets) first."
        )
    data: Ragged | _Fields = field.ragged
    if stage.x_kind != "single":
        data = _Fields(stage.x_kind, stage.x_keys, tuple(f.ragged for f in stage.fields))
    if not need_y:
        return data, None, kind != "step"
    if stage.y_kind != "single":
        raise ValueError(
            f"Argument `{yn}` is a {stage.y_kind} of target fields {list(stage.y_keys)}, but "
            "TBPTT trains a model of one output.\n- Pass one target array (many-to-one) or "
            "one collection of per-step targets (many-to-many)."
        )
    table = stage.targets[0].table
    if table.y_mode == "step":  # aligned with x's steps (every field's): x's offsets
        return data, Ragged(table.y[:-1], data.offsets), False
    return data, table.y[:-1], True


def _refuse_ragged_fields(kind: Kind, keys: tuple[Key, ...], items: list[Any],
                          name: str) -> None:
    """Refuse fields of different lengths (before anything is read): TBPTT's windows need one
    time axis. Different counts are left to the stage, which names them."""
    labels = [field_label(name, kind, k) for k in keys]
    first = lengths_of(items[0], labels[0])
    for label, item in zip(labels[1:], items[1:], strict=True):
        other = lengths_of(item, label)
        if other.shape != first.shape:
            return
        differ = np.flatnonzero(other != first)
        if differ.size:
            i = int(differ[0])
            raise ValueError(
                f"Argument `{name}` holds fields of different lengths, {list(keys)}: sequence "
                f"{i} has {int(first[i])} steps in {labels[0]} and {int(other[i])} in {label}. "
                "TBPTT slides one window over one time axis, so its fields must have equal "
                "lengths (named inputs of each step); an encoder-decoder pair has no common "
                "windows.\n- Train such pairs on whole sequences with "
                "`seqprep.bucketed_dataset` and a 2-D `BucketSampler` (or "
                "`seqprep.fit_per_length`); if the tuple's items are single sequences, pass a "
                "list of them."
            )


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
    validation_data: Any, runner: _Runner, many_to_one: bool, allow_nonfinite: bool,
    batch_size: int,
) -> _Windows | _FilledWindows:
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError(
            "Argument `validation_data` must be a pair `(x_val, y_val)`. Received: "
            f"validation_data of type {type(validation_data).__name__}"
        )
    names = ("validation_data[0]", "validation_data[1]")
    data, targets, _ = _prepare_data(
        *validation_data, return_sequences=not many_to_one, need_y=True, names=names,
        allow_nonfinite=allow_nonfinite,
    )
    spec = input_spec(data)
    if spec.keys != runner.spec.keys or spec.step_shapes != runner.spec.step_shapes:
        raise ValueError(
            f"Argument `validation_data` has steps of shape {spec.shown()}, but `x` has "
            f"steps of shape {runner.spec.shown()}."
        )
    rags = [Ragged(r.values.astype(dtype, copy=False), r.offsets)
            for r, dtype in zip(_rags(data), runner.spec.dtypes, strict=True)]
    data = _Fields(data.kind, data.keys, tuple(rags)) if isinstance(data, _Fields) else rags[0]
    plan = plan_tbptt(data.lengths, window=runner.window, batch_size=batch_size)
    return _windows_of(plan, data, targets, many_to_one, rows=runner.batch_size)
