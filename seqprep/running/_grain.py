"""Grain on seqprep's plan: a ``grain.MapDataset`` of padded batches.

:func:`grain_dataset` is :func:`seqprep.bucketed_pydataset` for Grain, the loader Keras 3 and
JAX users are pointed to: element ``i`` is batch ``i`` of a :class:`~seqprep.BucketSampler`'s
plan, read by the one input stage (:mod:`seqprep.inputs._stage`: checks, dtype rule, targets,
several fields) and gathered and padded in numpy by the shared kernel, so every batch equals
the one :func:`seqprep.bucketed_dataset` gives for the same arguments and sampler epoch.
TensorFlow is not imported.

Grain's conventions hold: ``len(ds)`` is one epoch, an index past it reads a later epoch
(``index // len(ds)``, as Grain's own ``shuffle`` does), so ``ds.repeat(n)`` plays ``n``
consecutive sampler epochs, each a fresh order with every example once; access is random, so
``ds[k:]`` starts mid-plan and an iterator's ``get_state()`` / ``set_state()`` (Grain's
checkpoint, also what ``orbax`` saves) resumes exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import grain
import numpy as np

from seqprep._core.checks import check_choice, check_int, needs_sampler
from seqprep._core.options import Options, options_for, takes_options
from seqprep.inputs import _stage as _inputs
from seqprep.inputs._padding import Side
from seqprep.inputs._targets import Targets
from seqprep.planning import BucketSampler
from seqprep.planning._shapes import resolve_pad_to
from seqprep.running._data_parallel import Layout, resolve_data_parallel
from seqprep.running._floatx import keras_floatx

__all__ = ["grain_dataset"]

PadTo = Literal["auto", "batch", "bucket"]


class SeqprepBatches(grain.MapDataset):
    """Batches of a sampler's plan as a ``grain.MapDataset`` (built by :func:`grain_dataset`,
    which checks the arguments)."""

    def __init__(
        self, *, sampler: BucketSampler, stage: _inputs.Stage, epoch: int,
        layout: Layout | None = None,
    ) -> None:
        super().__init__()
        self.sampler = sampler
        self.epoch = epoch
        self._stage = stage
        self._layout = layout  # data parallelism: fill rows (the stage's index n) and scales
        self._plan: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return len(self.sampler)

    def __str__(self) -> str:
        return f"SeqprepBatches(epoch={self.epoch}, batches_per_epoch={len(self)})"

    def _epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
        plan = self._plan  # one consistent tuple per read: Grain reads from several threads
        if plan is None or plan[0] != epoch:
            planned = self.sampler.plan(epoch)
            flat, splits = planned.rows, planned.splits
            widths = _inputs.batch_widths(planned, self._stage)
            scales = None
            if self._layout is not None:  # this process's rows, each batch topped up
                flat, splits, scales = self._layout.fill_plan(self._stage, flat, splits, widths)
            plan = (epoch, (flat, splits, widths, scales))
            self._plan = plan
        return plan[1]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.slice(index)
        index = int(index)
        if index < 0:
            raise IndexError(f"batch index {index} is negative")
        per_epoch = len(self)
        flat, splits, widths, scales = self._epoch_plan(self.epoch + index // per_epoch)
        b = index % per_epoch
        batch = _inputs.gather(self._stage, flat[splits[b] : splits[b + 1]], widths[b],
                               scales=None if scales is None else scales[b])
        return batch[0] if len(batch) == 1 else batch


@needs_sampler("BucketSampler")
@takes_options
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
    targets: Targets = "auto",
    options: Options | None = None,
) -> grain.MapDataset:
    """Padded batches of a :class:`BucketSampler`'s plan as a ``grain.MapDataset``.

    Element ``i`` is batch ``i % len(sampler)`` of sampler epoch ``epoch + i //
    len(sampler)``: ``x``, ``(x, y)`` or ``(x, y, sample_weight)`` as numpy arrays, equal to
    :func:`seqprep.bucketed_dataset`'s batch for the same arguments (same dtypes, checks and
    ``pad_to`` rule, including ``"auto"``'s width grid on JAX; dicts of fields as there).
    ``len(ds) == len(sampler)`` (one epoch, Grain's convention); ``ds.repeat(n)`` plays ``n``
    sampler epochs, each a fresh order with every example once, ``ds.repeat()`` as many as
    asked for.

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
        targets: ``"auto"``, ``"sequence"`` or ``"step"`` (see
            :func:`seqprep.resolve_targets`).
        options: a :class:`seqprep.Options` of the rarely set options this reads, as in
            ``bucketed_dataset``: ``truncating``, ``dtype``, ``allow_nonfinite``,
            ``targets_field`` and ``data_parallel`` (``"auto"``, the default, reads the
            ``keras.distribution`` layout: with ``k > 1`` devices along its batch axis every
            batch is topped up to a multiple of ``k`` rows with weight-0 fill rows and the
            loss is the one-device loss, exactly as in ``bucketed_dataset``; with several
            ``jax.distributed`` processes each process's dataset holds its rows of every
            batch, so do not shard it again with Grain's ``ShardOptions``).

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
    opts = options_for(options, "grain_dataset", reads=(
        "truncating", "dtype", "allow_nonfinite", "targets_field", "data_parallel"))
    check_choice("targets", targets, ("auto", "sequence", "step"))
    epoch = check_int("epoch", epoch, minimum=0)
    stage = _inputs.prepare(
        x, y, sample_weight, sampler=sampler, sampler_type=BucketSampler, padding=padding,
        value=value, pad_to=pad_to, truncating=opts.truncating, dtype=opts.dtype,
        allow_nonfinite=opts.allow_nonfinite, targets=targets, targets_field=opts.targets_field,
        backend=_compiling_backend(), epoch=epoch, resolve_planned=resolve_pad_to,
        floatx=keras_floatx(),
    )
    layout = resolve_data_parallel(opts.data_parallel, caller="grain_dataset")
    if layout is not None:
        stage = _inputs.with_fill(stage)
    return SeqprepBatches(sampler=sampler, stage=stage, epoch=epoch, layout=layout)


def _compiling_backend() -> str | None:
    """``"jax"`` when Keras runs on JAX (one program per input shape: ``pad_to="auto"`` then
    bounds the shapes), else None; read from Keras's config without importing TensorFlow."""
    try:
        import keras
    except ImportError:  # Grain without Keras: a plain JAX or numpy loop
        return None
    return "jax" if keras.config.backend() == "jax" else None
