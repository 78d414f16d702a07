"""Numpy helpers for encoder–decoder data: teacher forcing and edit-distance error rates.

:func:`teacher_forcing` turns target token sequences into the decoder's inputs (a start token,
then the targets) and outputs (the targets, then an end token), shifted by one step, so that
a decoder trained on them predicts token ``t + 1`` from tokens ``<= t``.
:func:`edit_distance` and :func:`error_rates` score decoded sequences against references
(the phoneme / character / word error rates of speech and g2p work).

This module is numpy only: it never imports TensorFlow or Keras.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from seqprep._core.ragged import as_ragged

__all__ = ["edit_distance", "error_rates", "teacher_forcing"]


def _check_token(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Argument `{name}` must be an integer token id. Received: {name}={value!r} "
            f"of type {type(value).__name__}\n"
            f"- Pass an id outside your targets' vocabulary, e.g. {name}=vocab_size."
        )
    if value < 0:
        raise ValueError(
            f"Argument `{name}` must be a non-negative token id. Received: {name}={value}\n"
            f"- Pass an id outside your targets' vocabulary, e.g. {name}=vocab_size."
        )
    return int(value)


def _token_values(targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(values, offsets)`` of 1-D integer token sequences, refusing anything else."""
    ragged = as_ragged(targets, "targets")
    values = ragged.values
    if values.ndim != 1:
        raise ValueError(
            "Argument `targets` must hold 1-D sequences of token ids. Received steps of "
            f"shape {values.shape[1:]}\n"
            "- If each step is a one-hot vector, pass `[seq.argmax(-1) for seq in targets]`."
        )
    if values.size == 0:
        values = values.astype(np.int64)  # an empty list reads as float
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(
            "Argument `targets` must hold integer token ids. Received values of dtype "
            f"{values.dtype}\n"
            "- If your ids are stored as floats, convert them: `[s.astype('int32') for s in "
            "targets]` (after checking they are whole numbers)."
        )
    return values, ragged.offsets


def teacher_forcing(
    targets: Any, *, start: int, end: int, pad: int | None = 0,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Decoder inputs and outputs for teacher forcing: ``[start] + t`` and ``t + [end]``.

    A decoder trained with teacher forcing reads the true previous token at every step and
    predicts the next one. For each target sequence ``t`` of length ``L`` this returns the
    decoder input ``[start, t[0], ..., t[L-1]]`` and the decoder output
    ``[t[0], ..., t[L-1], end]``, both of length ``L + 1``: the output at step ``i`` is the
    input at step ``i + 1``, and the last output teaches the model to stop. Feed the inputs
    as the model's ``"decoder"`` field and the outputs as its per-step targets (post-padded,
    so masks and weights follow the real steps).

    The caller's sequences are never modified. The result keeps the targets' integer dtype
    when ``start`` and ``end`` fit in it (else int64).

    Args:
        targets: a sequence collection of 1-D integer token sequences (list of arrays or
            lists, ``tf.RaggedTensor``, pandas Series, ...). An empty sequence gives
            ``[start]`` and ``[end]``.
        start: the start-of-sequence id; must not occur in ``targets``.
        end: the end-of-sequence id; must differ from ``start`` and not occur in ``targets``.
        pad: the padding id your model masks (0 for ``Embedding(mask_zero=True)``): ``start``
            and ``end`` must differ from it and ``targets`` must not contain it, since a
            padding id inside a sequence would be masked away. None skips that check.

    Returns:
        ``(decoder_inputs, decoder_outputs)``: two lists of 1-D arrays, one per target.

    Raises:
        TypeError: ``start``/``end``/``pad`` are not integers, or ``targets`` hold no
            integer ids.
        ValueError: ``start == end``, either equals ``pad``, or a token among ``start``,
            ``end``, ``pad`` occurs in ``targets`` (the message says where).

    Example:
        >>> from seqprep import teacher_forcing
        >>> dec_in, dec_out = teacher_forcing([[5, 6, 7], [8]], start=1, end=2)
        >>> [s.tolist() for s in dec_in]
        [[1, 5, 6, 7], [1, 8]]
        >>> [s.tolist() for s in dec_out]
        [[5, 6, 7, 2], [8, 2]]
    """
    start = _check_token("start", start)
    end = _check_token("end", end)
    if pad is not None:
        pad = _check_token("pad", pad)
    if start == end:
        raise ValueError(
            f"Arguments `start` and `end` must be different tokens. Received: start={start}, "
            f"end={end}\n- The model could not tell where a sequence begins from where it "
            "ends: pass two ids outside your vocabulary, e.g. start=vocab_size, "
            "end=vocab_size + 1."
        )
    if pad is not None and pad in (start, end):
        which = "start" if pad == start else "end"
        raise ValueError(
            f"Argument `{which}` must differ from the padding id `pad`={pad}. Received: "
            f"{which}={pad}\n- A padding id is masked away by the model: pass another id "
            f"for `{which}` (or `pad=None` if your model does not mask)."
        )
    values, offsets = _token_values(targets)
    for name, token in (("start", start), ("end", end), ("pad", pad)):
        if token is None:
            continue
        hits = np.flatnonzero(values == token)
        if hits.size:
            row = int(np.searchsorted(offsets, hits[0], side="right") - 1)
            fix = ("- Targets must not contain the padding id (it would be masked as padding): "
                   "shift your ids so that real tokens start at 1, or pass the right `pad`."
                   if name == "pad" else
                   f"- Pass the raw targets (without {name} tokens), or an id for `{name}` "
                   "outside their vocabulary.")
            raise ValueError(
                f"Argument `targets` already contains the `{name}` token {token}: "
                f"{hits.size} time(s), first in sequence {row} at step "
                f"{int(hits[0] - offsets[row])}.\n{fix}"
            )
    dtype = values.dtype
    for token in (start, end):
        if token > np.iinfo(dtype).max:
            dtype = np.dtype(np.int64)
    n = len(offsets) - 1
    if n == 0:
        return [], []
    # One flat buffer per result: each row is its L targets plus one token, at row starts
    # offsets[i] + i; the targets go to the remaining positions.
    new_offsets = offsets + np.arange(n + 1)
    body = np.ones(len(values) + n, dtype=bool)
    inputs = np.empty(len(values) + n, dtype=dtype)
    outputs = np.empty_like(inputs)
    body[new_offsets[:-1]] = False  # the start slot of each input row
    inputs[~body] = start
    inputs[body] = values
    body[:] = True
    body[new_offsets[1:] - 1] = False  # the end slot of each output row
    outputs[~body] = end
    outputs[body] = values
    return (np.split(inputs, new_offsets[1:-1]), np.split(outputs, new_offsets[1:-1]))


def edit_distance(reference: Sequence[Any], hypothesis: Sequence[Any]) -> int:
    """The Levenshtein distance: fewest insertions, deletions and substitutions between two.

    Args:
        reference: a sequence of comparable tokens (list, 1-D array, string).
        hypothesis: another one.

    Returns:
        The distance, an int between ``|len(reference) - len(hypothesis)|`` and
        ``max(len(reference), len(hypothesis))``.

    Example:
        >>> edit_distance("kitten", "sitting")
        3
        >>> edit_distance([1, 2, 3], [1, 3])
        1
    """
    ref = list(np.asarray(reference).reshape(-1)) if isinstance(reference, np.ndarray) \
        else list(reference)
    hyp = list(np.asarray(hypothesis).reshape(-1)) if isinstance(hypothesis, np.ndarray) \
        else list(hypothesis)
    if len(ref) < len(hyp):
        ref, hyp = hyp, ref
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def error_rates(references: Sequence[Any], hypotheses: Sequence[Any]) -> dict[str, float]:
    """Token and sequence error rates of decoded sequences against their references.

    The token error rate (phoneme error rate for g2p, character or word error rate in speech
    work) is the summed :func:`edit_distance` divided by the summed reference length; the
    sequence error rate (word error rate for g2p) is the fraction of hypotheses that differ
    from their reference at all.

    Args:
        references: the true token sequences.
        hypotheses: the decoded ones, in the same order and of the same count.

    Returns:
        ``{"token_error_rate", "sequence_error_rate", "edits", "reference_tokens", "n"}``.

    Raises:
        ValueError: different counts, or no reference token at all.

    Example:
        >>> rates = error_rates([[1, 2, 3], [4, 5]], [[1, 2, 3], [4]])
        >>> rates["token_error_rate"], rates["sequence_error_rate"], rates["edits"]
        (0.2, 0.5, 1)
    """
    references, hypotheses = list(references), list(hypotheses)
    if len(references) != len(hypotheses):
        raise ValueError(
            "Arguments `references` and `hypotheses` must have the same count. Received: "
            f"{len(references)} references and {len(hypotheses)} hypotheses\n"
            "- Pass one hypothesis per reference, in the same order."
        )
    edits = [edit_distance(r, h) for r, h in zip(references, hypotheses, strict=True)]
    total = sum(len(r) for r in references)
    if total == 0:
        raise ValueError(
            "Argument `references` holds no token, so an error rate is undefined.\n"
            "- Pass non-empty reference sequences."
        )
    return {
        "token_error_rate": float(sum(edits) / total),
        "sequence_error_rate": float(sum(e > 0 for e in edits) / len(edits)),
        "edits": int(sum(edits)),
        "reference_tokens": int(total),
        "n": len(edits),
    }
