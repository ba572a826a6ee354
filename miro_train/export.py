"""Stage `miro export`: a run's checkpoint as a diffusers-style folder `MiroPipeline` loads,
with the model's frozen text encoder, tokenizer and VAE as components when it has them.

Written into a hidden staging folder beside OUT and renamed into place when complete (an
existing OUT is replaced only with `--overwrite`). See miro_train/pipeline.py for the layout.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miro_data.checks import check_choice
from miro_data.common import MiroError
from miro_data.hub import allow_download_field
from miro_data.options import opt
from miro_data.processes import owns_output
from miro_data.trainshards import read_manifest
from miro_train.checkpoint import read_meta
from miro_train.sampler import WEIGHTS, Weights

if TYPE_CHECKING:
    from miro_train.sample import ModelBundle

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
    allow_download: bool = allow_download_field("the model's text encoder or VAE")

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


def _encoders(bundle: ModelBundle) -> dict[str, Any]:
    """The frozen text encoder + tokenizer and the VAE the model reads through, as pipeline
    components; the VAE's config gets the model's latent normalisation (diffusers' SDXL
    convention: model input = (z − latents_mean) · scaling_factor / latents_std)."""
    spec, codec = bundle.model.spec, bundle.codec
    out: dict[str, Any] = {}
    if spec.text.kind == "hf":
        encoder = codec.encoder()
        out |= {"text_encoder": encoder.model, "tokenizer": encoder.tokenizer}
    if spec.image.space == "latent":
        assert codec.vae is not None and spec.image.stats is not None  # a complete latent spec
        vae = codec.vae.vae
        vae.register_to_config(latents_mean=list(spec.image.stats.mean),
                               latents_std=list(spec.image.stats.std),
                               scaling_factor=1.0, shift_factor=None)  # fmt: skip
        out["vae"] = vae
    return out


@owns_output  # one process writes an output folder at a time
def export(cfg: ExportConfig) -> Path:
    """Write the pipeline folder; returns OUT."""
    from miro_train.pipeline import MiroPipeline, MiroTransformer, flow_scheduler
    from miro_train.sample import load_bundle

    if cfg.out.exists() and not cfg.overwrite:
        raise MiroError(f"{cfg.out} already exists: choose another OUT or pass --overwrite")
    if cfg.out.exists() and not (cfg.out / "model_index.json").is_file():
        raise MiroError(f"{cfg.out} is not a pipeline folder (no model_index.json): left alone")
    bundle = load_bundle(cfg.run, "cpu", cfg.weights, cfg.allow_download)
    spec = bundle.model.spec
    transformer = MiroTransformer(spec=spec.to_json(), caption_dropout=bundle.caption_dropout)
    transformer.net.load_state_dict(bundle.model.state_dict(), strict=True)
    pipe = MiroPipeline(transformer.eval(), flow_scheduler(), **_encoders(bundle))
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
