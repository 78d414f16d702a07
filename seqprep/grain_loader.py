"""Grain on seqprep's plan: a ``grain.MapDataset`` of padded batches.

:func:`grain_dataset` is :func:`seqprep.bucketed_pydataset` for Grain, the loader Keras 3 and
JAX users are pointed to: element ``i`` is batch ``i`` of a :class:`~seqprep.BucketSampler`'s
plan, gathered and padded in numpy by the same kernel, table and checks
(:mod:`seqprep._kernel`), so every batch equals the one :func:`seqprep.bucketed_dataset`
gives for the same arguments and sampler epoch.

Grain's conventions hold: ``len(ds)`` is one epoch, an index past it reads a later epoch
(``index // len(ds)``, as Grain's own ``shuffle`` does), so ``ds.repeat(n)`` plays ``n``
consecutive sampler epochs, each a fresh order with every example once; access is random, so
``ds[k:]`` starts mid-plan and an iterator's ``get_state()`` / ``set_state()`` (Grain's
checkpoint, also what ``orbax`` saves) resumes exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
from numpy.typing import DTypeLike

from seqprep import _kernel
from seqprep._checks import check_choice, check_int
from seqprep.bucketing import BucketSampler
from seqprep.data import PadTo, _batch_table, _checked_inputs, _plan_arrays
from seqprep.padding import Side
from seqprep.targets import Targets

__all__ = ["grain_dataset"]


class SeqprepBatches(grain.MapDataset):
    """Batches of a sampler's plan as a ``grain.MapDataset`` (built by :func:`grain_dataset`,
    which checks the arguments)."""

    def __init__(self, *, sampler: BucketSampler, table: _kernel.Table, pad_to: Any,
                 padding: str, epoch: int) -> None:
        super().__init__()
        self.sampler = sampler
        self.epoch = epoch
        self._table = table
        self._pad_to, self._padding = pad_to, padding
        self._plan: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return len(self.sampler)

    def __str__(self) -> str:
        return f"SeqprepBatches(epoch={self.epoch}, batches_per_epoch={len(self)})"

    def _epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        plan = self._plan  # one consistent tuple per read: Grain reads from several threads
        if plan is None or plan[0] != epoch:
            flat, sizes, widths = _plan_arrays(self.sampler, epoch, self._table.lengths,
                                               self._pad_to)
            plan = (epoch, (flat, np.concatenate([[0], np.cumsum(sizes)]), widths))
            self._plan = plan
        return plan[1]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.slice(index)
        index = int(index)
        if index < 0:
            raise IndexError(f"batch index {index} is negative")
        per_epoch = len(self)
        flat, splits, widths = self._epoch_plan(self.epoch + index // per_epoch)
        b = index % per_epoch
        idx = flat[splits[b] : splits[b + 1]]
        table = self._table
        src, real = _kernel.positions(table.starts, table.lengths, idx, int(widths[b]),
                                      self._padding, table.pad_index)
        batch = _kernel.gather_batch(table, src, real, idx)
        return batch[0] if len(batch) == 1 else batch


def grain_dataset(
    x: Any,
    y: Any = None,
    *,
    sampler: BucketSampler,
    padding: Side = "post",
    value: Any = 0,
    sample_weight: Any = None,
    pad_to: PadTo | int | Sequence[int] = "auto",
    epoch: int = 0,
    truncating: Side = "post",
    dtype: DTypeLike | None = None,
    allow_nonfinite: bool = False,
    targets: Targets = "auto",
) -> grain.MapDataset:
    """Padded batches of a :class:`BucketSampler`'s plan as a ``grain.MapDataset``.

    Element ``i`` is batch ``i % len(sampler)`` of sampler epoch ``epoch + i //
    len(sampler)``: ``x``, ``(x, y)`` or ``(x, y, sample_weight)`` as numpy arrays, equal to
    :func:`seqprep.bucketed_dataset`'s batch for the same arguments (same dtypes, checks and
    ``pad_to`` rule, including ``"auto"``'s width grid on JAX). ``len(ds) == len(sampler)``
    (one epoch, Grain's convention); ``ds.repeat(n)`` plays ``n`` sampler epochs, each a
    fresh order with every example once, ``ds.repeat()`` as many as asked for.

    With ``model.fit``, Keras 3 reads a Grain dataset until it ends, and starts it again
    at every epoch: pass ``ds.repeat()`` and ``steps_per_epoch=len(sampler)`` so that Keras
    epoch ``k`` plays sampler epoch ``epoch + k`` (with ``ds`` alone, every Keras epoch replays
    sampler epoch ``epoch``).

    Checkpointing: an iterator of the dataset (``it = iter(ds.repeat())``) saves its position
    with ``it.get_state()`` and a new iterator of an equal dataset resumes with
    ``it.set_state(state)``: the remaining batches are the ones the first iterator would have
    given. For ``model.fit``, resume at batch ``k`` with ``ds.repeat()[k:]``.

    Args:
        x: a sequence collection (list of arrays or lists, ``tf.RaggedTensor``, array
            ``(n, T, ...)``, pandas Series of arrays).
        y: optional per-sequence labels or per-timestep targets (as in ``bucketed_dataset``).
        sampler: a :class:`BucketSampler` built on ``sequence_lengths(x)``.
        padding: ``"post"`` (default) or ``"pre"``.
        value: padding value of ``x``; must be representable in its dtype.
        sample_weight: ``None``, an array ``(n,)``, ``"timestep"`` or ``"timestep_mean"``.
        pad_to: ``"auto"``, ``"batch"``, ``"bucket"``, a fixed int width or a width grid.
        epoch: the sampler epoch of element 0.
        truncating: which steps a sampler built with ``overlong="truncate"`` cuts.
        dtype: dtype of the ``x`` batches (default as in ``bucketed_dataset``).
        allow_nonfinite: accept NaN/inf in ``x`` (NaN/inf in ``y`` are always refused).
        targets: ``"auto"``, ``"sequence"`` or ``"step"`` (see
            :func:`seqprep.resolve_targets`).

    Returns:
        A ``grain.MapDataset`` with ``len(ds) == len(sampler)``.

    Raises:
        ValueError: the cases of :func:`seqprep.bucketed_dataset`.
        TypeError: ``sampler`` is not a BucketSampler, or ``x`` is not a sequence collection.

    Example:
        >>> from seqprep import BucketSampler, sequence_lengths
        >>> x = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]]
        >>> sampler = BucketSampler(sequence_lengths(x), boundaries=[3], batch_size=2,
        ...                         shuffle=False)
        >>> ds = grain_dataset(x, [0, 1, 0, 1], sampler=sampler, pad_to="batch")
        >>> len(ds)
        2
        >>> [(xb.tolist(), yb.tolist()) for xb, yb in ds]
        [([[4, 0], [5, 6]], [1, 0]), ([[1, 2, 3, 0], [7, 8, 9, 10]], [0, 1])]
        >>> it = iter(ds.repeat(2)); first = next(it); state = it.get_state()
        >>> resumed = iter(ds.repeat(2)); resumed.set_state(state)
        >>> [b[0].tolist() for b in resumed] == [b[0].tolist() for b in it]
        True
    """
    check_choice("padding", padding, ("pre", "post"))
    check_choice("truncating", truncating, ("pre", "post"))
    check_choice("targets", targets, ("auto", "sequence", "step"))
    epoch = check_int("epoch", epoch, minimum=0)
    rag, lengths, pad_to = _checked_inputs(x, sampler, pad_to, epoch, allow_nonfinite)
    table = _batch_table(rag, lengths, sampler, y, targets, sample_weight, truncating,
                         dtype, value)
    return SeqprepBatches(sampler=sampler, table=table, pad_to=pad_to, padding=padding,
                          epoch=epoch)
