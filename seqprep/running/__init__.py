"""Stage 3, running: a plan and the input stage's table in, batches for a training loop out.

One epoch stream turns a planner and a pass counter into batches; around it sit the executors:
tf.data datasets (bucketed, packed, streaming), Keras ``PyDataset``, PyTorch ``DataLoader``
collate functions, Grain, the fit loops (per length, separate models, TBPTT, distributed),
inference in input order, and the resume callback. These modules import TensorFlow or Keras;
each public name is imported on first use.

Example:
    >>> import seqprep.running as running
    >>> "bucketed_dataset" in dir(running)
    True
"""

from seqprep._core.lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "Options": "seqprep._core.options",
    "bucketed_dataset": "._tfdata",
    "bucketed_pydataset": "._pydataset",
    "bucket_by_length": "._streaming",
    "bucket_by_sequence_length": "._streaming",
    "packed_dataset": "._packed",
    "PadCollate": "._torch",
    "PackCollate": "._torch",
    "RowItems": "._torch",
    "shard_by_rank": "._torch",
    "grain_dataset": "._grain",
    "fit_per_length": "._fitting",
    "fit_separate_models": "._ensemble",
    "LengthEnsemble": "._ensemble",
    "BackupAndRestore": "._callbacks",
    "EpochStream": "._stream",
    "epoch_stream": "._stream",
    "live_epoch_streams": "._stream",
    "fit_tbptt": "._tbptt",
    "predict_tbptt": "._tbptt",
    "evaluate_tbptt": "._tbptt",
    "predict": "._inference",
    "evaluate": "._inference_evaluate",
    "distributed_bucketed_dataset": "._distributed",
    "replica_dataset_fn": "._distributed",
    "fit_distributed": "._distributed",
    "local_data_service": "._distributed",
    "service_bucketed_dataset": "._distributed",
    "parquet_sequence_dataset": "._distributed",
})
