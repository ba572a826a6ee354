"""Fitting the ecosystem (issue 17): file modes, version, warnings, readable output, provenance."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from train_fixtures import micro_config, write_shards

from miro_data.common import atomic_path


def _modes(root: Path) -> dict[str, int]:
    """Every regular file under `root` (lock files aside) → its permission bits."""
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(".lock")
    }


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_every_file_miro_writes_honours_the_umask(pipeline, tmp_path, umask, mode):
    from miro_data.annotate import AnnotateConfig, annotate
    from miro_data.bins import BinsConfig, bins
    from miro_data.reshard import ReshardConfig, reshard
    from miro_data.stats import StatsConfig, stats
    from miro_data.synth import SynthConfig, synth
    from miro_train.sample import SampleConfig, sample
    from miro_train.sampler import SamplerSettings
    from miro_train.train import TrainConfig, train

    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "plain.txt") as tmp:
            tmp.write_text("x")
        synth(SynthConfig(out=tmp_path / "corpus", n=4, size=16, seed=1))
        db = tmp_path / "db" / "c.duckdb"
        annotate(AnnotateConfig(shards=str(pipeline.shards), db=db, rewards=("sharpness",)))
        bins(BinsConfig(db=db, n_bins=4))
        stats(StatsConfig(db=db, plot=tmp_path / "stats" / "hist.png"))
        reshard(ReshardConfig(shards=str(pipeline.shards), db=db, out=tmp_path / "train"))
        shards = write_shards(tmp_path / "tshards", n=16, per_shard=16)
        run = tmp_path / "run"
        cfg = micro_config(tmp_path / "micro.json")
        train(TrainConfig(shards=shards, out=run, model=str(cfg), steps=2, batch_size=4,
                          log_every=1, ckpt_every=2, warmup=1, workers=1))  # fmt: skip
        sample(SampleConfig(checkpoint=run, out=tmp_path / "samples", prompts=("a red circle",),
                            sampler=SamplerSettings(steps=2)))  # fmt: skip
    finally:
        os.umask(old)
    modes = _modes(tmp_path)
    for must in ("plain.txt", "corpus/urls.parquet", "corpus/synth.json", "db/c.duckdb",
                 "train/manifest.json", "run/log.csv", "run/loss.png", "samples/grid.png",
                 "samples/manifest.jsonl"):  # fmt: skip
        assert must in modes, sorted(modes)
    assert any(name.endswith("model.safetensors") for name in modes)
    assert any(name.startswith("stats/") for name in modes)
    wrong = {name: oct(m) for name, m in modes.items() if m != mode}
    assert not wrong, wrong
