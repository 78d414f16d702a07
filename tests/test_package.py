"""The package surface: every public name resolves, and `import seqprep` stays light."""

from __future__ import annotations

import subprocess
import sys

import seqprep as sp

API_MD_NAMES = [
    "pad_sequences", "sequence_lengths", "length_mask", "unpad", "sequence_weights",
    "check_cudnn_mask", "Bucketer", "BucketSampler", "padding_report", "bucketed_dataset",
    "bucket_by_length", "fit_per_length", "fit_separate_models", "fit_tbptt", "predict_tbptt",
    "from_dataframe", "models", "datasets",
    # the users' public modules since the move (`sp.data`, `sp.bucketing`, ... are gone)
    "inputs", "planning", "running", "readers", "tools", "layers",
]


def test_every_exported_name_resolves():
    for name in sp.__all__:
        assert getattr(sp, name) is not None, name


def test_the_contract_names_are_exported():
    missing = [n for n in API_MD_NAMES if n not in sp.__all__]
    assert not missing
    assert callable(sp.models.reference_rnn)
    assert callable(sp.datasets.load_japanese_vowels)


def test_unknown_attribute_is_an_attribute_error():
    try:
        sp.no_such_name  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_import_does_not_pull_tensorflow():
    code = (
        "import sys, seqprep as sp; sp.pad_sequences; sp.BucketSampler; sp.length_mask; "
        "sp.from_dataframe; sp.datasets.load_japanese_vowels; "
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "seqprep", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0
    assert "demo" in out.stdout and "analyze" in out.stdout


def test_the_two_order_types_have_distinct_names_and_match_their_checks():
    from typing import get_args

    from seqprep.planning import _per_length as per_length
    from seqprep.planning import _windows as windows
    from seqprep.running import _fitting as fitting
    from seqprep.running import _tbptt as tbptt

    # Each Literal lists exactly the values its planner's runtime check accepts.
    assert get_args(per_length.BatchOrder) == per_length._ORDERS
    assert get_args(windows.WindowOrder) == windows.ORDERS
    assert set(per_length._ORDERS).isdisjoint({"longest_first", "input"})
    # One name per concept: the old shared alias `Order` is gone everywhere.
    for module in (per_length, windows, fitting, tbptt):
        assert not hasattr(module, "Order"), module.__name__


def _seqprep_imports(path, package_root):
    """The seqprep modules a file imports anywhere: at the top and inside functions (a lazy
    import still ties the two modules together)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("seqprep")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("seqprep"):
                continue
            found.add(node.module)
            for a in node.names:  # `from seqprep import fitting` imports a module
                sub = f"{node.module}.{a.name}"
                if (package_root.parent / (sub.replace(".", "/") + ".py")).exists():
                    found.add(sub)
    return found


def test_seqprep_modules_import_each_other_without_cycles():
    from pathlib import Path

    root = Path(sp.__file__).parent
    graph = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = _seqprep_imports(path, root) - {name}
    assert "seqprep.inputs._fit_table" in graph["seqprep.running._ensemble"]  # the graph was read

    def related(a, b):  # a package and its own submodules import each other by design
        return a.startswith(b + ".") or b.startswith(a + ".")

    def cycle_from(start):
        stack, seen = [(start, [start])], {start}
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if related(node, nxt):
                    continue
                if nxt == start:
                    return path + [nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for c in map(cycle_from, sorted(graph)) if c is not None]
    assert not cycles, cycles
