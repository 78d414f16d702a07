"""Replica plans in numpy: one bucketed epoch split over data-parallel replicas, step by step.

The shards of one :class:`~seqprep.BucketSampler` configuration have equal batch counts and the
same bucket at every step; :func:`replica_plans` adds each step's padded width and an order
that starts on a step with equal batch sizes everywhere. ``seqprep.running._distributed``
feeds these plans to ``tf.distribute``; this module needs neither TensorFlow nor Keras.

Example:
    >>> from seqprep import BucketSampler
    >>> shards = [BucketSampler([1, 2, 3, 4], batch_size=2, num_shards=2, shard_index=k,
    ...                         shuffle=False) for k in range(2)]
    >>> [p.pad_lengths.tolist() for p in replica_plans(shards)]
    [[4], [4]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from seqprep._core.checks import check_choice, check_int, check_one_of
from seqprep.planning._options import PLAN_READS, PlanOptions
from seqprep.planning._plan import BatchPlan
from seqprep.planning._protocol import EpochPlanner
from seqprep.planning._sampler import BucketSampler

__all__ = ["ReplicaPadTo", "ReplicaPlanner", "batches_per_step", "replica_plans"]

ReplicaPadTo = Literal["step", "bucket"]
_GLOBAL_FIX = (
    "Both are global, over all replicas: `batch_size` rows per step, or `max_tokens` padded "
    "tokens per step."
)


# --------------------------------------------------------------------------- replica plans


def _per_replica_budget(
    batch_size: int | None, max_tokens: int | None, num_replicas: int
) -> tuple[int | None, int | None]:
    """Split a global ``batch_size`` or ``max_tokens`` evenly over ``num_replicas``."""
    check_one_of(_GLOBAL_FIX, batch_size=batch_size, max_tokens=max_tokens)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
        if batch_size % num_replicas:
            raise ValueError(
                f"Argument `batch_size`={batch_size} is the global batch size and must be "
                f"divisible by the number of replicas ({num_replicas}).\n"
                f"- Pass a multiple of {num_replicas}, e.g. "
                f"batch_size={max(num_replicas, batch_size // num_replicas * num_replicas)}."
            )
        return batch_size // num_replicas, None
    max_tokens = check_int("max_tokens", max_tokens, minimum=1)
    if max_tokens < num_replicas:
        raise ValueError(
            f"Argument `max_tokens`={max_tokens} is the global token budget and must be at "
            f"least the number of replicas ({num_replicas})."
        )
    return None, max_tokens // num_replicas


@dataclass(frozen=True)
class _SamplerArgs:
    """One :class:`BucketSampler` configuration apart from its budget and sharding: what every
    replica's sampler shares with the global sampler it is derived from."""

    lengths: Any  # as the global sampler was given them (a dict for named fields)
    batch_size: int | None
    max_tokens: int | None
    kwargs: dict[str, Any]  # boundaries, shuffle, seed, ..., options

    @classmethod
    def of(
        cls, sampler: BucketSampler, batch_size: int | None, max_tokens: int | None
    ) -> _SamplerArgs:
        """The configuration of ``sampler`` (its raw lengths, boundaries and options) with
        the per-replica ``batch_size`` / ``max_tokens``."""
        raw, names = sampler._raw, sampler.field_names
        lengths = raw if names is None else dict(
            zip(names, raw.T if raw.ndim == 2 else [raw], strict=True))
        options = PlanOptions(**{name: getattr(sampler, name) for name in PLAN_READS})
        kwargs = {name: getattr(sampler, name) for name in (
            "boundaries", "shuffle", "seed", "drop_remainder", "overlong", "max_length")}
        return cls(lengths, batch_size, max_tokens, {**kwargs, "options": options})

    def sampler_kwargs(self, num_shards: int, shard_index: int) -> dict[str, Any]:
        """Keyword arguments of the ``BucketSampler`` for one shard of this plan."""
        return {**self.kwargs, "batch_size": self.batch_size, "max_tokens": self.max_tokens,
                "num_shards": num_shards, "shard_index": shard_index}

    def shard(self, num_shards: int, shard_index: int) -> BucketSampler:
        return BucketSampler(self.lengths, **self.sampler_kwargs(num_shards, shard_index))


def _step_order(sizes: np.ndarray) -> np.ndarray:
    """Step order that starts with a step where every replica has the same number of rows.

    Keras's ``fit`` builds the model from the first step's batches averaged over replicas,
    which needs equal shapes; the rest of the plan keeps the sampler's order.
    """
    order = np.arange(sizes.shape[1])
    if sizes.shape[1]:
        equal = np.flatnonzero((sizes == sizes[:1]).all(axis=0))
        if equal.size and equal[0]:
            order[[0, equal[0]]] = order[[equal[0], 0]]
    return order


def replica_plans(
    sampler_shards: Sequence[BucketSampler], epoch: int = 0, *, pad_to: ReplicaPadTo = "step"
) -> list[BatchPlan]:
    """One epoch of every replica's batches, aligned step by step.

    Each replica plays its sampler shard's batches; the shards of one :class:`BucketSampler`
    configuration already have equal batch counts and the same bucket at every step. This adds
    the padded width of each step: with ``pad_to="step"``, the longest sequence in any
    replica's batch at that step (so every replica pads to the same length, the least padding
    that keeps the replicas in step); with ``"bucket"``, the bucket's pad length. For shards of
    a sampler of several fields the same holds per field (``field_pad_lengths``). The steps
    are then reordered identically for all replicas so that the first one has equal batch
    sizes everywhere (what Keras's ``fit`` needs to build the model).

    Args:
        sampler_shards: the ``num_shards`` samplers of one configuration, shard 0 first.
        epoch: the epoch to plan.
        pad_to: ``"step"`` or ``"bucket"``.

    Returns:
        One :class:`~seqprep.planning.BatchPlan` per replica; ``pad_lengths`` is the padded
        width of each step (the same in every plan).

    Raises:
        ValueError: the samplers are not the shards ``0..n-1`` of one configuration.

    Example:
        >>> from seqprep import BucketSampler
        >>> lengths = [1, 2, 3, 4, 7, 8, 9, 9]
        >>> shards = [BucketSampler(lengths, boundaries=[5], batch_size=2, num_shards=2,
        ...                         shard_index=k, shuffle=False) for k in range(2)]
        >>> a, b = replica_plans(shards)
        >>> [x.tolist() for x in a.batches], [x.tolist() for x in b.batches]
        ([[0, 1], [4, 5]], [[2, 3], [6, 7]])
        >>> a.pad_lengths.tolist(), b.pad_lengths.tolist()
        ([4, 9], [4, 9])
    """
    check_choice("pad_to", pad_to, ("step", "bucket"))
    shards = list(sampler_shards)
    if not shards or any(not isinstance(s, BucketSampler) for s in shards):
        raise TypeError(
            "Argument `sampler_shards` must be a non-empty list of BucketSampler. Received: "
            f"{[type(s).__name__ for s in shards][:4]}\n- Pass "
            "[BucketSampler(lengths, ..., num_shards=n, shard_index=k) for k in range(n)]."
        )
    n = len(shards)
    if [s.shard_index for s in shards] != list(range(n)) or any(s.num_shards != n for s in shards):
        raise ValueError(
            "Argument `sampler_shards` must hold shards 0..n-1 of one sampler configuration, "
            f"in order, each built with num_shards=n. Received shard indices "
            f"{[s.shard_index for s in shards]} with num_shards "
            f"{sorted({s.num_shards for s in shards})}\n- Pass "
            "[BucketSampler(lengths, ..., num_shards=n, shard_index=k) for k in range(n)]."
        )
    plans = [s.plan(epoch) for s in shards]
    sizes = np.stack([p.sizes for p in plans])
    field_widths = None
    if pad_to == "bucket":
        widths = plans[0].widths("bucket")
        field_widths = plans[0].field_pad_lengths
    elif plans[0].field_pad_lengths is not None:  # several fields: each field's widest
        field_widths = np.max([p.field_widths("batch", s.lengths)
                               for s, p in zip(shards, plans, strict=True)], axis=0)
        widths = field_widths.max(axis=1)
    else:
        widths = np.max([p.widths("batch", s.lengths) for s, p in zip(shards, plans, strict=True)],
                        axis=0)
    order = _step_order(sizes)
    return [
        _pick_batches([p], np.zeros(order.size, np.int64), order, p.buckets[order],
                      widths[order], p.epoch, p.num_dropped,
                      None if field_widths is None else field_widths[order])
        for p in plans
    ]


class ReplicaPlanner(EpochPlanner):
    """One replica's planner of a data-parallel run: its shard's batches, aligned step by step.

    ``plan(epoch)`` is ``replica_plans(sampler_shards, epoch, pad_to=pad_to)[replica]``: the
    batches of shard ``replica``, each step padded to the width every replica shares, in the
    step order all replicas share (see :func:`replica_plans`). A :class:`~seqprep.Planner`:
    ``len`` is the shards' batches per epoch, iteration yields the current epoch's remaining
    batches, and ``state_dict`` / ``load_state_dict`` resume mid-epoch.

    Args:
        sampler_shards: the ``num_shards`` samplers of one configuration, shard 0 first.
        replica: which replica's batches, in ``[0, num_shards)``.
        pad_to: ``"step"`` or ``"bucket"``.

    Raises:
        TypeError, ValueError: as :func:`replica_plans`, or a ``replica`` out of range.

    Example:
        >>> from seqprep import BucketSampler
        >>> lengths = [1, 2, 3, 4, 7, 8, 9, 9]
        >>> shards = [BucketSampler(lengths, boundaries=[5], batch_size=2, num_shards=2,
        ...                         shard_index=k, shuffle=False) for k in range(2)]
        >>> planner = ReplicaPlanner(shards, 1)
        >>> [b.tolist() for b in planner.plan(0)], planner.plan(0).pad_lengths.tolist()
        ([[2, 3], [6, 7]], [4, 9])
    """

    _RESUME_OPTIONS = "the same sampler shards, replica and pad_to"

    def __init__(
        self, sampler_shards: Sequence[BucketSampler], replica: int, *,
        pad_to: ReplicaPadTo = "step",
    ) -> None:
        self.shards = list(sampler_shards)
        self.pad_to = pad_to
        plans = replica_plans(self.shards, 0, pad_to=pad_to)  # checks the shards and pad_to
        self.replica = check_int("replica", replica, minimum=0)
        if self.replica >= len(plans):
            raise ValueError(
                f"Argument `replica` must be below the number of shards, {len(plans)}. "
                f"Received: replica={replica!r}\n- Pass a replica in [0, {len(plans)})."
            )
        self.seed = self.shards[self.replica].seed
        self.num_shards, self.shard_index = len(self.shards), self.replica
        self._cache = plans[self.replica]
        self._start_at(0, 0)

    def _plan(self, epoch: int) -> BatchPlan:
        return replica_plans(self.shards, epoch, pad_to=self.pad_to)[self.replica]

    def __len__(self) -> int:
        return len(self.shards[self.replica])

    def _fingerprint_parts(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        return (), (tuple(s._config_fingerprint() for s in self.shards), self.pad_to)

    def __repr__(self) -> str:
        return (f"ReplicaPlanner(replica {self.replica} of {self.num_shards}, "
                f"{len(self)} batches per epoch, pad_to={self.pad_to!r})")


def _pick_batches(
    plans: Sequence[BatchPlan], plan_ids: np.ndarray, batch_ids: np.ndarray,
    groups: np.ndarray, pad_lengths: np.ndarray, epoch: int, num_dropped: int,
    field_pad_lengths: np.ndarray | None = None,
) -> BatchPlan:
    """A plan of batch ``batch_ids[j]`` of ``plans[plan_ids[j]]`` for every ``j``, gathered in
    flat form (no loop over batches); ``field_pad_lengths`` for plans of several fields."""
    rows = np.concatenate([p.rows for p in plans])
    row_base = np.cumsum([0] + [p.rows.size for p in plans])[:-1]
    batch_base = np.cumsum([0] + [len(p) for p in plans])[:-1]
    starts = np.concatenate([p.splits[:-1] + b for p, b in zip(plans, row_base, strict=True)])
    sizes = np.concatenate([p.sizes for p in plans])
    picked = batch_base[plan_ids] + batch_ids
    sizes, starts = sizes[picked], starts[picked]
    splits = np.zeros(picked.size + 1, np.int64)
    np.cumsum(sizes, out=splits[1:])
    within = np.arange(splits[-1], dtype=np.int64) - np.repeat(splits[:-1], sizes)
    plan = BatchPlan._owning(rows[np.repeat(starts, sizes) + within], splits,
                             groups.astype(np.int64), pad_lengths.astype(np.int64), epoch,
                             num_dropped)
    plan._set_field_pads(field_pad_lengths)
    return plan


class _LocalReplicasSampler(BucketSampler):
    """The batches of this input pipeline's replicas, interleaved step by step.

    ``MultiDeviceIterator`` hands a pipeline's elements to its local replicas round-robin, so
    element ``step * r + j`` goes to local replica ``j``: interleaving the shards' plans gives
    each replica exactly its shard. ``pad_lengths`` carries the aligned step widths and is
    read by ``bucketed_dataset(pad_to="bucket")``.
    """

    def __init__(
        self, args: _SamplerArgs, num_replicas: int, first: int, count: int, pad_to: str
    ) -> None:
        super().__init__(args.lengths, **args.sampler_kwargs(num_replicas, first))
        self._shards = [args.shard(num_replicas, k) for k in range(num_replicas)]
        self._local = range(first, first + count)
        self.local_replicas = count
        self._pad_to = pad_to
        self._merged: BatchPlan | None = None

    def plan(self, epoch: int | None = None) -> BatchPlan:
        epoch = self.epoch if epoch is None else int(epoch)
        if self._merged is not None and self._merged.epoch == epoch:
            return self._merged
        plans = replica_plans(self._shards, epoch, pad_to=self._pad_to)
        local = [plans[k] for k in self._local]
        steps, count = len(local[0]), len(local)
        # Step-major: element step * count + j is local replica j's batch of that step.
        merged = _pick_batches(
            local, np.tile(np.arange(count), steps), np.repeat(np.arange(steps), count),
            np.repeat(local[0].buckets, count), np.repeat(local[0].pad_lengths, count),
            epoch, local[0].num_dropped,
            None if local[0].field_pad_lengths is None
            else np.repeat(local[0].field_pad_lengths, count, axis=0),
        )
        self._merged = merged
        return merged

    def __len__(self) -> int:
        return super().__len__() * len(self._local)


def batches_per_step(planner: Any) -> int:
    """How many of ``planner``'s batches one training step consumes: the one rule of what a
    "step" is for a pipeline that feeds several replicas.

    A step is one synchronous update of the model, the unit Keras counts (``batch`` in its
    callbacks, ``BackupAndRestore``'s saved step). The input pipeline of ``k`` local replicas
    (:class:`_LocalReplicasSampler`, ``MirroredStrategy`` on one machine) hands its batches
    to the replicas in turn, so a step consumes ``k`` of them; every other planner plays one
    batch per step. A position "after step ``s``" is batch ``s * batches_per_step`` of the
    pipeline's pass, the same step whatever the number of replicas per pipeline.

    Args:
        planner: a planner, or a :class:`~seqprep.running._stream.PlanCache` of one.

    Returns:
        The batches per step (``>= 1``).

    Example:
        >>> from seqprep import BucketSampler
        >>> batches_per_step(BucketSampler([1, 2, 3, 4], batch_size=2))
        1
    """
    planner = getattr(planner, "planner", planner)  # a PlanCache: the planner it caches
    return planner.local_replicas if isinstance(planner, _LocalReplicasSampler) else 1
