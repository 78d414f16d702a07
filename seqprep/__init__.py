"""seqprep: cheap and correct training on variable-length sequences with Keras 3 and tf.data.

Plan in numpy, execute in tf.data. Every public name is importable from here; the modules that
need TensorFlow are imported only when one of their names is first used, so ``import seqprep``
stays fast.

Example:
    >>> import seqprep as sp
    >>> sp.pad_sequences([[1, 2, 3], [4]], padding="post").tolist()
    [[1, 2, 3], [4, 0, 0]]
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> submodule that defines it. Submodules are imported on first use.
_EXPORTS: dict[str, str] = {
    # padding and masks (numpy only)
    "pad_sequences": "seqprep.padding",
    "sequence_lengths": "seqprep.padding",
    "unpad": "seqprep.padding",
    "length_mask": "seqprep.masking",
    "sequence_weights": "seqprep.masking",
    "check_cudnn_mask": "seqprep.masking",
    "resolve_targets": "seqprep.targets",
    # encoder–decoder data (numpy only)
    "teacher_forcing": "seqprep.seq2seq",
    "edit_distance": "seqprep.seq2seq",
    "error_rates": "seqprep.seq2seq",
    # bucketing (numpy only)
    "Bucketer": "seqprep.bucketing",
    "BucketSampler": "seqprep.bucketing",
    "padding_report": "seqprep.bucketing",
    "PaddingReport": "seqprep.bucketing",
    "BatchPlan": "seqprep.bucketing",
    "PackedPlan": "seqprep.bucketing",
    "NotFittedError": "seqprep.bucketing",
    "as_boundaries": "seqprep.bucketing",
    "PackSampler": "seqprep.bucketing",
    "width_grid": "seqprep.bucketing",
    "count_shapes": "seqprep.bucketing",
    # tf.data adapters
    "bucketed_dataset": "seqprep.data",
    "bucketed_pydataset": "seqprep.pydataset",
    "bucket_by_length": "seqprep.streaming",
    "bucket_by_sequence_length": "seqprep.streaming",
    "packed_dataset": "seqprep.packed",
    # other loaders: PyTorch's DataLoader, Grain
    "PadCollate": "seqprep.torch_loader",
    "PackCollate": "seqprep.torch_loader",
    "RowItems": "seqprep.torch_loader",
    "shard_by_rank": "seqprep.torch_loader",
    "grain_dataset": "seqprep.grain_loader",
    # fitting
    "fit_per_length": "seqprep.fitting",
    "fit_separate_models": "seqprep.ensemble",
    "LengthEnsemble": "seqprep.ensemble",
    "plan_per_length": "seqprep.bucketing.per_length",
    "BackupAndRestore": "seqprep.callbacks",
    # long sequences
    "plan_tbptt": "seqprep._tbptt_plan",
    "TBPTTPlan": "seqprep._tbptt_plan",
    "DenseTBPTTPlan": "seqprep._tbptt_plan",
    "fit_tbptt": "seqprep.tbptt",
    "predict_tbptt": "seqprep.tbptt",
    "evaluate_tbptt": "seqprep.tbptt",
    # ingestion
    "from_dataframe": "seqprep.ingest",
    "to_dataframe": "seqprep.ingest",
    "read_sequences": "seqprep.ingest",
    "read_lengths": "seqprep.ingest",
    # scaling out
    "distributed_bucketed_dataset": "seqprep.distributed",
    "replica_dataset_fn": "seqprep.distributed",
    "replica_plans": "seqprep.bucketing.replicas",
    "fit_distributed": "seqprep.distributed",
    "local_data_service": "seqprep.distributed",
    "service_bucketed_dataset": "seqprep.distributed",
    "iter_parquet_sequences": "seqprep.parquet",
    "parquet_sequence_dataset": "seqprep.distributed",
}

_SUBMODULES = (
    "analyze", "bucketing", "data", "datasets", "distributed", "ensemble", "fitting", "ingest",
    "layers", "masking", "models", "padding", "parquet", "plots", "seq2seq", "streaming", "tbptt",
)

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"seqprep.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'seqprep' has no attribute {name!r}")


def __dir__() -> list[str]:
    # Public names only: not this module's own imports (`Any`, `importlib`, `annotations`).
    return list(__all__)
