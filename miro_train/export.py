"""Stage `miro export`: a run's checkpoint as a diffusers-style folder `MiroPipeline` loads.

Written into a hidden staging folder beside OUT and renamed into place when complete (an
existing OUT is replaced only with `--overwrite`). See miro_train/pipeline.py for the layout.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miro_data.checks import check_choice
from miro_data.common import MiroError
from miro_data.options import opt
from miro_data.processes import owns_output
from miro_data.trainshards import read_manifest
from miro_train.checkpoint import read_meta
from miro_train.sampler import WEIGHTS, Weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportConfig:
    """Which run (or checkpoint), which weights, and the folder to write."""

    run: Path = field(metadata=opt(help="A run folder (its latest checkpoint) or a checkpoint."))
    out: Path = field(metadata=opt(help="New folder for the pipeline."))
    weights: Weights = field(default="ema", metadata=opt(help="The EMA or the trained weights."))
    overwrite: bool = field(
        default=False, metadata=opt("--overwrite", help="Replace a pipeline already in OUT.")
    )

    def __post_init__(self) -> None:
        check_choice("--weights", self.weights, WEIGHTS)


def _levels(checkpoint: Path) -> dict[str, Any]:
    """The bins the run was trained on, from its shards' manifest while that still exists."""
    shards = read_meta(checkpoint).get("config", {}).get("shards")
    try:
        manifest = read_manifest(shards) if shards else None
    except MiroError:
        manifest = None
    if manifest is None:
        return {}
    return {"n_levels": dict(manifest.n_levels), "edges": dict(manifest.edges)}


@owns_output  # one process writes an output folder at a time
def export(cfg: ExportConfig) -> Path:
    """Write the pipeline folder; returns OUT."""
    from miro_train.pipeline import MiroPipeline, MiroTransformer, flow_scheduler
    from miro_train.sample import load_bundle

    if cfg.out.exists() and not cfg.overwrite:
        raise MiroError(f"{cfg.out} already exists: choose another OUT or pass --overwrite")
    if cfg.out.exists() and not (cfg.out / "model_index.json").is_file():
        raise MiroError(f"{cfg.out} is not a pipeline folder (no model_index.json): left alone")
    bundle = load_bundle(cfg.run, "cpu", cfg.weights)
    spec = bundle.model.spec
    if spec.text.kind != "word" or spec.image.space != "pixel":
        raise MiroError(
            f"{bundle.checkpoint}: exporting a model with a {spec.text.kind} text encoder in "
            f"{spec.image.space} space is not supported yet (word vocabulary, pixel space only)"
        )
    transformer = MiroTransformer(spec=spec.to_json())
    transformer.net.load_state_dict(bundle.model.state_dict(), strict=True)
    pipe = MiroPipeline(transformer.eval(), flow_scheduler())
    pipe.miro_info = {
        "source": {"checkpoint": str(bundle.checkpoint.resolve()), "step": bundle.step,
                   "weights": cfg.weights},
        **_levels(bundle.checkpoint),
    }  # fmt: skip
    staging = cfg.out.with_name(f".{cfg.out.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        pipe.save_pretrained(staging)
        if cfg.out.exists():
            shutil.rmtree(cfg.out)
        staging.rename(cfg.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported %s (step %d, %s weights) to %s", bundle.checkpoint, bundle.step,
             cfg.weights, cfg.out)  # fmt: skip
    return cfg.out
