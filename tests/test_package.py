"""The package surface: every public name resolves, and `import seqprep` stays light."""

from __future__ import annotations

import subprocess
import sys

import seqprep as sp

API_MD_NAMES = [
    "pad_sequences", "sequence_lengths", "length_mask", "unpad", "sequence_weights",
    "check_cudnn_mask", "Bucketer", "BucketSampler", "padding_report", "bucketed_dataset",
    "bucket_by_length", "fit_per_length", "fit_separate_models", "fit_tbptt", "predict_tbptt",
    "from_dataframe", "models", "datasets", "data",
    # the users' public modules since the move (`sp.bucketing`, `sp.tbptt`, ... are gone;
    # `sp.data` stays, as API.md names it)
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


# ------------------------------------------------------------------ the layering rules
# (docs/architecture.md states them; each test below is one of them)

# A stage may import its own rank and lower ranks, never a higher one (no arrow back up).
_STAGE_RANK = {
    "_core": 0, "planning": 1, "inputs": 2, "readers": 2, "datasets": 2, "layers": 2,
    "models": 3, "running": 3, "tools": 4, "data": 4,  # data.py: the tf.data face (API.md)
}


def _imports_by_module():
    """``{module: [(imported module, [names])]}`` for every module of the package, lazy
    (function-level) imports included."""
    import ast
    from pathlib import Path

    root = Path(sp.__file__).parent
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(a.name, []) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((node.module, [a.name for a in node.names]))
        out[name] = found
    return out


def _stage(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "seqprep" else None


def test_no_arrow_runs_back_up_the_stages():
    imports = _imports_by_module()
    assert set(_STAGE_RANK) >= {_stage(m) for m in imports} - {None, "__main__"}
    upward = []
    for module, found in imports.items():
        here = _STAGE_RANK.get(_stage(module))
        for target, names in found:
            # `from seqprep import tools` names a stage too
            stages = [_stage(f"{target}.{n}") for n in names] if target == "seqprep" else []
            for there in [_stage(target), *stages]:
                if here is not None and _STAGE_RANK.get(there, -1) > here:
                    upward.append(f"{module} -> {target} ({there})")
    assert not upward, upward


def test_planning_inputs_and_core_never_import_tensorflow_or_keras():
    imports = _imports_by_module()
    numpy_only = [m for m in imports if _stage(m) in ("_core", "planning", "inputs")]
    assert "seqprep.inputs._kernel" in numpy_only
    heavy = [(m, t) for m in numpy_only for t, _ in imports[m]
             if t.split(".")[0] in ("tensorflow", "keras", "tf_keras")]
    assert not heavy, heavy


# No import circle, no private name from a public module, <= 8 files at the top and < 800 lines
# a module: tests/test_architecture.py.
