"""Griffe extension for the docs build: read seqprep's ``Example:`` sections as examples.

seqprep's docstrings follow Keras and say ``Example:``; Griffe's Google parser only knows the
plural ``Examples:`` and would otherwise render the ``>>>`` lines as prose (where a doctest
output such as ``[[1, 2], [3]]`` looks like a Markdown link). Nothing else is changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` section headers to ``Examples:`` before docstrings are parsed."""

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
