"""Stage 2, planning: lengths in, a plan of batches out. numpy only: importable and usable
with TensorFlow and Keras absent.

Every planner is an object of one protocol (:class:`Planner`: ``plan(epoch)``, ``__len__``,
``state_dict()`` / ``load_state_dict()``, iteration): :class:`BucketSampler` (bucket boundaries,
1-D and 2-D), :class:`PackSampler`, :class:`PerLengthPlanner`, :class:`ReplicaPlanner`,
:class:`TBPTTPlanner`; plus the plan types, width grids and padding reports.

Example:
    >>> from seqprep.planning import BucketSampler
    >>> sampler = BucketSampler([3, 1, 2, 8, 9, 7], boundaries=[5], batch_size=3, shuffle=False)
    >>> [b.tolist() for b in sampler.batches(0)]
    [[0, 1, 2], [3, 4, 5]]
"""

from seqprep._core.lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "Bucketer": "._boundaries",
    "NotFittedError": "._boundaries",
    "as_boundaries": "._boundaries",
    "BucketSampler": "._sampler",
    "PlanOptions": "._options",
    "PackSampler": "._packing",
    "BatchPlan": "._plan",
    "PackedPlan": "._plan",
    "padding_report": "._report",
    "PaddingReport": "._report",
    "width_grid": "._shapes",
    "count_shapes": "._shapes",
    "Planner": "._protocol",
    "plan_per_length": "._per_length",
    "PerLengthPlanner": "._per_length",
    "replica_plans": "._replicas",
    "ReplicaPlanner": "._replicas",
    "plan_tbptt": "._windows",
    "TBPTTPlanner": "._windows",
    "TBPTTPlan": "._windows",
    "DenseTBPTTPlan": "._windows",
})
