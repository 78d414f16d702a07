"""What every seqprep sampler shares: iterating an epoch's batches, moving between epochs,
and resuming mid-epoch from a fingerprinted ``state_dict``.

A subclass plans; this base plays the plan. The subclass provides ``batches(epoch)`` (a new
list of this shard's batches for that epoch, depending only on ``(seed, epoch)``),
``__len__`` (batches per epoch), ``_config_fingerprint()`` (a digest of the lengths and every
option that changes the plan), the attributes ``seed``, ``num_shards`` and ``shard_index``,
and ``_RESUME_OPTIONS`` (the options a resumed sampler must be built with, for the message
that refuses a foreign state). It calls ``_start_at(0, 0)`` at the end of its setup. NumPy
only, like every planner.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from seqprep._core.checks import check_int

STATE_VERSION = 1
_STATE_KEYS = ("version", "seed", "epoch", "position", "num_shards", "shard_index", "fingerprint")


class ResumableSampler:
    """Base class of :class:`~seqprep.BucketSampler` and :class:`~seqprep.PackSampler`."""

    _RESUME_OPTIONS = "the same lengths and options"

    # Subclasses define these; declared for readers and type checkers.
    seed: int
    num_shards: int
    shard_index: int

    def batches(self, epoch: int | None = None) -> list[Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fingerprint_parts(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:  # pragma: no cover
        """The arrays and the options a saved state must find again (abstract)."""
        raise NotImplementedError

    def _config_fingerprint(self) -> str:
        """A digest of :meth:`_fingerprint_parts`, computed once (``self._fingerprint``)."""
        if getattr(self, "_fingerprint", None) is None:
            arrays, config = self._fingerprint_parts()
            h = hashlib.blake2b(digest_size=16)
            for array in arrays:
                h.update(np.ascontiguousarray(array).tobytes())
            h.update(repr(config).encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def _check_epoch(self, epoch: Any) -> int:
        return int(check_int("epoch", epoch, minimum=0))

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[Any]:
        """Yield the remaining batches of the current epoch, from an iterator of its own.

        Each iterator starts where the sampler stands when ``iter()`` is called and keeps its
        own position, so two iterators never take batches from each other and a peek with
        ``next(iter(sampler))`` costs a later iterator nothing. An iterator that plays its epoch
        to the end moves the sampler on to the next epoch (unless ``set_epoch`` or
        ``load_state_dict`` moved it meanwhile), so consecutive ``for`` loops play consecutive
        epochs. An epoch counts as played once an iterator has handed out its last batch,
        even if nobody asks that iterator for more (Keras stops a ``DataLoader`` epoch after
        ``len(loader)`` batches): the next iterator then starts the next epoch. (A sampler
        resumed from a state saved at that point, ``position == len(sampler)``, first plays
        the empty rest of the epoch, as the saved iterator would have.)

        Example:
            >>> from seqprep import BucketSampler
            >>> s = BucketSampler([1, 2, 3, 4], batch_size=1, seed=3)
            >>> peek = next(iter(s))
            >>> len(list(s)), s.epoch
            (4, 1)
        """
        done = self._progress
        if done is not None and done[1] >= len(self):  # an iterator handed out the last batch
            self._start_at(done[0] + 1, 0)
        return self._play(self._epoch, self._position, self._generation)

    def _play(self, epoch: int, start: int, generation: int) -> Iterator[Any]:
        batches = self.batches(epoch)
        for i in range(start, len(batches)):
            if self._generation == generation:
                self._progress = (epoch, i + 1)
            yield batches[i]
        if self._generation == generation:
            self._start_at(epoch + 1, 0)

    def _start_at(self, epoch: int, position: int) -> None:
        # A new generation tells live iterators that the sampler was moved under them.
        self._epoch, self._position = epoch, position
        self._progress: tuple[int, int] | None = None
        self._generation = getattr(self, "_generation", 0) + 1

    def _state(self) -> tuple[int, int]:
        return self._progress if self._progress is not None else (self._epoch, self._position)

    @property
    def epoch(self) -> int:
        """The epoch :meth:`state_dict` records (the one iteration is playing or will play)."""
        return self._state()[0]

    def set_epoch(self, epoch: int) -> None:
        """Make ``epoch`` current and start it from its first batch.

        Example:
            >>> from seqprep import BucketSampler
            >>> s = BucketSampler([1, 2, 3], batch_size=1)
            >>> s.set_epoch(3)
            >>> s.epoch, s.state_dict()["position"]
            (3, 0)
        """
        self._start_at(self._check_epoch(epoch), 0)

    # ------------------------------------------------------------------ resuming

    def state_dict(self) -> dict[str, Any]:
        """Where iteration stands, to resume mid-epoch with :meth:`load_state_dict`.

        What it records: the epoch and position of the iterator that most recently yielded a
        batch (``position`` = batches of this shard that iterator has yielded this epoch);
        when no iterator has yielded since the sampler was built, moved with ``set_epoch`` /
        ``load_state_dict`` or finished an epoch, the point the next iterator starts from.
        Nothing about the data itself is stored beyond the fingerprint.

        Returns:
            A dict of plain Python values: ``seed``, ``epoch``, ``position``, ``num_shards``,
            ``shard_index``, ``fingerprint`` (of the lengths and the planning options) and
            ``version``.

        Example:
            >>> from seqprep import BucketSampler
            >>> s = BucketSampler([1, 2, 3, 4], batch_size=1, seed=7)
            >>> it = iter(s); _ = next(it); _ = next(it)
            >>> t = BucketSampler([1, 2, 3, 4], batch_size=1, seed=7)
            >>> t.load_state_dict(s.state_dict())
            >>> [b.tolist() for b in t] == [b.tolist() for b in it]
            True
        """
        epoch, position = self._state()
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "epoch": epoch,
            "position": position,
            "num_shards": self.num_shards,
            "shard_index": self.shard_index,
            "fingerprint": self._config_fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next iteration yields exactly the remaining batches.

        Args:
            state: a dict from :meth:`state_dict` of a sampler with the same seed, shards,
                lengths and options.

        Raises:
            ValueError: if the state is malformed or comes from a sampler with another seed,
                shard count, shard index or configuration.
        """
        name = type(self).__name__
        if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
            raise ValueError(
                f"Argument `state` must be a dict from `{name}.state_dict()` with keys "
                f"{list(_STATE_KEYS)}. Received: state={state!r}\n"
                "- Pass the dict that `state_dict()` returned, unchanged."
            )
        if state["version"] != STATE_VERSION:
            raise ValueError(
                f"Argument `state` has version={state['version']!r}, but this {name} reads "
                f"version {STATE_VERSION} only. Received: state={state!r}\n"
                "- Pass a state saved by this seqprep version's `state_dict()`, or start afresh "
                "with `set_epoch`."
            )
        for key in ("seed", "num_shards", "shard_index"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"Argument `state` was saved by a sampler with {key}={state[key]!r}, but "
                    f"this sampler has {key}={getattr(self, key)!r}.\n"
                    f"- Build the sampler with {key}={state[key]!r} to resume, or start afresh "
                    "with `set_epoch`."
                )
        if state["fingerprint"] != self._config_fingerprint():
            raise ValueError(
                "Argument `state` was saved by a sampler with other lengths or planning options "
                "(its `fingerprint` differs).\n"
                f"- Resume with {self._RESUME_OPTIONS}."
            )
        epoch = self._check_epoch(state["epoch"])
        position = check_int("position", state["position"], minimum=0)
        if position > len(self):
            raise ValueError(
                f"Argument `state` has position={position}, beyond the {len(self)} batches of an "
                "epoch.\n- Pass a state saved by this sampler configuration."
            )
        self._start_at(epoch, position)

    # ------------------------------------------------------------------ pickling support

    def _position_state(self) -> dict[str, int]:
        epoch, position = self._state()
        return {"_epoch": epoch, "_position": position}

    def _restore_position(self, state: dict[str, Any]) -> None:
        self._start_at(state.pop("_epoch"), state.pop("_position"))
