"""Stage `miro report`: one self-contained HTML page of a run — data, training, samples, GenEval.

Every section is optional: the page shows what the given folders hold (the demo's layout by
default). Images are embedded, so the page can be mailed or attached to an issue as is.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from miro_data.common import MiroError, atomic_path
from miro_data.options import opt
from miro_train.checkpoint import list_checkpoints, loss_plot, read_meta, read_spec, read_step
from miro_train.following import WORDS, following_line
from miro_train.imagefolder import MANIFEST, read_rows

log = logging.getLogger(__name__)

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; } img { max-width: 100%; image-rendering: pixelated; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; } .grid img { max-width: 360px; } .note { color: #666; font-size: .9em; }
"""


@dataclass(frozen=True)
class ReportConfig:
    """Where the run's artefacts are, and where the page goes."""

    out: Path = field(metadata=opt(help="The HTML page to write."))
    title: str = field(default="miro run", metadata=opt())
    data: Path | None = field(  # the data stages' folder
        default=None, metadata=opt(help="Folder with stats.png / edges.json.")
    )
    run: Path | None = field(  # log.csv, loss.png, checkpoints/
        default=None, metadata=opt(help="Training run folder.")
    )
    samples: Path | None = field(  # grid.png, manifest.jsonl
        default=None, metadata=opt(help="`miro sample` output folder.")
    )
    geneval: Path | None = field(  # results.json, grid_*.png
        default=None, metadata=opt(help="`miro eval geneval` output folder.")
    )
    notes: tuple[str, ...] = field(
        default=(), metadata=opt("--note", help="A paragraph at the top, repeatable.")
    )


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _data_section(folder: Path) -> list[str]:
    parts = ["<h2>Data: rewards of the corpus</h2>"]
    edges = folder / "edges.json"
    if edges.exists():
        rewards = json.loads(edges.read_text())["rewards"]
        rows = [[r, str(v["n_levels"]), f"{v['stats']['count']:,}", f"{v['stats']['mean']:.4g}",
                 f"{v['stats']['p50']:.4g}"] for r, v in rewards.items()]  # fmt: skip
        parts.append(_table(["reward", "levels", "scored", "mean", "median"], rows))
    if (folder / "stats.png").exists():
        parts.append(_img(folder / "stats.png", "reward distributions"))
    return parts


def _run_section(folder: Path) -> list[str]:
    parts = ["<h2>Training</h2>"]
    ckpts = list_checkpoints(folder)
    if ckpts:
        spec, cfg = read_spec(ckpts[-1]), read_meta(ckpts[-1])["config"]
        conditioned = ", ".join(spec.rewards) or "nothing (baseline)"
        parts.append(
            f"<p>{html.escape(spec.name)}, {read_step(ckpts[-1])} steps, batch "
            f"{cfg.get('batch_size')}, conditioned on: {html.escape(conditioned)}.</p>"
        )
    if loss_plot(folder).exists():
        parts.append(_img(loss_plot(folder), "loss curve"))
    return parts


def _samples_section(folder: Path) -> list[str]:
    parts = ["<h2>Samples with multi-reward guidance</h2>"]
    manifest = folder / MANIFEST
    if manifest.exists():
        rows = read_rows(manifest)
        prompts = list(dict.fromkeys(r["prompt"] for r in rows))
        first = rows[0]
        parts.append(
            f"<p class='note'>{len(rows)} images, ω = {first.get('guidance')}, {first.get('steps')} Euler steps; "
            f"s⁺ = {html.escape(json.dumps(first.get('targets')))}; s⁻ = {html.escape(json.dumps(first.get('negatives')))}. "
            f"Rows: {html.escape(' · '.join(prompts))}</p>"
        )
    if (folder / "grid.png").exists():
        parts.append(_img(folder / "grid.png", "sample grid"))
    return parts


def _geneval_section(folder: Path) -> list[str]:
    parts = ["<h2>Shapes World GenEval</h2>"]
    results = folder / "results.json"
    if results.exists():
        r = json.loads(results.read_text())
        cats = r["categories"]
        # results.json of earlier versions has no intervals: the figures alone are shown then
        bounds = [r.get("interval"), *(r.get("intervals", {}).get(c) for c in cats)]
        cells = [
            f"{100 * v:.1f}" + ("" if b is None else f" [{100 * b[0]:.1f}, {100 * b[1]:.1f}]")
            for v, b in zip([r["overall"], *cats.values()], bounds, strict=True)
        ]
        parts.append(_table(["overall", *cats], [cells]))
        parts.append(
            f"<p class='note'>{r['n_images']} images; 95 % bootstrap intervals in brackets; "
            "green frame = the detector's check passed.</p>"
        )
        for attribute, word in WORDS.items():  # absent before 2026-12-03
            if f"{word.category}_following" in r:
                figures = {k: r[f"{word.category}_{k}"] for k in ("following", "objects")}
                parts.append(f"<p>{html.escape(following_line(attribute, figures))}.</p>")
    grids = sorted(folder.glob("grid_*.png"))
    if grids:
        parts.append('<div class="grid">' + "".join(_img(g, g.stem) for g in grids) + "</div>")
    return parts


def report(cfg: ReportConfig) -> Path:
    """Write the HTML page; returns its path."""
    sections = {"data": (cfg.data, _data_section), "run": (cfg.run, _run_section),
                "samples": (cfg.samples, _samples_section), "geneval": (cfg.geneval, _geneval_section)}  # fmt: skip
    body = [f"<h1>{html.escape(cfg.title)}</h1>", *(f"<p>{html.escape(n)}</p>" for n in cfg.notes)]
    shown = 0
    for name, (folder, render) in sections.items():
        if folder is None:
            continue
        if not folder.exists():
            raise MiroError(f"{name} folder not found: {folder}")
        body += render(folder)
        shown += 1
    if not shown:
        raise MiroError(
            "nothing to report: give at least one of --data, --run, --samples, --geneval"
        )
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(cfg.title)}</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    with atomic_path(cfg.out) as tmp:
        tmp.write_text(page)
    log.info("wrote %s", cfg.out)
    return cfg.out
