"""The planner's rarely set knobs in one declared value: :class:`PlanOptions`.

:class:`~seqprep.BucketSampler` keeps its everyday arguments (``boundaries``, the budget,
``shuffle``, ``seed``, sharding, ``overlong``) as keywords and takes its cost-model knobs in
``options=seqprep.PlanOptions(...)``, as an executor takes its rarely set options in
:class:`seqprep.Options`. Each knob's check and meaning is declared once, in
:data:`seqprep._core.options.DECLARED`; checks that need the rest of the sampler
(``quadratic_length`` needs ``max_tokens``, ``field_weights`` one weight per field) are the
sampler's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seqprep._core.options import OptionSet
from seqprep.planning._shapes import DEFAULT_COMPILE_COST, DEFAULT_TRAIN_EPOCHS

__all__ = ["PLAN_READS", "PlanOptions"]


@dataclass(frozen=True, repr=False)
class PlanOptions(OptionSet):
    """The cost-model knobs of :class:`~seqprep.BucketSampler`, checked when built.

    Args:
        merge_leftovers: pack the partial last batches of neighbouring buckets together (the
            default: fewest batches). False, with ``pad_to="bucket"``, makes every batch
            hold one bucket only and pad to that bucket's length, at the cost of up to one
            partial batch per bucket. With ``num_shards > 1`` the batches that cannot fill a
            group of ``num_shards`` from one bucket are still re-split together (unless
            ``drop_remainder``); such a batch is labelled, and padded to, the longest bucket
            among its members.
        quadratic_length: with ``max_tokens`` only, a quadratic cost term for attention-like
            models, whose cost grows with the square of the length. A row padded to length
            ``L`` then costs ``L + L**2 / quadratic_length`` tokens (the quadratic term
            equals the linear one at ``L = quadratic_length``), so batches of long sequences
            get fewer rows; the budget holds exactly: ``rows * L * (quadratic_length + L) <=
            max_tokens * quadratic_length``.
        field_tokens: for several fields, how ``max_tokens`` counts a row: ``"sum"`` of its
            fields' padded widths (an encoder–decoder runs both) or their ``"max"`` (fields
            processed side by side). ``quadratic_length`` applies to that length.
        field_weights: for several fields, the cost of one padded step of each field in the
            boundary planner (a sequence in field order or a dict by name; default: 1 each;
            e.g. ``{"src": 1, "tgt": 2}`` when a decoder step costs twice an encoder step).
            Budgets always count plain tokens.
        compile_cost: the compile budget of ``pad_to="auto"`` on a backend that compiles one
            program per batch shape (JAX): what compiling one more ``(rows, width)`` shape
            costs, in padded tokens (rows x steps) the model trains in the same time. The
            width grid is the one of 1 to 16 widths that minimises ``train_epochs * padded
            tokens of an epoch + shapes * compile_cost``
            (:func:`seqprep.planning._shapes.budget_grid`); default 1M tokens (measured with
            a GRU on 2 CPU cores: a compile was worth 0.2M-2.7M padded tokens of training).
            ``None``: no budget, the grid of 16 widths. Other backends ignore it.
        train_epochs: how many epochs the compile budget spreads each compile over (default
            10; pass your ``fit``'s ``epochs``): fewer epochs, fewer widths.

    Raises:
        ValueError: a knob with a value it cannot take (``quadratic_length=0``).
        TypeError: a knob of the wrong type (``merge_leftovers="no"``).

    Example:
        >>> import seqprep as sp
        >>> sp.PlanOptions(merge_leftovers=False)
        PlanOptions(merge_leftovers=False)
        >>> s = sp.BucketSampler([1, 2, 3, 9], boundaries=[3], batch_size=3, shuffle=False,
        ...                      options=sp.PlanOptions(merge_leftovers=False))
        >>> [b.tolist() for b in s.batches(0)]
        [[0, 1], [2, 3]]
        >>> sp.PlanOptions(field_tokens="mean")
        Traceback (most recent call last):
        ...
        ValueError: Argument `field_tokens` must be 'sum' or 'max'. Received: field_tokens='mean'
        - Pass one of: field_tokens='sum', field_tokens='max'.
    """

    merge_leftovers: bool = True
    quadratic_length: int | None = None
    field_tokens: str = "sum"
    field_weights: Any = None
    compile_cost: float | None = DEFAULT_COMPILE_COST
    train_epochs: int = DEFAULT_TRAIN_EPOCHS


#: The knobs a BucketSampler reads (all of them).
PLAN_READS = ("merge_leftovers", "quadratic_length", "field_tokens", "field_weights",
              "compile_cost", "train_epochs")
