"""Shared test data builders, offered as fixtures.

The environment (CPU only, quiet TensorFlow, the Hypothesis profile) is set once, in the
repository's root ``conftest.py``, which also covers doctests; this file only adds builders.
The data builders are pure numpy; the model builder imports Keras only when called, so the
planner tests stay TF-free.

The fixtures are session-scoped and return plain functions, so Hypothesis tests can call them
with drawn arguments (function-scoped fixtures are not reset between Hypothesis examples).
"""

from __future__ import annotations

import numpy as np
import pytest

# Scripts the tests run in subprocesses: importing them (as --doctest-modules would) runs their
# module-level set-up (op determinism, argv parsing) inside the pytest process.
collect_ignore_glob = ["_*_worker.py"]


def lognormal_lengths(
    n: int, seed: int, *, median: float = 12.0, sigma: float = 0.8, max_length: int = 200
) -> np.ndarray:
    """``n`` int64 sequence lengths in ``[1, max_length]``, long-tailed like real corpora."""
    rng = np.random.default_rng(seed)
    raw = np.round(rng.lognormal(np.log(median), sigma, n))
    return np.clip(raw, 1, max_length).astype(np.int64)


def ragged_sequences(
    lengths: np.ndarray | list[int], dim: int | None = None, *, seed: int = 0
) -> list[np.ndarray]:
    """One float32 sequence per length: ``(L,)`` when ``dim`` is None, else ``(L, dim)``.

    Values are non-zero, so a padded zero is never mistaken for data.
    """
    rng = np.random.default_rng(seed)
    tail = () if dim is None else (dim,)
    return [
        (rng.random((int(k), *tail), dtype=np.float32) + 1.0) for k in np.asarray(lengths)
    ]


def token_model(
    vocab: int, width: int, *, body: str = "gru", mask_zero: bool = True,
    activation: str | None = None,
):
    """A tiny uncompiled Keras model on int32 token batches ``(batch, T)``:
    ``Embedding(vocab, width)``, then ``GRU(width)`` (``body="gru"``) or a mean over steps
    (``body="mean"``), then ``Dense(1, activation)``."""
    import keras

    layers = {"gru": lambda: keras.layers.GRU(width),
              "mean": keras.layers.GlobalAveragePooling1D}
    return keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(vocab, width, mask_zero=mask_zero),
        layers[body](),
        keras.layers.Dense(1, activation=activation),
    ])


@pytest.fixture(scope="session", name="lognormal_lengths")
def _lognormal_lengths_fixture():
    return lognormal_lengths


@pytest.fixture(scope="session", name="ragged_sequences")
def _ragged_sequences_fixture():
    return ragged_sequences


@pytest.fixture(scope="session", name="token_model")
def _token_model_fixture():
    return token_model
