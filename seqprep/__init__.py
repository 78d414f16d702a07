"""seqprep: cheap and correct training on variable-length sequences with Keras 3 and tf.data.

Plan in numpy, execute in tf.data. Every public name is importable from here; the modules that
need TensorFlow are imported only when one of their names is first used, so ``import seqprep``
stays fast. The folders are the flow: :mod:`seqprep.inputs` (sequences in, padded arrays and
the kernel's table out), :mod:`seqprep.planning` (lengths in, plans out),
:mod:`seqprep.running` (plans and tables in, batches and training out), :mod:`seqprep.readers`
(files and frames in), :mod:`seqprep.tools` (analysis, plots, CLI, demos).

Example:
    >>> import seqprep as sp
    >>> sp.pad_sequences([[1, 2, 3], [4]], padding="post").tolist()
    [[1, 2, 3], [4, 0, 0]]
"""

from __future__ import annotations

import importlib

from seqprep._core.lazy import attach

__version__ = "0.1.0"

# Each stage package lists its own public names (and imports nothing heavy to do so); the front
# door re-exports all of them, each imported on first use.
_STAGES = ("inputs", "planning", "running", "readers")
_SUBMODULES = (
    "data", "datasets", "inputs", "layers", "models", "planning", "readers", "running", "tools",
)
_EXPORTS = {
    name: f"seqprep.{stage}"
    for stage in _STAGES
    for name in importlib.import_module(f"seqprep.{stage}").__all__
}

__getattr__, __dir__, _names = attach(__name__, _EXPORTS, _SUBMODULES)
__all__ = sorted([*_names, "__version__"])
