"""Lazy public names for a package: a name's module is imported when the name is first used.

``import seqprep`` must stay fast, and the executors import TensorFlow, so the front door and
every stage package list their public names here instead of importing their modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def attach(package: str, exports: dict[str, str], submodules: tuple[str, ...] = ()) -> tuple[
    Callable[[str], Any], Callable[[], list[str]], list[str]
]:
    """Return ``(__getattr__, __dir__, __all__)`` for ``package``.

    Args:
        package: The package's ``__name__``.
        exports: Public name -> the module that defines it (absolute, or relative to
            ``package`` when it starts with a dot).
        submodules: Public submodules, imported on first attribute access.

    Returns:
        The module-level ``__getattr__`` (PEP 562), ``__dir__`` and ``__all__``.

    Example:
        >>> getattr_, dir_, all_ = attach("seqprep.planning", {"BucketSampler": "._sampler"})
        >>> getattr_("BucketSampler").__name__, all_
        ('BucketSampler', ['BucketSampler'])
    """
    names = sorted([*exports, *submodules])

    def __getattr__(name: str) -> Any:
        module = importlib.import_module(package)
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
        elif name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(module, name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return list(names)

    return __getattr__, __dir__, names
