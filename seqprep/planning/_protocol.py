"""The one planner protocol: what every seqprep planner is (numpy only, like every planner).

A planner turns lengths into batches, one epoch at a time, deterministically in
``(seed, epoch)``. Every planner in :mod:`seqprep.planning` is an object with

* ``plan(epoch)``: that epoch's plan (a :class:`~seqprep.BatchPlan`, or its packed or windowed
  relative: :class:`~seqprep.PackedPlan`, :class:`~seqprep.TBPTTPlan`,
  :class:`~seqprep.DenseTBPTTPlan`); ``plan()`` is the current epoch's;
* ``len(planner)``: batches per epoch (for TBPTT windows: the current epoch's windows);
* ``state_dict()`` / ``load_state_dict(state)``: where iteration stands, to resume mid-epoch;
* ``set_epoch(epoch)`` and iteration over the current epoch's remaining batches.

:class:`~seqprep.BucketSampler`, :class:`~seqprep.PackSampler`,
:class:`~seqprep.PerLengthPlanner`, :class:`~seqprep.ReplicaPlanner`,
:class:`~seqprep.TBPTTPlanner` and the inference planner of :func:`seqprep.predict`
(``seqprep.planning._inference.InferencePlanner``, one plan for every epoch) are planners. The
functions :func:`~seqprep.plan_per_length`, :func:`~seqprep.plan_tbptt` and
:func:`~seqprep.replica_plans` return one epoch's plan of the matching planner.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from seqprep.planning._resumable import ResumableSampler

__all__ = ["Planner"]


@runtime_checkable
class Planner(Protocol):
    """What every seqprep planner is: ``plan(epoch)``, ``len``, ``state_dict`` and iteration.

    A ``typing.Protocol``: nothing to inherit, and ``isinstance(obj, seqprep.Planner)`` checks
    that the methods exist. A planner's plan depends only on its lengths, options, ``seed`` and
    the epoch, so two planners built alike agree, and pickling one keeps its plan and its
    position mid-epoch.

    Example:
        >>> import seqprep as sp
        >>> planners = [sp.BucketSampler([3, 1, 2, 5], batch_size=2),
        ...             sp.PerLengthPlanner([3, 1, 2, 5], batch_size=2),
        ...             sp.TBPTTPlanner([3, 1, 2, 5], window=2, batch_size=2)]
        >>> all(isinstance(p, sp.Planner) for p in planners)
        True
        >>> [sorted(int(i) for b in p.plan(0).batches for i in b) for p in planners]
        [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]]
    """

    def plan(self, epoch: int | None = None) -> Any:
        """The plan of ``epoch`` (default: the current epoch)."""
        ...

    def __len__(self) -> int:
        """Batches per epoch."""
        ...

    def __iter__(self) -> Iterator[Any]:
        """The current epoch's remaining batches."""
        ...

    def set_epoch(self, epoch: int) -> None:
        """Make ``epoch`` current, from its first batch."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Where iteration stands (plain Python values)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: iteration yields exactly the remaining batches."""
        ...


class EpochPlanner(ResumableSampler):
    """What the planners built on a planning function share: the last epoch's plan kept,
    ``batches`` read from it, and pickling that keeps the position mid-epoch (not the plan).

    A subclass sets up its options, then calls ``_start_at(0, 0)``, and defines
    ``_plan(epoch)``, ``__len__`` and ``_fingerprint_parts`` (see
    :class:`~seqprep.planning._resumable.ResumableSampler`).
    """

    _cache: Any = None

    def _plan(self, epoch: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def plan(self, epoch: int | None = None) -> Any:
        """The plan of ``epoch`` (default: the current epoch)."""
        epoch = self.epoch if epoch is None else self._check_epoch(epoch)
        cached = self._cache
        if cached is None or cached.epoch != epoch:
            cached = self._plan(epoch)
            self._cache = cached
        return cached

    def batches(self, epoch: int | None = None) -> list[Any]:
        """The batches of ``epoch`` (default: the current epoch)."""
        return list(self.plan(epoch).batches)

    def __getstate__(self) -> dict[str, Any]:
        moving = ("_cache", "_epoch", "_position", "_progress", "_generation")
        state = {k: v for k, v in self.__dict__.items() if k not in moving}
        state.update(self._position_state())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        position = {k: state.pop(k) for k in ("_epoch", "_position")}
        self.__dict__.update(state)
        self._restore_position(position)
