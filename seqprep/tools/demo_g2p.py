"""``seqprep demo --task g2p``: an encoder–decoder on real data, 2-D buckets against pad-to-max.

The bundled CMU Pronouncing Dictionary subset (:func:`seqprep.datasets.load_cmudict`: 38,000
training words, 2,000 held out) is learnt grapheme-to-phoneme by
:func:`seqprep.models.reference_seq2seq`, from the same initial weights, under the same protocol and
learning-rate schedule, fed two ways:

1. **2-D buckets**: a :class:`seqprep.BucketSampler` planned jointly on the source (letters)
   and decoder (phonemes + 1) lengths, through :func:`seqprep.bucketed_dataset` with the dict
   ``{"encoder", "decoder"}`` of ragged fields (each padded to its own width per batch);
2. **pad to max**: every word and every pronunciation padded to the corpus maximum, shuffled
   batches of the same size (what the Keras seq2seq examples do).

Decoder inputs and targets come from :func:`seqprep.teacher_forcing`; both runs weigh the
loss by the real decoder steps only.

**The epoch count is chosen on validation words only, then the model is refitted on all the
training words** (the standard protocol). Per strategy, a *selection run* holds a seeded 5 %
of the training words (:func:`validation_split`) out of training, greedily decodes them after
every epoch and records their phoneme error rate; the epoch count with the lowest one is
chosen (Keras ``EarlyStopping`` on the validation PER, without stopping early: the epoch cap is
the time budget). A *refit* then trains a fresh model from the same initial weights on all
38,000 training words for that many epochs, on the selection run's learning-rate schedule.
Only then, with both refits done, each model decodes the 2,000 test words with
:func:`seqprep.models.greedy_decode`, once, scored by the phoneme error rate (edit distance
over reference length) and the word error rate (words with any error). The refit is the
training the issue's time goal counts; the report gives the selection run's time separately,
the padding of the batches fed (encoder and decoder steps), the epoch times (wall clock and
the process's CPU time: on a shared machine the wall time depends on the other load) and the
load average.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from seqprep.tools._demo_kit import EpochLine, epoch_clock, start_run

__all__ = ["G2P_SETTINGS", "run_g2p_demo"]

#: The documented reference settings for the g2p demo (see docs/demo.md for how they were
#: chosen). ``epochs`` is the cap (the time budget; the learning-rate schedule spans it): the
#: epoch whose weights are kept is picked by the PER on ``validation_fraction`` of the
#: training words, never on the test split.
G2P_SETTINGS: dict[str, Any] = {
    "cell": "gru",
    "units": 128,
    "embedding_dim": 64,
    "bidirectional": True,
    "attention": True,
    "dropout": 0.0,
    "epochs": 12,
    "batch_size": 64,
    "learning_rate": 2e-3,
    "final_learning_rate_fraction": 0.05,
    "clipnorm": 1.0,
    "validation_fraction": 0.05,
}

_QUICK = {"units": 8, "embedding_dim": 8, "epochs": 2, "train_words": 200, "test_words": 50}
STRATEGIES = ("2-D buckets", "pad to max")


def _epoch_line(label: str) -> EpochLine:
    """One compact line per epoch, in place of Keras's progress bars (``verbose=0``)."""

    def line(done: int, total: int, logs: dict[str, Any], seconds: float) -> str:
        loss = logs.get("loss")
        shown = "" if loss is None else f"loss {float(loss):.4f}  "
        return f"[g2p] {label}: epoch {done}/{total}  {shown}({seconds:.1f} s)"

    return line


class _BestOnValidation:
    """A Keras callback that greedily decodes the validation words after every epoch, records
    their phoneme error rate and, when training ends, restores the weights of the epoch with
    the lowest one (the earliest on ties): ``EarlyStopping(restore_best_weights=True)`` on the
    validation PER, without stopping early. Built lazily, so importing this module stays free
    of Keras."""

    def __new__(cls, validation: Any, *, start: int, end: int, label: str | None = None) -> Any:
        import keras

        import seqprep as sp
        from seqprep.models import greedy_decode

        class Best(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.per: list[float] = []
                self.seconds: list[float] = []
                self.best_epoch = 0  # 1-based once an epoch has ended
                self._best_weights: list[Any] | None = None

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                began = time.perf_counter()
                decoded = greedy_decode(self.model, validation.graphemes, start=start, end=end)
                per = sp.error_rates(validation.phonemes, decoded)["token_error_rate"]
                self.seconds.append(time.perf_counter() - began)
                self.per.append(float(per))
                if self.best_epoch == 0 or per < self.per[self.best_epoch - 1]:
                    self.best_epoch = epoch + 1
                    self._best_weights = self.model.get_weights()
                if label is not None:
                    print(f"[g2p] {label}: validation PER {per:.4f} after epoch {epoch + 1} "
                          f"(best so far: epoch {self.best_epoch})", flush=True)

            def on_train_end(self, logs: Any = None) -> None:
                if self._best_weights is not None:
                    self.model.set_weights(self._best_weights)

        return Best()


def validation_split(n: int, fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` training examples into a training part and a validation part, seeded.

    The validation part is a random ``round(fraction * n)`` of the examples (at least one,
    at most ``n - 1``) drawn with ``seed``; both parts are returned in increasing order, so the
    training data keep their stored order.

    Args:
        n: number of examples, at least 2.
        fraction: the share held out for validation, in ``(0, 1)``.
        seed: the seed of the draw (same seed, same split).

    Returns:
        ``(train_indices, validation_indices)``: disjoint sorted int64 arrays whose union is
        ``0..n-1``.

    Raises:
        ValueError: ``n < 2`` or ``fraction`` outside ``(0, 1)``.

    Example:
        >>> train, validation = validation_split(10, 0.2, seed=0)
        >>> len(train), len(validation), sorted([*train, *validation]) == list(range(10))
        (8, 2, True)
    """
    from seqprep._core.checks import check_int

    n = check_int("n", n, minimum=2)
    if not 0 < fraction < 1:
        raise ValueError(
            f"Argument `fraction` must be in (0, 1). Received: fraction={fraction!r}\n"
            "- Pass the share of the training words to hold out, e.g. 0.05."
        )
    size = min(n - 1, max(1, round(fraction * n)))
    chosen = np.random.default_rng(seed).choice(n, size=size, replace=False)
    held = np.zeros(n, dtype=bool)
    held[chosen] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def _subset(data: Any, indices: np.ndarray) -> Any:
    """The words ``indices`` of a :class:`~seqprep.datasets.Pronunciations`."""
    return data._replace(words=[data.words[i] for i in indices],
                         graphemes=[data.graphemes[i] for i in indices],
                         phonemes=[data.phonemes[i] for i in indices])


def _settings(epochs: int | None, quick: bool) -> dict[str, Any]:
    from seqprep._core.checks import check_int

    settings = dict(G2P_SETTINGS)
    if quick:
        settings.update(_QUICK)
    if epochs is not None:
        settings["epochs"] = check_int("epochs", epochs, minimum=1)
    return settings


def build_g2p_model(settings: dict[str, Any], *, steps_per_epoch: int, seed: int) -> Any:
    """The reference encoder–decoder for g2p with ``settings``, compiled.

    Adam with cosine decay from ``learning_rate`` to ``final_learning_rate_fraction`` of it
    over the whole run, gradients clipped to ``clipnorm``; the masked mean cross-entropy of
    :func:`seqprep.models.compile_reference`.

    Args:
        settings: a dict like :data:`G2P_SETTINGS`.
        steps_per_epoch: batches per epoch (for the learning-rate schedule).
        seed: weight-initialisation seed.

    Returns:
        A compiled ``keras.Model``.

    Example:
        >>> model = build_g2p_model(G2P_SETTINGS | {"units": 4}, steps_per_epoch=10, seed=0)
        >>> model.output_shape
        (None, None, 42)
    """
    import keras

    from seqprep.datasets._cmudict import LETTERS, PHONEMES
    from seqprep.models import compile_reference, reference_seq2seq

    model = reference_seq2seq(
        source_vocab_size=len(LETTERS), target_vocab_size=len(PHONEMES) + 2,
        units=settings["units"], embedding_dim=settings["embedding_dim"], cell=settings["cell"],
        bidirectional=settings["bidirectional"], attention=settings["attention"],
        dropout=settings["dropout"], seed=seed,
    )
    schedule = keras.optimizers.schedules.CosineDecay(
        settings["learning_rate"], decay_steps=max(1, steps_per_epoch * settings["epochs"]),
        alpha=settings["final_learning_rate_fraction"],
    )
    optimizer = keras.optimizers.Adam(schedule, clipnorm=settings["clipnorm"])
    return compile_reference(model, optimizer=optimizer)


def batch_padding(lengths: dict[str, np.ndarray], batches: list[np.ndarray],
                  widths: dict[str, int] | None = None) -> dict[str, float]:
    """Padding fraction of the encoder, the decoder and both, over some batches.

    Args:
        lengths: ``{"encoder": (n,), "decoder": (n,)}`` real lengths.
        batches: index arrays, one per batch.
        widths: a fixed padded width per field (pad to max); None pads each batch to its own
            longest sequence per field.

    Returns:
        ``{"encoder", "decoder", "total"}`` padding fractions (padded steps that are not real,
        over all padded steps).

    Example:
        >>> lengths = {"encoder": np.array([1, 3, 2]), "decoder": np.array([2, 2, 4])}
        >>> batch_padding(lengths, [np.array([0, 1]), np.array([2])])
        {'encoder': 0.25, 'decoder': 0.0, 'total': 0.125}
    """
    real = {k: 0 for k in lengths}
    padded = {k: 0 for k in lengths}
    for batch in batches:
        for field, field_lengths in lengths.items():
            chosen = field_lengths[batch]
            real[field] += int(chosen.sum())
            width = int(chosen.max()) if widths is None else widths[field]
            padded[field] += width * len(batch)
    out = {field: 1 - real[field] / padded[field] for field in lengths}
    out["total"] = 1 - sum(real.values()) / sum(padded.values())
    return out


class _Feed(NamedTuple):
    """How one strategy feeds some words to ``model.fit``."""

    fit: dict[str, Any]  # the data arguments of ``model.fit``
    steps_per_epoch: int
    padding: Callable[[int], dict[str, float]]  # of the batches fed over that many epochs


def _feed(strategy: str, words: Any, *, batch_size: int, seed: int, start: int,
          end: int) -> _Feed:
    """The batches of ``strategy`` over ``words`` (teacher-forced, weighted by real steps)."""
    import seqprep as sp

    dec_in, dec_out = sp.teacher_forcing(words.phonemes, start=start, end=end)
    lengths = {"encoder": sp.sequence_lengths(words.graphemes),
               "decoder": sp.sequence_lengths(dec_in)}
    if strategy == "2-D buckets":
        # one plan on both lengths; a fresh order every epoch
        sampler = sp.BucketSampler(lengths, batch_size=batch_size, seed=seed)
        dataset = sp.bucketed_dataset({"encoder": words.graphemes, "decoder": dec_in}, dec_out,
                                      sampler=sampler, sample_weight="timestep")
        # the sampler orders the batches: Keras's own shuffle does not apply to a dataset
        return _Feed({"x": dataset, "shuffle": False}, len(sampler), lambda epochs: batch_padding(
            lengths, [b for e in range(epochs) for b in sampler.batches(e)]))
    # pad to max: the Keras examples' way
    widths = {k: int(v.max()) for k, v in lengths.items()}
    x = {"encoder": sp.pad_sequences(words.graphemes, maxlen=widths["encoder"], padding="post"),
         "decoder": sp.pad_sequences(dec_in, maxlen=widths["decoder"], padding="post")}
    y = sp.pad_sequences(dec_out, maxlen=widths["decoder"], padding="post")
    full = [np.arange(i, min(i + batch_size, len(y))) for i in range(0, len(y), batch_size)]
    return _Feed({"x": x, "y": y, "sample_weight": (y > 0).astype("float32"),
                  "batch_size": batch_size, "shuffle": True},
                 len(full), lambda epochs: batch_padding(lengths, full, widths))


def _train(
    strategy: str, words: Any, settings: dict[str, Any], *, epochs: int, seed: int,
    start: int, end: int, verbose: int, validation: Any = None
) -> tuple[Any, dict[str, Any]]:
    """Train a fresh model (the same initial weights every time) on ``words`` for ``epochs``.

    With ``validation`` this is a selection run: the validation PER is recorded after every
    epoch and the weights of the best epoch are restored. Without it, a refit: ``epochs``
    epochs, the last one's weights kept. The learning-rate schedule always spans the
    ``settings["epochs"]`` cap (in this run's steps), so a refit for ``k`` epochs follows the
    schedule the selection run followed to its epoch ``k``.

    Returns the model and what the run measured (padding, steps, times, and the selection).
    """
    import keras

    feed = _feed(strategy, words, batch_size=settings["batch_size"], seed=seed, start=start,
                 end=end)
    keras.utils.set_random_seed(seed)
    model = build_g2p_model(settings, steps_per_epoch=feed.steps_per_epoch, seed=seed)
    label = f"{strategy} ({'selection' if validation is not None else 'refit'})"
    clock, best = _fit(model, epochs=epochs, verbose=verbose, label=label,
                       validation=validation, start=start, end=end, **feed.fit)
    result = {"words": len(words.words), "epochs": epochs, "padding": feed.padding(epochs),
              "steps_per_epoch": feed.steps_per_epoch, **_summary(clock)}
    if best is not None:
        result.update(_selection(best))
    return model, result


def _fit(
    model: Any, *, epochs: int, verbose: int, label: str, validation: Any, start: int,
    end: int, **fit_kwargs: Any
) -> tuple[Any, Any]:
    """Train ``model`` for ``epochs``; with ``validation``, score it after each epoch and keep
    the best epoch.

    Returns the epoch clock (with the total wall and CPU time, validation decoding included)
    and the validation callback (per-epoch validation PER and the epoch restored), or None
    without ``validation``.
    """
    clock = epoch_clock(_epoch_line(label) if verbose == 0 else None)
    callbacks = [clock]  # first, so its epoch times leave the validation decoding out
    best = None
    if validation is not None:
        best = _BestOnValidation(validation, start=start, end=end,
                                 label=label if verbose == 0 else None)
        callbacks.append(best)
    began = time.perf_counter(), time.process_time()
    model.fit(epochs=epochs, verbose=verbose, callbacks=callbacks, **fit_kwargs)
    clock.total_wall = time.perf_counter() - began[0]
    clock.total_cpu = time.process_time() - began[1]
    return clock, best


def _selection(best: Any) -> dict[str, Any]:
    """What the validation callback of :func:`_fit` measured and chose."""
    return {"validation_per": best.per, "selected_epoch": best.best_epoch,
            "validation_seconds": float(sum(best.seconds))}


def _evaluate(model: Any, test: Any, *, start: int, end: int) -> dict[str, Any]:
    import seqprep as sp
    from seqprep.models import greedy_decode

    began = time.perf_counter()
    decoded = greedy_decode(model, test.graphemes, start=start, end=end)
    seconds = time.perf_counter() - began
    rates = sp.error_rates(test.phonemes, decoded)
    examples = [
        {"word": test.words[i],
         "reference": " ".join(test.phones[t] for t in test.phonemes[i]),
         "decoded": " ".join(test.phones[t] if t < len(test.phones) else f"<{t}>"
                             for t in decoded[i])}
        for i in range(min(8, len(test.words)))
    ]
    return {"per": rates["token_error_rate"], "wer": rates["sequence_error_rate"],
            "edits": rates["edits"], "reference_phonemes": rates["reference_tokens"],
            "decode_seconds": seconds, "examples": examples}


def _announce(name: str, result: dict[str, Any]) -> None:
    """One line per finished run, before the report (a full run takes a while)."""
    print(f"[g2p] {name}: PER {result['per']:.4f}, WER {result['wer']:.4f}, padding "
          f"{result['padding']['total']:.1%}, epoch {result['epoch_time']:.1f} s "
          f"({result['epoch_cpu_time']:.1f} s CPU), training {result['train_time']:.0f} s "
          f"({result['train_cpu_time']:.0f} s CPU)", flush=True)


def _summary(clock: Any) -> dict[str, float]:
    later = clock.wall[1:] or clock.wall  # the first epoch also traces the train step
    later_cpu = clock.cpu[1:] or clock.cpu
    return {
        "epoch_time": float(np.median(later)),
        "epoch_cpu_time": float(np.median(later_cpu)),
        "first_epoch_time": float(clock.wall[0]),
        "train_time": float(clock.total_wall),
        "train_cpu_time": float(clock.total_cpu),
    }


_SELECTION_KEYS = ("validation_per", "selected_epoch", "validation_seconds", "epoch_time",
                   "epoch_cpu_time", "train_time", "train_cpu_time")


def _reused_selection(path: str | os.PathLike, settings: dict[str, Any],
                      seed: int) -> dict[str, dict[str, Any]]:
    """The selection runs recorded in an earlier ``g2p_results.json`` with these settings."""
    from pathlib import Path

    try:
        earlier = json.loads(Path(path).read_text(encoding="utf-8"))
        runs = {name: r.get("selection", r) for name, r in earlier["strategies"].items()}
        found = {name: {k: runs[name][k] for k in _SELECTION_KEYS} for name in STRATEGIES}
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
        raise ValueError(
            f"Argument `selection` must be a g2p_results.json written by `run_g2p_demo`. "
            f"Received: selection={str(path)!r}, which cannot be read as one ({error!r}).\n"
            "- Pass the g2p_results.json of an earlier run, or leave `selection` as None to "
            "run the selection."
        ) from error
    if earlier.get("settings") != settings or earlier.get("seed", seed) != seed:
        raise ValueError(
            f"Argument `selection` must come from a run with the same settings and seed. "
            f"Received: selection={str(path)!r} with settings {earlier.get('settings')} and "
            f"seed {earlier.get('seed', 'unrecorded')}; this run has settings {settings} and "
            f"seed {seed}.\n- Run the selection again (leave `selection` as None), or pass "
            "the results file of a run with these settings."
        )
    return {name: {**found[name], "reused_from": str(path)} for name in STRATEGIES}


def run_g2p_demo(
    out: str | os.PathLike = "seqprep-demo",
    *,
    epochs: int | None = None,
    seed: int = 0,
    quick: bool = False,
    verbose: int = 0,
    selection: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train the reference seq2seq on CMUdict with 2-D buckets and pad-to-max; write a report.

    Both strategies follow the same protocol. A **selection run** holds out a seeded 5 % of
    the training words for validation, trains on the rest and records the validation PER
    after every epoch; the epoch count with the lowest one is chosen. A **refit** then trains a
    fresh model (the same initial weights) on all the training words, train and validation,
    for the chosen epoch count. Only when both refits are done are the test words decoded,
    once per model. No test number takes part in any choice.

    Writes ``g2p_report.md`` and ``g2p_results.json`` to ``out``.

    Args:
        out: output folder (created if needed).
        epochs: the epoch cap of the selection runs (the learning-rate schedule spans it);
            default ``G2P_SETTINGS["epochs"]`` (2 with ``quick``).
        seed: seed shared by every run (weights, validation split, bucket plans, shuffling).
        quick: a smoke run for tests: 8 units, the first 200 training words (10 of them for
            validation) and 50 test words.
        verbose: Keras verbosity while training: 0 (default) a compact line per epoch
            instead of progress bars; 1 progress bars; 2 a line per epoch.
        selection: None (default) runs the selection. Or the ``g2p_results.json`` of an
            earlier run with the same settings and seed: its selection (validation curves,
            chosen epochs, times) is reused and only the refits train.

    Returns:
        The results: ``settings``, ``seed``, ``data`` (counts and lengths), ``strategies``
        (one dict per strategy: test ``per`` and ``wer``; ``selected_epoch`` (1-based, the
        refit's epoch count) and ``validation_per`` (one per epoch) of the selection run; the
        refit's ``padding``, ``steps_per_epoch``, epoch and training times; ``selection``, the
        selection run's times; decode time and ``examples``), ``load_average`` and ``files``.

    Raises:
        ValueError: ``epochs`` below 1, or a ``selection`` file that cannot be read or was
            written with other settings or another seed.

    Example:
        >>> import inspect
        >>> list(inspect.signature(run_g2p_demo).parameters)
        ['out', 'epochs', 'seed', 'quick', 'verbose', 'selection']
    """
    import keras

    import seqprep as sp
    from seqprep.datasets import load_cmudict

    settings = _settings(epochs, quick)
    reused = None if selection is None else _reused_selection(selection, settings, seed)
    out = start_run(out)
    words = load_cmudict("train", max_words=settings.get("train_words"))
    kept, held = validation_split(len(words.words), settings["validation_fraction"], seed=seed)
    train, validation = _subset(words, kept), _subset(words, held)
    start, end = len(words.phones), len(words.phones) + 1
    load_before = os.getloadavg()
    common = {"seed": seed, "start": start, "end": end, "verbose": verbose}
    results: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for name in STRATEGIES:
        # 1. Selection: the epoch count, on the validation words only.
        if reused is None:
            _, chosen = _train(name, train, settings, epochs=settings["epochs"],
                               validation=validation, **common)
        else:
            chosen = reused[name]
        # 2. Refit: all the training words, for the epoch count chosen.
        models[name], refit = _train(name, words, settings, epochs=chosen["selected_epoch"],
                                     **common)
        results[name] = {**refit, "selected_epoch": chosen["selected_epoch"],
                         "validation_per": chosen["validation_per"], "selection": chosen}

    # 3. Only now, with both models refitted, is the test split read: once per model.
    test = load_cmudict("test", max_words=settings.get("test_words"))
    for name, model in models.items():
        results[name].update(_evaluate(model, test, start=start, end=end))
        _announce(name, results[name])

    lengths = {"encoder": sp.sequence_lengths(words.graphemes),
               "decoder": sp.sequence_lengths(words.phonemes) + 1}
    summary = {
        "settings": settings,
        "seed": seed,
        "data": {
            "train_words": len(train.words), "validation_words": len(validation.words),
            "refit_words": len(words.words), "test_words": len(test.words),
            "max_letters": int(lengths["encoder"].max()),
            "max_decoder_steps": int(lengths["decoder"].max()),
            "mean_letters": float(lengths["encoder"].mean()),
            "mean_decoder_steps": float(lengths["decoder"].mean()),
            "length_correlation": float(np.corrcoef(lengths["encoder"],
                                                    lengths["decoder"])[0, 1]),
        },
        "backend": keras.backend.backend(),
        "cpu_count": os.cpu_count(),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "strategies": results,
    }
    report, data_file = out / "g2p_report.md", out / "g2p_results.json"
    report.write_text(render_report(summary), encoding="utf-8")
    summary["files"] = [str(report), str(data_file)]
    data_file.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(report.read_text(encoding="utf-8"))
    return summary


def render_report(summary: dict[str, Any]) -> str:
    """The Markdown report of :func:`run_g2p_demo` from its results.

    Args:
        summary: the dict :func:`run_g2p_demo` returns.

    Returns:
        Markdown text.
    """
    settings, data = summary["settings"], summary["data"]
    rows = [
        "| batching | test PER | test WER | epochs (chosen on validation) | validation PER | "
        "padding (enc / dec / total) | steps/epoch | epoch time | epoch CPU time | refit "
        "training (wall / CPU) | selection run (wall / CPU) | decoding |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in summary["strategies"].items():
        pad, chosen = r["padding"], r["selection"]
        reused = " (reused)" if "reused_from" in chosen else ""
        rows.append(
            f"| {name} | {r['per']:.4f} | {r['wer']:.4f} | {r['selected_epoch']} | "
            f"{r['validation_per'][r['selected_epoch'] - 1]:.4f} | {pad['encoder']:.1%} / "
            f"{pad['decoder']:.1%} / {pad['total']:.1%} | {r['steps_per_epoch']} | "
            f"{r['epoch_time']:.1f} s | {r['epoch_cpu_time']:.1f} s | "
            f"{r['train_time']:.0f} s / {r['train_cpu_time']:.0f} s | "
            f"{chosen['train_time']:.0f} s / {chosen['train_cpu_time']:.0f} s{reused} | "
            f"{r['decode_seconds']:.1f} s |"
        )
    two_d, full = summary["strategies"]["2-D buckets"], summary["strategies"]["pad to max"]
    cap = len(two_d["validation_per"])
    curve = ["| validation PER after epoch | " + " | ".join(map(str, range(1, cap + 1))) + " |",
             "|---|" + "---:|" * cap]
    curve += [f"| {name} | " + " | ".join(f"{v:.4f}" for v in r["validation_per"]) + " |"
              for name, r in summary["strategies"].items()]
    examples = ["| word | reference | 2-D buckets model |", "|---|---|---|"]
    examples += [f"| {e['word']} | {e['reference']} | {e['decoded']} |"
                 for e in two_d["examples"]]
    reused_from = two_d["selection"].get("reused_from")
    reuse_note = [] if reused_from is None else [
        "", f"The selection runs were reused from `{reused_from}` (same settings and seed); "
        "only the refits were trained in this run."]
    load = summary["load_average"]
    lines = [
        "# seqprep g2p demo: grapheme-to-phoneme on CMUdict",
        "",
        f"{data['refit_words']} training words, of which {data['validation_words']} "
        f"(a seeded {settings['validation_fraction']:.0%}) are held out for validation in "
        f"the selection run, and {data['test_words']} held-out test words "
        f"(CMU Pronouncing Dictionary subset, stress removed). Words have up to "
        f"{data['max_letters']} letters (mean {data['mean_letters']:.1f}); decoder sequences "
        f"(phonemes + start) up to {data['max_decoder_steps']} steps (mean "
        f"{data['mean_decoder_steps']:.1f}); length correlation "
        f"{data['length_correlation']:.2f}.",
        "",
        f"Model: `reference_seq2seq(cell={settings['cell']!r}, units={settings['units']}, "
        f"bidirectional={settings['bidirectional']}, attention={settings['attention']}, "
        f"embedding_dim={settings['embedding_dim']})`, Adam {settings['learning_rate']:g} "
        f"with cosine decay over the {settings['epochs']}-epoch cap, "
        f"batch {settings['batch_size']}, "
        f"same initial weights for both; greedy decoding. Backend {summary['backend']}, "
        f"{summary['cpu_count']} CPUs.",
        "",
        *rows,
        "",
        "**Protocol**: a *selection run* per strategy trains on the "
        f"{data['train_words']} other words for at most {cap} "
        f"epoch{'s' * (cap != 1)}, greedily decoding the validation words after every "
        "epoch; the epoch count with the lowest validation PER is chosen (the earliest on "
        "ties). A *refit* then trains a fresh model, from the same initial weights, on all "
        f"{data['refit_words']} training words for the chosen epoch count (the learning-rate "
        "schedule is the selection run's, so the refit stops where it did). The test words are "
        "decoded once per model, after both refits; no test number takes part in any choice. "
        "The refit is the training the 10-minute goal counts.",
        *reuse_note,
        "",
        *curve,
        "",
        "*PER*: phoneme error rate, edit distance over reference phonemes (summed over the "
        "test words); *WER*: fraction of test words with any error. *Padding*: padded steps "
        "that are not real, over the batches fed in every epoch (encoder letters, decoder "
        "steps). *Epoch time*: median of epochs 2..N (the first also traces); the CPU time "
        "is the process's own (all threads), which another process's load does not inflate. "
        "*Refit training* is the refit's whole fit; the *selection run*'s includes its "
        "validation decoding after each epoch; *decoding* is the test words'.",
        "",
        f"2-D buckets against pad to max: epoch time "
        f"{two_d['epoch_time'] / full['epoch_time']:.2f}x, CPU time per epoch "
        f"{two_d['epoch_cpu_time'] / full['epoch_cpu_time']:.2f}x, PER "
        f"{two_d['per']:.4f} against {full['per']:.4f}.",
        "",
        f"Load average (1, 5, 15 min) before: {', '.join(f'{v:.1f}' for v in load['before'])}; "
        f"after: {', '.join(f'{v:.1f}' for v in load['after'])}. A load above the CPU count "
        "means other processes shared the machine and the wall times are longer than on a "
        "quiet one.",
        "",
        "## Test words, decoded",
        "",
        *examples,
        "",
    ]
    return "\n".join(lines)
