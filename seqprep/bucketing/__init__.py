"""Length bucketing, planned in numpy: boundaries, a deterministic sampler, padding reports.

Example:
    >>> from seqprep.bucketing import BucketSampler
    >>> sampler = BucketSampler([3, 1, 2, 8, 9, 7], boundaries=[5], batch_size=3, shuffle=False)
    >>> [b.tolist() for b in sampler.batches(0)]
    [[0, 1, 2], [3, 4, 5]]
"""

from seqprep.bucketing.boundaries import Bucketer, NotFittedError, as_boundaries
from seqprep.bucketing.packing import PackSampler
from seqprep.bucketing.plan import BatchPlan, PackedPlan
from seqprep.bucketing.report import PaddingReport, padding_report
from seqprep.bucketing.sampler import BucketSampler
from seqprep.bucketing.shapes import count_shapes, width_grid

__all__ = [
    "BatchPlan",
    "BucketSampler",
    "Bucketer",
    "NotFittedError",
    "PackSampler",
    "PackedPlan",
    "PaddingReport",
    "as_boundaries",
    "count_shapes",
    "padding_report",
    "width_grid",
]
