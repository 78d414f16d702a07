"""Inference in input order: ``sp.predict`` vs Keras ``predict`` on padded-to-max arrays vs
``tf.data`` ``bucket_by_sequence_length`` plus a hand reorder.

Run: .venv/bin/python -m pytest -q -s tests/benchmarks/bench_inference.py -o addopts="" \
         -o python_files="bench_*.py" -p no:xdist
     or  .venv/bin/python tests/benchmarks/bench_inference.py [--n 20000] [--rounds 3]

Workload (issue 20, Deliver 6): ``N`` integer sequences (default 20,000), long-tailed lengths
(lognormal with median 10, sigma 0.8, clipped to 1..111: mean about 14), a masked GRU
classifier (Embedding(2000, 32, mask_zero=True) -> GRU(64) -> Dense(1)). Three ways to get one
output per sequence in input order, in one process, on the same model, each run once to warm
up (traces) and then ``ROUNDS`` times in turn:

* ``keras padded-to-max``: ``model.predict(pad_sequences(x, padding="post"))``, Keras's
  default batch of 32 rows, every row 111 steps wide (the baseline);
* ``tf.data bucketing``: ``tf.data.Dataset.bucket_by_sequence_length`` over the ragged
  tokens, boundaries at the deciles, batch sizes from the same token budget as ``sp.predict``
  (a strong hand-written pipeline), ``model.predict`` on it, then the outputs put back in
  input order with the indices carried through the pipeline;
* ``sp.predict``: the default (sorted by length, ``max_tokens=DEFAULT_MAX_TOKENS``).

Prints each pipeline's best and median time, the ratios to the baseline, and checks that all
three give the same outputs. ``--max-tokens 4096,8192,...`` also times ``sp.predict`` at other
budgets.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import token_gru

VOCAB, LONGEST = 2000, 111


def _data(n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(np.log(10.0), 0.8, n)), 1, LONGEST).astype(int)
    return [rng.integers(1, VOCAB, k).astype(np.int32) for k in lengths]


def _tf_bucketing(model, x, max_tokens: int):
    """``bucket_by_sequence_length`` + ``model.predict`` + the outputs put back in order."""
    import numpy as np
    import tensorflow as tf

    lengths = np.array([len(s) for s in x])
    bounds = sorted({int(b) for b in np.quantile(lengths, np.linspace(0.1, 0.9, 9))} - {0})
    uppers = [*bounds, LONGEST + 1]
    sizes = [max(1, max_tokens // (u - 1 if u > 1 else 1)) for u in uppers]
    flat = np.concatenate(x)
    tokens = tf.RaggedTensor.from_row_lengths(flat, lengths)
    ds = tf.data.Dataset.from_tensor_slices((tokens, tf.range(len(x), dtype=tf.int64)))
    ds = ds.map(lambda t, i: (t, i)).bucket_by_sequence_length(
        lambda t, i: tf.shape(t)[0], bounds, sizes, padded_shapes=([None], []),
    )
    batches = [i.numpy() for _, i in ds]
    order = np.concatenate(batches)
    inputs = ds.map(lambda t, i: t).apply(tf.data.experimental.assert_cardinality(len(batches)))
    pred = model.predict(inputs, verbose=0)
    out = np.empty_like(pred)
    out[order] = pred
    return out


def run(n: int = 20_000, rounds: int = 3, budgets: tuple[int, ...] = ()) -> dict[str, list[float]]:
    import numpy as np

    import seqprep as sp
    from seqprep.running._inference_batches import DEFAULT_MAX_TOKENS

    x = _data(n)
    lengths = sp.sequence_lengths(x)
    model = token_gru(VOCAB, 32, 64)
    padded = sp.pad_sequences(x, padding="post", maxlen=LONGEST)
    pipelines = {
        "keras padded-to-max": lambda: model.predict(padded, verbose=0),
        "tf.data bucketing": lambda: _tf_bucketing(model, x, DEFAULT_MAX_TOKENS),
        "sp.predict": lambda: sp.predict(model, x, verbose=0),
    }
    for budget in budgets:
        pipelines[f"sp.predict max_tokens={budget}"] = (
            lambda b=budget: sp.predict(model, x, max_tokens=b, verbose=0)
        )
    outputs = {name: fn() for name, fn in pipelines.items()}  # warm-up: every trace
    reference = outputs["keras padded-to-max"]
    for name, out in outputs.items():
        gap = float(np.max(np.abs(out - reference)))
        assert gap < 1e-4, f"{name} differs from Keras on padded arrays by {gap}"
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(rounds):
        for name, fn in pipelines.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base = min(times["keras padded-to-max"])
    print(f"\n{n} sequences, lengths 1..{int(lengths.max())}, mean {lengths.mean():.1f}; "
          f"padded-to-max pads {1 - lengths.sum() / (n * LONGEST):.2f} of its steps; "
          f"{rounds} rounds")
    print(f"{'pipeline':34s} {'best s':>8s} {'median s':>9s} {'best / keras':>13s}")
    for name, ts in times.items():
        print(f"{name:34s} {min(ts):8.3f} {statistics.median(ts):9.3f} {min(ts) / base:13.3f}")
    return times


def test_bench_inference() -> None:
    times = run(rounds=3)
    ratio = min(times["sp.predict"]) / min(times["keras padded-to-max"])
    print(f"sp.predict / keras padded-to-max = {ratio:.3f} (target <= 0.2)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", default="", help="extra budgets, comma-separated")
    args = parser.parse_args()
    extra = tuple(int(b) for b in args.max_tokens.split(",") if b)
    run(args.n, args.rounds, extra)
