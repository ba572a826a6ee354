"""Fitting the ecosystem (issue 17): file modes, version, warnings, readable output, provenance."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import stat
import sys
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


def _miro(*args: str):
    from typer.testing import CliRunner

    from cli.main import app

    return CliRunner().invoke(app, list(args))


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    result = _miro("--version")
    assert result.exit_code == 0 and result.output.strip() == f"miro {version('miro')}"


def test_annotate_rerun_says_nothing_to_do_and_warns_of_idle_workers(pipeline, tmp_path):
    from conftest import CLASSIC

    db = tmp_path / "copy.duckdb"
    shutil.copy(pipeline.db, db)
    result = _miro("data", "annotate", str(pipeline.shards), str(db), "-r", ",".join(CLASSIC),
                   "--workers", "9")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.output and "scored" not in result.output
    assert "--workers 9 but 3 shard(s)" in " ".join(result.output.split())


def test_train_on_source_shards_says_to_reshard(pipeline, tmp_path):
    result = _miro("train", str(pipeline.shards), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "miro data reshard" in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_train_warns_of_a_constant_reward_and_a_warmup_past_the_steps(pipeline, tmp_path, caplog):
    from miro_data.reshard import ReshardConfig, reshard
    from miro_train.train import TrainConfig, train

    # README's own filter on a reward, then conditioning on that reward
    out = tmp_path / "aligned"
    reshard(ReshardConfig(shards=str(pipeline.shards), db=pipeline.db, out=out,
                          where="shapes_alignment = 1", rewards=("sharpness", "shapes_alignment")))  # fmt: skip
    cfg = micro_config(tmp_path / "micro.json")
    with caplog.at_level(logging.WARNING):
        train(TrainConfig(shards=out, out=tmp_path / "run", model=str(cfg), steps=2,
                          batch_size=4, warmup=2, workers=1))  # fmt: skip
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("shapes_alignment is constant") for m in warned), warned
    assert not any(m.startswith("sharpness is constant") for m in warned), warned
    assert any("--warmup 2 ≥ --steps 2" in m for m in warned), warned


def test_query_table_fits_80_columns_with_readable_text(pipeline):
    from typer.testing import CliRunner

    from cli.main import app

    sql = "SELECT * FROM scores_wide ORDER BY key LIMIT 5"  # README's query: 13 columns
    result = CliRunner().invoke(app, ["data", "query", str(pipeline.db), sql],
                                env={"COLUMNS": "80"})  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert table and all(len(line) <= 80 for line in table), table
    header = [c.strip() for c in table[1].strip("┃").split("┃")]
    assert header[:4] == ["shard", "key", "caption", "url"], header
    rows = [[c.strip() for c in line.strip("│").split("│")] for line in table[3:-1]]
    assert len(rows) == 5 and all(all(cells) for cells in rows), rows  # no empty cell
    assert all(row[2].startswith("a photo of") for row in rows), rows
    assert "more column(s)" in result.output and "sharpness" in result.output


@pytest.mark.parametrize("fmt", ["csv", "markdown", "json"])
def test_query_prints_csv_markdown_and_json(pipeline, fmt):
    import io
    import json

    import polars as pl

    from miro_data.query import QueryConfig, query

    sql = "SELECT key, caption, noise FROM scores_wide ORDER BY key LIMIT 4"
    expected = query(QueryConfig(db=pipeline.db, sql=sql))
    result = _miro("data", "query", str(pipeline.db), sql, "--format", fmt)
    assert result.exit_code == 0, result.output
    text = result.stdout
    if fmt == "csv":
        got = pl.read_csv(io.StringIO(text), schema=expected.schema)
        assert got.equals(expected)
    elif fmt == "json":
        assert json.loads(text) == expected.to_dicts()
    else:
        lines = text.splitlines()
        assert lines[0] == "| key | caption | noise |" and lines[1] == "|---|---|---:|"
        assert len(lines) == 2 + expected.height
        assert lines[2].startswith(f"| {expected['key'][0]} | {expected['caption'][0]} |")
    assert _miro("data", "query", str(pipeline.db), sql, "--format", "xml").exit_code == 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_go_above_the_progress_bar_not_into_it(monkeypatch):
    from cli.main import _configure
    from miro_data.common import progress_bar

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.delenv("MIRO_NO_PROGRESS", raising=False)
    _configure(False, False, False)  # the CLI's logging, as `miro train` sets it up
    log = logging.getLogger("miro_train.train")
    with progress_bar("step") as bar:
        task = bar.add_task("train", total=3)
        for step in range(1, 4):
            bar.advance(task)
            log.info("step %d/3 | loss 0.5", step)
    frames = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.getvalue()).split("\n")
    logged = [f.rsplit("\r", 1)[-1] for f in frames if "loss 0.5" in f]
    assert len(logged) == 3, frames
    # what the terminal shows on a log line's row: the log line alone, the bar erased
    assert all("━" not in row and "INFO" in row for row in logged), logged


def test_sample_grid_scales_small_images_up_and_labels_each_row(tmp_path):
    import numpy as np
    from PIL import Image

    from miro_train.sample import GRID_LABEL_WIDTH, _write_grid, grid_label

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    labels = [grid_label(p, {"sharpness": 1.0, "noise": None}) for p in ("a red circle", "two")]
    assert labels[0] == "a red circle\nsharpness=1, noise=missing"
    _write_grid(images, tmp_path / "grid.png", labels)
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (4 + 2 * 132, 244 + 2 * 132, 3)
    for i, img in enumerate(images):  # nearest: each pixel a 4×4 block, exactly
        r, c = divmod(i, 2)
        y, x = 4 + r * 132, 244 + c * 132
        np.testing.assert_array_equal(grid[y : y + 128, x : x + 128], img.repeat(4, 0).repeat(4, 1))
    for r in range(2):  # each row's label is drawn in its band
        band = grid[4 + r * 132 : 4 + r * 132 + 128, :GRID_LABEL_WIDTH]
        assert (band < 128).all(axis=2).sum() > 100


def test_local_files_keep_their_real_place_as_url(pipeline):
    import duckdb

    from miro_data.trainshards import read_samples

    con = duckdb.connect(str(pipeline.db), read_only=True)
    urls = [u for (u,) in con.execute("SELECT url FROM samples WHERE status = 'ok'").fetchall()]
    con.close()
    images = (pipeline.corpus.resolve() / "images").as_uri() + "/"
    assert len(urls) == pipeline.n and all(u.startswith(images) for u in urls), urls[:3]
    sample = next(read_samples(pipeline.train))
    assert sample.meta.url in urls and sample.meta.url.startswith("file:///")


def test_download_reads_paths_of_every_kind_as_file_urls(tmp_path):
    import numpy as np
    import polars as pl
    import webdataset as wds
    from PIL import Image

    from miro_data.download import DownloadConfig, download

    folder = tmp_path / "my corpus"
    (folder / "sub dir").mkdir(parents=True)
    pixels = np.full((8, 8, 3), 200, dtype=np.uint8)
    for name in ("sub dir/a #1.png", "b?.png", "c.png"):
        Image.fromarray(pixels).save(folder / name)
    given = ["sub dir/a #1.png", str(folder / "b?.png"), (folder / "c.png").as_uri()]
    pl.DataFrame({"url": given, "caption": ["a", "b", "c"]}).write_parquet(folder / "u.parquet")
    report = download(DownloadConfig(url_list=folder / "u.parquet", out=tmp_path / "shards",
                                     image_size=8, resize_mode="no", processes=1, threads=2))  # fmt: skip
    assert report.successes == 3, report
    stored = {
        s["txt"].decode(): json.loads(s["json"])["url"]
        for s in wds.WebDataset(str(tmp_path / "shards" / "00000.tar"), shardshuffle=False)
    }
    real = folder.resolve()
    assert stored == {
        c: (real / n).as_uri()
        for c, n in zip("abc", ("sub dir/a #1.png", "b?.png", "c.png"), strict=True)
    }


def test_export_writes_parquet_every_engine_reads_with_the_same_counts(pipeline, tmp_path):
    import duckdb
    import polars as pl

    out = tmp_path / "export"
    result = _miro("data", "export", str(pipeline.db), str(out))
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(pipeline.db), read_only=True)
    for table in ("samples", "scores_wide", "failures", "ledger", "bin_edges"):
        back = pl.read_parquet(out / table / "**" / "*.parquet", hive_partitioning=True)
        ((count,),) = con.execute(f"SELECT count(*) FROM {table}").fetchall()
        assert back.height == count, table
        assert count > 0 or table == "failures"  # (this corpus's failures are all downloads)
    wide = con.sql("SELECT * FROM scores_wide ORDER BY shard, key").pl()
    back = pl.read_parquet(out / "scores_wide" / "**" / "*.parquet", hive_partitioning=True)
    assert back.columns == wide.columns and back.sort("shard", "key").equals(wide)
    con.close()
    assert json.loads((out / "export.json").read_text())["rows"]["samples"] == pipeline.n + 2
    again = _miro("data", "export", str(pipeline.db), str(out))
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert _miro("data", "export", str(pipeline.db), str(out), "--overwrite").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging left behind


def test_new_databases_are_written_in_a_format_duckdb_1_opens(pipeline):
    import duckdb

    con = duckdb.connect(str(pipeline.db), read_only=True)
    tags = dict(con.execute("SELECT database_name, tags FROM duckdb_databases()").fetchall())
    con.close()
    assert tags[pipeline.db.stem]["storage_version"] == "v1.0.0+"


@pytest.mark.parametrize("steps", [1, 4, 25])
def test_euler_steps_equal_diffusers_flow_match_euler_at_shift_1(steps):
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    from miro_train.flow import euler

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 6, generator=gen) / 3, torch.randn(6, generator=gen)
    noise = torch.randn(2, 6, generator=gen)

    def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # depends on both x and t
        return x @ a + t.view(-1, 1) * b

    ours = euler(lambda x, t, state: (field(x, t), state), noise, steps)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)  # num_train_timesteps=1000
    scheduler.set_timesteps(sigmas=torch.linspace(1, 0, steps + 1)[:-1].tolist())
    np_sigmas = scheduler.sigmas.numpy()
    assert np_sigmas[-1] == 0 and len(np_sigmas) == steps + 1
    x = noise
    for timestep in scheduler.timesteps:
        t = (timestep / scheduler.config.num_train_timesteps).expand(x.shape[0])
        x = scheduler.step(field(x, t), timestep, x).prev_sample
    torch.testing.assert_close(x, ours, rtol=1e-6, atol=1e-6)


_LOAD_AND_DRAW = """
import sys, numpy as np, torch
from miro_train.pipeline import MiroPipeline
pipe = MiroPipeline.from_pretrained(sys.argv[1])
out = pipe("a photo of a red circle", reward_targets={"noise": 0.5},
           negative_reward_targets={"noise": 0.0}, guidance_scale=3.0, caption_guidance_scale=2.0,
           num_inference_steps=4,
           generator=torch.Generator().manual_seed(5), num_images_per_prompt=2)
np.save(sys.argv[2], np.stack([np.asarray(im) for im in out.images]))
pipe.save_pretrained(sys.argv[3])
"""


def test_export_loads_as_a_diffusers_pipeline_that_draws_miro_samples_images(tmp_path):
    import subprocess

    import numpy as np
    from PIL import Image

    from miro_train.train import TrainConfig, train

    shards = write_shards(tmp_path / "shards", n=16, per_shard=16)
    cfg = micro_config(tmp_path / "micro.json")
    run = tmp_path / "run"
    train(TrainConfig(shards=shards, out=run, model=str(cfg), steps=2, batch_size=4, warmup=1,
                      workers=1, caption_dropout=0.5))  # fmt: skip
    samples = tmp_path / "samples"
    result = _miro("sample", str(run), "-o", str(samples), "-p", "a photo of a red circle",
                   "--n", "2", "--steps", "4", "--guidance", "3", "--seed", "5",
                   "--caption-guidance", "2",
                   "--target", "noise=0.5", "--negative", "noise=0")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (samples / "manifest.jsonl").read_text().splitlines()]
    expected = np.stack([np.asarray(Image.open(samples / r["file"])) for r in rows])

    out = tmp_path / "pipe"
    assert _miro("export", str(run), str(out)).exit_code == 0
    assert {p.name for p in out.iterdir()} >= {"model_index.json", "transformer", "scheduler"}
    info = json.loads((out / "miro.json").read_text())
    assert info["rewards"] == ["sharpness", "noise"] and info["n_levels"]["noise"] == 8
    # a fresh process, and no run folder around: only the exported folder
    shutil.rmtree(run)
    drawn, again = tmp_path / "drawn.npy", tmp_path / "again"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", _LOAD_AND_DRAW, str(out), str(drawn), str(again)],
                   check=True, env=env, cwd=tmp_path)  # fmt: skip
    np.testing.assert_array_equal(np.load(drawn), expected)
    for name in ("transformer/diffusion_pytorch_model.safetensors", "miro.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    for name in ("transformer/config.json", "scheduler/scheduler_config.json"):
        saved, resaved = (json.loads((d / name).read_text()) for d in (out, again))
        resaved.pop("_name_or_path", None)  # (diffusers records where it was loaded from)
        assert resaved == saved, name
    assert _miro("export", str(tmp_path / "samples"), str(out)).exit_code == 2
