"""The forgetting study (examples/forgetting_study.py) runs end to end in quick mode."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "forgetting_study.py"


def load_study():
    spec = importlib.util.spec_from_file_location("forgetting_study", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_adding_problem_data():
    import numpy as np

    study = load_study()
    x, y = study.adding_problem(50, 20, np.random.default_rng(0))
    assert len(x) == 50 and y.shape == (50, 1)
    for seq, target in zip(x, y[:, 0], strict=True):
        assert 10 <= len(seq) <= 20 and seq.shape[1] == 2
        marked = np.flatnonzero(seq[:, 1])
        assert len(marked) == 2
        assert marked[0] < len(seq) // 2 <= marked[1]
        assert math.isclose(seq[marked, 0].sum(), target, rel_tol=1e-6)


def test_quick_study_writes_table_csv_and_plot(tmp_path):
    study = load_study()
    summary = study.main(["--quick", "--out", str(tmp_path)])
    settings = study.QUICK
    methods = {"full BPTT", f"TBPTT w={settings.tbptt_window}"}
    assert {(s["cell"], s["method"]) for s in summary} == {
        (cell, method) for cell in settings.cells for method in methods
    }
    assert all(math.isfinite(s["mse"]) and 0 <= s["accuracy"] <= 1 for s in summary)
    table = (tmp_path / "forgetting.md").read_text()
    assert table.count("\n| ") == len(summary) + 1  # header + one row per configuration
    with open(tmp_path / "forgetting.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(summary) * len(settings.seeds)
    assert (tmp_path / "forgetting.png").read_bytes()[:4] == b"\x89PNG"
