"""Stage `miro data stats`: per-reward summaries, histograms with bin edges, correlations.

Statistics come from the chosen bin-edge version (the latest by default) when one exists,
otherwise they are computed now. The plot shows one histogram per reward with its bin edges
overlaid, and the Spearman correlation between rewards — the quickest way to see which
rewards measure the same thing and which pull against each other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats as sps

from miro_data import db
from miro_data.bins import STAT_COLUMNS, load_levels, reward_stats, select_rewards
from miro_data.checks import check_names, check_optional_positive
from miro_data.common import MiroError, check_output, output_file
from miro_data.options import NAMES, opt

log = logging.getLogger(__name__)

PLOT_SAMPLE = 200_000


@dataclass(frozen=True)
class StatsConfig:
    """Which database, which bin-edge version, and where to draw."""

    db: Path = field(metadata=opt(help="DuckDB file."))
    plot: Path | None = field(
        default=None, metadata=opt(help="Write histograms and a correlation heat map (.png).")
    )
    version: int | None = field(
        default=None, metadata=opt(help="Bin-edge version (default: the latest).")
    )
    rewards: tuple[str, ...] | None = field(
        default=None,
        metadata=opt("--rewards", "-r", parser=NAMES, help="Comma-separated; default all."),
    )

    def __post_init__(self) -> None:
        if self.plot is not None and self.plot.suffix.lower() != ".png":
            raise MiroError("--plot must be a .png path")
        check_optional_positive("--version", self.version)
        check_names("--rewards", self.rewards)


@dataclass(frozen=True)
class StatsReport:
    """Per-reward statistics, the bin-edge version they belong to, and reward correlations."""

    version: int | None
    stats: dict[str, dict[str, float | int | None]]
    n_levels: dict[str, int]
    rewards: list[str]
    correlation: np.ndarray  # Spearman, (R, R), NaN where undefined


def _wide_sample(con, rewards: dict[str, str]) -> dict[str, np.ndarray]:
    """Scores of the same samples for every reward (a seeded sample), for histograms and correlation."""
    columns = ", ".join(db.wide_columns(rewards))
    rows = con.execute(
        f"""SELECT {columns} FROM scores GROUP BY shard, key
        ORDER BY hash(shard, key) LIMIT {PLOT_SAMPLE}"""
    ).fetchnumpy()
    return {r: np.asarray(rows[r], dtype=np.float64) for r in rewards}


def spearman_matrix(values: dict[str, np.ndarray]) -> np.ndarray:
    """Pairwise-complete Spearman correlations."""
    names = list(values)
    out = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            ok = np.isfinite(values[a]) & np.isfinite(values[b])
            if ok.sum() > 2 and np.ptp(values[a][ok]) > 0 and np.ptp(values[b][ok]) > 0:
                out[i, j] = sps.spearmanr(values[a][ok], values[b][ok]).statistic
    return out


def stats(cfg: StatsConfig) -> StatsReport:
    """Summaries of each reward's scores; also a PNG when cfg.plot is set."""
    if cfg.plot is not None:
        check_output(cfg.plot, "--plot", keep=(cfg.db,))  # before the work, not after it
    con = db.connect(cfg.db, read_only=True)
    try:
        rewards = select_rewards(con, cfg.rewards)
        (n_versions,) = con.execute("SELECT count(*) FROM bin_versions").fetchone() or (0,)
        has_bins = n_versions > 0
        version: int | None = None
        levels: dict = {}
        if has_bins or cfg.version is not None:
            version, levels = load_levels(con, cfg.version)
        table = {}
        for reward, rv in rewards.items():
            row = None
            if reward in levels and levels[reward][0] == rv:
                cols = ", ".join(STAT_COLUMNS)
                row = con.execute(
                    f"SELECT {cols} FROM bin_edges WHERE version = $v AND reward = $r",
                    {"v": version, "r": reward},
                ).fetchone()
            table[reward] = (
                dict(zip(STAT_COLUMNS, row, strict=True)) if row else reward_stats(con, reward, rv)
            )
        sample = _wide_sample(con, rewards)
    finally:
        con.close()
    names = list(rewards)
    report = StatsReport(
        version=version,
        stats=table,
        n_levels={r: lv.n_levels for r, (_, lv) in levels.items() if r in rewards},
        rewards=names,
        correlation=spearman_matrix(sample),
    )
    if cfg.plot is not None:
        edges = {r: lv.edges for r, (rv, lv) in levels.items() if r in rewards and rv == rewards[r]}
        plot_stats(report, sample, edges, cfg.plot)
    return report


def plot_stats(
    report: StatsReport, sample: dict[str, np.ndarray], edges: dict[str, np.ndarray], path: Path
) -> None:
    """Histograms (bin edges as vertical lines) and a correlation heat map, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = report.rewards
    n_panels = len(names) + 1
    cols = min(4, n_panels)
    rows = -(-n_panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    flat = axes.ravel()
    for ax, name in zip(flat, names, strict=False):
        v = sample[name][np.isfinite(sample[name])]
        if v.size == 0:
            ax.set_title(f"{name} (no defined scores)")
            continue
        ax.hist(v, bins=min(100, max(10, np.unique(v).size)), color="#4a78b5")
        for e in edges.get(name, ()):
            ax.axvline(e, color="#d9534f", linewidth=0.5, alpha=0.7)
        ax.set_title(f"{name} ({report.n_levels[name]} levels)" if name in edges else name)
    heat = flat[len(names)]
    im = heat.imshow(report.correlation, vmin=-1, vmax=1, cmap="RdBu_r")
    heat.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    heat.set_yticks(range(len(names)), names, fontsize=7)
    for i in range(len(names)):
        for j in range(len(names)):
            if np.isfinite(report.correlation[i, j]):
                heat.text(
                    j, i, f"{report.correlation[i, j]:.2f}", ha="center", va="center", fontsize=6
                )
    heat.set_title("Spearman correlation")
    fig.colorbar(im, ax=heat, fraction=0.046)
    for ax in flat[n_panels:]:
        ax.axis("off")
    title = f"bin-edge version {report.version}" if report.version else "no bin edges yet"
    fig.suptitle(f"reward distributions ({title})")
    fig.tight_layout()
    try:
        with output_file(path, "--plot") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    log.info("wrote %s", path)
