"""The code blocks of docs/encoder_decoder.md from "Teacher forcing" on run as written, in order.

(The "Several fields per example" section is run by tests/test_fields.py.)
"""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "encoder_decoder.md"
SECTIONS = DOC.read_text(encoding="utf-8").split("\n## Teacher forcing\n", 1)[1]
BLOCKS = re.findall(r"^```python\n(.*?)^```", SECTIONS, re.M | re.S)


def test_the_page_has_code_blocks():
    assert len(BLOCKS) >= 3


def test_encoder_decoder_page_code_blocks_run(capsys):
    namespace: dict = {}
    for i, block in enumerate(BLOCKS):
        code = compile(block, f"{DOC.name}[block {i}]", "exec")
        exec(code, namespace)  # noqa: S102 (the docs' own examples)
    out = capsys.readouterr().out
    assert re.search(r"PER \d\.\d{3}, WER \d\.\d{3}", out)
