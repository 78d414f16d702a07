"""Long-format files (CSV, NPY, Parquet) to sequence collections: :func:`read_sequences` (the
whole table, through :func:`~seqprep.readers._ingest_frames.from_dataframe`'s conversion) and
:func:`read_lengths` (only the lengths, for planning without loading the values).

Only the columns asked for are read; pyarrow is needed for Parquet only.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from seqprep.readers._ingest import (
    _as_feature_list,
    _check_columns,
    _columns_shown,
    _shown,
    _wanted_columns,
)
from seqprep.readers._ingest_frames import _from_frame
from seqprep.readers._parquet import _PARQUET_SUFFIXES

__all__ = ["read_sequences", "read_lengths"]


_CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst")

Format = Literal["csv", "parquet", "npy"]
PathLike = str | os.PathLike


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "Reading Parquet files needs pyarrow, which is not installed.\n"
            "- Install it with `pip install seqprep[parquet]` (or `pip install pyarrow`), or "
            "convert the file to CSV."
        ) from error


def _resolve(path: PathLike, format: str | None, allowed: tuple[str, ...]) -> tuple[Path, str]:
    """Check ``path`` exists and return it with its format (given, or from the suffix)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"Argument `path` must be a file path (str or pathlib.Path). Received: "
            f"{type(path).__name__}\n- If you hold a DataFrame already, use `from_dataframe`."
        )
    resolved = Path(path)
    if not resolved.exists():
        raise FileNotFoundError(
            f"Argument `path` names a file that does not exist. Received: path={str(path)!r}\n"
            f"- If the path is relative, it is resolved from {os.getcwd()!r}."
        )
    if format is None:
        suffixes = [s.lower() for s in resolved.suffixes]
        if suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
            suffixes = suffixes[:-1]
        suffix = suffixes[-1] if suffixes else ""
        if suffix in _PARQUET_SUFFIXES or (resolved.is_dir() and suffix == ""):
            format = "parquet"
        elif suffix in _CSV_SUFFIXES:
            format = "csv"
        elif suffix == ".npy":
            format = "npy"
        else:
            raise ValueError(
                f"Cannot tell the format of {str(path)!r} from its suffix {suffix!r}. Known "
                f"suffixes: {', '.join(s for s in (*_PARQUET_SUFFIXES, *_CSV_SUFFIXES))}"
                + (", .npy" if "npy" in allowed else "")
                + f"\n- If you know the format, pass it: `format={allowed[0]!r}`."
            )
    if format not in allowed:
        shown = " or ".join(repr(a) for a in allowed)
        raise ValueError(f"Argument `format` must be {shown}. Received: format={format!r}")
    return resolved, format


def _csv_options(path: Path, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``read_csv`` keyword arguments: the caller's, plus a tab separator for ``.tsv``."""
    options = dict(options or {})
    if ".tsv" in [s.lower() for s in path.suffixes] and "sep" not in options:
        options["sep"] = "\t"
    return options


def _table_columns(path: Path, format: str, options: Mapping[str, Any]) -> list[Hashable]:
    """Column names of a CSV or Parquet file, read from its header or schema only."""
    if format == "parquet":
        _require_pyarrow()
        import pyarrow.dataset as ds

        try:
            schema = ds.dataset(str(path), format="parquet").schema
        except Exception as error:  # pyarrow raises several types for unreadable files
            raise ValueError(f"Cannot read {str(path)!r} as Parquet: {error}") from error
        return list(schema.names)
    try:
        return list(pd.read_csv(path, nrows=0, **options).columns)
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"{str(path)!r} is empty: it has no header row.") from error


def _read_columns(
    path: Path,
    format: str,
    wanted: Mapping[str, list[Hashable]],
    options: Mapping[str, Any] | None,
) -> pd.DataFrame:
    """Read only the requested columns, after checking that the file has them."""
    options = _csv_options(path, options) if format == "csv" else dict(options or {})
    present = _table_columns(path, format, options)
    _check_columns(pd.DataFrame(columns=present), wanted, f"file {str(path)!r}")
    columns = list(dict.fromkeys(c for cols in wanted.values() for c in cols))
    if format == "parquet":
        return pd.read_parquet(path, columns=columns, engine="pyarrow", **options)
    return pd.read_csv(path, usecols=columns, **options)[columns]


def read_sequences(
    path: PathLike,
    *,
    id: Hashable,
    features: Hashable | Sequence[Hashable],
    time: Hashable | None = None,
    target: Hashable | None = None,
    target_per_step: bool = False,
    sort_ids: bool = False,
    dtype: Any = None,
    return_ids: bool = False,
    format: Literal["csv", "parquet"] | None = None,
    read_options: Mapping[str, Any] | None = None,
) -> tuple[Any, ...]:
    """Read sequences from a long-format CSV or Parquet file (one row per time step).

    Only the ``id``, ``time``, ``features`` and ``target`` columns are read; the rest of the
    file is never loaded. The conversion and its arguments are those of
    :func:`from_dataframe`. Parquet needs pyarrow (``pip install seqprep[parquet]``); a
    directory is read as a Parquet data set.

    Args:
        path: the file (``.csv``, ``.tsv``, ``.parquet``, ``.pq``, optionally compressed
            ``.csv.gz`` ...), or a directory of Parquet files.
        id: column naming the sequence each row belongs to.
        features: a column name (1-D sequences) or a list of column names.
        time: column to order steps by within a sequence.
        target: column with one label per id (or per step with ``target_per_step=True``).
        target_per_step: return one target per step instead of one per sequence.
        sort_ids: order sequences by id instead of by first appearance.
        dtype: dtype of the returned sequences (see :func:`from_dataframe`).
        return_ids: also return the id of each sequence.
        format: ``"csv"`` or ``"parquet"``; default: from the file suffix.
        read_options: extra keyword arguments for ``pandas.read_csv`` (e.g. ``{"sep": ";"}``)
            or ``pandas.read_parquet``.

    Returns:
        As :func:`from_dataframe`: ``(sequences, targets)`` or ``(sequences, targets, ids)``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImportError: the file is Parquet and pyarrow is not installed.
        ValueError: unknown format, a column is missing from the file, or any data error that
            :func:`from_dataframe` reports (the message names the file).
        TypeError: a feature column is not numeric.

    Example:
        >>> import os, tempfile
        >>> import pandas as pd
        >>> path = os.path.join(tempfile.mkdtemp(), "steps.csv")
        >>> pd.DataFrame({"id": [7, 7, 3], "t": [1, 0, 0], "x": [0.5, 0.25, 1.0],
        ...               "note": ["b", "a", "c"]}).to_csv(path, index=False)
        >>> seqs, _ = read_sequences(path, id="id", time="t", features="x")
        >>> [s.tolist() for s in seqs]
        [[0.25, 0.5], [1.0]]
    """
    resolved, format = _resolve(path, format, ("csv", "parquet"))
    feature_columns, _ = _as_feature_list(features)
    wanted = _wanted_columns(id, time, feature_columns, target)
    df = _read_columns(resolved, format, wanted, read_options)
    return _from_frame(
        df,
        id=id,
        features=features,
        time=time,
        target=target,
        target_per_step=target_per_step,
        sort_ids=sort_ids,
        dtype=dtype,
        return_ids=return_ids,
        source=f"file {str(path)!r}",
    )


def read_lengths(
    path: PathLike,
    *,
    id: Hashable | None = None,
    column: Hashable | list[Hashable] | Mapping[Hashable, Hashable] | None = None,
    format: Format | None = None,
    read_options: Mapping[str, Any] | None = None,
) -> np.ndarray | dict[Hashable, np.ndarray]:
    """Read sequence lengths from a file without loading the sequences' values.

    Three layouts are understood:

    - a long-format CSV/Parquet table (one row per step): pass ``id``; only that column is
      read and the lengths are the number of rows per id, in order of first appearance (the
      order :func:`read_sequences` uses by default);
    - a CSV/Parquet table with a column of lengths: pass ``column`` (or neither, for a table
      of that one column); only that column is read. For examples of several fields (an
      encoder–decoder pair), pass a list of columns or a dict ``{field: column}``: one length
      array per field, as the dict :class:`~seqprep.BucketSampler` takes for 2-D buckets;
    - a ``.npy`` file holding a 1-D integer array of lengths: pass neither.

    Args:
        path: the file.
        id: id column of a long-format table.
        column: column of lengths; a list of columns, or a dict of field names to columns,
            for several fields (a tuple is one column name, as pandas spells a MultiIndex
            column).
        format: ``"csv"``, ``"parquet"`` or ``"npy"``; default: from the file suffix.
        read_options: extra keyword arguments for ``pandas.read_csv`` / ``read_parquet``.

    Returns:
        A 1-D int64 array of non-negative lengths; for a list or dict ``column``, a dict of
        them keyed by column (list) or by field (dict), in the order given.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImportError: the file is Parquet and pyarrow is not installed.
        ValueError: the file is empty, a column is missing, holds missing, non-integer or
            negative values, ``column`` is an empty list or dict or names a column twice, or
            ``id``/``column`` do not fit the layout (both, or neither for a table of several
            columns; either for ``.npy``).
        TypeError: the lengths are not integers (floats, text).

    Example:
        >>> import os, tempfile
        >>> import numpy as np, pandas as pd
        >>> folder = tempfile.mkdtemp()
        >>> steps = os.path.join(folder, "steps.csv")
        >>> pd.DataFrame({"id": ["a", "a", "b", "a"], "x": [1, 2, 3, 4]}).to_csv(steps)
        >>> read_lengths(steps, id="id").tolist()
        [3, 1]
        >>> np.save(os.path.join(folder, "lengths.npy"), np.array([5, 0, 2]))
        >>> read_lengths(os.path.join(folder, "lengths.npy")).tolist()
        [5, 0, 2]
        >>> pairs = os.path.join(folder, "pairs.csv")
        >>> pd.DataFrame({"src_len": [4, 2], "tgt_len": [3, 5]}).to_csv(pairs, index=False)
        >>> lengths = read_lengths(pairs, column={"enc": "src_len", "dec": "tgt_len"})
        >>> {k: v.tolist() for k, v in lengths.items()}
        {'enc': [4, 2], 'dec': [3, 5]}
    """
    resolved, format = _resolve(path, format, ("csv", "parquet", "npy"))
    where = f"file {str(path)!r}"
    if format == "npy":
        if id is not None or column is not None:
            raise ValueError(
                f"A .npy file holds the lengths themselves, so `id` and `column` do not apply. "
                f"Received: id={id!r}, column={column!r}\n- If so, call "
                "`read_lengths(path)` with neither."
            )
        try:
            lengths = np.load(resolved, allow_pickle=False)
        except ValueError as error:
            raise ValueError(
                f"Cannot read {where} as a numeric .npy array: {error}"
            ) from error
        if lengths.ndim != 1:
            raise ValueError(
                f"The lengths in {where} must be a 1-D array. Received shape {lengths.shape}\n"
                "- If this file holds padded sequences, compute their lengths first."
            )
        return _checked_lengths(lengths, where, "values", np.arange(len(lengths)))

    if (id is None) == (column is None):
        options = _csv_options(resolved, read_options) if format == "csv" else read_options
        present = _table_columns(resolved, format, options or {})
        if id is None and len(present) == 1:  # a one-column table can only be the lengths
            column = present[0]
            df = _read_columns(resolved, format, {"column": [column]}, read_options)
            return _checked_lengths(df[column], where, f"column {column!r}", np.arange(len(df)))
        received = "neither" if id is None else "both"
        raise ValueError(
            f"Pass exactly one of `id` (a long-format table, one row per step) or `column` (a "
            f"column of lengths). Received {received}: id={id!r}, column={column!r}\n"
            f"Columns in {where}: {_columns_shown(pd.DataFrame(columns=present))}"
        )
    if id is not None:
        df = _read_columns(resolved, format, {"id": [id]}, read_options)
        if len(df) == 0:
            raise ValueError(f"{where} has no rows, so there are no lengths to read.")
        ids = df[id]
        missing = ids.isna().to_numpy()
        if missing.any():
            rows = np.flatnonzero(missing)
            raise ValueError(
                f"Column {id!r} (argument `id`) in {where} has missing values at rows "
                f"{_shown(rows, len(rows))} (0-based, header excluded)\n"
                "- If those rows are junk, drop them; otherwise fill in their ids."
            )
        codes, uniques = pd.factorize(ids)
        return np.bincount(codes, minlength=len(uniques)).astype(np.int64)

    fields = _length_fields(column)
    if fields is None:
        df = _read_columns(resolved, format, {"column": [column]}, read_options)
        return _checked_lengths(df[column], where, f"column {column!r}", np.arange(len(df)))
    df = _read_columns(resolved, format, {"column": list(fields.values())}, read_options)
    rows = np.arange(len(df))
    return {field: _checked_lengths(df[col], where, f"column {col!r}", rows)
            for field, col in fields.items()}


def _length_fields(column: Any) -> dict[Hashable, Hashable] | None:
    """``{field: column}`` for a list or dict ``column`` of ``read_lengths`` (None for one
    column), after checking that it names at least one column, and none twice."""
    if isinstance(column, Mapping):
        names = list(column.values())
    elif isinstance(column, list):
        names = list(column)
    else:
        return None
    twice = [c for i, c in enumerate(names) if c in names[:i]]
    if not names or twice:
        problem = f"names column {twice[0]!r} twice" if twice else "is empty"
        raise ValueError(
            f"Argument `column` {problem}: it must name one length column per field. "
            f"Received: column={column!r}\n- Pass each field's length column once, e.g. "
            'column={"encoder": "src_len", "decoder": "tgt_len"}.'
        )
    return dict(column) if isinstance(column, Mapping) else {c: c for c in names}


def _checked_lengths(values: Any, where: str, what: str, rows: np.ndarray) -> np.ndarray:
    """Validate lengths read from a file: present, integer, non-negative."""
    if len(values) == 0:
        raise ValueError(f"The {what} of {where} are empty: there are no lengths to read.")
    series = pd.Series(values) if not isinstance(values, pd.Series) else values
    missing = series.isna().to_numpy()
    if missing.any():
        bad = rows[missing]
        raise ValueError(
            f"The {what} of {where} must hold a length on every row, but rows "
            f"{_shown(bad, len(bad))} (0-based) are empty.\n"
            "- If these rows are padding, drop them; otherwise fill them in."
        )
    dtype = series.dtype
    if not pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        array = series.to_numpy()
        hint = ""
        if pd.api.types.is_float_dtype(dtype):
            fractional = np.flatnonzero(array != np.trunc(array))
            hint = (
                f" Rows with fractional values: {_shown(rows[fractional], len(fractional))}."
                if len(fractional)
                else " All values are whole numbers stored as floats."
            )
        raise TypeError(
            f"The {what} of {where} must hold integer lengths. Received dtype {dtype}.{hint}\n"
            "- If this is the wrong column, pick the column of lengths (or pass `id=` for a "
            "long-format table); if the lengths were saved as floats, save them as integers."
        )
    lengths = series.to_numpy(dtype=np.int64)
    negative = np.flatnonzero(lengths < 0)
    if len(negative):
        raise ValueError(
            f"The {what} of {where} must be non-negative lengths, but rows "
            f"{_shown(rows[negative], len(negative))} (0-based) hold negative values, e.g. "
            f"{lengths[negative[0]]}."
        )
    return lengths
