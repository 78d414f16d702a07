"""The one epoch stream: a planner and a pass counter in, the batches of every pass out.

Every in-memory executor plays a planner's epochs the same way, and this module is that way:

* :class:`PlanCache` plans each epoch once, whoever asks (the ``pad_to`` rule that counts a
  sampler's shapes, then the stream that plays the epoch: planners are deterministic per
  ``(seed, epoch)``, so a plan can be kept);
* :class:`EpochStream` is the pass counter: which planner epochs each pass over a dataset
  plays, and from which batch (what :class:`seqprep.BackupAndRestore` drives);
* :func:`tf_batches` turns ``arrays_of(epoch)`` (one epoch's flat rows, batch splits and
  per-batch values) into a ``tf.data.Dataset`` of one element per batch, a new epoch per pass;
* :func:`bucket_arrays` and :func:`sampler_stage` are the bucketed executors' plan and input
  stage (``bucketed_dataset``, ``bucketed_pydataset``), and ``TF_KERNEL_OPS`` is the kernel
  spelled in TensorFlow ops.

:func:`epoch_stream` is the public hook: the :class:`EpochStream` a seqprep dataset plays, found
from the dataset itself; :func:`live_epoch_streams` lists those of every seqprep dataset alive
in the process (what ``BackupAndRestore`` reads when no ``dataset=`` is given).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from seqprep._core.checks import check_int
from seqprep.inputs import _kernel
from seqprep.inputs import _stage as _inputs
from seqprep.inputs._fingerprint import DataDigest
from seqprep.inputs._masking import _WeightOps
from seqprep.planning import BucketSampler
from seqprep.planning._shapes import compiling_backend, keras_backend, resolve_pad_to
from seqprep.running._data_parallel import Layout
from seqprep.running._floatx import keras_floatx

__all__ = ["EpochStream", "epoch_stream", "live_epoch_streams"]

# The named pad_to rules of the bucketed executors (an int or a width grid besides).
PadTo = Literal["auto", "batch", "bucket"]


# --------------------------------------------------------------------------- the kernel in TF

# The per-step weight formula (seqprep.inputs._masking._step_weights) spelled in TensorFlow ops.
TF_WEIGHT_OPS = _WeightOps(
    as_float32=lambda a: tf.cast(a, tf.float32),
    count=lambda a: tf.cast(tf.size(a), tf.float32),
    total=tf.reduce_sum,
    divide_no_nan=tf.math.divide_no_nan,
)

# The kernel (seqprep.inputs._kernel) spelled in TensorFlow ops, for tf.data maps.
TF_KERNEL_OPS = _kernel.KernelOps(
    gather=tf.gather,
    gather_rows=lambda params, indices: tf.gather(params, indices, batch_dims=1),
    where=tf.where,
    arange=lambda n: tf.range(n, dtype=tf.int64),
    cumsum_rows=lambda a: tf.cumsum(a, axis=1),
    count_true=lambda a: tf.reduce_sum(tf.cast(a, tf.int64), axis=-1),
    maximum=tf.maximum,
    weights=TF_WEIGHT_OPS,
)


# --------------------------------------------------------------------------- plans, once


class PlanCache:
    """A planner whose epochs are planned once: ``plan(epoch)`` keeps the last ``size`` plans.

    Planners are deterministic per ``(seed, epoch)``, so a kept plan is the plan. Every other
    attribute is the planner's, so the cache stands in for it wherever a planner is read
    (:func:`seqprep.planning._shapes.resolve_pad_to` counts shapes through it).
    """

    def __init__(self, planner: Any, size: int = 4) -> None:
        self.planner = planner
        self._size = size
        self._plans: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()

    def plan(self, epoch: int | None = None) -> Any:
        if epoch is None:
            return self.planner.plan()
        epoch = int(epoch)
        with self._lock:
            plan = self._plans.get(epoch)
            if plan is not None:
                self._plans.move_to_end(epoch)
                return plan
        plan = self.planner.plan(epoch)  # outside the lock: planning may take a while
        with self._lock:
            self._plans[epoch] = plan
            while len(self._plans) > self._size:
                self._plans.popitem(last=False)
        return plan

    def __len__(self) -> int:
        return len(self.planner)

    def __getstate__(self) -> dict[str, Any]:
        return {"planner": self.planner, "size": self._size}  # plans and lock: not kept

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["planner"], state["size"])

    def __getattr__(self, name: str) -> Any:
        if name == "planner":  # before __init__ set it (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.planner, name)


# --------------------------------------------------------------------------- the pass counter

# Every live seqprep dataset and its epoch stream (keyed weakly: a dataset that is gone drops
# out; tf.data keeps a pipeline's input datasets alive, so `ds.map(...)` keeps `ds`'s entry).
_STREAMS: weakref.WeakKeyDictionary[Any, EpochStream] = weakref.WeakKeyDictionary()
_STREAMS_LOCK = threading.Lock()


class EpochStream:
    """Which planner epochs each pass over a seqprep dataset plays, and from which batch.

    Every dataset that plays a new planner epoch per pass (:func:`seqprep.bucketed_dataset`
    with ``reshuffle_each_iteration=True``, :func:`seqprep.packed_dataset`, the training data
    of :func:`seqprep.fit_per_length`) has one; :func:`epoch_stream` finds it from the dataset.

    Counting (alone): pass ``k`` plays epochs ``base + k * step ..`` (``step`` is 0 for a
    dataset that replays the same epochs). Driven (by :class:`seqprep.BackupAndRestore` or
    ``fit_per_length``, at the start of each Keras epoch): every pass that starts plays pass
    ``index`` from training step ``skip`` of the pass, and reading does not consume it, so
    iterators that Keras makes and throws away between epochs cannot shift the epochs.

    Positions are training steps, the unit Keras counts: a dataset that feeds several
    replicas (the input pipeline of ``MirroredStrategy``'s local replicas) plays
    ``batches_per_step`` batches per step, one per replica, and a pass resumed at step ``s``
    starts at its batch ``s * batches_per_step`` (see
    :func:`seqprep.planning._replicas.batches_per_step`).

    Attributes:
        base: the planner epoch of the first pass.
        step: planner epochs from one pass to the next (0: every pass replays).
        epochs: planner epochs per pass.
        batches_per_epoch: batches of one planner epoch (the dataset's elements).
        batches_per_pass: ``batches_per_epoch * epochs`` (the dataset's cardinality).
        batches_per_step: batches one training step consumes (1 but for a pipeline of
            several replicas).
        steps_per_pass: ``batches_per_pass // batches_per_step``: training steps per pass.
        identity: what a checkpoint must find again for its step to mean the same batches
            (the planner's fingerprint, seed and shard, the first epoch, epochs per pass).
        data: digests of the data the passes play (checked by ``BackupAndRestore``), or None.
        started: how many passes have started.

    Example:
        >>> stream = EpochStream(3, 1, 1, 2, {"seed": 0})
        >>> stream.start().tolist(), stream.start().tolist()  # [planner epoch, batches skipped]
        ([3, 0], [4, 0])
        >>> stream.resume_at(5, 1); stream.drive(5)
        >>> stream.start().tolist(), stream.skip_of(5)
        ([8, 1], 1)
    """

    def __init__(
        self, base: int, step: int, epochs: int, batches_per_epoch: int, identity: dict[str, Any],
        batches_per_step: int = 1,
    ) -> None:
        batches_per_step = check_int("batches_per_step", batches_per_step, minimum=1)
        if batches_per_epoch % batches_per_step:  # an epoch is a whole number of steps
            raise ValueError(
                f"Argument `batches_per_step` must divide `batches_per_epoch`. Received: "
                f"batches_per_step={batches_per_step}, batches_per_epoch={batches_per_epoch}"
                "\n- Pass the number of batches one training step consumes (one per local "
                "replica)."
            )
        self.base, self.step, self.epochs = base, step, epochs
        self.batches_per_epoch = batches_per_epoch
        self.batches_per_pass = batches_per_epoch * epochs
        self.batches_per_step = batches_per_step
        self.steps_per_pass = self.batches_per_pass // batches_per_step
        self.identity = {**identity, "first_epoch": base, "epochs_per_pass": epochs,
                         "reshuffle_each_iteration": step != 0}
        self._next = 0
        self._driven: tuple[int, int] | None = None
        self._pending: tuple[int, int] | None = None
        self.started = 0
        self._lock = threading.Lock()
        self.data: DataDigest | None = None

    def start(self) -> np.ndarray:
        """Called by the dataset when a pass begins: ``[first epoch, batches to skip]``."""
        with self._lock:
            if self._driven is not None:
                index, skip = self._driven
                self._next = index + 1
            else:
                index, skip = self._next, 0
                self._next += 1
            self.started += 1
        return np.array([self.base + index * self.step, skip * self.batches_per_step], np.int64)

    def resume_at(self, index: int, skip: int) -> None:
        """Make the pass that plays Keras epoch ``index`` start at its training step ``skip``
        (its batch ``skip * batches_per_step``)."""
        with self._lock:
            self._pending = (int(index), int(skip))

    def drive(self, index: int) -> None:
        """Every pass from now on plays pass ``index`` (until the next call or ``release``)."""
        with self._lock:
            pending = self._pending
            skip = pending[1] if pending is not None and pending[0] == index else 0
            self._driven = (int(index), skip)

    def release(self) -> None:
        """Back to counting: the next pass plays the pass after the last one driven."""
        with self._lock:
            self._driven = None
            self._pending = None

    def skip_of(self, index: int) -> int:
        """Training steps the pass of Keras epoch ``index`` leaves out (resumed mid-epoch)."""
        pending = self._pending
        return pending[1] if pending is not None and pending[0] == index else 0

    def dataset(
        self, epoch_batches: Callable[[tf.Tensor, tf.Tensor], tf.data.Dataset]
    ) -> tf.data.Dataset:
        """Passes of ``epochs`` consecutive epochs; ``epoch_batches(e, start)`` plays one."""
        per_epoch = self.batches_per_epoch
        epochs = self.epochs

        def begin(_: tf.Tensor) -> tf.Tensor:
            first = tf.numpy_function(self.start, [], tf.int64, stateful=True)
            first.set_shape([2])
            return first

        def one_pass(first: tf.Tensor) -> tf.data.Dataset:
            if epochs == 1:  # one flat_map level fewer: about a quarter less CPU per batch
                return epoch_batches(first[0], first[1])

            def epoch_of(j: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                start = tf.clip_by_value(first[1] - j * per_epoch, 0, per_epoch)
                return first[0] + j, start

            return tf.data.Dataset.range(epochs).map(epoch_of).flat_map(epoch_batches)

        return tf.data.Dataset.range(1).map(begin).flat_map(one_pass)


def attach_stream(dataset: Any, stream: EpochStream | None) -> Any:
    """Record that ``dataset`` plays ``stream`` (for :func:`epoch_stream`); returns it."""
    if stream is not None:
        with _STREAMS_LOCK:
            _STREAMS[dataset] = stream
    return dataset


def find_stream(dataset: Any) -> EpochStream | None:
    """The :class:`EpochStream` ``dataset`` plays, or None (see :func:`epoch_stream`)."""
    try:
        return _STREAMS.get(dataset)
    except TypeError:  # not hashable: not a dataset seqprep built
        return None


def epoch_stream(dataset: Any) -> EpochStream:
    """The :class:`EpochStream` (pass counter) a seqprep dataset plays.

    The hook :class:`seqprep.BackupAndRestore` resumes through, for a dataset built by
    :func:`seqprep.bucketed_dataset` (``reshuffle_each_iteration=True``, the default, or
    ``epochs > 1``), :func:`seqprep.packed_dataset` or
    :func:`seqprep.distributed_bucketed_dataset` (the stream of this process's input pipeline,
    when it has one). The lookup is by the dataset object as the builder returned it; a
    dataset derived from it (``ds.map(...)``) keeps it, and its stream, alive
    (:func:`live_epoch_streams` still lists it) but is another object.

    Args:
        dataset: the dataset as a seqprep builder returned it.

    Returns:
        Its :class:`EpochStream`.

    Raises:
        ValueError: ``dataset`` does not play a new planner epoch per pass (not built by
            seqprep, derived from such a dataset, or built with
            ``reshuffle_each_iteration=False`` and one epoch).

    Example:
        >>> import seqprep as sp
        >>> sampler = sp.BucketSampler([1, 2, 3, 4], batch_size=2)
        >>> ds = sp.bucketed_dataset([[1], [2, 3], [4, 5, 6], [7, 8, 9, 10]], sampler=sampler)
        >>> stream = sp.epoch_stream(ds)
        >>> stream.batches_per_pass, stream.identity["first_epoch"]
        (2, 0)
    """
    stream = find_stream(dataset)
    if stream is None:
        raise ValueError(
            "Argument `dataset` must be a seqprep dataset that plays a new sampler epoch per "
            f"pass. Received: dataset of type {type(dataset).__name__}\n"
            "- Pass the dataset returned by `bucketed_dataset(...)`, `packed_dataset(...)` or "
            "`distributed_bucketed_dataset(...)` (with reshuffle_each_iteration=True, the "
            "default), as given to `fit`."
        )
    return stream


def live_epoch_streams() -> list[EpochStream]:
    """The :class:`EpochStream` of every seqprep dataset alive in this process.

    What :class:`seqprep.BackupAndRestore` reads when it is given no ``dataset=``: it drives
    them all at every Keras epoch and tells the training one by the pass that starts.

    Returns:
        The streams, oldest dataset first.

    Example:
        >>> import seqprep as sp
        >>> sampler = sp.BucketSampler([1, 2, 3, 4], batch_size=2)
        >>> ds = sp.bucketed_dataset([[1], [2, 3], [4, 5, 6], [7, 8, 9, 10]], sampler=sampler)
        >>> any(s is sp.epoch_stream(ds) for s in sp.live_epoch_streams())
        True
    """
    with _STREAMS_LOCK:
        streams = list(_STREAMS.values())
    unique: dict[int, EpochStream] = {}
    for s in streams:
        unique.setdefault(id(s), s)
    return list(unique.values())


def sampler_identity(planner: Any) -> dict[str, Any]:
    """What of a sampler's state a checkpoint must find again (its plan's fingerprint)."""
    state = planner.state_dict()
    return {k: state[k] for k in ("fingerprint", "seed", "num_shards", "shard_index")}


# --------------------------------------------------------------------------- tf.data


def tf_batches(
    arrays_of: Callable[[int], Sequence[np.ndarray]],
    signature: Sequence[tuple[tf.DType, list[Any]]],
    *,
    epoch: int,
    stream: EpochStream | None,
) -> tf.data.Dataset:
    """One element per batch: ``(rows of the batch, *its per-batch values)``.

    ``arrays_of(e)`` gives planner epoch ``e`` as ``(rows, splits, *per_batch)``: the rows of
    every batch back to back (``(total, ...)``), the int64 batch splits (``(batches + 1,)``)
    and arrays of one value per batch; ``signature`` gives the dtype and shape of each.
    Without a ``stream`` the dataset plays epoch ``epoch`` on every pass and holds constants
    only (serialisable, as the tf.data service needs); with one, each pass plays the epochs
    the stream chooses, from the batch it says, and nothing but the numbers runs in Python.
    """

    def element(arrays: Sequence[Any]) -> Callable[[tf.Tensor], tuple[tf.Tensor, ...]]:
        rows, splits, *per_batch = arrays
        # Slicing by position rather than from a RaggedTensor: inside flat_map, ragged slices
        # trip a (harmless but loud) TensorFlow type-inference warning.
        return lambda i: (rows[splits[i] : splits[i + 1]], *(a[i] for a in per_batch))

    if stream is None:
        arrays = [tf.constant(a, dtype) for a, (dtype, _) in
                  zip(arrays_of(epoch), signature, strict=True)]
        return tf.data.Dataset.range(int(arrays[1].shape[0]) - 1).map(element(arrays))

    dtypes = [dtype for dtype, _ in signature]

    def plan_of(e: Any) -> list[np.ndarray]:
        return list(arrays_of(int(e)))

    def epoch_batches(e: tf.Tensor, start: tf.Tensor) -> tf.data.Dataset:
        arrays = tf.numpy_function(plan_of, [e], dtypes, stateful=True)
        for a, (_, shape) in zip(arrays, signature, strict=True):
            a.set_shape(shape)
        batches = tf.shape(arrays[1], out_type=tf.int64)[0] - 1
        return tf.data.Dataset.range(start, batches).map(element(arrays))

    return stream.dataset(epoch_batches)


# Keras backends whose trainers read a tf.data dataset from Python, one iterator per epoch.
_PYTHON_LOOP_BACKENDS = ("jax", "torch")


def for_keras_loop(ds: tf.data.Dataset, backend: str | None = None) -> tf.data.Dataset:
    """``ds`` without tf.data's autotuning thread where Keras reads it from Python (JAX,
    torch; ``backend``: default this process's Keras backend); unchanged elsewhere.

    Those trainers make a new iterator each epoch and drop the previous one when the next
    epoch starts. Dropping it joins, with the GIL held, the iterator's autotuning thread, which
    runs its rounds 10 ms, 20 ms, 40 ms, ... apart: the next epoch's first batch waited for it
    (measured on JAX, the README tour: 3-28 s in 7 of 11 runs with autotuning, none in 12
    without; docs/benchmarks.md). Without autotuning the map keeps its parallel calls and the
    prefetch its buffer; the epochs took the same time in those runs.
    """
    name = keras_backend() if backend is None else backend
    if name not in _PYTHON_LOOP_BACKENDS:
        return ds
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def with_cardinality(ds: tf.data.Dataset, expected: int) -> tf.data.Dataset:
    """``ds`` with its cardinality known (``expected``), as Keras's progress bar needs."""
    if int(ds.cardinality()) != expected:
        ds = ds.apply(tf.data.experimental.assert_cardinality(expected))
    return ds


def splits_of(sizes: np.ndarray) -> np.ndarray:
    splits = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=splits[1:])
    return splits


# --------------------------------------------------------------------------- bucketed executors


def compiling_backend_now() -> str | None:
    """The Keras backend's name if it compiles one program per input shape, else None."""
    import keras  # noqa: F401  (Keras resolves its backend; the shared rule reads it)

    return compiling_backend()


def sampler_stage(
    x: Any, y: Any, sample_weight: Any, sampler: BucketSampler, *, padding: Any, value: Any,
    pad_to: Any, truncating: Any, dtype: Any, allow_nonfinite: bool, targets: Any,
    targets_field: Any, epoch: int, planner: Any = None,
) -> _inputs.Stage:
    """The one input stage (:mod:`seqprep.inputs._stage`) for an executor of a sampler's plan
    (``bucketed_dataset``, ``bucketed_pydataset``): every check, before any TensorFlow work.
    ``planner`` (default: ``sampler``) is what the ``pad_to`` rule plans through: pass the
    executor's :class:`PlanCache` so that counting shapes plans no epoch twice."""
    through = sampler if planner is None else planner

    def resolve(pad_to: Any, _sampler: Any, **kwargs: Any) -> Any:
        return resolve_pad_to(pad_to, through, **kwargs)

    return _inputs.prepare(
        x, y, sample_weight, sampler=sampler, sampler_type=BucketSampler, padding=padding,
        value=value, pad_to=pad_to, truncating=truncating, dtype=dtype,
        allow_nonfinite=allow_nonfinite, targets=targets, targets_field=targets_field,
        backend=compiling_backend_now(), epoch=epoch, resolve_planned=resolve,
        floatx=keras_floatx(),
    )


def bucket_arrays(
    planner: Any, epoch: int, stage: _inputs.Stage, layout: Layout | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One epoch of a bucketed plan as ``(rows, splits, widths, scales)``: flat indices, batch
    splits, the padded width of each batch (``(batches,)``; ``(batches, fields)`` for several
    fields) and the weight factors of each batch, one per target (``(batches, targets)``): 1,
    unless ``layout`` tops batches up with fill rows (the index ``stage.n``) to a multiple of
    its size; then this process's rows of every batch, each batch as wide as the whole
    (global) batch, and the factors counted over the global batch (:meth:`Layout.fill_plan`)."""
    plan = planner.plan(epoch)
    widths = _inputs.batch_widths(plan, stage)
    if layout is None:
        return (plan.rows, plan.splits, widths,
                np.ones((len(plan), len(stage.targets)), np.float32))
    rows, splits, scales = layout.fill_plan(stage, plan.rows, plan.splits, widths)
    return rows, splits, widths, scales


def data_digest(
    inputs: Sequence[_kernel.Table], targets: Sequence[_kernel.Table], arguments: dict[str, Any]
) -> DataDigest:
    """What a checkpoint of a dataset over these kernel tables must find again: the values of
    every input field (``inputs``), the targets and weights (``targets``) and the options."""
    return DataDigest(
        {"x": lambda: tuple(a for t in inputs for a in (t.x, t.starts, t.lengths)),
         "y": lambda: tuple(t.y for t in targets),
         "sample_weight": lambda: tuple(t.w for t in targets)},
        {**arguments, "y_mode": tuple(t.y_mode for t in targets),
         "w_mode": tuple(t.w_mode for t in targets)},
    )


def stage_digest(stage: _inputs.Stage, arguments: dict[str, Any]) -> DataDigest:
    """:func:`data_digest` of an input stage (every field, every target)."""
    return data_digest([f.table for f in stage.fields], [t.table for t in stage.targets],
                       {**arguments, "x_keys": stage.x_keys, "y_keys": stage.y_keys})
