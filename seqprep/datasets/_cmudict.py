"""A subset of the CMU Pronouncing Dictionary, bundled with the package (CMU's BSD licence)."""

from __future__ import annotations

import functools
import gzip
from importlib import resources
from typing import Literal, NamedTuple

import numpy as np

from seqprep._core.checks import check_choice, check_int

_BUNDLE = "cmudict_subset.txt.gz"
_SPLITS = ("train", "test")

#: Id 0 is padding; letters ``a..z`` are ids 1..26.
LETTERS: tuple[str, ...] = ("", *"abcdefghijklmnopqrstuvwxyz")
#: Id 0 is padding; the 39 ARPAbet phonemes (stress removed) are ids 1..39.
PHONEMES: tuple[str, ...] = (
    "", "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G",
    "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T",
    "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)


class Pronunciations(NamedTuple):
    """Words with their pronunciations as token ids (see :func:`load_cmudict`)."""

    #: The words, lower-case ``a..z`` only.
    words: list[str]
    #: One int32 array of letter ids (1..26) per word.
    graphemes: list[np.ndarray]
    #: One int32 array of phoneme ids (1..39) per word.
    phonemes: list[np.ndarray]
    #: Letter of each id (``letters[0] == ""`` is padding).
    letters: tuple[str, ...]
    #: Phoneme of each id (``phones[0] == ""`` is padding).
    phones: tuple[str, ...]


@functools.cache
def _read_sections() -> dict[str, tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]]:
    """Parse the bundle once: split -> (words, phoneme strings)."""
    raw = resources.files("seqprep.datasets").joinpath("data", _BUNDLE).read_bytes()
    sections: dict[str, tuple[list[str], list[tuple[str, ...]]]] = {}
    current: tuple[list[str], list[tuple[str, ...]]] | None = None
    for line in gzip.decompress(raw).decode("ascii").splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:], ([], []))
        elif line and current is not None:
            word, *phones = line.split(" ")
            current[0].append(word)
            current[1].append(tuple(phones))
    return {name: (tuple(w), tuple(p)) for name, (w, p) in sections.items()}


def load_cmudict(
    split: Literal["train", "test"] = "train", *, max_words: int | None = None,
) -> Pronunciations:
    """Load English words and their phonemes from the bundled CMU Pronouncing Dictionary subset.

    A grapheme-to-phoneme task for encoder–decoder models: the source is a word's letters,
    the target its phonemes, of another length (``"knight"`` -> ``N AY T``). The package ships
    a fixed random subset of 40,000 of the dictionary's 117,493 purely alphabetic words, one
    pronunciation each (the first listed), stress marks removed (39 phonemes): 38,000 for
    training and a held-out test split of 2,000. Words are 1 to 20 letters, pronunciations
    1 to 19 phonemes. No network access. Source, licence (CMU's BSD-style licence; the
    dictionary is Copyright (C) 1993-2015 Carnegie Mellon University) and the rebuild script
    are named in ``seqprep/datasets/data/README.md``.

    **Format.** Tokens are int32 ids with 0 reserved for padding (ready for
    ``Embedding(mask_zero=True)`` and post-padding): letters ``a..z`` are 1..26
    (``letters[i]`` is the letter of id ``i``), phonemes are 1..39 (``phones[i]``). Start and
    end tokens for teacher forcing are yours to choose outside those ranges, e.g.
    ``start=len(phones)``, ``end=len(phones) + 1`` (see :func:`seqprep.teacher_forcing`).
    Every call returns fresh arrays that the caller may modify.

    Args:
        split: ``"train"`` (38,000 words) or ``"test"`` (2,000 words).
        max_words: keep only the first ``max_words`` words of the split (the stored order is
            random, so they are a random sample); None keeps all.

    Returns:
        A :class:`Pronunciations` named tuple ``(words, graphemes, phonemes, letters, phones)``.

    Raises:
        ValueError: ``split`` is not one of the names above, or ``max_words < 1``.
        TypeError: ``max_words`` is not an integer.

    Example:
        >>> from seqprep.datasets import load_cmudict
        >>> data = load_cmudict("test")
        >>> len(data.words), data.words[0]
        (2000, 'unkindest')
        >>> data.graphemes[0].tolist()[:3], data.graphemes[0].dtype
        ([21, 14, 11], dtype('int32'))
        >>> " ".join(data.phones[i] for i in data.phonemes[0])
        'AH N K AY N D IH S T'
        >>> len(load_cmudict("train", max_words=100).words)
        100
    """
    check_choice("split", split, _SPLITS)
    max_words = check_int("max_words", max_words, minimum=1, allow_none=True)
    words, phone_strings = _read_sections()[split]
    if max_words is not None:
        words, phone_strings = words[:max_words], phone_strings[:max_words]
    letter_id = {c: i for i, c in enumerate(LETTERS) if c}
    phone_id = {p: i for i, p in enumerate(PHONEMES) if p}
    graphemes = [np.fromiter((letter_id[c] for c in w), np.int32, len(w)) for w in words]
    phonemes = [np.fromiter((phone_id[p] for p in ps), np.int32, len(ps)) for ps in phone_strings]
    return Pronunciations(list(words), graphemes, phonemes, LETTERS, PHONEMES)
