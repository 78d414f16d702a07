"""One process of the two-process ``jax.distributed`` test (tests/test_data_parallel.py).

Run as ``python _jax_distributed_worker.py PORT PROCESS_ID OUT``: joins a two-process JAX
cluster on localhost (CPU collectives), trains one epoch of ``bucketed_dataset`` under
``keras.distribution.DataParallel`` over both processes' devices, and writes what it saw
(steps, the ids of its real rows, row counts and widths per step, final weights) to OUT.
"""

import json
import sys

import jax

port, pid, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=pid, initialization_timeout=60)

import keras  # noqa: E402
import numpy as np  # noqa: E402

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

keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((None, 1)), keras.layers.Masking(0.0),
                          keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
steps = []
count = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: steps.append(b))
model.fit(ds, epochs=1, verbose=0, callbacks=[count])
weights = [np.asarray(w).tolist() for w in model.get_weights()]
with open(out, "w") as f:
    json.dump({"steps": len(steps), "ids": seen, "rows": rows, "widths": widths,
               "devices": jax.device_count(), "local_devices": jax.local_device_count(),
               "weights": weights}, f)
