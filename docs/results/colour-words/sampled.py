"""Colour given shape, sampled, for the checkpoints `table.py` reads: does a model whose loss
reads the colour words draw the asked colours? (run from the repo root)

Usage: python docs/results/colour-words/sampled.py OUT.json LABEL=CHECKPOINT[@GUIDANCE] ...

Each checkpoint draws every colour × shape prompt 8 times (`../colour-probe`'s prompts and
held-out noise, sampler seed 1, the experiments' sampler: 25 Euler steps, s⁺ all high vs
s⁻ all low) at ω = GUIDANCE (default 3; a baseline has no reward guidance) and is read by the
Shapes World detector. Figures with 95 % bootstrap intervals over prompts and draws.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

from miro_train.experiments.common import EXPERIMENT_SAMPLER
from miro_train.sample import generate, load_bundle
from miro_train.stats import bootstrap, fmt

_spec = importlib.util.spec_from_file_location(
    "probe", Path(__file__).parent.parent / "colour-probe" / "probe.py"
)
probe = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(probe)  # type: ignore[union-attr]
SHOWN = ("shape", "colour given shape", "colour anywhere", "share yellow")


def main(out: Path, items: list[str]) -> None:
    table = {}
    for item in items:
        label, _, where = item.rpartition("=")  # labels may hold "="
        path, _, guidance = where.partition("@")
        settings = replace(EXPERIMENT_SAMPLER, seed=1, guidance=float(guidance or 3.0))
        bundle = load_bundle(path, "cpu", "ema", False)
        estimates = bootstrap(probe.measure(generate(bundle, probe.PROMPTS, settings)),
                              probe.PROMPTS)  # fmt: skip
        table[label] = {"checkpoint": path, "guidance": settings.guidance} | {
            k: e.to_dict() for k, e in estimates.items()
        }
        print(f"| {label} | " + " | ".join(fmt(estimates[k], 100) for k in SHOWN) + " |",
              flush=True)  # fmt: skip
    out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
