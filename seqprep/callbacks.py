"""Keras callbacks: back up training often and resume a killed run at the exact batch.

``keras.callbacks.BackupAndRestore`` (Keras 3.15) restores the weights and the epoch only: a
run killed mid-epoch replays that epoch from its first batch, so the examples it had already
trained on are seen twice and the run ends with other weights than an uninterrupted one.
:class:`BackupAndRestore` also records how many batches of the epoch were trained and which
sampler played them, and makes the seqprep dataset start the resumed epoch at the next batch.

How the seqprep side works: every dataset seqprep builds with a new sampler epoch per pass
(``bucketed_dataset`` by default, ``fit_per_length``) asks, when a pass begins, which epoch to
play and from which batch. During a fit with this callback, Keras epoch ``e`` plays pass ``e``
(sampler epoch ``epoch + e``), read rather than counted, so the iterators Keras makes and
discards between epochs cannot shift the order; the resumed epoch starts at the saved batch,
and the callback ends that shorter epoch with ``model.stop_training`` (cleared again before
the epoch's other callbacks run, when this callback comes first in the list).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from typing import Any

import keras

__all__ = ["BackupAndRestore"]

_META = "seqprep_training_metadata.json"


def _live_passes() -> list[Any]:
    from seqprep.data import _LIVE_PASSES

    return list(_LIVE_PASSES)


def _write_json(path: str, value: dict[str, Any]) -> None:
    """Replace ``path`` atomically: a kill leaves the old file or the new one, never half."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _identity_diff(saved: dict[str, Any], live: dict[str, Any]) -> str:
    names = [k for k in saved if saved.get(k) != live.get(k)]
    return ", ".join(f"{k}: checkpoint {saved.get(k)!r}, now {live.get(k)!r}" for k in names)


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Back up training and, after a crash, resume at the batch after the last one saved.

    A drop-in for ``keras.callbacks.BackupAndRestore`` (same arguments, same use: put it in
    ``callbacks`` and run the same script again after a crash). With a seqprep dataset
    (:func:`~seqprep.bucketed_dataset` with its default ``reshuffle_each_iteration=True``, or
    :func:`~seqprep.fit_per_length`), a run killed at any step continues with the batch right
    after the last one its checkpoint holds: batches trained after that checkpoint are replayed
    once, the rest of the epoch is not, and with deterministic ops the run ends with the
    weights of an uninterrupted one. The checkpoint holds the weights and the optimizer state
    (``model.save_weights``), the epoch, the batches of that epoch already trained, and the
    training dataset's identity: the sampler's ``fingerprint`` (lengths, boundaries, batching
    options), seed and shard, the dataset's first epoch and epochs per pass. A run restarted
    on a changed dataset or sampler is refused with a ``ValueError``.

    Each checkpoint is written completely before it replaces the previous one (weights under
    a new name, then the metadata that points at them, atomically), so a kill while saving
    leaves the previous checkpoint usable.

    Other data (arrays, other ``tf.data`` pipelines) resume as Keras's callback does: at the
    start of the saved epoch. Put this callback first in ``callbacks``: it ends the resumed,
    shorter epoch by setting ``model.stop_training`` and clears it again in its own
    ``on_epoch_end`` (or ``on_test_begin``), before later callbacks run. Mid-epoch resume needs
    ``steps_per_execution=1`` and the dataset passed to ``fit`` as built (one Keras epoch per
    pass: no ``steps_per_epoch``).

    Args:
        backup_dir: directory for the checkpoint; used by this run only.
        save_freq: ``"epoch"`` (at the end of every epoch) or an int: every ``save_freq``
            batches (and at every epoch end).
        double_checkpoint: keep the previous checkpoint too, and fall back to it when the
            latest cannot be read.
        delete_checkpoint: delete ``backup_dir`` when training completes.
        dataset: the training dataset, only needed when several seqprep datasets with as many
            batches per epoch as the training one start a pass at the same time (the
            callback then cannot tell which one trains, and says so).

    Raises:
        ValueError: bad ``save_freq`` or empty ``backup_dir``; at ``fit`` time, a checkpoint
            written for another dataset or sampler, or ``steps_per_execution > 1`` with a
            mid-epoch checkpoint.

    Example:
        >>> import tempfile, keras, numpy as np, seqprep as sp
        >>> x = [[1, 2], [3], [4, 5, 6], [7], [8, 9]]
        >>> sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=2, seed=0)
        >>> ds = sp.bucketed_dataset(x, np.zeros(5), sampler=sampler)
        >>> model = keras.Sequential([keras.Input((None,), dtype="int32"),
        ...                           keras.layers.Embedding(10, 2),
        ...                           keras.layers.GlobalAveragePooling1D(),
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
        passes = None
        if dataset is not None:
            passes = getattr(dataset, "_seqprep_passes", None)
            if passes is None:
                raise ValueError(
                    "Argument `dataset` must be a seqprep dataset that plays a new sampler "
                    f"epoch per pass. Received: dataset of type {type(dataset).__name__}\n"
                    "- Pass the dataset returned by `bucketed_dataset(...)` (with "
                    "reshuffle_each_iteration=True, the default), as given to `fit`."
                )
        self._explicit = passes
        self._meta_path = os.path.join(backup_dir, _META)
        self._resume: dict[str, Any] | None = None
        self._training: Any = None
        self._warned = False

    # ------------------------------------------------------------------ checkpoint files

    def _read_meta(self, path: str) -> dict[str, Any] | None:
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def _load_model(self) -> None:
        meta = self._read_meta(self._meta_path)
        if meta is None:
            return
        try:
            self._restore_from(meta)
        except OSError:
            previous = self._read_meta(self._meta_path + ".bkp")
            if not self.double_checkpoint or previous is None:
                raise
            self._restore_from(previous)

    def _restore_from(self, meta: dict[str, Any]) -> None:
        model = self.model
        if not model.built:
            raise ValueError(
                "To use BackupAndRestore, the model must be built before `fit`. Received an "
                f"unbuilt model {model.name!r}\n- Give it an `keras.Input`, or call it on a "
                "batch first."
            )
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(self.backup_dir, meta["weights"]))
        model._initial_epoch = int(meta["epoch"])
        self._resume = meta

    def _save_model(self) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        old = self._read_meta(self._meta_path)
        # A new name every time: the file the current metadata points at is never rewritten.
        name = f"ckpt-e{self._current_epoch}-b{self._step}-{time.time_ns()}.weights.h5"
        self.model.save_weights(os.path.join(self.backup_dir, name), overwrite=True)
        meta = {
            "epoch": self._current_epoch,
            "step": self._step,
            "weights": name,
            "dataset": None if self._training is None else self._training.identity,
        }
        if self.double_checkpoint and old is not None:
            _write_json(self._meta_path + ".bkp", old)
        _write_json(self._meta_path, meta)
        self._saved_at = (self._current_epoch, self._step)
        # Keep the weights the metadata files point at; drop the rest.
        keep = {name}
        if self.double_checkpoint and old is not None:
            keep.add(old["weights"])
        for entry in os.listdir(self.backup_dir):
            if entry.endswith(".weights.h5") and entry not in keep:
                os.remove(os.path.join(self.backup_dir, entry))

    # ------------------------------------------------------------------ training hooks

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._resume = None
        self._training = None
        self._step = 0
        self._since_save = 0
        self._skip = 0
        self._stop_owned = False
        self._saved_at: tuple[int, int] | None = None
        self._started: dict[int, int] = {}
        super().on_train_begin(logs)
        self._current_epoch = int(getattr(self.model, "_initial_epoch", 0) or 0)
        meta = self._resume
        if meta is None or meta.get("dataset") is None:
            return
        saved = meta["dataset"]
        candidates = [self._explicit] if self._explicit is not None else _live_passes()
        matching = [p for p in candidates if p.identity == saved]
        if not matching:
            self._refuse(saved, candidates)
        step = int(meta.get("step", 0))
        if step and getattr(self.model, "steps_per_execution", 1) != 1:
            raise ValueError(
                "BackupAndRestore resumes mid-epoch only with steps_per_execution=1. "
                f"Received: steps_per_execution={self.model.steps_per_execution}\n"
                "- Compile with steps_per_execution=1, or use save_freq='epoch'."
            )
        for p in matching:
            p.resume_at(int(meta["epoch"]), step)
        self._skip = step
        self._training = matching[0]

    def _refuse(self, saved: dict[str, Any], candidates: list[Any]) -> None:
        steps = self.params.get("steps")
        same_size = [p for p in candidates if p.batches_per_pass == steps] or candidates
        detail = "; ".join(_identity_diff(saved, p.identity) for p in same_size[:3])
        raise ValueError(
            f"The checkpoint in `backup_dir`={self.backup_dir!r} was written while training on "
            "another dataset or sampler: no seqprep dataset of this run has its sampler "
            f"fingerprint {saved['fingerprint']!r} (seed {saved['seed']}, shard "
            f"{saved['shard_index']} of {saved['num_shards']}, first epoch "
            f"{saved['first_epoch']}). Differences: {detail or 'no seqprep dataset found'}\n"
            "- Resume with the same data, sampler and dataset arguments, or delete "
            "`backup_dir` to start afresh."
        )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._current_epoch = epoch
        self._step = self._skip if epoch == self._resume_epoch() else 0
        passes = [self._explicit] if self._explicit is not None else _live_passes()
        for p in passes:
            p.drive(epoch)
        self._started = {id(p): p.started for p in passes}
        self._passes = passes

    def _resume_epoch(self) -> int | None:
        return None if self._resume is None else int(self._resume["epoch"])

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        offset = self._skip if self._current_epoch == self._resume_epoch() else 0
        done = offset + batch + 1
        self._since_save += done - self._step
        self._step = done
        if batch == 0 and self._training is None:
            # Looked for in the first epoch only: later, a validation dataset's next pass may
            # start at the same time (Keras makes an iterator ahead at the end of evaluate).
            self._find_training()
        steps = self.params.get("steps")
        if offset and steps and done >= steps and not self.model.stop_training:
            # The resumed epoch is shorter: end it here (the dataset has no more batches).
            self.model.stop_training = True
            self._stop_owned = True
        if self.save_freq != "epoch" and self._since_save >= self.save_freq:
            if steps and done >= steps:
                self._current_epoch, self._step = self._current_epoch + 1, 0
                self._save_model()
                self._current_epoch, self._step = self._current_epoch - 1, done
            else:
                self._save_model()
            self._since_save = 0

    def _find_training(self) -> None:
        if self._explicit is not None:
            self._training = self._explicit
            return
        steps = self.params.get("steps")
        fresh = {
            id(p): p for p in getattr(self, "_passes", [])
            if p.started > self._started.get(id(p), 0) and p.batches_per_pass == steps
        }
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
            self.model.stop_training = False
            self._stop_owned = False

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._clear_own_stop()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._clear_own_stop()
        self._current_epoch, self._step = epoch + 1, 0
        self._since_save = 0
        if self._saved_at != (epoch + 1, 0):
            self._save_model()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for p in getattr(self, "_passes", []):
            p.release()
        super().on_train_end(logs)
