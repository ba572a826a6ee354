"""User rewards plugged in as `module:Class`, for the annotate tests.

Each writes what it saw to the file named by an environment variable, so a test can tell
which samples were scored by which run — also across processes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from miro_data.rewards import Reward


def _log(var: str, lines: Sequence[str]) -> None:
    path = os.environ.get(var)
    if path:
        with open(path, "a") as f:
            f.writelines(line + "\n" for line in lines)


class Brightness(Reward):
    """Mean pixel value; logs each caption it scores to $MIRO_TEST_LOG."""

    name = "brightness"
    batch_size = 50

    def score(self, images: Sequence[np.ndarray], captions: Sequence[str]) -> np.ndarray:
        _log("MIRO_TEST_LOG", [f"{img.mean():.6f}" for img in images])
        return np.array([float(img.mean()) for img in images])


class Crashy(Brightness):
    """Kills its process (no cleanup, like SIGKILL) on call number $MIRO_CRASH_AT."""

    name = "crashy"
    calls = 0

    def score(self, images: Sequence[np.ndarray], captions: Sequence[str]) -> np.ndarray:
        Crashy.calls += 1
        if str(Crashy.calls) == os.environ.get("MIRO_CRASH_AT"):
            os._exit(9)
        return super().score(images, captions)


class Flaky(Reward):
    """Fails on every circle while $MIRO_FLAKY is set; logs the captions it scores."""

    name = "flaky"
    batch_size = 16

    def score(self, images: Sequence[np.ndarray], captions: Sequence[str]) -> np.ndarray:
        if os.environ.get("MIRO_FLAKY") and any("circle" in c for c in captions):
            raise RuntimeError("circles are not supported today")
        _log("MIRO_TEST_LOG", list(captions))
        return np.array([len(c) for c in captions], dtype=float)


class NotAReward:
    name = "nope"
