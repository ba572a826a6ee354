"""Does guidance on the caption make the models follow colour words? (README "Results"; run
from the repo root: python docs/results/colour-probe/caption_guidance.py RUNS OUT.json.)

probe.py's prompts, noise and measures, sampled with other contrasts: against the caption
`a photo` (the corpus's caption corruption replaces whole captions with it, so both models
learned it as a caption that says nothing), alone or with MIRO's s⁻. miro's sampler has no
such contrast, so this script builds it from sample.py's parts.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from probe import PROMPTS, SEEDS, STEP, measure

from miro_train.conditioning import ConditioningInput
from miro_train.flow import euler, guided_velocity
from miro_train.sample import _noise, _vectors, load_bundle
from miro_train.sampler import draw_numbers, noise_seed
from miro_train.stats import bootstrap, fmt

NULL = "a photo"


@torch.no_grad()
def sample(bundle, omega, neg_text, neg_rewards):
    model, codec, rewards = bundle.model, bundle.codec, bundle.rewards
    n = len(PROMPTS)
    seeds = [noise_seed(1, p, k) for p, k in zip(PROMPTS, draw_numbers(PROMPTS), strict=True)]
    pos = _vectors(dict.fromkeys(rewards, 1.0), rewards, n)
    neg = _vectors(dict.fromkeys(rewards, neg_rewards), rewards, n)
    out = []
    for i in range(0, n, 96):
        chunk = PROMPTS[i : i + 96]
        m = len(chunk)
        noise = _noise(seeds[i : i + 96], codec.shape)
        text, mask = codec.text(chunk)
        ntext, nmask = codec.text([NULL] * m if neg_text else chunk)
        cp = model.condition(ConditioningInput(pos[i : i + m], text, mask))
        cn = model.condition(ConditioningInput(neg[i : i + m], ntext, nmask)) if omega else None
        out.append(codec.to_images(euler(guided_velocity(model, cp, cn, omega), noise, 25)))
    return np.concatenate(out)


VARIANTS = [  # label, arm, omega, negative uses null caption, s⁻ value
    ("baseline, no guidance", "baseline", 0.0, False, 0.0),
    ("baseline, caption guidance ω=2", "baseline", 2.0, True, 0.0),
    ("baseline, caption guidance ω=5", "baseline", 5.0, True, 0.0),
    ("MIRO, reward guidance ω=3 (default)", "miro", 3.0, False, 0.0),
    ("MIRO, caption guidance ω=3 (s⁻ = s⁺)", "miro", 3.0, True, 1.0),
    ("MIRO, caption+reward guidance ω=3", "miro", 3.0, True, 0.0),
]
RUNS, OUT = Path(sys.argv[1]), Path(sys.argv[2])
table = {}
for label, arm, omega, neg_text, negr in VARIANTS:
    per_seed = []
    for seed in SEEDS:
        b = load_bundle(
            RUNS / f"s{seed}" / arm / f"seed-{seed}" / "checkpoints" / STEP, "cpu", "ema", False
        )
        per_seed.append(measure(sample(b, omega, neg_text, negr)))
    stacked = {k: np.stack([m[k] for m in per_seed]) for k in per_seed[0]}
    est = bootstrap(stacked, PROMPTS)
    table[label] = {k: e.to_dict() for k, e in est.items()}
    print(
        f"| {label} | "
        + " | ".join(
            fmt(est[k], 100)
            for k in ("shape", "colour given shape", "colour anywhere", "share yellow")
        )
        + " |",
        flush=True,
    )
OUT.write_text(json.dumps(table, indent=1))
