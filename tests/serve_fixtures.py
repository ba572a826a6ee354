"""What the `miro serve` tests share: a copy of the pipeline's database and a tiny trained run."""

from __future__ import annotations

import shutil
from pathlib import Path

from train_fixtures import micro_config

from miro_train.train import TrainConfig, train


def corpus_copy(pipeline, root: Path) -> Path:
    """The session pipeline's database, copied: the server holds its copy open."""
    db = root / "corpus.duckdb"
    shutil.copyfile(pipeline.db, db)
    return db


def tiny_run(pipeline, root: Path) -> Path:
    """Two training steps of a micro UNet on the pipeline's training shards (all its rewards).

    No DataLoader process (workers=0): forking beside a running browser driver could hang.
    """
    out = root / "run"
    train(
        TrainConfig(
            shards=pipeline.train, out=out, model=str(micro_config(root / "micro.json")),
            steps=2, batch_size=8, log_every=1, ckpt_every=2, warmup=1, workers=0,
        )
    )  # fmt: skip
    return out
