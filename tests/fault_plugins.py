"""User rewards for tests/test_faults_kill.py, in a module light enough for worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from miro_data.rewards.classic import Contrast

REPO = Path(__file__).resolve().parents[1]


class Witness(Contrast):
    """The `contrast` reward, which also appends the pid of each process that builds it to
    $MIRO_TEST_PIDS (so a test knows where the scoring ran)."""

    def __init__(self, ctx: object = None) -> None:
        if path := os.environ.get("MIRO_TEST_PIDS"):
            with open(path, "a") as f:
                f.write(f"{os.getpid()}\n")


class ReaderProbe(Witness):
    """On its 2nd batch (the 2nd shard, after the 1st was ingested) runs `miro data query` on
    $MIRO_TEST_PROBE_DB, the database being annotated, into $MIRO_TEST_PROBE_OUT."""

    name = "probe"
    batch_size = 1000  # one call per shard
    calls = 0

    def score(self, images: Sequence[np.ndarray], captions: Sequence[str]) -> np.ndarray:
        ReaderProbe.calls += 1
        if ReaderProbe.calls == 2:
            sql = "SELECT shard, reward FROM ledger ORDER BY ALL"
            args = ["data", "query", os.environ["MIRO_TEST_PROBE_DB"], sql]
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cli.main",
                    *args,
                    "--out",
                    os.environ["MIRO_TEST_PROBE_OUT"],
                ],
                env={**os.environ, "PYTHONPATH": str(REPO)},
                cwd=REPO,
                capture_output=True,
                text=True,
            )
            assert proc.returncode == 0, proc.stderr
        return super().score(images, captions)
