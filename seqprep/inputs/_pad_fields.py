"""Padding several named fields at once: :func:`pad_sequences` per field, each to its own width.

For whoever pads a whole (small) dataset of encoder–decoder pairs in one go, e.g. to call
``model.evaluate`` or ``model.predict`` on it: the fields and per-field options take the same
form as in :func:`seqprep.bucketed_dataset` (a dict or tuple of fields; an option is one value
for every field or a dict keyed by field), and the defaults are that input stage's (post
padding and truncation, pad value 0, the data's own dtype with floats narrowed to float32), so
the arrays equal one batch of :func:`seqprep.bucketed_dataset` holding every example (under
Keras's default ``floatx``; under ``set_floatx("float64")`` pass ``dtype="float64"``: this
numpy helper never reads Keras's config). numpy only; TensorFlow is not imported.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from seqprep._core.ragged import as_ragged, lengths_of
from seqprep.inputs._padding import Side, pad_sequences
from seqprep.inputs._stage_fields import _check_counts, field_label, pack, per_field, split_fields
from seqprep.inputs._stage_rules import resolve_dtype

__all__ = ["pad_fields"]


def pad_fields(
    x: Mapping[str, Any] | tuple[Any, ...],
    *,
    padding: Side | Mapping[Any, Side] = "post",
    truncating: Side | Mapping[Any, Side] = "post",
    value: Any = 0,
    dtype: DTypeLike | None | Mapping[Any, DTypeLike | None] = None,
    maxlen: int | None | Mapping[Any, int | None] = None,
    pad_to_multiple_of: int | None | Mapping[Any, int | None] = None,
    return_lengths: bool = False,
) -> Any:
    """Pad every field of a dict (or tuple) of sequence collections to its own width.

    Field by field this is :func:`seqprep.pad_sequences` with that field's options: each
    field is padded to its own longest sequence (or its ``maxlen``), so a short target field
    is not widened to the source's width. The fields must hold the same examples (one sequence
    per example each, in the same order). Every option is one value for all fields or a dict
    keyed by field name (by position for a tuple); a field a dict leaves out gets the default.

    The defaults are those of :func:`seqprep.bucketed_dataset`'s fields, not Keras's:
    ``padding="post"`` (what a masked RNN and teacher forcing need), ``truncating="post"``,
    ``value=0`` and ``dtype=None`` (the data's own dtype, floats wider than float32 narrowed
    to float32, the executors' rule under Keras's default ``floatx``). Nothing is ever cast
    with loss (see :func:`seqprep.pad_sequences`).

    Args:
        x: a dict of sequence collections (e.g. ``{"encoder": src, "decoder": dec}``) or a
            tuple of them (read as fields when every item reads as a collection of
            sequences, as in :func:`seqprep.bucketed_dataset`; a dict is never ambiguous).
        padding: ``"pre"`` or ``"post"``, per field or for all.
        truncating: ``"pre"`` or ``"post"``: which end loses steps beyond ``maxlen``.
        value: the padding value (representable in the field's dtype).
        dtype: the output dtype; None keeps the data's (floats narrowed to float32).
        maxlen: the width of the field's time axis; None: its longest sequence. Longer
            sequences are truncated.
        pad_to_multiple_of: round the field's width up to a multiple of this.
        return_lengths: also return each field's lengths after truncation (the real steps
            of each padded row, e.g. for :func:`seqprep.length_mask`).

    Returns:
        The padded arrays in the structure of ``x`` (a dict with the same keys, or a tuple),
        each of shape ``(n, T_field, ...)``; with ``return_lengths``, the pair ``(padded,
        lengths)``, ``lengths`` in the same structure (int64 arrays of shape ``(n,)``).

    Raises:
        TypeError: ``x`` is one collection rather than fields, a dict with non-string keys,
            or an option of the wrong type.
        ValueError: fields of different counts, an option dict naming a field ``x`` does not
            have, or an option :func:`seqprep.pad_sequences` refuses (the message names the
            field).

    Example:
        >>> padded, lengths = pad_fields(
        ...     {"encoder": [[1, 2, 3], [4]], "decoder": [[5], [6, 7]]},
        ...     value={"decoder": -1}, return_lengths=True)
        >>> padded["encoder"].tolist(), padded["decoder"].tolist()
        ([[1, 2, 3], [4, 0, 0]], [[5, -1], [6, 7]])
        >>> lengths["decoder"].tolist()
        [1, 2]
    """
    kind, keys, items = split_fields(x)
    if kind == "single":
        raise TypeError(
            "Argument `x` must be a dict (or tuple) of sequence collections, one per field. "
            f"Received one collection of type {type(x).__name__}\n"
            "- Pass e.g. {'encoder': sources, 'decoder': targets}; to pad one collection, "
            "call `seqprep.pad_sequences`."
        )
    if not isinstance(return_lengths, bool):
        raise TypeError(
            f"Argument `return_lengths` must be True or False. Received: "
            f"return_lengths={return_lengths!r}"
        )
    labels = [field_label("x", kind, key) for key in keys]
    # A generator would be used up by the lengths: read it once.
    items = [list(item) if isinstance(item, Iterator) else item for item in items]
    lengths = [lengths_of(item, label) for item, label in zip(items, labels, strict=True)]
    _check_counts(list(zip(labels, lengths, strict=True)), "x")
    given = {"padding": padding, "truncating": truncating, "value": value, "dtype": dtype,
             "maxlen": maxlen, "pad_to_multiple_of": pad_to_multiple_of}
    options = {name: per_field(name, option, kind, keys) for name, option in given.items()}
    padded, kept = [], []
    for i, (item, label) in enumerate(zip(items, labels, strict=True)):
        field = {name: values[i] for name, values in options.items()}
        if field["dtype"] is None:
            field["dtype"] = resolve_dtype(None, as_ragged(item, label).values.dtype, label)
        try:
            padded.append(pad_sequences(item, **field))
        except (TypeError, ValueError) as error:
            raise type(error)(f"Field `{label}`: {error}") from None
        cap = field["maxlen"]
        kept.append(lengths[i].copy() if cap is None else np.minimum(lengths[i], cap))
    out = pack(kind, keys, padded)
    return (out, pack(kind, keys, kept)) if return_lengths else out
