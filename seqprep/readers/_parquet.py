"""Streaming sequences from Parquet files larger than memory, in numpy and pyarrow.

:func:`iter_parquet_sequences` reads whole sequences from Parquet row batches (long format,
rows grouped by id, or one list-valued row per sequence) with memory bounded by one read
batch. No TensorFlow here; ``seqprep.running._distributed.parquet_sequence_dataset``
wraps the reader as a ``tf.data.Dataset``.

Example:
    >>> import os, tempfile
    >>> import pandas as pd
    >>> path = os.path.join(tempfile.mkdtemp(), "seqs.parquet")
    >>> pd.DataFrame({"x": [[1.0, 2.0], [3.0]]}).to_parquet(path)
    >>> [c.lengths.tolist() for c in iter_parquet_sequences(path, features="x")]
    [[2, 1]]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from seqprep._core.casts import check_cast
from seqprep._core.checks import check_int

__all__ = ["ParquetChunk", "iter_parquet_sequences"]

# The one list of Parquet file suffixes (seqprep.readers._ingest_files reads it from here too).
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


@dataclass(frozen=True)
class ParquetChunk:
    """Whole sequences read from a run of Parquet rows.

    Attributes:
        values: ``(total_steps, num_features)`` array (``(total_steps,)`` for one feature
            named as a string), all steps of these sequences stacked; for several fields
            (``features`` a dict), a dict of such arrays, one per field.
        lengths: int64 ``(n,)`` length of each sequence; for several fields, a dict of them.
        ids: ``(n,)`` id of each sequence, or None (list layout without ``id``).
        targets: ``(n,)`` target of each sequence, or None.
    """

    values: np.ndarray | dict[str, np.ndarray]
    lengths: np.ndarray | dict[str, np.ndarray]
    ids: np.ndarray | None
    targets: np.ndarray | None


class _SeenIds:
    """Ids of finished sequences, as sorted 64-bit hash runs (8 bytes per sequence)."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def overlap(self, hashes: np.ndarray) -> np.ndarray:
        hit = np.zeros(hashes.size, bool)
        for run in self._runs:
            pos = np.searchsorted(run, hashes).clip(max=run.size - 1)
            hit |= run[pos] == hashes
        return hit

    def add(self, hashes: np.ndarray) -> None:
        if not hashes.size:
            return
        self._runs.append(np.sort(hashes))
        if len(self._runs) > 16:
            self._runs = [np.sort(np.concatenate(self._runs))]


def _hash_ids(ids: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.util.hash_array(np.asarray(ids, dtype=object) if ids.dtype.kind == "O" else ids)


def _parquet_paths(path: Any) -> list[str]:
    if isinstance(path, (str, os.PathLike)):
        p = os.fspath(path)
        if os.path.isdir(p):
            return sorted(
                os.path.join(p, f) for f in os.listdir(p) if f.endswith(_PARQUET_SUFFIXES)
            )
        if not os.path.exists(p):
            raise FileNotFoundError(
                f"Argument `path` names a file that does not exist. Received: path={p!r}"
            )
        return [p]
    if isinstance(path, Sequence):
        return [q for item in path for q in _parquet_paths(item)]
    raise TypeError(
        f"Argument `path` must be a path or a list of paths. Received: {type(path).__name__}"
    )


def _feature_columns(features: Hashable | Sequence[Hashable]) -> tuple[list[str], bool]:
    if isinstance(features, str):
        return [features], True
    cols = list(features)  # type: ignore[arg-type]
    if not cols:
        raise ValueError("Argument `features` must name at least one column.")
    return cols, False


def feature_fields(features: Any) -> dict[str, tuple[list[str], bool]] | None:
    """``{field: (columns, one)}`` for ``features`` given as a dict of fields (each a column
    name or a list of names, as ``features`` itself), else None."""
    if not isinstance(features, Mapping):
        return None
    if not features or not all(isinstance(k, str) for k in features):
        raise ValueError(
            "Argument `features` as a dict must map field names (strings) to columns. "
            f"Received: {features!r:.120}\n- Pass e.g. features={{'encoder': 'src', "
            "'decoder': 'tgt'}, one list column (or list of columns) per field."
        )
    return {name: _feature_columns(cols) for name, cols in features.items()}


def iter_parquet_sequences(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    features: str | Sequence[str] | Mapping[str, str | Sequence[str]],
    id: str | None = None,
    time: str | None = None,
    target: str | None = None,
    rows_per_read: int = 65_536,
    check_grouping: bool = True,
    dtype: DTypeLike = np.float32,
) -> Iterator[ParquetChunk]:
    """Stream whole sequences from Parquet files, one read batch of rows at a time.

    Two layouts:

    * **long** (``id`` given): one row per time step. The rows of one id must be
      **contiguous** (sorted or grouped by id; a sequence may span read batches and files);
      ``time``, if given, orders the steps within each sequence (otherwise file order is
      time order). ``target`` is read from each sequence's first row.
    * **list** (no ``id``, or ``id`` naming a per-row id column with list-valued features):
      one row per sequence, each feature column a list (``list<number>``); several feature
      columns are stacked as the steps' features and must have equal lengths in a row.
      Several **fields** per example (an encoder's and a decoder's sequences, each of its
      own length): ``features`` a dict ``{field: column or list of columns}``; every chunk
      then holds a dict of values and a dict of lengths, one per field. The long layout
      holds one sequence per id and refuses fields.

    Memory is bounded by one read batch (``rows_per_read`` rows) plus the sequence that spans
    its end. With ``check_grouping`` (long layout), ids that reappear after their sequence
    ended raise ``ValueError``: this keeps one 64-bit hash per finished sequence (8 bytes per
    sequence); pass ``check_grouping=False`` for strictly bounded memory on trusted input.

    Args:
        path: a ``.parquet`` file, a directory of them (read in name order) or a list.
        features: a column name (1-D steps) or a list of names (steps of that many features);
            a dict of them for several fields (list layout).
        id: the id column (long layout), or a per-row id column (list layout).
        time: a column ordering steps within a sequence (long layout).
        target: a column with one target per sequence.
        rows_per_read: rows per ``ParquetFile.iter_batches`` read.
        check_grouping: detect ids whose rows are not contiguous (long layout).
        dtype: dtype of the values (checked: a cast that changes values raises).

    Yields:
        :class:`ParquetChunk` objects holding only whole sequences, in file order.

    Raises:
        ValueError: a missing column, an id whose rows are not contiguous, list columns of
            different lengths in a row (of one field), missing values, a lossy ``dtype``, or
            fields in a file of the long layout.
        FileNotFoundError: ``path`` does not exist.

    Example:
        >>> import os, tempfile
        >>> import pandas as pd
        >>> path = os.path.join(tempfile.mkdtemp(), "steps.parquet")
        >>> pd.DataFrame({"id": [7, 7, 7, 3, 3], "x": [1.0, 2, 3, 4, 5]}).to_parquet(path)
        >>> chunks = list(iter_parquet_sequences(path, id="id", features="x", rows_per_read=2))
        >>> [(c.ids.tolist(), c.lengths.tolist()) for c in chunks]
        [([7], [3]), ([3], [2])]
        >>> chunks[0].values.tolist()
        [1.0, 2.0, 3.0]
    """
    import pyarrow.parquet as pq

    rows_per_read = check_int("rows_per_read", rows_per_read, minimum=1)
    fields = feature_fields(features)
    cols, one = (_feature_columns(features) if fields is None else
                 (list(dict.fromkeys(c for fc, _ in fields.values() for c in fc)), False))
    out_dtype = np.dtype(dtype)
    wanted = list(dict.fromkeys([c for c in (id, time, target) if c is not None] + cols))
    paths = _parquet_paths(path)
    if not paths:
        raise ValueError(f"Argument `path` holds no .parquet files. Received: path={path!r}")
    seen = _SeenIds() if check_grouping and id is not None else None
    cast = _caster(out_dtype)
    carry: dict[str, np.ndarray] | None = None
    list_layout: bool | None = None
    row0 = 0
    for file in paths:
        # A buffered stream reads a column chunk piece by piece; unbuffered reads (and
        # pre-buffering) keep whole chunks around, and RSS then grows with the file.
        pf = pq.ParquetFile(file, buffer_size=1 << 22, pre_buffer=False)
        file_list = _file_layout(pf.schema_arrow, file, wanted, cols, id=id, time=time)
        if fields is not None and not file_list:
            raise ValueError(
                f"Argument `features` is a dict of fields, but {file!r} has the long layout "
                "(one row per time step), whose rows are the steps of one sequence per id: "
                "fields of their own lengths cannot share them. Received: features="
                f"{features!r:.120}\n- Store one row per example with a list column per "
                "field (the list layout), or stream one field (features=<its columns>)."
            )
        if list_layout is None:
            list_layout = file_list
        elif list_layout != file_list:
            raise ValueError(f"{file!r} has a different layout from the files before it.")
        for batch in pf.iter_batches(batch_size=rows_per_read, columns=wanted):
            if file_list:
                yield _list_chunk(batch, cols if fields is None else fields, one, id, target,
                                  cast, row0)
                row0 += batch.num_rows
                continue
            block = _long_block(batch, wanted, file, row0)
            row0 += batch.num_rows
            if carry is not None:
                block = {c: np.concatenate([carry[c], block[c]]) for c in wanted}
            ids = block[id]
            starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
            if seen is not None:
                _check_contiguous(seen, ids, starts, row0 - len(ids))
            cut = int(starts[-1])
            carry = {c: v[cut:] for c, v in block.items()}
            if cut:
                yield _long_chunk({c: v[:cut] for c, v in block.items()}, starts[:-1], cols,
                                  one, id, time, target, cast, file)
    if carry is not None and len(carry[id]):
        starts = np.zeros(1, np.int64)
        yield _long_chunk(carry, starts, cols, one, id, time, target, cast, paths[-1])


def _caster(out_dtype: np.dtype) -> Callable[[np.ndarray, str], np.ndarray]:
    """The cast every feature column goes through: numeric only, and never lossy."""

    def cast(values: np.ndarray, where: str) -> np.ndarray:
        if values.dtype.kind not in "biuf":
            raise ValueError(
                f"Feature columns must be numeric; {where} holds {values.dtype} values.\n"
                "- Pass only numeric columns as `features` (map categories to ids first)."
            )
        check_cast(values, out_dtype, locate=lambda i: f"position {i} of {where} (this read)",
                   suffix=" The cast would change values; the reader refuses.")
        return values.astype(out_dtype)

    return cast


def _file_layout(
    schema: Any, file: str, wanted: list[str], cols: list[str], *, id: str | None,
    time: str | None,
) -> bool:
    """Check one file's columns; True for the list layout, False for the long one."""
    import pyarrow as pa

    names = schema.names
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ValueError(
            f"Columns {missing} are not in {file!r}. Columns present: {names}"
        )
    types = [schema.field(c).type for c in cols]
    is_list = [pa.types.is_list(t) or pa.types.is_large_list(t) for t in types]
    file_list = all(is_list)
    if any(is_list) and not file_list:
        raise ValueError(
            f"Feature columns {cols} mix list and scalar columns in {file!r}."
        )
    if file_list and time is not None:
        raise ValueError(
            "Argument `time` applies to the long layout only; list columns are ordered."
        )
    if not file_list and id is None:
        raise ValueError(
            "Scalar feature columns mean the long layout (one row per step), which needs "
            "`id`. Received: id=None\n- Pass id=<the column naming each row's sequence>."
        )
    return file_list


def _long_block(batch: Any, wanted: list[str], file: str, row0: int) -> dict[str, np.ndarray]:
    """One read batch of the long layout as numpy columns; missing values are refused."""
    block = {}
    for c in wanted:
        column = batch.column(c)
        if column.null_count:
            bad = row0 + int(np.flatnonzero(column.is_null().to_numpy(
                zero_copy_only=False))[0])
            raise ValueError(
                f"Column {c!r} of {file!r} has missing values (first at row {bad}, "
                "0-based over all files)."
            )
        block[c] = column.to_numpy(zero_copy_only=False)
    return block


def _check_contiguous(seen: _SeenIds, ids: np.ndarray, starts: np.ndarray, row0: int) -> None:
    """Refuse an id that starts again after other ids (``row0``: the row ``ids[0]`` is at);
    then remember the finished sequences (all but the last, which may go on)."""
    hashes = _hash_ids(ids[starts])
    again = seen.overlap(hashes)
    uniq, first_pos, counts = np.unique(hashes, return_index=True, return_counts=True)
    if again.any() or (counts > 1).any():
        k = int(np.flatnonzero(again)[0]) if again.any() else int(
            np.flatnonzero(hashes == uniq[counts > 1][0])[1])
        raise ValueError(
            f"The rows of id {ids[starts[k]].tolist()!r} are not contiguous: they "
            f"start again near row {row0 + int(starts[k])} (0-based over "
            "all files) after other ids. Streaming needs each id's rows together.\n"
            "- Sort the file by id (and time) before streaming it, or read it "
            "whole with `seqprep.read_sequences`."
        )
    seen.add(hashes[:-1])


def _long_chunk(
    block: dict[str, np.ndarray],
    starts: np.ndarray,
    cols: list[str],
    one: bool,
    id: str,
    time: str | None,
    target: str | None,
    cast: Callable[[np.ndarray, str], np.ndarray],
    file: str,
) -> ParquetChunk:
    n_rows = len(block[id])
    lengths = np.diff(np.append(starts, n_rows)).astype(np.int64)
    order = None
    if time is not None:
        seq = np.repeat(np.arange(starts.size), lengths)
        order = np.lexsort((block[time], seq))
        t = block[time][order]
        dup = np.flatnonzero((t[1:] == t[:-1]) & (seq[1:] == seq[:-1]))
        if dup.size:
            raise ValueError(
                f"Id {block[id][order][dup[0]].tolist()!r} has two rows at time "
                f"{t[dup[0]].tolist()!r} in "
                f"{file!r}.\n- Drop the duplicate rows or aggregate them first."
            )
    parts = []
    for c in cols:
        v = block[c] if order is None else block[c][order]
        parts.append(cast(v, f"column {c!r} of {file!r}"))
    values = parts[0] if one else np.stack(parts, axis=1)
    targets = None if target is None else block[target][starts]
    return ParquetChunk(values, lengths, block[id][starts], targets)


def _list_chunk(
    batch: Any,
    cols: list[str] | dict[str, tuple[list[str], bool]],
    one: bool,
    id: str | None,
    target: str | None,
    cast: Callable[[np.ndarray, str], np.ndarray],
    row0: int,
) -> ParquetChunk:
    """One read batch of the list layout; ``cols`` a dict of fields gives a chunk of them."""
    if isinstance(cols, dict):
        read = {name: _list_values(batch, c, o, cast, row0) for name, (c, o) in cols.items()}
        values: Any = {name: v for name, (v, _) in read.items()}
        lengths: Any = {name: n for name, (_, n) in read.items()}
    else:
        values, lengths = _list_values(batch, cols, one, cast, row0)
    ids = None if id is None else batch.column(id).to_numpy(zero_copy_only=False)
    targets = None if target is None else batch.column(target).to_numpy(zero_copy_only=False)
    return ParquetChunk(values, lengths, ids, targets)


def _list_values(
    batch: Any, cols: list[str], one: bool, cast: Callable[[np.ndarray, str], np.ndarray],
    row0: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``(values, lengths)`` of the list columns ``cols``: one sequence per row."""
    lengths = None
    parts = []
    for c in cols:
        column = batch.column(c)
        if column.null_count:
            raise ValueError(f"List column {c!r} has missing rows (first batch row {row0}).")
        lens = column.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
        if lengths is None:
            lengths = lens
        elif not np.array_equal(lens, lengths):
            i = int(np.flatnonzero(lens != lengths)[0])
            raise ValueError(
                f"List columns {cols} must have equal lengths in each row; row {row0 + i} "
                f"has {int(lengths[i])} and {int(lens[i])}."
            )
        flat = column.flatten()
        if flat.null_count:
            raise ValueError(f"List column {c!r} holds missing values (rows from {row0}).")
        parts.append(cast(flat.to_numpy(zero_copy_only=False), f"list column {c!r}"))
    values = parts[0] if one else np.stack(parts, axis=1)
    assert lengths is not None
    return values, lengths
