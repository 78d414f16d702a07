"""Readers: sequences from long-format pandas frames, CSV / NPY / Parquet files, and Parquet
read in chunks that never hold a whole file in memory.

Example:
    >>> import pandas as pd
    >>> from seqprep.readers import from_dataframe
    >>> df = pd.DataFrame({"id": [1, 1, 2], "v": [0.5, 1.5, 2.5], "label": [0, 0, 1]})
    >>> seqs, y = from_dataframe(df, id="id", features=["v"], target="label")
    >>> [s.shape for s in seqs], y.tolist()
    ([(2, 1), (1, 1)], [0, 1])
"""

from seqprep._core.lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "from_dataframe": "._ingest_frames",
    "to_dataframe": "._ingest_frames",
    "read_sequences": "._ingest_files",
    "read_lengths": "._ingest_files",
    "iter_parquet_sequences": "._parquet",
    "ParquetChunk": "._parquet",
})
