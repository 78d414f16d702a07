"""BucketSampler: a deterministic, shardable, resumable plan of length-bucketed batches.

How an epoch is planned (all vectorised; the only Python loops run over buckets or batches):

1. Sequences are put in buckets once, at construction (``boundaries`` are half-open:
   bucket ``i`` holds ``[boundaries[i-1], boundaries[i])``), and their indices stored sorted by
   bucket.
2. Each epoch shuffles every bucket's indices with ``np.random.default_rng([seed, epoch])`` and
   cuts each bucket into full batches of its capacity (``batch_size`` rows, or
   ``max_tokens // longest length in the bucket`` rows; with ``quadratic_length`` a row of
   length ``L`` costs ``L + L**2 / quadratic_length`` tokens).
3. The partial leftovers of all buckets are packed together in bucket order, so a leftover is
   merged with its neighbours' leftovers instead of costing a batch of its own. With
   ``batch_size`` this gives exactly ``ceil(n / batch_size)`` batches, the fewest possible.
4. Batches are grouped ``num_shards`` at a time, each group from one bucket (leftover groups take
   the largest bucket among them, which covers every member), and the groups are shuffled. Shard
   ``k`` takes the ``k``-th batch of every group: every shard has the same number of batches and
   at each step all shards pad to the same bucket.

The *structure* of a plan (how many batches of which sizes and buckets) depends only on the
bucket counts, so it is computed once; an epoch only draws the random order.

Examples of several fields (2-D ``lengths``) follow the same steps on the cells of a grid of
per-field boundaries (``planning/_grid.py``): a cell is a bucket, leftovers are merged along a
path through neighbouring cells, and a batch of several cells is labelled with their cover
(the largest band of each field), which takes the role of "the largest bucket" above.

The class is in three files: here, construction and the plan of an epoch; the several-fields
part (2-D buckets, per-field limits and options) in :mod:`._sampler_fields`; the fingerprint,
pickling and reports in :mod:`._sampler_state`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from seqprep._core.checks import (
    check_bool,
    check_choice,
    check_field_lengths,
    check_int,
    check_one_of,
    check_shard,
    report_dropped,
    warn_empty_sequences,
)
from seqprep._core.options import options_for, takes_options
from seqprep.planning._boundaries import (
    Bucketer,
    as_boundaries,
    batch_capacity,
    check_quadratic_length,
    length_histogram,
    token_length_limit,
)
from seqprep.planning._grid import (
    cover_label,
    leftover_buckets,
    merge_leftovers,
)
from seqprep.planning._options import PLAN_READS, PlanOptions
from seqprep.planning._plan import BatchPlan
from seqprep.planning._resumable import ResumableSampler
from seqprep.planning._sampler_fields import (
    _check_one_field,
    _FieldsMixin,
    _per_field_ints,
    _per_field_weights,
)
from seqprep.planning._sampler_state import _StateMixin

Overlong = Literal["error", "truncate", "drop"]
BATCH_FIX = (
    "Use `batch_size` for a fixed number of rows per batch, `max_tokens` for a budget of "
    "padded tokens (rows x longest length) per batch."
)
# The Bucketer's cost model does not see that leftover batches straddle buckets; aiming at half
# the Bucketer's default keeps the realised padding within about 0.02 of fully sorted batching.
DEFAULT_TARGET_PADDING = 0.01


class BucketSampler(_FieldsMixin, _StateMixin, ResumableSampler):
    """Plan epochs of length-bucketed batches of indices: seeded, shardable, resumable.

    **Several lengths per example** (encoder–decoder pairs: a source and a target of its own
    length): pass ``lengths`` of shape ``(n, fields)`` or a dict of per-field length arrays.
    Each field then has its own boundaries and a bucket is a cell of the grid they draw
    (numbered row-major, ``grid_shape`` bands per field); by default the boundaries are planned
    jointly to minimise the padded steps of a recurrent encoder–decoder, a batch costing
    ``rows x (longest source + longest target)`` (weighted by ``field_weights``; see
    ``docs/bucketing.md``). Batches are still drawn afresh from ``(seed, epoch)``; partial
    batches of neighbouring cells are merged into a batch labelled with their *cover* cell
    (the largest band of each field among them), whose ``bucket_pad_lengths`` cover every
    member. ``plan(epoch).field_pad_lengths`` holds each field's ``pad_to="bucket"`` width and
    ``plan(epoch).field_widths(pad_to, sampler.lengths)`` the width of every field under any
    ``pad_to``.

    Args:
        lengths: length of every sequence (not modified); or, for examples of several fields,
            an ``(n, fields)`` array or a tuple of equally long per-field length arrays
            (fields named ``0, 1, ...``), or a dict of them (fields named by its keys).
        boundaries: bucket boundaries (ascending ints), or a fitted :class:`Bucketer`. Default:
            an ``"optimal"`` Bucketer fitted on ``lengths`` with ``target_padding=0.01`` under
            this sampler's ``batch_size`` / ``max_tokens``. For several fields, one such list
            per field (a list in field order, or a dict by name); default: planned jointly.
        batch_size: rows per batch. Exactly one of this and ``max_tokens``.
        max_tokens: budget per batch: rows x longest length <= ``max_tokens``. For several
            fields a row's length is the sum of its fields' widths (or their max, see
            ``field_tokens``); see also ``quadratic_length`` (both in ``options``).
        shuffle: shuffle inside buckets and the batch order, from ``(seed, epoch)`` alone. When
            False, batches follow index order inside buckets and run from short to long.
        seed: non-negative seed.
        drop_remainder: leave out the last partial batch and the batches that do not fill a
            group of ``num_shards``; counted in ``num_dropped_``. When False nothing is dropped:
            a final incomplete group is re-split into ``num_shards`` smaller batches.
            Whatever ``drop_remainder`` or ``overlong="drop"`` leaves out is reported in a
            ``UserWarning`` with the counts; leaving out every sequence is an error.
        num_shards: number of data-parallel replicas.
        shard_index: this replica, in ``[0, num_shards)``.
        overlong: what to do with sequences longer than ``max_length`` or ``max_tokens``:
            ``"error"``, ``"truncate"`` (plan them at the limit; the pipeline must cut them, see
            ``length_limit``) or ``"drop"`` (never batched; counted in ``num_dropped_``).
        max_length: longest sequence allowed, or None. For several fields: one int for every
            field, or one per field (a list in field order, or a dict by name).
        options: a :class:`seqprep.PlanOptions` of the rarely set cost-model knobs (each
            described there): ``merge_leftovers`` (pack the partial last batches of
            neighbouring buckets together, the default; False with ``pad_to="bucket"`` keeps
            one bucket per batch), ``quadratic_length`` (with ``max_tokens``: a row of length
            ``L`` costs ``L + L**2 / quadratic_length`` tokens), ``field_tokens`` and
            ``field_weights`` (several fields: how a budget counts a row, and what a padded
            step of each field costs the boundary planner), ``compile_cost`` and
            ``train_epochs`` (the compile budget that sizes ``pad_to="auto"``'s width grid on
            JAX).

    Attributes:
        lengths: read-only int64 lengths as planned (after truncation); ``(n, fields)`` for
            several fields.
        boundaries: read-only int64 boundaries; for several fields a tuple of them, one per
            field.
        bucket_pad_lengths: int64 padded length of each bucket for ``pad_to="bucket"``: the
            longest length in that bucket (never more than ``boundaries[i] - 1``). For several
            fields ``(cells, fields)``: the longest of each field in that cell or any cell
            below it on every field (so a merged batch labelled with a cell fits it too).
        num_buckets: ``len(boundaries) + 1`` (for several fields, the cells of the grid).
        grid_shape: bands per field (``(num_buckets,)`` for one field).
        num_fields: 1, or the number of fields.
        field_names: None for one field; the dict's keys, or ``0 .. fields-1`` for an array.
        length_limit: the length overlong sequences are truncated to, or None (for several
            fields, an int64 array of each field's limit).
        num_truncated_: sequences truncated.
        num_dropped_: examples in no batch of an epoch (on any shard); the same every epoch.

    Raises:
        ValueError: bad lengths, both or neither of ``batch_size`` / ``max_tokens``,
            ``shard_index >= num_shards``, an overlong sequence with ``overlong="error"``, or too
            few examples to give every shard a batch with ``drop_remainder=False``, or
            ``drop_remainder`` / ``overlong="drop"`` leaving no sequence in any batch.

    Example:
        >>> s = BucketSampler([5, 1, 2, 6, 2, 7, 1], boundaries=[4], batch_size=2, seed=0)
        >>> len(s)
        4
        >>> sorted(int(i) for b in s.batches(0) for i in b)
        [0, 1, 2, 3, 4, 5, 6]
        >>> s.batches(0)[0].tolist() == s.batches(0)[0].tolist()
        True

        Source and target lengths of encoder–decoder pairs, one bucket per grid cell:

        >>> pairs = {"src": [3, 12, 4, 11, 3, 12], "tgt": [4, 14, 5, 3, 5, 15]}
        >>> s = BucketSampler(pairs, boundaries={"src": [8], "tgt": [10]}, batch_size=2,
        ...                   shuffle=False)
        >>> p = s.plan(0)
        >>> [b.tolist() for b in p], p.field_pad_lengths.tolist()
        ([[0, 2], [4, 3], [1, 5]], [[4, 5], [11, 5], [12, 15]])
    """

    _RESUME_OPTIONS = (
        "the same lengths, boundaries, batch_size/max_tokens, quadratic_length, shuffle, "
        "drop_remainder, overlong, max_length and merge_leftovers"
    )

    @takes_options(kind="PlanOptions")
    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        *,
        boundaries: Sequence[int] | np.ndarray | Bucketer | None = None,
        batch_size: int | None = None,
        max_tokens: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_remainder: bool = False,
        num_shards: int = 1,
        shard_index: int = 0,
        overlong: Overlong = "error",
        max_length: int | None = None,
        options: PlanOptions | None = None,
    ) -> None:
        opts = options_for(options, "BucketSampler", reads=PLAN_READS, kind=PlanOptions)
        merge_leftovers, quadratic_length = opts.merge_leftovers, opts.quadratic_length
        field_tokens, field_weights = opts.field_tokens, opts.field_weights
        raw, names = check_field_lengths(lengths)
        check_one_of(BATCH_FIX, batch_size=batch_size, max_tokens=max_tokens)
        self.batch_size = check_int("batch_size", batch_size, minimum=1, allow_none=True)
        self.max_tokens = check_int("max_tokens", max_tokens, minimum=1, allow_none=True)
        self.quadratic_length = check_quadratic_length(quadratic_length, self.max_tokens)
        self.shuffle = check_bool("shuffle", shuffle)
        self.drop_remainder = check_bool("drop_remainder", drop_remainder)
        self.seed = check_int("seed", seed, minimum=0)
        self.num_shards, self.shard_index = check_shard(num_shards, shard_index)
        self.overlong = check_choice("overlong", overlong, ("error", "truncate", "drop"))
        self.field_names = names
        if raw.ndim == 1:
            self.max_length = check_int("max_length", max_length, minimum=1, allow_none=True)
            _check_one_field(field_tokens, field_weights)
            self.field_tokens, self.field_weights = "sum", None
        else:
            self.max_length = _per_field_ints("max_length", max_length, names)
            self.field_tokens = check_choice("field_tokens", field_tokens, ("sum", "max"))
            if self.field_tokens != "sum" and self.max_tokens is None:
                raise ValueError(
                    "Argument `field_tokens` only changes how a `max_tokens` budget counts a "
                    f"row. Received: field_tokens={field_tokens!r}, "
                    f"batch_size={self.batch_size}\n- Pass max_tokens=<budget>, or drop "
                    "`field_tokens`."
                )
            self.field_weights = _per_field_weights(field_weights, names)
        self.merge_leftovers = check_bool("merge_leftovers", merge_leftovers)
        self.compile_cost, self.train_epochs = opts.compile_cost, opts.train_epochs
        self._setup(raw, boundaries)
        self._start_at(0, 0)
        self._report_dropped()
        warn_empty_sequences(raw, "lengths")

    def _report_dropped(self) -> None:
        """Say how much of every epoch is left out, and why; refuse to plan an empty epoch."""
        n, over = int(self._raw.shape[0]), int(self._num_overlong)
        if not self.num_dropped_:
            return
        why, keep = [], []
        if over:
            why.append(f"{over} longer than the limit {self._limit_text} (overlong='drop')")
            keep.append("pass overlong='truncate' or raise the limit")
        if self.num_dropped_ > over:
            why.append(
                f"{self.num_dropped_ - over} in {self._dropped_batches} partial batch(es) "
                "(drop_remainder=True)"
            )
            keep.append("pass drop_remainder=False (the default: nothing is dropped)")
        report_dropped(
            self.num_dropped_, n, why=" and ".join(why),
            keep="To keep them, " + "; ".join(keep) + ".",
            argument="overlong" if over >= n else "drop_remainder",
            received=f"overlong={self.overlong!r}, drop_remainder={self.drop_remainder}, "
            f"{self._size_text}", stacklevel=4,
        )

    # ------------------------------------------------------------------ construction

    def _setup(self, raw: np.ndarray, boundaries: Any) -> None:
        self._raw = raw
        lengths, kept, num_overlong = self._limit_lengths(raw)
        self._num_overlong = num_overlong
        self._size_text = (
            f"batch_size={self.batch_size}" if self.batch_size is not None
            else f"max_tokens={self.max_tokens}"
        )
        lengths.flags.writeable = False
        self.lengths = lengths
        kept_lengths = lengths if kept is None else lengths[kept]
        if lengths.ndim == 2:
            ids, nb = self._bucket_fields(kept_lengths, boundaries)
        else:
            ids, nb = self._bucket_one_field(kept_lengths, boundaries)
        order = np.argsort(ids, kind="stable")
        del ids
        items = order if kept is None else kept[order]
        items.flags.writeable = False
        self._items = items
        self._starts = np.concatenate([[0], np.cumsum(self._counts)]).astype(np.int64)
        self._fingerprint: str | None = None
        self._cache: BatchPlan | None = None
        self._build_structure(num_overlong)

    def _bucket_one_field(
        self, kept_lengths: np.ndarray, boundaries: Any
    ) -> tuple[np.ndarray, int]:
        """Buckets of one length per example: set the bucket tables, return each kept
        example's bucket and the bucket count."""
        bounds = self._fit_boundaries(kept_lengths, boundaries)
        bounds.flags.writeable = False
        self.boundaries = bounds
        nb = bounds.size + 1
        self.num_buckets = nb
        self.grid_shape = (nb,)
        self._tail_key = self.lengths  # sorting by length keeps every bucket in its place

        values, counts = length_histogram(kept_lengths)
        value_bucket = np.searchsorted(bounds, values, side="right")
        self._counts = np.bincount(value_bucket, weights=counts, minlength=nb).astype(np.int64)
        longest = np.zeros(nb, np.int64)
        np.maximum.at(longest, value_bucket, values)
        longest.flags.writeable = False
        self.bucket_pad_lengths = longest
        self._capacity = batch_capacity(
            longest, self.batch_size, self.max_tokens, self.quadratic_length
        )

        dtype = np.uint8 if nb <= 255 else np.uint16 if nb <= 65535 else np.int64
        if values.size and values[-1] <= max(1 << 22, 4 * kept_lengths.size):
            table = np.searchsorted(bounds, np.arange(values[-1] + 1), side="right")
            ids = table.astype(dtype)[kept_lengths]
        else:
            ids = np.searchsorted(bounds, kept_lengths, side="right").astype(dtype)
        return ids, nb


    def _limit_lengths(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
        """Apply ``max_length``/``max_tokens`` and ``overlong``: the planned lengths, the kept
        positions (None: all) and how many sequences were dropped."""
        if raw.ndim == 2:
            return self._limit_fields(raw)
        limit, limit_name = self.max_length, "max_length"
        if self.max_tokens is not None:
            fits = token_length_limit(self.max_tokens, self.quadratic_length)
            if limit is None or fits < limit:
                limit, limit_name = fits, "max_tokens"
        self.num_truncated_ = 0
        self.length_limit: int | None = None
        self._limit_text = f"`{limit_name}`={limit}" if limit is not None else ""
        if limit is None or int(raw.max()) <= limit:
            return raw, None, 0
        over = raw > limit
        count = int(over.sum())
        if self.overlong == "error":
            pos = int(np.argmax(raw))
            what = f"`{limit_name}`={limit}"
            if limit_name == "max_tokens" and self.quadratic_length is not None:
                what = (
                    f"{limit}, the longest length a `max_tokens`={self.max_tokens} budget "
                    f"fits with quadratic_length={self.quadratic_length}"
                )
            raise ValueError(
                f"{count} sequence(s) are longer than {what}: the longest "
                f"has length {int(raw[pos])} (position {pos}). Received: overlong='error'\n"
                f"- If they may be cut, pass overlong='truncate'; to leave them out, "
                f"overlong='drop'; or raise `{limit_name}`."
            )
        if self.overlong == "truncate":
            self.num_truncated_ = count
            self.length_limit = int(limit)
            return np.minimum(raw, limit), None, 0
        return raw, np.flatnonzero(~over), count


    def _fit_boundaries(self, kept_lengths: np.ndarray, boundaries: Any) -> np.ndarray:
        """The given boundaries, or ones a default Bucketer fits to the planned lengths."""
        if boundaries is not None:
            return as_boundaries(boundaries)
        if not kept_lengths.size:
            return np.zeros(0, np.int64)
        bucketer = Bucketer(
            target_padding=DEFAULT_TARGET_PADDING,
            batch_size=self.batch_size,
            max_tokens=self.max_tokens,
            quadratic_length=self.quadratic_length,
        )
        return bucketer.fit(kept_lengths).boundaries_

    def _build_structure(self, num_overlong: int) -> None:
        """Sizes, buckets and grouping of every batch: fixed by the bucket counts alone."""
        counts, starts, cap = self._counts, self._starts, self._capacity
        src: list[np.ndarray] = []
        begin: list[np.ndarray] = []
        size: list[np.ndarray] = []
        label: list[np.ndarray] = []
        tail_pos: list[np.ndarray] = []
        for b in np.flatnonzero(counts):
            full = counts[b] // cap[b]
            begin.append(starts[b] + np.arange(full, dtype=np.int64) * cap[b])
            size.append(np.full(full, cap[b], np.int64))
        n_full = int(sum(s.size for s in size))
        src.append(np.zeros(n_full, np.int8))
        label.append(np.repeat(np.flatnonzero(counts), (counts // np.maximum(cap, 1))[counts > 0]))

        # Pack the leftovers of neighbouring buckets together, in bucket order. A batch's label
        # covers its buckets (the last one; on a grid, the largest band on every axis), whose
        # capacity never exceeds any member's.
        for b in leftover_buckets(counts, cap, self.grid_shape):
            r = int(counts[b] % cap[b])
            tail_pos.append(np.arange(starts[b + 1] - r, starts[b + 1], dtype=np.int64))
        t_begin, t_size, t_label = merge_leftovers(counts, cap, self.grid_shape,
                                                   self.merge_leftovers)
        n_tail = len(t_size)
        dropped = num_overlong
        self._dropped_batches = 0
        if self.drop_remainder and n_tail:
            # Merged leftovers leave at most the last batch partial; unmerged ones, one per bucket.
            full = [z == cap[b] for z, b in zip(t_size, t_label, strict=True)]
            dropped += sum(z for z, f in zip(t_size, full, strict=True) if not f)
            self._dropped_batches += sum(not f for f in full)
            t_begin = [a for a, f in zip(t_begin, full, strict=True) if f]
            t_size = [z for z, f in zip(t_size, full, strict=True) if f]
            t_label = [b for b, f in zip(t_label, full, strict=True) if f]
            n_tail = len(t_size)
        src.append(np.ones(n_tail, np.int8))
        begin.append(np.array(t_begin, np.int64))
        size.append(np.array(t_size, np.int64))
        label.append(np.array(t_label, np.int64))
        self._tail_pos = np.concatenate(tail_pos) if tail_pos else np.zeros(0, np.int64)
        self._tail_sections = [0, self._tail_pos.size]
        self._b_src = np.concatenate(src)
        self._b_begin = np.concatenate(begin)
        self._b_size = np.concatenate(size)
        self._b_label = np.concatenate(label).astype(np.int64)
        dropped += self._group_shards()
        self._index_tail_batches()
        self.num_dropped_ = int(dropped)

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """Positions (into the bucket-sorted items) of the members of batches ``ids``."""
        # A leftover batch is the run of *tail slots* [a, a + z) after its section is sorted by
        # length at planning time, not the positions stored there before sorting: refer to the
        # slots themselves, encoded as negatives, and resolve them in `plan`.
        parts = [
            np.arange(a, a + z, dtype=np.int64) if s == 0 else -1 - np.arange(a, a + z)
            for s, a, z in zip(self._b_src[ids], self._b_begin[ids], self._b_size[ids], strict=True)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _add_batches(self, positions: np.ndarray, sizes: np.ndarray, bucket: int) -> np.ndarray:
        """Append batches cut from ``positions`` (consecutive runs of ``sizes``); return ids."""
        first = self._tail_pos.size
        self._tail_pos = np.concatenate([self._tail_pos, positions])
        self._tail_sections.append(self._tail_pos.size)
        new = np.arange(self._b_size.size, self._b_size.size + sizes.size)
        self._b_src = np.concatenate([self._b_src, np.ones(sizes.size, np.int8)])
        offsets = first + np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self._b_begin = np.concatenate([self._b_begin, offsets.astype(np.int64)])
        self._b_size = np.concatenate([self._b_size, sizes.astype(np.int64)])
        self._b_label = np.concatenate([self._b_label, np.full(sizes.size, bucket, np.int64)])
        return new

    def _resplit(self, ids: np.ndarray) -> tuple[np.ndarray, int] | None:
        """Re-cut batches ``ids`` into ``g * num_shards`` even batches that fit one bucket."""
        shards = self.num_shards
        bucket = cover_label(self._b_label[ids], self.grid_shape)
        cap = int(self._capacity[bucket])
        total = int(self._b_size[ids].sum())
        groups = -(-total // (shards * cap))
        if groups * shards > total:
            return None
        n = groups * shards
        sizes = np.full(n, total // n, np.int64)
        sizes[: total % n] += 1
        new = self._add_batches(self._positions(ids), sizes, bucket)
        return new.reshape(groups, shards), bucket

    def _group_shards(self) -> int:
        """Group batches ``num_shards`` at a time, one bucket per group; return examples dropped."""
        shards = self.num_shards
        label = self._b_label
        n = label.size
        if shards == 1:
            self._groups = np.arange(n, dtype=np.int64)[:, None]
            self._group_label = label.copy()
            return 0
        order = np.argsort(label, kind="stable")
        lab = label[order]
        per = np.bincount(label, minlength=self.num_buckets)
        first = np.concatenate([[0], np.cumsum(per)[:-1]])
        in_full = (np.arange(n) - first[lab]) < (per // shards * shards)[lab]
        groups = [order[in_full].reshape(-1, shards)]
        glabels = [lab[in_full][::shards]]
        rest = order[~in_full]
        whole = rest.size - rest.size % shards
        unplaced = [rest[whole:]]
        for row in rest[:whole].reshape(-1, shards):
            top = cover_label(label[row], self.grid_shape)
            if np.all(self._b_size[row] <= self._capacity[top]):
                groups.append(row[None, :])
                glabels.append(np.array([top]))
                continue
            # A mixed group whose small-bucket batches are too big for the large bucket.
            made = self._resplit(row)
            if made is None:
                unplaced.insert(0, row)
            else:
                groups.append(made[0])
                glabels.append(np.full(made[0].shape[0], made[1]))
        remainder = np.concatenate(unplaced)
        dropped = 0
        if remainder.size:
            if self.drop_remainder:
                dropped = int(self._b_size[remainder].sum())
                self._dropped_batches += int(remainder.size)
            else:
                made = self._resplit(remainder)
                if made is None and sum(g.shape[0] for g in groups):
                    # Too few examples left for one batch per shard: re-cut the last group too.
                    k = max(i for i, g in enumerate(groups) if g.shape[0])
                    last = groups[k][-1]
                    groups[k], glabels[k] = groups[k][:-1], glabels[k][:-1]
                    made = self._resplit(np.concatenate([last, remainder]))
                if made is None:
                    total = int(self._b_size[remainder].sum())
                    raise ValueError(
                        f"Cannot give each of the {shards} shards the same number of batches "
                        f"without dropping data: the last {total} example(s) cannot be split "
                        f"into {shards} non-empty batches within the batch limit. Received: "
                        f"num_shards={shards}, drop_remainder=False\n"
                        "- Pass drop_remainder=True to leave them out of each epoch (counted "
                        "in `num_dropped_`), or use fewer shards."
                    )
                groups.append(made[0])
                glabels.append(np.full(made[0].shape[0], made[1]))
        self._groups = np.concatenate(groups).astype(np.int64).reshape(-1, shards)
        self._group_label = np.concatenate(glabels).astype(np.int64)
        return dropped

    def _index_tail_batches(self) -> None:
        """Key each tail position by the batch it belongs to (for in-batch shuffles)."""
        # Key: where the owning batch begins (a position of its own when none); non-decreasing.
        key = np.arange(self._tail_pos.size, dtype=np.int64)
        for i in np.flatnonzero(self._b_src == 1):
            key[self._b_begin[i] : self._b_begin[i] + self._b_size[i]] = self._b_begin[i]
        self._tail_batch = key

    # ------------------------------------------------------------------ planning

    def plan(self, epoch: int | None = None) -> BatchPlan:
        """Plan one epoch for this shard (the current epoch when ``epoch`` is None).

        Args:
            epoch: non-negative epoch number.

        Returns:
            A :class:`BatchPlan`: this shard's batches with their buckets and bucket pad lengths.

        Example:
            >>> s = BucketSampler([1, 9, 2, 8], boundaries=[5], batch_size=2, shuffle=False)
            >>> p = s.plan(0)
            >>> [b.tolist() for b in p.batches], p.buckets.tolist(), p.pad_lengths.tolist()
            ([[0, 2], [1, 3]], [0, 1], [2, 9])
        """
        epoch = self.epoch if epoch is None else self._check_epoch(epoch)
        cached = self._cache
        if cached is not None and cached.epoch == epoch:
            return cached
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            shuffled = self._items.copy()
            for b in np.flatnonzero(self._counts > 1):
                rng.shuffle(shuffled[self._starts[b] : self._starts[b + 1]])
            shuffled.flags.writeable = False
            group_order = rng.permutation(self._group_label.size)
        else:
            rng = None
            shuffled = self._items
            group_order = np.argsort(self._group_label, kind="stable")
        # Leftovers are batched like a sorted sampler of the (random) leftover pool: sorting by
        # length keeps every bucket in the same positions, so batch sizes stay within budget.
        # Sections added by re-splitting refer to slots of earlier sections (negative codes),
        # which are filled first.
        tail = np.empty(self._tail_pos.size, dtype=np.int64)
        cuts = self._tail_sections
        for a, z in zip(cuts[:-1], cuts[1:], strict=True):
            refs = self._tail_pos[a:z]
            own = refs >= 0
            from_items = shuffled[np.where(own, refs, 0)]
            members = np.where(own, from_items, tail[np.where(own, 0, -1 - refs)])
            tail[a:z] = members[np.argsort(self._tail_key[members], kind="stable")]
        if self.shuffle and tail.size:  # rows of a leftover batch in random order
            tail = tail[np.lexsort((rng.random(tail.size), self._tail_batch))]
        tail.flags.writeable = False
        ids = self._groups[group_order, self.shard_index]
        sizes = self._b_size[ids]
        splits = np.zeros(sizes.size + 1, np.int64)
        np.cumsum(sizes, out=splits[1:])
        buckets = self._group_label[group_order]
        pads = self.bucket_pad_lengths[buckets]
        field_pads = None
        if pads.ndim == 2:
            field_pads, pads = pads, pads.max(axis=1)
        plan = BatchPlan._of_slices(
            (shuffled, tail), self._b_src[ids].astype(np.int64), self._b_begin[ids], splits,
            buckets, pads, epoch, self.num_dropped_, field_pads,
        )
        self._cache = plan
        return plan

    def batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """This shard's batches of ``epoch`` (default: the current epoch), as int64 index arrays.

        Args:
            epoch: non-negative epoch number.

        Returns:
            A new list of read-only int64 arrays, in training order.

        Example:
            >>> s = BucketSampler([3, 1, 2, 8, 9, 7], boundaries=[5], batch_size=3, seed=1)
            >>> sorted(sorted(b.tolist()) for b in s.batches(0))
            [[0, 1, 2], [3, 4, 5]]
        """
        return list(self.plan(epoch).batches)

    def batch_buckets(self, epoch: int | None = None) -> np.ndarray:
        """Bucket of each of this shard's batches of ``epoch`` (same on every shard per step).

        Example:
            >>> s = BucketSampler([3, 1, 2, 8, 9, 7], boundaries=[5], batch_size=3, shuffle=False)
            >>> s.batch_buckets(0).tolist()
            [0, 1]
        """
        return self.plan(epoch).buckets.copy()

    def __len__(self) -> int:
        return int(self._group_label.size)
