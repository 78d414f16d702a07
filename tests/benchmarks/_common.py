"""Shared pieces of the benchmarks (run as scripts or by ``make bench``).

Importing this module sets a quiet, CPU-only TensorFlow environment (only where the caller has
not set one), so import it before TensorFlow or Keras.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")


def token_gru(vocab: int, embed: int, units: int, activation: str | None = None):
    """The benchmarks' model, seeded: int32 tokens -> ``Embedding(vocab, embed,
    mask_zero=True)`` -> ``GRU(units)`` -> ``Dense(1, activation)``, uncompiled."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(vocab, embed, mask_zero=True),
        keras.layers.GRU(units),
        keras.layers.Dense(1, activation=activation),
    ])
