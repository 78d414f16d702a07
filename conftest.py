"""Test-wide settings (tests and doctests): CPU only, quiet TensorFlow, deterministic Hypothesis."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
# TensorFlow unless the caller chose a backend: `make test` reruns the tests marked `backend`
# with KERAS_BACKEND=jax and =torch, so this must never override a value already set.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# The files that take longest, longest first (summed test durations of a `make test` run on
# 2 cores, `--durations=0`). `make test` runs `-n 2 --dist loadfile`, and pytest-xdist hands
# the workers whole files in collection order: a long file collected last leaves one worker
# idle while the other finishes it. Collecting the long files first (longest-processing-time
# first) keeps both workers busy to the end. Only the order of files changes; the tests within
# a file keep theirs. A file missing from the list just keeps its place after these.
LONGEST_FIRST = (
    "tests/test_resume_exact.py", "tests/test_examples.py", "tests/test_resume.py",
    "tests/test_docs.py", "tests/test_resume_mirrored.py", "tests/test_tbptt_data_parallel.py",
    "tests/test_data_parallel.py", "tests/test_resume_checks.py", "tests/test_backends.py",
    "tests/test_streaming.py", "tests/test_tbptt_dense.py", "tests/test_inference_evaluate.py",
    "tests/test_xla_compiles.py", "tests/test_layers.py", "tests/test_streaming_fields.py",
    "tests/test_g2p.py", "tests/test_fields_paths.py", "tests/test_distributed.py",
    "tests/test_streaming_parquet.py",
    # then the longest of the JAX and PyTorch runs (`-m backend`) not named above
    "tests/test_tbptt_plain.py", "tests/test_encoder_decoder.py", "tests/test_inference.py",
    "tests/test_tbptt.py", "tests/test_tbptt_masked.py", "tests/test_fitting.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
