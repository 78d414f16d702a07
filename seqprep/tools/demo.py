"""``seqprep demo``: the reference RNN on real data, with each batching strategy side by side.

The bundled UCI Japanese Vowels data (270 training, 370 test sequences of 7 to 29 frames of
12 features, 9 speakers) is learnt by the same model, from the same initial weights and seed,
for the same number of epochs, fed five ways:

1. **pad to max**: ``pad_sequences(padding="post")`` to the longest training sequence, then
   shuffled batches (what ``model.fit(x_padded, y, batch_size=B)`` does);
2. **tf.data bucketing**: ``Dataset.bucket_by_sequence_length`` with quantile boundaries (the
   usual recipe) over a shuffled ``from_tensor_slices`` of a ``tf.RaggedTensor``;
3. **seqprep buckets**: :func:`seqprep.bucketed_dataset` over a :class:`seqprep.BucketSampler`
   with its default (optimal) boundaries;
4. **fit_per_length**: :func:`seqprep.fit_per_length`, batches of exactly equal length (no
   padding at all);
5. **packed rows**: :func:`seqprep.packed_dataset` over a :class:`seqprep.PackSampler` (rows of
   the longest length, as many updates per epoch as pad to max), the recurrent layer wrapped
   in :class:`seqprep.layers.PackedRNN`; tested with the trained weights in the plain model.

For each it measures test accuracy, the padding fraction of the batches actually fed to the
model (counted from the batches themselves, over every epoch), steps per epoch, the median
epoch time and how many times Keras traced its train step. A fifth run trains a many-to-many
model (predict the next frame) with a masked loss, to show the loss counting real steps only.
Results go to the terminal, to ``report.md`` and to PNG plots in the output folder.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from seqprep.tools._demo_kit import epoch_clock, start_run

__all__ = ["SETTINGS", "run_demo"]

#: The documented reference settings for Japanese Vowels (chosen on a validation split of
#: the training set only; see docs/demo.md and examples/japanese_vowels.py).
SETTINGS: dict[str, Any] = {
    "cell": "gru",
    "units": 64,
    "bidirectional": True,
    "dropout": 0.0,
    "standardize": True,
    "epochs": 40,
    "batch_size": 32,
    "learning_rate": 1e-3,
}

_QUICK = {"units": 16, "train_per_class": 10, "epochs": 2, "next_frame_epochs": 1}
STRATEGIES = ("pad to max", "tf.data bucketing", "seqprep buckets", "fit_per_length",
              "packed rows")


def build_classifier(train_x: list[np.ndarray], *, seed: int, settings: dict[str, Any]) -> Any:
    """The reference RNN for Japanese Vowels with the documented settings, compiled.

    Args:
        train_x: the training sequences (for the standardisation statistics only).
        seed: weight-initialisation seed.
        settings: a dict like :data:`SETTINGS`.

    Returns:
        A compiled ``keras.Model``.

    Example:
        >>> from seqprep.datasets import load_japanese_vowels
        >>> x, _ = load_japanese_vowels("train")
        >>> build_classifier(x, seed=0, settings=SETTINGS | {"units": 4}).output_shape
        (None, 9)
    """
    from seqprep.models import compile_reference, feature_stats, reference_rnn

    model = reference_rnn(
        input_dim=train_x[0].shape[-1],
        num_classes=9,
        cell=settings["cell"],
        units=settings["units"],
        bidirectional=settings["bidirectional"],
        dropout=settings["dropout"],
        standardize=feature_stats(train_x) if settings["standardize"] else None,
        seed=seed,
    )
    return compile_reference(model, learning_rate=settings["learning_rate"])


def _epoch_line(done: int, total: int, logs: dict[str, Any], seconds: float) -> str | None:
    """One compact line at the first, every quarter and the last epoch (in place of Keras's
    progress bars, which the demo leaves off by default)."""
    if not (done == 1 or done == total or done % max(1, total // 4) == 0):
        return None
    values = ", ".join(f"{key} {float(value):.4g}" for key, value in
                       sorted(logs.items(), key=lambda kv: kv[0] != "loss"))
    return f"  epoch {done:>{len(str(total))}}/{total}  {values}  ({seconds:.1f} s)"


def _batch_cost(dataset: Any, epochs: int) -> dict[str, float]:
    """Padded and real steps of the batches a dataset yields over ``epochs`` passes."""
    padded = real = batches = 0
    shapes = set()
    for _ in range(epochs):
        for element in dataset:
            x = np.asarray(element[0])
            real += int(np.any(x != 0, axis=-1).sum())
            padded += x.shape[0] * x.shape[1]
            batches += 1
            shapes.add(x.shape[:2])
    return {
        "padding_fraction": 1 - real / padded,
        "steps_per_epoch": batches / epochs,
        "shapes": len(shapes),
    }


def _pad_to_max_dataset(x, y, *, batch_size, seed):
    import tensorflow as tf

    from seqprep import pad_sequences

    padded = pad_sequences(x, dtype="float32", padding="post")
    return (
        tf.data.Dataset.from_tensor_slices((padded, y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
    )


def _tf_bucketing_dataset(x, y, *, boundaries, batch_size, seed):
    import tensorflow as tf

    from seqprep import sequence_lengths

    lengths = sequence_lengths(x)
    ragged = tf.RaggedTensor.from_row_lengths(np.concatenate(x), lengths)
    # Each bucket emits full batches and then its remainder: the count per epoch is fixed.
    counts = np.bincount(np.searchsorted(boundaries, lengths, side="right"),
                         minlength=len(boundaries) + 1)
    batches = int(sum(-(-c // batch_size) for c in counts))
    return (
        tf.data.Dataset.from_tensor_slices((ragged, y))
        .map(lambda s, label: (tf.convert_to_tensor(s), label))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .bucket_by_sequence_length(
            lambda s, label: tf.shape(s)[0],
            bucket_boundaries=[int(b) for b in boundaries],
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        )
        .apply(tf.data.experimental.assert_cardinality(batches))
    )


def _test_accuracy(model: Any, x: list[np.ndarray], y: np.ndarray) -> float:
    from seqprep import pad_sequences

    padded = pad_sequences(x, dtype="float32", padding="post")
    pred = model.predict(padded, batch_size=256, verbose=0)
    return float(np.mean(pred.argmax(-1) == y))


def _unpacked_twin(packed: Any, train_x: list[np.ndarray], *, seed: int,
                   settings: dict[str, Any]) -> Any:
    """The plain (padded-input) classifier with a packed model's trained weights."""
    from seqprep.layers import PackedRNN

    model = build_classifier(train_x, seed=seed, settings=settings)
    trained = {}
    for layer in packed.layers:
        inner = layer.layer if isinstance(layer, PackedRNN) else layer
        trained[inner.name] = inner
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(trained[layer.name].get_weights())
    return model


def _train_packed(*, train, test, settings, seed, epochs, verbose):
    """Packed rows of the longest length, as many sequences per update as the others see;
    trained packed, then served unpacked (the same weights in the plain model)."""
    import keras

    import seqprep as sp
    from seqprep.models import compile_reference, feature_stats, reference_rnn
    from seqprep.running._keras_private import StepTraces

    x, y = train
    keras.utils.set_random_seed(seed)
    lengths = sp.sequence_lengths(x)
    # As many updates per epoch as ceil(n / batch_size) padded batches: rows per batch follow.
    updates = -(-lengths.size // settings["batch_size"])
    rows = -(-sp.PackSampler(lengths, batch_size=1).num_rows_ // updates)
    sampler = sp.PackSampler(lengths, batch_size=rows, seed=seed)
    model = compile_reference(reference_rnn(
        input_dim=x[0].shape[-1], num_classes=9, cell=settings["cell"], units=settings["units"],
        bidirectional=settings["bidirectional"],
        standardize=feature_stats(x) if settings["standardize"] else None, seed=seed,
        packed=True,
    ), learning_rate=settings["learning_rate"], metrics=[], weighted_metrics=["accuracy"])
    timer = epoch_clock(_epoch_line if verbose == 0 else None)
    counter = StepTraces(model).start()
    start = time.perf_counter()
    try:
        history = model.fit(sp.packed_dataset(x, y, sampler=sampler), epochs=epochs,
                            callbacks=[timer], verbose=verbose, shuffle=False)
    finally:
        counter.stop()
    total = time.perf_counter() - start
    traces = counter.counts()
    later = timer.wall[1:] or timer.wall
    serve = _unpacked_twin(model, x, seed=seed, settings=settings)
    return {
        "strategy": "packed rows",
        "accuracy": _test_accuracy(serve, *test),
        "padding_fraction": 1 - sampler.fill_,
        "steps_per_epoch": float(len(sampler)),
        "shapes": len({len(b) for b in sampler.batches(0)}),
        "epoch_time": float(np.median(later)),
        "first_epoch_time": timer.wall[0],
        "total_time": total,
        "traces": None if traces is None else traces["train"],
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
    }


def _train_strategy(name, *, train, test, settings, seed, epochs, verbose, boundaries):
    import keras

    import seqprep as sp
    from seqprep.running._keras_private import StepTraces

    if name == "packed rows":
        return _train_packed(train=train, test=test, settings=settings, seed=seed,
                             epochs=epochs, verbose=verbose)
    x, y = train
    keras.utils.set_random_seed(seed)
    model = build_classifier(x, seed=seed, settings=settings)
    timer = epoch_clock(_epoch_line if verbose == 0 else None)
    batch_size = settings["batch_size"]
    lengths = sp.sequence_lengths(x)
    start = time.perf_counter()
    if name == "fit_per_length":
        history = sp.fit_per_length(model, x, y, epochs=epochs, batch_size=batch_size,
                                    seed=seed, callbacks=[timer], verbose=verbose)
        traces = history.traces
        plan = sp.plan_per_length(lengths, batch_size=batch_size, seed=seed)
        cost = {"padding_fraction": 0.0, "steps_per_epoch": float(history.steps_per_epoch),
                "shapes": len({(len(b), int(lengths[b].max())) for b in plan})}
    else:
        if name == "pad to max":
            def make():
                return _pad_to_max_dataset(x, y, batch_size=batch_size, seed=seed)
        elif name == "tf.data bucketing":
            def make():
                return _tf_bucketing_dataset(x, y, boundaries=boundaries["quantile"],
                                             batch_size=batch_size, seed=seed)
        else:
            sampler = sp.BucketSampler(lengths, batch_size=batch_size, seed=seed)

            def make():
                return sp.bucketed_dataset(x, y, sampler=sampler, options=sp.Options(epochs=epochs))
        counter = StepTraces(model).start()
        try:
            if name == "seqprep buckets":
                history = model.fit(make(), epochs=epochs, steps_per_epoch=len(sampler),
                                    callbacks=[timer], verbose=verbose, shuffle=False)
                cost = _batch_cost(make(), 1)
                cost["steps_per_epoch"] = float(len(sampler))
            else:
                history = model.fit(make(), epochs=epochs, callbacks=[timer], verbose=verbose,
                                    shuffle=False)
                cost = _batch_cost(make(), epochs)
        finally:
            counter.stop()
        traces = counter.counts()
    total = time.perf_counter() - start
    later = timer.wall[1:] or timer.wall
    return {
        "strategy": name,
        "accuracy": _test_accuracy(model, *test),
        "padding_fraction": cost["padding_fraction"],
        "steps_per_epoch": cost["steps_per_epoch"],
        "shapes": cost["shapes"],
        "epoch_time": float(np.median(later)),
        "first_epoch_time": timer.wall[0],
        "total_time": total,
        "traces": None if traces is None else traces["train"],
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
    }


def _next_frame(*, train, test, settings, seed, epochs, verbose):
    """Many-to-many: predict frame t+1 from frames 0..t; the loss counts real steps only.

    The model predicts the change from frame t to frame t+1 (in standardised units), so its
    error is the error of the next-frame prediction ``frame_t + change`` and "no change"
    (copy the last frame) is the baseline to beat.
    """
    import keras

    import seqprep as sp
    from seqprep.models import compile_reference, feature_stats, reference_rnn

    mean, std = feature_stats(train[0])

    def split(xs):
        inputs = [s[:-1] for s in xs]
        targets = [np.diff((s - mean) / std, axis=0).astype("float32") for s in xs]
        return inputs, targets

    x_in, y_out = split(train[0])
    t_in, t_out = split(test[0])
    keras.utils.set_random_seed(seed)
    model = compile_reference(reference_rnn(
        input_dim=12, cell=settings["cell"], units=settings["units"], return_sequences=True,
        output_dim=12, standardize=(mean, std), seed=seed,
    ), learning_rate=settings["learning_rate"])
    sampler = sp.BucketSampler(sp.sequence_lengths(x_in), batch_size=settings["batch_size"],
                               seed=seed)
    ds = sp.bucketed_dataset(x_in, y_out, sampler=sampler, sample_weight="timestep",
                             options=sp.Options(epochs=epochs), targets="step")
    clock = epoch_clock(_epoch_line if verbose == 0 else None)
    history = model.fit(ds, epochs=epochs, steps_per_epoch=len(sampler), verbose=verbose,
                        shuffle=False, callbacks=[clock])

    test_x = sp.pad_sequences(t_in, dtype="float32", padding="post")
    test_y = sp.pad_sequences(t_out, dtype="float32", padding="post")
    lengths = sp.sequence_lengths(t_in)
    weights = sp.sequence_weights(lengths)
    keras_loss = float(model.evaluate(test_x, test_y, sample_weight=weights,
                                      batch_size=len(t_in), verbose=0)[0])
    pred = model.predict(test_x, batch_size=256, verbose=0)
    per_step = ((pred - test_y) ** 2).mean(-1)
    mask = sp.length_mask(lengths)
    persistence = float((test_y ** 2).mean(-1)[mask].mean())  # predict "no change"
    return {
        "epochs": epochs,
        "test_mse_keras": keras_loss,
        "test_mse_real_steps": float(per_step[mask].mean()),
        "test_mse_all_steps": float(per_step.mean()),
        "persistence_mse": float(persistence),
        "padding_fraction_test": float(1 - mask.mean()),
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
    }


def _traces(row: dict[str, Any]) -> str:
    return "-" if row["traces"] is None else str(row["traces"])  # None: eager (PyTorch)


def _table(rows: list[dict[str, Any]]) -> list[str]:
    base = rows[0]["accuracy"]
    lines = [
        "| strategy | test accuracy | vs pad to max | padding | steps/epoch | shapes | "
        "epoch time (s) | first epoch (s) | traces |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['accuracy']:.4f} | {100 * (r['accuracy'] - base):+.1f} pt | "
            f"{100 * r['padding_fraction']:.1f}% | {r['steps_per_epoch']:.1f} | {r['shapes']} | "
            f"{r['epoch_time']:.3f} | {r['first_epoch_time']:.2f} | {_traces(r)} |"
        )
    return lines


def _console_table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'strategy':<18} {'accuracy':>9} {'padding':>8} {'steps/ep':>9} {'shapes':>7} "
            f"{'epoch s':>8} {'traces':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['strategy']:<18} {r['accuracy']:>9.4f} {100 * r['padding_fraction']:>7.1f}% "
            f"{r['steps_per_epoch']:>9.1f} {r['shapes']:>7} {r['epoch_time']:>8.3f} "
            f"{_traces(r):>7}"
        )
    return "\n".join(lines)


def run_demo(
    out: str | os.PathLike = "seqprep-demo",
    *,
    epochs: int | None = None,
    seed: int = 0,
    quick: bool = False,
    verbose: int = 0,
) -> dict[str, Any]:
    """Run the end-to-end demo and write ``report.md``, ``results.json`` and plots to ``out``.

    Args:
        out: output folder (created if needed).
        epochs: epochs per strategy; default ``SETTINGS["epochs"]`` (2 with ``quick``).
        seed: seed shared by every strategy (weights, shuffling, bucket plans).
        quick: a smoke run for tests: 16 units, 10 training sequences per speaker, the full
            test set.
        verbose: Keras's own output while training: 0 (the default) none, and the demo
            prints a compact line every few epochs; 1 progress bars; 2 a line per epoch.

    Returns:
        The results: ``settings``, ``lengths`` (summary), ``boundaries``, ``strategies``
        (one dict per strategy), ``next_frame`` and ``files``.

    Raises:
        ValueError: ``epochs`` below 1.

    Example:
        >>> import inspect
        >>> list(inspect.signature(run_demo).parameters)
        ['out', 'epochs', 'seed', 'quick', 'verbose']
    """
    import keras

    import seqprep as sp

    settings, next_epochs = _demo_settings(epochs, quick)
    out = start_run(out)
    train_x, train_y, test = _demo_data(quick)
    lengths = sp.sequence_lengths(train_x)
    sampler = sp.BucketSampler(lengths, batch_size=settings["batch_size"], seed=seed)
    seqprep_bounds = [int(b) for b in sampler.boundaries]
    quantile = sp.Bucketer(len(seqprep_bounds) + 1, strategy="quantile").fit(lengths)
    boundaries = {"seqprep": seqprep_bounds,
                  "quantile": [int(b) for b in quantile.boundaries_]}

    print(f"seqprep demo on the Keras {keras.backend.backend()} backend", flush=True)
    started = time.perf_counter()
    rows = []
    for name in STRATEGIES:
        print(f"\n=== {name}: {settings['epochs']} epochs", flush=True)
        rows.append(_train_strategy(
            name, train=(train_x, train_y), test=test, settings=settings, seed=seed,
            epochs=settings["epochs"], verbose=verbose, boundaries=boundaries,
        ))
    print(f"\n=== many-to-many (next frame, masked loss): {next_epochs} epochs", flush=True)
    next_frame = _next_frame(train=(train_x, train_y), test=test, settings=settings,
                             seed=seed, epochs=next_epochs, verbose=verbose)
    elapsed = time.perf_counter() - started

    files = _write_plots(out, lengths, seqprep_bounds, rows)
    summary = {
        "n": int(lengths.size), "min": int(lengths.min()), "max": int(lengths.max()),
        "mean": float(lengths.mean()), "real_steps": int(lengths.sum()),
        "pad_to_max_fraction": float(1 - lengths.sum() / (lengths.size * lengths.max())),
    }
    result = {
        "settings": settings | {"seed": seed, "quick": quick, "next_frame_epochs": next_epochs},
        "lengths": summary,
        "boundaries": boundaries,
        "strategies": rows,
        "next_frame": next_frame,
        "total_time": elapsed,
        "files": files,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "report.md").write_text(_report(result))
    _print_summary(result, out)
    return result


def _demo_settings(epochs: int | None, quick: bool) -> tuple[dict[str, Any], int]:
    """The run's settings and the next-frame model's epochs (``quick`` and ``epochs`` applied)."""
    from seqprep._core.checks import check_int

    settings = dict(SETTINGS)
    next_epochs = max(1, settings["epochs"] // 2)
    if quick:
        settings["units"] = _QUICK["units"]
        settings["epochs"] = _QUICK["epochs"]
        next_epochs = _QUICK["next_frame_epochs"]
    if epochs is not None:
        settings["epochs"] = check_int("epochs", epochs, minimum=1)
        next_epochs = max(1, settings["epochs"] // 2)
    return settings, next_epochs


def _demo_data(quick: bool) -> tuple[list[np.ndarray], np.ndarray, Any]:
    """Japanese Vowels: the training sequences and labels (fewer with ``quick``), the test set."""
    from seqprep.datasets import load_japanese_vowels

    train_x, train_y = load_japanese_vowels("train")
    test = load_japanese_vowels("test")
    if quick:
        keep = np.concatenate([np.flatnonzero(train_y == c)[: _QUICK["train_per_class"]]
                               for c in range(9)])
        train_x, train_y = [train_x[i] for i in keep], train_y[keep]
    return train_x, train_y, test


def _write_plots(
    out: Path, lengths: np.ndarray, bounds: list[int], rows: list[dict[str, Any]]
) -> dict[str, str]:
    """Draw the four plots into ``out``; return their file names by kind."""
    from seqprep.tools import plots
    files = {
        "lengths": "lengths.png",
        "padding": "padding.png",
        "accuracy_time": "accuracy_time.png",
        "learning_curves": "learning_curves.png",
    }
    plots.length_histogram(lengths, bounds, path=out / files["lengths"],
                           title="Japanese Vowels (train): lengths and seqprep boundaries")
    plots.padding_by_strategy({r["strategy"]: r["padding_fraction"] for r in rows},
                              path=out / files["padding"])
    plots.accuracy_and_time({r["strategy"]: r["accuracy"] for r in rows},
                            {r["strategy"]: r["epoch_time"] for r in rows},
                            path=out / files["accuracy_time"])
    plots.learning_curves({r["strategy"]: r["history"] for r in rows},
                          path=out / files["learning_curves"])
    return files


def _print_summary(result: dict[str, Any], out: Path) -> None:
    print("\n" + _console_table(result["strategies"]))
    nf = result["next_frame"]
    print(
        f"\nnext-frame (many-to-many) test MSE over real steps: {nf['test_mse_real_steps']:.4f}"
        f" (Keras masked loss {nf['test_mse_keras']:.4f}; averaging over padding too would "
        f"report {nf['test_mse_all_steps']:.4f}; copy-last-frame baseline "
        f"{nf['persistence_mse']:.4f})"
    )
    print(f"\nKeras backend: {result['backend']}. Total {result['total_time']:.0f} s. "
          f"Report: {out / 'report.md'}; plots: "
          + ", ".join(str(out / f) for f in result["files"].values()))


def _report(result: dict[str, Any]) -> str:
    s, lengths, rows = result["settings"], result["lengths"], result["strategies"]
    nf = result["next_frame"]
    arch = f"{'Bidirectional ' if s['bidirectional'] else ''}{s['cell'].upper()}({s['units']})"
    worst = min(r["accuracy"] - rows[0]["accuracy"] for r in rows)
    lines = [
        "# seqprep demo report",
        "",
        f"Keras backend: **{result['backend']}** (Keras {result['keras_version']}; choose it "
        "with `seqprep demo --backend jax|torch|tensorflow`).",
        "",
        "Data: UCI Japanese Vowels bundled with seqprep (CC BY 4.0): "
        f"{lengths['n']} training sequences of {lengths['min']}..{lengths['max']} frames "
        f"(mean {lengths['mean']:.1f}), 370 test sequences, 9 speakers."
        + (" **Quick mode**: a subset of the training data and a tiny model; the numbers "
           "only check that everything runs." if s["quick"] else ""),
        "",
        f"Model: `reference_rnn(input_dim=12, num_classes=9, cell={s['cell']!r}, "
        f"units={s['units']}, bidirectional={s['bidirectional']}, dropout={s['dropout']}, "
        "standardize=feature_stats(train_x))`, i.e. Masking -> standardise (train "
        f"statistics) -> {arch} -> Dense(9, softmax); Adam(lr={s['learning_rate']}), "
        f"batch size {s['batch_size']}, {s['epochs']} epochs, seed {s['seed']} for every "
        "strategy (same initial weights).",
        "",
        "## Strategies",
        "",
        *_table(rows),
        "",
        "- *padding*: share of the time steps fed to the model that are padding, counted "
        "from the batches themselves over all epochs (pad to max is "
        f"1 - {lengths['real_steps']} / ({lengths['n']} x {lengths['max']}) = "
        f"{100 * lengths['pad_to_max_fraction']:.1f}%).",
        "- *steps/epoch*: optimizer steps per epoch; *shapes*: distinct (rows, length) batch "
        "shapes; *epoch time*: median wall time of epochs 2..N (the first includes tracing); "
        "*traces*: how often Keras traced its train step (on JAX: one compiled program per "
        "batch shape; `-` on PyTorch, which runs the step eagerly).",
        f"- Largest accuracy drop against pad to max: {100 * worst:+.1f} points.",
        f"- seqprep boundaries: {result['boundaries']['seqprep']}; quantile boundaries "
        f"(tf.data): {result['boundaries']['quantile']}.",
        "",
        f"![lengths]({result['files']['lengths']})",
        f"![padding]({result['files']['padding']})",
        f"![accuracy and time]({result['files']['accuracy_time']})",
        f"![learning curves]({result['files']['learning_curves']})",
        "",
        "## Many-to-many: masking in the loss",
        "",
        "A second reference RNN (unidirectional GRU, `return_sequences=True`, "
        "`output_dim=12`) predicts frame t+1 from frames 0..t (as the change from frame t, in "
        "standardised units), trained on seqprep buckets with "
        "`sample_weight=\"timestep\"` (0/1 weights) and a loss with "
        f"`reduction=\"mean_with_sample_weight\"` for {nf['epochs']} epochs. On the "
        f"post-padded test set ({100 * nf['padding_fraction_test']:.1f}% padding):",
        "",
        "| quantity | test MSE |",
        "|---|---|",
        f"| Keras loss (`model.evaluate`, masked) | {nf['test_mse_keras']:.4f} |",
        f"| mean over real steps, computed by hand | {nf['test_mse_real_steps']:.4f} |",
        f"| mean over all steps, padding included (wrong) | {nf['test_mse_all_steps']:.4f} |",
        f"| copy-the-last-frame baseline | {nf['persistence_mse']:.4f} |",
        "",
        f"Total run time: {result['total_time']:.0f} s.",
        "",
    ]
    return "\n".join(lines)
