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

    from seqprep import _tbptt_plan, fitting, tbptt
    from seqprep.bucketing import per_length

    # Each Literal lists exactly the values its planner's runtime check accepts.
    assert get_args(per_length.BatchOrder) == per_length._ORDERS
    assert get_args(_tbptt_plan.WindowOrder) == _tbptt_plan.ORDERS
    assert set(per_length._ORDERS).isdisjoint({"longest_first", "input"})
    # The old name stays importable from every module that offered it.
    assert per_length.Order is fitting.Order is per_length.BatchOrder
    assert _tbptt_plan.Order is tbptt.Order is _tbptt_plan.WindowOrder
