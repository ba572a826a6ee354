"""Tiny training-shard folders in the ARCHITECTURE.md format, built from Shapes World.

Images come from `miro_data.synth.generate_sample`, scores from the weight-free rewards, bins
from quantile edges, exactly as `miro data reshard` lays them out — so the trainer's tests
need neither the network nor the data pipeline.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from miro_data.rewards import build_reward
from miro_data.synth import SynthConfig, generate_sample


def bin_index(scores: np.ndarray, n_bins: int) -> tuple[np.ndarray, list[float]]:
    """Quantile bin of each score, as METHOD.md: max(0, bucketize(v, edges) − 1)."""
    edges = np.quantile(scores[~np.isnan(scores)], np.linspace(0, 1, n_bins + 1))
    bins = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, n_bins - 1)
    return bins, edges.tolist()


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
    folder.mkdir(parents=True, exist_ok=True)
    cfg = SynthConfig(out=folder, n=n, size=size, seed=seed)
    samples = [generate_sample(i, cfg) for i in range(n)]
    images = [img for img, _ in samples]
    captions = [rec["caption"] for _, rec in samples]
    scores = {r: build_reward(r).score(images, captions) for r in rewards}
    bins, edges = {}, {}
    for r in rewards:
        bins[r], edges[r] = bin_index(scores[r], n_bins)
    rng = np.random.default_rng(seed)
    shards = []
    for s in range(0, n, per_shard):
        name = f"{s // per_shard:06d}.tar"
        with wds.TarWriter(str(folder / name)) as sink:
            for i in range(s, min(n, s + per_shard)):
                buf = io.BytesIO()
                Image.fromarray(images[i]).save(buf, format="PNG")
                meta = {
                    "key": f"{i:07d}",
                    "caption": captions[i],
                    "url": f"images/{i:07d}.png",
                    "source_shard": "00000.tar",
                    "edges_version": 1,
                    "source": {},
                }
                if with_rewards:
                    b = {r: int(bins[r][i]) for r in rewards}
                    if missing_every and i % missing_every == 0:
                        b[rewards[0]] = None
                    meta["scores"] = {
                        r: None if b[r] is None else float(scores[r][i]) for r in rewards
                    }
                    meta["bins"] = b
                    meta["bin_values"] = {
                        r: None if v is None else v / (n_bins - 1) for r, v in b.items()
                    }
                sample = {
                    "__key__": f"{i:07d}",
                    "png": buf.getvalue(),
                    "txt": captions[i],
                    "json": json.dumps(meta).encode(),
                }
                if txt_emb_dim:
                    length = len(captions[i].split())
                    sample["txt_emb.npy"] = _npy(
                        rng.normal(size=(length, txt_emb_dim)).astype(np.float16)
                    )
                if latent_shape:
                    sample["latent.npy"] = _npy(rng.normal(size=latent_shape).astype(np.float16))
                sink.write(sample)
        shards.append({"name": name, "count": min(n, s + per_shard) - s})
    manifest = {
        "format": "miro-shards/1",
        "rewards": list(rewards) if with_rewards else [],
        "reward_versions": {r: "1" for r in rewards} if with_rewards else {},
        "edges_version": 1,
        "n_bins": {r: n_bins for r in rewards} if with_rewards else {},
        "edges": edges if with_rewards else {},
        "shards": shards,
        "total": n,
        "where": None,
        "shuffle_seed": 0,
        "hooks": hooks or {"text": None, "vae": None},
        "created": "2026-01-01T00:00:00+00:00",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def tiny_spec(backbone: str = "unet", rewards: tuple[str, ...] = ("a", "b")) -> dict:
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
    vocab = ["<pad>", "<unk>", "a", "photo", "of", "red", "circle", "square", "two", "squares"]
    return {
        "name": f"{backbone}-micro",
        "backbone": backbone,
        "backbone_args": args,
        "conditioning": {
            "dim": 32,
            "fourier_dim": 16,
            "hidden": 32,
            "registers": 2,
            "layers": 2,
            "heads": 2,
            "pool": True,
        },
        "text": {"kind": "word", "dim": 32, "max_len": 8, "vocab": vocab},
        "image": {"space": "pixel", "resolution": 16, "channels": 3, "size": 16},
        "rewards": list(rewards),
        "edges_version": 1,
    }


def micro_config(path: Path) -> Path:
    """A registry-style JSON config of a very small UNet, for fast end-to-end tests."""
    spec = tiny_spec("unet")
    config = {k: spec[k] for k in ("backbone", "backbone_args", "conditioning")}
    config |= {
        "text": {"kind": "word", "dim": 32, "max_len": 16},
        "image": {"space": "pixel", "resolution": 16},
    }
    path.write_text(json.dumps(config))
    return path
