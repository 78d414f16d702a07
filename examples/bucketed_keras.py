"""A plain Keras pipeline, then the same pipeline made bucketed in a few lines.

The task (synthetic, so the script needs nothing): each sequence holds random values in
[-1, 1] and the label says whether their sum is positive. Lengths are long-tailed (5 to 400
steps), as in most real data, so padding every batch to the longest sequence wastes most of
the work.

    python examples/bucketed_keras.py            # 2000 sequences, 5 epochs each way
    python examples/bucketed_keras.py --quick    # a few seconds, for the test suite
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

import seqprep as sp


def make_data(n: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(3.5, 0.8, n).astype(int), 5, 400)
    x = [rng.uniform(-1, 1, (t, 1)).astype("float32") for t in lengths]
    y = np.array([int(s.sum() > 0) for s in x])
    return x, y


def build_model(units: int) -> keras.Model:
    model = keras.Sequential([
        keras.Input((None, 1)),
        keras.layers.Masking(mask_value=0.0),
        keras.layers.GRU(units),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for tests")
    args = parser.parse_args()
    n, epochs, units = (200, 1, 8) if args.quick else (2000, 5, 32)
    x, y = make_data(n)
    batch_size = 32

    # Before: pad everything to the longest sequence (post, so the GRU mask is cuDNN-friendly).
    keras.utils.set_random_seed(0)
    model = build_model(units)
    padded = sp.pad_sequences(x, dtype="float32", padding="post")
    start = time.perf_counter()
    model.fit(padded, y, batch_size=batch_size, epochs=epochs, verbose=2)
    plain_time = time.perf_counter() - start

    # After: the same model and data, batched by length. These three lines are the change.
    lengths = sp.sequence_lengths(x)
    sampler = sp.BucketSampler(lengths, batch_size=batch_size, seed=0)
    ds = sp.bucketed_dataset(x, y, sampler=sampler, options=sp.Options(epochs=epochs))

    keras.utils.set_random_seed(0)
    model = build_model(units)
    start = time.perf_counter()
    model.fit(ds, epochs=epochs, steps_per_epoch=len(sampler), verbose=2, shuffle=False)
    bucketed_time = time.perf_counter() - start

    padded_report = 1 - lengths.sum() / padded.size
    bucket_report = sp.padding_report(lengths, sampler.batches(0))["padding_fraction"]
    print(f"pad to max: {100 * padded_report:.1f}% padding, {plain_time:.1f} s")
    print(f"bucketed:   {100 * bucket_report:.1f}% padding, {bucketed_time:.1f} s "
          f"({sampler.num_buckets} buckets)")


if __name__ == "__main__":
    main()
