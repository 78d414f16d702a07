"""What a :class:`~seqprep.planning._sampler.BucketSampler` saves and shows: the parts of its
resume fingerprint, its pickled state (rebuilt by planning again, not stored), its padding
report and its one-line summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from seqprep._core.checks import (
    check_choice,
)
from seqprep.planning._report import padding_report
from seqprep.planning._shapes import compiling_backend, field_widths_rule, pad_to_rule


class _StateMixin:
    """Fingerprint, pickling and reports of :class:`~seqprep.planning._sampler.BucketSampler`."""

    def _fingerprint_parts(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        config = (
            self.batch_size,
            self.max_tokens,
            self.shuffle,
            self.drop_remainder,
            self.overlong,
            self.max_length,
            self.merge_leftovers,
        )
        if self.quadratic_length is not None:  # states saved without it stay loadable
            config = (*config, self.quadratic_length)
        if self._raw.ndim == 2:
            return (self._raw, *self.boundaries), (*config, "fields", self.field_tokens)
        return (self._raw, self.boundaries), config

    def __getstate__(self) -> dict[str, Any]:
        names = (
            "batch_size",
            "max_tokens",
            "shuffle",
            "drop_remainder",
            "seed",
            "num_shards",
            "shard_index",
            "overlong",
            "max_length",
            "merge_leftovers",
            "quadratic_length",
            "field_names",
            "field_tokens",
            "field_weights",
        )
        state = {k: getattr(self, k) for k in names}
        state.update(self._position_state())
        state["_raw"] = self._raw
        state["boundaries"] = self.boundaries
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        raw, bounds = state.pop("_raw"), state.pop("boundaries")
        state.setdefault("quadratic_length", None)  # pickled before the option existed
        for name, default in (("field_names", None), ("field_tokens", "sum"),
                              ("field_weights", None)):  # pickled before fields existed
            state.setdefault(name, default)
        position = {k: state.pop(k) for k in ("_epoch", "_position")}
        self.__dict__.update(state)
        self._setup(raw, bounds)
        self._restore_position(position)

    def report(
        self,
        epoch: int | None = None,
        pad_to: Literal["auto", "batch", "bucket"] | int | Sequence[int] = "auto",
        *,
        backend: str | None = None,
    ):
        """Padding report of this shard's plan for ``epoch`` (see :func:`padding_report`).

        Each batch is padded as :func:`seqprep.bucketed_dataset` with the same ``pad_to`` pads
        it on ``backend``, so ``n_shapes`` is what that backend runs: ``"auto"`` (the
        dataset's default) is a width grid on JAX and each batch's longest member elsewhere.
        Adds ``num_dropped``, ``num_truncated`` and ``num_buckets``.

        Args:
            epoch: the epoch to report (default: the current one).
            pad_to: ``"auto"``, ``"batch"``, ``"bucket"``, an int or a width grid.
            backend: the Keras backend to report for; default: this process's.

        Example:
            >>> from seqprep import BucketSampler
            >>> s = BucketSampler([1, 2, 3, 4], boundaries=[3], batch_size=2, shuffle=False)
            >>> s.report()["padded_tokens"], s.report(pad_to="bucket")["padded_tokens"]
            (12, 12)
            >>> s.report(pad_to=[4])["padded_tokens"]
            16
        """
        if isinstance(pad_to, str) or pad_to is None:
            check_choice("pad_to", pad_to, ("auto", "batch", "bucket"))
        backend = compiling_backend(backend)
        plan = self.plan(epoch)
        batch = isinstance(pad_to, str) and pad_to == "batch"
        if self.lengths.ndim == 2:
            pads = None if batch else field_widths_rule(plan, self, pad_to, backend)
            lengths: Any = dict(zip(self.field_names, self.lengths.T, strict=True))
        else:
            pad_to = pad_to_rule(pad_to, self, backend)
            batch = isinstance(pad_to, str) and pad_to == "batch"
            pads = None if batch else plan.widths(pad_to, self.lengths)
            lengths = self.lengths
        out = padding_report(lengths, plan.batches, pad_lengths=pads)
        out.update(
            num_dropped=self.num_dropped_,
            num_truncated=self.num_truncated_,
            num_buckets=self.num_buckets,
        )
        return out

    def __repr__(self) -> str:
        size = (
            f"batch_size={self.batch_size}"
            if self.batch_size is not None
            else f"max_tokens={self.max_tokens}"
        )
        if self.quadratic_length is not None:
            size += f", quadratic_length={self.quadratic_length}"
        shards = "" if self.num_shards == 1 else f", shard {self.shard_index}/{self.num_shards}"
        r = self.report()
        return (
            f"BucketSampler(n={self.lengths.shape[0]}, {self.num_buckets} buckets, {size}, "
            f"shuffle={self.shuffle}, seed={self.seed}{shards}): {len(self)} batches per epoch, "
            f"padding {r['padding_fraction']:.1%}, {r['n_shapes']} batch shapes, largest batch "
            f"{r['max_batch_tokens']} padded tokens, {r['steps_cost']} RNN steps, "
            f"{self.num_dropped_} dropped, {self.num_truncated_} truncated"
        )
