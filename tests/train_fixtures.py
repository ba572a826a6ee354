"""Tiny training-shard folders built from Shapes World, written by `trainshards_write.ShardWriter`.

Images come from `miro_data.synth.generate_sample`, scores from the weight-free rewards, bins
from quantile edges; the writer is the one `miro data reshard` uses — so the trainer's tests
need neither the network nor the data pipeline.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from miro_data.rewards import build_reward
from miro_data.synth import SynthConfig, generate_sample
from miro_data.trainshards import HookModels, Manifest, ManifestSource, SampleMeta, TrainSample
from miro_data.trainshards_write import ShardWriter
from miro_train.spec import BackboneSpec, ConditioningSpec, ImageSpec, ModelSpec, TextSpec


def bin_index(scores: np.ndarray, n_bins: int) -> tuple[np.ndarray, list[float]]:
    """Quantile bin of each score, as METHOD.md: max(0, bucketize(v, edges) − 1)."""
    edges = np.quantile(scores[~np.isnan(scores)], np.linspace(0, 1, n_bins + 1))
    bins = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, n_bins - 1)
    return bins, edges.tolist()


def _meta(i: int, caption: str, size: int, scores: dict, bins: dict, n_bins: int) -> SampleMeta:
    """Sample i's json; `bins` holds its level per reward (None: missing)."""
    return SampleMeta(
        key=f"{i:07d}",
        caption=caption,
        url=f"images/{i:07d}.png",
        source_shard="00000.tar",
        edges_version=1,
        scores={r: None if b is None else float(scores[r][i]) for r, b in bins.items()},
        bins=bins,
        bin_values={r: None if b is None else b / (n_bins - 1) for r, b in bins.items()},
        source={},
        image_size=(size, size),
    )


def write_shards(
    folder: Path,
    n: int = 48,
    *,
    rewards: tuple[str, ...] = ("sharpness", "noise"),
    n_bins: int = 8,
    per_shard: int = 24,
    size: int = 32,
    seed: int = 0,
    missing_every: int = 5,
    with_rewards: bool = True,
    txt_emb_dim: int | None = None,
    latent_shape: tuple[int, int, int] | None = None,
    hooks: dict | None = None,
) -> Path:
    """Write `n` Shapes World samples into shards of `per_shard`; returns the folder.

    Every `missing_every`-th sample gets `null` for the first reward (the "missing" case).
    """
    cfg = SynthConfig(out=folder, n=n, size=size, seed=seed)
    samples = [generate_sample(i, cfg) for i in range(n)]
    images = [img for img, _ in samples]
    captions = [rec["caption"] for _, rec in samples]
    carried = rewards if with_rewards else ()
    scores = {r: build_reward(r).score(images, captions) for r in carried}
    bins, edges = {}, {}
    for r in carried:
        bins[r], edges[r] = bin_index(scores[r], n_bins)
    rng = np.random.default_rng(seed)
    with ShardWriter(folder, per_shard) as sink:
        for i in range(n):
            levels = {r: int(bins[r][i]) for r in carried}
            if carried and missing_every and i % missing_every == 0:
                levels[carried[0]] = None
            buf = io.BytesIO()
            Image.fromarray(images[i]).save(buf, format="PNG")
            txt_emb = latent = None
            if txt_emb_dim:
                length = len(captions[i].split())
                txt_emb = rng.normal(size=(length, txt_emb_dim)).astype(np.float16)
            if latent_shape:
                latent = rng.normal(size=latent_shape).astype(np.float16)
            meta = _meta(i, captions[i], size, scores, levels, n_bins)
            sink.write(TrainSample(meta, captions[i], buf.getvalue(), "png", txt_emb, latent))
        sink.finish(
            Manifest(
                rewards=carried,
                reward_versions=dict.fromkeys(carried, "1"),
                edges_version=1,
                n_levels=dict.fromkeys(carried, n_bins),
                edges=edges,
                shards=sink.shards,
                where=None,
                shuffle_seed=0,
                hooks=HookModels(**(hooks or {})),
                source=ManifestSource(shards="Shapes World (tests/train_fixtures.py)", db=""),
                created="2026-01-01T00:00:00+00:00",
            )
        )
    return folder


def tiny_spec(
    backbone: str = "unet",
    rewards: tuple[str, ...] = ("a", "b"),
    *,
    vocab: tuple[str, ...] | None = None,
    pool: bool = True,
) -> ModelSpec:
    """A resolved model spec small enough to run in milliseconds (word text, 16 px pixels)."""
    args = {
        "unet": {"channels": [16, 32], "blocks": 1, "attn_levels": [1], "heads": 2, "groups": 8},
        "dit": {"patch": 4, "width": 32, "depth": 2, "heads": 2},
        "rin": {
            "patch": 4,
            "data_dim": 32,
            "latents": 8,
            "latent_dim": 32,
            "blocks": 2,
            "layers": 1,
            "rw_heads": 2,
            "heads": 2,
            "self_conditioning": True,
        },
    }[backbone]
    words = ("<pad>", "<unk>", "a", "photo", "of", "red", "circle", "square", "two", "squares")
    return ModelSpec(
        name=f"{backbone}-micro",
        backbone=BackboneSpec.of(backbone, args),
        conditioning=ConditioningSpec(
            dim=32, fourier_dim=16, hidden=32, registers=2, layers=2, heads=2, pool=pool
        ),
        text=TextSpec("word", dim=32, max_len=8, vocab=vocab or words),
        image=ImageSpec("pixel", resolution=16, channels=3, size=16),
        rewards=rewards,
        edges_version=1,
    )


def micro_config(path: Path, resolution: int = 16) -> Path:
    """A registry-style JSON config of a very small UNet, for fast end-to-end tests."""
    spec = tiny_spec("unet").to_json()
    config = {k: spec[k] for k in ("backbone", "backbone_args", "conditioning")}
    config |= {
        "text": {"kind": "word", "dim": 32, "max_len": 16},
        "image": {"space": "pixel", "resolution": resolution},
    }
    path.write_text(json.dumps(config))
    return path
