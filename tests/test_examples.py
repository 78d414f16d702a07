"""Every script in examples/ runs to the end in its --quick mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# forgetting_study.py has its own quick-mode test (tests/test_tbptt*).
CASES = {
    "bucketed_keras.py": "bucketed:",
    "text_classification.py": "test accuracy",
    "pandas_timeseries.py": "test accuracy",
    "japanese_vowels.py": "test accuracy for seeds 0..0",
    "distributed_training.py": "test accuracy",
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs_in_quick_mode(script):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1",
               KERAS_BACKEND="tensorflow")
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick"],
        capture_output=True, text=True, timeout=600, env=env, cwd=EXAMPLES.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert CASES[script] in done.stdout


def test_japanese_vowels_cross_validation_quick():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "japanese_vowels.py"), "--quick", "--cv"],
        capture_output=True, text=True, timeout=600, env=env, cwd=EXAMPLES.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "validation accuracy per fold (training split only)" in done.stdout
