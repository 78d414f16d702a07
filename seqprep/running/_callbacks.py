"""Keras callbacks: back up training often and resume a killed run exactly where it was.

``keras.callbacks.BackupAndRestore`` (Keras 3.15) restores the weights, the optimizer and the
epoch only: a run killed mid-epoch replays that epoch from its first batch, Dropout draws other
masks (the seed generators' state is not in ``save_weights``), the resumed epoch's metrics
cover only the batches after the restart and ``ReduceLROnPlateau``/``EarlyStopping`` forget
what they had seen. :class:`BackupAndRestore` saves and restores all of that, and makes the
seqprep dataset start the resumed epoch at the next batch.

How the seqprep side works: every dataset seqprep builds with a new sampler epoch per pass
(``bucketed_dataset`` by default, ``packed_dataset``, ``fit_per_length``) asks, when a pass
begins, which epoch to play and from which batch. During a fit with this callback, Keras epoch
``e`` plays pass ``e`` (sampler epoch ``epoch + e``), read rather than counted, so the
iterators Keras makes and discards between epochs cannot shift the order; the resumed epoch
starts at the saved batch, and the callback ends that shorter epoch with
``model.stop_training`` (cleared again before the epoch's other callbacks run, when this
callback comes first in the list).

A checkpoint is three files: the weights with the optimizer state (``model.save_weights``),
an ``.npz`` of every other state (seed generators, global random streams, metric variables,
arrays of callback states) and the metadata JSON that names both with their SHA-256, the
model's variable shapes, the training data's identity and digests, the callback states, and
a digest of itself. Each is written under a new name before the metadata that points at it
replaces the previous one atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

import keras
import numpy as np

from seqprep.running import _keras_private as _kp

__all__ = ["BackupAndRestore"]

_META = "seqprep_training_metadata.json"
_FORMAT = 2
# Every field a checkpoint's metadata holds, with its type ("dataset"/"data": dict or None).
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": int, "epoch": int, "step": int, "stopped": bool,
    "weights": str, "weights_sha256": str, "weights_bytes": int,
    "state": str, "state_sha256": str, "state_bytes": int,
    "model": str, "seeds": int, "metrics": int, "rng": dict, "callbacks": list,
    "dataset": (dict, type(None)), "data": (dict, type(None)), "digest": str,
}
_DATA_PARTS = {
    "x": "the feature values (`x`)",
    "y": "the labels or targets (`y`)",
    "sample_weight": "the sample weights (`sample_weight`)",
    "arguments": "the dataset's arguments (padding, pad_to, target or weight modes)",
}


def _streams(dataset: Any = None) -> list[Any]:
    """``[seqprep.epoch_stream(dataset)]``, or every live seqprep dataset's epoch stream
    (``seqprep.live_epoch_streams()``) without ``dataset``. Imported here, on first use:
    the stream module imports TensorFlow, which a run without tf.data need not load."""
    from seqprep.running._stream import epoch_stream, live_epoch_streams

    return live_epoch_streams() if dataset is None else [epoch_stream(dataset)]


class _Damaged(Exception):
    """What is wrong with a checkpoint (turned into a ValueError naming `backup_dir`)."""


def _fsync(path: str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _write_json(path: str, value: dict[str, Any]) -> None:
    """Replace ``path`` atomically: a kill leaves the old file or the new one, never half."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _file_digest(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _meta_digest(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _model_signature(model: Any) -> str:
    """The shapes and dtypes of the model's weights, in order: what ``load_weights`` needs."""
    spec = [(tuple(int(d) for d in v.shape), str(v.dtype)) for v in model.weights]
    return hashlib.sha256(repr(spec).encode()).hexdigest()


def _identity_diff(saved: dict[str, Any], live: dict[str, Any]) -> str:
    names = [k for k in saved if saved.get(k) != live.get(k)]
    return ", ".join(f"{k}: checkpoint {saved.get(k)!r}, now {live.get(k)!r}" for k in names)


def _to_numpy(value: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


# ------------------------------------------------------------------ callback states


def _encode(value: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    """``value`` as JSON, its arrays moved to ``arrays`` (referenced by key)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TypeError(f"{where} has a key {bad[0]!r} that is not a string")
        return {"__dict__": {k: _encode(v, arrays, f"{where}[{k!r}]") for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray) or keras.ops.is_tensor(value):
        arr = _to_numpy(value)
        if arr.dtype.kind == "O":
            raise TypeError(f"{where} is an object array")
        key = f"cb{len(arrays)}"
        arrays[key] = arr
        return {"__array__": key}
    raise TypeError(f"{where} is a {type(value).__name__}")


def _decode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if isinstance(value, dict):
        if "__array__" in value:
            return arrays[value["__array__"]]
        return {k: _decode(v, arrays) for k, v in value["__dict__"].items()}
    return value


def _stateful(callback: Any) -> tuple[str, ...] | None:
    """``()`` for a callback with get_state/set_state, Keras's attributes for a known Keras
    callback, None for a callback without state to save."""
    if callable(getattr(callback, "get_state", None)) and callable(
        getattr(callback, "set_state", None)
    ):
        return ()
    for kind, attrs in _kp.KERAS_CALLBACK_STATE.items():
        if isinstance(callback, kind):
            return attrs
    return None


def refuse_backup_in(callbacks: Sequence[Any] | None, where: str) -> None:
    """Refuse a BackupAndRestore in a training loop that cannot resume exactly (fit_tbptt)."""
    for c in callbacks or ():
        if isinstance(c, keras.callbacks.BackupAndRestore):
            raise ValueError(
                f"Argument `callbacks` holds a {type(c).__module__}.{type(c).__name__}, which "
                f"`{where}` cannot resume exactly: a resumed run would start over from epoch 0 "
                "of its window plan with other recurrent states, training windows twice. "
                f"Received: callbacks={list(callbacks)!r}\n"
                "- Remove it (fit_tbptt cannot resume yet), or train on whole sequences "
                "with `model.fit` and `seqprep.BackupAndRestore`."
            )


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Back up training and, after a crash, resume exactly where the last checkpoint was.

    A drop-in for ``keras.callbacks.BackupAndRestore`` (same arguments, same use: put it in
    ``callbacks`` and run the same script again after a crash). A run killed at any point and
    started again ends with the weights, learning rate and callback states of an
    uninterrupted run (with deterministic ops), on TensorFlow, JAX and PyTorch. A checkpoint
    holds:

    * the weights and the optimizer state, learning rate included (``model.save_weights``);
    * every random state training draws from: each ``keras.random.SeedGenerator`` of the
      model's layers (Dropout, recurrent dropout, noise layers: ``save_weights`` leaves them
      out), Keras's global SeedGenerator, and the global streams
      ``keras.utils.set_random_seed`` seeds: Python's ``random``, NumPy's and PyTorch's;
    * the metric variables, so the resumed epoch's logged metrics cover the whole epoch;
    * the state of the other callbacks: Keras's ``ReduceLROnPlateau``, ``EarlyStopping`` and
      ``ModelCheckpoint`` (``best``, ``wait`` and the like), and any callback that opts in
      with two methods: ``get_state()`` returns a dict of numbers, strings, bools, ``None``,
      NumPy arrays and lists/dicts of those; ``set_state(state)`` receives it back (arrays as
      NumPy arrays, tuples as lists) after the callbacks' ``on_train_begin``;
    * the epoch, the batches of it already trained, and the training dataset's identity: the
      sampler's ``fingerprint`` (lengths, boundaries, batching options), seed and shard, the
      dataset's first epoch and epochs per pass, and SHA-256 digests of the feature values,
      targets, weights and the dataset's own arguments (computed once, when the first
      checkpoint is written or read).

    With a seqprep dataset (:func:`~seqprep.bucketed_dataset` with its default
    ``reshuffle_each_iteration=True``, :func:`~seqprep.packed_dataset`,
    :func:`~seqprep.fit_per_length`, :func:`~seqprep.distributed_bucketed_dataset` under
    ``MirroredStrategy``: steps, not a pipeline's batches, are counted) a run continues with
    the step right after the last one its checkpoint holds. Validation datasets are never
    skipped ahead, and a mid-epoch checkpoint is never taken at an epoch's last batch: a run
    killed during validation resumes before the end of that epoch's training and still
    validates it, so no epoch loses its ``val_loss``. Checkpoints of an epoch's end are
    written once every callback has seen that epoch (when the next epoch begins, or at the end).

    A restart is refused with a ``ValueError`` that names ``backup_dir``, says what is wrong
    and how to fix it, when the checkpoint was written for other data (another sampler, or
    the same lengths with other feature values, labels or weights), another model (other
    weight shapes) or other stateful callbacks, or is damaged: metadata that is not valid
    JSON, lacks a field or was edited (it carries a digest of itself), a missing or truncated
    weights or state file, an impossible epoch or step. Nothing is ever trained twice. With
    ``double_checkpoint=True`` a damaged latest checkpoint falls back to the previous one,
    with a warning.

    Other data (arrays, other ``tf.data`` pipelines) resume as Keras's callback does: at the
    start of the saved epoch. Put this callback first in ``callbacks``: it ends the resumed,
    shorter epoch by setting ``model.stop_training`` and clears it again in its own
    ``on_epoch_end`` (or ``on_test_begin``), before later callbacks run. Mid-epoch resume needs
    ``steps_per_execution=1`` and the dataset passed to ``fit`` as built (one Keras epoch per
    pass: no ``steps_per_epoch``). :func:`~seqprep.fit_tbptt` refuses this callback (it cannot
    resume its window plan and recurrent states yet).

    Args:
        backup_dir: directory for the checkpoint; used by this run only.
        save_freq: ``"epoch"`` (at the end of every epoch) or an int: every ``save_freq``
            batches (and at every epoch end).
        double_checkpoint: keep the previous checkpoint too, and fall back to it when the
            latest cannot be read.
        delete_checkpoint: delete ``backup_dir`` when training completes.
        dataset: the training dataset, only needed when several seqprep datasets with as many
            batches per epoch as the training one start a pass at the same time (the
            callback then cannot tell which one trains, and says so). Its pass counter is
            found with :func:`seqprep.epoch_stream`; without it the callback drives every
            stream of :func:`seqprep.live_epoch_streams`.

    Raises:
        ValueError: bad ``save_freq`` or empty ``backup_dir``; at ``fit`` time, a checkpoint
            that cannot be resumed (see above), or ``steps_per_execution > 1`` with a
            mid-epoch checkpoint.
        TypeError: at ``fit`` time, a callback whose ``get_state()`` holds other values.

    Example:
        >>> import tempfile, keras, numpy as np, seqprep as sp
        >>> x = [[1, 2], [3], [4, 5, 6], [7], [8, 9]]
        >>> sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=2, seed=0)
        >>> ds = sp.bucketed_dataset(x, np.zeros(5), sampler=sampler)
        >>> model = keras.Sequential([keras.Input((None,), dtype="int32"),
        ...                           keras.layers.Embedding(10, 2),
        ...                           keras.layers.GlobalAveragePooling1D(),
        ...                           keras.layers.Dropout(0.5),
        ...                           keras.layers.Dense(1)])
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> backup = sp.BackupAndRestore(tempfile.mkdtemp(), save_freq=2)
        >>> len(model.fit(ds, epochs=2, callbacks=[backup], verbose=0).history["loss"])
        2
    """

    def __init__(
        self,
        backup_dir: str | os.PathLike,
        *,
        save_freq: str | int = "epoch",
        double_checkpoint: bool = False,
        delete_checkpoint: bool = True,
        dataset: Any = None,
    ) -> None:
        if isinstance(save_freq, bool) or not (
            save_freq == "epoch" or (isinstance(save_freq, int) and save_freq >= 1)
        ):
            raise ValueError(
                f'Argument `save_freq` must be "epoch" or a positive int. '
                f"Received: save_freq={save_freq!r}\n"
                '- Pass save_freq="epoch" to save at epoch ends, or save_freq=N for every N '
                "batches."
            )
        if not backup_dir:
            raise ValueError(
                f"Argument `backup_dir` must be a directory path. Received: "
                f"backup_dir={backup_dir!r}\n- Pass a directory that this run alone uses."
            )
        backup_dir = os.fspath(backup_dir)
        super().__init__(backup_dir, save_freq, double_checkpoint, delete_checkpoint)
        # The training dataset's epoch stream, through the one public hook (None: every live
        # seqprep dataset's stream is driven, and the one whose pass starts is training).
        self._explicit = None if dataset is None else _streams(dataset)[0]
        self._meta_path = os.path.join(backup_dir, _META)
        self._resume: dict[str, Any] | None = None
        self._training: Any = None
        self._warned = False

    # ------------------------------------------------------------------ refusals

    def _refuse(self, what: str, fix: str = "") -> NoReturn:
        raise ValueError(
            f"The checkpoint in `backup_dir`={self.backup_dir!r} cannot be resumed: {what}\n"
            + (f"- {fix}\n" if fix else "")
            + "- Delete `backup_dir` to start this run afresh (from epoch 0)."
        )

    def _refuse_identity(self, saved: dict[str, Any], candidates: list[Any]) -> NoReturn:
        steps = self.params.get("steps")
        same_size = [p for p in candidates if p.batches_per_pass == steps] or candidates
        detail = "; ".join(_identity_diff(saved, p.identity) for p in same_size[:3])
        self._refuse(
            "it was written while training on another dataset or sampler: no seqprep dataset "
            f"of this run has its sampler fingerprint {saved.get('fingerprint')!r} (seed "
            f"{saved.get('seed')}, shard {saved.get('shard_index')} of "
            f"{saved.get('num_shards')}, first epoch {saved.get('first_epoch')}). "
            f"Differences: {detail or 'no seqprep dataset found'}",
            "Resume with the same data, sampler and dataset arguments.",
        )

    def _refuse_data(self, saved: dict[str, Any], candidates: list[Any]) -> NoReturn:
        live = candidates[0].data.value()
        changed = [n for n in _DATA_PARTS if saved.get(n) != live.get(n)]
        self._refuse(
            "it was written while training on other data: the sampler and the lengths are "
            f"the same, but {', '.join(_DATA_PARTS[n] for n in changed)} differ.",
            "Resume with the data the checkpoint was trained on.",
        )

    # ------------------------------------------------------------------ reading a checkpoint

    def _read_one(self, path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """A checkpoint's metadata and state arrays, checked; None if there is none."""
        if not os.path.exists(path):
            return None
        name = os.path.basename(path)
        try:
            with open(path) as f:
                meta = json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise _Damaged(
                f"its metadata file {name} is not valid JSON (truncated or edited: {err})."
            ) from None
        if not isinstance(meta, dict):
            raise _Damaged(f"its metadata file {name} does not hold a JSON object.")
        for field, kind in _FIELDS.items():
            value = meta.get(field)
            if field not in meta or not isinstance(value, kind) or (
                kind is int and isinstance(value, bool)
            ):
                raise _Damaged(
                    f"its metadata file {name} lacks the field {field!r} or holds a wrong "
                    f"value there ({value!r}): it was written by another version or edited."
                )
        if meta["format"] != _FORMAT:
            raise _Damaged(f"its metadata file {name} has format {meta['format']} "
                           f"(this version reads format {_FORMAT}).")
        if _meta_digest(meta) != meta["digest"]:
            raise _Damaged(f"its metadata file {name} was edited: its content does not match "
                           "the digest written with it.")
        if meta["epoch"] < 0 or meta["step"] < 0:
            raise _Damaged(f"its metadata file {name} holds an impossible position: epoch "
                           f"{meta['epoch']}, step {meta['step']}.")
        for kind in ("weights", "state"):
            file = meta[kind]
            full = os.path.join(self.backup_dir, file)
            if os.path.basename(file) != file or not os.path.isfile(full):
                raise _Damaged(f"the {kind} file {file!r} it points at is missing.")
            digest, size = _file_digest(full)
            if size != meta[f"{kind}_bytes"] or digest != meta[f"{kind}_sha256"]:
                raise _Damaged(
                    f"the {kind} file {file!r} is damaged: {size} bytes where "
                    f"{meta[f'{kind}_bytes']} were written, or other content (truncated or "
                    "overwritten)."
                )
        try:
            with np.load(os.path.join(self.backup_dir, meta["state"]),
                         allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as err:
            raise _Damaged(f"the state file {meta['state']!r} cannot be read ({err}).") from None
        return meta, arrays

    def _read_checkpoint(self) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        try:
            return self._read_one(self._meta_path)
        except _Damaged as err:
            if self.double_checkpoint:
                try:
                    previous = self._read_one(self._meta_path + ".bkp")
                except _Damaged:
                    previous = None
                if previous is not None:
                    warnings.warn(
                        f"BackupAndRestore: the latest checkpoint in `backup_dir`="
                        f"{self.backup_dir!r} is damaged ({err}); resuming from the previous "
                        "one (double_checkpoint=True).",
                        stacklevel=3,
                    )
                    return previous
            self._refuse(str(err))

    # ------------------------------------------------------------------ restoring

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        model = self.model
        if not model.built:
            raise ValueError(
                "To use BackupAndRestore, the model must be built before `fit`. Received an "
                f"unbuilt model {model.name!r}\n- Give it an `keras.Input`, or call it on a "
                "batch first."
            )
        if _model_signature(model) != meta["model"]:
            self._refuse(
                f"it was written for another model: the weights of model {model.name!r} "
                "have other shapes or dtypes than the checkpoint's.",
                "Resume with the model the checkpoint was trained with.",
            )
        seeds = _kp.seed_state_variables(model)
        if len(seeds) != meta["seeds"]:
            self._refuse(
                f"it was written for another model: it holds {meta['seeds']} random seed "
                f"generators (Dropout, noise layers), model {model.name!r} has {len(seeds)}.",
                "Resume with the model the checkpoint was trained with.",
            )
        epochs = self.params.get("epochs")
        if epochs is not None and meta["epoch"] > epochs:
            self._refuse(
                f"its epoch {meta['epoch']} lies past the {epochs} epochs of this fit.",
                f"Pass epochs>={meta['epoch']} to `fit`, as in the run that wrote it.",
            )
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(os.path.join(self.backup_dir, meta["weights"]))
        except Exception as err:  # h5py/Keras errors: a file this model cannot take
            self._refuse(f"its weights file {meta['weights']!r} does not load into model "
                         f"{model.name!r}: {err}")
        for var, i in zip(seeds, range(len(seeds)), strict=True):
            var.assign(arrays[f"seed{i}"].astype(_to_numpy(var).dtype))
        # The global streams are put back where they were saved: at the resumed epoch's start
        # or before its first batch (something may draw in between: PyTorch's DataLoader
        # draws a seed from torch's generator when Keras makes the epoch's iterator).
        self._rng_pending = True
        _kp.set_initial_epoch(model, epochs if meta["stopped"] and epochs else meta["epoch"])
        self._resume = meta
        self._resume_arrays = arrays
        self._restored_callbacks = False

    def _restore_rng(self, rng: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if "global_seed" in arrays:
            gen = _kp.global_seed_generator(create=True)
            gen.state.assign(arrays["global_seed"].astype(_to_numpy(gen.state).dtype))
        np.random.set_state(("MT19937", arrays["numpy_keys"], rng["numpy_pos"],
                             rng["numpy_has_gauss"], rng["numpy_gauss"]))
        random.setstate((rng["python_version"], tuple(int(v) for v in arrays["python"]),
                         rng["python_gauss"]))
        if "torch" in arrays and keras.backend.backend() == "torch":
            import torch

            torch.set_rng_state(torch.from_numpy(arrays["torch"].copy()))

    def _restore_late(self) -> None:
        """Callback and metric states, once every callback's on_train_begin has run."""
        if self._resume is None or self._restored_callbacks:
            return
        self._restored_callbacks = True
        meta, arrays = self._resume, self._resume_arrays
        live = self._stateful_callbacks()
        names = [type(c).__qualname__ for c, _ in live]
        saved = [entry["class"] for entry in meta["callbacks"]]
        if names != saved:
            self._refuse(
                f"it holds the state of the callbacks {saved}, this run has the stateful "
                f"callbacks {names}.",
                "Resume with the same callbacks, in the same order.",
            )
        for (callback, attrs), entry in zip(live, meta["callbacks"], strict=True):
            state = _decode(entry["state"], arrays)
            if attrs:
                for name in attrs:
                    setattr(callback, name, state[name])
            else:
                callback.set_state(state)
        if self._skip:  # resumed mid-epoch: the epoch's metrics so far
            variables = self.model.metrics_variables
            if len(variables) != meta["metrics"]:
                self._refuse(
                    f"it holds {meta['metrics']} metric variables, model "
                    f"{self.model.name!r} has {len(variables)} (other metrics compiled).",
                    "Compile the model with the metrics of the run that wrote it.",
                )
            for i, var in enumerate(variables):
                var.assign(arrays[f"metric{i}"])

    # ------------------------------------------------------------------ writing a checkpoint

    def _stateful_callbacks(self) -> list[tuple[Any, tuple[str, ...]]]:
        found = []
        for c in getattr(self._callback_list, "callbacks", ()):
            attrs = None if c is self else _stateful(c)
            if attrs is not None:
                found.append((c, attrs))
        return found

    def _state(self, model: Any, step: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays: dict[str, np.ndarray] = {}
        seeds = _kp.seed_state_variables(model)
        for i, var in enumerate(seeds):
            arrays[f"seed{i}"] = _to_numpy(var)
        gen = _kp.global_seed_generator(create=False)
        if gen is not None:
            arrays["global_seed"] = _to_numpy(gen.state)
        _, keys, pos, has_gauss, gauss = np.random.get_state()
        arrays["numpy_keys"] = np.asarray(keys)
        version, internal, py_gauss = random.getstate()
        arrays["python"] = np.asarray(internal, np.int64)
        if keras.backend.backend() == "torch":
            import torch

            arrays["torch"] = torch.get_rng_state().numpy()
        metrics = model.metrics_variables if step else []
        for i, var in enumerate(metrics):
            arrays[f"metric{i}"] = _to_numpy(var)
        callbacks = []
        for callback, attrs in self._stateful_callbacks():
            name = type(callback).__qualname__
            if attrs:
                state = {a: getattr(callback, a, None) for a in attrs}
            else:
                state = callback.get_state()
                if not isinstance(state, dict):
                    raise TypeError(
                        f"Callback {name}.get_state() must return a dict. Received: "
                        f"{type(state).__name__}\n- Return a dict of numbers, strings, "
                        "arrays and lists/dicts of those."
                    )
            try:
                encoded = _encode(state, arrays, f"{name}.get_state()")
            except TypeError as err:
                raise TypeError(
                    f"seqprep.BackupAndRestore cannot save the state of callback {name}: "
                    f"{err}.\n- Return only numbers, strings, bools, None, NumPy arrays and "
                    "lists/dicts (string keys) of those from `get_state()`."
                ) from None
            callbacks.append({"class": name, "state": encoded})
        rng = {"numpy_pos": int(pos), "numpy_has_gauss": int(has_gauss),
               "numpy_gauss": float(gauss), "python_version": version,
               "python_gauss": py_gauss}
        info = {"seeds": len(seeds), "metrics": len(metrics), "rng": rng,
                "callbacks": callbacks}
        return info, arrays

    def _save(self, epoch: int, step: int, stopped: bool = False) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        model = self.model  # on JAX, this attaches the training state to the variables
        try:
            with open(self._meta_path) as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = None
        # New names every time: the files the current metadata points at are never rewritten.
        stem = f"ckpt-e{epoch}-b{step}-{time.time_ns()}"
        weights = stem + ".weights.h5"
        state = stem + ".state.npz"
        model.save_weights(os.path.join(self.backup_dir, weights), overwrite=True)
        _fsync(os.path.join(self.backup_dir, weights))
        info, arrays = self._state(model, step)
        with open(os.path.join(self.backup_dir, state), "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        w_digest, w_size = _file_digest(os.path.join(self.backup_dir, weights))
        s_digest, s_size = _file_digest(os.path.join(self.backup_dir, state))
        training = self._training
        meta = {
            "format": _FORMAT, "epoch": epoch, "step": step, "stopped": stopped,
            "weights": weights, "weights_sha256": w_digest, "weights_bytes": w_size,
            "state": state, "state_sha256": s_digest, "state_bytes": s_size,
            "model": _model_signature(model), **info,
            "dataset": None if training is None else training.identity,
            "data": None if training is None or training.data is None
            else training.data.value(),
        }
        meta["digest"] = _meta_digest(meta)
        if self.double_checkpoint and isinstance(old, dict):
            _write_json(self._meta_path + ".bkp", old)
        _write_json(self._meta_path, meta)
        self._saved_at = (epoch, step)
        # Keep the files the metadata files point at; drop the rest.
        keep = {weights, state}
        if self.double_checkpoint and isinstance(old, dict):
            keep.update(str(old.get(k)) for k in ("weights", "state"))
        for entry in os.listdir(self.backup_dir):
            if entry.endswith((".weights.h5", ".state.npz")) and entry not in keep:
                os.remove(os.path.join(self.backup_dir, entry))

    # ------------------------------------------------------------------ training hooks

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._resume = None
        self._training = None
        self._step = 0
        self._since_save = 0
        self._skip = 0
        self._stop_owned = False
        self._pending_save = False
        self._rng_pending = False
        self._epoch_done: int | None = None
        self._saved_at: tuple[int, int] | None = None
        self._started: dict[int, int] = {}
        self._resumed_passes: list[Any] = []
        self._same_data: list[Any] = []
        self._callback_list = _kp.calling_callback_list(self)
        checkpoint = self._read_checkpoint()
        if checkpoint is not None:
            self._restore(*checkpoint)
        self._current_epoch = _kp.initial_epoch(self.model)
        meta = self._resume
        if meta is None or meta["dataset"] is None:
            steps = self.params.get("steps")
            if meta is not None and steps and meta["step"] >= steps:
                self._refuse(f"its step {meta['step']} is impossible: an epoch has {steps} "
                             "batches.")
            return
        saved = meta["dataset"]
        candidates = [self._explicit] if self._explicit is not None else _streams()
        matching = [p for p in candidates if p.identity == saved]
        if not matching:
            self._refuse_identity(saved, candidates)
        same_data = [p for p in matching if p.data is None or meta["data"] is None
                     or p.data.value() == meta["data"]]
        if not same_data:
            self._refuse_data(meta["data"], matching)
        step = meta["step"]
        if step >= same_data[0].steps_per_pass:
            self._refuse(
                f"its step {step} is impossible: an epoch of the training dataset has "
                f"{same_data[0].steps_per_pass} batches (training steps; edited metadata?)."
            )
        if step and getattr(self.model, "steps_per_execution", 1) != 1:
            raise ValueError(
                "BackupAndRestore resumes mid-epoch only with steps_per_execution=1. "
                f"Received: steps_per_execution={self.model.steps_per_execution}\n"
                "- Compile with steps_per_execution=1, or use save_freq='epoch'."
            )
        if not meta["stopped"]:
            for p in same_data:
                p.resume_at(meta["epoch"], step)
            # Checked again when the first batch shows which pass trains (another dataset
            # with the checkpoint's data may still be alive in this process).
            self._resumed_passes = matching
            self._same_data = same_data
        self._skip = 0 if meta["stopped"] else step
        self._training = same_data[0]

    def _restore_rng_now(self) -> None:
        if self._rng_pending:
            self._rng_pending = False
            self._restore_rng(self._resume["rng"], self._resume_arrays)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._epoch_done is not None:
            # The previous epoch's end, now that every callback has seen it.
            self._save(self._epoch_done, 0)
            self._epoch_done = None
        self._restore_late()
        if not self._skip:  # saved when an epoch began
            self._restore_rng_now()
        self._current_epoch = epoch
        self._step = self._skip if epoch == self._resume_epoch() else 0
        passes = [self._explicit] if self._explicit is not None else _streams()
        for p in passes:
            p.drive(epoch)
        self._started = {id(p): p.started for p in passes}
        self._passes = passes

    def _resume_epoch(self) -> int | None:
        return None if self._resume is None else int(self._resume["epoch"])

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._restore_rng_now()  # saved before a batch began
        if self._pending_save:
            # After the previous batch, once every callback has seen it.
            self._pending_save = False
            self._since_save = 0
            self._save(self._current_epoch, self._step)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        offset = self._skip if self._current_epoch == self._resume_epoch() else 0
        done = offset + batch + 1
        self._since_save += done - self._step
        self._step = done
        if batch == 0:
            if self._resumed_passes:
                self._keep_skip_on_training_only()
            if self._training is None:
                # Looked for in the first epoch only: later, a validation dataset's next pass
                # may start at the same time (Keras makes an iterator ahead after evaluate).
                self._find_training()
        steps = keras_steps = self.params.get("steps")
        if self._training is not None and self._training.batches_per_step > 1:
            # TensorFlow's own dataset (not distributed_bucketed_dataset's) counts a pipeline's
            # batches: Keras's step past the data fails but advances optimizer.iterations.
            steps = self._training.steps_per_pass
        last = bool(steps) and done >= steps
        overrun = last and (keras_steps or 0) > steps
        if last and (offset or overrun) and not self._model.stop_training:
            # The resumed epoch is shorter, or Keras would run past the data: end it here.
            self._model.stop_training = True
            self._stop_owned = True
            if not overrun:
                _kp.draw_as_iterator_ahead()  # what Keras draws after an epoch's last batch
        if self.save_freq != "epoch" and self._since_save >= self.save_freq and not last:
            # Never at an epoch's last batch: the epoch-end checkpoint follows validation.
            self._pending_save = True

    def _keep_skip_on_training_only(self) -> None:
        """Check the pass that trains, the first to start, and keep the skip on it only.

        Passes with the checkpoint's identity and data (a validation set built like the
        training one) were told to skip too: the ones that have not started are told not to.
        A started pass with the checkpoint's sampler but other data is refused (possible
        only when an older dataset with the checkpoint's data is still alive in the process:
        otherwise the run is refused before its first batch)."""
        epoch = self._current_epoch
        matching, same = self._resumed_passes, self._same_data
        self._resumed_passes = []
        started = [p for p in matching if p.started > self._started.get(id(p), 0)]
        if not started:
            return
        if not any(any(p is q for q in same) for p in started):
            self._refuse_data(self._resume["data"], started)
        if self._skip and len(started) < len(matching):
            for p in matching:
                if not any(p is q for q in started):
                    p.resume_at(epoch, 0)
                    p.drive(epoch)
        self._training = next(p for p in started if any(p is q for q in same))

    def _find_training(self) -> None:
        if self._explicit is not None:
            self._training = self._explicit
            return
        steps = self.params.get("steps")  # the cardinality: steps, or TF's pipeline batches
        passes = getattr(self, "_passes", [])
        fresh = {id(p): p for p in passes if p.started > self._started.get(id(p), 0)
                 and steps in (p.steps_per_pass, p.batches_per_pass)}
        kinds = {repr(sorted(p.identity.items())): p for p in fresh.values()}
        if len(kinds) > 1:
            raise ValueError(
                f"BackupAndRestore found {len(kinds)} seqprep datasets with {steps} batches "
                "per epoch starting a pass at once and cannot tell which one trains.\n"
                "- Pass the training dataset: BackupAndRestore(backup_dir, dataset=train_ds)."
            )
        if kinds:
            self._training = next(iter(kinds.values()))
        elif self.save_freq != "epoch" and not self._warned:
            self._warned = True
            warnings.warn(
                "BackupAndRestore: the training data is not a seqprep dataset that plays one "
                "sampler epoch per pass, so a run killed mid-epoch resumes at the start of "
                "that epoch (as keras.callbacks.BackupAndRestore does).",
                stacklevel=2,
            )

    def _clear_own_stop(self) -> None:
        if self._stop_owned:
            self._model.stop_training = False
            self._stop_owned = False

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._clear_own_stop()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._clear_own_stop()
        self._pending_save = False
        self._current_epoch, self._step = epoch + 1, 0
        self._since_save = 0
        self._epoch_done = epoch + 1

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._restore_late()  # a resumed run that had no epoch left to train
        for p in getattr(self, "_passes", []):
            p.release()
        if self.delete_checkpoint:
            if os.path.exists(self.backup_dir):
                shutil.rmtree(self.backup_dir)
        elif self._epoch_done is not None:
            self._save(self._epoch_done, 0, stopped=bool(self._model.stop_training))
        self._epoch_done = None
