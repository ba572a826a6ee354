"""Errors people can read: every class of bad input is a usage message or one clean line, exit 2.

Usage errors (wrong type, missing argument, unknown option or choice) are Click's usage
message; bad values are one `error:` line from the stage config's __post_init__, before any
work; write failures (a file where a folder must be, a folder where a file must be, a
read-only or full filesystem) name the path and the cause, and leave earlier output intact.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from train_fixtures import micro_config, write_shards
from typer.testing import CliRunner

from cli.main import app
from miro_data import db, handoff
from miro_data.common import MiroError, first_line
from miro_train.checkpoint import list_checkpoints
from miro_train.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def assert_one_line(result, fragment: str) -> str:
    """Exit status 2, exactly one line on stderr, `error:` + the fragment, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output and "internal error" not in result.output
    return lines[0]


def _case_id(value) -> str:
    return " ".join(value)[:48] if isinstance(value, tuple) else "-"


# ----------------------------------------------------------------------------
# Usage errors: Click's usage message and exit status 2, never "internal error"
# ----------------------------------------------------------------------------

USAGE_ERRORS = [
    (("data", "synth", "OUT", "--n", "abc"), "--n"),  # wrong type
    (("train", "S", "-o", "OUT", "--steps", "1.5"), "--steps"),
    (("sample", "C", "-o", "OUT", "--guidance", "strong"), "--guidance"),
    (("train",), "Missing argument"),  # missing argument
    (("data", "query", "DB"), "Missing argument"),
    (("experiment", "compare", "S"), "Missing argument"),
    (("train", "S"), "--out"),  # missing required option
    (("sample", "C", "-o", "OUT", "--bogus"), "--bogus"),  # unknown option
    (("data", "bins", "DB", "--bins", "3"), "--bins"),
    (("nope",), "nope"),  # unknown command
    (("data", "download", "U", "OUT", "--distributor", "dask"), "dask"),  # bad choices
    (("data", "download", "U", "OUT", "--resize-mode", "stretch"), "stretch"),
    (("data", "download", "U", "OUT", "--encode-format", "gif"), "gif"),
    (("data", "download", "U", "OUT", "--incremental", "append"), "append"),
    (("data", "annotate", "S", "DB", "-r", "noise", "--precision", "fp8"), "fp8"),
    (("train", "S", "-o", "OUT", "--optimizer", "sgd"), "sgd"),
    (("train", "S", "-o", "OUT", "--precision", "fp8"), "fp8"),
    (("sample", "C", "-o", "OUT", "-p", "x", "--weights", "best"), "best"),
    (("eval", "geneval", "C", "--weights", "best"), "best"),
    (("eval", "text-reliance", "C", "--shards", "S", "--weights", "best"), "best"),
]


def test_a_cause_is_shown_by_its_first_line_or_its_type() -> None:
    # libraries put context and hints under the first line; some errors have no message at all
    assert first_line(ValueError("bad value\nLINE 1: SELECT …\n  ^")) == "bad value"
    assert first_line(ValueError("\n  padded  \nrest")) == "padded"
    assert first_line(OSError()) == "OSError"
    assert first_line(RuntimeError(" \n ")) == "RuntimeError"


@pytest.mark.parametrize(("args", "fragment"), USAGE_ERRORS, ids=_case_id)
def test_usage_errors_are_usage_errors(args, fragment, tmp_path: Path) -> None:
    args = [str(tmp_path / a) if a.isupper() else a for a in args]
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.stderr and fragment in result.stderr, result.stderr
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())  # nothing was written


# ----------------------------------------------------------------------------
# Bad values: one line from the config, before anything is read or written
# ----------------------------------------------------------------------------

BAD_VALUES = [
    (("data", "query", "DB", ""), "SQL statement is empty"),
    (("data", "query", "DB", "  ; "), "SQL statement is empty"),
    (("data", "query", "DB", "SELECT 1", "--out", "OUT.txt"), "--out must end in"),
    (("data", "synth", "OUT", "--n", "0"), "--n must be positive"),
    (("data", "synth", "OUT", "--size", "8"), "--size must be at least 16"),
    (("data", "synth", "OUT", "--seed", "-1"), "--seed must be 0 or more"),
    (("data", "synth", "OUT", "--degrade", "blur=nan"), "must be a finite number"),
    (("data", "synth", "OUT", "--degrade", "noise=-0.5"), "must be in [0, 1]"),
    (("data", "download", "U", "OUT", "--processes", "0"), "--processes must be positive"),
    (("data", "download", "U", "OUT", "--threads", "-2"), "--threads must be positive"),
    (("data", "download", "U", "OUT", "--retries", "-1"), "--retries must be 0 or more"),
    (("data", "download", "U", "OUT", "--encode-quality", "101"), "--encode-quality"),
    (("data", "download", "U", "OUT", "--image-size", "0"), "--image-size must be positive"),
    (("data", "bins", "DB", "--n-bins", "1"), "--n-bins must be at least 2"),
    (("data", "bins", "DB", "--sample", "3", "--n-bins", "4"), "--sample must be at least 4"),
    (("data", "bins", "DB", "--rewards", ","), "--rewards names no reward"),
    (("data", "bins", "DB", "--export", "OUT.csv"), "--export must be a .json"),
    (("data", "stats", "DB", "--version", "0"), "--version must be positive"),
    (("data", "stats", "DB", "--plot", "OUT.jpg"), "--plot must be a .png"),
    (("data", "reshard", "S", "DB", "OUT", "--shard-size", "0"), "--shard-size must be positive"),
    (("data", "reshard", "S", "DB", "OUT", "--hook", "clip=x"), "expected text=MODEL"),
    (("data", "reshard", "S", "DB", "OUT", "--device", "tpu"), "--device must be"),
    (("data", "reshard", "S", "DB", "OUT", "--where", " "), "--where must not be empty"),
    (("data", "reshard", "S", "DB", "OUT", "--rewards", "Bad-Name"), "invalid reward name"),
    (("train", "S", "-o", "OUT", "--resolution", "0"), "--resolution must be positive"),
    (("train", "S", "-o", "OUT", "--resolution", "-32"), "--resolution must be positive"),
    (("train", "S", "-o", "OUT", "--workers", "-2"), "--workers must be 0 or more"),
    (("train", "S", "-o", "OUT", "--device", "tpu"), "--device must be auto, cpu"),
    (("train", "S", "-o", "OUT", "--lr", "nan"), "--lr must be a finite number"),
    (("train", "S", "-o", "OUT", "--lr", "0"), "--lr must be positive"),
    (("train", "S", "-o", "OUT", "--weight-decay", "inf"), "--weight-decay must be a finite"),
    (("train", "S", "-o", "OUT", "--weight-decay", "-0.1"), "--weight-decay must be 0 or more"),
    (("train", "S", "-o", "OUT", "--grad-clip", "nan"), "--grad-clip must be a finite"),
    (("train", "S", "-o", "OUT", "--ema", "1"), "--ema must be in [0, 1)"),
    (("train", "S", "-o", "OUT", "--time-shift", "-inf"), "--time-shift must be a finite"),
    (("train", "S", "-o", "OUT", "--time-shift-share", "1.5"), "--time-shift-share must be in"),
    (("train", "S", "-o", "OUT", "--steps", "0"), "--steps must be positive"),
    (("train", "S", "-o", "OUT", "--batch-size", "-8"), "--batch-size must be positive"),
    (("train", "S", "-o", "OUT", "--warmup", "-1"), "--warmup must be 0 or more"),
    (("train", "S", "-o", "OUT", "--keep", "0"), "--keep must be positive"),
    (("train", "S", "-o", "OUT", "--seed", "-3"), "--seed must be 0 or more"),
    (("train", "S", "-o", "OUT", "--rewards", ","), "--rewards names no reward"),
    (("train", "S", "-o", "OUT", "--vae", ""), "--vae must not be empty"),
    (("sample", "C", "-o", "OUT"), "no prompts"),
    (("sample", "C", "-o", "OUT", "-p", "x", "--guidance", "nan"), "--guidance must be a finite"),
    (("sample", "C", "-o", "OUT", "-p", "x", "--guidance", "-1"), "--guidance must be 0 or more"),
    (("sample", "C", "-o", "OUT", "-p", "x", "--steps", "0"), "--steps must be positive"),
    (("sample", "C", "-o", "OUT", "-p", "x", "--n", "-1"), "--n must be positive"),
    (("sample", "C", "-o", "OUT", "-p", "x", "--batch-size", "0"), "--batch-size must be"),
    (("sample", "C", "-o", "OUT", "-p", "x", "--target", "a=nan"), "outside [0, 1]"),
    (("sample", "C", "-o", "OUT", "-p", "x", "--negative", "a=inf"), "outside [0, 1]"),
    (("sample", "C", "-o", "OUT", "-p", "x", "--target", "a"), "is not REWARD=VALUE"),
    (("sample", "C", "-o", "OUT", "-p", "x", "--preset", "low"), "unknown preset"),
    (("sample", "C", "-o", "OUT", "-p", "x", "--preset", "pair:a,b@nan"), "outside [0, 1]"),
    (("sample", "C", "-o", "OUT", "-p", "x", "--device", "gpu"), "--device must be"),
    (("sample", "C", "-o", "OUT", "-p", "x", "--best-of", "2"), "--select-by"),
    (("eval", "geneval", "C", "--guidance", "-inf"), "--guidance must be a finite"),
    (("eval", "geneval", "C", "--guidance-interval", "0.5"), "expected two noise levels"),
    (("sample", "C", "-o", "OUT", "-p", "x", "--guidance-interval", "1,0"), "LO must be below"),
    (("experiment", "compare", "S", "OUT", "--guidance-interval", "a,b"), "comma-separated"),
    (("eval", "geneval", "C", "--steps", "0"), "--steps must be positive"),
    (("eval", "geneval", "C", "--prompts-per-category", "0"), "--prompts-per-category"),
    (("eval", "geneval"), "give a CHECKPOINT or --manifest"),
    (("eval", "rewards", "M", "-r", ","), "no rewards given"),
    (("eval", "text-reliance", "C", "--shards", "S", "--times", "nan"), "strictly between"),
    (("eval", "text-reliance", "C", "--shards", "S", "--samples", "0"), "--samples must be"),
    (("experiment", "compare", "S", "OUT", "--lr", "nan"), "--lr must be a finite"),
    (("experiment", "compare", "S", "OUT", "--steps", "0"), "--steps must be positive"),
    (("experiment", "compare", "S", "OUT", "--eval-every", "-5"), "--eval-every must be"),
    (("experiment", "compare", "S", "OUT", "--guidance", "nan"), "--guidance must be a finite"),
    (("experiment", "sweep", "C", "OUT", "--values", "0,nan"), "--values must be a finite"),
    (("experiment", "sweep", "C", "OUT", "--values", "0,2"), "--values must be in [0, 1]"),
    (("experiment", "guidance", "C", "OUT", "--scales", "1,inf"), "--scales must be a finite"),
    (("experiment", "guidance", "C", "OUT", "--scales", "-1"), "--scales must be 0 or more"),
    (("experiment", "best-of-n", "OUT", "--n-max", "0"), "--n-max must be positive"),
    (("experiment", "combine", "A", "B", "--out", "OUT"), "not a finished compare experiment"),
    (("experiment", "combine", "OUT", "--out", "OUT"), "is one of the folders to combine"),
    (("experiment", "single-vs-multi", "S", "OUT", "--rewards", "noise"), "two rewards"),
    (("experiment", "single-vs-multi", "S", "OUT", "--time-shift", "0"), "--time-shift"),
    (("experiment", "compare", "S", "OUT", "--time-shift-share", "-0.5"), "--time-shift-share"),
    (("experiment", "compare", "S", "OUT", "--train-seeds", "0,x"), "comma-separated integers"),
    (("experiment", "compare", "S", "OUT", "--train-seeds", "1.5"), "comma-separated integers"),
    (("experiment", "compare", "S", "OUT", "--train-seeds", "0,-1"), "--train-seeds must be 0 or"),
    (("experiment", "compare", "S", "OUT", "--train-seeds", "4294967296"), "below 2**32"),
    (("experiment", "compare", "S", "OUT", "--train-seeds", "1,0,1"), "names a seed twice"),
    (("experiment", "compare", "S", "OUT", "--train-seeds", ","), "names no seed"),
    (
        ("experiment", "single-vs-multi", "S", "OUT", "--train-seeds", "0,1", "--multi", "M"),
        "--multi reuse one run",
    ),
]


@pytest.mark.parametrize(("args", "fragment"), BAD_VALUES, ids=_case_id)
def test_bad_values_are_one_line(args, fragment, tmp_path: Path) -> None:
    args = [str(tmp_path / a) if a.isupper() or a.startswith("OUT.") else a for a in args]
    assert_one_line(run(*args), fragment)
    assert not any(tmp_path.iterdir())  # rejected before anything was written


def test_configs_reject_bad_values_in_python_too(tmp_path: Path) -> None:
    """The check lives in the config, so the Python API gets it as well (types included)."""
    for kwargs, fragment in [
        ({"steps": "10"}, "--steps must be an integer"),
        ({"lr": float("nan")}, "--lr must be a finite number"),
        ({"betas": (0.9, 1.5)}, "betas must be in [0, 1)"),
        ({"optimizer": "sgd"}, "--optimizer must be one of adamw, lamb"),
        ({"rewards": ("ok", "Not OK")}, "invalid reward name"),
    ]:
        with pytest.raises(MiroError, match=re.escape(fragment)):
            TrainConfig(shards=tmp_path, out=tmp_path / "o", **kwargs)


# ----------------------------------------------------------------------------
# A real run: model configs, a pickled optimizer.pt
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    return root, write_shards(root / "shards", n=16, per_shard=16), micro_config(root / "m.json")


def _bad_model(path: Path, base: Path, edit) -> Path:
    config = json.loads(base.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    return path


MODEL_EDITS = [
    (lambda c: c["conditioning"].update(dim=-128), "conditioning.dim must be positive"),
    (lambda c: c["backbone_args"].update(channels=[16, -32]), "backbone_args.channels"),
    (lambda c: c["backbone_args"].update(heads="4"), "backbone_args.heads must be an integer"),
    (lambda c: c["conditioning"].update(pool="yes"), "conditioning.pool must be true or false"),
    (lambda c: c["backbone_args"].update(chanels=[16]), "unknown key backbone_args.chanels"),
    (lambda c: c.update(optimizer="sgd"), "unknown key(s) optimizer"),
    (lambda c: c["image"].update(resolution=0), "image.resolution must be positive"),
    (lambda c: c["text"].update(kind="t5"), "text.kind must be one of word, hf"),
    (lambda c: c["backbone_args"].update(heads=5), "not divisible by 5 heads"),
]


@pytest.mark.parametrize(("edit", "fragment"), MODEL_EDITS, ids=[m[1] for m in MODEL_EDITS])
def test_bad_model_configs_are_one_line(world, tmp_path: Path, edit, fragment) -> None:
    _, shards, config = world
    bad = _bad_model(tmp_path / "bad.json", config, edit)
    out = tmp_path / "run"
    assert_one_line(run("train", shards, "-o", out, "--model", bad, "--steps", "1"), fragment)
    assert list_checkpoints(out) == []


def test_bad_input_files_are_one_line(world, tmp_path: Path) -> None:
    _, shards, _ = world
    bad_json, not_text = tmp_path / "p.jsonl", tmp_path / "p.bin"
    bad_json.write_text('a plain prompt\n{"prompt": "unclosed\n')
    not_text.write_bytes(b"\xff\xfe\x00\x81")
    listed, binary = tmp_path / "list.json", tmp_path / "binary.json"
    listed.write_text("[1, 2]")
    binary.write_bytes(b"\xff\xfe{}")
    sample = ("sample", tmp_path / "ckpt", "-o", tmp_path / "s", "--prompts")
    for args, fragment in [
        ((*sample, bad_json), f"{bad_json}:2: not a JSON object with 'prompt'"),
        ((*sample, not_text), "is not UTF-8 text"),
        ((*sample, tmp_path), "prompts file not found"),
        (("train", shards, "-o", tmp_path / "r", "--model", listed), "expected a JSON object"),
        (("train", shards, "-o", tmp_path / "r", "--model", binary), "is not UTF-8 text"),
        (("data", "reshard", shards, tmp_path / "db", bad_json), "it is a file, not a folder"),
    ]:
        assert_one_line(run(*args), fragment)
    assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()


class _RunsCode:
    """Unpickling this calls os.system: what `weights_only=True` must refuse to do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickled_optimizer_state_is_refused_in_one_line(world, tmp_path: Path) -> None:
    _, shards, config = world
    out = tmp_path / "run"
    cfg = TrainConfig(shards=shards, out=out, model=str(config), steps=2, batch_size=4,
                      log_every=1, ckpt_every=2, warmup=1, workers=0, device="cpu")  # fmt: skip
    ckpt = train(cfg)
    marker = tmp_path / "code-ran"
    torch.save({"optimizer": _RunsCode(marker)}, ckpt / "optimizer.pt")
    result = run("-q", "train", shards, "-o", out, "--resume", "--steps", "4")
    assert_one_line(result, "optimizer.pt is not a safe checkpoint")
    assert not marker.exists()  # refused before any code ran
    assert list_checkpoints(out) == [ckpt]
    (ckpt / "optimizer.pt").write_bytes(b"\x00garbage")
    garbage = run("-q", "train", shards, "-o", out, "--resume", "--steps", "4")
    assert_one_line(garbage, "corrupt checkpoint")


# ----------------------------------------------------------------------------
# Write failures: the path and the cause on one line; earlier output intact
# ----------------------------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "e.duckdb"
    db.connect(path, create=True).close()
    return path


def test_outputs_under_a_file_or_onto_a_folder_are_one_line(database: Path, tmp_path: Path):
    blocker = tmp_path / "afile"
    blocker.write_text("keep me")
    (tmp_path / "adir.csv").mkdir()
    sql = "SELECT 1 AS a"
    for out, fragment in [
        (
            blocker / "q.csv",
            f"cannot write --out {blocker / 'q.csv'}: {blocker} is a file, not a folder",
        ),
        (blocker / "deeper" / "q.csv", f"{blocker} is a file, not a folder"),
        (tmp_path / "adir.csv", f"cannot write --out {tmp_path / 'adir.csv'}: Is a directory"),
    ]:
        assert_one_line(run("data", "query", database, sql, "--out", out), fragment)
    assert_one_line(run("data", "synth", blocker / "s", "--n", "2"), "is a file, not a folder")
    assert blocker.read_text() == "keep me"
    assert list((tmp_path / "adir.csv").iterdir()) == []  # no temporary file left behind
    made = run("data", "query", database, sql, "--out", tmp_path / "new" / "deep" / "q.csv")
    assert made.exit_code == 0 and (tmp_path / "new" / "deep" / "q.csv").exists()


@contextmanager
def small_filesystem(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of `size` at `path` (root only; the test is skipped where it cannot mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_read_only_filesystem_is_one_line(database: Path, tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "ro", "1m", read_only=True) as ro:
        line = assert_one_line(
            run("data", "query", database, "SELECT 1 AS a", "--out", ro / "q.csv"),
            f"cannot write --out {ro / 'q.csv'}",
        )
        assert "Read-only file system" in line
        assert_one_line(run("data", "synth", ro / "s", "--n", "2"), "Read-only file system")


def test_full_disk_is_one_line_and_keeps_earlier_output(database: Path, tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "full", "256k") as full:
        target = full / "q.parquet"
        assert run("data", "query", database, "SELECT 1 AS a", "--out", target).exit_code == 0
        before = target.read_bytes()
        big = "SELECT range AS a, md5(range::VARCHAR) AS b FROM range(200000)"
        line = assert_one_line(run("data", "query", database, big, "--out", target), str(target))
        assert line.endswith("No space left on device")
        assert target.read_bytes() == before  # the earlier result is intact
        assert [p.name for p in full.iterdir()] == ["q.parquet"]  # no temporary left
        result = run("data", "synth", full / "s", "--n", "400", "--size", "128")
        assert_one_line(result, "No space left on device")


def test_full_disk_while_training_names_the_checkpoint(world, tmp_path: Path) -> None:
    _, shards, config = world
    with small_filesystem(tmp_path / "full", "300k") as full:
        result = run("-q", "train", shards, "-o", full / "run", "--model", config, "--steps", "2",
                     "--batch-size", "4", "--ckpt-every", "2", "--workers", "0",
                     "--warmup", "1")  # fmt: skip
        line = assert_one_line(result, str(full / "run" / "checkpoints" / "step_0000002"))
        assert "No space left on device" in line
        assert list((full / "run" / "checkpoints").iterdir()) == []  # no half-written folder


def _part(root: Path, n: int, shard: str) -> Path:
    keys = [f"{i:08d}" for i in range(n)]
    sample = {"width": 32, "height": 32, "image_ext": "png", "status": "ok", "error": None,
              "meta": "{}"}  # fmt: skip
    rows = {
        "samples": [
            {"shard": shard, "key": k, "caption": f"a caption {k} " * 8, "url": k, **sample}
            for k in keys
        ],
        "scores": [
            {"shard": shard, "key": k, "reward": "noise", "version": "1", "value": 0.5}
            for k in keys
        ],
        "failures": [],
    }
    marker = {"shard": shard, "retry": False, "rewards": {"noise": {"version": "1"}}}
    return handoff.write_part(root, shard, rows, marker)


def test_full_disk_during_ingest_names_the_database_and_keeps_its_rows(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "full", "1m") as full:
        path = full / "scores.duckdb"
        con = db.connect(path, create=True)
        handoff.ingest_part(con, _part(tmp_path / "parts", 10, "small"))
        big = _part(tmp_path / "parts", 60_000, "big")
        with pytest.raises(MiroError) as err:
            handoff.ingest_part(con, big)
        con.close()
        message = str(err.value)
        assert "\n" not in message and f"cannot write database {path}" in message
        assert "No space left on device" in message and "rollback" not in message
        assert (big / "done.json").exists()  # the part stays for the next run
        with db.connect(path, read_only=True) as again:
            assert again.execute("SELECT count(*) FROM samples").fetchone() == (10,)


# ----------------------------------------------------------------------------
# JSON written by the tool is valid JSON (no NaN)
# ----------------------------------------------------------------------------


def _strict(text: str):
    def refuse(constant: str):
        raise AssertionError(f"{constant} in JSON output")

    return json.loads(text, parse_constant=refuse)


def test_undefined_reward_means_are_null_not_nan(tmp_path: Path) -> None:
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(tmp_path / "a.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"prompt": "not a shapes caption", "file": "a.png"}) + "\n")
    result = run("eval", "rewards", manifest, "-r", "shapes_alignment")
    assert result.exit_code == 0, result.output
    summary = _strict((tmp_path / "rewards.json").read_text())
    assert summary["shapes_alignment"]["mean"] is None
    assert summary["shapes_alignment"]["undefined"] == 1


# ----------------------------------------------------------------------------
# The same as a real process: exit status and one line on stderr
# ----------------------------------------------------------------------------


def _miro(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "MIRO_NO_PROGRESS": "1"}
    env.pop("MIRO_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "cli.main", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_as_a_process(database: Path, tmp_path: Path) -> None:
    usage = _miro("data", "download", "u.parquet", "out", "--distributor", "dask", cwd=tmp_path)
    assert usage.returncode == 2 and "Usage:" in usage.stderr and "dask" in usage.stderr
    assert "Traceback" not in usage.stderr and "SemLock" not in usage.stderr
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    for args, fragment in [
        (("data", "query", database, ""), "SQL statement is empty"),
        (("train", "shards", "-o", "run", "--device", "tpu"), "--device must be"),
        (("sample", "ckpt", "-o", "s", "-p", "x", "--guidance", "nan"), "--guidance"),
        (("data", "query", database, "SELECT 1", "--out", blocker / "q.csv"), "not a folder"),
    ]:
        proc = _miro(*args, cwd=tmp_path)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "e.duckdb"]


def test_pickle_module_is_what_refuses(tmp_path: Path) -> None:
    """Sanity: the payload above does run code when unpickled without weights_only."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_RunsCode(marker)))
    assert marker.exists()
