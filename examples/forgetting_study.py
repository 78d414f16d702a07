"""Do RNNs forget? The adding problem at increasing lengths, full BPTT vs truncated BPTT.

The adding problem (Hochreiter & Schmidhuber 1997): every step carries a random value in
[0, 1) and a marker; exactly two steps are marked, one in the first half of the sequence and one
in the second half, and the target is the sum of the two marked values. Predicting the mean
(1.0) scores an MSE of 1/6 = 0.167, the baseline; a model "remembers" when it beats it clearly.
Here the sequences have variable lengths (uniform in [T/2, T]) so that seqprep's packing, per-row
state resets and masks are exercised.

For each maximum length T, recurrent cell (SimpleRNN, GRU, LSTM) and seed, the study trains:

* **full BPTT**: ``fit_tbptt`` with ``window`` = the longest sequence, i.e. one window per
  sequence, gradients through every step (the same as plain ``fit`` on padded batches);
* **TBPTT**: ``fit_tbptt`` with a short ``window``; the loss sits on the last step, so the
  gradient reaches only the last ``window`` steps, where the second marker may be, but the first
  marker usually is not.

and reports the test MSE, the accuracy (share of test sequences predicted within 0.04 of the
target, the usual criterion) and the training time. Results go to ``OUT/forgetting.md`` (a
Markdown table), ``OUT/forgetting.csv`` and ``OUT/forgetting.png``.

Run:
    python examples/forgetting_study.py --quick --out /tmp/forgetting   # seconds (the tests)
    python examples/forgetting_study.py --out docs/img                    # minutes
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

BASELINE_MSE = 1.0 / 6.0
CELLS = ("SimpleRNN", "GRU", "LSTM")


@dataclass(frozen=True)
class Settings:
    """What to run. ``n_train[i]`` and ``epochs[i]`` go with ``lengths[i]``."""

    lengths: tuple[int, ...]
    n_train: tuple[int, ...]
    epochs: tuple[int, ...]
    cells: tuple[str, ...]
    tbptt_window: int
    seeds: tuple[int, ...]
    n_test: int
    units: int
    batch_size: int
    learning_rate: float


QUICK = Settings(
    lengths=(8,), n_train=(32,), epochs=(1,), cells=CELLS, tbptt_window=3, seeds=(0,),
    n_test=16, units=4, batch_size=8, learning_rate=1e-2,
)
# About the same compute per configuration (~0.5 M sequence-steps, a minute on a laptop core):
# long sequences get fewer training sequences and epochs. Capped at 1024 x 12 for short ones.
FULL = Settings(
    lengths=(10, 50, 200, 1000), n_train=(1024, 1024, 512, 128), epochs=(12, 12, 6, 5),
    cells=CELLS, tbptt_window=20, seeds=(0,), n_test=256, units=32, batch_size=32,
    learning_rate=1e-2,
)


def adding_problem(n: int, max_length: int, rng: np.random.Generator):
    """``n`` adding-problem sequences of lengths in ``[max_length // 2, max_length]``.

    Returns:
        ``(x, y)``: a list of float32 arrays of shape ``(T_i, 2)`` (value, marker) and the
        float32 targets of shape ``(n, 1)``.
    """
    lengths = rng.integers(max(2, max_length // 2), max_length + 1, size=n)
    x, y = [], []
    for length in lengths:
        values = rng.random(length).astype("float32")
        markers = np.zeros(length, "float32")
        half = length // 2
        first, second = rng.integers(0, half), rng.integers(half, length)
        markers[[first, second]] = 1.0
        x.append(np.stack([values, markers], axis=1))
        y.append(values[first] + values[second])
    return x, np.asarray(y, "float32")[:, None]


def build_model(cell: str, *, units: int, batch_size: int, window: int, learning_rate: float,
                seed: int):
    """A stateful one-layer RNN with per-step outputs, as ``fit_tbptt`` requires."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(batch_shape=(batch_size, window, 2))
    layer = getattr(keras.layers, cell)(units, stateful=True, return_sequences=True)
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, clipnorm=1.0), loss="mse")
    return model


def run_one(settings: Settings, length: int, cell: str, method: str, seed: int) -> dict:
    import seqprep as sp

    n_train = settings.n_train[settings.lengths.index(length)]
    epochs = settings.epochs[settings.lengths.index(length)]
    rng = np.random.default_rng([seed, length])
    x_train, y_train = adding_problem(n_train, length, rng)
    x_test, y_test = adding_problem(settings.n_test, length, rng)
    longest = max(len(s) for s in x_train + x_test)
    window = longest if method == "full BPTT" else settings.tbptt_window
    model = build_model(cell, units=settings.units, batch_size=settings.batch_size,
                        window=window, learning_rate=settings.learning_rate, seed=seed)
    started = time.perf_counter()
    sp.fit_tbptt(model, x_train, y_train, window=window, batch_size=settings.batch_size,
                 epochs=epochs, order="shuffle", seed=seed, verbose=0)
    seconds = time.perf_counter() - started
    pred = sp.predict_tbptt(model, x_test, window=window, batch_size=settings.batch_size)
    error = pred[:, 0] - y_test[:, 0]
    return {
        "length": length,
        "cell": cell,
        "method": method,
        "window": window,
        "seed": seed,
        "n_train": n_train,
        "epochs": epochs,
        "mse": float(np.mean(error**2)),
        "accuracy": float(np.mean(np.abs(error) < 0.04)),
        "train_seconds": seconds,
    }


def run_study(settings: Settings, *, log=print) -> list[dict]:
    rows = []
    for length in settings.lengths:
        methods = ["full BPTT"]
        if settings.tbptt_window < length:
            methods.append(f"TBPTT w={settings.tbptt_window}")
        for cell in settings.cells:
            for method in methods:
                for seed in settings.seeds:
                    row = run_one(settings, length, cell, method, seed)
                    rows.append(row)
                    log(f"T={length:5d} {cell:9s} {method:12s} seed={seed} "
                        f"mse={row['mse']:.3f} acc={row['accuracy']:.2f} "
                        f"time={row['train_seconds']:.1f}s")
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and spread over seeds for every (length, cell, method)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["length"], row["cell"], row["method"]), []).append(row)
    summary = []
    for (length, cell, method), group in groups.items():
        mse = np.array([r["mse"] for r in group])
        summary.append({
            "length": length, "cell": cell, "method": method, "seeds": len(group),
            "n_train": group[0]["n_train"], "epochs": group[0]["epochs"],
            "mse": float(mse.mean()), "mse_min": float(mse.min()), "mse_max": float(mse.max()),
            "accuracy": float(np.mean([r["accuracy"] for r in group])),
            "train_seconds": float(np.mean([r["train_seconds"] for r in group])),
        })
    return summary


def markdown_table(summary: list[dict], settings: Settings) -> str:
    lines = [
        f"Adding problem, lengths uniform in [T/2, T]; {settings.n_test} test sequences, "
        f"{settings.units} units, batch size {settings.batch_size}, "
        f"Adam({settings.learning_rate}, clipnorm=1); mean over seeds "
        f"{list(settings.seeds)} (min-max in brackets). Baseline MSE (predict the mean): "
        f"{BASELINE_MSE:.3f}. Accuracy: share of test sequences within 0.04 of the target.",
        "",
        "| T | train seqs x epochs | cell | method | test MSE | accuracy | train time (s) |",
        "|---:|---:|---|---|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['length']} | {s['n_train']} x {s['epochs']} | {s['cell']} | {s['method']} "
            f"| {s['mse']:.3f} "
            f"[{s['mse_min']:.3f}-{s['mse_max']:.3f}] | {s['accuracy']:.2f} | "
            f"{s['train_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mse, ax_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"SimpleRNN": "tab:blue", "GRU": "tab:orange", "LSTM": "tab:green"}
    methods = sorted({s["method"] for s in summary}, key=lambda m: (m != "full BPTT", m))
    for cell in colours:
        for method in methods:
            points = sorted((s["length"], s["mse"], s["train_seconds"], s["mse_min"],
                             s["mse_max"]) for s in summary
                            if s["cell"] == cell and s["method"] == method)
            if not points:
                continue
            t, mse, seconds, low, high = map(np.array, zip(*points, strict=True))
            style = "-o" if method == "full BPTT" else "--s"
            label = f"{cell}, {method}"
            ax_mse.errorbar(t, mse, yerr=[mse - low, high - mse], fmt=style,
                            color=colours[cell], label=label, capsize=3)
            ax_time.plot(t, seconds, style, color=colours[cell], label=label)
    ax_mse.axhline(BASELINE_MSE, color="grey", linestyle=":", label="baseline (predict mean)")
    for ax in (ax_mse, ax_time):
        ax.set_xscale("log")
        ax.set_xlabel("maximum sequence length T")
    ax_mse.set_ylabel("test MSE")
    ax_mse.set_title("Adding problem: error vs length")
    ax_time.set_yscale("log")
    ax_time.set_ylabel("training time (s)")
    ax_time.set_title("Training time")
    ax_mse.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (seconds), for tests")
    parser.add_argument("--out", default="forgetting-study", help="output directory")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    settings = QUICK if args.quick else FULL
    if args.seeds is not None:
        settings = Settings(**{**asdict(settings), "seeds": tuple(range(args.seeds))})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    rows = run_study(settings)
    summary = summarise(rows)
    with open(out / "forgetting.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = markdown_table(summary, settings)
    (out / "forgetting.md").write_text(table)
    plot(summary, out / "forgetting.png")
    print(table)
    print(f"wrote {out / 'forgetting.md'}, {out / 'forgetting.csv'}, {out / 'forgetting.png'} "
          f"in {time.perf_counter() - started:.0f} s")
    return summary


if __name__ == "__main__":
    main()
