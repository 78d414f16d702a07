"""A pandas long-format time series (one row per step) to a bucketed Keras model.

Synthetic sensor sessions of different lengths, stored the way databases export them: one
row per reading with a session id, a timestamp, two sensor channels and the session's label
(whether the machine was faulty: a slow oscillation appears on channel `b`). The rows arrive
shuffled; `seqprep.from_dataframe` groups and orders them without a Python loop over rows.

    python examples/pandas_timeseries.py
    python examples/pandas_timeseries.py --quick
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
import pandas as pd

import seqprep as sp
from seqprep.models import compile_reference, feature_stats, reference_rnn


def make_frame(n_sessions: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for session in range(n_sessions):
        steps = int(rng.integers(10, 120))
        faulty = int(rng.integers(2))
        t = np.arange(steps)
        a = rng.normal(0, 1, steps).cumsum() * 0.1
        b = rng.normal(0, 0.5, steps) + faulty * np.sin(t / 3.0)
        parts.append(pd.DataFrame({
            "session": f"s{session:04d}",
            "time": pd.Timestamp("2024-01-01") + pd.to_timedelta(t, unit="s"),
            "a": a, "b": b, "faulty": faulty,
        }))
    frame = pd.concat(parts, ignore_index=True)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # rows shuffled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for tests")
    args = parser.parse_args()
    n, epochs, units = (60, 1, 8) if args.quick else (600, 10, 32)
    frame = make_frame(n)
    print(frame.head())

    x, y = sp.from_dataframe(frame, id="session", time="time", features=["a", "b"],
                             target="faulty", dtype="float32")
    split = int(0.8 * len(x))
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]

    lengths = sp.sequence_lengths(x_train)
    sampler = sp.BucketSampler(lengths, batch_size=16, seed=0)
    print(f"{len(x_train)} sessions of {lengths.min()}..{lengths.max()} steps; "
          f"padding with buckets {100 * sampler.report(0)['padding_fraction']:.1f}% vs "
          f"{100 * (1 - lengths.mean() / lengths.max()):.1f}% padded to the longest")

    keras.utils.set_random_seed(0)
    model = compile_reference(reference_rnn(
        input_dim=2, num_classes=2, cell="gru", units=units,
        standardize=feature_stats(x_train), seed=0,
    ))
    ds = sp.bucketed_dataset(x_train, y_train, sampler=sampler, options=sp.Options(epochs=epochs))
    model.fit(ds, epochs=epochs, steps_per_epoch=len(sampler), verbose=2, shuffle=False)
    test = sp.pad_sequences(x_test, dtype="float32", padding="post")
    print(f"test accuracy {model.evaluate(test, y_test, verbose=0)[1]:.3f}")


if __name__ == "__main__":
    main()
