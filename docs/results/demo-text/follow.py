"""Does a model draw the shape its caption asks for, or shapes whatever the caption says?
(run from the repo root)

Usage: python docs/results/demo-text/follow.py OUT.json OMEGAS LABEL=RUN[,RUN…] ...
For each model (the runs of one recipe, e.g. its training seeds, stacked) and each guidance
scale ω in OMEGAS ("3,8"): 64 draws of each single-object prompt (`a photo of a circle`, …)
on held-out noise (sampler seed 1, the experiments' sampler otherwise), and from the detector:
how often each shape is present, by the shape asked; objects per image; and **following**, the
presence of a shape when it is asked minus its presence when another shape is asked, averaged
over the three shapes (0 when the caption's shape word is ignored). Brackets: 95 % bootstrap
intervals over the images of each prompt and run.
"""

import json
import sys
from dataclasses import replace

import numpy as np

from miro_data.detector import detect
from miro_train.experiments.common import EXPERIMENT_SAMPLER
from miro_train.sample import generate, load_bundle

SHAPES = ("circle", "square", "triangle")
DRAWS, N_BOOT = 64, 2000


def presence(runs: list[str], omega: float) -> tuple[np.ndarray, np.ndarray]:
    """(R, S, D, S) bool: run, shape asked, draw, shape present; (R, S, D) objects found."""
    prompts = [f"a photo of a {s}" for s in SHAPES for _ in range(DRAWS)]
    settings = replace(EXPERIMENT_SAMPLER, guidance=omega, seed=1)
    found, counts = [], []
    for run in runs:
        shapes = [
            [d.shape for d in detect(im)] for im in generate(load_bundle(run), prompts, settings)
        ]
        found.append([[q in f for q in SHAPES] for f in shapes])
        counts.append([len(f) for f in shapes])
    shape = (len(runs), len(SHAPES), DRAWS)
    return np.array(found).reshape(*shape, len(SHAPES)), np.array(counts).reshape(shape)


def statistics(found: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    rates = found.mean(axis=(0, 2))  # (asked, present)
    asked = np.diag(rates)
    others = (rates.sum(axis=0) - asked) / (len(SHAPES) - 1)
    out = {
        f"{a}→{q}": 100 * rates[i, j] for i, a in enumerate(SHAPES) for j, q in enumerate(SHAPES)
    }
    return out | {
        "following": 100 * float(np.mean(asked - others)),
        "objects": float(counts.mean()),
    }


def with_intervals(found: np.ndarray, counts: np.ndarray) -> dict[str, list[float]]:
    point = statistics(found, counts)
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(N_BOOT):  # resample the draws of each (run, prompt) cell
        idx = rng.integers(0, DRAWS, size=found.shape[:3])
        cells = np.take_along_axis(found, idx[..., None], axis=2)
        boot.append(statistics(cells, np.take_along_axis(counts, idx, axis=2)))
    return {
        k: [v, *np.percentile([b[k] for b in boot], [2.5, 97.5]).tolist()] for k, v in point.items()
    }


def main(out: str, omegas: str, models: list[str]) -> None:
    table = {}
    for model in models:
        label, _, runs = model.partition("=")
        for omega in map(float, omegas.split(",")):
            row = with_intervals(*presence(runs.split(","), omega))
            table[f"{label} ω={omega:g}"] = row
            by_shape = "; ".join(
                f"{a}: " + " ".join(f"{row[f'{a}→{q}'][0]:.0f}" for q in SHAPES) for a in SHAPES
            )
            f, o = row["following"], row["objects"]
            print(f"{label} ω={omega:g} | following {f[0]:+.1f} [{f[1]:+.1f}, {f[2]:+.1f}] | "
                  f"objects {o[0]:.1f} [{o[1]:.1f}, {o[2]:.1f}] | present (circle square "
                  f"triangle) by asked — {by_shape}")  # fmt: skip
    with open(out, "w") as fh:
        json.dump(table, fh, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
