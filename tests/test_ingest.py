"""Tests for seqprep.readers._ingest: long-format frames and files to sequences and back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import seqprep
from seqprep.readers._ingest_files import read_lengths, read_sequences
from seqprep.readers._ingest_frames import from_dataframe, to_dataframe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def frame() -> pd.DataFrame:
    """Two sequences, rows shuffled in time, id 'b' first."""
    return pd.DataFrame(
        {
            "id": ["b", "b", "a", "b", "a"],
            "t": [2, 0, 1, 1, 0],
            "x": [0.2, 0.0, 1.1, 0.1, 1.0],
            "y": [20.0, 0.0, 11.0, 10.0, 1.0],
            "label": [1, 1, 0, 1, 0],
            "note": ["r", "s", "t", "u", "v"],
        }
    )


def _lists(sequences):
    return [s.tolist() for s in sequences]


# --------------------------------------------------------------------------------------------
# from_dataframe: exact values


def test_groups_by_first_appearance_and_sorts_by_time(frame):
    seqs, targets = from_dataframe(frame, id="id", time="t", features=["x", "y"])
    assert targets is None
    assert _lists(seqs) == [
        [[0.0, 0.0], [0.1, 10.0], [0.2, 20.0]],
        [[1.0, 1.0], [1.1, 11.0]],
    ]
    assert all(s.dtype == np.float64 and s.flags.c_contiguous for s in seqs)


def test_sort_ids_and_return_ids(frame):
    seqs, _, ids = from_dataframe(
        frame, id="id", time="t", features="x", sort_ids=True, return_ids=True
    )
    assert ids.tolist() == ["a", "b"]
    assert _lists(seqs) == [[1.0, 1.1], [0.0, 0.1, 0.2]]
    _, _, ids = from_dataframe(frame, id="id", time="t", features="x", return_ids=True)
    assert ids.tolist() == ["b", "a"]


def test_single_feature_name_gives_1d_and_list_gives_2d(frame):
    one, _ = from_dataframe(frame, id="id", time="t", features="x")
    listed, _ = from_dataframe(frame, id="id", time="t", features=["x"])
    assert [s.shape for s in one] == [(3,), (2,)]
    assert [s.shape for s in listed] == [(3, 1), (2, 1)]


def test_without_time_keeps_frame_order_within_each_id(frame):
    seqs, _ = from_dataframe(frame, id="id", features="t")
    assert _lists(seqs) == [[2, 0, 1], [1, 0]]


def test_time_sort_is_by_value_not_by_text():
    df = pd.DataFrame({"id": [1, 1, 1], "t": [10.0, 9.0, 100.0], "x": [3, 2, 4]})
    seqs, _ = from_dataframe(df, id="id", time="t", features="x")
    assert seqs[0].tolist() == [2, 3, 4]


@pytest.mark.parametrize(
    "times",
    [
        pd.to_datetime(["2021-01-03", "2021-01-01", "2021-01-02"]),
        pd.to_datetime(["2021-01-03", "2021-01-01", "2021-01-02"], utc=True),
        pd.array([3, 1, 2], dtype="Int64"),
        pd.array(["2021-01-03", "2021-01-01", "2021-01-02"], dtype="string"),
        pd.to_timedelta([3, 1, 2], unit="s"),
    ],
    ids=["datetime", "tz-aware", "Int64", "iso-strings", "timedelta"],
)
def test_time_column_types(times):
    df = pd.DataFrame({"id": [0, 0, 0], "t": times, "x": [30.0, 10.0, 20.0]})
    seqs, _ = from_dataframe(df, id="id", time="t", features="x")
    assert seqs[0].tolist() == [10.0, 20.0, 30.0]


def test_target_one_per_id(frame):
    seqs, labels = from_dataframe(frame, id="id", time="t", features="x", target="label")
    assert labels.tolist() == [1, 0]
    assert labels.dtype == np.int64
    assert len(labels) == len(seqs)


def test_target_per_step_follows_time_order(frame):
    _, per_step = from_dataframe(
        frame, id="id", time="t", features="x", target="y", target_per_step=True
    )
    assert _lists(per_step) == [[0.0, 10.0, 20.0], [1.0, 11.0]]


def test_string_target_per_id():
    df = pd.DataFrame({"id": [1, 1, 2], "x": [0.0, 1.0, 2.0], "cls": ["dog", "dog", "cat"]})
    _, labels = from_dataframe(df, id="id", features="x", target="cls")
    assert labels.tolist() == ["dog", "cat"]


def test_nullable_and_bool_features_and_dtype():
    df = pd.DataFrame(
        {
            "id": [0, 0, 1],
            "n": pd.array([1, 2, 3], dtype="Int64"),
            "b": [True, False, True],
        }
    )
    seqs, _ = from_dataframe(df, id="id", features=["n", "b"])
    assert seqs[0].dtype == np.int64
    assert _lists(seqs) == [[[1, 1], [2, 0]], [[3, 1]]]
    seqs32, _ = from_dataframe(df, id="id", features=["n", "b"], dtype="float32")
    assert seqs32[0].dtype == np.float32
    assert _lists(seqs32) == [[[1.0, 1.0], [2.0, 0.0]], [[3.0, 1.0]]]


def test_mixed_int_and_float_features_upcast_to_float():
    df = pd.DataFrame({"id": [0, 0], "i": [1, 2], "f": [0.5, 1.5]})
    seqs, _ = from_dataframe(df, id="id", features=["i", "f"])
    assert seqs[0].dtype == np.float64
    assert seqs[0].tolist() == [[1.0, 0.5], [2.0, 1.5]]


def test_single_row_and_single_id():
    df = pd.DataFrame({"id": [5], "x": [1.5], "label": [3]})
    seqs, labels = from_dataframe(df, id="id", features="x", target="label")
    assert _lists(seqs) == [[1.5]] and labels.tolist() == [3]


def test_does_not_mutate_frame_and_shares_no_memory(frame):
    before = frame.copy(deep=True)
    seqs, labels = from_dataframe(
        frame, id="id", time="t", features=["x", "y"], target="label"
    )
    pd.testing.assert_frame_equal(frame, before)
    for s in seqs:
        s[:] = -1.0
    labels[:] = -1
    pd.testing.assert_frame_equal(frame, before)
    for column in ("x", "y", "label"):
        assert not any(np.shares_memory(s, frame[column].to_numpy()) for s in seqs)


def test_index_and_column_order_do_not_matter(frame):
    shuffled = frame.sample(frac=1.0, random_state=3).set_index("note")
    shuffled = shuffled[["label", "x", "t", "id"]]
    a, _ = from_dataframe(frame, id="id", time="t", features="x", sort_ids=True)
    b, _ = from_dataframe(shuffled, id="id", time="t", features="x", sort_ids=True)
    assert _lists(a) == _lists(b)


def test_numeric_column_names():
    df = pd.DataFrame({0: [1, 1, 2], 1: [0.0, 1.0, 2.0], 2: [5.0, 6.0, 7.0]})
    seqs, _ = from_dataframe(df, id=0, features=[1, 2])
    assert _lists(seqs) == [[[0.0, 5.0], [1.0, 6.0]], [[2.0, 7.0]]]


def test_top_level_export(frame):
    seqs, _ = seqprep.from_dataframe(frame, id="id", time="t", features="x")
    assert len(seqs) == 2
    assert seqprep.to_dataframe is to_dataframe
    assert seqprep.read_sequences is read_sequences
    assert seqprep.read_lengths is read_lengths


# --------------------------------------------------------------------------------------------
# from_dataframe: errors


@pytest.mark.parametrize(
    ("kwargs", "argument", "shown"),
    [
        ({"id": "ID", "features": "x"}, "id", "'ID'"),
        ({"id": "id", "features": "x", "time": "T"}, "time", "'T'"),
        ({"id": "id", "features": ["x", "z"]}, "features", "['z']"),
        ({"id": "id", "features": "x", "target": "lbl"}, "target", "'lbl'"),
    ],
)
def test_missing_column_names_argument_and_lists_columns(frame, kwargs, argument, shown):
    with pytest.raises(ValueError) as info:
        from_dataframe(frame, **kwargs)
    message = str(info.value)
    assert f"Argument `{argument}` names a column that is not in `df`: {shown}" in message
    assert "Columns in `df`: ['id', 't', 'x', 'y', 'label', 'note']" in message
    assert "- If" in message


def test_all_missing_columns_reported_at_once(frame):
    with pytest.raises(ValueError, match=r"(?s)`id`.*`features`.*`target`"):
        from_dataframe(frame, id="ID", features=["zz"], target="lbl")


def test_duplicate_id_time_pairs(frame):
    df = pd.concat([frame, frame.iloc[[0, 4]]], ignore_index=True)
    with pytest.raises(ValueError) as info:
        from_dataframe(df, id="id", time="t", features="x")
    message = str(info.value)
    assert "2 duplicate (id, time) pairs" in message
    assert "('a', 0)" in message and "('b', 2)" in message
    assert "drop_duplicates(['id', 't'])" in message


def test_non_numeric_feature(frame):
    with pytest.raises(TypeError, match=r"`features` must name numeric columns.*'note'"):
        from_dataframe(frame, id="id", features=["x", "note"])


def test_categorical_feature_is_non_numeric():
    df = pd.DataFrame({"id": [0, 0], "c": pd.Categorical(["a", "b"])})
    with pytest.raises(TypeError, match=r"cat\.codes"):
        from_dataframe(df, id="id", features="c")


def test_nan_feature_names_the_ids():
    df = pd.DataFrame({"id": [1, 1, 2, 3, 3], "x": [0.0, np.nan, 1.0, 2.0, None]})
    with pytest.raises(ValueError) as info:
        from_dataframe(df, id="id", features="x")
    message = str(info.value)
    assert "Ids with missing values: [1, 3] (2 rows)" in message
    assert "['x']" in message


def test_nan_in_one_of_several_features_names_that_column():
    df = pd.DataFrame({"id": [1, 2], "a": [0.0, 1.0], "b": [pd.NA, 2.0]}).astype(
        {"b": "Float64"}
    )
    pattern = r"Feature columns \['b'\].*Ids with missing values: \[1\]"
    with pytest.raises(ValueError, match=pattern):
        from_dataframe(df, id="id", features=["a", "b"])


def test_many_bad_ids_are_truncated():
    df = pd.DataFrame({"id": np.arange(20), "x": np.full(20, np.nan)})
    with pytest.raises(ValueError, match=r"\[0, 1, 2, 3, 4\] \(and 15 more\)"):
        from_dataframe(df, id="id", features="x")


def test_missing_id_time_and_target():
    df = pd.DataFrame({"id": [1.0, np.nan], "t": [0, 1], "x": [0.0, 1.0], "y": [1, 1]})
    with pytest.raises(ValueError, match=r"Column 'id' \(argument `id`\) has missing values"):
        from_dataframe(df, id="id", features="x")
    df = pd.DataFrame({"id": [1, 2], "t": [0.0, np.nan], "x": [0.0, 1.0], "y": [1.0, None]})
    pattern = r"`time`\) has missing values.*Ids with a missing time: \[2\]"
    with pytest.raises(ValueError, match=pattern):
        from_dataframe(df, id="id", time="t", features="x")
    with pytest.raises(ValueError, match=r"`target`\) has missing values.*\[2\]"):
        from_dataframe(df, id="id", features="x", target="y")


def test_target_varying_within_id(frame):
    with pytest.raises(ValueError) as info:
        from_dataframe(frame, id="id", features="x", target="y")
    message = str(info.value)
    assert "must hold one value per id" in message
    assert "['b', 'a']" in message
    assert "target_per_step=True" in message


def test_empty_frame(frame):
    with pytest.raises(ValueError, match=r"`df` has no rows"):
        from_dataframe(frame.iloc[:0], id="id", features="x")


def test_not_a_frame():
    with pytest.raises(TypeError, match=r"`df` must be a pandas DataFrame. Received: list"):
        from_dataframe([[1, 2]], id="id", features="x")


def test_lossy_dtype_refused(frame):
    with pytest.raises(ValueError, match=r"`dtype` would change.*float64 to int32"):
        from_dataframe(frame, id="id", features="x", dtype="int32")


@pytest.mark.parametrize(
    ("features", "error", "pattern"),
    [
        ([], ValueError, r"at least one column"),
        (["x", "x"], ValueError, r"more than once"),
        (None, TypeError, r"features=None"),
    ],
)
def test_bad_features_argument(frame, features, error, pattern):
    with pytest.raises(error, match=pattern):
        from_dataframe(frame, id="id", features=features)


def test_duplicated_column_label_in_frame():
    df = pd.DataFrame([[1, 0.0, 1.0]], columns=["id", "x", "x"])
    with pytest.raises(ValueError, match=r"more than one column named 'x'"):
        from_dataframe(df, id="id", features="x")


# --------------------------------------------------------------------------------------------
# to_dataframe


def test_to_dataframe_layout_and_defaults():
    df = to_dataframe([np.array([[1, 2], [3, 4]]), np.array([[5, 6]])])
    assert list(df.columns) == ["id", "time", "f0", "f1"]
    assert df["id"].tolist() == [0, 0, 1]
    assert df["time"].tolist() == [0, 1, 0]
    assert df["f1"].tolist() == [2, 4, 6]
    scalar = to_dataframe([[1.5, 2.5], [3.5]], time=None, id="seq")
    assert list(scalar.columns) == ["seq", "value"]
    assert scalar["value"].tolist() == [1.5, 2.5, 3.5]


def test_to_dataframe_targets_per_sequence_and_per_step():
    seqs = [np.zeros(2), np.ones(3)]
    per_seq = to_dataframe(seqs, targets=np.array([7, 8]), target="y")
    assert per_seq["y"].tolist() == [7, 7, 8, 8, 8]
    per_step = to_dataframe(seqs, targets=[np.array([1, 2]), np.array([3, 4, 5])])
    assert per_step["target"].tolist() == [1, 2, 3, 4, 5]


def test_to_dataframe_does_not_alias_inputs():
    seqs = [np.arange(4.0).reshape(2, 2)]
    df = to_dataframe(seqs)
    df.loc[0, "f0"] = 99.0
    assert seqs[0][0, 0] == 0.0


@pytest.mark.parametrize(
    ("sequences", "kwargs", "pattern"),
    [
        ([np.zeros(2), np.zeros(0)], {}, r"empty sequences at positions \[1\]"),
        ([np.zeros((2, 2, 2))], {}, r"scalar or 1-D steps"),
        ([np.zeros(2)], {"ids": [1, 2]}, r"one id per sequence \(1\)"),
        ([np.zeros(2), np.zeros(1)], {"ids": ["a", "a"]}, r"`ids` must be distinct.*'a'"),
        ([np.zeros((2, 2))], {"features": ["x"]}, r"one column per step feature \(2\)"),
        ([np.zeros((2, 2))], {"features": ["time", "x"]}, r"\['time'\] is used twice"),
        ([np.zeros(2)], {"targets": [1, 2]}, r"one entry per sequence \(1\)"),
        ([np.zeros(2)], {"targets": [np.zeros(3)]}, r"Sequence 0 has 2 steps.*shape \(3,\)"),
    ],
)
def test_to_dataframe_errors(sequences, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        to_dataframe(sequences, **kwargs)


# --------------------------------------------------------------------------------------------
# Round trip (property)


@st.composite
def collections(draw):
    n = draw(st.integers(1, 8), label="n")
    width = draw(st.sampled_from([None, 1, 3]), label="width (None: scalar steps)")
    lengths = draw(st.lists(st.integers(1, 6), min_size=n, max_size=n), label="lengths")
    floats = st.floats(-1e6, 1e6, allow_nan=False, width=32)
    sequences = []
    for length in lengths:
        shape = (length,) if width is None else (length, width)
        cells = draw(st.lists(floats, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        sequences.append(np.array(cells, dtype=np.float32).reshape(shape))
    ids = draw(
        st.one_of(
            st.lists(st.integers(-1000, 1000), min_size=n, max_size=n, unique=True),
            st.lists(st.text("abcxyz", min_size=1, max_size=4), min_size=n, max_size=n,
                     unique=True),
        ),
        label="ids",
    )
    return sequences, ids, width


@given(st.data())
def test_round_trip_through_a_shuffled_frame(data):
    sequences, ids, width = data.draw(collections(), label="collection")
    n = len(sequences)
    targets = data.draw(st.lists(st.integers(0, 9), min_size=n, max_size=n), label="targets")
    features = "v" if width is None else [f"c{j}" for j in range(width)]
    df = to_dataframe(sequences, ids=ids, features=features, targets=targets)
    assert len(df) == sum(len(s) for s in sequences)
    seed = data.draw(st.integers(0, 2**16), label="shuffle seed")
    shuffled = df.sample(frac=1.0, random_state=seed)

    back, back_targets, back_ids = from_dataframe(
        shuffled, id="id", time="time", features=features, target="target", return_ids=True
    )
    # Shuffling changes the order of first appearance, so compare by id.
    by_id = {i: (s, t) for i, s, t in zip(back_ids.tolist(), back, back_targets, strict=True)}
    assert sorted(by_id, key=str) == sorted(ids, key=str)
    for i, s, t in zip(ids, sequences, targets, strict=True):
        got, got_target = by_id[i]
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, s)
        assert got_target == t

    # Unshuffled, the order of first appearance is the original order.
    in_order, in_order_targets = from_dataframe(
        df, id="id", time="time", features=features, target="target"
    )
    for got, s in zip(in_order, sequences, strict=True):
        np.testing.assert_array_equal(got, s)
    assert in_order_targets.tolist() == targets


@given(st.data())
def test_round_trip_per_step_targets(data):
    sequences, ids, _ = data.draw(collections(), label="collection")
    per_step = [np.arange(len(s)) * 10 + k for k, s in enumerate(sequences)]
    df = to_dataframe(sequences, ids=ids, targets=per_step)
    _, back = from_dataframe(
        df, id="id", time="time", features=list(df.columns[2:-1]) or "value",
        target="target", target_per_step=True,
    )
    for got, want in zip(back, per_step, strict=True):
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------------------------
# read_sequences


def test_read_sequences_csv_matches_from_dataframe(frame, tmp_path):
    path = tmp_path / "steps.csv"
    frame.to_csv(path, index=False)
    got, labels, ids = read_sequences(
        path, id="id", time="t", features=["x", "y"], target="label", return_ids=True
    )
    want, want_labels = from_dataframe(frame, id="id", time="t", features=["x", "y"],
                                       target="label")
    assert _lists(got) == _lists(want)
    assert labels.tolist() == want_labels.tolist()
    assert ids.tolist() == ["b", "a"]


@pytest.fixture
def parquet_spy(frame, tmp_path, monkeypatch):
    """`frame` written to Parquet, and the `columns=` of every `pd.read_parquet` call after."""
    pytest.importorskip("pyarrow")
    path = tmp_path / "steps.parquet"
    frame.to_parquet(path)
    calls = []
    original = pd.read_parquet

    def spy(*args, **kwargs):
        calls.append(kwargs.get("columns"))
        return original(*args, **kwargs)

    monkeypatch.setattr(pd, "read_parquet", spy)
    return path, calls


def test_read_sequences_parquet_reads_only_needed_columns(parquet_spy):
    path, calls = parquet_spy
    got, labels = read_sequences(path, id="id", time="t", features="x", target="label")
    assert calls == [["id", "t", "x", "label"]]
    assert _lists(got) == [[0.0, 0.1, 0.2], [1.0, 1.1]]
    assert labels.tolist() == [1, 0]


def test_read_sequences_parquet_directory(frame, tmp_path):
    pytest.importorskip("pyarrow")
    folder = tmp_path / "parts"
    folder.mkdir()
    frame.iloc[:3].to_parquet(folder / "part-0.parquet")
    frame.iloc[3:].to_parquet(folder / "part-1.parquet")
    got, _ = read_sequences(folder, id="id", time="t", features="x", sort_ids=True)
    assert _lists(got) == [[1.0, 1.1], [0.0, 0.1, 0.2]]


def test_read_sequences_tsv_and_explicit_format(frame, tmp_path):
    tsv = tmp_path / "steps.tsv"
    frame.to_csv(tsv, sep="\t", index=False)
    odd = tmp_path / "steps.data"
    frame.to_csv(odd, sep=";", index=False)
    a, _ = read_sequences(tsv, id="id", time="t", features="x")
    b, _ = read_sequences(odd, id="id", time="t", features="x", format="csv",
                          read_options={"sep": ";"})
    assert _lists(a) == _lists(b) == [[0.0, 0.1, 0.2], [1.0, 1.1]]


def test_read_sequences_errors_name_the_file(frame, tmp_path):
    path = tmp_path / "steps.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"`time` names a column that is not in file '.*steps"):
        read_sequences(path, id="id", time="when", features="x")
    frame.assign(x=[0.0, np.nan, 1.0, 2.0, 3.0]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"missing values \(NaN/None\) in file .*\['b'\]"):
        read_sequences(path, id="id", time="t", features="x")
    with pytest.raises(FileNotFoundError, match=r"Received: path='.*nope.csv'"):
        read_sequences(tmp_path / "nope.csv", id="id", features="x")


def test_parquet_without_pyarrow_says_how_to_install(frame, tmp_path, monkeypatch):
    path = tmp_path / "steps.parquet"
    path.write_bytes(b"PAR1")
    for name in ("pyarrow", "pyarrow.parquet", "pyarrow.dataset"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install seqprep\[parquet\]"):
        read_sequences(path, id="id", features="x")
    with pytest.raises(ImportError, match=r"pip install seqprep\[parquet\]"):
        read_lengths(path, id="id")


def test_unreadable_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"Cannot read .*broken.parquet.* as Parquet"):
        read_sequences(path, id="id", features="x")


def test_unknown_suffix(tmp_path):
    path = tmp_path / "steps.xlsx"
    path.write_text("id,x\n1,2\n")
    with pytest.raises(ValueError, match=r"(?s)Cannot tell the format.*'\.xlsx'.*format="):
        read_sequences(path, id="id", features="x")
    with pytest.raises(ValueError, match=r"Argument `format` must be 'csv' or 'parquet'"):
        read_sequences(path, id="id", features="x", format="npy")


# --------------------------------------------------------------------------------------------
# read_lengths


def test_read_lengths_by_id_matches_read_sequences(frame, tmp_path):
    path = tmp_path / "steps.csv"
    frame.to_csv(path, index=False)
    lengths = read_lengths(path, id="id")
    seqs, _ = read_sequences(path, id="id", time="t", features="x")
    assert lengths.dtype == np.int64
    assert lengths.tolist() == [len(s) for s in seqs] == [3, 2]


def test_read_lengths_parquet_reads_only_the_id_column(parquet_spy):
    path, calls = parquet_spy
    assert read_lengths(path, id="id").tolist() == [3, 2]
    assert read_lengths(path, column="label").tolist() == [1, 1, 0, 1, 0]
    assert calls == [["id"], ["label"]]


def test_read_lengths_column_and_npy(tmp_path):
    csv = tmp_path / "lengths.csv"
    pd.DataFrame({"n": [3, 0, 7], "other": ["a", "b", "c"]}).to_csv(csv, index=False)
    assert read_lengths(csv, column="n").tolist() == [3, 0, 7]
    npy = tmp_path / "lengths.npy"
    np.save(npy, np.array([4, 5], dtype=np.int32))
    out = read_lengths(npy)
    assert out.dtype == np.int64 and out.tolist() == [4, 5]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_read_lengths_of_several_fields_feed_a_2d_sampler(tmp_path, suffix, monkeypatch):
    """A list of columns gives a dict keyed by column, a dict of columns one keyed by field:
    each array is that column, read alone (with the columns asked, nothing else), and the dict
    plans the 2-D buckets the arrays do."""
    rng = np.random.default_rng(3)
    table = pd.DataFrame({"src_len": rng.integers(1, 30, 40), "note": ["x"] * 40,
                          "tgt_len": rng.integers(0, 20, 40)})
    path = tmp_path / f"pairs.{suffix}"
    if suffix == "csv":
        table.to_csv(path, index=False)
    else:
        pytest.importorskip("pyarrow")
        table.to_parquet(path)
    asked = []
    original = pd.read_parquet if suffix == "parquet" else pd.read_csv
    monkeypatch.setattr(pd, f"read_{suffix}", lambda *a, **kw: asked.append(
        kw.get("columns", kw.get("usecols"))) or original(*a, **kw))
    by_column = read_lengths(path, column=["tgt_len", "src_len"])
    by_field = read_lengths(path, column={"enc": "src_len", "dec": "tgt_len"})
    assert [list(c) for c in asked if c is not None] == [["tgt_len", "src_len"],
                                                         ["src_len", "tgt_len"]]
    assert list(by_column) == ["tgt_len", "src_len"] and list(by_field) == ["enc", "dec"]
    for name, field in (("src_len", "enc"), ("tgt_len", "dec")):
        want = table[name].to_numpy()
        for got in (by_column[name], by_field[field]):
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, want)
    assert read_lengths(path, column=["src_len"])["src_len"].tolist() == table.src_len.tolist()
    planned = seqprep.BucketSampler(by_field, batch_size=8, seed=0)
    direct = seqprep.BucketSampler({"enc": table.src_len.to_numpy(),
                                    "dec": table.tgt_len.to_numpy()}, batch_size=8, seed=0)
    assert planned.field_names == ("enc", "dec")
    assert [b.tolist() for b in planned.batches(1)] == [b.tolist() for b in direct.batches(1)]


def test_read_lengths_of_several_fields_errors(tmp_path):
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"src_len": [3, 2], "tgt_len": [1, -1]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"`column` names a column that is not in file .*"
                                         r"'dec_len'(?s:.*)Columns in .*src_len"):
        read_lengths(path, column={"enc": "src_len", "dec": "dec_len"})
    with pytest.raises(ValueError, match=r"`column` names a column that is not in file"):
        read_lengths(path, column=["src_len", "nope"])
    with pytest.raises(ValueError, match=r"column 'tgt_len' of file .* negative"):
        read_lengths(path, column=["src_len", "tgt_len"])
    with pytest.raises(ValueError, match=r"`column` names column 'src_len' twice(?s:.*)"
                                         r"Received: column=\['src_len', 'src_len'\]"):
        read_lengths(path, column=["src_len", "src_len"])
    with pytest.raises(ValueError, match=r"`column` names column 'src_len' twice"):
        read_lengths(path, column={"a": "src_len", "b": "src_len"})
    for empty in ([], {}):
        with pytest.raises(ValueError, match=r"`column` is empty"):
            read_lengths(path, column=empty)
    with pytest.raises(ValueError, match=r"Received both"):
        read_lengths(path, id="src_len", column=["tgt_len"])


@pytest.mark.parametrize(
    ("values", "error", "pattern"),
    [
        ([1.0, 2.0], TypeError, r"must hold integer lengths. Received dtype float64. All values "
                                r"are whole numbers"),
        ([1.0, 2.5], TypeError, r"fractional values: \[1\]"),
        (["a", "b"], TypeError, r"must hold integer lengths"),
        ([True, False], TypeError, r"must hold integer lengths. Received dtype bool"),
        ([3, -1, -2], ValueError, r"rows \[1, 2\] \(0-based\) hold negative values, e.g. -1"),
        ([3.0, None], ValueError, r"rows \[1\] \(0-based\) are empty"),
    ],
)
def test_read_lengths_bad_column(tmp_path, values, error, pattern):
    path = tmp_path / "lengths.csv"
    pd.DataFrame({"n": values}).to_csv(path, index=False)
    with pytest.raises(error, match=pattern) as info:
        read_lengths(path, column="n")
    assert "column 'n' of file" in str(info.value)


@pytest.mark.parametrize(
    ("array", "error", "pattern"),
    [
        (np.array([1.0, 2.0]), TypeError, r"must hold integer lengths"),
        (np.array([[1, 2]]), ValueError, r"must be a 1-D array. Received shape \(1, 2\)"),
        (np.array([2, -3]), ValueError, r"negative"),
        (np.array([], dtype=np.int64), ValueError, r"empty"),
    ],
)
def test_read_lengths_bad_npy(tmp_path, array, error, pattern):
    path = tmp_path / "lengths.npy"
    np.save(path, array)
    with pytest.raises(error, match=pattern):
        read_lengths(path)


def test_read_lengths_argument_errors(frame, tmp_path):
    csv = tmp_path / "steps.csv"
    frame.to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"exactly one of `id`.*Received neither(?s:.*)'note'"):
        read_lengths(csv)
    with pytest.raises(ValueError, match=r"Received both"):
        read_lengths(csv, id="id", column="label")
    with pytest.raises(ValueError, match=r"`column` names a column that is not in file"):
        read_lengths(csv, column="length")
    with pytest.raises(ValueError, match=r"`id` names a column that is not in file"):
        read_lengths(csv, id="seq")
    npy = tmp_path / "lengths.npy"
    np.save(npy, np.array([1, 2]))
    with pytest.raises(ValueError, match=r"\.npy file holds the lengths themselves"):
        read_lengths(npy, column="n")
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        read_lengths(tmp_path / "missing.npy")


def test_read_lengths_empty_tables(tmp_path):
    header_only = tmp_path / "header.csv"
    header_only.write_text("id,x\n")
    with pytest.raises(ValueError, match=r"has no rows"):
        read_lengths(header_only, id="id")
    with pytest.raises(ValueError, match=r"empty"):
        read_lengths(header_only, column="x")
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    with pytest.raises(ValueError, match=r"is empty: it has no header row"):
        read_lengths(blank, id="id")


def test_read_lengths_missing_ids(tmp_path):
    path = tmp_path / "steps.csv"
    pd.DataFrame({"id": [1, None, 2], "x": [0, 1, 2]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"missing values at rows \[1\]"):
        read_lengths(path, id="id")


def test_ingest_does_not_import_tensorflow():
    code = (
        "import sys, pandas as pd; import seqprep; "
        "seqprep.from_dataframe(pd.DataFrame({'i': [0], 'x': [1.0]}), id='i', features='x'); "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False"
