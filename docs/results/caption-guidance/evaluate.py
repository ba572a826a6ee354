"""Caption dropout and caption guidance (README "Results"; run from the repo root:
python docs/results/caption-guidance/evaluate.py RUN RECORDS OUT.json — RUN a `miro train`
run with --caption-dropout, RECORDS a compare's per_image.jsonl.gz of the same recipe without).

RUN's final model drawn at several caption-guidance scales ω_c (and without its reward
contrast) on the compare's prompts and noise (sampler seed 0; 16 prompts × 4 images per
GenEval category), so each image pairs with the one the compare's baseline and MIRO drew for
the same prompt from the same noise (RECORDS, step 3,500); and on the colour probe of
../colour-probe (18 colour × shape prompts × 8 draws, sampler seed 1): of the images with the
asked shape, the share where it has the asked colour. 95 % bootstrap intervals (prompts and
draws resampled); differences paired.
"""

from __future__ import annotations

import gzip
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "colour-probe"))
from probe import PROMPTS as COLOUR_PROMPTS
from probe import measure

from miro_data.shapes import parse_caption
from miro_train.experiments.common import EXPERIMENT_SAMPLER, EvalSettings, evaluate
from miro_train.sample import generate, load_bundle
from miro_train.stats import bootstrap, fmt

STEP = 3500
SETTINGS = (  # label, sampler changes
    ("ω = 3", {}),
    ("ω = 3, ω_c = 3", {"caption_guidance": 3.0}),
    ("ω = 3, ω_c = 5", {"caption_guidance": 5.0}),
    ("ω = 0, ω_c = 3", {"guidance": 0.0, "caption_guidance": 3.0}),
)
CATEGORIES = ("single_object", "colors", "color_attr")


def recorded(records: Path, arm: str, prompts: list[str]) -> np.ndarray:
    """The GenEval passes the compare recorded for `arm` at STEP, image for image."""
    rows = [json.loads(line) for line in gzip.decompress(records.read_bytes()).splitlines()]
    rows = [r for r in rows if r["arm"] == arm and r["step"] == STEP]
    if [r["prompt"] for r in rows] != prompts:
        raise SystemExit(f"{records}: other prompts than this evaluation's")
    return np.array([r["geneval"] for r in rows])


def by_category(passed: np.ndarray, prompts: list[str]) -> dict[str, np.ndarray]:
    out = {"geneval": passed}
    for c in CATEGORIES:
        out[c] = passed[[parse_caption(p).category == c for p in prompts]]  # type: ignore[union-attr]
    return out


def main(run: Path, records: Path, out: Path) -> None:
    bundle = load_bundle(run, "cpu", "ema", False)
    assert bundle.step == STEP, bundle.step
    table: dict[str, dict] = {}
    head = ["GenEval", *CATEGORIES, "− MIRO", "− baseline", "colour given shape", "yellow"]
    print("| MIRO, caption dropout 0.1 | " + " | ".join(head) + " |")
    for label, changes in SETTINGS:
        sampler = replace(EXPERIMENT_SAMPLER, **changes)
        _, scores = evaluate(bundle, EvalSettings(16, 4, sampler=sampler))
        prompts, passed = scores.prompts, scores.values["geneval"][0]
        row = {}
        for metric, values in by_category(passed, prompts).items():
            subset = prompts if metric == "geneval" else [
                p for p in prompts if parse_caption(p).category == metric]  # type: ignore[union-attr]  # fmt: skip
            row[metric] = bootstrap({metric: values}, subset)[metric]
        for arm in ("miro", "baseline"):
            theirs = {"geneval": recorded(records, arm, prompts)}
            row[f"− {arm}"] = bootstrap({"geneval": passed}, prompts, baseline=theirs)["geneval"]
        probe = measure(generate(bundle, COLOUR_PROMPTS, replace(sampler, seed=1)))
        for metric in ("colour given shape", "share yellow"):
            row[metric] = bootstrap({metric: probe[metric]}, COLOUR_PROMPTS)[metric]
        table[label] = {k: e.to_dict() for k, e in row.items()}
        print(f"| {label} | " + " | ".join(fmt(e, 100) for e in row.values()) + " |", flush=True)
    out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
