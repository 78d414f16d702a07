"""Several fields per example for :class:`~seqprep.planning._sampler.BucketSampler`: 2-D
``lengths`` (one column per field) bucketed on a grid of per-field boundaries, per-field
limits (``max_length``, ``overlong``) and per-field options (``field_tokens``,
``field_weights``), and a field's planned lengths read back.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from seqprep._core.checks import (
    check_int,
)
from seqprep.planning._boundaries import (
    batch_capacity,
    token_length_limit,
)
from seqprep.planning._grid import (
    as_grid_boundaries,
    cover_lengths,
    fit_grid,
    grid_cells,
    row_lengths,
    snake_rank,
)


class _FieldsMixin:
    """The several-fields part of :class:`~seqprep.planning._sampler.BucketSampler` (2-D
    ``lengths``)."""

    def _bucket_fields(self, kept_lengths: np.ndarray, boundaries: Any) -> tuple[np.ndarray, int]:
        """2-D buckets (cells of a grid of per-field boundaries): set the tables, return each
        kept example's cell and the cell count."""
        if boundaries is None:
            bounds = self._fit_grid(kept_lengths)
        else:
            bounds = as_grid_boundaries(boundaries, self.field_names)
        for b in bounds:
            b.flags.writeable = False
        self.boundaries = bounds
        shape = tuple(b.size + 1 for b in bounds)
        nb = int(np.prod(shape))
        self.num_buckets = nb
        self.grid_shape = shape
        cells = grid_cells(self.lengths, bounds)
        key = snake_rank(shape)[cells]
        key.flags.writeable = False
        self._tail_key = key  # leftovers sorted along the merge path keep every cell in place
        ids = cells if kept_lengths is self.lengths else grid_cells(kept_lengths, bounds)
        self._counts = np.bincount(ids, minlength=nb).astype(np.int64)
        cover = cover_lengths(ids, kept_lengths, shape)
        cover.flags.writeable = False
        self.bucket_pad_lengths = cover
        self._capacity = batch_capacity(
            row_lengths(cover, self.field_tokens), self.batch_size, self.max_tokens,
            self.quadratic_length,
        )
        # The smallest id type sorts fastest (a radix sort for 8 and 16 bits).
        dtype = np.uint8 if nb <= 255 else np.uint16 if nb <= 65535 else np.int64
        return ids.astype(dtype), nb

    def _fit_grid(self, kept_lengths: np.ndarray) -> tuple[np.ndarray, ...]:
        if not kept_lengths.size:
            return tuple(np.zeros(0, np.int64) for _ in range(kept_lengths.shape[1]))
        return fit_grid(
            kept_lengths, batch_size=self.batch_size, max_tokens=self.max_tokens,
            quadratic_length=self.quadratic_length, field_tokens=self.field_tokens,
            weights=self.field_weights, merge_leftovers=self.merge_leftovers,
        )

    def _limit_fields(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
        """``_limit_lengths`` for several fields: ``max_length`` caps each field, ``max_tokens``
        the row's token length (the sum or the max of its fields)."""
        self.num_truncated_ = 0
        self.length_limit = None
        k = raw.shape[1]
        big = np.iinfo(np.int64).max
        caps = np.full(k, big, np.int64) if self.max_length is None else np.array(
            self.max_length, np.int64)
        fits = None
        if self.max_tokens is not None:
            fits = token_length_limit(self.max_tokens, self.quadratic_length)
            if self.field_tokens == "max":  # a token limit on the longest field caps each one
                caps = np.minimum(caps, fits)
                fits = None
        texts = []
        if self.max_length is not None:
            texts.append(f"`max_length`={self.max_length}")
        if self.max_tokens is not None:
            texts.append(f"`max_tokens`={self.max_tokens} (on the {self.field_tokens} of a "
                         "row's fields)")
        self._limit_text = " or ".join(texts)
        over_field = raw > caps
        if self.overlong == "truncate" and over_field.any():
            limited = np.minimum(raw, caps)
        else:
            limited = raw
        over_row = over_field.any(axis=1) if self.overlong != "truncate" else np.zeros(
            raw.shape[0], bool)
        if fits is not None:
            over_row = over_row | (row_lengths(limited, "sum") > fits)
        if not over_row.any():
            if limited is not raw:
                self.num_truncated_ = int(over_field.any(axis=1).sum())
                self.length_limit = caps.copy()
            return limited, None, 0
        count = int(over_row.sum())
        if self.overlong != "drop":
            pos = int(np.argmax(over_row))
            truncating = self.overlong == "truncate"
            fix = (
                "- The sum of a row's fields cannot be cut without choosing which field to "
                "cut: pass a `max_length` per field whose sum fits the budget, raise "
                "`max_tokens`, or pass overlong='drop'."
                if truncating else
                "- If they may be cut, pass overlong='truncate'; to leave them out, "
                "overlong='drop'; or raise the limit."
            )
            raise ValueError(
                f"{count} example(s) do not fit {self._limit_text}: the first is example "
                f"{pos} with lengths {raw[pos].tolist()}"
                + (" (after truncation to `max_length`)" if truncating else "")
                + f". Received: overlong={self.overlong!r}\n{fix}"
            )
        return raw, np.flatnonzero(~over_row), count

    @property
    def num_fields(self) -> int:
        """Lengths per example the plan is made on: 1, or the columns of 2-D ``lengths``."""
        return 1 if self.lengths.ndim == 1 else int(self.lengths.shape[1])

    def field_lengths(self, field: Any) -> np.ndarray:
        """The planned lengths of one field (by name, or position for array ``lengths``).

        Example:
            >>> from seqprep import BucketSampler
            >>> s = BucketSampler({"src": [3, 5], "tgt": [4, 2]}, batch_size=2)
            >>> s.field_lengths("tgt").tolist(), s.num_fields
            ([4, 2], 2)
        """
        names = self.field_names or (0,)
        if field not in names:
            raise ValueError(
                f"Argument `field` must be one of the sampler's fields {list(names)}. "
                f"Received: field={field!r}\n- Pass a name the sampler was built with."
            )
        if self.lengths.ndim == 1:
            return self.lengths
        return self.lengths[:, names.index(field)]


def _check_one_field(field_tokens: Any, field_weights: Any) -> None:
    """Refuse the options of several fields on a sampler of one length per example."""
    if field_tokens != "sum" or field_weights is not None:
        raise ValueError(
            "Arguments `field_tokens` and `field_weights` apply to several lengths per example "
            f"(2-D `lengths`). Received: field_tokens={field_tokens!r}, "
            f"field_weights={field_weights!r} with 1-D lengths\n"
            "- Pass lengths of shape (examples, fields) or a dict of lengths per field, or drop "
            "these arguments."
        )


def _per_field(name: str, value: Any, names: tuple[Any, ...]) -> list[Any]:
    """One value per field from a scalar, a sequence in field order, or a dict by name."""
    if isinstance(value, dict):
        if set(value) != set(names):
            raise ValueError(
                f"Argument `{name}` as a dict must have one entry per field {list(names)}. "
                f"Received keys {list(value)}\n- Give every field a value under its name."
            )
        return [value[n] for n in names]
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != len(names):
            raise ValueError(
                f"Argument `{name}` must have one entry per field ({len(names)}: "
                f"{list(names)}). Received: {name}={value!r}\n"
                "- Pass one value per field, in the order of the lengths' columns, or a single "
                "value for all."
            )
        return list(value)
    return [value] * len(names)


def _per_field_ints(name: str, value: Any, names: tuple[Any, ...]) -> tuple[int, ...] | None:
    if value is None:
        return None
    return tuple(
        check_int(f"{name}[{n!r}]", v, minimum=1)
        for n, v in zip(names, _per_field(name, value, names), strict=True)
    )


def _per_field_weights(value: Any, names: tuple[Any, ...]) -> tuple[float, ...] | None:
    if value is None:
        return None
    out = []
    for n, v in zip(names, _per_field("field_weights", value, names), strict=True):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < v < float("inf"):
            raise ValueError(
                f"Argument `field_weights` must hold positive finite numbers (the cost of one "
                f"padded step of each field). Received: field_weights[{n!r}]={v!r}\n"
                "- Pass e.g. field_weights={'src': 1.0, 'tgt': 2.0} for a decoder step that "
                "costs twice an encoder step."
            )
        out.append(float(v))
    return tuple(out)
