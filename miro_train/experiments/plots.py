"""The experiments' figures (matplotlib, Agg backend, written with write-then-rename)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from miro_data.common import atomic_path
from miro_train.stats import Estimate


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    _plt().close(fig)


def _grid(n: int, cols: int = 4, size: tuple[float, float] = (3.2, 2.6)):
    plt = _plt()
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def _band(ax, x: Sequence[float], estimates: Sequence[Estimate], label: str) -> None:
    """A line through the estimates and a shaded band over their 95 % intervals."""
    values = [e.value for e in estimates]
    (line,) = ax.plot(x, values, marker="o", markersize=3, label=label)
    ax.fill_between(x, [e.low for e in estimates], [e.high for e in estimates],
                    color=line.get_color(), alpha=0.2, linewidth=0)  # fmt: skip


def convergence_plot(curves: dict[str, dict[str, list[tuple[int, Estimate]]]], path: Path) -> None:
    """One panel per metric, one line per arm with its 95 % band, metric vs training step."""
    metrics = list(next(iter(curves.values())))
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics, strict=False):
        for arm, arm_curves in curves.items():
            steps, values = zip(*arm_curves[metric], strict=True)
            _band(ax, steps, values, arm)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    axes[0].legend(fontsize=8)
    _save(fig, path)


def lines_plot(
    x: Sequence[float],
    series: Mapping[str, Mapping[str, Sequence[Estimate]]],
    xlabel: str,
    path: Path,
) -> None:
    """One panel per metric; each series (e.g. a model or selection reward) is a line over x
    with its 95 % band."""
    metrics = list(next(iter(series.values())))
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics, strict=False):
        for name, values in series.items():
            _band(ax, x, values[metric], name)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    axes[0].legend(fontsize=7)
    _save(fig, path)


def radar_plot(table: dict[str, dict[str, Estimate]], path: Path) -> None:
    """Each model's metrics, min-max normalised per metric across models (intervals included),
    on one radar; a shaded band spans each model's 95 % intervals."""
    plt = _plt()
    models = list(table)
    metrics = list(next(iter(table.values())))

    def grid(attr: str) -> np.ndarray:
        return np.array(
            [[getattr(table[m][k], attr) for k in metrics] for m in models], dtype=float
        )

    values, low, high = grid("value"), grid("low"), grid("high")
    lo, hi = np.nanmin(low, 0), np.nanmax(high, 0)
    span = np.where(hi > lo, hi - lo, 1.0)
    angles = np.linspace(0, 2 * np.pi, len(metrics), endpoint=False).tolist()
    closed = [*angles, angles[0]]
    fig = plt.figure(figsize=(6.5, 6))
    ax = fig.add_subplot(polar=True)
    for i, model in enumerate(models):
        row, a, b = ((v[i] - lo) / span for v in (values, low, high))
        (line,) = ax.plot(closed, [*row, row[0]], linewidth=1.6 if model == "miro" else 1.0,
                          label=model)  # fmt: skip
        ax.fill_between(closed, [*a, a[0]], [*b, b[0]], color=line.get_color(), alpha=0.15)
    ax.set_xticks(angles, metrics, fontsize=8)
    ax.set_yticks([0, 0.5, 1.0], ["min", "", "max"], fontsize=7)
    ax.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize=8)
    _save(fig, path)
