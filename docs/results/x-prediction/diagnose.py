"""Why single-object prompts fail: per model, 32 draws of each shape (`a photo of a circle` …),
and what the detector finds in them (run from the repo root).

Usage: python docs/results/x-prediction/diagnose.py CHECKPOINT [GRID.png]
Prints passed / no object / only other shapes / several objects, and the most frequent
failures ("circle → triangle×3": a circle asked, three triangles found — a grainy object breaks
into pieces the detector classes by their fill). The experiments' sampler (25 steps, ω = 3).
"""

import sys
from collections import Counter

import numpy as np
from PIL import Image

from miro_data.detector import detect
from miro_train.experiments.common import EXPERIMENT_SAMPLER
from miro_train.sample import generate, load_bundle

SHAPES = ("circle", "square", "triangle")


def main(checkpoint: str, grid: str | None = None) -> None:
    prompts = [f"a photo of a {shape}" for shape in SHAPES for _ in range(32)]
    images = generate(load_bundle(checkpoint, device="cpu"), prompts, EXPERIMENT_SAMPLER)
    counts, failures = Counter(), Counter()
    for prompt, image in zip(prompts, images, strict=True):
        asked, found = prompt.split()[-1], [d.shape for d in detect(image)]
        counts["passed" if asked in found else "no object" if not found else "other shapes"] += 1
        counts["several objects"] += len(found) > 1
        if found and asked not in found:
            seen = Counter(found)
            failures[f"{asked} → " + ", ".join(f"{s}×{n}" for s, n in sorted(seen.items()))] += 1
    n = len(prompts)
    print(", ".join(f"{k} {v}/{n}" for k, v in counts.items()))
    print("; ".join(f"{k}: {v}" for k, v in failures.most_common(5)))
    if grid:  # the first 8 draws of each shape, one row per shape, 4× nearest
        rows = [np.concatenate(images[i * 32 : i * 32 + 8], axis=1) for i in range(len(SHAPES))]
        Image.fromarray(np.concatenate(rows)).resize((1024, 384), Image.NEAREST).save(grid)


if __name__ == "__main__":
    main(*sys.argv[1:3])
