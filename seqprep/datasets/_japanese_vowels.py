"""The UCI Japanese Vowels data set, bundled with the package (CC BY 4.0)."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Literal

import numpy as np

from seqprep._core.checks import check_choice

_BUNDLE = "japanese_vowels.npz"
_SPLITS = ("train", "test", "all")


@functools.cache
def _read_split(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one stored split once; the arrays are made read-only so the cache cannot drift."""
    with resources.files("seqprep.datasets").joinpath("data", _BUNDLE).open("rb") as f:
        with np.load(f, allow_pickle=False) as bundle:
            values = bundle[f"{split}_values"]
            offsets = bundle[f"{split}_offsets"]
            labels = bundle[f"{split}_labels"]
    for array in (values, offsets, labels):
        array.flags.writeable = False
    return values, offsets, labels


def load_japanese_vowels(
    split: Literal["train", "test", "all"] = "train",
) -> tuple[list[np.ndarray], np.ndarray]:
    """Load the UCI Japanese Vowels speaker-recognition data set from the package.

    Nine male speakers uttered the Japanese vowels /ae/; each utterance is a sequence of
    12 LPC cepstrum coefficients per frame, 7 to 29 frames long. The task is to tell the
    speaker. The data ship with seqprep (no network access); see
    ``seqprep/datasets/data/README.md`` for the source, licence (CC BY 4.0) and citation:
    M. Kudo, J. Toyama and M. Shimbo (1999), "Multidimensional curve classification using
    passing-through regions", Pattern Recognition Letters 20(11-13), 1103-1111.

    The standard split has 270 training sequences (30 per speaker) and 370 test sequences
    (24 to 88 per speaker). Labels are 0-based, ready for a Keras
    ``SparseCategoricalCrossentropy`` loss: label ``k`` is speaker ``k + 1`` of the original
    files. Every call returns fresh arrays that the caller may modify.

    Args:
        split: ``"train"``, ``"test"``, or ``"all"`` (the 270 training sequences followed
            by the 370 test sequences).

    Returns:
        A pair ``(sequences, labels)``: a list of float32 arrays of shape ``(T_i, 12)`` and an
        int64 array of labels in ``0..8``, one per sequence.

    Raises:
        ValueError: If ``split`` is not one of the names above.

    Example:
        >>> from seqprep.datasets import load_japanese_vowels
        >>> x, y = load_japanese_vowels("train")
        >>> len(x), x[0].shape, x[0].dtype, y[:3].tolist()
        (270, (20, 12), dtype('float32'), [0, 0, 0])
        >>> min(len(s) for s in x), max(len(s) for s in x)
        (7, 26)
    """
    check_choice("split", split, _SPLITS)
    parts = ("train", "test") if split == "all" else (split,)
    sequences: list[np.ndarray] = []
    labels = []
    for part in parts:
        values, offsets, stored_labels = _read_split(part)
        # One copy per call; the sequences are non-overlapping views into it.
        sequences.extend(np.split(values.copy(), offsets[1:-1]))
        labels.append(stored_labels.astype(np.int64) - 1)
    return sequences, np.concatenate(labels)
