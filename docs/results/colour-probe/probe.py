"""Do the models follow colour words? (README "Results"; run from the repo root:
python docs/results/colour-probe/probe.py RUNS OUT.json, RUNS holding sN/{baseline,miro}/seed-N.)

Every colour × shape prompt (`a photo of a blue square`: 18 prompts) drawn 8 times from each
training seed's final baseline and MIRO models, on held-out noise (sampler seed 1; MIRO at
s⁺ all high vs s⁻ all low, ω = 3, as the compare; and two other MIRO settings, MODELS). Each image is read by the Shapes World
detector; per image:
- shape: an object of the asked shape is there (GenEval's single-object check);
- colour given shape: one of those objects has the asked colour (undefined when there is none) —
  1/6 if the colour word is ignored and the six colours come out alike;
- colour anywhere: any object has the asked colour;
- the share of each colour among the detected objects (what the model draws unasked).
Means over seeds, prompts and draws with 95 % bootstrap intervals (miro_train.stats).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from miro_data.detector import detect
from miro_data.shapes import COLORS, SHAPES
from miro_train.experiments.common import EXPERIMENT_SAMPLER
from miro_train.sample import generate, load_bundle
from miro_train.stats import bootstrap, fmt

SEEDS, DRAWS, STEP = (0, 1, 2), 8, "step_0003500"
PROMPTS = [f"a photo of a {c} {s}" for c in COLORS for s in SHAPES for _ in range(DRAWS)]


def measure(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: shape, colour | shape (NaN without the shape), colour anywhere, colour shares."""
    rows: dict[str, list[float]] = {"shape": [], "colour given shape": [], "colour anywhere": []}
    shares = {c: [] for c in COLORS}
    for prompt, image in zip(PROMPTS, images, strict=True):
        *_, colour, shape = prompt.split()
        found = detect(image)
        of_shape = [d for d in found if d.shape == shape]
        rows["shape"].append(float(bool(of_shape)))
        right = any(d.color == colour for d in of_shape)
        rows["colour given shape"].append(float(right) if of_shape else np.nan)
        rows["colour anywhere"].append(float(any(d.color == colour for d in found)))
        for c in COLORS:  # NaN in an image with no object: not counted
            share = sum(d.color == c for d in found) / len(found) if found else np.nan
            shares[c].append(share)
    return {k: np.array(v) for k, v in rows.items()} | {
        f"share {c}": np.array(v) for c, v in shares.items()
    }


# (label, arm, sampler changes): the compare's settings, then MIRO without guidance and MIRO
# asking for mid-level image quality — is what it draws unasked the quality targets' doing?
MODELS = (
    ("baseline", "baseline", {}),
    ("MIRO, ω = 3", "miro", {}),
    ("MIRO, ω = 0", "miro", {"guidance": 0.0}),
    ("MIRO, ω = 3, noise and edge_sharpness targets 0.5", "miro",
     {"target": "noise=0.5,edge_sharpness=0.5"}),
)  # fmt: skip


def main(runs: Path, out: Path) -> None:
    table: dict[str, dict] = {}
    base: dict[str, np.ndarray] = {}
    for label, arm, changes in MODELS:
        settings = replace(EXPERIMENT_SAMPLER, seed=1, **changes)
        per_seed = []
        for seed in SEEDS:
            bundle = load_bundle(runs / f"s{seed}" / arm / f"seed-{seed}" / "checkpoints" / STEP,
                                 "cpu", "ema", False)  # fmt: skip
            per_seed.append(measure(generate(bundle, PROMPTS, settings)))
        stacked = {k: np.stack([m[k] for m in per_seed]) for k in per_seed[0]}
        estimates = bootstrap(stacked, PROMPTS)
        base = stacked if arm == "baseline" else base
        paired = bootstrap(stacked, PROMPTS, baseline=base)["colour given shape"]  # same noise
        table[label] = {k: e.to_dict() for k, e in estimates.items()}
        table[label]["colour given shape − baseline"] = paired.to_dict()
        cells = [fmt(e, 100) for e in estimates.values()] + [fmt(paired, 100)]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("| model | " + " | ".join(estimates) + " | colour given shape − baseline |")
    out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
