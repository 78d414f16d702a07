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
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from seqprep._core.casts import check_cast
from seqprep._core.ragged import Ragged, as_ragged
from seqprep.readers._parquet import _PARQUET_SUFFIXES

__all__ = ["from_dataframe", "to_dataframe", "read_sequences", "read_lengths"]

_SHOW = 5  # how many offending ids / rows an error message lists
_CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst")

Format = Literal["csv", "parquet", "npy"]
PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------
# Small helpers for messages


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


# --------------------------------------------------------------------------------------------
# from_dataframe


def from_dataframe(
    df: pd.DataFrame,
    *,
    id: Hashable,
    features: Hashable | Sequence[Hashable],
    time: Hashable | None = None,
    target: Hashable | None = None,
    target_per_step: bool = False,
    sort_ids: bool = False,
    dtype: Any = None,
    return_ids: bool = False,
) -> tuple[Any, ...]:
    """Convert a long-format frame (one row per time step) to a list of sequences.

    Rows that share an ``id`` form one sequence. Sequences are returned in the order their id
    first appears in ``df`` (or sorted by id with ``sort_ids=True``); within a sequence the
    rows are sorted by ``time`` with a stable sort, or kept in frame order when ``time`` is
    None. The work is vectorised (one factorisation, one stable sort, one gather per feature
    column): a million rows take well under a second. ``df`` is never modified and the
    returned arrays share no memory with it.

    Args:
        df: the frame, one row per time step.
        id: column naming the sequence each row belongs to.
        features: a column name, giving 1-D sequences of shape ``(T_i,)``, or a list of
            column names, giving ``(T_i, len(features))`` arrays. Columns must be numeric
            (bool, int, float, including pandas nullable dtypes).
        time: column to order the steps by (numbers, datetimes or anything sortable). Each
            ``(id, time)`` pair must be unique.
        target: column holding the label. By default it must hold one value per id (the same
            on every row of the sequence) and ``targets`` is an array with one entry per
            sequence.
        target_per_step: if True, ``targets`` is a list of ``(T_i,)`` arrays, one value per
            step (for many-to-many models), ordered like the steps.
        sort_ids: if True, order the sequences by id instead of by first appearance.
        dtype: dtype of the returned sequences. Default: the common numpy dtype of the
            feature columns. A cast that changes the kind of number (float to int) raises.
        return_ids: if True, also return the id of each sequence.

    Returns:
        ``(sequences, targets)``, or ``(sequences, targets, ids)`` with ``return_ids=True``:
        ``sequences`` is a list of arrays, ``targets`` is None (no ``target``), an array with
        one value per sequence, or a list of per-step arrays (``target_per_step=True``), and
        ``ids`` is an array of the ids in the order of ``sequences``.

    Raises:
        TypeError: ``df`` is not a DataFrame, or a feature column is not numeric.
        ValueError: a column is missing, ``df`` is empty, an ``(id, time)`` pair repeats, an
            id, time, feature or target value is missing (NaN/None; the message lists the
            ids), a feature or target value is infinite, the time column mixes value types
            (ints and strings), the target varies within an id, or ``dtype`` would change the
            kind of number.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({
        ...     "id":    ["b", "b", "a", "b", "a"],
        ...     "t":     [2, 0, 0, 1, 1],
        ...     "x":     [0.2, 0.0, 1.0, 0.1, 1.1],
        ...     "label": [1, 1, 0, 1, 0],
        ... })
        >>> seqs, labels = from_dataframe(df, id="id", time="t", features="x", target="label")
        >>> [s.tolist() for s in seqs], labels.tolist()
        ([[0.0, 0.1, 0.2], [1.0, 1.1]], [1, 0])
        >>> seqs, _, ids = from_dataframe(df, id="id", time="t", features=["x", "t"],
        ...                               sort_ids=True, return_ids=True)
        >>> ids.tolist(), seqs[0].shape
        (['a', 'b'], (2, 2))
    """
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
        source="`df`",
    )


def _from_frame(
    df: Any,
    *,
    id: Hashable,
    features: Any,
    time: Hashable | None,
    target: Hashable | None,
    target_per_step: bool,
    sort_ids: bool,
    dtype: Any,
    return_ids: bool,
    source: str,
) -> tuple[Any, ...]:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(
            f"Argument `df` must be a pandas DataFrame. Received: {type(df).__name__}\n"
            "- If you hold a list of arrays already, you do not need `from_dataframe`."
        )
    feature_columns, single = _as_feature_list(features)
    wanted = _wanted_columns(id, time, feature_columns, target)
    _check_columns(df, wanted, source)
    if len(df) == 0:
        raise ValueError(
            f"{source} has no rows, so there are no sequences to build.\n"
            "- If you filtered the frame, check the filter keeps some rows."
        )

    non_numeric = {
        c: str(df[c].dtype)
        for c in feature_columns
        if not pd.api.types.is_numeric_dtype(df[c].dtype)
    }
    if non_numeric:
        raise TypeError(
            f"Argument `features` must name numeric columns. Received non-numeric columns "
            f"(name: dtype): {non_numeric}\n"
            "- If they hold numbers stored as text, convert them with `pd.to_numeric(...)`; if "
            "they are categories, encode them as integer codes (`.cat.codes`) first."
        )

    id_column = df[id]
    missing_id = id_column.isna().to_numpy()
    if missing_id.any():
        rows = np.flatnonzero(missing_id)
        raise ValueError(
            f"Column {id!r} (argument `id`) has missing values in {source}, so those rows "
            f"belong to no sequence. Rows (index labels): {_shown(df.index[rows], len(rows))}\n"
            "- If these rows are padding or junk, drop them; otherwise fill in their ids."
        )
    codes, uniques = pd.factorize(id_column, sort=sort_ids)
    uniques = np.asarray(uniques)
    counts = np.bincount(codes, minlength=len(uniques))

    order = _sort_order(df, codes, uniques, id, time, source)
    split_points = np.cumsum(counts)[:-1]

    values = _gather_features(df, feature_columns, order, codes, uniques, dtype, source)
    if single:
        values = values[:, 0]
    sequences = np.split(values, split_points)

    targets: Any = None
    if target is not None:
        targets = _gather_target(
            df, target, order, codes, uniques, counts, split_points, target_per_step, source
        )
    if return_ids:
        return sequences, targets, uniques
    return sequences, targets


def _sort_order(
    df: pd.DataFrame,
    codes: np.ndarray,
    uniques: np.ndarray,
    id: Hashable,
    time: Hashable | None,
    source: str,
) -> np.ndarray:
    """Row order that groups ids (in code order) and sorts by time within each, stably."""
    if time is None:
        return np.argsort(codes, kind="stable")
    time_column = df[time]
    missing = time_column.isna().to_numpy()
    if missing.any():
        rows = np.flatnonzero(missing)
        raise ValueError(
            f"Column {time!r} (argument `time`) has missing values in {source}, so the steps "
            f"cannot be ordered. Ids with a missing time: {_ids_of_rows(rows, codes, uniques)} "
            f"({len(rows)} rows)\n"
            "- If the rows are already in time order, pass `time=None`; otherwise fill in "
            "or drop the missing times."
        )
    _refuse_mixed_types(time_column, time, source)
    if isinstance(time_column.dtype, np.dtype) and time_column.dtype.kind in "biufmM":
        keys = time_column.to_numpy()
    else:
        # Extension dtypes (nullable ints, tz-aware datetimes, strings): rank them once.
        keys = pd.factorize(time_column, sort=True)[0]
    # Two stable sorts equal np.lexsort((keys, codes)) and run a little faster.
    by_time = np.argsort(keys, kind="stable")
    order = by_time[np.argsort(codes[by_time], kind="stable")]

    sorted_codes = codes[order]
    sorted_keys = keys[order]
    dup = (sorted_codes[1:] == sorted_codes[:-1]) & (sorted_keys[1:] == sorted_keys[:-1])
    if dup.any():
        where = np.flatnonzero(dup)
        rows = order[where]
        pairs = list(
            zip(uniques[codes[rows]].tolist(), time_column.iloc[rows].tolist(), strict=True)
        )
        raise ValueError(
            f"Columns {id!r} and {time!r} must identify each row, but {source} has "
            f"{len(where)} duplicate (id, time) pairs, e.g. {_shown(pairs, len(pairs))}\n"
            f"- If duplicates are repeated measurements, aggregate them first, e.g. "
            f"`df.groupby([{id!r}, {time!r}], as_index=False).mean()`; if they are copies, "
            f"drop them with `df.drop_duplicates([{id!r}, {time!r}])`."
        )
    return order


def _refuse_mixed_types(column: pd.Series, name: Hashable, source: str) -> None:
    """Refuse a time column whose values are of several kinds (ints and strings, ...):
    they have no order of their own, so any order picked for them would be arbitrary."""
    kind = pd.api.types.infer_dtype(column, skipna=True)
    if not kind.startswith("mixed") or kind == "mixed-integer-float":  # ints with floats order
        return
    types = column.map(lambda v: type(v).__name__).to_numpy()
    names, first = np.unique(types, return_index=True)
    examples = ", ".join(
        f"row {column.index[i]!r}: {column.iloc[i]!r} ({t})"
        for t, i in sorted(zip(names.tolist(), first.tolist(), strict=True), key=lambda p: p[1])
    )
    raise ValueError(
        f"Column {name!r} (argument `time`) mixes value types in {source} "
        f"({', '.join(sorted(names.tolist()))}), so its values have no order. Received: "
        f"{examples}\n- Convert the column to one type first, e.g. "
        f"`df[{name!r}] = pd.to_numeric(df[{name!r}])` for numbers stored as text, or "
        f"`pd.to_datetime(...)` for dates; or pass `time=None` if the rows are in order."
    )


def _gather_features(
    df: pd.DataFrame,
    columns: list[Hashable],
    order: np.ndarray,
    codes: np.ndarray,
    uniques: np.ndarray,
    dtype: Any,
    source: str,
) -> np.ndarray:
    """One ``(n_rows, n_features)`` array of the feature values in ``order``."""
    missing = df[columns].isna().to_numpy().any(axis=1)
    if missing.any():
        rows = np.flatnonzero(missing)
        bad_columns = [c for c in columns if df[c].isna().any()]
        raise ValueError(
            f"Feature columns {bad_columns!r} have missing values (NaN/None) in {source}. "
            f"Ids with missing values: {_ids_of_rows(rows, codes, uniques)} "
            f"({len(rows)} rows)\n"
            "- If the values are missing at random, fill them (e.g. `df.ffill()` within each "
            "id) or drop those rows; a NaN would poison every loss it reaches."
        )
    _refuse_infinite(df, columns, "features", codes, uniques, source)
    natural = np.result_type(*[_numpy_dtype(df[c].dtype) for c in columns])
    if dtype is None:
        out_dtype = natural
    else:
        out_dtype = np.dtype(dtype)
        if not np.can_cast(natural, out_dtype, casting="same_kind"):
            raise ValueError(
                f"Argument `dtype` would change the kind of the feature values from {natural} "
                f"to {out_dtype}, losing data. Received: dtype={dtype!r}\n"
                "- If you want integers, round the columns in the frame first; otherwise "
                "leave `dtype=None` or pick a float dtype."
            )
    out = np.empty((len(order), len(columns)), dtype=out_dtype)
    for j, column in enumerate(columns):
        # Each column is cast from its own dtype (never via the common one, where an int64
        # past 2**53 next to a float column would round) and checked value by value.
        values = df[column].to_numpy(dtype=_numpy_dtype(df[column].dtype))[order]
        check_cast(
            values, out_dtype,
            locate=lambda i, c=column: f"column {c!r}, row {int(order[i])} of {source}",
            suffix=" (`dtype=None` picks the columns' common dtype)" if dtype is None else "",
        )
        out[:, j] = values
    return out


def _gather_target(
    df: pd.DataFrame,
    target: Hashable,
    order: np.ndarray,
    codes: np.ndarray,
    uniques: np.ndarray,
    counts: np.ndarray,
    split_points: np.ndarray,
    per_step: bool,
    source: str,
) -> np.ndarray | list[np.ndarray]:
    column = df[target]
    missing = column.isna().to_numpy()
    if missing.any():
        rows = np.flatnonzero(missing)
        raise ValueError(
            f"Column {target!r} (argument `target`) has missing values in {source}. Ids with "
            f"a missing target: {_ids_of_rows(rows, codes, uniques)} ({len(rows)} rows)\n"
            "- If these sequences are unlabelled, drop their rows or load them without "
            "`target`."
        )
    _refuse_infinite(df, [target], "target", codes, uniques, source)
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy(dtype=_numpy_dtype(column.dtype))[order]
    else:
        values = column.to_numpy()[order]
    if per_step:
        return np.split(values, split_points)
    first = values[np.concatenate([[0], split_points]).astype(np.int64)]
    varies = values != np.repeat(first, counts)
    if varies.any():
        rows = order[np.flatnonzero(varies)]
        raise ValueError(
            f"Column {target!r} (argument `target`) must hold one value per id, but it varies "
            f"within ids {_ids_of_rows(rows, codes, uniques)} in {source}\n"
            "- If the target is per time step, pass `target_per_step=True`; otherwise "
            "aggregate it to one value per id first."
        )
    return first


# --------------------------------------------------------------------------------------------
# to_dataframe


def to_dataframe(
    sequences: Any,
    *,
    ids: Sequence[Any] | np.ndarray | None = None,
    features: Hashable | Sequence[Hashable] | None = None,
    targets: Any = None,
    time: Hashable | None = "time",
    id: Hashable = "id",
    target: Hashable = "target",
) -> pd.DataFrame:
    """Convert sequences to a long-format frame, one row per time step (inverse of
    :func:`from_dataframe`).

    Columns come out in the order ``id``, ``time``, the features, ``target``. Rows are grouped
    by sequence, in the order of ``sequences``, with ``time`` counting steps from 0 in each.
    ``from_dataframe(to_dataframe(seqs, features=names), id="id", time="time",
    features=names)`` returns ``seqs``.

    Args:
        sequences: any sequence collection (list of arrays or lists, ``tf.RaggedTensor``,
            ``(n, T, ...)`` array, pandas Series of arrays) with scalar steps or 1-D steps.
            Empty sequences cannot be written (a long table has no row for them) and raise.
        ids: one id per sequence, all distinct. Default: ``0 .. n-1``.
        features: column names. A single name for scalar steps (default ``"value"``), or one
            name per step feature (default ``"f0", "f1", ...``).
        targets: None; one value per sequence (repeated on each of its rows); or one
            ``(T_i,)`` array per sequence (a per-step target).
        time: name of the step-index column, or None to leave it out.
        id: name of the id column.
        target: name of the target column (used only with ``targets``).

    Returns:
        A new DataFrame with ``sum(T_i)`` rows.

    Raises:
        ValueError: a sequence is empty, steps have more than one axis, ``ids`` repeat or have
            the wrong length, ``features`` or ``targets`` do not match the sequences, or two
            output columns share a name.
        TypeError: ``sequences`` is not a sequence collection.

    Example:
        >>> import numpy as np
        >>> seqs = [np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[4.0, 5.0]])]
        >>> df = to_dataframe(seqs, ids=["a", "b"], features=["x", "y"], targets=[1, 0])
        >>> df
          id  time    x    y  target
        0  a     0  0.0  1.0       1
        1  a     1  2.0  3.0       1
        2  b     0  4.0  5.0       0
        >>> back, labels = from_dataframe(df, id="id", time="time", features=["x", "y"],
        ...                               target="target")
        >>> [b.tolist() for b in back], labels.tolist()
        ([[[0.0, 1.0], [2.0, 3.0]], [[4.0, 5.0]]], [1, 0])
    """
    ragged = as_ragged(sequences)
    lengths = ragged.lengths
    values = _table_values(ragged)
    feature_columns = _feature_names(features, ragged.values.ndim == 1, values.shape[1])
    id_values = _id_values(ids, len(lengths))
    names: list[Hashable] = [id, *([time] if time is not None else []), *feature_columns]
    if targets is not None:
        names.append(target)
    clashes = sorted({str(c) for c in names if names.count(c) > 1})
    if clashes:
        raise ValueError(
            f"Output column names must be distinct, but {clashes} is used twice (arguments "
            "`id`, `time`, `features`, `target`).\n- If a feature is called like the id or "
            "time column, rename it with `features=`, `id=` or `time=`."
        )

    offsets = ragged.offsets
    columns: dict[Hashable, Any] = {id: np.repeat(id_values, lengths)}
    if time is not None:
        columns[time] = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    for j, name in enumerate(feature_columns):
        columns[name] = values[:, j].copy()
    if targets is not None:
        columns[target] = _target_rows(targets, lengths)
    return pd.DataFrame(columns)


def _table_values(ragged: Ragged) -> np.ndarray:
    """The steps as a ``(rows, features)`` view; refuses empty sequences and steps of more
    than one axis."""
    empty = np.flatnonzero(ragged.lengths == 0)
    if len(empty):
        raise ValueError(
            f"Argument `sequences` has empty sequences at positions {_shown(empty)}, which a "
            "long-format table cannot hold (it has no row for them).\n"
            "- If they carry no data, drop them first; `from_dataframe` would not give them "
            "back."
        )
    values = ragged.values
    if values.ndim > 2:
        raise ValueError(
            f"Argument `sequences` must have scalar or 1-D steps to become table columns. "
            f"Received steps of shape {values.shape[1:]}\n"
            "- If each step is a matrix, reshape it to a vector first: "
            "`[s.reshape(len(s), -1) for s in sequences]`."
        )
    return values[:, None] if values.ndim == 1 else values


def _feature_names(features: Any, scalar: bool, width: int) -> list[Hashable]:
    """One column name per step feature (``"value"`` or ``"f0", "f1", ...`` by default)."""
    if features is None:
        return ["value"] if scalar else [f"f{j}" for j in range(width)]
    feature_columns, _ = _as_feature_list(features)
    if len(feature_columns) != width:
        raise ValueError(
            f"Argument `features` must name one column per step feature "
            f"({width}). Received {len(feature_columns)} names: features={features!r}"
        )
    return feature_columns


def _id_values(ids: Any, n: int) -> np.ndarray:
    """``ids`` checked (one per sequence, all distinct), or ``0 .. n-1``."""
    if ids is None:
        return np.arange(n, dtype=np.int64)
    id_values = np.asarray(ids)
    if id_values.ndim != 1 or len(id_values) != n:
        raise ValueError(
            f"Argument `ids` must hold one id per sequence ({n}). Received "
            f"{np.shape(ids)[0] if np.ndim(ids) else 'a scalar'} "
            f"(shape {np.shape(ids)})"
        )
    repeated = pd.Index(id_values)[pd.Index(id_values).duplicated()]
    if len(repeated):
        raise ValueError(
            f"Argument `ids` must be distinct; repeated ids would merge sequences. "
            f"Repeated: {_shown(repeated.unique(), len(repeated.unique()))}"
        )
    return id_values


def _target_rows(targets: Any, lengths: np.ndarray) -> np.ndarray:
    """Expand per-sequence or per-step targets to one value per row."""
    n = len(lengths)
    if isinstance(targets, np.ndarray) and targets.ndim == 1 and targets.dtype != object:
        items: Any = targets
        per_sequence = True
    else:
        items = list(targets)
        per_sequence = all(np.ndim(t) == 0 for t in items)
    if len(items) != n:
        raise ValueError(
            f"Argument `targets` must hold one entry per sequence ({n}). Received {len(items)}\n"
            "- Pass one target (or one target sequence) per sequence, in the same order."
        )
    if per_sequence:
        return np.repeat(np.asarray(items), lengths)
    item_lengths = np.array([len(t) if np.ndim(t) == 1 else -1 for t in items], dtype=np.int64)
    bad = np.flatnonzero(item_lengths != lengths)
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            "Argument `targets` must hold either one scalar per sequence or one 1-D array per "
            f"sequence with one value per step. Sequence {i} has {lengths[i]} steps but "
            f"targets[{i}] has shape {np.shape(items[i])}"
        )
    return np.concatenate([np.asarray(t) for t in items])


# --------------------------------------------------------------------------------------------
# File readers


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
    column: Hashable | None = None,
    format: Format | None = None,
    read_options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Read sequence lengths from a file without loading the sequences' values.

    Three layouts are understood:

    - a long-format CSV/Parquet table (one row per step): pass ``id``; only that column is
      read and the lengths are the number of rows per id, in order of first appearance (the
      order :func:`read_sequences` uses by default);
    - a CSV/Parquet table with a column of lengths: pass ``column`` (or neither, for a table
      of that one column); only that column is read;
    - a ``.npy`` file holding a 1-D integer array of lengths: pass neither.

    Args:
        path: the file.
        id: id column of a long-format table.
        column: column of lengths.
        format: ``"csv"``, ``"parquet"`` or ``"npy"``; default: from the file suffix.
        read_options: extra keyword arguments for ``pandas.read_csv`` / ``read_parquet``.

    Returns:
        A 1-D int64 array of non-negative lengths.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImportError: the file is Parquet and pyarrow is not installed.
        ValueError: the file is empty, the column is missing, holds missing, non-integer or
            negative values, or ``id``/``column`` do not fit the layout (both, or neither for a
            table of several columns; either for ``.npy``).
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

    df = _read_columns(resolved, format, {"column": [column]}, read_options)
    return _checked_lengths(df[column], where, f"column {column!r}", np.arange(len(df)))


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
