"""benchmarks/gpu_experiments.py end to end on the CPU at a tiny budget, so the script a lent GPU
runs is known to work before one is lent: every arm × seed trained in its own process, the
library's compare over the seeds, the summary JSON and the packed small files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_two_seeds_train_at_once_then_one_compare_reports_them(pipeline, tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_experiments.py"),
         "--exp", f"tiny={pipeline.train}:2:1:8", "--out", str(out), "--seeds", "0,1",
         "--rewards", "shapes_alignment,noise",
         "--prompts", "1", "--images-per-prompt", "1", "--sampler-steps", "2",
         "--train-deadline", "400", "--deadline", "500"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "gpu_experiments.json").read_text())
    tiny = summary["experiments"]["tiny"]
    assert tiny["finished"] and tiny["evaluated"] and not tiny["truncated"]
    assert tiny["last_steps"] == [2, 2, 2, 2]  # baseline 0, 1 and MIRO 0, 1
    results = json.loads((out / "tiny" / "results.json").read_text())
    assert results["train_seeds"] == [0, 1]
    assert [e["step"] for e in results["evaluations"]["miro"]] == [1, 2]
    assert results["evaluations"]["miro"][-1]["geneval"]["n_images"] == 2 * 6
    with tarfile.open(out / "tiny.tgz") as tar:
        names = tar.getnames()
    assert "tiny/results.json" in names and "tiny/per_image.jsonl" in names
    assert not any("checkpoints" in n or n.endswith(".safetensors") for n in names)
