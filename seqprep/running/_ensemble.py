"""Separate models per length group: :func:`fit_separate_models` and :class:`LengthEnsemble`.

The other reading of "one fit per length" (:func:`seqprep.fit_per_length` trains *one* model on
equal-length batches): an independent model per length (or bucket), for fixed-length
architectures or per-length experts, bundled as a :class:`LengthEnsemble` that routes each
sequence to its group's model and saves/loads as a directory of ``.keras`` files plus a JSON
index. Everything here goes through public Keras APIs (``fit``, ``predict_on_batch``,
``evaluate``, ``save``, ``keras.models.load_model``), so it runs on every Keras backend.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np

from seqprep._core.checks import check_choice, check_int, check_lengths
from seqprep._core.ragged import Ragged, as_ragged
from seqprep.inputs._fit_table import check_model, prepare_fit_data
from seqprep.inputs._padding import pad_sequences
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


class LengthEnsemble:
    """One independent Keras model per length group, with routing by length.

    Built by :func:`fit_separate_models`. Group keys are exact lengths (``boundaries is
    None``) or bucket indices (bucket ``i`` holds lengths in ``[b[i-1], b[i])``). Sequences
    of a bucket are post-padded with ``pad_value`` to at least the bucket's longest training
    length, so fixed-length models of a bucket always see the width they were built for.

    Lengths (or buckets) never seen in training follow ``unseen``: ``"error"`` raises a
    ``ValueError`` listing them; ``"nearest"`` routes them to the model of the nearest trained
    length (bucket), the shorter one on a tie.

    Args:
        models: group key -> compiled Keras model.
        boundaries: ``None`` for exact-length groups, else the bucket boundaries.
        widths: group key -> padded width of the group (its longest training length).
        unseen: ``"error"`` or ``"nearest"``.
        pad_value: value of padded steps (bucketed groups only).

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
    ) -> None:
        check_choice("unseen", unseen, ("error", "nearest"))
        if not models:
            raise ValueError("Argument `models` must hold at least one model. Received: {}")
        self.models = {int(k): models[k] for k in sorted(models)}
        self.boundaries = None if boundaries is None else _resolve_group_by(boundaries, None)
        self.widths = {int(k): int(v) for k, v in (widths or {}).items()}
        self.unseen = unseen
        self.pad_value = pad_value
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

    def _batches(self, x: Any, unseen: Unseen | None):
        rag = as_ragged(x, "x")
        lengths = rag.lengths
        routed = self.route(lengths, unseen)
        for key in np.unique(routed):
            idx = np.flatnonzero(routed == key)
            yield int(key), idx, self._pad(rag, idx, int(key))

    def _pad(self, rag: Ragged, idx: np.ndarray, key: int) -> np.ndarray:
        return _pad_rows(rag, idx, self.widths.get(key, 0), self.pad_value)

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
        n = len(as_ragged(x, "x"))
        rows: list[Any] = [None] * n
        for key, idx, xb in self._batches(x, unseen):
            model = self.models[key]
            for start in range(0, len(idx), batch_size):
                out = np.asarray(model.predict_on_batch(xb[start : start + batch_size]))
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
        data = prepare_fit_data(x, y, targets=targets, fields=False, floatx=keras_floatx())
        totals: dict[str, float] = {}
        count = 0
        for key, idx, xb in self._batches(data.x, unseen):
            yb = (self._pad(data.y, idx, key) if data.y_steps else data.y[idx])
            logs = self.models[key].evaluate(xb, yb, batch_size=batch_size, verbose=0,
                                             return_dict=True)
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
            groups.append({"key": key, "file": name, "width": self.widths.get(key, 0)})
        pad = self.pad_value.item() if hasattr(self.pad_value, "item") else self.pad_value
        index = {
            "format": _FORMAT,
            "version": 1,
            "boundaries": None if self.boundaries is None else self.boundaries.tolist(),
            "unseen": self.unseen,
            "pad_value": pad,
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
            widths={int(g["key"]): int(g["width"]) for g in index["groups"]},
            unseen=index["unseen"],
            pad_value=index["pad_value"],
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

    Args:
        build_model: ``group -> compiled keras.Model``.
        x: the input sequences (any sequence collection; no empty sequences).
        y: targets: one row per sequence, or per-step target sequences with ``x``'s lengths.
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
    data = prepare_fit_data(x, y, sample_weight, allow_nonfinite=allow_nonfinite, targets=targets,
                            fields=False, floatx=keras_floatx())
    lengths = data.x.lengths
    boundaries = _resolve_group_by(group_by, lengths)
    keys = _group_keys(lengths, boundaries)
    models: dict[int, Any] = {}
    widths: dict[int, int] = {}
    histories: dict[int, Any] = {}
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
        widths[key] = int(lengths[idx].max())
        models[key] = model
        xb = _pad_rows(data.x, idx, widths[key], pad_value)
        yb = _pad_rows(data.y, idx, widths[key], 0) if data.y_steps else data.y[idx]
        weights = None if data.weights is None else data.weights[idx]
        if data.y_steps and boundaries is not None:
            mask = (np.arange(xb.shape[1])[None, :] < lengths[idx][:, None]).astype(np.float32)
            weights = mask if weights is None else mask * weights[:, None]
        histories[key] = model.fit(xb, yb, sample_weight=weights, **fit_kwargs)
    ens = LengthEnsemble(models, boundaries=boundaries, widths=widths, unseen=unseen,
                         pad_value=pad_value)
    ens.histories = histories
    return ens
