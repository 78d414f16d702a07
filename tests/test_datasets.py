"""Tests for the bundled Japanese Vowels data set."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from seqprep.datasets import load_japanese_vowels

BUNDLE = resources.files("seqprep.datasets").joinpath("data", "japanese_vowels.npz")
README = resources.files("seqprep.datasets").joinpath("data", "README.md")
BUNDLE_SHA256 = "0fb28dacd11d1a57e1d2b16dd67f773faeb1227a9ba2655341e6fa6dca3d7c4f"
TS_DIR = Path("/tmp/sk/sktime/datasets/data/JapaneseVowels")
ROOT = Path(__file__).resolve().parents[1]

needs_ts = pytest.mark.skipif(
    not (TS_DIR / "JapaneseVowels_TRAIN.ts").exists(),
    reason=f"source .ts files not present in {TS_DIR}",
)


@pytest.mark.parametrize(
    ("split", "n", "min_len", "max_len", "per_label"),
    [
        ("train", 270, 7, 26, [30] * 9),
        ("test", 370, 7, 29, [31, 35, 88, 44, 29, 24, 40, 50, 29]),
        ("all", 640, 7, 29, [61, 65, 118, 74, 59, 54, 70, 80, 59]),
    ],
)
def test_split_sizes_lengths_and_labels(split, n, min_len, max_len, per_label):
    x, y = load_japanese_vowels(split)
    assert isinstance(x, list) and len(x) == n
    assert y.shape == (n,) and y.dtype == np.int64
    assert np.bincount(y, minlength=9).tolist() == per_label
    lengths = np.array([len(s) for s in x])
    assert (lengths.min(), lengths.max()) == (min_len, max_len)
    for s in x:
        assert s.dtype == np.float32
        assert s.ndim == 2 and s.shape[1] == 12
        assert np.isfinite(s).all()


def test_default_split_is_train():
    x_default, y_default = load_japanese_vowels()
    x_train, y_train = load_japanese_vowels("train")
    assert len(x_default) == 270
    np.testing.assert_array_equal(y_default, y_train)
    np.testing.assert_array_equal(np.concatenate(x_default), np.concatenate(x_train))


def test_all_is_train_then_test():
    x_all, y_all = load_japanese_vowels("all")
    x_train, y_train = load_japanese_vowels("train")
    x_test, y_test = load_japanese_vowels("test")
    np.testing.assert_array_equal(y_all, np.concatenate([y_train, y_test]))
    for a, b in zip(x_all, x_train + x_test, strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_labels_are_sorted_blocks_of_30():
    _, y = load_japanese_vowels("train")
    np.testing.assert_array_equal(y, np.repeat(np.arange(9), 30))


def test_known_first_frame():
    x, _ = load_japanese_vowels("train")
    assert x[0].shape == (20, 12)
    expected = [1.860936, -0.207383, 0.261557, -0.214562, -0.171253, -0.118167,
                -0.277557, 0.025668, 0.126701, -0.306756, -0.213076, 0.088728]
    np.testing.assert_array_equal(x[0][0], np.array(expected, dtype=np.float32))


def test_returns_fresh_arrays_each_call():
    x1, y1 = load_japanese_vowels("train")
    first = x1[0].copy()
    x1[0][:] = 123.0
    y1[:] = -1
    x2, y2 = load_japanese_vowels("train")
    np.testing.assert_array_equal(x2[0], first)
    assert y2.min() == 0
    assert all(s.flags.writeable for s in x2) and y2.flags.writeable


def test_sequences_are_independent_of_each_other():
    x, _ = load_japanese_vowels("all")
    x[0][:] = 0.0
    assert not np.all(x[1] == 0.0)


@pytest.mark.parametrize("bad", ["val", "TRAIN", None, 0])
def test_bad_split_names_the_argument(bad):
    with pytest.raises(ValueError, match=r"Argument `split` must be 'train' or 'test' or 'all'"):
        load_japanese_vowels(bad)


def test_bundle_checksum_matches_readme():
    digest = hashlib.sha256(BUNDLE.read_bytes()).hexdigest()
    assert digest == BUNDLE_SHA256
    assert digest in README.read_text()


def test_bundle_is_small():
    assert len(BUNDLE.read_bytes()) < 600_000


def _parse_ts_independently(path: Path) -> tuple[list[np.ndarray], list[int]]:
    """A second, deliberately different parser: regex over the whole data section."""
    text = path.read_text()
    data = text.split("@data", 1)[1]
    sequences, labels = [], []
    for case in filter(None, (line.strip() for line in data.splitlines())):
        fields = case.split(":")
        labels.append(int(fields[-1]))
        rows = [[float(v) for v in re.findall(r"[-+0-9.eE]+", f)] for f in fields[:-1]]
        sequences.append(np.array(rows, dtype=np.float32).T)
    return sequences, labels


@needs_ts
@pytest.mark.parametrize("split", ["train", "test"])
def test_bundle_equals_source_ts(split):
    expected_x, expected_y = _parse_ts_independently(TS_DIR / f"JapaneseVowels_{split.upper()}.ts")
    x, y = load_japanese_vowels(split)
    assert len(x) == len(expected_x)
    assert y.tolist() == [label - 1 for label in expected_y]
    for got, want in zip(x, expected_x, strict=True):
        np.testing.assert_array_equal(got, want)


@needs_ts
def test_build_script_is_reproducible(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "build_japanese_vowels", ROOT / "scripts" / "build_japanese_vowels.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "jv.npz"
    digest = module.build(TS_DIR, out)
    assert digest == BUNDLE_SHA256
    assert out.read_bytes() == BUNDLE.read_bytes()


def test_loader_does_not_import_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys; from seqprep.datasets import load_japanese_vowels; "
        "load_japanese_vowels(); print('tensorflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False"
