"""scripts/gpu-check.sh runs end to end with --dry-run on the CPU, so it is known to work
before a GPU is ever lent: every reward through the real annotate pass and the model-only
timing, `miro train` on precomputed latents, the table and a JSON with every field."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402
import gpu_train_check  # noqa: E402

REWARD_FIELDS = {"batch_size", "default_batch", "halved", "model_img_s", "e2e_img_s", "ratio", "weights_gib", "peak_gib",
                 "per_image_mib", "batch_80gb"}  # fmt: skip
TRAIN_FIELDS = {"model", "params_m", "batch_size", "resolution", "latent_shape", "precision",
                "steps_s", "img_s", "flops_per_step", "achieved_tflops", "peak_tflops", "mfu",
                "peak_known", "peak_gib"}  # fmt: skip


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_dry_run_writes_every_field_and_only_its_json(tmp_path):
    out = tmp_path / "out"
    # one thread: on a shared 2-core machine OpenMP's spinning threads slow tiny models 10×
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("HF_HOME", None)
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--dry-run", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json"]  # the work folder is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing beside --out
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["dry_run"] is True and result["device"] == "cpu"
    assert set(result["rewards"]) == set(gpu_check.REWARDS)
    for name, row in result["rewards"].items():
        assert set(row) == REWARD_FIELDS, name
        assert all(positive(row[k]) for k in ("model_img_s", "e2e_img_s", "ratio")), (name, row)
        assert row["batch_size"] == 32  # a reward's CPU default
        assert row["peak_gib"] is None  # no GPU memory on a CPU
    one = result["one_pass"]
    assert positive(one["img_s"]) and positive(one["annotate_wall_s"])
    train = result["train"]
    assert set(train) == TRAIN_FIELDS
    assert positive(train["steps_s"]) and positive(train["flops_per_step"])
    assert train["latent_shape"] == [4, 8, 8] and train["precision"] == "fp32"
    assert train["mfu"] is None and train["peak_known"] is False  # a CPU has no bf16 peak here
    for line in ("| reward | batch | model-only img/s", "all 7 in one annotate pass", "MFU n/a"):
        assert line in proc.stdout


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H200", 989e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("Tesla T4", None),  # unknown: flagged, no MFU
    ],
)
def test_bf16_peak_from_the_device_name(name, peak):
    assert gpu_check.peak_flops(name) == peak


def test_miro_360m_step_flops_are_four_backbone_passes_and_three_conditionings():
    """Forward + backward (3×) of conditioning and backbone, plus RIN's forward-only
    self-conditioning pass: ≈ 4 forwards of ≈ 166 GFLOPs (bench_train: 4.16 T multiply-adds
    per 50-step image of miro-360m)."""
    from miro_train.models import model_config
    from miro_train.spec import ModelSpec

    config = model_config("miro-360m")
    spec = ModelSpec.from_json(
        config
        | {
            "rewards": list(gpu_check.REWARDS),
            "image": config["image"] | {"channels": 4, "size": 32},
        }
    )
    one, params = gpu_train_check.step_flops(spec, 1)
    assert 355e6 < params < 365e6
    assert 4 * 150e9 < one < 4 * 190e9, one
