"""The Generate page's model: one image per request from a loaded checkpoint.

Wraps `miro_train.sample`: `load_bundle` once at start, `SamplerSettings` for the presets and
per-reward targets (the same parser and checks as `miro sample`), `generate` for the image,
and best-of-N with a reward from the registry. Requests are served one at a time (a lock):
the model is shared and a CPU runs one generation at a full speed better than two at half.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from PIL import Image

from miro_data.common import MiroError
from miro_serve.config import BadRequest

if TYPE_CHECKING:
    from miro_train.sampler import Weights

log = logging.getLogger(__name__)

LIMITS = {"steps": (1, 250), "seed": (0, 2**31 - 1), "best_of": (1, 16)}
GUIDANCE = (0.0, 30.0)
MAX_PROMPT = 500


@dataclass(frozen=True)
class Request:
    """One image to draw; built from the query string by `parse_request`."""

    prompt: str
    preset: str = "high"
    target: str = ""  # 'reward=value,…' over the sliders
    negative: str = ""
    guidance: float = 3.0
    guidance_interval: tuple[float, float] = (0.0, 1.0)  # noise levels t that ω applies at
    caption_guidance: float = 0.0  # ω_c: models trained with caption dropout only
    steps: int = 25
    seed: int = 0
    best_of: int = 1
    select_by: str = ""


def _number(params: dict[str, str], name: str, default: float, kind: type) -> Any:
    text = params.get(name, "")
    if text == "":
        return default
    try:
        value = kind(text)
    except ValueError:
        raise BadRequest(
            f"{name} must be a {'whole ' if kind is int else ''}number, not {text!r}"
        ) from None
    lo, hi = LIMITS.get(name, GUIDANCE)
    if not (lo <= value <= hi):  # NaN fails too
        raise BadRequest(f"{name} must be between {lo:g} and {hi:g}, not {text}")
    return value


def _interval(params: dict[str, str]) -> tuple[float, float]:
    from miro_train.sampler import check_interval

    text = params.get("guidance_interval", "").strip()
    if text == "":
        return (0.0, 1.0)
    try:
        values = tuple(float(part) for part in text.split(","))
        check_interval("guidance_interval", values)
    except ValueError:
        raise BadRequest(f"guidance_interval must be two numbers LO,HI, not {text!r}") from None
    except MiroError as err:
        raise BadRequest(str(err)) from None
    low, high = values
    return (low, high)


def parse_request(params: dict[str, str]) -> Request:
    """A Request from query parameters, every value checked (targets are checked by the model)."""
    prompt = params.get("prompt", "").strip()
    if not prompt:
        raise BadRequest("write a prompt")
    if len(prompt) > MAX_PROMPT:
        raise BadRequest(f"the prompt is longer than {MAX_PROMPT} characters")
    best_of = _number(params, "best_of", 1, int)
    select_by = params.get("select_by", "").strip()
    if best_of > 1 and not select_by:
        raise BadRequest("best-of-N needs a reward to select by")
    return Request(
        prompt=prompt,
        preset=params.get("preset", "").strip() or "high",
        target=params.get("target", ""),
        negative=params.get("negative", ""),
        guidance=_number(params, "guidance", 3.0, float),
        guidance_interval=_interval(params),
        caption_guidance=_number(params, "caption_guidance", 0.0, float),
        steps=_number(params, "steps", 25, int),
        seed=_number(params, "seed", 0, int),
        best_of=best_of,
        select_by=select_by if best_of > 1 else "",
    )


class Generator:
    """A checkpoint loaded for the life of the server."""

    def __init__(
        self, run: Path, device: str = "cpu", weights: str = "ema", allow_download: bool = False
    ) -> None:
        from miro_train.sample import load_bundle

        self.bundle = load_bundle(run, device, weights, allow_download)
        self.allow_download = allow_download
        self._lock = threading.Lock()
        self._scorers: dict[str, Any] = {}
        log.info("Generate: %s (step %d)", self.bundle.checkpoint, self.bundle.step)

    @property
    def rewards(self) -> list[str]:
        return self.bundle.rewards

    def info(self) -> dict[str, Any]:
        spec = self.bundle.model.spec
        return {
            "checkpoint": str(self.bundle.checkpoint),
            "step": self.bundle.step,
            "weights": self.bundle.weights,
            "rewards": self.rewards,
            "caption_dropout": self.bundle.caption_dropout,
            "model": spec.name,
            "resolution": spec.image.resolution,
        }

    def _scorer(self, name: str) -> Any:
        from miro_data.rewards import RewardContext, build_reward

        if name not in self._scorers:
            try:
                ctx = RewardContext(allow_download=self.allow_download)
                self._scorers[name] = build_reward(name, ctx)
            except MiroError as err:
                raise BadRequest(f"select by {name!r}: {err}") from None
        return self._scorers[name]

    def make(self, req: Request) -> tuple[bytes, dict[str, Any]]:
        """(PNG bytes, manifest row) of one image, best of `req.best_of` candidates."""
        from miro_train.sample import generate, provenance
        from miro_train.sampler import SamplerSettings

        try:
            settings = SamplerSettings(
                steps=req.steps, guidance=req.guidance, guidance_interval=req.guidance_interval,
                caption_guidance=req.caption_guidance, preset=req.preset, target=req.target,
                negative=req.negative, seed=req.seed, batch_size=req.best_of,
                weights=cast("Weights", self.bundle.weights),
            )  # fmt: skip
            row = {"prompt": req.prompt, "preset": req.preset, **provenance(self.bundle, settings)}
        except MiroError as err:  # the CLI's wording names options: --target → target
            raise BadRequest(str(err).removeprefix("--")) from None
        scorer = self._scorer(req.select_by) if req.best_of > 1 else None
        prompts = [req.prompt] * req.best_of  # draws 0 … N-1 of the prompt, as `miro sample`'s
        start = time.perf_counter()
        with self._lock:
            images = generate(self.bundle, prompts, settings)
            score, pick = math.nan, 0
            if scorer is not None:
                scores = np.asarray(scorer.score(list(images), prompts), float)
                if not np.isnan(scores).all():
                    pick = int(np.nanargmax(scores))
                    score = float(scores[pick])
        row["draw"] = pick
        if req.best_of > 1:
            row |= {"best_of": req.best_of, "select_by": req.select_by,
                    "score": None if math.isnan(score) else score}  # fmt: skip
        row["seconds"] = round(time.perf_counter() - start, 3)
        return _png(images[pick]), row


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()
