"""pandas long-format frames to sequence collections and back: :func:`from_dataframe` and
:func:`to_dataframe` (the conventions are in :mod:`seqprep.readers._ingest`).

One factorisation of the ids, one stable sort, one gather per feature column and one
``np.split``; no Python loop runs per row or per id over pandas objects.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from seqprep._core.casts import check_cast
from seqprep._core.ragged import Ragged, as_ragged
from seqprep.readers._ingest import (
    _as_feature_list,
    _check_columns,
    _ids_of_rows,
    _numpy_dtype,
    _refuse_infinite,
    _shown,
    _wanted_columns,
)

__all__ = ["from_dataframe", "to_dataframe"]


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
