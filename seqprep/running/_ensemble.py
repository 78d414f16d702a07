"""Separate models per length group: :func:`fit_separate_models` and :class:`LengthEnsemble`.

The other reading of "one fit per length" (:func:`seqprep.fit_per_length` trains *one* model on
equal-length batches): an independent model per length (or bucket), for fixed-length
architectures or per-length experts, bundled as a :class:`LengthEnsemble` that routes each
sequence to its group's model and saves/loads as a directory of ``.keras`` files plus a JSON
index. Everything here goes through public Keras APIs (``fit``, ``predict_on_batch``,
``evaluate``, ``save``, ``keras.models.load_model``), so it runs on every Keras backend.

Several fields (``x`` a dict or tuple of sequence collections) are grouped as
:func:`seqprep.fit_per_length` groups them: by the length of the **first** field; every other
field is post-padded with ``pad_value`` to its group's longest (at least the group's longest
training length of that field, at inference).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np

from seqprep._core.checks import check_choice, check_int, check_lengths
from seqprep._core.options import Options, options_for
from seqprep._core.ragged import Ragged, as_ragged
from seqprep.inputs import _stage as _inputs
from seqprep.inputs._fit_table import FitData, check_model, prepare_fit_data
from seqprep.inputs._padding import pad_sequences
from seqprep.inputs._stage_fields import _check_counts, field_label, pack, split_fields
from seqprep.inputs._targets import Targets
from seqprep.planning._per_length import GroupBy, _group_keys, _resolve_group_by
from seqprep.running._floatx import keras_floatx

__all__ = ["LengthEnsemble", "fit_separate_models"]

Unseen = Literal["error", "nearest"]
_INDEX_FILE = "ensemble.json"
_FORMAT = "seqprep.LengthEnsemble"


def _pad_rows(rag: Ragged, idx: np.ndarray, width: int, pad_value: Any) -> np.ndarray:
    """Rows ``idx`` of ``rag``, post-padded to ``max(width, their longest)``."""
    width = max(int(rag.lengths[idx].max()), width)
    return pad_sequences([rag.row(int(i)) for i in idx], maxlen=width,
                         dtype=rag.values.dtype, padding="post", value=pad_value)


def _structure(x: Any) -> dict[str, Any] | None:
    """How an ensemble's inputs are laid out: None for one collection, else the fields' kind
    and keys (JSON-ready: names of a dict, the count of a tuple)."""
    kind, keys, _ = split_fields(x)
    if kind == "single":
        return None
    return {"kind": kind, "keys": list(keys)} if kind == "dict" else {"kind": kind,
                                                                          "count": len(keys)}


def _split(x: Any, fields: dict[str, Any] | None) -> tuple[Any, tuple[Any, ...], list[Ragged]]:
    """``(kind, keys, ragged fields)`` of inference inputs, checked against the structure the
    ensemble was trained on (``fields``)."""
    kind, keys, items = split_fields(x)
    if _structure(x) != fields:
        trained = "one sequence collection" if fields is None else (
            f"a dict of the fields {fields['keys']!r}" if fields["kind"] == "dict"
            else f"a tuple of {fields['count']} fields")
        got = "one sequence collection" if kind == "single" else (
            f"a dict of the fields {list(keys)!r}" if kind == "dict"
            else f"a tuple of {len(keys)} fields")
        raise ValueError(
            f"Argument `x` must be laid out as the ensemble's training inputs: {trained}. "
            f"Received: {got}\n- Pass the same fields (names, or count for a tuple) as to "
            "fit_separate_models."
        )
    labels = [field_label("x", kind, key) for key in keys]
    rags = [as_ragged(item, label) for item, label in zip(items, labels, strict=True)]
    if len(rags) > 1:
        _check_counts([(label, r.lengths) for label, r in zip(labels, rags, strict=True)], "x")
    return kind, keys, rags


def _fit_stage(data: FitData, padded: set[int]) -> _inputs.Stage:
    """The stage whose gathered groups carry each target's weights: 0 on the padded steps
    (times the sample weights) of a per-step target whose field (index) is in ``padded``;
    the sample weights per sequence otherwise (1 where none were given but another target
    needs weights); no weights when no target needs any."""
    stage = data.stage
    targets = []
    for t in stage.targets:
        table = t.table
        if table.y_mode == "step" and t.field in padded:
            table = replace(table, w_mode="timestep")
        targets.append(replace(t, table=table))
    weighted = data.weights is not None or any(t.table.w_mode for t in targets)
    if weighted:
        ones = np.ones(stage.n + 1, np.float32)
        targets = [t if t.table.w_mode else replace(t, table=replace(
            t.table, w=ones, w_mode="sequence")) for t in targets]
    return replace(stage, targets=tuple(targets), weighted=weighted)


def _padded_fields(boundaries: np.ndarray | None, num_fields: int) -> set[int]:
    """The fields whose groups hold padding: every field of buckets, all but the first (the
    grouping field) of exact-length groups."""
    return set(range(0 if boundaries is not None else 1, num_fields))


def _weights_of(batch: tuple[Any, ...]) -> Any:
    """The weights of a gathered ``(x, y[, weights])`` batch, or None."""
    return batch[2] if len(batch) > 2 else None


def _group_widths(stage: _inputs.Stage, idx: np.ndarray, least: Any) -> Any:
    """Each field's padded width for rows ``idx``: their longest, at least ``least``."""
    widths = [max(int(f.raw_lengths[idx].max()), int(w)) for f, w in
              zip(stage.fields, np.broadcast_to(least, len(stage.fields)), strict=True)]
    return widths[0] if stage.single else np.asarray(widths, np.int64)


class LengthEnsemble:
    """One independent Keras model per length group, with routing by length.

    Built by :func:`fit_separate_models`. Group keys are exact lengths (``boundaries is
    None``) or bucket indices (bucket ``i`` holds lengths in ``[b[i-1], b[i])``). Sequences
    of a bucket are post-padded with ``pad_value`` to at least the bucket's longest training
    length, so fixed-length models of a bucket always see the width they were built for.

    Lengths (or buckets) never seen in training follow ``unseen``: ``"error"`` raises a
    ``ValueError`` listing them; ``"nearest"`` routes them to the model of the nearest trained
    length (bucket), the shorter one on a tie.

    With several fields (``x`` a dict or tuple of sequence collections), sequences are routed
    by the length of the **first** field, and every field is post-padded with ``pad_value`` to
    at least its group's longest training length of that field.

    Args:
        models: group key -> compiled Keras model.
        boundaries: ``None`` for exact-length groups, else the bucket boundaries.
        widths: group key -> padded width of the group (its longest training length); with
            several fields, a tuple of one width per field.
        unseen: ``"error"`` or ``"nearest"``.
        pad_value: value of padded steps (bucketed groups, and every field but the first).
        fields: the layout of the training inputs: None (one collection), ``{"kind":
            "dict", "keys": [...]}`` or ``{"kind": "tuple", "count": k}``.
        targets_field: the field per-step targets align with (as
            ``seqprep.Options(targets_field=...)``), for :meth:`evaluate`.

    Attributes:
        models: dict of group key -> model, in ascending key order.
        histories: dict of group key -> Keras ``History`` (empty after ``load``).

    Example:
        >>> import keras, numpy as np
        >>> def build(length):
        ...     model = keras.Sequential([keras.Input((length, 1)), keras.layers.Flatten(),
        ...                               keras.layers.Dense(1)])
        ...     model.compile(optimizer="sgd", loss="mse")
        ...     return model
        >>> x = [np.ones((2, 1)), np.ones((3, 1)), np.zeros((2, 1))]
        >>> ens = fit_separate_models(build, x, np.array([1.0, 2.0, 0.0]), epochs=1, verbose=0)
        >>> sorted(ens.models), ens.predict([np.ones((3, 1))]).shape
        ([2, 3], (1, 1))
    """

    def __init__(
        self,
        models: dict[int, Any],
        *,
        boundaries: Sequence[int] | np.ndarray | None = None,
        widths: dict[int, int] | None = None,
        unseen: Unseen = "error",
        pad_value: Any = 0,
        fields: dict[str, Any] | None = None,
        targets_field: Any = None,
    ) -> None:
        check_choice("unseen", unseen, ("error", "nearest"))
        if not models:
            raise ValueError("Argument `models` must hold at least one model. Received: {}")
        self.models = {int(k): models[k] for k in sorted(models)}
        self.boundaries = None if boundaries is None else _resolve_group_by(boundaries, None)
        self.widths = {int(k): int(v) if np.ndim(v) == 0 else tuple(int(w) for w in v)
                       for k, v in (widths or {}).items()}
        self.unseen = unseen
        self.pad_value = pad_value
        self.fields = fields
        self.targets_field = targets_field
        self.histories: dict[int, Any] = {}

    def __repr__(self) -> str:
        kind = "length" if self.boundaries is None else f"buckets {self.boundaries.tolist()}"
        return f"LengthEnsemble({len(self.models)} models by {kind}, unseen={self.unseen!r})"

    # routing ---------------------------------------------------------------------------

    def route(self, lengths: Sequence[int] | np.ndarray, unseen: Unseen | None = None):
        """Group key of the model that handles each length.

        Args:
            lengths: sequence lengths.
            unseen: override the ensemble's ``unseen`` policy for this call.

        Returns:
            int64 array of group keys (keys of ``models``).

        Raises:
            ValueError: with ``unseen="error"``, when a length falls in no trained group.

        Example:
            >>> ens = LengthEnsemble({2: None, 5: None}, unseen="nearest")
            >>> ens.route([2, 3, 4, 9]).tolist()
            [2, 2, 5, 5]
        """
        policy = check_choice("unseen", unseen or self.unseen, ("error", "nearest"))
        keys = _group_keys(check_lengths(lengths, allow_empty=True), self.boundaries)
        known = np.fromiter(self.models, dtype=np.int64)
        pos = np.clip(np.searchsorted(known, keys), 0, len(known) - 1)
        hit = known[pos] == keys
        if hit.all():
            return keys
        if policy == "error":
            missing = np.unique(keys[~hit])
            what = "length" if self.boundaries is None else "bucket"
            raise ValueError(
                f"No model was trained for {what}(s) {missing[:10].tolist()}"
                f"{' ...' if missing.size > 10 else ''}; trained {what}s: "
                f"{known[:10].tolist()}{' ...' if known.size > 10 else ''}.\n"
                "- Pass `unseen='nearest'` to route them to the nearest trained group."
            )
        lower = known[np.clip(np.searchsorted(known, keys, side="right") - 1, 0, None)]
        upper = known[pos]
        nearest = np.where(np.abs(keys - lower) <= np.abs(upper - keys), lower, upper)
        return np.where(hit, keys, nearest)

    def _groups(self, lengths: np.ndarray, unseen: Unseen | None):
        """``(key, rows)`` of every group the first field's ``lengths`` route to."""
        routed = self.route(lengths, unseen)
        for key in np.unique(routed):
            yield int(key), np.flatnonzero(routed == key)

    # inference -------------------------------------------------------------------------

    def predict(
        self, x: Any, *, batch_size: int = 256, unseen: Unseen | None = None
    ) -> np.ndarray | list[np.ndarray]:
        """Predict with each sequence's group model, in input order.

        Args:
            x: the input sequences (any sequence collection).
            batch_size: rows per model call.
            unseen: override the ensemble's ``unseen`` policy for this call.

        Returns:
            An array with one row per sequence when every group's output has the same shape
            per row (e.g. many-to-one models), else a list of per-sequence arrays (e.g.
            sequence outputs of different lengths).

        Raises:
            ValueError: a length no model was trained for, with ``unseen="error"``.

        Example:
            >>> import keras, numpy as np
            >>> model = keras.Sequential([keras.Input((None, 1)),
            ...                           keras.layers.GlobalAveragePooling1D()])
            >>> ens = LengthEnsemble({1: model, 2: model})
            >>> ens.predict([np.ones((2, 1)), np.zeros((1, 1))]).tolist()
            [[1.0], [0.0]]
        """
        batch_size = check_int("batch_size", batch_size, minimum=1)
        kind, keys, rags = _split(x, self.fields)
        rows: list[Any] = [None] * len(rags[0])
        for key, idx in self._groups(rags[0].lengths, unseen):
            model = self.models[key]
            least = np.broadcast_to(self.widths.get(key, 0), len(rags))
            padded = [_pad_rows(r, idx, int(w), self.pad_value)
                      for r, w in zip(rags, least, strict=True)]
            for start in range(0, len(idx), batch_size):
                xb = pack(kind, keys, [p[start : start + batch_size] for p in padded])
                out = np.asarray(model.predict_on_batch(xb))
                for j, row in zip(idx[start : start + batch_size], out, strict=True):
                    rows[int(j)] = row
        shapes = {r.shape for r in rows}
        if len(shapes) == 1:
            return np.stack(rows) if rows else np.zeros((0,))
        return rows

    def evaluate(
        self, x: Any, y: Any, *, batch_size: int = 256, unseen: Unseen | None = None,
        targets: Targets = "auto",
    ) -> dict[str, float]:
        """Evaluate each group's model on its sequences; average the figures over sequences.

        Args:
            x: the input sequences.
            y: targets, one row per sequence (per-step targets must have ``x``'s lengths).
            batch_size: rows per evaluation batch.
            unseen: override the ensemble's ``unseen`` policy for this call.
            targets: ``"auto"``, ``"sequence"`` or ``"step"``: whether ``y`` holds one target
                per sequence or one per step (the rule of :func:`seqprep.resolve_targets`).

        Returns:
            ``{metric name: mean over sequences}`` (each group's figure weighted by its
            number of sequences), as returned by ``model.evaluate(..., return_dict=True)``.

        Raises:
            ValueError: ``x`` and ``y`` differ in length, or a length has no model.

        Example:
            >>> import keras, numpy as np
            >>> model = keras.Sequential([keras.Input((None, 1)),
            ...                           keras.layers.GlobalAveragePooling1D()])
            >>> model.compile(loss="mse")
            >>> ens = LengthEnsemble({1: model, 2: model})
            >>> ens.evaluate([np.ones((2, 1)), np.zeros((1, 1))], np.array([[0.0], [0.0]]))
            {'loss': 0.5}
        """
        batch_size = check_int("batch_size", batch_size, minimum=1)
        _split(x, self.fields)
        data = prepare_fit_data(x, y, targets=targets, targets_field=self.targets_field,
                                pad_value=self.pad_value, floatx=keras_floatx())
        stage = _fit_stage(data, _padded_fields(self.boundaries, len(data.stage.fields)))
        totals: dict[str, float] = {}
        count = 0
        for key, idx in self._groups(data.x.lengths, unseen):
            batch = _inputs.gather(stage, idx, _group_widths(stage, idx, self.widths.get(key, 0)))
            logs = self.models[key].evaluate(*batch[:2], sample_weight=_weights_of(batch),
                                             batch_size=batch_size, verbose=0, return_dict=True)
            for name, value in logs.items():
                totals[name] = totals.get(name, 0.0) + float(value) * len(idx)
            count += len(idx)
        return {name: total / count for name, total in totals.items()}

    # persistence -----------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Save every model (``group_<key>.keras``) and a JSON index to ``directory``.

        Args:
            directory: a directory (created if needed).

        Example:
            >>> import keras, tempfile
            >>> model = keras.Sequential([keras.Input((None, 1)), keras.layers.Dense(1)])
            >>> with tempfile.TemporaryDirectory() as d:
            ...     LengthEnsemble({3: model}).save(d)
            ...     sorted(os.listdir(d))
            ['ensemble.json', 'group_3.keras']
        """
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        groups = []
        for key, model in self.models.items():
            name = f"group_{key}.keras"
            model.save(path / name)
            width = self.widths.get(key, 0)
            groups.append({"key": key, "file": name,
                           "width": width if np.ndim(width) == 0 else list(width)})
        pad = self.pad_value.item() if hasattr(self.pad_value, "item") else self.pad_value
        index = {
            "format": _FORMAT,
            "version": 1,
            "boundaries": None if self.boundaries is None else self.boundaries.tolist(),
            "unseen": self.unseen,
            "pad_value": pad,
            "fields": self.fields,
            "targets_field": self.targets_field,
            "groups": groups,
        }
        (path / _INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        *,
        custom_objects: dict[str, Any] | None = None,
        compile: bool = True,
    ) -> LengthEnsemble:
        """Load an ensemble written by :meth:`save`.

        Args:
            directory: the directory given to ``save``.
            custom_objects: passed to ``keras.models.load_model``.
            compile: passed to ``keras.models.load_model``.

        Returns:
            The ensemble; its predictions equal the saved one's.

        Raises:
            ValueError: the directory holds no ensemble index.

        Example:
            >>> import keras, tempfile
            >>> model = keras.Sequential([keras.Input((None, 1)), keras.layers.Dense(1)])
            >>> with tempfile.TemporaryDirectory() as d:
            ...     LengthEnsemble({3: model}, unseen="nearest").save(d)
            ...     LengthEnsemble.load(d)
            LengthEnsemble(1 models by length, unseen='nearest')
        """
        path = Path(directory)
        index_path = path / _INDEX_FILE
        if not index_path.is_file():
            raise ValueError(
                f"Argument `directory` holds no {_INDEX_FILE}: not a saved LengthEnsemble. "
                f"Received: directory={str(directory)!r}"
            )
        index = json.loads(index_path.read_text())
        if index.get("format") != _FORMAT:
            raise ValueError(
                f"Argument `directory` holds a {_INDEX_FILE} of another format: "
                f"{index.get('format')!r}"
            )
        models = {
            int(g["key"]): keras.models.load_model(
                path / g["file"], custom_objects=custom_objects, compile=compile
            )
            for g in index["groups"]
        }
        return cls(
            models,
            boundaries=index["boundaries"],
            widths={int(g["key"]): g["width"] for g in index["groups"]},
            unseen=index["unseen"],
            pad_value=index["pad_value"],
            fields=index.get("fields"),
            targets_field=index.get("targets_field"),
        )


def fit_separate_models(
    build_model: Callable[[Any], keras.Model],
    x: Any,
    y: Any,
    *,
    group_by: GroupBy = "length",
    unseen: Unseen = "error",
    pad_value: Any = 0,
    sample_weight: Any = None,
    allow_nonfinite: bool = False,
    targets: Targets = "auto",
    options: Options | None = None,
    **fit_kwargs: Any,
) -> LengthEnsemble:
    """Train one independent model per length group: the other reading of "one fit per length".

    For fixed-length architectures (a model that takes ``(batch, L, ...)`` for one ``L``) or
    per-length experts. ``build_model(group)`` must return a compiled model; ``group`` is the
    length (``group_by="length"``) or, for buckets, the bucket's half-open bounds
    ``(low, high)`` with ``high=None`` for the last, open-ended bucket. A bucket's sequences
    are post-padded with ``pad_value`` to the bucket's longest training length (give the model
    a mask for them). Each model is then trained with ``model.fit(x_group, y_group,
    **fit_kwargs)`` (``epochs``, ``batch_size``, ``callbacks``, ``verbose`` ...).

    Several fields (``x`` a dict or tuple of sequence collections, e.g. an encoder's and a
    decoder's inputs) are grouped as :func:`seqprep.fit_per_length` groups them: by the
    length of the **first** field (``group`` is that field's length or bucket); every other
    field is post-padded with ``pad_value`` to its group's longest. Per-step targets follow
    the field whose lengths they have (``options=seqprep.Options(targets_field=...)`` when
    several fields have them), with sample weight 0 on that field's padded steps.

    Args:
        build_model: ``group -> compiled keras.Model``.
        x: the input sequences (any sequence collection; no empty sequences), or a dict or
            tuple of them (several fields, grouped by the first).
        y: targets: one row per sequence, or per-step target sequences with the lengths of
            ``x`` (of one field of ``x``); a dict or tuple of them for several outputs.
        group_by: ``"length"``, a list of bucket boundaries, or a Bucketer (fitted on ``x``'s
            lengths if it is not yet).
        unseen: what ``predict``/``evaluate`` do with a length no model was trained for:
            ``"error"`` (raise) or ``"nearest"`` (route to the nearest trained group).
        pad_value: value of padded steps (bucketed groups only).
        sample_weight: optional weights, one per sequence.
        allow_nonfinite: accept NaN/inf in ``x`` (refused by default; NaN/inf in ``y`` are
            always refused).
        targets: ``"auto"`` (default), ``"sequence"`` or ``"step"``: whether ``y`` holds one
            target per sequence or one per step (the rule of :func:`seqprep.resolve_targets`).
        options: a :class:`seqprep.Options` of the rarely set options this reads:
            ``targets_field`` (for several fields, the field per-step targets align with;
            default: the field whose lengths equal the targets').
        **fit_kwargs: passed to every ``model.fit`` call.

    Returns:
        A :class:`LengthEnsemble`; ``.histories`` maps each group to its Keras ``History``.

    Raises:
        ValueError: ``x`` and ``y`` differ in length, a bad argument, or ``build_model``
            returned an uncompiled model.
        TypeError: ``build_model`` is not callable or returned something that is not a model.

    Example:
        >>> import keras, numpy as np
        >>> def build(group):
        ...     model = keras.Sequential([keras.Input((None, 1)),
        ...                               keras.layers.GlobalAveragePooling1D(),
        ...                               keras.layers.Dense(1)])
        ...     model.compile(optimizer="sgd", loss="mse")
        ...     return model
        >>> x = [np.ones((2, 1)), np.ones((5, 1)), np.zeros((3, 1))]
        >>> ens = fit_separate_models(build, x, np.zeros(3), group_by=[3], verbose=0)
        >>> sorted(ens.models), ens.predict(x).shape
        ([0, 1], (3, 1))
    """
    if not callable(build_model):
        raise TypeError(
            f"Argument `build_model` must be a callable group -> compiled model. "
            f"Received: {type(build_model).__name__}\n"
            "- Pass a function, e.g. `lambda group: make_model()`, that returns a compiled "
            "model."
        )
    check_choice("unseen", unseen, ("error", "nearest"))
    for name in ("x", "y", "sample_weight", "validation_split"):
        if name in fit_kwargs:
            raise TypeError(
                f"Argument `{name}` cannot be passed through `fit_kwargs`: "
                "fit_separate_models splits the data itself. "
                f"Received: {name}={fit_kwargs[name]!r:.60}\n"
                "- Pass `x`, `y` and `sample_weight` positionally/by keyword, for all groups."
            )
    targets_field = options_for(options, "fit_separate_models",
                                reads=("targets_field",)).targets_field
    data = prepare_fit_data(x, y, sample_weight, allow_nonfinite=allow_nonfinite, targets=targets,
                            targets_field=targets_field, pad_value=pad_value,
                            floatx=keras_floatx())
    lengths = data.x.lengths  # the first field's: the one groups are made by
    boundaries = _resolve_group_by(group_by, lengths)
    keys = _group_keys(lengths, boundaries)
    models: dict[int, Any] = {}
    widths: dict[int, Any] = {}
    histories: dict[int, Any] = {}
    stage = _fit_stage(data, _padded_fields(boundaries, len(data.stage.fields)))
    for key in np.unique(keys):
        key = int(key)
        idx = np.flatnonzero(keys == key)
        if boundaries is None:
            group: Any = key
        else:
            low = 0 if key == 0 else int(boundaries[key - 1])
            group = (low, int(boundaries[key]) if key < len(boundaries) else None)
        model = build_model(group)
        if not (hasattr(model, "fit") and hasattr(model, "train_step")):
            raise TypeError(
                f"Argument `build_model` must return a Keras model. For group {group!r} it "
                f"returned {type(model).__name__}"
            )
        check_model(model)
        width = _group_widths(stage, idx, 0)
        widths[key] = width
        models[key] = model
        batch = _inputs.gather(stage, idx, width)
        histories[key] = model.fit(*batch[:2], sample_weight=_weights_of(batch), **fit_kwargs)
    ens = LengthEnsemble(models, boundaries=boundaries, widths=widths, unseen=unseen,
                         pad_value=pad_value, fields=_structure(x), targets_field=targets_field)
    ens.histories = histories
    return ens
