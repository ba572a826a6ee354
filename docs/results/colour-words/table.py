"""Tabulate `miro eval text-reliance --out` records: one row per run and step, one column per
swap (the mean rise over t in %, with its 95 % interval over the samples).

Usage: python table.py RESULTS_DIR > table.md   (every *.json there written by `--out`; a
row is named by the run folder its checkpoint lies in)
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

SWAPS = ("colour", "shape", "caption")


def main(folder: Path) -> None:
    rows: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    samples: dict[str, int] = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if "results" not in record:
            continue  # another record (sampled.py's)
        for r in record["results"]:
            run_dir = Path(r["checkpoint"]).parent.parent  # RUNS/RUN/checkpoints/step_N
            run = "/".join(part for part in (run_dir.parent.name, run_dir.name) if part)
            swap = r["swap"]
            cell = f"{100 * r['mean_rise']:.2f} [{100 * r['low']:.2f}, {100 * r['high']:.2f}]"
            rows[run, r["step"]][swap] = cell
            samples[swap] = r["samples"]
    head = " | ".join(f"{s} words ({samples.get(s, '?')} samples)" if s != "caption"
                      else f"whole caption ({samples.get(s, '?')})" for s in SWAPS)  # fmt: skip
    print(f"| run | step | {head} |")
    print("|---|---|" + "---|" * len(SWAPS))
    for (run, step), cells in sorted(rows.items()):
        print(f"| {run} | {step:,} | " + " | ".join(cells.get(s, "") for s in SWAPS) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
