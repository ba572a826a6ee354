"""User rewards for tests/test_annotate_ray.py; Ray's workers import them by name.

Their switches come from reward options (which travel with the config to every actor),
not from environment variables, which the processes of a running Ray cluster do not see.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from miro_data.rewards import Reward, RewardContext
from miro_data.rewards.classic import Contrast

GATE_WAIT = 300.0  # seconds the gated reward waits for the test; a hung test fails, never hangs


class Gated(Contrast):
    """`contrast` under its own name. With option gate=DIR, the first call of the run writes
    DIR/started (the id of the Ray node it runs on) and waits for DIR/go: the test knows
    scoring is under way on that node, and chooses when it goes on."""

    name = "gated"

    def __init__(self, ctx: RewardContext | None = None) -> None:
        gate = (ctx or RewardContext()).options_for(self.name).get("gate")
        self.gate = Path(gate) if gate else None

    def score(self, images: Sequence[np.ndarray], captions: Sequence[str]) -> np.ndarray:
        if self.gate is not None and not (self.gate / "started").exists():
            import ray

            tmp = self.gate / f".started.{os.getpid()}"
            tmp.write_text(ray.get_runtime_context().get_node_id())
            tmp.rename(self.gate / "started")
            deadline = time.monotonic() + GATE_WAIT
            while not (self.gate / "go").exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the test never opened the gate")
                time.sleep(0.05)
        return super().score(images, captions)


class Picky(Reward):
    """Caption length; with option fail=1, fails on every caption naming a circle."""

    name = "picky"
    batch_size = 16

    def __init__(self, ctx: RewardContext | None = None) -> None:
        self.fail = bool((ctx or RewardContext()).options_for(self.name).get("fail"))

    def score(self, images: Sequence[np.ndarray], captions: Sequence[str]) -> np.ndarray:
        if self.fail and any("circle" in c for c in captions):
            raise RuntimeError("circles are not supported today")
        return np.array([len(c) for c in captions], dtype=float)
