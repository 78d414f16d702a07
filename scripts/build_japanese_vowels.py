"""Rebuild ``seqprep/datasets/data/japanese_vowels.npz`` from the ``.ts`` files sktime ships.

The UCI Japanese Vowels data set (Kudo, Toyama and Shimbo, 1999; CC BY 4.0) is distributed in
the sktime wheel as ``sktime/datasets/data/JapaneseVowels/JapaneseVowels_{TRAIN,TEST}.ts``. This
script takes those two files, parses them and writes the compact bundle the package loads.

Usage::

    python scripts/build_japanese_vowels.py                    # pip-downloads sktime==1.2.0
    python scripts/build_japanese_vowels.py --source sktime-1.2.0-py3-none-any.whl
    python scripts/build_japanese_vowels.py --source DIR       # a directory holding the .ts files

The bundle is a zip of ``.npy`` arrays (readable with ``np.load``), written with fixed zip
timestamps so that rebuilding from the same source gives a byte-identical file. For each split
(``train``, ``test``) it holds:

- ``{split}_values``: float32 ``(N, 12)``, every timestep of every sequence, concatenated;
- ``{split}_offsets``: int64 ``(n + 1,)``, sequence ``i`` is ``values[offsets[i]:offsets[i+1]]``;
- ``{split}_labels``: uint8 ``(n,)``, the speaker as in the source file, 1..9.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

SKTIME_VERSION = "1.2.0"
TS_MEMBER = "sktime/datasets/data/JapaneseVowels/JapaneseVowels_{split}.ts"
SPLITS = ("train", "test")
N_FEATURES = 12
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "seqprep/datasets/data/japanese_vowels.npz"
# Any fixed date works; it only has to be the same on every rebuild.
ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def parse_ts(text: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Parse a multivariate, unequal-length ``.ts`` file into ``(T, d)`` arrays and labels.

    Each data line is one case: dimensions separated by ``:``, values by ``,``, the class label
    last. Lines starting with ``#`` or ``@`` are metadata.
    """
    sequences: list[np.ndarray] = []
    labels: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(("#", "@")):
            continue
        *dims, label = line.split(":")
        columns = [np.array(dim.split(","), dtype=np.float64) for dim in dims]
        if len(columns) != N_FEATURES:
            raise ValueError(f"line {number}: expected {N_FEATURES} dimensions, got {len(columns)}")
        if len({len(c) for c in columns}) != 1:
            raise ValueError(f"line {number}: dimensions have different lengths")
        sequences.append(np.stack(columns, axis=1).astype(np.float32))
        labels.append(int(label))
    return sequences, np.array(labels, dtype=np.int64)


def read_ts_files(source: Path) -> dict[str, str]:
    """Return the text of the TRAIN and TEST ``.ts`` files from a wheel or a directory."""
    texts = {}
    for split in SPLITS:
        member = TS_MEMBER.format(split=split.upper())
        if source.is_dir():
            candidates = [source / Path(member).name, source / member]
            found = next((p for p in candidates if p.exists()), None)
            if found is None:
                raise FileNotFoundError(f"{Path(member).name} not found in {source}")
            texts[split] = found.read_text()
        else:
            with zipfile.ZipFile(source) as wheel:
                texts[split] = wheel.read(member).decode()
    return texts


def download_wheel(directory: Path) -> Path:
    """``pip download`` the pinned sktime wheel (no dependencies) into ``directory``."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
         f"sktime=={SKTIME_VERSION}", "-d", str(directory)],
        check=True,
    )
    wheels = sorted(directory.glob(f"sktime-{SKTIME_VERSION}-*.whl"))
    if not wheels:
        raise FileNotFoundError(
            f"pip did not leave an sktime {SKTIME_VERSION} wheel in {directory}"
        )
    return wheels[0]


def pack(sequences: list[np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
    """Flatten one split into values, offsets and labels."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.concatenate(sequences).astype(np.float32)
    if labels.min() < 1 or labels.max() > 9:
        raise ValueError(f"labels outside 1..9: {np.unique(labels)}")
    return {"values": values, "offsets": offsets, "labels": labels.astype(np.uint8)}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as a compressed ``.npz`` whose bytes depend only on the arrays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buffer.getvalue(), compresslevel=9)


def build(source: Path, out: Path) -> str:
    """Build the bundle at ``out`` from ``source``; return its SHA-256."""
    texts = read_ts_files(source)
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        sequences, labels = parse_ts(texts[split])
        for key, array in pack(sequences, labels).items():
            arrays[f"{split}_{key}"] = array
        lengths = np.diff(arrays[f"{split}_offsets"])
        print(f"{split}: {len(sequences)} sequences, lengths {lengths.min()}..{lengths.max()}, "
              f"{len(arrays[f'{split}_values'])} timesteps")
        for name, text in texts.items():
            if name == split:
                print(f"  source sha256 {hashlib.sha256(text.encode()).hexdigest()}")
    write_npz(out, arrays)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"wrote {out} ({out.stat().st_size} bytes), sha256 {digest}")
    return digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="sktime wheel or directory with JapaneseVowels_{TRAIN,TEST}.ts "
        f"(default: pip download sktime=={SKTIME_VERSION} into a temporary directory)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bundle to write")
    args = parser.parse_args(argv)
    if args.source is not None:
        build(args.source, args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(download_wheel(Path(tmp)), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
