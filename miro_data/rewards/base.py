"""The reward interface and its registry.

A reward scores (image, caption) pairs, higher is better. Images arrive decoded once, as
(H, W, 3) uint8 RGB arrays of any size; each reward does its own preprocessing. A reward's
`version` changes whenever its scores would: weight-free rewards bump it by hand, learned
rewards use a hash of their checkpoint and of every other file and option their scores depend
on (configs, tokenizers, preprocessing), so scores of different models never share a column.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from miro_data.checks import check_identifier
from miro_data.common import MiroError

log = logging.getLogger(__name__)


class Reward(ABC):
    """Scores batches of (image, caption) pairs; one float per pair, NaN where undefined."""

    name: str = ""
    version: str = "1"
    batch_size: int = 256

    @abstractmethod
    def score(self, images: Sequence[np.ndarray], captions: Sequence[str]) -> np.ndarray:
        """(n,) float64 scores for n images (each (H, W, 3) uint8) and their captions."""

    def close(self) -> None:  # noqa: B027 — optional hook
        """Release models or files; called once when annotation ends."""


# ----------------------------------------------------------------------------
# Scoring a batch: chunk by the reward's batch size, halve on OOM, isolate failing samples
# ----------------------------------------------------------------------------


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or "out of memory" in str(err).lower()


def _score_checked(
    reward: Reward, images: Sequence[np.ndarray], captions: Sequence[str]
) -> np.ndarray:
    values = np.asarray(reward.score(images, captions), dtype=np.float64).reshape(-1)
    if len(values) != len(images):
        raise ValueError(f"returned {len(values)} scores for {len(images)} images")
    return values


def score_all(
    reward: Reward, images: Sequence[np.ndarray], captions: Sequence[str]
) -> tuple[np.ndarray, list[str | None]]:
    """Scores for every pair and, per pair, None or the reason it could not be scored."""
    values = np.full(len(images), np.nan)
    errors: list[str | None] = [None] * len(images)
    start = 0
    while start < len(images):
        stop = min(start + max(1, reward.batch_size), len(images))
        try:
            values[start:stop] = _score_checked(reward, images[start:stop], captions[start:stop])
        except Exception as err:
            if _is_oom(err) and stop - start > 1:
                reward.batch_size = max(1, (stop - start) // 2)
                log.warning("%s: out of memory, batch size now %d", reward.name, reward.batch_size)
                continue
            # One bad sample must not sink its batch: score one by one to find it.
            for i in range(start, stop):
                try:
                    values[i] = _score_checked(reward, images[i : i + 1], captions[i : i + 1])[0]
                except Exception as one_err:
                    errors[i] = f"{type(one_err).__name__}: {one_err}"[:500]
        start = stop
    return values, errors


@dataclass
class RewardContext:
    """What a reward factory may use: device, autocast, per-reward options, a shared cache.

    `cache` lets rewards share loaded models within one process (e.g. `clip` and `aesthetic`
    encoding images once with the same CLIP tower). `allow_download`: weights missing from
    the local Hugging Face cache are fetched from the Hub before the reward is built.
    """

    device: str = "cpu"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (autocast on CUDA only)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    cache: dict[Any, Any] = field(default_factory=dict)
    allow_download: bool = False

    def options_for(self, name: str) -> dict[str, Any]:
        return dict(self.options.get(name, {}))


@dataclass(frozen=True)
class WeightStatus:
    """Where a reward's weights are looked for, and whether they are there."""

    where: str
    available: bool


@dataclass(frozen=True)
class RewardSpec:
    """A registry entry: how to build a reward and how to tell whether it can be built here."""

    name: str
    summary: str
    factory: Callable[[RewardContext], Reward]
    weights: Callable[[RewardContext], list[WeightStatus]] | None = None
    # fetches the weights missing from the cache into it (`allow_download`)
    download: Callable[[RewardContext], None] | None = None

    @property
    def learned(self) -> bool:
        return self.weights is not None


REGISTRY: dict[str, RewardSpec] = {}


def register(spec: RewardSpec) -> RewardSpec:
    check_identifier(spec.name, "reward name")
    REGISTRY[spec.name] = spec
    return spec


def _load_plugin(target: str, ctx: RewardContext) -> Reward:
    """`package.module:ClassName` → an instance, built with the context when it accepts one."""
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise MiroError(f"cannot load reward {target!r}: {err}") from None
    if not (isinstance(cls, type) and issubclass(cls, Reward)):
        raise MiroError(f"{target} is not a subclass of miro_data.rewards.Reward")
    try:
        reward = cls(ctx)  # type: ignore[call-arg]
    except TypeError:
        reward = cls()
    check_identifier(reward.name, "reward name")
    return reward


def build_reward(name: str, ctx: RewardContext | None = None) -> Reward:
    """A registered reward by name, or a user reward given as `module:Class`."""
    ctx = ctx or RewardContext()
    if ":" in name:
        return _load_plugin(name, ctx)
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise MiroError(f"unknown reward {name!r}; registered rewards: {known} (or module:Class)")
    spec = REGISTRY[name]
    if ctx.allow_download and spec.download is not None:
        spec.download(ctx)
    return spec.factory(ctx)


_PLUGIN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")  # package.module:ClassName


def check_reward_names(names: Sequence[str]) -> None:
    """A non-empty list of distinct names, each registered or a `module:Class`."""
    if isinstance(names, str) or not names:
        raise MiroError("no rewards given")
    for name in names:
        if not isinstance(name, str) or not (name in REGISTRY or _PLUGIN.fullmatch(name)):
            known = ", ".join(sorted(REGISTRY))
            raise MiroError(
                f"unknown reward {name!r}; registered rewards: {known} (or module:Class)"
            )
    if len(set(names)) != len(names):
        raise MiroError(f"a reward is named twice in {', '.join(names)}")


def load_reward_options(
    config: str | Path | None = None, overrides: Sequence[str] = ()
) -> dict[str, dict[str, Any]]:
    """Per-reward options from a TOML/JSON file (`[hpsv2] checkpoint = "…"`) and `name.key=value`s."""
    options: dict[str, dict[str, Any]] = {}
    if config is not None:
        path = Path(config)
        if not path.exists():
            raise MiroError(f"rewards config not found: {path}")
        try:
            text = path.read_text()
            loaded = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
            raise MiroError(
                f"rewards config {path} is not valid {path.suffix[1:] or 'JSON'}: {err}"
            ) from None
        if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
            raise MiroError(f"rewards config {path}: expected a table per reward name")
        options = {name: dict(values) for name, values in loaded.items()}
    for item in overrides:
        target, sep, raw = item.partition("=")
        name, dot, key = target.partition(".")
        if not sep or not dot or not name or not key:
            raise MiroError(f"--reward-option {item!r}: expected REWARD.KEY=VALUE")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # plain strings (paths, model names) need no quotes
        options.setdefault(name, {})[key] = value
    return options
