"""The experiments' figures (matplotlib, Agg backend, written with write-then-rename)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from miro_data.common import atomic_path


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


def convergence_plot(curves: dict[str, dict[str, list[tuple[int, float]]]], path: Path) -> None:
    """One panel per metric, one line per arm, metric value vs training step."""
    metrics = list(next(iter(curves.values())))
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics, strict=False):
        for arm, arm_curves in curves.items():
            steps, values = zip(*arm_curves[metric], strict=True)
            ax.plot(steps, values, marker="o", markersize=3, label=arm)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    axes[0].legend(fontsize=8)
    _save(fig, path)


def lines_plot(
    x: Sequence[float], series: Mapping[str, Mapping[str, Sequence[float]]], xlabel: str, path: Path
) -> None:
    """One panel per metric; each series (e.g. a model or selection reward) is a line over x."""
    metrics = list(next(iter(series.values())))
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics, strict=False):
        for name, values in series.items():
            ax.plot(x, values[metric], marker="o", markersize=3, label=name)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    axes[0].legend(fontsize=7)
    _save(fig, path)


def radar_plot(table: dict[str, dict[str, float]], path: Path) -> None:
    """Each model's metrics, min-max normalised per metric across models, on one radar."""
    plt = _plt()
    models = list(table)
    metrics = list(next(iter(table.values())))
    values = np.array([[table[m][k] for k in metrics] for m in models], dtype=float)
    lo, hi = np.nanmin(values, 0), np.nanmax(values, 0)
    norm = (values - lo) / np.where(hi > lo, hi - lo, 1.0)
    angles = np.linspace(0, 2 * np.pi, len(metrics), endpoint=False).tolist()
    fig = plt.figure(figsize=(6.5, 6))
    ax = fig.add_subplot(polar=True)
    for model, row in zip(models, norm, strict=True):
        closed = [*row.tolist(), row[0]]
        ax.plot(
            [*angles, angles[0]], closed, linewidth=1.6 if model == "miro" else 1.0, label=model
        )
    ax.set_xticks(angles, metrics, fontsize=8)
    ax.set_yticks([0, 0.5, 1.0], ["min", "", "max"], fontsize=7)
    ax.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize=8)
    _save(fig, path)
