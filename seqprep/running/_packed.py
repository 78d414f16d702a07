"""tf.data executor for packed rows: several sequences back to back per row.

:func:`packed_dataset` follows a :class:`~seqprep.PackSampler`'s plan. The data live once in
TensorFlow in ragged form (flat values plus row offsets); the dataset streams each batch's slot
matrix (which sequence sits in which slot of which row) and builds the packed values, segment
ids and targets with a few vectorised gathers. Every batch has the same row length, so a model
compiles one shape.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import tensorflow as tf

from seqprep._core.checks import check_choice, check_int, needs_sampler
from seqprep._core.options import Options, options_for, takes_options
from seqprep.inputs import _kernel, _stage_fields, _stage_rules
from seqprep.inputs import _stage as _inputs
from seqprep.inputs._targets import Targets
from seqprep.planning import PackSampler
from seqprep.planning._fill import fill_batches
from seqprep.running._data_parallel import Layout, resolve_data_parallel
from seqprep.running._floatx import keras_floatx
from seqprep.running._stream import (
    TF_KERNEL_OPS,
    EpochStream,
    PlanCache,
    attach_stream,
    data_digest,
    for_keras_loop,
    sampler_identity,
    splits_of,
    tf_batches,
    with_cardinality,
)

__all__ = ["packed_dataset"]

_AUTOTUNE = tf.data.AUTOTUNE


def _slot_matrix(
    sampler: PackSampler, epoch: int, layout: Layout | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epoch as a ``(rows, S)`` int64 matrix of sequence indices (-1: empty slot), the
    number of rows of every batch (the sampler's :class:`~seqprep.PackedPlan`) and the weight
    scale of every batch: 1, unless ``layout`` tops every batch up with empty rows (every
    slot -1) to a multiple of its size; then this process's rows, and rows / real rows."""
    plan = sampler.plan(epoch)
    slots, sizes = plan.slots, plan.rows_per_batch
    if layout is None:
        return slots, sizes, np.ones(sizes.size, np.float32)
    empty = np.full((1, slots.shape[1]), -1, np.int64)
    filled = fill_batches(np.arange(slots.shape[0]), plan.slot_splits, multiple_of=layout.size,
                          fill_index=slots.shape[0], num_processes=layout.num_processes,
                          process_index=layout.process_index)
    return (np.concatenate([slots, empty])[filled.rows], filled.sizes,
            filled.scales.astype(np.float32))


def _slot_dataset(
    sampler: PlanCache, epoch: int, epochs: int, reshuffle: bool, layout: Layout | None = None
) -> tuple[tf.data.Dataset, EpochStream | None]:
    """A dataset of ``(B, S)`` slot matrices and weight scales, one per batch of the planned
    epochs, and the epoch stream that chooses each pass's epochs (None for one fixed epoch)."""
    stream = None
    if epochs > 1 or reshuffle:  # pass k plays epochs epoch + k * epochs .. (as bucketed_dataset)
        stream = EpochStream(epoch, epochs if reshuffle else 0, epochs, len(sampler),
                             sampler_identity(sampler))
    width = max(1, sampler.max_segments_)

    def arrays_of(e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        slots, sizes, scales = _slot_matrix(sampler, e, layout)
        return slots.reshape(-1, width), splits_of(sizes), scales

    signature = [(tf.int64, [None, width]), (tf.int64, [None]), (tf.float32, [None])]
    return tf_batches(arrays_of, signature, epoch=epoch, stream=stream), stream


@needs_sampler("PackSampler")
@takes_options
def packed_dataset(
    x: Any,
    y: Any = None,
    *,
    sampler: PackSampler,
    epoch: int = 0,
    sample_weight: Any = None,
    targets: Targets = "auto",
    options: Options | None = None,
) -> tf.data.Dataset:
    """Packed batches of in-memory sequences, in the order a :class:`PackSampler` planned.

    Each row holds several whole sequences back to back, padded at the end to
    ``P = sampler.row_length``; every batch has this one width. With ``S =
    sampler.max_segments_`` (most sequences in a row), the inputs of an element are the dict
    :class:`seqprep.layers.PackedRNN` takes:

    * ``"values"``: ``(B, P, *step_shape)`` (dtype rules of :func:`bucketed_dataset`: floats
      wider than Keras's ``floatx`` (never narrower than float32) become it after an overflow
      check; the option ``dtype`` overrides);
    * ``"segment_ids"``: ``(B, P)`` int32, ``0`` on padding, ``1..S`` for the slot of the
      sequence a step belongs to;
    * ``"segment_lengths"``: ``(B, S)`` int32, the length of each slot's sequence (0: empty).

    Without ``y`` an element is that dict. With ``y`` it is ``(inputs, targets, weights)``:

    * per-sequence labels (an array ``(n, ...)``) are laid out per slot, ``(B, S, ...)``, with
      float32 weights ``(B, S)``: 1 on filled slots, 0 on empty ones (their label is 0);
    * per-timestep targets (a sequence collection with ``x``'s lengths) are packed like the
      inputs, ``(B, P, ...)``, with weights ``(B, P)``: 1 on real steps, 0 on padding.

    ``sample_weight`` (one number per sequence) multiplies those weights.

    Epochs: with the option ``reshuffle_each_iteration=True`` (the default) pass ``k`` over
    the dataset plays sampler epoch ``epoch + k * epochs``, so each epoch of
    ``model.fit(ds, epochs=N)`` sees a fresh packing order (the count lives in this Python
    process). With False every pass replays epochs ``epoch .. epoch + epochs - 1``.

    Args:
        x: a sequence collection (list of arrays, ``tf.RaggedTensor``, array ``(n, T, ...)``,
            pandas Series of arrays).
        y: optional per-sequence labels or per-timestep targets.
        sampler: a :class:`PackSampler` built on ``sequence_lengths(x)``.
        epoch: the first sampler epoch to play.
        sample_weight: optional array ``(n,)`` of per-sequence weights.
        targets: ``"auto"`` (default), ``"sequence"`` or ``"step"``: whether ``y`` holds one
            target per sequence or one per step (the rule of :func:`seqprep.resolve_targets`).
        options: a :class:`seqprep.Options` of the rarely set options this reads:
            ``epochs`` (consecutive sampler epochs one pass holds),
            ``reshuffle_each_iteration`` (play the next epochs on every new pass),
            ``truncating`` (which steps a sampler built with ``overlong="truncate"`` cuts:
            ``"post"`` keeps the first ``sampler.row_length`` steps, ``"pre"`` the last),
            ``dtype`` (of the values; default: see above), ``allow_nonfinite`` (accept
            NaN/inf in ``x``; NaN/inf in ``y`` and ``sample_weight`` are always refused)
            and ``data_parallel`` (``"auto"``, the default, an int or ``None``: with ``k >
            1`` devices along a ``keras.distribution`` batch axis, every batch is topped up
            to a multiple of ``k`` rows with empty rows, no sequence and weight 0, and the
            weights of the real rows are scaled by rows / real rows, so the loss of a batch
            is the one-device loss; packed weights, per slot or per step, meet the default
            reduction without a mask), as in :func:`bucketed_dataset`.

    Returns:
        A ``tf.data.Dataset`` with ``cardinality() == len(sampler) * epochs``.

    Raises:
        TypeError: ``sampler`` is not a PackSampler, or ``x`` is not a sequence collection.
        ValueError: a sampler built on other lengths, ``y``/``sample_weight`` that do not
            match ``x``, NaN/inf values (see ``allow_nonfinite``), a lossy ``dtype``, or a
            dict or tuple of fields (packed rows hold one field: use
            :func:`bucketed_dataset` for several).

    Example:
        >>> from seqprep import PackSampler, sequence_lengths
        >>> x = [[1, 2, 3], [4], [5, 6], [7, 8]]
        >>> sampler = PackSampler(sequence_lengths(x), batch_size=2, shuffle=False)
        >>> inputs, labels, weights = next(iter(packed_dataset(x, [10, 11, 12, 13],
        ...                                                    sampler=sampler)))
        >>> inputs["values"].numpy().tolist(), inputs["segment_ids"].numpy().tolist()
        ([[1, 2, 3], [5, 6, 4]], [[1, 1, 1], [1, 1, 2]])
        >>> labels.numpy().tolist(), weights.numpy().tolist()
        ([[10, 0], [12, 11]], [[1.0, 0.0], [1.0, 1.0]])
    """
    opts = options_for(options, "packed_dataset", reads=(
        "epochs", "reshuffle_each_iteration", "truncating", "dtype", "allow_nonfinite",
        "data_parallel"))
    check_choice("targets", targets, ("auto", "sequence", "step"))
    epoch = check_int("epoch", epoch, minimum=0)
    epochs = opts.epochs
    if _stage_fields.split_fields(x)[0] != "single":
        raise ValueError(
            "Argument `x` is a dict or tuple of fields, but packed rows hold one sequence "
            "collection: sequences of different fields cannot share a row's steps.\n"
            "- Pack one field, or batch several fields with `seqprep.bucketed_dataset` "
            "(a 2-D `BucketSampler` keeps the padding of every field low)."
        )
    if y is None and sample_weight is not None:
        raise ValueError(
            "Argument `sample_weight` needs `y`: Keras weights the loss against targets.\n"
            "- Pass `y`, or drop `sample_weight`."
        )
    stage = _inputs.prepare(
        x, y, sampler=sampler, sampler_type=PackSampler, truncating=opts.truncating,
        dtype=opts.dtype, allow_nonfinite=opts.allow_nonfinite, targets=targets,
        floatx=keras_floatx(),
    )
    if stage.y_kind not in (None, "single"):
        raise ValueError(
            "Argument `y` is a dict or tuple of target fields, but `packed_dataset` lays out "
            "one target per slot or per step.\n- Pass one target collection (or array)."
        )
    weights = None
    if sample_weight is not None:
        weights = _stage_rules.sequence_weights_array(
            sample_weight, stage.n,
            fix="Pass one weight per sequence; packed weights are already 0 on padding.")
    consts = _Consts(stage, weights, sampler)
    layout = resolve_data_parallel(opts.data_parallel, caller="packed_dataset")
    slots, stream = _slot_dataset(PlanCache(sampler), epoch, epochs,
                                  opts.reshuffle_each_iteration, layout)
    if stream is not None:  # what seqprep.BackupAndRestore checks on resume
        stream.data = data_digest([consts.table], [consts.table], {"packed": True})

    def make_batch(slot: tf.Tensor, scale: tf.Tensor) -> Any:
        batch = _build_batch(slot, consts)
        if layout is None or not isinstance(batch, tuple):
            return batch
        # Packed weights are per slot or per step, and no Keras mask reaches the loss: the
        # default reduction divides by every row, empty fill rows included, so the real
        # rows' weights are scaled by rows / real rows whatever the targets.
        return (*batch[:-1], batch[-1] * scale)

    ds = slots.map(make_batch, num_parallel_calls=_AUTOTUNE, deterministic=True)
    ds = for_keras_loop(with_cardinality(ds, len(sampler) * epochs).prefetch(_AUTOTUNE))
    return attach_stream(ds, stream)  # how seqprep.BackupAndRestore finds the stream


class _Consts:
    """The kernel's table as TensorFlow constants, captured once by the batch function."""

    def __init__(self, stage: _inputs.Stage, weights: Any, sampler: PackSampler) -> None:
        # Packed weights are always per position: 1 on real steps (or filled slots), times
        # the sequence's weight when given.
        table = stage.fields[0].table
        if stage.targets:
            target = stage.targets[0].table
            table = _kernel.table(table.x, table.starts, table.lengths, w=weights,
                                  w_mode="timestep")
            table = replace(table, y=target.y, y_mode=target.y_mode)
        self.pad_index = table.pad_index
        self.pad_sequence = table.pad_sequence
        self.table = table.convert(tf.constant)
        self.width = int(sampler.row_length)
        self.num_slots = max(1, sampler.max_segments_)
        self.step_shape = tuple(table.x.shape[1:])


def _build_batch(slot: tf.Tensor, k: _Consts) -> Any:
    """Packed inputs (and targets, weights) of one ``(B, S)`` slot matrix."""
    slot = tf.ensure_shape(slot, [None, k.num_slots])
    t = k.table
    lay = _kernel.packed_positions(slot, t.starts, t.lengths, k.width, k.pad_index,
                                   k.pad_sequence, TF_KERNEL_OPS)
    if t.y_mode == "sequence":  # targets and weights per slot
        batch = _kernel.gather_batch(t, lay.src, lay.filled, lay.slot_owner,
                                     owner=lay.slot_owner, ops=TF_KERNEL_OPS)
    else:
        batch = _kernel.gather_batch(t, lay.src, lay.real, lay.slot_owner,
                                     owner=lay.step_owner, ops=TF_KERNEL_OPS)
    inputs = {
        "values": tf.ensure_shape(batch[0], [None, k.width, *k.step_shape]),
        "segment_ids": tf.ensure_shape(tf.cast(lay.segment_ids, tf.int32), [None, k.width]),
        "segment_lengths": tf.ensure_shape(tf.cast(lay.slot_lengths, tf.int32),
                                           [None, k.num_slots]),
    }
    return inputs if t.y_mode is None else (inputs, *batch[1:])
