"""The tf.data adapters, as the API contract names them (``seqprep.data``).

They live in :mod:`seqprep.running` with the other executors; this module is their public face
for ``from seqprep.data import bucketed_dataset``. Each is imported on first use.

Example:
    >>> import seqprep.data
    >>> sorted(dir(seqprep.data))[:3]
    ['bucket_by_length', 'bucket_by_sequence_length', 'bucketed_dataset']
"""

from seqprep._core.lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    name: "seqprep.running"
    for name in ("bucketed_dataset", "bucketed_pydataset", "bucket_by_length",
                 "bucket_by_sequence_length", "packed_dataset")
})
