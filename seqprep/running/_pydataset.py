"""A ``keras.utils.PyDataset`` that plays a :class:`~seqprep.BucketSampler`'s plan in numpy.

:func:`bucketed_pydataset` is :func:`seqprep.bucketed_dataset` without the tf.data graph: the
same plan, the same checks and the same batches, but each batch is gathered and padded in
numpy when Keras asks for it. Keras feeds a ``PyDataset`` to every backend without tf.data
(JAX and PyTorch get numpy arrays directly), which is what a user who does not want a
TensorFlow runtime in the input pipeline needs; ``workers=`` gives it Keras's own parallelism.

The data are prepared once exactly as ``bucketed_dataset`` prepares them (the epoch stream's
helpers, :mod:`seqprep.running._stream`, are called, not copied): one flat value array with
a padding step at its end, the row offsets, and the labels and weights checked and cast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from seqprep._core.checks import check_bool, check_choice, check_int, needs_sampler
from seqprep._core.options import Options, options_for, takes_options
from seqprep.inputs import _stage as _inputs
from seqprep.inputs._padding import Side
from seqprep.inputs._targets import Targets
from seqprep.planning import BucketSampler
from seqprep.running._data_parallel import Layout, resolve_data_parallel
from seqprep.running._stream import PadTo, PlanCache, bucket_arrays, sampler_stage

__all__ = ["bucketed_pydataset"]

# The shared options (seqprep.Options) bucketed_pydataset reads, and PyDataset's own arguments.
_READS = ("truncating", "dtype", "allow_nonfinite", "targets_field", "data_parallel")
_PYDATASET_ARGS = ("workers", "use_multiprocessing", "max_queue_size")


class BucketedPyDataset(keras.utils.PyDataset):
    """Batches of a sampler's plan, one sampler epoch per Keras epoch (see
    :func:`bucketed_pydataset`, which builds and checks it)."""

    def __init__(
        self,
        *,
        sampler: BucketSampler,
        stage: _inputs.Stage,
        epoch: int,
        layout: Layout | None = None,
        plans: PlanCache | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sampler = sampler
        # The epoch stream's plans (shared with the pad_to rule that counted the shapes).
        self._plans = PlanCache(sampler) if plans is None else plans
        self._stage = stage
        self._layout = layout
        self._set_epoch(epoch)

    def _set_epoch(self, epoch: int) -> None:
        # Replace the whole plan at once: a worker thread reads one consistent tuple.
        self._plan = bucket_arrays(self._plans, epoch, self._stage, self._layout)
        self.epoch = epoch
        self._served: set[int] = set()  # batches of this plan read in this process
        self._begun = False

    def __len__(self) -> int:
        return len(self.sampler)

    def __getitem__(self, index: int) -> Any:
        flat, splits, widths, scales = self._plan
        if not 0 <= index < widths.size:
            raise IndexError(f"batch index {index} out of range for {widths.size} batches")
        self._served.add(index)
        idx = flat[splits[index] : splits[index + 1]]
        batch = _inputs.gather(self._stage, idx, widths[index],
                               scales=None if self._layout is None else scales[index])
        return batch[0] if len(batch) == 1 else batch

    def on_epoch_begin(self) -> None:
        self._begun = True

    def on_epoch_end(self) -> None:
        """Move to the sampler's next epoch (a fresh order, every example once) if this one
        was played.

        Played means every batch was read. Keras also calls ``on_epoch_end`` when ``fit`` or
        ``evaluate`` starts, after reading a batch or two to learn the shapes (and, on
        PyTorch and JAX, inside an epoch it begins to build the model): those calls keep the
        plan, so Keras epoch ``k`` plays sampler epoch ``epoch + k``. Worker processes
        (``use_multiprocessing=True``) read batches where this process cannot count them;
        there every epoch that Keras began moves the plan on.
        """
        if self.use_multiprocessing and self.workers > 1:
            played = self._begun
        else:
            played = len(self._served) == len(self)
        if played:
            self._set_epoch(self.epoch + 1)
        self._begun = False


@needs_sampler("BucketSampler")
@takes_options
def bucketed_pydataset(
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
    **kwargs: Any,
) -> BucketedPyDataset:
    """Padded batches of a :class:`BucketSampler`'s plan as a ``keras.utils.PyDataset``.

    The executor without a tf.data graph: every batch equals the one
    :func:`seqprep.bucketed_dataset` gives for the same arguments and sampler epoch (same
    elements ``x``, ``(x, y)`` or ``(x, y, sample_weight)``, same dtypes, same checks, same
    ``pad_to`` choices, including ``"auto"``'s width grid on JAX), but it is gathered and
    padded in numpy when Keras asks for batch ``i``. ``len(ds) == len(sampler)``; Keras
    epoch ``k`` of ``model.fit(ds, epochs=N)`` plays sampler epoch ``epoch + k`` (each
    epoch Keras begins and ends moves the plan on), so every epoch has a fresh order with
    every example once. Keras's own ``workers`` / ``use_multiprocessing`` / ``max_queue_size``
    are keyword arguments passed on to ``keras.utils.PyDataset``.

    Several fields per example (a dict or tuple ``x``, and ``y``) work exactly as in
    :func:`seqprep.bucketed_dataset`: each field padded to its own width, the batch in the
    same structure.

    Args:
        x: a sequence collection (list of arrays or lists, ``tf.RaggedTensor``, array
            ``(n, T, ...)``, pandas Series of arrays), or a dict or tuple of them (fields).
        y: optional per-sequence labels or per-timestep targets (as in ``bucketed_dataset``),
            or a dict or tuple of them.
        sampler: a :class:`BucketSampler` built on ``sequence_lengths(x)``.
        padding: ``"post"`` (default) or ``"pre"``.
        value: padding value of ``x``; must be representable in its dtype.
        sample_weight: ``None``, an array ``(n,)``, ``"timestep"`` or ``"timestep_mean"``.
        pad_to: ``"auto"``, ``"batch"``, ``"bucket"``, a fixed int width or a width grid.
        epoch: the sampler epoch of the first Keras epoch.
        targets: ``"auto"``, ``"sequence"`` or ``"step"``: how to read ``y`` (see
            :func:`seqprep.resolve_targets`).
        options: a :class:`seqprep.Options` of the rarely set options this reads, as in
            ``bucketed_dataset``: ``truncating``, ``dtype``, ``allow_nonfinite``,
            ``targets_field`` and ``data_parallel``.
        **kwargs: ``keras.utils.PyDataset``'s own arguments: ``workers`` (threads, or
            processes with ``use_multiprocessing=True``; default 1),
            ``use_multiprocessing`` (processes rather than threads for ``workers > 1``)
            and ``max_queue_size`` (batches Keras keeps ready ahead of training).

    Returns:
        A ``keras.utils.PyDataset`` with ``len(ds) == len(sampler)``.

    Raises:
        ValueError: the cases of :func:`seqprep.bucketed_dataset`, or a non-positive
            ``workers`` / ``max_queue_size``.
        TypeError: ``sampler`` is not a BucketSampler, ``x`` is not a sequence collection,
            or ``kwargs`` holds a name ``PyDataset`` does not take.

    Example:
        >>> from seqprep import BucketSampler, sequence_lengths
        >>> x = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]]
        >>> sampler = BucketSampler(sequence_lengths(x), boundaries=[3], batch_size=2,
        ...                         shuffle=False)
        >>> ds = bucketed_pydataset(x, [0, 1, 0, 1], sampler=sampler, pad_to="batch")
        >>> len(ds)
        2
        >>> [(xb.tolist(), yb.tolist()) for xb, yb in (ds[0], ds[1])]
        [([[4, 0], [5, 6]], [1, 0]), ([[1, 2, 3, 0], [7, 8, 9, 10]], [0, 1])]
    """
    opts = options_for(options, "bucketed_pydataset", reads=_READS)
    epoch = check_int("epoch", epoch, minimum=0)
    pydataset_kwargs = _pydataset_kwargs(kwargs)
    check_choice("targets", targets, ("auto", "sequence", "step"))

    plans = PlanCache(sampler)  # counting shapes (pad_to) and playing: each epoch planned once
    stage = sampler_stage(x, y, sample_weight, sampler, padding=padding, value=value,
                          pad_to=pad_to, truncating=opts.truncating, dtype=opts.dtype,
                          allow_nonfinite=opts.allow_nonfinite, targets=targets,
                          targets_field=opts.targets_field, epoch=epoch, planner=plans)
    layout = resolve_data_parallel(opts.data_parallel, caller="bucketed_pydataset")
    if layout is not None:
        stage = _inputs.with_fill(stage)
    return BucketedPyDataset(sampler=sampler, stage=stage, epoch=epoch, layout=layout,
                             plans=plans, **pydataset_kwargs)

def _pydataset_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``keras.utils.PyDataset``'s own arguments, checked; any other name is refused."""
    unknown = {k: v for k, v in sorted(kwargs.items()) if k not in _PYDATASET_ARGS}
    if unknown:
        raise TypeError(
            "`bucketed_pydataset` got unexpected keyword argument(s): "
            f"{', '.join(f'{k}={v!r}' for k, v in unknown.items())}. Its **kwargs are "
            f"keras.utils.PyDataset's own: {', '.join(_PYDATASET_ARGS)}.\n- Rarely set seqprep "
            "options go in options=seqprep.Options(...); see bucketed_pydataset's Args."
        )
    checked = dict(kwargs)
    for name in ("workers", "max_queue_size"):
        if name in checked:
            checked[name] = check_int(name, checked[name], minimum=1)
    if "use_multiprocessing" in checked:
        check_bool("use_multiprocessing", checked["use_multiprocessing"])
    return checked
