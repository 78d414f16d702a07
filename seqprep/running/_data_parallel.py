"""The data-parallel layout seqprep's executors fill their batches for.

``data_parallel="auto"`` (every executor's default) reads the layout Keras trains with,
through public API only: ``keras.distribution.distribution()`` (``None`` unless the user set
one), its ``batch_dim_name``, ``device_mesh.shape`` / ``device_mesh.axis_names`` and
``num_processes``; the process index is ``jax.process_index()``. An int asks for that many
devices along the batch axis whatever Keras says (for a layout made later, or for tests).

The fill rule itself is numpy (:mod:`seqprep.planning._fill`); this module only decides
``k``, the process count and this process's index, and imports Keras (and JAX, only when
Keras's backend is JAX) lazily.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from seqprep._core.checks import check_int
from seqprep.inputs import _stage as _inputs
from seqprep.planning._fill import FilledBatches, fill_batches

__all__ = ["Layout", "resolve_data_parallel"]


class Layout(NamedTuple):
    """Devices along the batch axis (``size``, all processes), processes, this process."""

    size: int
    num_processes: int = 1
    process_index: int = 0

    def fill(self, rows: np.ndarray, splits: np.ndarray, fill_index: int) -> FilledBatches:
        """This process's rows of a flat plan, every batch topped up with ``fill_index``
        (:func:`seqprep.planning._fill.fill_batches` for this layout).

        Example:
            >>> Layout(2).fill(np.array([4, 1, 0]), np.array([0, 2, 3]), 9).rows.tolist()
            [4, 1, 0, 9]
        """
        return fill_batches(rows, splits, multiple_of=self.size, fill_index=fill_index,
                            num_processes=self.num_processes, process_index=self.process_index)

    def fill_plan(
        self, stage: _inputs.Stage, rows: np.ndarray, splits: np.ndarray, widths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A bucketed plan's flat form ``(rows, splits)`` made this process's part of the
        filled plan: its rows (fill rows: the stage's index ``n``), their batch splits, and
        the weight factor of every batch and target, counted over each global batch
        (:func:`seqprep.inputs._stage.weight_scales`; :func:`seqprep.inputs._stage.gather`'s
        ``scales``). ``widths`` are the plan's (:func:`seqprep.inputs._stage.batch_widths`).

        Example:
            >>> st = _inputs.with_fill(_inputs.prepare([[1, 2], [3], [4]], [5, 6, 7]))
            >>> rows, splits, scales = Layout(2, 2, 1).fill_plan(
            ...     st, np.array([0, 1, 2]), np.array([0, 3]), np.array([2]))
            >>> rows.tolist(), splits.tolist(), scales.tolist()  # B' = 4, each half 2 rows
            ([2, 3], [0, 2], [[1.3333333730697632]])
        """
        filled = self.fill(rows, splits, fill_index=stage.n)
        out_splits = np.concatenate([[0], np.cumsum(filled.sizes)]).astype(np.int64)
        return filled.rows, out_splits, _inputs.weight_scales(stage, rows, splits, widths,
                                                              multiple_of=self.size)


def _keras_distribution() -> Any:
    import keras

    return keras.distribution.distribution()


def _batch_axis_size(dist: Any) -> int:
    """Devices along ``dist``'s batch axis (the whole mesh for a 1-D DataParallel mesh)."""
    mesh = dist.device_mesh
    names = list(mesh.axis_names)
    axis = dist.batch_dim_name
    if axis is None or axis not in names:  # no batch axis: nothing is split by rows
        return 1
    return int(mesh.shape[names.index(axis)])


def _process_index() -> int:
    import keras

    if keras.config.backend() != "jax":
        return 0
    import jax

    return int(jax.process_index())


def resolve_data_parallel(data_parallel: Any, *, caller: str) -> Layout | None:
    """The layout to fill batches for, or None when no batch needs filling.

    Args:
        data_parallel: ``"auto"`` (read ``keras.distribution.distribution()``), ``None`` or
            ``1`` (no filling), or an int ``k`` (a multiple of the process count).
        caller: the public function's name, for messages.

    Raises:
        ValueError: ``data_parallel`` is not ``"auto"``, None or a positive int, or an
            int that the process count does not divide; or, with several processes, a
            distribution that would re-shard the dataset seqprep already sharded.
    """
    if isinstance(data_parallel, str) and data_parallel == "auto":
        dist = _keras_distribution()
        if dist is None:
            return None
        size = _batch_axis_size(dist)
    elif data_parallel is None:
        return None
    elif isinstance(data_parallel, str):
        raise ValueError(
            f'Argument `data_parallel` must be "auto", None or a positive int. '
            f"Received: data_parallel={data_parallel!r}\n"
            '- Pass data_parallel="auto" to read keras.distribution, or the number of '
            "devices along the batch axis."
        )
    else:
        size = check_int(
            "data_parallel", data_parallel, minimum=1,
            fix='Pass data_parallel="auto" (read keras.distribution), None, or the number '
                "of devices along the batch axis.",
        )
        dist = _keras_distribution()
    processes = 1 if dist is None else int(getattr(dist, "num_processes", 1) or 1)
    if size % processes:
        raise ValueError(
            f"Argument `data_parallel` of `{caller}` must be a multiple of the number of "
            f"processes ({processes}). Received: data_parallel={size}\n"
            "- Pass the devices along the batch axis of all processes together."
        )
    if size == 1 and processes == 1:
        return None
    if processes > 1 and getattr(dist, "auto_shard_dataset", False):
        raise ValueError(
            f"`{caller}` shards the plan over the {processes} processes itself (each process "
            "reads its rows of every batch, all at the same width), but the Keras "
            "distribution is set to shard the dataset again. Received: a "
            f"{type(dist).__name__} with auto_shard_dataset=True\n"
            "- Build the distribution with `auto_shard_dataset=False` (Keras's switch for "
            "datasets that are already sharded per process)."
        )
    return Layout(size, processes, _process_index() if processes > 1 else 0)

