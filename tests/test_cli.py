"""Tests for the ``seqprep`` command line: ``analyze`` on small files, errors, and the demo."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from seqprep.tools.analyze import analyze_lengths, format_analysis
from seqprep.tools.cli import main

LENGTHS = np.array([3, 5, 5, 8, 12, 13, 2, 30, 31, 29, 7, 6])


@pytest.fixture()
def files(tmp_path):
    paths = {}
    paths["npy"] = tmp_path / "lengths.npy"
    np.save(paths["npy"], LENGTHS)
    paths["csv"] = tmp_path / "lengths.csv"
    pd.DataFrame({"length": LENGTHS, "score": LENGTHS * 0.5}).to_csv(paths["csv"], index=False)
    ids = np.repeat(np.arange(len(LENGTHS)), LENGTHS)
    steps = pd.DataFrame({"sid": ids, "x": np.arange(len(ids), dtype=float)})
    paths["parquet"] = tmp_path / "steps.parquet"
    steps.to_parquet(paths["parquet"])
    paths["long_csv"] = tmp_path / "steps.csv"
    steps.to_csv(paths["long_csv"], index=False)
    paths["negative"] = tmp_path / "negative.csv"
    pd.DataFrame({"length": [3, -2, 4]}).to_csv(paths["negative"], index=False)
    paths["fraction"] = tmp_path / "fraction.csv"
    pd.DataFrame({"length": [3, 2.5, 4]}).to_csv(paths["fraction"], index=False)
    paths["text"] = tmp_path / "text.csv"
    pd.DataFrame({"length": ["3", "abc", "4"]}).to_csv(paths["text"], index=False)
    paths["negative_npy"] = tmp_path / "negative.npy"
    np.save(paths["negative_npy"], np.array([1, -1]))
    paths["float_npy"] = tmp_path / "float.npy"
    np.save(paths["float_npy"], np.array([1.5, 2.0]))
    return paths


def _pad_to_max_fraction(lengths):
    return 1 - lengths.sum() / (len(lengths) * lengths.max())


@pytest.mark.parametrize(
    ("key", "extra"),
    [("npy", []), ("csv", ["--column", "length"]), ("parquet", ["--id", "sid"]),
     ("long_csv", ["--id", "sid"])],
)
def test_analyze_reads_each_layout(files, key, extra, tmp_path, capsys):
    out = tmp_path / "plots"
    status = main(["analyze", str(files[key]), *extra, "--batch-size", "4", "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0
    assert "12 sequences, lengths 2..31" in printed
    expected = 100 * _pad_to_max_fraction(LENGTHS)
    assert re.search(rf"^pad to max +{expected:.1f}% ", printed, re.MULTILINE)
    assert "Recommended: seqprep.BucketSampler(lengths, boundaries=[" in printed
    stem = files[key].stem
    for suffix in ("lengths", "padding"):
        png = out / f"{stem}_{suffix}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analyze_with_token_budget(files, tmp_path, capsys):
    status = main(["analyze", str(files["npy"]), "--max-tokens", "64", "--out", str(tmp_path)])
    assert status == 0
    assert "batching with max_tokens=64" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("key", "extra", "message"),
    [
        ("missing", [], "no such file"),
        ("csv", ["--column", "lenght"], "'lenght'"),
        ("parquet", ["--id", "session"], "'session'"),
        ("csv", [], "Pass exactly one of `--id`"),
        ("negative", ["--column", "length"], "negative"),
        ("fraction", ["--column", "length"], "integer lengths"),
        ("text", ["--column", "length"], "length"),
        ("negative_npy", [], "negative"),
        ("float_npy", [], "integer lengths"),
        ("csv", ["--column", "score"], "integer lengths"),
        ("npy", ["--max-tokens", "10"], "smaller than the longest sequence"),
    ],
)
def test_analyze_bad_input_exits_2_naming_the_problem(files, tmp_path, capsys, key, extra,
                                                      message):
    path = files.get(key, tmp_path / "missing.csv")
    status = main(["analyze", str(path), *extra, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("seqprep analyze: error:")
    assert message in err


@pytest.mark.parametrize(
    "argv",
    [["analyze"], ["analyze", "x.npy", "--batch-size", "0"],
     ["analyze", "x.npy", "--batch-size", "4", "--max-tokens", "9"], ["frobnicate"], []],
)
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_analyze_lengths_numbers():
    result = analyze_lengths(LENGTHS, batch_size=4, seed=1)
    strategies = result["strategies"]
    assert strategies["pad to max"]["padding_fraction"] == pytest.approx(
        _pad_to_max_fraction(LENGTHS))
    assert strategies["pad to max"]["n_shapes"] == 1
    for r in strategies.values():
        assert r["real_tokens"] == LENGTHS.sum()
        assert r["n_batches"] == 3  # ceil(12 / 4), whatever the strategy
    assert strategies["seqprep buckets"]["padding_fraction"] <= \
        strategies["random batches"]["padding_fraction"]
    assert result["recommended_boundaries"] == strategies["seqprep buckets"]["boundaries"]
    assert "seqprep buckets" in format_analysis(result)


def test_analyze_lengths_token_budget_is_respected():
    result = analyze_lengths(LENGTHS, max_tokens=40)
    for r in result["strategies"].values():
        assert r["max_batch_tokens"] <= 40
        assert r["real_tokens"] == LENGTHS.sum()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"batch_size": 4, "max_tokens": 40}, ValueError), ({"batch_size": 0}, ValueError),
     ({"batch_size": 2.0}, TypeError)],
)
def test_analyze_lengths_bad_arguments(kwargs, error):
    with pytest.raises(error):
        analyze_lengths(LENGTHS, **kwargs)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    status = main(["demo", "--quick", "--epochs", "1", "--out", str(out), "--verbose", "0"])
    return status, out


def test_demo_quick_writes_a_consistent_report(demo_run):
    import json

    import seqprep as sp
    from seqprep.datasets import load_japanese_vowels

    status, out = demo_run
    assert status == 0
    result = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    for name in result["files"].values():
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
        assert f"]({name})" in report

    # The quick run trains on the first 10 sequences of each speaker.
    x, y = load_japanese_vowels("train")
    keep = np.concatenate([np.flatnonzero(y == c)[:10] for c in range(9)])
    lengths = sp.sequence_lengths([x[i] for i in keep])
    rows = {r["strategy"]: r for r in result["strategies"]}
    assert list(rows) == ["pad to max", "tf.data bucketing", "seqprep buckets", "fit_per_length",
                          "packed rows"]
    packed = sp.PackSampler(lengths, batch_size=1)
    assert rows["packed rows"]["padding_fraction"] == pytest.approx(1 - packed.fill_)
    assert rows["packed rows"]["steps_per_epoch"] <= -(-len(lengths) // 32)

    # Padding measured from the batches fed to the model agrees with the lengths.
    expected = 1 - lengths.sum() / (len(lengths) * lengths.max())
    assert rows["pad to max"]["padding_fraction"] == pytest.approx(expected, abs=1e-12)
    assert re.search(rf"\| pad to max \| [0-9.]+ \| \+0\.0 pt \| {100 * expected:.1f}% \|", report)
    assert rows["pad to max"]["steps_per_epoch"] == -(-len(lengths) // 32)
    sampler = sp.BucketSampler(lengths, batch_size=32, seed=0)
    planned = sp.padding_report(lengths, sampler.batches(0))
    assert rows["seqprep buckets"]["padding_fraction"] == pytest.approx(
        planned["padding_fraction"])
    assert rows["seqprep buckets"]["steps_per_epoch"] == len(sampler)
    assert rows["fit_per_length"]["padding_fraction"] == 0.0
    counts = np.bincount(np.searchsorted(result["boundaries"]["quantile"], lengths,
                                         side="right"))
    assert rows["tf.data bucketing"]["steps_per_epoch"] == sum(-(-c // 32) for c in counts)
    for r in rows.values():
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["traces"] >= 1
        assert f"| {r['strategy']} | {r['accuracy']:.4f} |" in report

    # The many-to-many loss is the mean over real steps, not over the padded tensor.
    nf = result["next_frame"]
    assert nf["test_mse_keras"] == pytest.approx(nf["test_mse_real_steps"], rel=1e-4)
    assert nf["test_mse_all_steps"] != pytest.approx(nf["test_mse_real_steps"], rel=1e-2)


# ------------------------------------------------------------------ a newcomer's path


def _run_cli(*args, **kwargs):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, "-m", "seqprep", *args], env=env, cwd=root,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_version_flag_and_attribute(capsys):
    import seqprep as sp

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"seqprep {sp.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", sp.__version__)


def test_version_matches_pyproject():
    from pathlib import Path

    import tomllib

    import seqprep as sp

    meta = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert sp.__version__ == meta["project"]["version"]


def test_analyze_into_a_closed_pipe_exits_quietly(files, tmp_path):
    import subprocess

    proc = _run_cli("analyze", str(files["npy"]), "--out", str(tmp_path),
                    stdout=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line, as `| head -0` would be
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 0


def test_num_buckets_flag_sets_both_bucketings(files, tmp_path, capsys):
    assert main(["analyze", str(files["npy"]), "--num-buckets", "2", "--batch-size", "4",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    seqprep_row = next(line for line in out.splitlines() if line.startswith("seqprep buckets"))
    assert seqprep_row.split()[-3] in ("1", "2")  # at most 2 optimal buckets
    quantile_row = next(line for line in out.splitlines() if line.startswith("quantile"))
    assert quantile_row.split()[-3] == seqprep_row.split()[-3]
    assert re.search(r"Recommended: seqprep.BucketSampler\(lengths, boundaries=\[\d*\], "
                     r"batch_size=4\)", out)


def test_recommendation_with_many_buckets_names_the_bucketer_not_a_long_list(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "long_tail.npy"
    np.save(path, np.clip(rng.lognormal(3.5, 0.8, 3000).astype(np.int64), 2, 400))
    assert main(["analyze", str(path), "--num-buckets", "30", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Recommended: seqprep.BucketSampler(lengths, boundaries=seqprep.Bucketer(30, " \
           "batch_size=32), batch_size=32)" in out


@pytest.mark.parametrize(
    ("argv", "flag", "python_name"),
    [(["--max-tokens", "10"], "`--max-tokens`", "`max_tokens`"),
     (["--num-buckets", "0"], "--num-buckets", "num_buckets")],
)
def test_errors_name_flags_not_python_arguments(files, tmp_path, capsys, argv, flag,
                                                python_name):
    status = main(["analyze", str(files["npy"]), *argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and flag in err and python_name not in err


def test_analyze_reports_shapes_over_epochs():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(3.5, 0.8, 2000).astype(np.int64), 2, 400)
    result = analyze_lengths(lengths, batch_size=64)
    s = result["strategies"]
    for r in s.values():
        assert r["shapes_over_epochs"] >= r["n_shapes"]
    # Random batches meet new widths every epoch; the width grid never does.
    assert s["random batches"]["shapes_over_epochs"] > s["random batches"]["n_shapes"]
    few = s["seqprep for JAX"]
    assert few["shapes_over_epochs"] == few["n_shapes"] <= 17
    assert few["padding_fraction"] < s["random batches"]["padding_fraction"]
    assert "shapes/10ep" in format_analysis(result)


def test_analyze_shortens_long_boundary_lists():
    rng = np.random.default_rng(1)
    lengths = np.clip(rng.lognormal(3.5, 0.8, 4000).astype(np.int64), 2, 400)
    text = format_analysis(analyze_lengths(lengths, batch_size=64))
    line = next(x for x in text.splitlines() if x.startswith("seqprep buckets boundaries"))
    assert "more" in line and len(line) < 120


@pytest.mark.parametrize("num_boundaries", [3, 12, 13, 80])
def test_length_plot_stays_readable_whatever_the_bucket_count(num_boundaries):
    from matplotlib.patches import Rectangle

    from seqprep.tools import plots
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(3.5, 0.8, 2000).astype(np.int64), 2, 400)
    bounds = np.unique(np.quantile(lengths, np.linspace(0, 1, num_boundaries + 2)[1:-1])
                       .astype(np.int64) + 1)[:num_boundaries]
    ax = plots.length_histogram(lengths, bounds.tolist()).axes[0]
    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    bands = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_alpha() is not None]
    if bounds.size <= 12:
        assert len(dashed) == bounds.size and not bands
    else:
        # Alternate buckets shaded behind the histogram; one row of ticks marks every boundary.
        assert not dashed and len(bands) == (bounds.size + 2) // 2
        (ticks,) = ax.lines
        assert np.allclose(ticks.get_xdata(), bounds - 0.5)
    assert ax.get_legend() is not None


@pytest.mark.parametrize("n", [64, 70, 3])
def test_random_batch_shapes_over_epochs_match_a_count_by_hand(n):
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 50, n)
    result = analyze_lengths(lengths, batch_size=8, seed=3)
    by_hand = np.random.default_rng(3)
    shapes = set()
    for _ in range(10):
        order = by_hand.permutation(n)
        shapes.update((len(c), int(lengths[c].max())) for c in np.array_split(
            order, range(8, n, 8)))
    assert result["strategies"]["random batches"]["shapes_over_epochs"] == len(shapes)
