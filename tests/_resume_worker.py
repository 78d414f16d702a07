"""Training jobs for tests/test_resume_exact.py, run in a subprocess (killed with SIGKILL).

Usage: ``python _resume_worker.py JOBS_JSON``, a list of jobs run one after the other in this
process; each is ``{"scenario", "backup", "out", "kill"}``. ``kill`` is ``null`` (run to the
end) or ``[phase, epoch, batch]``: SIGKILL this process after the ``batch``-th (1-based)
training (``phase="train"``) or validation (``"test"``) batch of Keras epoch ``epoch``. A job
that finishes writes ``out + ".npz"`` (final weights) and ``out + ".json"`` (the final
learning rate and the run's history).

Every job starts from ``keras.backend.clear_session()`` and ``keras.utils.set_random_seed(0)``,
so a job gets the same initial weights and layer names whether it runs first in a process or
after others: several jobs share one process (and one TensorFlow import).
"""

from __future__ import annotations

import gc
import json
import os
import sys

import keras
import numpy as np

import seqprep as sp

BACKEND = keras.backend.backend()
if BACKEND == "tensorflow":
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()

N = 100  # sequences; batch 16: 7 batches per epoch


def _data(seed: int = 0, n: int = N):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 12, n)
    x = [rng.integers(1, 20, k) for k in lengths]
    y = rng.random(n).astype("float32")
    return lengths, x, y


def _token_model(dropout: bool = False) -> keras.Model:
    layers = [keras.Input((None,), dtype="int32"), keras.layers.Embedding(20, 4)]
    if dropout:
        layers += [keras.layers.SimpleRNN(4, dropout=0.2, recurrent_dropout=0.2,
                                          return_sequences=True),
                   keras.layers.GaussianNoise(0.1), keras.layers.Dropout(0.3)]
    layers += [keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)]
    return keras.Sequential(layers)


class Kill(keras.callbacks.Callback):
    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        self.epoch = -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _maybe(self, phase, batch):
        if self.spec is not None and self.spec == [phase, self.epoch, batch + 1]:
            os.kill(os.getpid(), 9)

    def on_train_batch_end(self, batch, logs=None):
        self._maybe("train", batch)

    def on_test_batch_end(self, batch, logs=None):
        self._maybe("test", batch)


def _bucketed(x, y):
    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=16, seed=1)
    return sp.bucketed_dataset(x, y, sampler=sampler)


def run(scenario: str, backup: str, kill) -> keras.Model:
    lengths, x, y = _data()
    backup_cb = sp.BackupAndRestore(backup, save_freq=3)
    callbacks = [backup_cb]
    fit = {"epochs": 3, "verbose": 0}
    model = _token_model(dropout=scenario.startswith("dropout"))
    lr = 0.02
    if scenario in ("plateau_loss", "dropout_plateau"):
        # min_delta=1: no epoch after the first improves, so the learning rate halves every
        # epoch after the first; a callback that forgot its `best` would not halve it.
        callbacks.append(keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=1,
                                                           min_delta=1.0))
    elif scenario == "plateau_val":
        # The validation dataset is built exactly like the training one (the checkpoint must
        # still name the training pass), and ReduceLROnPlateau reads its loss.
        fit["validation_data"] = _bucketed(x, y)
        callbacks.append(keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5,
                                                           patience=1, min_delta=1.0))
    elif scenario == "early":
        fit["epochs"] = 6
        callbacks.append(keras.callbacks.EarlyStopping("loss", patience=2, min_delta=1.0,
                                                       restore_best_weights=True))
    callbacks.append(Kill(kill))
    if scenario == "packed":
        from seqprep.layers import PackedRNN

        xf = [np.asarray(s, "float32")[:, None] / 20 for s in x]
        sampler = sp.PackSampler(sp.sequence_lengths(xf), batch_size=4, seed=2)
        ds = sp.packed_dataset(xf, y[:, None], sampler=sampler)  # (B, S, 1) targets
        inputs = {
            "values": keras.Input((sampler.row_length, 1), name="values"),
            "segment_ids": keras.Input((sampler.row_length,), dtype="int32",
                                       name="segment_ids"),
            "segment_lengths": keras.Input((sampler.max_segments_,), dtype="int32",
                                           name="segment_lengths"),
        }
        h = PackedRNN(keras.layers.GRU(4))(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1)(h))
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
        model.fit(ds, callbacks=callbacks, **fit)
    elif scenario == "per_length":
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
        sp.fit_per_length(model, x, y, epochs=3, batch_size=16, group_by=[4, 8],
                          callbacks=callbacks, verbose=0)
    else:
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
        model.fit(_bucketed(x, y), callbacks=callbacks, **fit)
    return model


def main() -> None:
    for job in json.loads(sys.argv[1]):
        keras.backend.clear_session()
        gc.collect()
        keras.utils.set_random_seed(0)
        model = run(job["scenario"], job["backup"], job["kill"])
        np.savez(job["out"] + ".npz", *model.get_weights())
        history = model.history
        with open(job["out"] + ".json", "w") as f:
            json.dump({
                "lr": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
                "epoch": list(history.epoch),
                "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
            }, f)


if __name__ == "__main__":
    main()
