"""Per-length fitting: "one fit per length", done as one Keras ``fit`` call.

Training on groups of equal length needs no padding at all. Done the obvious way (a loop of
``model.fit`` calls, one per length) it is slow, and it breaks everything that lives across
calls: epoch numbers, ``History``, ``EarlyStopping``, learning-rate schedules. Here the plan is
made in numpy (:func:`plan_per_length`: groups -> batches of indices, ordered per epoch) and
executed by **one** ``model.fit`` over a ``tf.data.Dataset`` holding every epoch's batches, with
``steps_per_epoch`` set, so Keras runs callbacks, the progress bar, ``History`` and schedules
exactly as in a plain ``fit``.

Exact-length groups produce many batch shapes. The dataset's element spec leaves the batch and
time dimensions unknown (``None``), so on TensorFlow Keras traces its train step once, for the
relaxed shape, instead of once per length; JAX compiles once per distinct batch shape (bucketed
groups keep the shapes few); PyTorch runs the step eagerly. :func:`fit_per_length` reports the
number of traces where the backend can tell. The same code runs on all three Keras backends:
tf.data only feeds ``model.fit``.

:func:`seqprep.running._ensemble.fit_separate_models` is the other reading of "one fit per
length": an independent model per group, returned as a
:class:`seqprep.running._ensemble.LengthEnsemble` (both are also importable from here).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from seqprep._core.checks import check_choice, check_int, check_less
from seqprep._core.options import Options, options_for, takes_options
from seqprep.inputs import _stage as _inputs
from seqprep.inputs._fit_table import FitData as _Data
from seqprep.inputs._fit_table import check_model as _check_model
from seqprep.inputs._fit_table import prepare_fit_data as _prepare
from seqprep.inputs._targets import Targets
from seqprep.planning._fill import fill_batches, filled_sizes
from seqprep.planning._per_length import (
    _ORDERS,
    BatchOrder,
    GroupBy,
    PerLengthPlanner,
    _group_keys,
    _plan_epoch,
    _report_group_drops,
    _resolve_group_by,
)
from seqprep.planning._plan import BatchPlan
from seqprep.running._data_parallel import resolve_data_parallel
from seqprep.running._floatx import keras_floatx
from seqprep.running._keras_private import StepTraces, keras_mask
from seqprep.running._stream import (
    TF_KERNEL_OPS,
    EpochStream,
    attach_stream,
    for_keras_loop,
    stage_digest,
    tf_batches,
    with_cardinality,
)

__all__ = ["fit_per_length"]

# Arguments of `model.fit` that fit_per_length decides itself.
_OWNED_FIT_ARGS = (
    "x", "y", "batch_size", "epochs", "steps_per_epoch", "shuffle", "sample_weight",
    "validation_split", "validation_steps",
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


def _output_is_masked(model: Any, data: _Data) -> bool:
    """Whether the model's output carries a Keras mask (Embedding(mask_zero)/Masking...)."""
    stage = data.stage
    i = int(np.argmin(data.x.lengths))
    # The shortest example with one padded step in every field (the pad value of the fit).
    widths = [int(f.lengths[i]) + 1 for f in stage.fields]
    probe = _inputs.gather(stage, np.array([i]), widths[0] if stage.single else widths)[0]
    try:
        out = model(probe, training=False)
    except Exception:  # a fixed-length model cannot take the probe: treat as unmasked
        return False
    out = out[0] if isinstance(out, (list, tuple)) else out
    return keras_mask(out) is not None


def _check_fill_row(model: Any, data: _Data) -> None:
    """Refuse a model whose output on a fill row is not finite.

    A weight of 0 does not keep a NaN out of the loss or the gradient (``0 * nan`` is NaN),
    and the whole model would become NaN after the first filled batch. A fill row shows one
    step of the data that is not padding (:func:`seqprep.inputs._kernel.with_fill`), so a
    masked mean over it is finite; what is left to refuse: data with no such step (the fill
    row is then padding only, and a masked mean over it is ``0 / 0``), or a model that is
    not finite on one step of its own data.
    """
    stage = _inputs.with_fill(data.stage)
    width = 1 if stage.single else [1] * len(stage.fields)
    probe = _inputs.gather(stage, np.array([stage.n]), width)[0]  # one padded step
    try:
        out = model(probe, training=False)
    except Exception:  # a model that cannot take the probe (fixed length): no verdict
        return
    outs = out if isinstance(out, (list, tuple)) else [out]
    if all(np.all(np.isfinite(keras.ops.convert_to_numpy(o))) for o in outs):
        return
    raise ValueError(
        "Argument `model` gives a non-finite output on a fill row (what data parallelism "
        "tops batches up with: one step of the data that is not padding, or padding only "
        "when every step is the pad value), and a weight of 0 does not keep NaN out of the "
        "gradient. Received: a model whose output on the fill row is NaN or inf (a masked "
        "mean over no real step, e.g. GlobalAveragePooling1D after a mask, is 0 / 0)\n"
        "- Pool so that an empty row gives a finite value (e.g. divide by "
        "maximum(count, 1)), or pass `data_parallel=None` with batch sizes that divide the "
        "device count."
    )


# --------------------------------------------------------------------------- tf.data execution

# The epoch stream's elements here: a batch's rows (its indices) and its weight factors (one
# per target; 1 unless batches are filled: seqprep.inputs._stage.weight_scales).
def _rows_signature(targets: int) -> list[tuple[tf.DType, list[Any]]]:
    return [(tf.int64, [None]), (tf.int64, [None]), (tf.float32, [None, targets])]


class _BatchSource:
    """Turns batch plans (flat rows + splits) into a ``tf.data.Dataset`` of padded batches.

    The data is held once as tensors (a :class:`seqprep.inputs._kernel.Table`); each batch is
    gathered by the kernel in the graph, post-padded to its longest sequence (an exact-length
    group has no padding). The element spec has ``None`` batch and time dimensions, so Keras's
    TensorFlow backend traces one train step for all shapes (JAX and PyTorch receive the
    batches as numpy-backed arrays).
    """

    def __init__(
        self, data: _Data, *, exact: bool, step_weights: bool, fill_to: int | None = None
    ) -> None:
        # ``step_weights``: per-step targets whose loss no Keras mask reaches, in padded
        # batches. With data parallelism (``fill_to`` devices) every batch is topped up with
        # fill rows (one step, then padding); an exact-length group keeps the weights of its
        # unfilled batches, scaled by rows / real rows (no mask: every position divides the
        # loss; seqprep.inputs._kernel.weight_scales).
        self.exact = exact
        self.fill_to = fill_to
        if step_weights and data.y_steps and not exact:
            w_mode = "timestep_mean"  # mean over real steps under the default reduction
        else:
            w_mode = None if data.weights is None else "sequence"
        stage = data.stage
        stage = replace(stage, weighted=w_mode is not None, targets=tuple(
            replace(t, table=replace(t.table, w_mode=w_mode, loss_mask=not step_weights))
            for t in stage.targets))
        if fill_to is not None:  # fill rows weigh 0 (targets without weights get some)
            stage = _inputs.with_fill(stage)
        self._numpy_stage = stage  # the weight factors of filled plans are counted in numpy
        self._signature = _rows_signature(len(stage.targets))
        self.stage = stage.convert(tf.constant)
        # Static shapes: (None, None, *step) for every field and per-step target.
        self.x_steps = [f.table.x.shape[1:] for f in stage.fields]
        self.y_steps = [t.table.y.shape[1:] if t.table.y_mode == "step" else None
                        for t in stage.targets]

    def _filled(
        self, rows: np.ndarray, splits: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rows, splits, scales)`` with every batch topped up with fill rows (data
        parallelism) and the weight factors of every batch and target."""
        stage = self._numpy_stage
        if self.fill_to is None:
            return rows, splits, np.ones((len(splits) - 1, len(stage.targets)), np.float32)
        out = fill_batches(rows, splits, multiple_of=self.fill_to, fill_index=stage.n)
        out_splits = np.concatenate([[0], np.cumsum(out.sizes)]).astype(np.int64)
        # Each batch is as wide as its longest row, fill rows included (as _make pads it).
        widths = np.stack([np.maximum.reduceat(f.table.lengths[out.rows], out_splits[:-1])
                           for f in stage.fields], axis=1)
        scales = _inputs.weight_scales(stage, rows, splits,
                                       widths[:, 0] if stage.single else widths,
                                       multiple_of=self.fill_to)
        return out.rows, out_splits, scales

    def dataset(self, rows: np.ndarray, splits: np.ndarray) -> tf.data.Dataset:
        """One fixed plan's batches, the same on every pass (validation)."""
        ds = tf_batches(lambda _: self._filled(rows, splits), self._signature, epoch=0,
                        stream=None)
        ds = ds.map(self._make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return for_keras_loop(ds.prefetch(tf.data.AUTOTUNE))

    def epoch_dataset(self, plans: dict[int, BatchPlan], stream: EpochStream) -> tf.data.Dataset:
        """One pass per Keras epoch ``e``, playing ``plans[e]`` (a new iterator each epoch,
        so that ``seqprep.BackupAndRestore`` can start a resumed epoch mid-way)."""
        known = sorted(plans)

        def arrays_of(e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            # Keras draws one batch before training starts (to build the model), before any
            # epoch is chosen: that pass may ask for an epoch outside the plans.
            plan = plans[min(max(e, known[0]), known[-1])]
            return self._filled(plan.rows, plan.splits)

        ds = tf_batches(arrays_of, self._signature, epoch=known[0], stream=stream)
        ds = ds.map(self._make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = with_cardinality(ds, stream.batches_per_pass).prefetch(tf.data.AUTOTUNE)
        ds = for_keras_loop(ds)  # no autotuning thread to join between epochs on JAX, torch
        return attach_stream(ds, stream)  # how seqprep.BackupAndRestore finds the stream

    def _make(self, idx: tf.Tensor, scales: tf.Tensor) -> Any:
        stage = self.stage
        widths = []
        for j, field in enumerate(stage.fields):
            lengths = field.table.lengths
            # An exact-length group is as wide as any of its sequences: no padding.
            exact = self.exact and j == 0
            widths.append(lengths[idx[0]] if exact
                          else tf.reduce_max(tf.gather(lengths, idx)))
        width = widths[0] if stage.single else tf.stack(widths)
        batch = _inputs.gather(stage, idx, width, TF_KERNEL_OPS,
                               scales=None if self.fill_to is None else scales)
        xs = [batch[0]] if stage.single else [batch[0][k] for k in stage.x_keys]
        for t, step in zip(xs, self.x_steps, strict=True):
            t.set_shape([None, None, *step])
        if len(batch) > 1:
            ys = [batch[1]] if stage.y_kind == "single" else [batch[1][k] for k in stage.y_keys]
            for t, step in zip(ys, self.y_steps, strict=True):
                if step is not None:
                    t.set_shape([None, None, *step])
        return batch


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
                 traces, passes=None, fill_to=None):
        super().__init__()
        self.passes = passes
        # Keras's running mean weighs each batch by its rows, fill rows included.
        self.rows = (lambda sizes: sizes) if fill_to is None else (
            lambda sizes: filled_sizes(sizes, fill_to))
        self.train_groups, self.train_sizes = train_groups, train_sizes
        self.val_groups, self.val_sizes = val_groups, val_sizes
        self.steps, self.initial_epoch = steps, initial_epoch
        self.traces = traces
        self.records: list[dict[str, Any]] = []
        self.traces_by_epoch: list[int | None] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        base = (epoch - self.initial_epoch) * self.steps
        # A run resumed mid-epoch by seqprep.BackupAndRestore plays this epoch from `skip`,
        # with the loss's running mean restored to the checkpoint's: that mean stands for
        # the batches before `skip`, which the groups then leave out (not trained here).
        self._skip = 0 if self.passes is None else self.passes.skip_of(epoch)
        self._groups = self.train_groups[base : base + self.steps]
        self._sizes = self.train_sizes[base : base + self.steps]
        self._means = np.full(self.steps, np.nan)
        if self._skip:
            loss = [m for m in self.model.metrics if m.name == "loss"]
            if loss:
                self._means[self._skip - 1] = float(
                    keras.ops.convert_to_numpy(loss[0].result()))

    def on_train_batch_end(self, batch, logs=None):
        if logs and "loss" in logs and self._skip + batch < self._means.size:
            self._means[self._skip + batch] = float(logs["loss"])

    def on_test_begin(self, logs=None):
        self._v_means = np.full(len(self.val_groups), np.nan)

    def on_test_batch_end(self, batch, logs=None):
        if logs and "loss" in logs and batch < len(self.val_groups):
            self._v_means[batch] = float(logs["loss"])

    def _summarise(self, split, groups, sizes, means, start=0):
        # From batch `start` on (a resumed epoch: the batches this run trained).
        losses = _batch_losses(means, self.rows(sizes))[start:]
        groups, sizes = groups[start:], sizes[start:]
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
        self._summarise("train", self._groups, self._sizes, self._means, self._skip)
        if logs and any(k.startswith("val_") for k in logs) and hasattr(self, "_v_means"):
            self._summarise("val", self.val_groups, self.val_sizes, self._v_means)
        counts = self.traces.counts()
        self.traces_by_epoch.append(None if counts is None else counts["train"])


class _DrivePasses(keras.callbacks.Callback):
    """Keras epoch ``e`` plays plan epoch ``e``, whatever iterators Keras makes in between."""

    def __init__(self, passes):
        super().__init__()
        self.passes = passes

    def on_epoch_begin(self, epoch, logs=None):
        self.passes.drive(epoch)

    def on_train_end(self, logs=None):
        self.passes.release()


def _plan_passes(keys, batch_size, order, sorted_epochs, seed, drop_remainder, steps):
    """The epoch stream of fit_per_length's training data, with a fingerprint of its plan."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(keys, dtype=np.int64).tobytes())
    h.update(repr((batch_size, order, sorted_epochs, drop_remainder)).encode())
    identity = {"fingerprint": h.hexdigest(), "seed": seed, "num_shards": 1, "shard_index": 0}
    return EpochStream(0, 1, 1, steps, identity)


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
    what = "length" if exact else "bucket"
    small = np.flatnonzero(counts < state_batch)
    if small.size:
        raise ValueError(
            f"Argument `group_by` makes {small.size} group(s) smaller than the stateful "
            f"model's batch size {state_batch} ({_shown_groups(what, uniq, counts, small)} "
            "sequences), and a stateful model takes only full batches.\n"
            "- Group by buckets (`group_by=Bucketer()` or a list of boundaries) so groups are "
            "larger, or train a non-stateful twin of the model."
        )
    ragged = np.flatnonzero(counts % state_batch)
    if ragged.size and not drop_remainder:
        raise ValueError(
            f"Argument `drop_remainder` is False, but {ragged.size} group(s) do not split into "
            f"full batches of {state_batch} ({_shown_groups(what, uniq, counts, ragged)} "
            "sequences), and a stateful model takes only full batches.\n- Pass "
            "`options=seqprep.Options(drop_remainder=True)` to skip each group's last, partial "
            "batch."
        )


def _shown_groups(what: str, keys: np.ndarray, counts: np.ndarray, picked: np.ndarray) -> str:
    """``"length 3: 5, length 7: 2"`` for the first eight picked groups (``", ..."`` if more)."""
    shown = ", ".join(f"{what} {keys[i]}: {counts[i]}" for i in picked[:8])
    return shown + (", ..." if picked.size > 8 else "")


def _concat_plans(plans: list[BatchPlan]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


@takes_options
def fit_per_length(
    model: keras.Model,
    x: Any,
    y: Any,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    group_by: GroupBy = "length",
    order: BatchOrder = "shuffle",
    seed: int = 0,
    sample_weight: Any = None,
    pad_value: Any = 0,
    targets: Targets = "auto",
    options: Options | None = None,
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
    ``options=seqprep.Options(drop_remainder=True)``. States are reset before every batch
    (each batch holds whole, independent sequences).

    The returned ``History`` carries two extra attributes:

    * ``group_stats``: a ``pandas.DataFrame`` with one row per epoch, split (``"train"``,
      ``"val"``) and group: ``group`` (the length, or the bucket index), ``min_length``,
      ``max_length``, ``sequences``, ``batches`` and ``loss`` (the mean training loss of the
      group's batches during the epoch, recovered from Keras's float32 running mean: accurate
      to about 1e-3 relative).
    * ``traces``: ``{"train": n, "test": m, "train_by_epoch": [...]}``, how many times Keras
      traced its train and test steps during this call; ``train_by_epoch`` is cumulative, so
      later epochs that add none repeat the first figure. On TensorFlow the relaxed
      ``(None, None, ...)`` input spec makes it 1 for training, whatever the number of
      lengths (2 if the model was not built before the call and its optimizer creates
      variables in the first step). On JAX it is the number of distinct batch shapes (one
      compiled program each). ``None`` on PyTorch and with ``run_eagerly``: the step runs
      eagerly, nothing is traced.

    Args:
        model: a compiled Keras model taking batches of shape ``(batch, time, ...)``.
        x: the input sequences: a list of arrays or lists, a ``tf.RaggedTensor``, an array
            ``(n, T, ...)`` or a pandas Series of arrays. Empty sequences are refused. A dict
            or tuple of them gives several fields (as in :func:`seqprep.bucketed_dataset`):
            the batches are grouped by the **first** field; the other fields are post-padded
            with ``pad_value`` to their batch's longest.
        y: targets: a numeric array with one row per sequence, or a collection of per-step
            target sequences with the same lengths as ``x``.
        epochs: the epoch to stop at (as in ``model.fit``, counting ``initial_epoch``).
        batch_size: rows per batch (at most; groups end with one smaller batch).
        group_by: ``"length"``, a list of bucket boundaries (bucket ``i`` holds lengths in
            ``[b[i-1], b[i])``), or a Bucketer (fitted on ``x``'s lengths if it is not yet).
        order: ``"shuffle"`` (batches of all groups interleaved at random, seeded by
            ``(seed, epoch)``), ``"ascending"`` (shortest first: a curriculum) or
            ``"descending"`` (longest first: fail fast on memory).
        seed: non-negative seed of the plan (same seed, same batches in the same order).
        sample_weight: optional weights, one per sequence.
        pad_value: the value padded steps get (bucketed groups only).
        targets: ``"auto"`` (default), ``"sequence"`` or ``"step"``: whether ``y`` holds one
            target per sequence or one per step (the rule of :func:`seqprep.resolve_targets`;
            ``validation_data`` targets are read the same way as ``y``'s).
        options: a :class:`seqprep.Options` of the rarely set options this reads:
            ``sorted_epochs`` (with a sorted ``order``, only the first ``sorted_epochs``
            epochs are sorted, later ones shuffled; ``order="ascending"`` with
            ``sorted_epochs=1`` is SortaGrad), ``drop_remainder`` (drop each group's partial
            last batch; a ``UserWarning`` says how many sequences that leaves out, leaving
            out all of them is an error), ``allow_nonfinite`` (accept NaN/inf in ``x``;
            NaN/inf in ``y`` are always refused; see "What seqprep refuses" in the padding
            and masking guide), ``targets_field`` (for several fields, the field per-step
            targets align with; default: the field whose lengths equal the targets') and
            ``data_parallel`` (``"auto"``, the default: with a ``keras.distribution`` layout
            of ``k > 1`` devices along the batch axis, JAX, every training and validation
            batch is topped up to a multiple of ``k`` rows with weight-0 fill rows,
            exact-length groups then padded by those rows, and the weights make each
            batch's loss and gradient those of one device, see
            :func:`seqprep.bucketed_dataset`; an int ``k`` asks for that; ``None`` never
            fills; one process only; a fill row holds one step of the data, so a masked
            mean over it is finite, and a model whose output on it is still NaN is
            refused).
        **fit_kwargs: ``model.fit``'s own arguments, read as ``model.fit`` reads them:
            ``validation_data`` (``(x_val, y_val)`` or ``(x_val, y_val,
            sample_weight_val)``, grouped the same way, in ascending order),
            ``validation_batch_size`` (default ``batch_size``), ``callbacks``, ``verbose``
            (default ``"auto"``; the progress bar shows the plan's steps per epoch) and
            ``initial_epoch`` (epoch to resume at: plans depend only on ``(seed, epoch)``,
            so a resumed run sees the same batches the uninterrupted one would have);
            any other (e.g. ``validation_freq``, ``class_weight``) is passed on to
            ``model.fit``.

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
    opts = options_for(options, "fit_per_length", reads=(
        "sorted_epochs", "drop_remainder", "allow_nonfinite", "targets_field", "data_parallel"))
    _check_model(model)
    validation_data = fit_kwargs.pop("validation_data", None)
    callbacks = fit_kwargs.pop("callbacks", None)
    verbose = fit_kwargs.pop("verbose", "auto")
    epochs, batch_size, seed, sorted_epochs, initial_epoch, val_batch = _check_fit_args(
        epochs, batch_size, order, seed, opts.sorted_epochs,
        fit_kwargs.pop("initial_epoch", 0), fit_kwargs.pop("validation_batch_size", None),
        fit_kwargs)
    drop_remainder, allow_nonfinite = opts.drop_remainder, opts.allow_nonfinite
    targets_field, data_parallel = opts.targets_field, opts.data_parallel
    data = _prepare(x, y, sample_weight, allow_nonfinite=allow_nonfinite, targets=targets,
                    targets_field=targets_field, pad_value=pad_value, floatx=keras_floatx())
    lengths = data.x.lengths
    boundaries = _resolve_group_by(group_by, lengths)
    exact = boundaries is None
    planner = PerLengthPlanner(lengths, batch_size=batch_size,
                               group_by="length" if exact else boundaries, order=order,
                               seed=seed, sorted_epochs=sorted_epochs,
                               drop_remainder=drop_remainder)
    keys = planner.keys
    state_batch = _stateful_batch_size(model)
    if state_batch is not None:
        _check_stateful(keys, batch_size, state_batch, drop_remainder, exact)

    plans = [planner.plan(e) for e in range(initial_epoch, epochs)]  # each epoch planned once
    _report_group_drops(plans[0], keys, batch_size)
    steps = len(plans[0].groups)
    rows, splits, batch_groups = _concat_plans(plans)
    layout = resolve_data_parallel(data_parallel, caller="fit_per_length")
    if layout is not None and layout.num_processes > 1:
        raise ValueError(
            "Argument `data_parallel` of `fit_per_length` covers the devices of one process; "
            f"the Keras distribution spans {layout.num_processes} processes.\n- Use "
            "bucketed_dataset (each process reads its rows of every batch) with model.fit."
        )
    fill_to = None if layout is None else layout.size
    if fill_to is not None:
        _check_fill_row(model, data)
    step_weights = (data.y_steps and (not exact or fill_to is not None)
                    and not _output_is_masked(model, data))
    passes = _plan_passes(keys, batch_size, order, sorted_epochs, seed, drop_remainder, steps)
    source = _BatchSource(data, exact=exact, step_weights=step_weights, fill_to=fill_to)
    passes.data = stage_digest(source.stage, {"exact": exact, "step_weights": step_weights,
                                               "fill_to": fill_to})
    train_ds = source.epoch_dataset(dict(enumerate(plans, start=initial_epoch)), passes)
    ranges = _group_ranges(keys, lengths)

    val_ds, val_plan = None, BatchPlan(0, [], [], [])
    if validation_data is not None:
        val_ds, val_plan = _validation_source(
            validation_data, data.y_steps, allow_nonfinite, boundaries, val_batch, state_batch,
            drop_remainder, seed, ranges,
            functools.partial(_BatchSource, exact=exact, step_weights=step_weights,
                              fill_to=fill_to),
            dict(targets_field=targets_field, pad_value=pad_value))

    traces = StepTraces(model)
    stats = _GroupStats(batch_groups, np.diff(splits), steps, initial_epoch,
                        val_plan.groups, val_plan.sizes, traces, passes, fill_to)
    extra: list[keras.callbacks.Callback] = [stats, _DrivePasses(passes)]
    if state_batch is not None:
        extra.append(_ResetStates([la for la in _walk_layers(model)
                                   if getattr(la, "stateful", False)]))
    history = _run_fit(model, train_ds, val_ds, traces, [*(callbacks or []), *extra],
                       epochs=epochs, initial_epoch=initial_epoch, verbose=verbose,
                       fit_kwargs=fit_kwargs)
    history.group_stats = _group_stats_frame(stats.records, ranges)
    counts = traces.counts()
    history.traces = (
        None if counts is None else {**counts, "train_by_epoch": list(stats.traces_by_epoch)}
    )
    history.steps_per_epoch = steps
    return history


def _check_fit_args(
    epochs: Any, batch_size: Any, order: Any, seed: Any, sorted_epochs: Any, initial_epoch: Any,
    validation_batch_size: Any, fit_kwargs: dict[str, Any],
) -> tuple[int, int, int, int | None, int, int]:
    """Validate fit_per_length's scalar arguments; ``validation_batch_size`` defaults here."""
    epochs = check_int("epochs", epochs, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    check_choice("order", order, _ORDERS)
    seed = check_int("seed", seed, minimum=0)
    sorted_epochs = check_int("sorted_epochs", sorted_epochs, minimum=0, allow_none=True)
    initial_epoch = check_int("initial_epoch", initial_epoch, minimum=0)
    check_less("initial_epoch", initial_epoch, "epochs", epochs,
               fix=f"`epochs` is the epoch to stop at, as in `model.fit`: pass "
               f"epochs>{initial_epoch}.")
    owned = sorted(set(fit_kwargs) & set(_OWNED_FIT_ARGS))
    if owned:
        shown = ", ".join(f"`{k}`" for k in owned)
        raise TypeError(
            f"Argument(s) {shown} cannot be passed to fit_per_length: it sets them itself. "
            f"Received: {', '.join(f'{k}={fit_kwargs[k]!r}' for k in owned)}\n"
            "- Remove them; the plan fixes batches, steps and order (see `batch_size`, "
            "`order`, `seed`)."
        )
    val_batch = check_int("validation_batch_size", validation_batch_size, minimum=1,
                          allow_none=True) or batch_size
    return epochs, batch_size, seed, sorted_epochs, initial_epoch, val_batch


def _validation_source(
    validation_data: Any, y_steps: bool, allow_nonfinite: bool, boundaries: Any, val_batch: int,
    state_batch: int | None, drop_remainder: bool, seed: int,
    ranges: dict[int, tuple[int, int]], source: Callable[[_Data], _BatchSource],
    read: dict[str, Any],
) -> tuple[tf.data.Dataset, BatchPlan]:
    """Validation batches, grouped as the training ones and built by ``source`` (the training
    batches' settings), in ascending order; widens ``ranges`` (in place) by the validation
    groups' lengths."""
    vdata = _prepare_validation(validation_data, y_steps, allow_nonfinite, read)
    vkeys = _group_keys(vdata.x.lengths, boundaries)
    exact = boundaries is None
    if state_batch is not None:
        _check_stateful(vkeys, val_batch, state_batch, drop_remainder, exact)
    val_plan = _plan_epoch(vkeys, val_batch, "ascending", seed, 0, drop_remainder,
                           lengths=vdata.x.lengths)
    _report_group_drops(val_plan, vkeys, val_batch)
    val_ds = source(vdata).dataset(val_plan.rows, val_plan.splits)
    for k, rng in _group_ranges(vkeys, vdata.x.lengths).items():
        lo, hi = ranges.get(k, rng)
        ranges[k] = (min(lo, rng[0]), max(hi, rng[1]))
    return val_ds, val_plan


def _prepare_validation(
    validation_data: Any, y_steps: bool, allow_nonfinite: bool, read: dict[str, Any]
) -> _Data:
    """Check the ``validation_data`` tuple and read its targets the way ``y``'s were read."""
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise ValueError(
            "Argument `validation_data` must be a tuple (x_val, y_val) or (x_val, y_val, "
            f"sample_weight_val). Received: {type(validation_data).__name__} of "
            f"{len(validation_data) if hasattr(validation_data, '__len__') else '?'} "
            "item(s)\n- Pass validation_data=(x_val, y_val)."
        )
    return _prepare(*validation_data, xname="validation_data[0]", yname="validation_data[1]",
                    allow_nonfinite=allow_nonfinite, targets="step" if y_steps else "sequence",
                    floatx=keras_floatx(), **read)


def _run_fit(
    model: keras.Model, train_ds: Any, val_ds: Any, traces: StepTraces,
    callbacks: list[keras.callbacks.Callback], *, epochs: int, initial_epoch: int,
    verbose: Any, fit_kwargs: dict[str, Any],
) -> keras.callbacks.History:
    """The one ``model.fit`` call, with step traces counted around it."""
    optimizer = model.optimizer
    if model.built and not getattr(optimizer, "built", True):
        # Keras would otherwise create the slots (Adam's moments) inside the first traced
        # step, and tf.function traces twice when a trace creates variables.
        optimizer.build(model.trainable_variables)
    traces.start()
    try:
        return model.fit(
            train_ds,
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=None,  # one pass per epoch (see _BatchSource.epoch_dataset)
            validation_data=val_ds,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,
            **fit_kwargs,
        )
    finally:
        traces.stop()


def _group_stats_frame(
    records: list[Any], ranges: dict[int, tuple[int, int]]
) -> pd.DataFrame:
    """``History.group_stats``: the per-epoch, per-group records with each group's lengths."""
    frame = pd.DataFrame(
        records,
        columns=["epoch", "split", "group", "sequences", "batches", "loss"],
    )
    frame.insert(3, "min_length", [ranges[g][0] for g in frame["group"]])
    frame.insert(4, "max_length", [ranges[g][1] for g in frame["group"]])
    return frame
