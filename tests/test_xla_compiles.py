"""Keras gotcha: with ``jit_compile=True`` XLA compiles the train step once per concrete shape.

Keras traces ``train_step`` once for a ``tf.data`` input whose element spec has ``None``
dimensions, but XLA still builds one program per concrete input shape it meets. So with
``pad_to="batch"`` every distinct (rows, width) pair costs a compilation, while
``pad_to="bucket"`` with ``merge_leftovers=False`` and ``drop_remainder=True`` bounds the
programs by the number of buckets. The compilations are counted from XLA's own module dumps
(``XLA_FLAGS=--xla_dump_to``), which must be set before TensorFlow starts: hence a subprocess.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import collections, json, os, re, sys
    os.environ["XLA_FLAGS"] = "--xla_dump_to=" + sys.argv[1]
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    import keras
    import numpy as np
    import seqprep as sp

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, 64)
    x = [rng.integers(1, 20, t).astype("int32") for t in lengths]
    y = rng.random(64).astype("float32")
    out = {}
    for pad_to in ("bucket", "batch"):
        sampler = sp.BucketSampler(lengths, boundaries=[10, 20], batch_size=8, seed=0,
                                   drop_remainder=True,
                                   options=sp.PlanOptions(merge_leftovers=False))
        # One fixed epoch replayed, so the shapes listed here are the ones fit meets.
        ds = sp.bucketed_dataset(x, y, sampler=sampler, pad_to=pad_to,
                                 options=sp.Options(reshuffle_each_iteration=False))
        shapes = sorted({tuple(xb.shape) for xb, _ in ds})
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(20, 4, mask_zero=True),
            keras.layers.GRU(4),
            keras.layers.Dense(1),
        ])
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)
        before = set(os.listdir(sys.argv[1]))
        history = model.fit(ds, epochs=2, verbose=0)
        new = set(os.listdir(sys.argv[1])) - before
        modules = collections.defaultdict(set)
        for name in new:
            m = re.match(r"module_(\\d+)\\.a_inference_(one_step_on_data_\\d+)__", name)
            if m:
                modules[m.group(2)].add(m.group(1))
        out[pad_to] = {
            "shapes": shapes,
            "programs": {k: len(v) for k, v in modules.items()},
            "loss": history.history["loss"],
        }
    print("RESULT " + json.dumps(out))
    """
)


def test_xla_compiles_once_per_concrete_shape_and_bucket_padding_bounds_it(tmp_path):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    bucket, batch = result["bucket"], result["batch"]
    # One traced step per model (one function name), one XLA program per concrete shape.
    for run in (bucket, batch):
        assert len(run["programs"]) == 1
        (programs,) = run["programs"].values()
        assert programs == len(run["shapes"])
        assert all(math.isfinite(v) for v in run["loss"])
    # Full batches padded to their bucket: at most one shape (one program) per bucket.
    assert len(bucket["shapes"]) <= 3
    assert {rows for rows, _ in bucket["shapes"]} == {8}
    # Padding to each batch's longest gives more shapes, hence more programs, on this data.
    assert len(batch["shapes"]) > len(bucket["shapes"])
