"""Per-length fitting: "one fit per length", done as one Keras ``fit`` call.

Training on groups of equal length needs no padding at all. Done the obvious way (a loop of
``model.fit`` calls, one per length) it is slow, and it breaks everything that lives across
calls: epoch numbers, ``History``, ``EarlyStopping``, learning-rate schedules. Here the plan is
made in numpy (:func:`plan_per_length`: groups -> batches of indices, ordered per epoch) and
executed by **one** ``model.fit`` over a ``tf.data.Dataset`` holding every epoch's batches, with
``steps_per_epoch`` set, so Keras runs callbacks, the progress bar, ``History`` and schedules
exactly as in a plain ``fit``.

Exact-length groups produce many batch shapes. The dataset's element spec leaves the batch and
time dimensions unknown (``None``), so Keras traces its train step once, for the relaxed shape,
instead of once per length; :func:`fit_per_length` reports the number of traces.

:func:`fit_separate_models` is the other reading of "one fit per length": an independent model
per group, returned as a :class:`LengthEnsemble` that routes each sequence to its group's model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from seqprep._checks import check_choice, check_int, check_lengths
from seqprep._ragged import Ragged, as_ragged
from seqprep.bucketing.per_length import (  # noqa: F401  (moved there; old imports work)
    _ORDERS,
    GroupBy,
    Order,
    _check_plan_args,
    _epoch_order,
    _EpochPlan,
    _group_keys,
    _plan_epoch,
    _resolve_group_by,
    plan_per_length,
)
from seqprep.padding import pad_sequences

__all__ = ["LengthEnsemble", "fit_per_length", "fit_separate_models", "plan_per_length"]

# Arguments of `model.fit` that fit_per_length decides itself.
_OWNED_FIT_ARGS = (
    "x", "y", "batch_size", "epochs", "steps_per_epoch", "shuffle", "sample_weight",
    "validation_split", "validation_steps", "validation_batch_size", "callbacks", "verbose",
    "validation_data",
)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Data:
    """Inputs in ragged form, targets as rows (one per sequence) or ragged steps."""

    x: Ragged
    y: np.ndarray | Ragged
    y_steps: bool  # targets are per time step (a Ragged with x's lengths)
    weights: np.ndarray | None  # per-sequence sample weights


def _is_rectangular(y: Any) -> np.ndarray | None:
    """``y`` as a numeric ndarray if it is one (or converts to one without ragged rows)."""
    if hasattr(y, "row_splits"):  # tf.RaggedTensor
        return None
    if type(y).__module__.startswith("tensorflow") and hasattr(y, "numpy"):
        y = y.numpy()
    if type(y).__module__.startswith("pandas"):
        y = y.to_numpy()
    try:
        arr = np.asarray(y)
    except (ValueError, TypeError):
        return None
    if arr.dtype == object or arr.ndim == 0:
        return None
    return arr


def _prepare(
    x: Any, y: Any, sample_weight: Any = None, *, xname: str = "x", yname: str = "y"
) -> _Data:
    rag = as_ragged(x, xname)
    n = len(rag)
    lengths = rag.lengths
    if n == 0:
        raise ValueError(f"Argument `{xname}` must hold at least one sequence. Received 0")
    if lengths.min() == 0:
        bad = np.flatnonzero(lengths == 0)[:5].tolist()
        raise ValueError(
            f"Argument `{xname}` holds empty sequences (at positions {bad}); a model cannot "
            "train on zero time steps.\n- If they are placeholders, drop them first."
        )
    if y is None:
        raise ValueError(f"Argument `{yname}` is required. Received: {yname}=None")
    arr = _is_rectangular(y)
    if arr is not None:
        if arr.shape[0] != n:
            raise ValueError(
                f"Arguments `{xname}` and `{yname}` must have the same number of sequences. "
                f"Received: len({xname})={n}, len({yname})={arr.shape[0]}"
            )
        targets: np.ndarray | Ragged = arr
        y_steps = False
    else:
        targets = as_ragged(y, yname)
        if len(targets) != n:
            raise ValueError(
                f"Arguments `{xname}` and `{yname}` must have the same number of sequences. "
                f"Received: len({xname})={n}, len({yname})={len(targets)}"
            )
        diff = np.flatnonzero(targets.lengths != lengths)
        if diff.size:
            i = int(diff[0])
            raise ValueError(
                f"Argument `{yname}` holds per-step targets, so each must have the length of "
                f"its input sequence, but {yname}[{i}] has {targets.lengths[i]} steps and "
                f"{xname}[{i}] has {lengths[i]}.\n- If the targets are one per sequence, pass "
                "them as a numeric array of shape (n, ...)."
            )
        y_steps = True
    weights = None
    if sample_weight is not None:
        weights = np.asarray(sample_weight, dtype=np.float32)
        if weights.shape != (n,):
            raise ValueError(
                f"Argument `sample_weight` must hold one weight per sequence, shape ({n},). "
                f"Received shape {weights.shape}"
            )
    return _Data(rag, targets, y_steps, weights)


def _check_model(model: Any) -> None:
    if not (hasattr(model, "fit") and hasattr(model, "train_step")):
        raise TypeError(
            f"Argument `model` must be a Keras model. Received: {type(model).__name__}"
        )
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise ValueError(
            f"Argument `model` must be compiled before fitting. Received an uncompiled "
            f"{type(model).__name__} named {getattr(model, 'name', '?')!r}\n"
            "- Call `model.compile(optimizer=..., loss=...)` first."
        )


def _walk_layers(layer: Any) -> list[Any]:
    out = []
    for sub in getattr(layer, "layers", []) or []:
        out.append(sub)
        out.extend(_walk_layers(sub))
        inner = getattr(sub, "layer", None) or getattr(sub, "forward_layer", None)
        if inner is not None:
            out.append(inner)
    return out


def _stateful_batch_size(model: Any) -> int | None:
    """The fixed batch size of a stateful model, ``None`` if no layer is stateful."""
    stateful = [la for la in _walk_layers(model) if getattr(la, "stateful", False)]
    if not stateful:
        return None
    for inp in getattr(model, "inputs", None) or []:
        if inp.shape and inp.shape[0] is not None:
            return int(inp.shape[0])
    for layer in stateful:
        for state in getattr(layer, "states", None) or []:
            if state is not None and state.shape[0] is not None:
                return int(state.shape[0])
    raise ValueError(
        "Argument `model` has stateful layers but no fixed batch size.\n"
        "- Build it with `keras.Input(batch_shape=(batch_size, None, ...))`."
    )


def _output_is_masked(model: Any, data: _Data, pad_value: Any) -> bool:
    """Whether the model's output carries a Keras mask (Embedding(mask_zero)/Masking...)."""
    i = int(np.argmin(data.x.lengths))
    row = data.x.row(i)
    padded = np.concatenate([row, np.full((1, *row.shape[1:]), pad_value, row.dtype)])
    try:
        out = model(padded[None], training=False)
    except Exception:  # a fixed-length model cannot take the probe: treat as unmasked
        return False
    out = out[0] if isinstance(out, (list, tuple)) else out
    return getattr(out, "_keras_mask", None) is not None


# --------------------------------------------------------------------------- tf.data execution


class _BatchSource:
    """Turns batch plans (flat rows + splits) into a ``tf.data.Dataset`` of padded batches.

    The data is held once as tensors; each batch is gathered in the graph. The element spec
    has ``None`` batch and time dimensions, so Keras traces one train step for all shapes.
    """

    def __init__(
        self, data: _Data, *, exact: bool, pad_value: Any, step_weights: bool
    ) -> None:
        self.exact = exact
        self.step_weights = step_weights and data.y_steps and not exact
        self.x_values = tf.constant(data.x.values)
        self.x_offsets = tf.constant(data.x.offsets[:-1])
        self.x_lengths = tf.constant(data.x.lengths)
        self.x_step = data.x.step_shape
        self.pad = tf.constant(pad_value, dtype=self.x_values.dtype)
        self.y_steps = data.y_steps
        if data.y_steps:
            self.y_values = tf.constant(data.y.values)
            self.y_step = data.y.step_shape
        else:
            self.y_rows = tf.constant(data.y)
        self.w = None if data.weights is None else tf.constant(data.weights)

    def _steps(self, values, starts, lens, step_shape, pad):
        idx = tf.ragged.range(starts, starts + lens).flat_values
        flat = tf.gather(values, idx)
        if self.exact:
            n = tf.shape(lens, out_type=tf.int64)[0]
            step = tf.constant(step_shape, tf.int64, shape=[len(step_shape)])
            return tf.reshape(flat, tf.concat([tf.stack([n, lens[0]]), step], 0))
        rag = tf.RaggedTensor.from_row_lengths(flat, lens)
        return rag.to_tensor(default_value=pad)

    def dataset(self, rows: np.ndarray, splits: np.ndarray) -> tf.data.Dataset:
        rows_t = tf.constant(rows, tf.int64)
        splits_t = tf.constant(splits, tf.int64)
        x_step = self.x_step

        def make(b):
            idx = rows_t[splits_t[b] : splits_t[b + 1]]
            lens = tf.gather(self.x_lengths, idx)
            starts = tf.gather(self.x_offsets, idx)
            xb = self._steps(self.x_values, starts, lens, x_step, self.pad)
            xb.set_shape([None, None, *x_step])
            if self.y_steps:
                zero = tf.zeros([], self.y_values.dtype)
                yb = self._steps(self.y_values, starts, lens, self.y_step, zero)
                yb.set_shape([None, None, *self.y_step])
            else:
                yb = tf.gather(self.y_rows, idx)
            w = None if self.w is None else tf.gather(self.w, idx)
            if self.step_weights:
                mask = tf.sequence_mask(lens, tf.shape(xb, out_type=tf.int64)[1], tf.float32)
                if w is not None:
                    mask = mask * w[:, None]
                # Mean over real steps of this batch under the default loss reduction.
                total = tf.cast(tf.size(mask), tf.float32)
                w = mask * total / tf.maximum(tf.reduce_sum(mask), 1e-12)
            return (xb, yb) if w is None else (xb, yb, w)

        ds = tf.data.Dataset.range(len(splits) - 1)
        ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- callbacks


def _batch_losses(means: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each batch's loss, recovered from Keras's running means over examples after each batch.

    Keras reports, after batch ``k``, the mean loss over the epoch so far weighted by batch
    size: ``m_k = sum(b_i * l_i) / sum(b_i)``, so ``l_k = (S_k m_k - S_{k-1} m_{k-1}) / b_k``
    with ``S_k = b_0 + ... + b_k``. A missing mean (NaN) makes its own and the next loss NaN.
    """
    sizes = sizes.astype(np.float64)
    seen = np.cumsum(sizes)
    before = seen - sizes
    prev = np.concatenate([[0.0], means[:-1]])
    return (seen * means - before * prev) / sizes


class _GroupStats(keras.callbacks.Callback):
    """Per-group training (and validation) loss, recovered from Keras's running mean.

    The batch hooks only record the running mean at their batch index; the per-batch losses
    (:func:`_batch_losses`) are computed at the end of the epoch, so the hooks may run out of
    order and the callback declares ``async_safe`` (Keras dispatches batch callbacks on a thread
    pool on backends that are thread-safe; the TensorFlow backend calls them in line). The
    logs are float32, so figures are accurate to about 1e-3 relative on tiny batches.
    """

    async_safe = True

    def __init__(self, train_groups, train_sizes, steps, initial_epoch, val_groups, val_sizes,
                 counter):
        super().__init__()
        self.train_groups, self.train_sizes = train_groups, train_sizes
        self.val_groups, self.val_sizes = val_groups, val_sizes
        self.steps, self.initial_epoch = steps, initial_epoch
        self.counter = counter
        self.records: list[dict[str, Any]] = []
        self.traces_by_epoch: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        base = (epoch - self.initial_epoch) * self.steps
        self._groups = self.train_groups[base : base + self.steps]
        self._sizes = self.train_sizes[base : base + self.steps]
        self._means = np.full(self.steps, np.nan)

    def on_train_batch_end(self, batch, logs=None):
        if logs and "loss" in logs and batch < self.steps:
            self._means[batch] = float(logs["loss"])

    def on_test_begin(self, logs=None):
        self._v_means = np.full(len(self.val_groups), np.nan)

    def on_test_batch_end(self, batch, logs=None):
        if logs and "loss" in logs and batch < len(self.val_groups):
            self._v_means[batch] = float(logs["loss"])

    def _summarise(self, split, groups, sizes, means):
        losses = _batch_losses(means, sizes)
        for g in np.unique(groups):
            sel = groups == g
            w = sizes[sel].astype(np.float64)
            ok = np.isfinite(losses[sel])
            loss = float(np.dot(losses[sel][ok], w[ok]) / w[ok].sum()) if ok.any() else np.nan
            self.records.append({
                "epoch": self.epoch, "split": split, "group": int(g),
                "sequences": int(w.sum()), "batches": int(sel.sum()), "loss": loss,
            })

    def on_epoch_end(self, epoch, logs=None):
        self._summarise("train", self._groups, self._sizes, self._means)
        if logs and any(k.startswith("val_") for k in logs) and hasattr(self, "_v_means"):
            self._summarise("val", self.val_groups, self.val_sizes, self._v_means)
        self.traces_by_epoch.append(self.counter["train"])


class _ResetStates(keras.callbacks.Callback):
    """Reset stateful layers before every batch: each batch holds whole, unrelated sequences."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers

    def _reset(self) -> None:
        for layer in self.layers:
            reset = getattr(layer, "reset_state", None) or getattr(layer, "reset_states", None)
            if reset is not None:
                reset()

    def on_train_batch_begin(self, batch, logs=None):
        self._reset()

    def on_test_batch_begin(self, batch, logs=None):
        self._reset()


# --------------------------------------------------------------------------- fit_per_length


def _check_stateful(
    keys: np.ndarray, batch_size: int, state_batch: int, drop_remainder: bool, exact: bool
) -> None:
    if batch_size != state_batch:
        raise ValueError(
            f"Argument `batch_size` must equal the stateful model's fixed batch size "
            f"{state_batch}. Received: batch_size={batch_size}"
        )
    uniq, counts = np.unique(keys, return_counts=True)
    small = np.flatnonzero(counts < state_batch)
    what = "length" if exact else "bucket"
    if small.size:
        shown = ", ".join(f"{what} {uniq[i]}: {counts[i]}" for i in small[:8])
        raise ValueError(
            f"Argument `group_by` makes {small.size} group(s) smaller than the stateful "
            f"model's batch size {state_batch} ({shown}{', ...' if small.size > 8 else ''} "
            "sequences), and a stateful model takes only full batches.\n"
            "- Group by buckets (`group_by=Bucketer()` or a list of boundaries) so groups are "
            "larger, or train a non-stateful twin of the model."
        )
    ragged = np.flatnonzero(counts % state_batch)
    if ragged.size and not drop_remainder:
        shown = ", ".join(f"{what} {uniq[i]}: {counts[i]}" for i in ragged[:8])
        raise ValueError(
            f"Argument `drop_remainder` is False, but {ragged.size} group(s) do not split into "
            f"full batches of {state_batch} ({shown} sequences), and a stateful model takes "
            "only full batches.\n- Pass `drop_remainder=True` to skip each group's last, "
            "partial batch."
        )


def _concat_plans(plans: list[_EpochPlan]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.concatenate([p.rows for p in plans])
    sizes = np.concatenate([p.sizes for p in plans])
    splits = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=splits[1:])
    return rows, splits, np.concatenate([p.groups for p in plans])


def _group_ranges(keys: np.ndarray, lengths: np.ndarray) -> dict[int, tuple[int, int]]:
    uniq, inverse = np.unique(keys, return_inverse=True)
    lo = np.full(len(uniq), np.iinfo(np.int64).max)
    hi = np.zeros(len(uniq), np.int64)
    np.minimum.at(lo, inverse, lengths)
    np.maximum.at(hi, inverse, lengths)
    return {int(k): (int(a), int(b)) for k, a, b in zip(uniq, lo, hi, strict=True)}


def fit_per_length(
    model: keras.Model,
    x: Any,
    y: Any,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    group_by: GroupBy = "length",
    order: Order = "shuffle",
    validation_data: tuple[Any, ...] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    verbose: Literal["auto", 0, 1, 2] | int | str = "auto",
    seed: int = 0,
    sorted_epochs: int | None = None,
    sample_weight: Any = None,
    validation_batch_size: int | None = None,
    pad_value: Any = 0,
    drop_remainder: bool = False,
    initial_epoch: int = 0,
    **fit_kwargs: Any,
) -> keras.callbacks.History:
    """Train a compiled Keras model on batches of equal length (or of one bucket), in one fit.

    Each epoch, the sequences are grouped (``group_by="length"``: by exact length, so no batch
    holds any padding; a Bucketer or boundaries: by bucket, each batch post-padded with
    ``pad_value`` to its longest sequence), cut into batches of ``batch_size`` (a group smaller
    than ``batch_size``, or a group's remainder, gives one smaller batch) and ordered by
    ``order`` (see :func:`plan_per_length`, which returns exactly these batches). All epochs
    then run through **one** ``model.fit`` call with ``steps_per_epoch`` set, so callbacks
    (``EarlyStopping``, ``ModelCheckpoint``, ``LearningRateScheduler``, ``TensorBoard``), the
    progress bar, learning-rate schedules and ``History`` behave as in a plain ``fit``.

    Padding and masks (bucketed groups only): inputs are post-padded with ``pad_value``. The
    model must ignore the padding itself for its inputs: ``Embedding(mask_zero=True)`` for
    token ids (``pad_value=0``), or a ``Masking(mask_value=pad_value)`` layer for features.
    For per-step targets (``y`` a collection of sequences with ``x``'s lengths), padded steps
    get sample weight 0 and the real steps weights that make the default loss reduction the
    mean over real steps of the batch; when the model's output already carries a Keras mask,
    Keras masks the loss itself and no weights are passed.

    Stateful models take only full batches of their fixed batch size: ``batch_size`` must equal
    it, a group smaller than it is an error, and partial last batches are an error unless
    ``drop_remainder=True``. States are reset before every batch (each batch holds whole,
    independent sequences).

    The returned ``History`` carries two extra attributes:

    * ``group_stats``: a ``pandas.DataFrame`` with one row per epoch, split (``"train"``,
      ``"val"``) and group: ``group`` (the length, or the bucket index), ``min_length``,
      ``max_length``, ``sequences``, ``batches`` and ``loss`` (the mean training loss of the
      group's batches during the epoch, recovered from Keras's float32 running mean: accurate
      to about 1e-3 relative).
    * ``traces``: ``{"train": n, "test": m, "train_by_epoch": [...]}``, how many times Keras
      traced its train and test steps during this call (``None`` with ``run_eagerly``). With
      the relaxed ``(None, None, ...)`` input spec it is 1 for training, whatever the number
      of lengths (2 if the model was not built before the call and its optimizer creates
      variables in the first step); ``train_by_epoch`` (cumulative) shows that later epochs
      add none.

    Args:
        model: a compiled Keras model taking batches of shape ``(batch, time, ...)``.
        x: the input sequences: a list of arrays or lists, a ``tf.RaggedTensor``, an array
            ``(n, T, ...)`` or a pandas Series of arrays. Empty sequences are refused.
        y: targets: a numeric array with one row per sequence, or a collection of per-step
            target sequences with the same lengths as ``x``.
        epochs: the epoch to stop at (as in ``model.fit``, counting ``initial_epoch``).
        batch_size: rows per batch (at most; groups end with one smaller batch).
        group_by: ``"length"``, a list of bucket boundaries (bucket ``i`` holds lengths in
            ``[b[i-1], b[i])``), or a Bucketer (fitted on ``x``'s lengths if it is not yet).
        order: ``"shuffle"`` (batches of all groups interleaved at random, seeded by
            ``(seed, epoch)``), ``"ascending"`` (shortest first: a curriculum) or
            ``"descending"`` (longest first: fail fast on memory).
        validation_data: ``(x_val, y_val)`` or ``(x_val, y_val, sample_weight_val)``, grouped
            the same way, in ascending order.
        callbacks: Keras callbacks, as for ``model.fit``.
        verbose: as for ``model.fit``; the progress bar shows the plan's steps per epoch.
        seed: non-negative seed of the plan (same seed, same batches in the same order).
        sorted_epochs: with a sorted ``order``, only the first ``sorted_epochs`` epochs are
            sorted, later ones shuffled (``order="ascending", sorted_epochs=1``: SortaGrad).
        sample_weight: optional weights, one per sequence.
        validation_batch_size: batch size for validation (default ``batch_size``).
        pad_value: the value padded steps get (bucketed groups only).
        drop_remainder: drop each group's partial last batch.
        initial_epoch: epoch to resume at (plans depend only on ``(seed, epoch)``, so a resumed
            run sees the same batches the uninterrupted one would have).
        **fit_kwargs: passed on to ``model.fit`` (e.g. ``validation_freq``, ``class_weight``).

    Returns:
        The Keras ``History`` of the fit (one entry per epoch run), with ``group_stats``,
        ``traces`` and ``steps_per_epoch`` attributes.

    Raises:
        ValueError: the model is not compiled, ``x`` and ``y`` differ in length, ``order``
            or ``group_by`` is unknown, a group is smaller than a stateful model's batch size,
            or another argument is invalid (each message names the argument).
        TypeError: ``model`` is not a Keras model, or ``fit_kwargs`` holds an argument that
            this function sets itself.

    Example:
        >>> import keras, numpy as np
        >>> keras.utils.set_random_seed(0)
        >>> model = keras.Sequential([keras.Input((None,), dtype="int32"),
        ...                           keras.layers.Embedding(10, 4),
        ...                           keras.layers.GRU(4), keras.layers.Dense(1)])
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> x = [[1, 2], [3, 4], [5, 6, 7], [8], [2, 3, 4]]
        >>> history = fit_per_length(model, x, np.zeros(5), epochs=2, batch_size=2, verbose=0)
        >>> len(history.history["loss"]), history.steps_per_epoch, history.traces["train"]
        (2, 3, 1)
    """
    _check_model(model)
    epochs = check_int("epochs", epochs, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    check_choice("order", order, _ORDERS)
    seed = check_int("seed", seed, minimum=0)
    sorted_epochs = check_int("sorted_epochs", sorted_epochs, minimum=0, allow_none=True)
    initial_epoch = check_int("initial_epoch", initial_epoch, minimum=0)
    if initial_epoch >= epochs:
        raise ValueError(
            f"Argument `initial_epoch` must be less than `epochs`. Received: "
            f"initial_epoch={initial_epoch}, epochs={epochs}"
        )
    owned = sorted(set(fit_kwargs) & set(_OWNED_FIT_ARGS))
    if owned:
        raise TypeError(
            f"fit_per_length sets {owned} itself; they cannot be passed through `fit_kwargs`."
        )
    val_batch = check_int("validation_batch_size", validation_batch_size, minimum=1,
                          allow_none=True) or batch_size

    data = _prepare(x, y, sample_weight)
    lengths = data.x.lengths
    boundaries = _resolve_group_by(group_by, lengths)
    exact = boundaries is None
    keys = _group_keys(lengths, boundaries)
    state_batch = _stateful_batch_size(model)
    if state_batch is not None:
        _check_stateful(keys, batch_size, state_batch, drop_remainder, exact)

    plans = [
        _plan_epoch(keys, batch_size, _epoch_order(order, e, sorted_epochs), seed, e,
                    drop_remainder)
        for e in range(initial_epoch, epochs)
    ]
    steps = len(plans[0].groups)
    rows, splits, batch_groups = _concat_plans(plans)
    step_weights = data.y_steps and not exact and not _output_is_masked(model, data, pad_value)
    train_ds = _BatchSource(data, exact=exact, pad_value=pad_value,
                            step_weights=step_weights).dataset(rows, splits)
    ranges = _group_ranges(keys, lengths)

    val_ds, val_plan = None, _EpochPlan(np.zeros(0, np.int64), np.zeros(1, np.int64),
                                        np.zeros(0, np.int64))
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError(
                "Argument `validation_data` must be a tuple (x_val, y_val) or (x_val, y_val, "
                f"sample_weight_val). Received: {type(validation_data).__name__}"
            )
        vdata = _prepare(*validation_data, xname="validation_data[0]",
                         yname="validation_data[1]")
        vkeys = _group_keys(vdata.x.lengths, boundaries)
        if state_batch is not None:
            _check_stateful(vkeys, val_batch, state_batch, drop_remainder, exact)
        val_plan = _plan_epoch(vkeys, val_batch, "ascending", seed, 0, drop_remainder)
        val_ds = _BatchSource(vdata, exact=exact, pad_value=pad_value,
                              step_weights=step_weights).dataset(val_plan.rows, val_plan.splits)
        for k, rng in _group_ranges(vkeys, vdata.x.lengths).items():
            lo, hi = ranges.get(k, rng)
            ranges[k] = (min(lo, rng[0]), max(hi, rng[1]))

    counter = {"train": 0, "test": 0}
    stats = _GroupStats(batch_groups, np.diff(splits), steps, initial_epoch,
                        val_plan.groups, val_plan.sizes, counter)
    extra: list[keras.callbacks.Callback] = [stats]
    if state_batch is not None:
        extra.append(_ResetStates([la for la in _walk_layers(model)
                                   if getattr(la, "stateful", False)]))
    optimizer = model.optimizer
    if model.built and not getattr(optimizer, "built", True):
        # Keras would otherwise create the slots (Adam's moments) inside the first traced
        # step, and tf.function traces twice when a trace creates variables.
        optimizer.build(model.trainable_variables)
    counting = not getattr(model, "run_eagerly", False)
    if counting:
        _count_traces(model, counter)
    try:
        history = model.fit(
            train_ds,
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            validation_data=val_ds,
            callbacks=[*(callbacks or []), *extra],
            verbose=verbose,
            shuffle=False,
            **fit_kwargs,
        )
    finally:
        if counting:
            _restore_steps(model)

    frame = pd.DataFrame(
        stats.records,
        columns=["epoch", "split", "group", "sequences", "batches", "loss"],
    )
    frame.insert(3, "min_length", [ranges[g][0] for g in frame["group"]])
    frame.insert(4, "max_length", [ranges[g][1] for g in frame["group"]])
    history.group_stats = frame
    history.traces = (
        {"train": counter["train"], "test": counter["test"],
         "train_by_epoch": list(stats.traces_by_epoch)}
        if counting else None
    )
    history.steps_per_epoch = steps
    return history


def _count_traces(model: Any, counter: dict[str, int]) -> None:
    """Rebuild the model's train/test functions around steps that count their own traces.

    In graph mode Keras runs the Python body of ``train_step`` only while tracing, so a call
    counter on it counts traces. The functions are rebuilt (one trace) so the count is this
    call's.
    """
    train_step, test_step = model.train_step, model.test_step

    def counted_train_step(data):
        counter["train"] += 1
        return train_step(data)

    def counted_test_step(data):
        counter["test"] += 1
        return test_step(data)

    model.train_step = counted_train_step
    model.test_step = counted_test_step
    model.make_train_function(force=True)
    model.make_test_function(force=True)


def _restore_steps(model: Any) -> None:
    for name in ("train_step", "test_step"):
        if name in vars(model):
            delattr(model, name)


# --------------------------------------------------------------------------- separate models

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
        self, x: Any, y: Any, *, batch_size: int = 256, unseen: Unseen | None = None
    ) -> dict[str, float]:
        """Evaluate each group's model on its sequences; average the figures over sequences.

        Args:
            x: the input sequences.
            y: targets, one row per sequence (per-step targets must have ``x``'s lengths).
            batch_size: rows per evaluation batch.
            unseen: override the ensemble's ``unseen`` policy for this call.

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
        data = _prepare(x, y)
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
            f"Received: {type(build_model).__name__}"
        )
    check_choice("unseen", unseen, ("error", "nearest"))
    for name in ("x", "y", "sample_weight", "validation_split"):
        if name in fit_kwargs:
            raise TypeError(f"Argument `{name}` cannot be passed through `fit_kwargs`.")
    data = _prepare(x, y, sample_weight)
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
        _check_model(model)
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
