"""``seqprep demo --task g2p``: an encoder–decoder on real data, 2-D buckets against pad-to-max.

The bundled CMU Pronouncing Dictionary subset (:func:`seqprep.datasets.load_cmudict`: 38,000
training words, 2,000 held out) is learnt grapheme-to-phoneme by
:func:`seqprep.models.reference_seq2seq`, from the same initial weights, for the same epochs
and learning-rate schedule, fed two ways:

1. **2-D buckets**: a :class:`seqprep.BucketSampler` planned jointly on the source (letters)
   and decoder (phonemes + 1) lengths, through :func:`seqprep.bucketed_dataset` with the dict
   ``{"encoder", "decoder"}`` of ragged fields (each padded to its own width per batch);
2. **pad to max**: every word and every pronunciation padded to the corpus maximum, shuffled
   batches of the same size (what the Keras seq2seq examples do).

Decoder inputs and targets come from :func:`seqprep.teacher_forcing`; both runs weigh the
loss by the real decoder steps only. Each trained model decodes the 2,000 test words with
:func:`seqprep.models.greedy_decode`, scored by the phoneme error rate (edit distance over
reference length) and the word error rate (words with any error). The report also gives the
padding of the batches fed (encoder and decoder steps), the epoch times (wall clock and the
process's CPU time: on a shared machine the wall time depends on the other load) and the load
average.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from seqprep.tools._demo_kit import EpochLine, epoch_clock, start_run

__all__ = ["G2P_SETTINGS", "run_g2p_demo"]

#: The documented reference settings for the g2p demo (picked from a handful of runs, see
#: docs/demo.md for which and how they were scored).
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
}

_QUICK = {"units": 8, "embedding_dim": 8, "epochs": 1, "train_words": 200, "test_words": 50}
STRATEGIES = ("2-D buckets", "pad to max")


def _epoch_line(label: str) -> EpochLine:
    """One compact line per epoch, in place of Keras's progress bars (``verbose=0``)."""

    def line(done: int, total: int, logs: dict[str, Any], seconds: float) -> str:
        loss = logs.get("loss")
        shown = "" if loss is None else f"loss {float(loss):.4f}  "
        return f"[g2p] {label}: epoch {done}/{total}  {shown}({seconds:.1f} s)"

    return line


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


def _fit(
    model: Any, data: Any, *, epochs: int, verbose: int, label: str, **fit_kwargs: Any
) -> Any:
    clock = epoch_clock(_epoch_line(label) if verbose == 0 else None)
    start = time.perf_counter(), time.process_time()
    model.fit(data, epochs=epochs, verbose=verbose, callbacks=[clock], **fit_kwargs)
    clock.total_wall = time.perf_counter() - start[0]
    clock.total_cpu = time.process_time() - start[1]
    return clock


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


def run_g2p_demo(
    out: str | os.PathLike = "seqprep-demo",
    *,
    epochs: int | None = None,
    seed: int = 0,
    quick: bool = False,
    verbose: int = 0,
) -> dict[str, Any]:
    """Train the reference seq2seq on CMUdict with 2-D buckets and pad-to-max; write a report.

    Writes ``g2p_report.md`` and ``g2p_results.json`` to ``out``.

    Args:
        out: output folder (created if needed).
        epochs: epochs per strategy; default ``G2P_SETTINGS["epochs"]`` (1 with ``quick``).
        seed: seed shared by both runs (weights, bucket plans, shuffling).
        quick: a smoke run for tests: 8 units, the first 200 training and 50 test words.
        verbose: Keras verbosity while training: 0 (default) a compact line per epoch
            instead of progress bars; 1 progress bars; 2 a line per epoch.

    Returns:
        The results: ``settings``, ``data`` (counts and lengths), ``strategies`` (one dict per
        strategy: ``per``, ``wer``, ``padding``, ``steps_per_epoch``, epoch and decode times,
        ``examples``), ``load_average`` and ``files``.

    Raises:
        ValueError: ``epochs`` below 1.

    Example:
        >>> import inspect
        >>> list(inspect.signature(run_g2p_demo).parameters)
        ['out', 'epochs', 'seed', 'quick', 'verbose']
    """
    import keras

    import seqprep as sp
    from seqprep.datasets import load_cmudict

    settings = _settings(epochs, quick)
    out = start_run(out)
    train = load_cmudict("train", max_words=settings.get("train_words"))
    test = load_cmudict("test", max_words=settings.get("test_words"))
    start, end = len(train.phones), len(train.phones) + 1
    dec_in, dec_out = sp.teacher_forcing(train.phonemes, start=start, end=end)
    lengths = {"encoder": sp.sequence_lengths(train.graphemes),
               "decoder": sp.sequence_lengths(dec_in)}
    load_before = os.getloadavg()
    batch_size = settings["batch_size"]
    results: dict[str, Any] = {}

    # 1. 2-D buckets: one plan on both lengths; a fresh order every epoch.
    sampler = sp.BucketSampler(lengths, batch_size=batch_size, seed=seed)
    dataset = sp.bucketed_dataset({"encoder": train.graphemes, "decoder": dec_in}, dec_out,
                                  sampler=sampler, sample_weight="timestep")
    keras.utils.set_random_seed(seed)
    model = build_g2p_model(settings, steps_per_epoch=len(sampler), seed=seed)
    clock = _fit(model, dataset, epochs=settings["epochs"], verbose=verbose,
                 label="2-D buckets")
    fed = [b for e in range(settings["epochs"]) for b in sampler.batches(e)]
    results["2-D buckets"] = {
        "padding": batch_padding(lengths, fed), "steps_per_epoch": len(sampler),
        **_summary(clock), **_evaluate(model, test, start=start, end=end),
    }
    _announce("2-D buckets", results["2-D buckets"])

    # 2. Pad to max: the Keras examples' way.
    widths = {k: int(v.max()) for k, v in lengths.items()}
    x = {"encoder": sp.pad_sequences(train.graphemes, maxlen=widths["encoder"], padding="post"),
         "decoder": sp.pad_sequences(dec_in, maxlen=widths["decoder"], padding="post")}
    y = sp.pad_sequences(dec_out, maxlen=widths["decoder"], padding="post")
    weights = (y > 0).astype("float32")
    keras.utils.set_random_seed(seed)
    steps = -(-len(y) // batch_size)
    model = build_g2p_model(settings, steps_per_epoch=steps, seed=seed)
    clock = _fit(model, x, y=y, sample_weight=weights, batch_size=batch_size, shuffle=True,
                 epochs=settings["epochs"], verbose=verbose, label="pad to max")
    full = [np.arange(i, min(i + batch_size, len(y))) for i in range(0, len(y), batch_size)]
    results["pad to max"] = {
        "padding": batch_padding(lengths, full, widths), "steps_per_epoch": steps,
        **_summary(clock), **_evaluate(model, test, start=start, end=end),
    }
    _announce("pad to max", results["pad to max"])

    summary = {
        "settings": settings,
        "data": {
            "train_words": len(train.words), "test_words": len(test.words),
            "max_letters": widths["encoder"], "max_decoder_steps": widths["decoder"],
            "mean_letters": float(lengths["encoder"].mean()),
            "mean_decoder_steps": float(lengths["decoder"].mean()),
            "length_correlation": float(np.corrcoef(lengths["encoder"],
                                                    lengths["decoder"])[0, 1])
            if len(train.words) > 1 else float("nan"),
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
        "| batching | PER | WER | padding (enc / dec / total) | steps/epoch | epoch time "
        "| epoch CPU time | training (wall / CPU) | decoding |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in summary["strategies"].items():
        pad = r["padding"]
        rows.append(
            f"| {name} | {r['per']:.4f} | {r['wer']:.4f} | {pad['encoder']:.1%} / "
            f"{pad['decoder']:.1%} / {pad['total']:.1%} | {r['steps_per_epoch']} | "
            f"{r['epoch_time']:.1f} s | {r['epoch_cpu_time']:.1f} s | "
            f"{r['train_time']:.0f} s / {r['train_cpu_time']:.0f} s | "
            f"{r['decode_seconds']:.1f} s |"
        )
    two_d, full = summary["strategies"]["2-D buckets"], summary["strategies"]["pad to max"]
    examples = ["| word | reference | 2-D buckets model |", "|---|---|---|"]
    examples += [f"| {e['word']} | {e['reference']} | {e['decoded']} |"
                 for e in two_d["examples"]]
    load = summary["load_average"]
    lines = [
        "# seqprep g2p demo: grapheme-to-phoneme on CMUdict",
        "",
        f"{data['train_words']} training words, {data['test_words']} held-out test words "
        f"(CMU Pronouncing Dictionary subset, stress removed). Words have up to "
        f"{data['max_letters']} letters (mean {data['mean_letters']:.1f}); decoder sequences "
        f"(phonemes + start) up to {data['max_decoder_steps']} steps (mean "
        f"{data['mean_decoder_steps']:.1f}); length correlation "
        f"{data['length_correlation']:.2f}.",
        "",
        f"Model: `reference_seq2seq(cell={settings['cell']!r}, units={settings['units']}, "
        f"bidirectional={settings['bidirectional']}, attention={settings['attention']}, "
        f"embedding_dim={settings['embedding_dim']})`, Adam {settings['learning_rate']:g} "
        f"with cosine decay, {settings['epochs']} epoch{'s' * (settings['epochs'] != 1)}, "
        f"batch {settings['batch_size']}, "
        f"same initial weights for both; greedy decoding. Backend {summary['backend']}, "
        f"{summary['cpu_count']} CPUs.",
        "",
        *rows,
        "",
        "*PER*: phoneme error rate, edit distance over reference phonemes (summed over the "
        "test words); *WER*: fraction of test words with any error. *Padding*: padded steps "
        "that are not real, over the batches fed in every epoch (encoder letters, decoder "
        "steps). *Epoch time*: median of epochs 2..N (the first also traces); the CPU time "
        "is the process's own (all threads), which another process's load does not inflate.",
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
