"""What a batching plan costs: padding, shapes, largest batch, RNN steps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from seqprep._checks import check_lengths


def padding_report(
    lengths: Sequence[int] | np.ndarray,
    batches: Sequence[Sequence[int] | np.ndarray],
    *,
    pad_lengths: Sequence[int] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Summarise the padding cost of ``batches`` of indices into ``lengths``.

    Each batch is padded to its longest sequence, or to ``pad_lengths[i]`` when given (for
    example ``BucketSampler.plan(epoch).pad_lengths``, the ``pad_to="bucket"`` shapes).

    Args:
        lengths: length of every sequence.
        batches: index arrays into ``lengths``, one per batch.
        pad_lengths: optional padded length of each batch; each must be at least the batch's
            longest length.

    Returns:
        A dict with ``padding_fraction`` (padding / padded tokens), ``n_batches``,
        ``n_examples``, ``n_shapes`` (distinct ``(rows, padded_length)`` shapes), ``n_lengths``
        (distinct padded lengths), ``max_batch_tokens`` (largest batch, rows x padded length),
        ``real_tokens``, ``padded_tokens`` and ``steps_cost`` (sum over batches of the padded
        length: what one epoch of an RNN costs in timesteps).

    Raises:
        ValueError: if an index is out of range, or a ``pad_lengths`` entry is shorter than its
            batch's longest sequence.

    Example:
        >>> r = padding_report([1, 2, 3, 4], [[0, 1], [2, 3]])
        >>> r["padded_tokens"], r["real_tokens"], r["steps_cost"], round(r["padding_fraction"], 3)
        (12, 10, 6, 0.167)
    """
    arr = check_lengths(lengths, allow_empty=True)
    try:
        parts = [np.asarray(b, dtype=np.int64).reshape(-1) for b in batches]
    except (TypeError, ValueError):
        raise TypeError(
            f"Argument `batches` must be a list of index arrays (one per batch). Received: "
            f"batches={batches!r:.80}\n- Pass e.g. `sampler.batches(epoch)` or "
            "[[0, 1], [2, 3]]."
        ) from None
    sizes = np.array([p.size for p in parts], dtype=np.int64)
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= arr.size):
        bad = flat[(flat < 0) | (flat >= arr.size)][:5].tolist()
        raise ValueError(
            f"Argument `batches` holds indices outside [0, {arr.size}). Received indices {bad}\n"
            "- Pass batches of indices into `lengths` (as a sampler built on them returns)."
        )
    longest = np.zeros(sizes.size, dtype=np.int64)
    nonempty = sizes > 0
    if flat.size:
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])[nonempty]
        longest[nonempty] = np.maximum.reduceat(arr[flat], starts)
    if pad_lengths is None:
        padded_to = longest
    else:
        padded_to = np.asarray(pad_lengths, dtype=np.int64).reshape(-1)
        if padded_to.size != sizes.size:
            raise ValueError(
                f"Argument `pad_lengths` must have one entry per batch ({sizes.size}). "
                f"Received {padded_to.size} entries"
            )
        short = np.flatnonzero(padded_to < longest)
        if short.size:
            i = int(short[0])
            raise ValueError(
                f"Argument `pad_lengths` is shorter than the longest sequence of batch {i}: "
                f"pad_lengths[{i}]={int(padded_to[i])} < {int(longest[i])}\n"
                "- Pass each batch's padded length (at least its longest member), e.g. "
                "`sampler.plan(epoch).pad_lengths` with that plan's batches."
            )
    batch_tokens = sizes * padded_to
    padded = int(batch_tokens.sum())
    real = int(arr[flat].sum()) if flat.size else 0
    shapes = {(int(s), int(t)) for s, t in zip(sizes.tolist(), padded_to.tolist(), strict=True)}
    return {
        "padding_fraction": 0.0 if padded == 0 else 1.0 - real / padded,
        "n_batches": int(sizes.size),
        "n_examples": int(flat.size),
        "n_shapes": len(shapes),
        "n_lengths": len({t for _, t in shapes}),
        "max_batch_tokens": int(batch_tokens.max()) if sizes.size else 0,
        "real_tokens": real,
        "padded_tokens": padded,
        "steps_cost": int(padded_to.sum()),
    }
