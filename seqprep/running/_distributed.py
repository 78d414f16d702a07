"""Scaling out: replica-aligned bucketed input for ``tf.distribute``, the ``tf.data`` service,
and streaming sequences from Parquet files larger than memory.

Three engines, all TensorFlow's own (no home-made cluster):

* **tf.distribute** (``MirroredStrategy``, ``MultiWorkerMirroredStrategy``):
  :func:`replica_dataset_fn` is a ``dataset_fn`` for
  ``strategy.distribute_datasets_from_function`` and :func:`distributed_bucketed_dataset` calls
  it for you. Every replica plays its own shard of one :class:`~seqprep.BucketSampler` plan:
  the same number of steps on every replica, the same bucket at every step, and (with the
  default ``pad_to="step"``) the same padded length on every replica at every step, so no
  replica waits for a longer one and none runs out of batches early. The global ``batch_size``
  is split per replica with ``InputContext.get_per_replica_batch_size``, as Keras users expect.
  Keras 3's ``model.fit`` accepts the result under ``MirroredStrategy``; under
  ``MultiWorkerMirroredStrategy`` Keras 3's ``fit`` fails before the first step (keras-team/keras
  issue 20585), so :func:`fit_distributed` runs the same ``model.train_step`` in a plain
  distributed loop.
* **tf.data service**: :func:`service_bucketed_dataset` runs a bucketed pipeline on
  ``tf.data`` service workers; ``processing_mode="distributed_epoch"`` delivers every batch of
  the epoch exactly once across all workers. :func:`local_data_service` starts a dispatcher
  and workers in this process, on loopback ports, for tests and single-machine use.
* **Streaming Parquet**: :func:`iter_parquet_sequences` reads sequences from Parquet row
  batches (long format, rows grouped by id, or one list-valued row per sequence) with memory
  bounded by one read batch; :func:`parquet_sequence_dataset` wraps it as an unbatched
  ``tf.data.Dataset`` for ``.apply(seqprep.bucket_by_length(...))``.

See ``docs/distributed.md`` for which route to use.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import tensorflow as tf
from numpy.typing import DTypeLike

from seqprep._core.checks import check_choice, check_int, needs_sampler
from seqprep._core.options import Options, options_for, takes_options
from seqprep._core.ragged import lengths_of
from seqprep.inputs._padding import Side
from seqprep.inputs._stage_fields import _check_counts, field_label, split_fields
from seqprep.inputs._stage_widths import _sampler_columns
from seqprep.inputs._targets import Targets
from seqprep.planning import BucketSampler
from seqprep.planning._replicas import (
    ReplicaPadTo,
    _LocalReplicasSampler,
    _per_replica_budget,
    _SamplerArgs,
)
from seqprep.readers._parquet import (
    _feature_columns,
    feature_fields,
    iter_parquet_sequences,
)
from seqprep.running import _keras_private as _kp
from seqprep.running._stream import attach_stream, find_stream
from seqprep.running._tfdata import BUCKETED_READS, bucketed_dataset

__all__ = [
    "distributed_bucketed_dataset",
    "fit_distributed",
    "local_data_service",
    "parquet_sequence_dataset",
    "replica_dataset_fn",
    "service_bucketed_dataset",
]



@needs_sampler("BucketSampler")
@takes_options
def replica_dataset_fn(
    x: Any,
    y: Any = None,
    *,
    sampler: BucketSampler,
    padding: Side = "post",
    value: Any = 0,
    sample_weight: Any = None,
    pad_to: ReplicaPadTo = "step",
    epoch: int = 0,
    targets: Targets = "auto",
    options: Options | None = None,
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A ``dataset_fn`` for ``strategy.distribute_datasets_from_function``: aligned replicas.

    The returned function takes a ``tf.distribute.InputContext`` and returns this input
    pipeline's ``tf.data.Dataset`` of per-replica padded batches. ``sampler`` is the global
    plan: a :class:`~seqprep.BucketSampler` built on ``sequence_lengths(x)`` with the
    *global* ``batch_size`` (or ``max_tokens``), as in ``model.fit``, and one shard
    (``num_shards=1``). Every replica ``k`` of the ``num_replicas_in_sync`` plays shard ``k``
    of that configuration: the sampler's lengths, boundaries, ``shuffle``, ``seed``,
    ``drop_remainder``, ``overlong``, ``max_length`` and options, with
    ``num_shards=num_replicas_in_sync`` and the replica's share of the budget (as Grain's
    ``ShardOptions`` bundles shard arguments, the sampler bundles the plan's), so all
    replicas run the same number of steps with the same bucket at each step. A pipeline that
    feeds several local replicas (``MirroredStrategy`` on one machine) interleaves its
    replicas' shards, because TensorFlow hands a pipeline's elements to its replicas in turn.
    When there is one replica per input pipeline (``MultiWorkerMirroredStrategy`` with one
    device per worker), this is exactly ``num_shards=input_context.num_input_pipelines``,
    ``shard_index=input_context.input_pipeline_id``. The ``DistributedDataset`` TensorFlow
    builds from it counts a pipeline's batches (steps x local replicas) as its cardinality,
    which Keras's ``fit`` would take as steps; for ``fit``, use
    :func:`distributed_bucketed_dataset`, which builds it and counts steps.

    Each replica gets ``input_context.get_per_replica_batch_size(batch_size)`` rows, or
    ``max_tokens // num_replicas_in_sync`` padded tokens (``quadratic_length`` holds each
    replica's row cost to that share). The boundaries are the sampler's (default: fitted on
    all lengths under the global budget, the same on every worker; pass ``boundaries=`` to
    the sampler to choose them).

    ``pad_to="step"`` (default) pads every replica's batch at a step to the longest sequence
    in any replica's batch at that step: every replica sees the same time length at every
    step. ``"bucket"`` pads to the bucket's pad length (at most ``num_buckets`` shapes; build
    the sampler with ``options=seqprep.PlanOptions(merge_leftovers=False)`` to keep each bucket's
    leftover batch in its bucket: only the final batches re-split so that every replica gets
    one may still mix buckets, and they pad to the largest). Batch sizes can differ by a few
    rows between replicas at the steps that take a bucket's leftovers; the first step always
    has equal sizes (Keras builds the model from it).

    Args:
        x: a sequence collection (as :func:`~seqprep.bucketed_dataset`).
        y: optional per-sequence labels or per-timestep targets.
        sampler: the global :class:`~seqprep.BucketSampler` (one shard) built on
            ``sequence_lengths(x)``; its ``batch_size`` (divisible by the number of replicas)
            or ``max_tokens`` is global, per step over all replicas.
        padding: ``"post"`` or ``"pre"``.
        value: padding value.
        sample_weight: as :func:`~seqprep.bucketed_dataset`.
        pad_to: ``"step"`` or ``"bucket"``.
        epoch: the sampler epoch to play first.
        targets: ``"auto"``, ``"sequence"`` or ``"step"``: how to read ``y`` (see
            :func:`seqprep.resolve_targets`).
        options: a :class:`seqprep.Options` of the rarely set options this reads, as
            :func:`~seqprep.bucketed_dataset`: ``epochs`` (consecutive epochs in the dataset;
            use ``steps_per_epoch`` in ``fit``), ``reshuffle_each_iteration`` (every new pass
            plays the next epochs, the default: ``model.fit(..., epochs=N)`` trains N
            different orders, the replicas still aligned step by step; False replays the same
            epochs), ``truncating``, ``dtype``, ``allow_nonfinite`` and ``targets_field``.

    Returns:
        ``dataset_fn(input_context) -> tf.data.Dataset``.

    Raises:
        TypeError: ``sampler`` is not a BucketSampler (or is missing).
        ValueError: a sharded ``sampler`` or another ``pad_to`` (raised at once), a global
            ``batch_size`` not divisible by the number of replicas (raised by the function),
            or any error of :class:`~seqprep.BucketSampler` /
            :func:`~seqprep.bucketed_dataset`.

    Example:
        >>> import tensorflow as tf
        >>> from seqprep import BucketSampler, sequence_lengths
        >>> x = [[1], [2, 2], [3], [4, 4], [5, 5, 5], [6, 6, 6]]
        >>> sampler = BucketSampler(sequence_lengths(x), batch_size=2, boundaries=[2],
        ...                         shuffle=False)
        >>> fn = replica_dataset_fn(x, sampler=sampler)
        >>> ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
        ...                                  num_replicas_in_sync=2)
        >>> [b.numpy().tolist() for b in fn(ctx)]
        [[[3]], [[4, 4]], [[6, 6, 6]]]
    """
    opts = options_for(options, "replica_dataset_fn", reads=_REPLICA_READS)
    check_choice("pad_to", pad_to, ("step", "bucket"))
    _check_global_sampler(sampler)
    field_pad_to = _fields_pad_to(x, sampler)

    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        replicas = int(input_context.num_replicas_in_sync)
        pipelines = int(input_context.num_input_pipelines)
        if replicas % pipelines:
            raise ValueError(
                f"{replicas} replicas cannot be spread evenly over {pipelines} input pipelines."
            )
        per_size, per_tokens = _per_replica_budget(sampler.batch_size, sampler.max_tokens,
                                                   replicas)
        if per_size is not None:
            per_size = int(input_context.get_per_replica_batch_size(sampler.batch_size))
        args = _SamplerArgs.of(sampler, per_size, per_tokens)
        local = replicas // pipelines
        shards = _LocalReplicasSampler(
            args, replicas, int(input_context.input_pipeline_id) * local, local, pad_to
        )
        return bucketed_dataset(
            x,
            y,
            sampler=shards,
            padding=padding,
            value=value,
            sample_weight=sample_weight,
            pad_to=field_pad_to,
            epoch=epoch,
            targets=targets,
            options=opts,
        )

    return dataset_fn


# The shared options (seqprep.Options) the replica datasets read.
_REPLICA_READS = ("epochs", "reshuffle_each_iteration", "truncating", "dtype", "allow_nonfinite",
                  "targets_field")


def _fields_pad_to(x: Any, sampler: BucketSampler) -> Any:
    """The ``pad_to`` of every replica's ``bucketed_dataset``, after checking that ``sampler``
    plans ``x`` (its fields, for a dict or tuple ``x``): ``"bucket"``, the widths the replica
    plans share at each step, for every field a sampler column plans. A 1-D sampler of
    several fields plans one of them; the others pad to their own batch's longest
    (``"batch"``), so their widths may differ between replicas at a step."""
    kind, keys, items = split_fields(x)
    labels = [field_label("x", kind, key) for key in keys]
    raw = [lengths_of(item, label) for item, label in zip(items, labels, strict=True)]
    if kind != "single":
        _check_counts(list(zip(labels, raw, strict=True)), "x")
    columns = _sampler_columns(sampler, kind, keys, labels, raw, BucketSampler)
    if kind == "single" or np.ndim(sampler.lengths) == 2:
        return "bucket"
    return {key: "batch" if col is None else "bucket"
            for key, col in zip(keys, columns, strict=True)}


def _check_global_sampler(sampler: Any) -> None:
    """Refuse a sampler that is not one unsharded BucketSampler: the replicas' shards are
    derived from it."""
    if not isinstance(sampler, BucketSampler):
        raise TypeError(
            "Argument `sampler` must be a seqprep.BucketSampler (the global plan). Received: "
            f"{type(sampler).__name__}\n- Pass sampler=seqprep.BucketSampler("
            "seqprep.sequence_lengths(x), batch_size=<global batch size>)."
        )
    if sampler.num_shards != 1:
        raise ValueError(
            "Argument `sampler` must be the global plan (num_shards=1): every replica's shard "
            f"is derived from it. Received: a sampler with num_shards={sampler.num_shards}, "
            f"shard_index={sampler.shard_index}\n- Build it without num_shards / shard_index; "
            "its batch_size or max_tokens is the global one, over all replicas."
        )


@needs_sampler("BucketSampler")
@takes_options
def distributed_bucketed_dataset(
    strategy: tf.distribute.Strategy,
    x: Any,
    y: Any = None,
    *,
    sampler: BucketSampler,
    epoch: int = 0,
    padding: Side = "post",
    pad_to: ReplicaPadTo = "step",
    **kwargs: Any,
) -> tf.distribute.DistributedDataset:
    """Bucketed batches for ``strategy``, every replica in step: the distributed ``fit`` input.

    ``strategy.distribute_datasets_from_function(replica_dataset_fn(...))``: see
    :func:`replica_dataset_fn` for the guarantees (equal step counts, the same bucket and padded
    length on every replica at every step) and the arguments. Under ``MirroredStrategy`` pass
    the result to ``model.fit`` (built and compiled under ``strategy.scope()``); under
    ``MultiWorkerMirroredStrategy``, to :func:`fit_distributed`. Its ``cardinality`` is the
    number of steps per pass (TensorFlow's own dataset counts a pipeline's batches, i.e. steps
    x local replicas), so ``fit`` runs exactly the planned steps in every epoch, with no empty
    step past the data, and so does a validation pass (``validation_data=``).

    Args:
        strategy: a ``tf.distribute`` strategy.
        x: a sequence collection.
        y: optional labels or per-timestep targets.
        sampler: the global :class:`~seqprep.BucketSampler` (one shard, global
            ``batch_size`` divisible by the number of replicas, or global ``max_tokens``),
            built on ``sequence_lengths(x)``; the same on every worker.
        epoch: the sampler epoch to play.
        padding: ``"post"`` or ``"pre"``.
        pad_to: ``"step"`` or ``"bucket"``.
        **kwargs: the other keyword arguments of :func:`replica_dataset_fn` (``value``,
            ``sample_weight``, ``targets``, ``options``).

    Returns:
        A ``tf.distribute.DistributedDataset``: TensorFlow's, with ``cardinality`` in steps.

    Raises:
        ValueError: as :func:`replica_dataset_fn`.

    Example:
        >>> import tensorflow as tf
        >>> from seqprep import BucketSampler, sequence_lengths
        >>> strategy = tf.distribute.get_strategy()  # the default: one replica
        >>> x = [[1], [2, 2], [3], [4, 4], [5, 5, 5], [6, 6, 6]]
        >>> sampler = BucketSampler(sequence_lengths(x), batch_size=2, boundaries=[2])
        >>> dd = distributed_bucketed_dataset(strategy, x, sampler=sampler)
        >>> [int(b.shape[0]) for b in dd]
        [2, 2, 2]
    """
    fn = replica_dataset_fn(x, y, sampler=sampler, epoch=epoch, padding=padding, pad_to=pad_to,
                            **kwargs)
    built: list[tf.data.Dataset] = []
    local: set[int] = set()  # replicas per input pipeline: batches per step

    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        built.append(fn(input_context))
        local.add(input_context.num_replicas_in_sync // input_context.num_input_pipelines)
        return built[-1]

    distributed = strategy.distribute_datasets_from_function(dataset_fn)
    if len(local) == 1:  # built (not deferred to a coordinator): Keras reads steps, not batches
        _STEP_COUNTED.add(_kp.count_steps(distributed, local.pop()))
    streams = [s for s in map(find_stream, built) if s is not None]
    if len(streams) == 1:  # this process's one pipeline: BackupAndRestore(dataset=...) finds it
        attach_stream(distributed, streams[0])
    return distributed


# The datasets distributed_bucketed_dataset returned: their cardinality counts steps.
_STEP_COUNTED: weakref.WeakSet = weakref.WeakSet()


def _steps_of(dataset: Any, strategy: tf.distribute.Strategy) -> int:
    """Steps per pass of a distributed ``dataset`` (negative if unknown): its cardinality,
    but for TensorFlow's ``distribute_datasets_from_function`` datasets that
    :func:`distributed_bucketed_dataset` did not build, a pipeline's batches per local
    replica."""
    card = dataset.cardinality
    card = int(card() if callable(card) else card)
    if card < 0 or dataset in _STEP_COUNTED or not _kp.counts_pipeline_batches(dataset):
        return card
    try:
        local = max(1, len(strategy.extended.worker_devices))
    except RuntimeError:  # the default strategy: one replica
        local = 1
    return card // local


def fit_distributed(
    model: Any,
    dataset: Any,
    *,
    epochs: int = 1,
    steps_per_epoch: int | None = None,
    strategy: tf.distribute.Strategy | None = None,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
) -> Any:
    """Train a compiled Keras model on a distributed dataset with a plain distributed loop.

    Each step runs the model's own ``train_step`` on every replica with ``strategy.run``
    inside one ``tf.function`` (traced once: the input signature comes from the distributed
    iterator, so every worker traces the same graph), which is what ``model.fit`` does
    inside. Use it where Keras 3's ``fit`` cannot take the strategy: under
    ``MultiWorkerMirroredStrategy`` ``fit`` fails before the first step (keras-team/keras issue
    20585). Loss scaling, gradient all-reduce and metrics are Keras's.

    Args:
        model: a Keras model built and compiled under ``strategy.scope()``.
        dataset: a ``tf.distribute.DistributedDataset`` (e.g. from
            :func:`distributed_bucketed_dataset`).
        epochs: passes over ``dataset``; each pass creates a fresh iterator.
        steps_per_epoch: steps per pass; default: the dataset's cardinality (steps, for
            :func:`distributed_bucketed_dataset` and ``experimental_distribute_dataset``), per
            local replica for another ``distribute_datasets_from_function`` dataset (which
            counts an input pipeline's batches).
        strategy: default: ``model.distribute_strategy``.
        on_step: called as ``on_step(epoch, step, logs)`` after every step (logs of the first
            local replica, as floats).

    Returns:
        A ``keras.callbacks.History`` whose ``history`` maps each metric to one value per
        epoch, plus ``"steps"``: the steps run in each epoch.

    Raises:
        ValueError: no ``steps_per_epoch`` and the dataset's cardinality is unknown.

    Example:
        >>> import keras, numpy as np, tensorflow as tf
        >>> strategy = tf.distribute.get_strategy()
        >>> x = [np.ones((n, 1), "float32") for n in (1, 2, 3, 4)]
        >>> with strategy.scope():
        ...     model = keras.Sequential([keras.Input((None, 1)), keras.layers.LSTM(2),
        ...                               keras.layers.Dense(1)])
        ...     model.compile("sgd", "mse")
        >>> from seqprep import BucketSampler, sequence_lengths
        >>> sampler = BucketSampler(sequence_lengths(x), batch_size=2)
        >>> dd = distributed_bucketed_dataset(strategy, x, np.zeros(4), sampler=sampler)
        >>> fit_distributed(model, dd, epochs=2).history["steps"]
        [2, 2]
    """
    import keras

    epochs = check_int("epochs", epochs, minimum=1)
    strategy = strategy or model.distribute_strategy
    if steps_per_epoch is None:
        steps_per_epoch = _steps_of(dataset, strategy)
        if steps_per_epoch < 0:
            raise ValueError(
                "The cardinality of `dataset` is unknown, so the number of steps is too.\n"
                "- Pass steps_per_epoch=<steps>."
            )
    steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, minimum=1)
    with strategy.scope():
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)

    @tf.function
    def train_one(iterator: Any) -> Any:
        return strategy.run(model.train_step, args=(next(iterator),))

    history = keras.callbacks.History()
    history.set_model(model)
    history.on_train_begin()
    for e in range(epochs):
        model.reset_metrics()
        iterator = iter(dataset)
        logs: dict[str, float] = {}
        for step in range(steps_per_epoch):
            out = train_one(iterator)
            logs = {
                k: float(np.asarray(strategy.experimental_local_results(v)[0]))
                for k, v in out.items()
            }
            if on_step is not None:
                on_step(e, step, logs)
        history.on_epoch_end(e, {**logs, "steps": steps_per_epoch})
    return history


# --------------------------------------------------------------------------- tf.data service


@dataclass
class LocalDataService:
    """A ``tf.data`` service dispatcher and workers running in this process.

    Attributes:
        target: the dispatcher address for ``tf.data.experimental.service.distribute``.
        dispatcher: the ``DispatchServer``.
        workers: the ``WorkerServer`` objects.
    """

    target: str
    dispatcher: Any
    workers: list[Any]


def _free_loopback_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_data_service(
    num_workers: int = 2, *, static_sharding: bool = False, work_dir: str | None = None
) -> Iterator[LocalDataService]:
    """Start a ``tf.data`` service dispatcher and ``num_workers`` workers in this process.

    Everyone is addressed on ``localhost``; ports are picked by the operating system.
    Servers are stopped when the block exits, even on error. For tests, examples and one
    machine with spare cores; in production, run ``DispatchServer``/``WorkerServer`` on their
    own hosts and pass the dispatcher address to :func:`service_bucketed_dataset`.

    Args:
        num_workers: workers to start (at least 1).
        static_sharding: list the workers in the dispatcher config (fixed ports, picked free
            on loopback first), which static sharding policies (``ShardingPolicy.DATA`` ...)
            need.
        work_dir: dispatcher journal directory (fault tolerance); default: none.

    Yields:
        A :class:`LocalDataService`; ``.target`` is the dispatcher address.

    Example:
        >>> import tensorflow as tf
        >>> with local_data_service(num_workers=1) as service:
        ...     ds = tf.data.Dataset.range(3).apply(tf.data.experimental.service.distribute(
        ...         "parallel_epochs", service.target))
        ...     sorted(int(v) for v in ds)
        [0, 1, 2]
    """
    num_workers = check_int("num_workers", num_workers, minimum=1)
    svc = tf.data.experimental.service
    ports = [_free_loopback_port() for _ in range(num_workers)] if static_sharding else None
    config = svc.DispatcherConfig(
        port=0,
        work_dir=work_dir,
        fault_tolerant_mode=work_dir is not None,
        worker_addresses=[f"localhost:{p}" for p in ports] if ports else None,
    )
    dispatcher = svc.DispatchServer(config)
    workers: list[Any] = []
    try:
        address = dispatcher.target.split("://")[1]
        for i in range(num_workers):
            workers.append(
                svc.WorkerServer(
                    svc.WorkerConfig(
                        dispatcher_address=address,
                        worker_address=f"localhost:{ports[i]}" if ports else "localhost:%port%",
                        port=ports[i] if ports else 0,
                    )
                )
            )
        yield LocalDataService(target=dispatcher.target, dispatcher=dispatcher, workers=workers)
    finally:
        for w in workers:
            _kp.stop_server(w)
        _kp.stop_server(dispatcher)


@needs_sampler("BucketSampler")
@takes_options
def service_bucketed_dataset(
    service: str | LocalDataService,
    x: Any,
    y: Any = None,
    *,
    sampler: BucketSampler,
    processing_mode: str | Any = "distributed_epoch",
    job_name: str | None = None,
    distinct_epochs: int = 4,
    **kwargs: Any,
) -> tf.data.Dataset:
    """A bucketed pipeline whose batches are produced by ``tf.data`` service workers.

    Service workers run only TensorFlow ops, so the sampler's plans are made here, in
    Python, before anything is served: the plans of ``distinct_epochs`` consecutive sampler
    epochs (``epoch``, ``epoch + 1`` ...) are each built as :func:`~seqprep.bucketed_dataset`
    with the option ``reshuffle_each_iteration=False`` (constants only) and registered with
    the dispatcher. Pass ``p`` over the returned dataset (counted in this process, from 0) reads
    the registered epoch ``epoch + p % distinct_epochs`` as a new job: a different order on
    each of ``distinct_epochs`` consecutive passes, every sequence exactly once per pass (as
    the mode below allows), then the cycle repeats.
    ``options=seqprep.Options(reshuffle_each_iteration=False)`` opts out: one registered
    dataset, every pass replays epoch ``epoch``.

    What a pass delivers depends on ``processing_mode``:

    * ``"distributed_epoch"`` (``ShardingPolicy.DYNAMIC``, the default): the dispatcher hands
      out the plan's batches to the workers one split at a time: **every batch exactly once**
      across all workers (while no worker fails; a batch being produced by a worker that dies
      is lost: at most once). Batches arrive in completion order, not the plan's order.
    * ``ShardingPolicy.DATA`` / ``FILE_OR_DATA`` (needs a fixed worker list:
      ``local_data_service(static_sharding=True)``): worker ``i`` keeps batches ``i, i + n,
      ...``: every batch exactly once, but each worker builds all batches and discards the
      others'.
    * ``"parallel_epochs"`` (``ShardingPolicy.OFF``): every worker plays the whole epoch:
      with ``n`` workers **every batch arrives n times**. Exactly once only with one worker.

    In the exactly-once modes (without ``job_name``) the dataset's cardinality is
    ``len(sampler)``, and a pass that delivers fewer batches (a worker failed) raises
    ``tf.errors.FailedPreconditionError`` rather than ending short.

    Several consumers reading one job (``job_name``) share its batches: each gets a subset,
    not necessarily of equal size, so do not feed synchronous replicas from one job; use
    :func:`distributed_bucketed_dataset` for replicas. A named job is one job on one
    registered dataset (TensorFlow takes job names as Python strings, fixed when the dataset
    is built), so with ``job_name`` every pass replays epoch ``epoch``, as with
    ``reshuffle_each_iteration=False``.

    Args:
        service: the dispatcher address (``"grpc://host:port"``) or a
            :class:`LocalDataService`.
        x: a sequence collection.
        y: optional labels or per-timestep targets.
        sampler: a :class:`~seqprep.BucketSampler` built on ``sequence_lengths(x)``.
        processing_mode: ``"distributed_epoch"``, ``"parallel_epochs"`` or a
            ``tf.data.experimental.service.ShardingPolicy``.
        job_name: share one job between consumers (then every pass replays epoch
            ``epoch``).
        distinct_epochs: sampler epochs registered, one played per pass in turn. Each is a
            whole copy of the data in the dispatcher (registration time and dispatcher memory
            grow with it): 4 gives four different orders in a row at four times the memory
            of a fixed epoch.
        **kwargs: keyword arguments of :func:`~seqprep.bucketed_dataset` (``padding``,
            ``pad_to``, ``epoch``, ``options`` ...); the option
            ``reshuffle_each_iteration=False`` replays epoch ``epoch`` on every pass; the
            option ``epochs > 1`` is refused (a pass is one epoch).

    Returns:
        A ``tf.data.Dataset`` of padded batches served by the workers.

    Raises:
        ValueError: the option ``epochs > 1``, a bad ``distinct_epochs``, or as
            :func:`~seqprep.bucketed_dataset`.

    Example:
        >>> from seqprep import BucketSampler, sequence_lengths
        >>> x = [[1], [2, 2], [3], [4, 4]]
        >>> s = BucketSampler(sequence_lengths(x), boundaries=[2], batch_size=2)
        >>> with local_data_service(num_workers=2) as service:
        ...     ds = service_bucketed_dataset(service, x, sampler=s)
        ...     sorted(b.numpy().tolist() for b in ds)
        [[[1], [3]], [[2, 2], [4, 4]]]
    """
    opts = options_for(kwargs.pop("options", None), "service_bucketed_dataset",
                       reads=BUCKETED_READS)
    if opts.epochs != 1:
        raise ValueError(
            "Argument `options` sets `epochs`, which the tf.data service does not support: "
            f"each pass plays one sampler epoch. Received: epochs={opts.epochs!r}\n- Drop "
            "`epochs`; passes already cycle through `distinct_epochs` different epochs."
        )
    distinct_epochs = check_int("distinct_epochs", distinct_epochs, minimum=1)
    reshuffle = opts.reshuffle_each_iteration
    # Service workers cannot run the Python planner: every registered epoch is constants.
    kwargs["options"] = replace(opts, reshuffle_each_iteration=False)
    target = service.target if isinstance(service, LocalDataService) else service
    first = kwargs.pop("epoch", 0)
    if not reshuffle or distinct_epochs == 1 or job_name is not None:
        # Service workers cannot run the Python planner: one fixed epoch, made of constants.
        dataset = bucketed_dataset(
            x, y, sampler=sampler, epoch=first, **kwargs
        )
        served = dataset.apply(
            tf.data.experimental.service.distribute(
                processing_mode=processing_mode, service=target, job_name=job_name
            )
        )
    else:
        served = _service_cycle(
            target, x, y, sampler, processing_mode, first, distinct_epochs, kwargs
        )
    if job_name is None and _exactly_once(processing_mode):
        # A known length lets Keras count steps from the first epoch (no "ran out of data"
        # warning), and a batch lost with a failed worker raises instead of going unnoticed.
        served = served.apply(tf.data.experimental.assert_cardinality(len(sampler)))
    return served


def _exactly_once(processing_mode: Any) -> bool:
    policy = tf.data.experimental.service.ShardingPolicy
    if isinstance(processing_mode, str):
        return processing_mode == "distributed_epoch"
    return processing_mode in (policy.DYNAMIC, policy.DATA, policy.FILE_OR_DATA)


def _service_cycle(
    target: str,
    x: Any,
    y: Any,
    sampler: BucketSampler,
    processing_mode: str | Any,
    first: Any,
    distinct_epochs: int,
    kwargs: dict[str, Any],
) -> tf.data.Dataset:
    """Register ``distinct_epochs`` fixed epochs; pass ``p`` reads registered epoch
    ``p % distinct_epochs`` (a new job each pass, chosen here in the consumer)."""
    svc = tf.data.experimental.service
    first = check_int("epoch", first, minimum=0)
    ids, spec = [], None
    for e in range(first, first + distinct_epochs):
        one = bucketed_dataset(
            x, y, sampler=sampler, epoch=e, **kwargs
        )
        spec = one.element_spec
        ids.append(svc.register_dataset(target, one))
    t_ids = tf.stack(ids)
    passes = itertools.count()
    lock = threading.Lock()

    def next_pass() -> np.int64:
        # Counted in the consumer: workers only ever see fixed, registered epochs.
        with lock:
            return np.int64(next(passes))

    def begin(_: tf.Tensor) -> tf.Tensor:
        p = tf.numpy_function(next_pass, [], tf.int64, stateful=True)
        return tf.reshape(p, [])

    def one_pass(p: tf.Tensor) -> tf.data.Dataset:
        return svc.from_dataset_id(
            processing_mode, target, t_ids[p % distinct_epochs], element_spec=spec
        )

    return tf.data.Dataset.range(1).map(begin).flat_map(one_pass)


# --------------------------------------------------------------------------- streaming Parquet


def _tf_dtype_of(values: np.ndarray) -> tf.DType:
    return tf.string if values.dtype.kind in "OUS" else tf.as_dtype(values.dtype)


def parquet_sequence_dataset(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    features: str | Sequence[str] | dict[str, str | Sequence[str]],
    id: str | None = None,
    time: str | None = None,
    target: str | None = None,
    include_id: bool = False,
    rows_per_read: int = 65_536,
    check_grouping: bool = True,
    dtype: DTypeLike = np.float32,
) -> tf.data.Dataset:
    """An unbatched ``tf.data.Dataset`` of sequences streamed from Parquet, for bucketing.

    Reads with :func:`iter_parquet_sequences` (see it for the layouts, the grouping
    requirement and the memory bound), one read batch at a time, and unbatches each chunk in
    TensorFlow (Python runs once per read batch, not per sequence). Elements are ``x``
    (``(T,)`` or ``(T, num_features)``), ``(x, target)``, and with ``include_id`` the id last:
    ``(x, id)`` or ``(x, target, id)``: ready for ``.apply(seqprep.bucket_by_length(...))``.
    With ``features`` a dict of fields (list layout), ``x`` is a dict of sequences, one per
    field, each of its own length: pass ``bucket_by_length`` a ``length_fn`` (e.g. the
    longest field) and it pads each field to its own longest in every batch.

    Args:
        path: a ``.parquet`` file, a directory of them or a list.
        features: a column name or a list of names; a dict of them for several fields
            (list layout).
        id: the id column (long layout) or a per-row id column (list layout).
        time: a column ordering steps within a sequence (long layout).
        target: a column with one target per sequence.
        include_id: add each sequence's id to its element.
        rows_per_read: rows per Parquet read.
        check_grouping: detect ids whose rows are not contiguous (long layout).
        dtype: dtype of the sequence values.

    Returns:
        A ``tf.data.Dataset`` of unbatched sequences in file order (cardinality unknown).
        Errors found while reading (e.g. non-contiguous ids) surface during iteration as
        ``tf.errors.InvalidArgumentError`` carrying the ``ValueError`` message.

    Raises:
        ValueError: a missing column or an unusable layout (found from the first file's
            schema and first rows before the dataset is returned), ``include_id`` without
            ``id``.

    Example:
        >>> import os, tempfile
        >>> import pandas as pd
        >>> import seqprep as sp
        >>> path = os.path.join(tempfile.mkdtemp(), "steps.parquet")
        >>> pd.DataFrame({"id": [1, 1, 2, 3, 3, 3], "x": [1, 2, 3, 4, 5, 6]}).to_parquet(path)
        >>> ds = parquet_sequence_dataset(path, id="id", features="x", dtype="int32")
        >>> batches = ds.apply(sp.bucket_by_length([3], batch_size=2, buffer_size=None))
        >>> [b.numpy().tolist() for b in batches]
        [[[1, 2], [3, 0]], [[4, 5, 6]]]
    """
    if include_id and id is None:
        raise ValueError("Argument `include_id=True` needs `id`, the column of ids.")
    fields = feature_fields(features)
    options = dict(
        features=features, id=id, time=time, target=target, rows_per_read=rows_per_read,
        check_grouping=check_grouping, dtype=dtype,
    )
    # Read the first chunk now: it fixes the element types and reports setup errors here.
    probe = next(iter_parquet_sequences(path, **options), None)
    if probe is None:
        raise ValueError(f"{path!r} holds no rows.")
    def values_spec(columns: Any) -> tf.TensorSpec:
        cols, one = _feature_columns(columns)
        return tf.TensorSpec([None, *([] if one else [len(cols)])], tf.as_dtype(np.dtype(dtype)))

    lengths_spec = tf.TensorSpec([None], tf.int64)
    signature: list[Any] = (
        [values_spec(features), lengths_spec] if fields is None else
        [{name: values_spec(columns) for name, columns in features.items()},  # type: ignore
         {name: lengths_spec for name in fields}])
    if target is not None:
        assert probe.targets is not None
        signature.append(tf.TensorSpec([None], _tf_dtype_of(probe.targets)))
    if include_id:
        assert probe.ids is not None
        signature.append(tf.TensorSpec([None], _tf_dtype_of(probe.ids)))

    def chunks() -> Iterator[tuple[np.ndarray, ...]]:
        for c in iter_parquet_sequences(path, **options):
            out: list[np.ndarray] = [c.values, c.lengths]
            if target is not None:
                out.append(c.targets)  # type: ignore[arg-type]
            if include_id:
                out.append(c.ids)  # type: ignore[arg-type]
            yield tuple(out)

    ds = tf.data.Dataset.from_generator(chunks, output_signature=tuple(signature))

    def split(values: Any, lengths: Any, *rest: tf.Tensor) -> Any:
        seqs = tf.nest.map_structure(
            lambda v, n: tf.RaggedTensor.from_row_lengths(v, n, validate=False), values, lengths)
        return (seqs, *rest) if rest else seqs

    ds = ds.map(split).unbatch()
    # Unbatched ragged rows are typed ragged with ragged_rank 0; retype them as dense.
    return ds.map(lambda *e: e[0] if len(e) == 1 else e)
