"""Long-format tables (pandas, CSV, Parquet) to sequence collections and back.

A long-format table has one row per time step: an id column says which sequence the row
belongs to, an optional time column orders the rows within a sequence, feature columns hold
the step's values and an optional target column holds the label. The conversion is
vectorised: one factorisation of the ids, one stable sort, one gather per feature column and
one ``np.split``; no Python loop runs per row or per id over pandas objects.

Conventions shared by every function here:

- Sequences come out in the order their id first appears in the table (``sort_ids=True``
  sorts them by id instead), so ``from_dataframe(to_dataframe(seqs))`` gives ``seqs`` back.
- Rows are ordered by ``time`` within each id with a stable sort; without ``time`` they keep
  their order in the table.
- Nothing is silently dropped or cast: missing values, duplicate ``(id, time)`` pairs,
  non-numeric features and lossy ``dtype`` requests raise errors that say what to do.

pandas is required; pyarrow only for Parquet (``pip install seqprep[parquet]``). TensorFlow is
never imported here.

The code, by format: pandas frames (:func:`~seqprep.readers._ingest_frames.from_dataframe`,
:func:`~seqprep.readers._ingest_frames.to_dataframe`) in :mod:`._ingest_frames`; CSV, NPY and
Parquet files (:func:`~seqprep.readers._ingest_files.read_sequences`,
:func:`~seqprep.readers._ingest_files.read_lengths`) in :mod:`._ingest_files`; here, the
helpers both use: column checks, the listing of offending ids, the refusal of infinite values.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

_SHOW = 5  # how many offending ids / rows an error message lists


def _shown(values: Sequence[Any] | np.ndarray, total: int | None = None) -> str:
    """``[a, b, c]`` for the first few values, with ``(and N more)`` when truncated."""
    values = list(values)
    total = len(values) if total is None else total
    head = ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in values[:_SHOW])
    more = f" (and {total - _SHOW} more)" if total > _SHOW else ""
    return f"[{head}]{more}"


def _columns_shown(df: pd.DataFrame) -> str:
    columns = list(df.columns)
    head = ", ".join(repr(c) for c in columns[:20])
    return f"[{head}{', ...' if len(columns) > 20 else ''}]"


def _as_feature_list(features: Any) -> tuple[list[Hashable], bool]:
    """Return ``(columns, single)``; ``single`` means a 1-D step (a lone column name)."""
    if isinstance(features, (list, tuple, pd.Index, np.ndarray)):
        columns = list(features)
        if not columns:
            raise ValueError(
                "Argument `features` must name at least one column. Received: features=[]\n"
                "- Pass the feature column names, e.g. features=['x1', 'x2']."
            )
        dupes = sorted({str(c) for c in columns if columns.count(c) > 1})
        if dupes:
            raise ValueError(
                f"Argument `features` names a column more than once. Received: "
                f"features={columns!r} (repeated: {dupes})"
            )
        return columns, False
    if features is None:
        raise TypeError(
            "Argument `features` must be a column name or a list of column names. "
            "Received: features=None"
        )
    return [features], True


def _check_columns(df: pd.DataFrame, wanted: Mapping[str, list[Hashable]], source: str) -> None:
    """Raise one ``ValueError`` listing every requested column that ``df`` lacks."""
    present = set(df.columns)
    lines = []
    for arg, columns in wanted.items():
        missing = [c for c in columns if c not in present]
        if missing:
            shown = missing[0] if arg != "features" else missing
            lines.append(f"Argument `{arg}` names a column that is not in {source}: {shown!r}.")
    if lines:
        raise ValueError(
            "\n".join(lines)
            + f"\nColumns in {source}: {_columns_shown(df)}\n"
            "- If the name is misspelt, use one of the columns above (names are case-sensitive)."
        )
    duplicated = [c for cols in wanted.values() for c in cols if (df.columns == c).sum() > 1]
    if duplicated:
        raise ValueError(
            f"{source} has more than one column named {duplicated[0]!r}, so the column is "
            "ambiguous.\n- If the table was concatenated, rename or drop the duplicate columns."
        )


def _wanted_columns(
    id: Hashable, time: Hashable | None, features: list[Hashable], target: Hashable | None
) -> dict[str, list[Hashable]]:
    """The columns a long table must have, by role (``time`` and ``target`` when given)."""
    wanted: dict[str, list[Hashable]] = {"id": [id]}
    if time is not None:
        wanted["time"] = [time]
    wanted["features"] = features
    if target is not None:
        wanted["target"] = [target]
    return wanted


def _numpy_dtype(dtype: Any) -> np.dtype:
    """The numpy dtype of a numeric column (``Int64`` and friends map to ``int64`` ...)."""
    return np.dtype(getattr(dtype, "numpy_dtype", dtype))


def _ids_of_rows(rows: np.ndarray, codes: np.ndarray, uniques: np.ndarray) -> str:
    ids = uniques[np.unique(codes[rows])]
    return _shown(ids)


def _infinite_rows(values: np.ndarray) -> np.ndarray:
    """Positions of the infinite entries of a column's values (none for non-float kinds)."""
    if values.dtype.kind not in "fc":
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.isinf(values))


def _refuse_infinite(
    df: pd.DataFrame,
    columns: list[Hashable],
    role: str,
    codes: np.ndarray,
    uniques: np.ndarray,
    source: str,
) -> None:
    """Refuse inf/-inf in numeric ``columns`` as NaN is refused: naming the column, the ids,
    the first row and the value, with the fix."""
    for column in columns:
        series = df[column]
        if not pd.api.types.is_numeric_dtype(series.dtype):
            continue
        rows = _infinite_rows(series.to_numpy(dtype=_numpy_dtype(series.dtype)))
        if rows.size:
            first = rows[0]
            label, id_, value = (
                v.item() if isinstance(v, np.generic) else v
                for v in (df.index[first], uniques[codes[first]], series.iloc[first])
            )
            raise ValueError(
                f"Column {column!r} (argument `{role}`) has {rows.size} infinite value(s) in "
                f"{source}; the first is at row {label!r} (id {id_!r}). Received: {value!r}. "
                "Ids with "
                f"infinite values: {_ids_of_rows(rows, codes, uniques)}\n"
                "- If they stand for overflow or missing values, replace them first (e.g. "
                "`df.replace([np.inf, -np.inf], np.nan)` then fill or drop those rows); an "
                "infinite value would poison every loss it reaches."
            )
