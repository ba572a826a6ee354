"""Stage `miro data synth`: generate the Shapes World corpus as image files plus a URL list.

Each sample is drawn from its own RNG stream (seed, index), so a corpus is deterministic for a
seed and any sample can be regenerated alone. Images are written as PNG under OUT/images/;
OUT/urls.parquet lists them with relative URLs (the download stage serves them over a local
HTTP server) and the generator's records, which are for analysis only: no reward reads them.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image
from scipy import ndimage

from miro_data.checks import check_finite, check_int, check_positive, check_seed
from miro_data.common import MiroError, atomic_path, dumps_json, progress_bar
from miro_data.detector import check
from miro_data.options import Parser, format_key_values, key_values, opt
from miro_data.processes import owns_output
from miro_data.shapes import (
    CATEGORIES,
    COLORS,
    COUNT_WORDS,
    SHAPES,
    Prompt,
    Scene,
    caption_for,
    render,
    sample_prompt,
    sample_scene,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Degradations:
    """Per-sample probabilities of each corruption (SHAPES_WORLD.md defaults)."""

    blur: float = 0.3
    noise: float = 0.3
    contrast: float = 0.2
    jpeg: float = 0.2
    caption: float = 0.3

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            check_finite(f"degradation {name}", getattr(self, name), 0, 1)

    @classmethod
    def parse(cls, text: str, option: str = "--degrade") -> Degradations:
        """'blur=0.5,jpeg=0' → Degradations (others at their defaults); 'none' turns every
        corruption off. The ranges are checked by the dataclass."""
        if text.strip().lower() == "none":
            return cls(0, 0, 0, 0, 0)

        def check_name(name: str) -> None:
            if name not in cls.__dataclass_fields__:
                known = ", ".join(cls.__dataclass_fields__)
                raise MiroError(f"{option}: unknown degradation {name!r}; known: {known}")

        rates = key_values(text, option, check_key=check_name)
        return cls(**{name: rate for name, rate in rates.items() if rate is not None})

    def format(self) -> str:
        """The text `parse` reads back: '' for the defaults, else every rate."""
        if self == Degradations():
            return ""
        return format_key_values(asdict(self))


DEGRADATIONS = Parser(Degradations.parse, Degradations.format)


@dataclass(frozen=True)
class SynthConfig:
    """What `miro data synth` generates."""

    out: Path = field(metadata=opt(help="Folder for images/ and urls.parquet."))
    n: int = field(default=20_000, metadata=opt(help="Number of samples."))
    size: int = field(default=32, metadata=opt(help="Image side in pixels."))
    seed: int = field(default=0, metadata=opt())
    degradations: Degradations = field(
        default_factory=Degradations,
        metadata=opt("--degrade", parser=DEGRADATIONS, help="Corruption rates, e.g. "
                     "'blur=0.3,noise=0.3,contrast=0.2,jpeg=0.2,caption=0.3' (these are the "
                     "defaults), or 'none'."),
    )  # fmt: skip

    def __post_init__(self) -> None:
        check_positive("--n", self.n)
        check_int("--size", self.size, 16)
        check_seed("--seed", self.seed)


# ----------------------------------------------------------------------------
# Image and caption corruptions
# ----------------------------------------------------------------------------


def degrade_image(
    img: np.ndarray, rates: Degradations, rng: np.random.Generator
) -> tuple[np.ndarray, list[dict]]:
    """Blur, low contrast, noise, JPEG — each independently, in that order."""
    size = img.shape[0]
    out: np.ndarray = img.astype(np.float32)  # float64 once a float64 term is added
    applied: list[dict] = []
    if rng.random() < rates.blur:
        sigma = float(rng.uniform(0.5, 1.5)) * size / 32
        out = ndimage.gaussian_filter(out, sigma=(sigma, sigma, 0))
        applied.append({"kind": "blur", "sigma": round(sigma, 4)})
    if rng.random() < rates.contrast:
        amount = float(rng.uniform(0.4, 0.7))
        out = out * (1 - amount) + out.mean() * amount
        applied.append({"kind": "contrast", "amount": round(amount, 4)})
    if rng.random() < rates.noise:
        sigma = float(rng.uniform(8, 30))
        out = out + rng.normal(0, sigma, out.shape)
        applied.append({"kind": "noise", "sigma": round(sigma, 4)})
    out_u8 = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if rng.random() < rates.jpeg:
        quality = int(rng.integers(10, 41))
        buf = io.BytesIO()
        Image.fromarray(out_u8).save(buf, format="JPEG", quality=quality)
        out_u8 = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        applied.append({"kind": "jpeg", "quality": quality})
    return out_u8, applied


def corrupt_caption(caption: str, rng: np.random.Generator) -> tuple[str, dict]:
    """Swap one colour, shape or count word for a wrong one; one time in five, say only 'a photo'."""
    words = caption.split()
    vocab = [(COLORS, ""), (SHAPES, ""), (tuple(COUNT_WORDS), ""), (SHAPES, "s")]
    slots = [
        (i, choices, suffix)
        for i, w in enumerate(words)
        for choices, suffix in vocab
        if w in {c + suffix for c in choices}
    ]
    if not slots or rng.random() < 0.2:
        return "a photo", {"kind": "caption", "mode": "drop"}
    i, choices, suffix = slots[int(rng.integers(len(slots)))]
    old = words[i]
    new = str(rng.choice([c for c in choices if c + suffix != old])) + suffix
    words[i] = new
    return " ".join(words), {"kind": "caption", "mode": "swap", "from": old, "to": new}


# ----------------------------------------------------------------------------
# One sample
# ----------------------------------------------------------------------------


def clean_sample(prompt: Prompt, size: int, rng: np.random.Generator) -> tuple[Scene, np.ndarray]:
    """A scene for the prompt whose clean render passes the prompt's own check.

    At 32 px a small circle can rasterise into a near-square; such draws are redrawn, which is
    what makes 'clean renders pass 100 %' hold by construction.
    """
    for _ in range(1000):
        scene = sample_scene(prompt, size, rng)
        if scene is None:
            continue
        img = render(scene)
        if check(prompt, img):
            return scene, img
    raise MiroError(f"could not place {caption_for(prompt)!r} on a {size}px canvas")


def generate_sample(index: int, cfg: SynthConfig) -> tuple[np.ndarray, dict]:
    """Image and record of sample `index`; depends only on (seed, index, size, rates)."""
    rng = np.random.default_rng([cfg.seed, index])
    category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    prompt = sample_prompt(category, rng)
    scene, img = clean_sample(prompt, cfg.size, rng)
    img, applied = degrade_image(img, cfg.degradations, rng)
    clean_caption = caption_for(prompt)
    caption = clean_caption
    if rng.random() < cfg.degradations.caption:
        caption, record = corrupt_caption(clean_caption, rng)
        applied.append(record)
    objects = [
        {
            "shape": o.shape,
            "color": o.color,
            "cx": round(o.cx, 3),
            "cy": round(o.cy, 3),
            "r": round(o.r, 3),
        }
        for o in scene.objects
    ]
    record = {
        "index": index,
        "caption": caption,
        "clean_caption": clean_caption,
        "category": category,
        "degradations": json.dumps(applied),
        "objects": json.dumps(objects),
    }
    return img, record


# ----------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------


@owns_output  # one process writes an output folder at a time
def synth(cfg: SynthConfig) -> Path:
    """Write cfg.out/images/*.png and cfg.out/urls.parquet; returns the URL list's path."""
    images = cfg.out / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    with progress_bar("img") as bar:
        task = bar.add_task("synth", total=cfg.n)
        for i in range(cfg.n):
            img, record = generate_sample(i, cfg)
            name = f"{i:07d}.png"
            with atomic_path(images / name) as tmp:
                Image.fromarray(img).save(tmp, format="PNG")
            records.append({"url": f"images/{name}", **record})
            bar.advance(task)
    url_list = cfg.out / "urls.parquet"
    with atomic_path(url_list) as tmp:
        pl.DataFrame(records).write_parquet(tmp)
    meta = {**asdict(cfg), "out": str(cfg.out)}
    with atomic_path(cfg.out / "synth.json") as tmp:
        tmp.write_text(dumps_json(meta, indent=2))
    log.info("wrote %d images of %dpx and %s", cfg.n, cfg.size, url_list)
    return url_list
