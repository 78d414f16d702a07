"""One process of the two-process ``jax.distributed`` test (tests/test_data_parallel.py).

Run as ``python _jax_distributed_worker.py PORT PROCESS_ID OUT``: joins a two-process JAX
cluster on localhost (CPU collectives), trains one epoch of ``bucketed_dataset`` under
``keras.distribution.DataParallel`` over both processes' devices, and writes what it saw
(steps, the ids of its real rows, row counts and widths per step, final weights) to OUT.

Then, for each case of ``cases`` (per-step targets with ``"timestep"`` weights behind a mask
and ``"timestep_mean"`` weights without one, where the two processes' halves of a batch hold
different numbers of real steps; per-sequence targets with odd batches, whose fill rows are
all in the second process's half), it trains the same model from the same initial weights
for two epochs twice: on this process's own device alone on the whole global plan (no
distribution), then under the two-process ``DataParallel``; and writes the largest weight
difference and the real steps each process's half of every batch holds. ``grain_dataset`` is
read on the first plan (ids, rows, widths) and trained as one of those cases (where Grain is
installed).

Last, ``sp.predict`` and ``sp.evaluate`` of a two-head model (per sequence and per step) under
the two-process ``DataParallel``, in batches of 9 rows (a fill row in the second process's half
of each): what the model saw at every step, the whole results, and the same model's results on
this process's device alone; and the messages of the two refusals (processes passing different
``x``; ``auto_shard_dataset=True``).
"""

import importlib.util
import json
import sys

import jax

port, pid, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=pid, initialization_timeout=60)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _jax_dp_worker import EPOCHS, _compare, _pooled  # noqa: E402  (the two-device test's)

import seqprep as sp  # noqa: E402

keras.distribution.set_distribution(
    keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False))
rng = np.random.default_rng(0)
n = 45
lengths = rng.integers(1, 9, n)
# Every step of sequence i holds i + 1 (0 is padding): the rows say which example they are.
x = [np.full((int(length), 1), i + 1, np.float32) for i, length in enumerate(lengths)]
y = rng.normal(size=n).astype(np.float32)
sampler = sp.BucketSampler(lengths, boundaries=[4], batch_size=10, seed=1)
ds = sp.bucketed_dataset(x, y, sampler=sampler, pad_to=8,
                         options=sp.Options(reshuffle_each_iteration=False))

seen, rows, widths = [], [], []
for xb, _, wb in ds.as_numpy_iterator():
    real = wb > 0
    seen.extend(int(v) - 1 for v in xb[real, 0, 0])
    rows.append(int(xb.shape[0]))
    widths.append(int(xb.shape[1]))

# The same plan through Grain (where it is installed): each process's rows of every batch.
GRAIN = importlib.util.find_spec("grain") is not None
grain_seen, grain_rows, grain_widths = [], [], []
for xb, _, wb in sp.grain_dataset(x, y, sampler=sampler, pad_to=8) if GRAIN else ():
    grain_seen.extend(int(v) - 1 for v in xb[wb > 0, 0, 0])
    grain_rows.append(int(xb.shape[0]))
    grain_widths.append(int(xb.shape[1]))

keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((None, 1)), keras.layers.Masking(0.0),
                          keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
steps = []
count = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: steps.append(b))
model.fit(ds, epochs=1, verbose=0, callbacks=[count])
weights = [np.asarray(w).tolist() for w in model.get_weights()]


# --------------------------------------------------------------------------- global weights

DATA_PARALLEL = keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)


def _case(make_ds, per_step, mask, grain=False):
    """The largest weight difference between the one-device run of the global plan and the
    two-process run (two epochs each), and the real steps of this process's half of every
    batch (the weights are 0 elsewhere)."""
    real_steps = []

    def fit(model, rows):
        if rows is not None:  # the two-process run
            real_steps.extend(int(np.count_nonzero(np.asarray(xb)[np.asarray(wb).reshape(
                len(wb), -1).max(axis=1) > 0].any(axis=-1))) for xb, _, wb in make_ds())
        if grain:  # Keras restarts a Grain dataset every epoch: play the sampler's epochs
            ds = make_ds()
            model.fit(ds.repeat(), epochs=EPOCHS, steps_per_epoch=len(ds), verbose=0)
        else:
            model.fit(make_ds(), epochs=EPOCHS, verbose=0)

    diff, _ = _compare(lambda: _pooled(per_step=per_step, mask=mask), fit, DATA_PARALLEL)
    return {"max_weight_diff": diff, "real_steps": real_steps}


rng = np.random.default_rng(4)
n2 = 41
lengths2 = rng.integers(1, 12, n2)
# Features shifted away from 0: no real step equals the pad value (the mask is the lengths).
x2 = [rng.normal(size=(int(length), 2)).astype(np.float32) + 3.0 for length in lengths2]
y2 = rng.normal(size=n2).astype(np.float32)
y2_steps = [rng.normal(size=(int(length), 1)).astype(np.float32) for length in lengths2]
steps_sampler = sp.BucketSampler(lengths2, boundaries=[6], batch_size=10, seed=2)
odd_sampler = sp.BucketSampler(lengths2, boundaries=[6], batch_size=9, seed=2)
cases = {
    # A Keras mask reaches the loss: the default reduction divides by the valid steps.
    "timestep, masked": _case(lambda: sp.bucketed_dataset(
        x2, y2_steps, sampler=steps_sampler, sample_weight="timestep", pad_to=11),
        per_step=True, mask=True),
    # No mask: the weights themselves hold the mean over the real steps.
    "timestep_mean": _case(lambda: sp.bucketed_dataset(
        x2, y2_steps, sampler=steps_sampler, sample_weight="timestep_mean", pad_to=11),
        per_step=True, mask=False),
    "timestep_mean, pydataset": _case(lambda: sp.bucketed_pydataset(
        x2, y2_steps, sampler=steps_sampler, sample_weight="timestep_mean", pad_to=11),
        per_step=True, mask=False),
    # Batches of 9 rows (and partial ones): fill rows only in the second process's half.
    "sequence, odd batches": _case(lambda: sp.bucketed_dataset(
        x2, y2, sampler=odd_sampler, pad_to=11), per_step=False, mask=True),
}
if GRAIN:  # grain_dataset (the same stage and fill rule as bucketed_dataset), each its rows
    cases["grain, timestep_mean"] = _case(lambda: sp.grain_dataset(
        x2, y2_steps, sampler=steps_sampler, sample_weight="timestep_mean", pad_to=11),
        per_step=True, mask=False, grain=True)


# --------------------------------------------------------------------------- predict, evaluate

def _two_heads():
    """A per-sequence head (a masked mean) and a per-step head (masked) on one layer."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, 2))
    steps = keras.layers.Dense(3, activation="tanh")(keras.layers.Masking(0.0)(inputs))
    pooled = keras.layers.Dense(1, name="pooled")(keras.layers.GlobalAveragePooling1D()(steps))
    model = keras.Model(inputs, [pooled, keras.layers.Dense(1, name="tagged")(steps)])
    model.compile(loss=["mse", "mse"], metrics=[["mae"], ["mae"]])
    return model


N_INFER = 27  # three batches of 9 rows: each process 5 rows, the second holding a fill row


def _inference(model, shapes=None):
    """sp.predict and sp.evaluate of the first N_INFER sequences in batches of 9 rows, at one
    width (one program to compile)."""
    record = [keras.callbacks.LambdaCallback(on_predict_batch_end=lambda b, logs: shapes.append(
        [list(np.shape(o)) for o in logs["outputs"]]))] if shapes is not None else None
    pooled, tagged = sp.predict(model, x2[:N_INFER], batch_size=9, pad_to=11, verbose=0,
                                callbacks=record)
    logs = sp.evaluate(model, x2[:N_INFER], [y2[:N_INFER], y2_steps[:N_INFER]], batch_size=9,
                       pad_to=11, verbose=0)
    return pooled, tagged, logs


keras.distribution.set_distribution(DATA_PARALLEL)
two_heads = _two_heads()
shapes = []
pooled, tagged, logs = _inference(two_heads, shapes)
refused = {}
try:  # each process passes its own share instead of the whole x: refused on both
    sp.predict(two_heads, x2 if pid == 0 else x2[:-1], verbose=0)
except ValueError as e:
    refused["different x"] = str(e)
keras.distribution.set_distribution(
    keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=True))
try:
    sp.predict(two_heads, x2, verbose=0)
except ValueError as e:
    refused["auto_shard_dataset"] = str(e)
keras.distribution.set_distribution(None)
one_device = _two_heads()
one_device.set_weights(two_heads.get_weights())
ref_pooled, ref_tagged, ref_logs = _inference(one_device)
inference = {
    "pooled": pooled.tolist(), "tagged": [t.tolist() for t in tagged], "logs": logs,
    "ref_logs": ref_logs, "shapes": shapes, "refused": refused,
    "pooled_diff": float(np.max(np.abs(pooled - ref_pooled))),
    "tagged_diff": max(float(np.max(np.abs(t - r))) for t, r in zip(tagged, ref_tagged,
                                                                   strict=True)),
    "tagged_lengths_ok": [len(t) for t in tagged] == [int(n) for n in lengths2[:N_INFER]],
}
with open(out, "w") as f:
    json.dump({"steps": len(steps), "ids": seen, "rows": rows, "widths": widths,
               "devices": jax.device_count(), "local_devices": jax.local_device_count(),
               "weights": weights, "cases": cases, "inference": inference,
               "grain_ids": grain_seen, "grain_rows": grain_rows, "grain_widths": grain_widths,
               "odd_sizes": [int(b.size) for b in odd_sampler.plan(0)]}, f)
