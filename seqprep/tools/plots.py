"""Matplotlib figures for lengths, bucket boundaries and strategy comparisons.

Every function returns a ``matplotlib.figure.Figure`` built without ``pyplot``: no global
state, no GUI backend, nothing shown; save it with ``fig.savefig(path)`` (the Agg canvas is
used) or pass ``path=`` to have it saved for you. matplotlib is imported only when a function
here is called; install it with ``pip install seqprep[plots]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from seqprep._core.checks import check_lengths

__all__ = [
    "accuracy_and_time",
    "learning_curves",
    "length_histogram",
    "padding_by_strategy",
]


def _figure(**kwargs: Any) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "seqprep.tools.plots needs matplotlib.\n- Install it with `pip install seqprep[plots]`."
        ) from None
    return Figure(**kwargs)


def _finish(fig: Any, path: str | os.PathLike | None) -> Any:
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _check_values(name: str, values: Mapping[str, Any]) -> dict[str, float]:
    if not isinstance(values, Mapping) or not values:
        raise ValueError(
            f"Argument `{name}` must be a non-empty mapping of strategy name to number. "
            f"Received: {name}={values!r}"
        )
    return {str(k): float(v) for k, v in values.items()}


def length_histogram(
    lengths: Any,
    boundaries: Sequence[int] | None = None,
    *,
    title: str = "Sequence lengths",
    path: str | os.PathLike | None = None,
) -> Any:
    """Histogram of sequence lengths, with bucket boundaries marked.

    Bucket ``i`` holds lengths in ``[boundaries[i-1], boundaries[i])``, so each boundary sits at
    the left edge of the first length of the next bucket. Up to 12 boundaries are drawn as
    dashed lines; more (60-120 is common on long-tailed data) would hide the histogram, so
    buckets are then shaded in alternating bands behind it, with short ticks on the top edge.

    Args:
        lengths: non-negative integer lengths.
        boundaries: ascending bucket boundaries to mark, or None.
        title: the axes title.
        path: if given, save the figure there (PNG by suffix).

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: ``lengths`` is empty or holds negative values.

    Example:
        >>> fig = length_histogram([3, 4, 4, 9, 12], boundaries=[5, 10])
        >>> len(fig.axes[0].lines)
        2
        >>> fig = length_histogram(list(range(1, 200)), boundaries=list(range(5, 200, 5)))
        >>> len(fig.axes[0].lines)  # 39 boundaries: one row of ticks over shaded bands
        1
    """
    lengths = check_lengths(lengths)
    fig = _figure(figsize=(6.4, 3.6))
    ax = fig.add_subplot()
    low, high = int(lengths.min()), int(lengths.max())
    bins = np.arange(low, high + 2) - 0.5 if high - low <= 80 else 60
    ax.hist(lengths, bins=bins, color="#4c72b0", edgecolor="white", linewidth=0.5)
    bounds = [int(b) for b in (boundaries if boundaries is not None else ())]
    if len(bounds) <= _MAX_LINES:
        for i, b in enumerate(bounds):
            ax.axvline(b - 0.5, color="#c44e52", linestyle="--", linewidth=1.2,
                       label="bucket boundaries" if i == 0 else None)
    else:
        _bucket_bands(ax, bounds, low, high)
    if bounds:
        ax.legend(loc="best", framealpha=0.8)
    ax.set_xlabel("length (time steps)")
    ax.set_ylabel("sequences")
    ax.set_title(title)
    return _finish(fig, path)


# More boundaries than this are shown as bands: dozens of lines read as one red wall.
_MAX_LINES = 12


def _bucket_bands(ax: Any, bounds: list[int], low: int, high: int) -> None:
    """Shade every other bucket and tick each boundary on the top edge."""
    edges = [min(low, bounds[0]) - 0.5, *(b - 0.5 for b in bounds), max(high, bounds[-1]) + 0.5]
    for i in range(0, len(edges) - 1, 2):
        ax.axvspan(edges[i], edges[i + 1], color="#c44e52", alpha=0.12, linewidth=0,
                   zorder=0, label=f"{len(bounds) + 1} buckets (alternate shading)" if i == 0
                   else None)
    ax.plot([b - 0.5 for b in bounds], [1.0] * len(bounds), linestyle="none", marker="|",
            markersize=6, color="#c44e52", transform=ax.get_xaxis_transform(), clip_on=False)


def padding_by_strategy(
    padding: Mapping[str, float],
    *,
    title: str = "Padding per strategy",
    path: str | os.PathLike | None = None,
) -> Any:
    """Horizontal bar chart of the padding fraction (0..1) of each batching strategy.

    Args:
        padding: strategy name -> fraction of padded steps among all steps fed to the model.
        title: the axes title.
        path: if given, save the figure there.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: ``padding`` is empty or not a mapping.

    Example:
        >>> fig = padding_by_strategy({"pad to max": 0.41, "seqprep buckets": 0.02})
        >>> len(fig.axes[0].patches)
        2
    """
    values = _check_values("padding", padding)
    fig = _figure(figsize=(6.4, 0.6 + 0.5 * len(values)))
    ax = fig.add_subplot()
    names = list(values)[::-1]
    bars = ax.barh(names, [100 * values[n] for n in names], color="#55a868")
    ax.bar_label(bars, fmt="%.1f%%", padding=3)
    ax.set_xlabel("padded steps (% of all steps)")
    ax.set_xlim(0, max(5.0, 115 * max(values.values())))
    ax.set_title(title)
    return _finish(fig, path)


def accuracy_and_time(
    accuracy: Mapping[str, float],
    epoch_time: Mapping[str, float],
    *,
    title: str = "Accuracy and time per strategy",
    path: str | os.PathLike | None = None,
) -> Any:
    """Two bar charts side by side: test accuracy and seconds per epoch of each strategy.

    Args:
        accuracy: strategy name -> accuracy in ``[0, 1]``.
        epoch_time: strategy name -> mean seconds per epoch (same keys).
        title: the figure title.
        path: if given, save the figure there.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: empty mappings or mappings with different keys.

    Example:
        >>> fig = accuracy_and_time({"a": 0.97, "b": 0.96}, {"a": 1.5, "b": 0.9})
        >>> len(fig.axes)
        2
    """
    acc = _check_values("accuracy", accuracy)
    secs = _check_values("epoch_time", epoch_time)
    if set(acc) != set(secs):
        raise ValueError(
            "Arguments `accuracy` and `epoch_time` must name the same strategies. Received "
            f"{sorted(acc)} and {sorted(secs)}"
        )
    names = list(acc)[::-1]
    fig = _figure(figsize=(9.6, 0.9 + 0.5 * len(names)))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    bars = left.barh(names, [100 * acc[n] for n in names], color="#4c72b0")
    left.bar_label(bars, fmt="%.1f", padding=3)
    lowest = min(acc.values())
    left.set_xlim(max(0.0, 100 * lowest - 10), 101)
    left.set_xlabel("test accuracy (%)")
    bars = right.barh(names, [secs[n] for n in names], color="#dd8452")
    right.bar_label(bars, fmt="%.2f s", padding=3)
    right.set_xlim(0, 1.3 * max(secs.values()) or 1.0)
    right.set_xlabel("seconds per epoch")
    right.set_yticklabels([])
    fig.suptitle(title)
    return _finish(fig, path)


def learning_curves(
    histories: Mapping[str, Mapping[str, Sequence[float]]],
    metrics: Sequence[str] = ("loss", "accuracy"),
    *,
    title: str = "Learning curves",
    path: str | os.PathLike | None = None,
) -> Any:
    """One panel per metric, one line per run (e.g. per strategy), over epochs.

    Args:
        histories: run name -> a ``History.history``-like mapping of metric -> per-epoch
            values. Metrics a run lacks are skipped for that run.
        metrics: which metrics to draw, one panel each.
        title: the figure title.
        path: if given, save the figure there.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError: ``histories`` or ``metrics`` is empty.

    Example:
        >>> fig = learning_curves({"pad": {"loss": [1.0, 0.5]}, "bucket": {"loss": [0.9, 0.4]}},
        ...                       metrics=["loss"])
        >>> len(fig.axes[0].lines)
        2
    """
    if not histories or not metrics:
        raise ValueError("Arguments `histories` and `metrics` must not be empty.")
    fig = _figure(figsize=(4.8 * len(metrics), 3.6))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        for name, history in histories.items():
            values = history.get(metric)
            if values:
                ax.plot(np.arange(1, len(values) + 1), values, marker=".", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        if ax.lines:
            ax.legend(frameon=False, fontsize="small")
    fig.suptitle(title)
    return _finish(fig, path)
