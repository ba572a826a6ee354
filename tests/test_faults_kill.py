"""Crash recovery and output ownership: real processes killed with SIGKILL at named points.

`MIRO_FAULT=<point>[@N]` makes the process SIGKILL itself at the Nth pass through
`fault_point(<point>)` (miro_data.processes), so every kill lands at a known place. After each
kill the command is run again (or resumed) and compared with an uninterrupted run. Orphans
are found psutil-free: every process a test starts carries a unique tag in its environment,
which /proc/PID/environ shows for the process and all its descendants.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from cli.main import app
from miro_data.processes import output_lock

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "MIRO_NO_PROGRESS": "1", **(extra or {})}


def _killed(*args: object, fault: str, tmp: Path, env: dict | None = None) -> tuple[str, int]:
    """Run `miro ARGS` until it SIGKILLs itself at `fault`; returns the tag its processes carry
    and its pid. Its output goes to a file, not a pipe: an orphan still holding a pipe would
    keep the reader waiting."""
    tag = uuid.uuid4().hex
    log = tmp / f"{fault}.log"
    cmd = [sys.executable, "-m", "cli.main", *map(str, args)]
    env = _env({"MIRO_FAULT": fault, "MIRO_TEST_TAG": tag, **(env or {})})
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
        proc.wait(timeout=600)
    assert proc.returncode == -9, log.read_text()[-3000:]
    return tag, proc.pid


def _tagged(tag: str) -> list[int]:
    """Live (not zombie) processes whose environment holds MIRO_TEST_TAG=tag."""
    needle = f"MIRO_TEST_TAG={tag}".encode()
    alive = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle not in (proc / "environ").read_bytes():
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours
            continue
        if state not in ("Z", "X"):
            alive.append(int(proc.name))
    return alive


def _survivors(tag: str, deadline_s: float = 30.0) -> list[int]:
    """Tagged processes still alive once they have had `deadline_s` to exit (polls for the
    condition; a fixed sleep would race the kernel's reaping)."""
    deadline = time.monotonic() + deadline_s
    while (alive := _tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def assert_clean_error(result, fragment: str) -> None:
    """Exit status 2 and one error line naming the problem (log lines may come before it)."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert result.stderr.rstrip().endswith(errors[0].rstrip()), result.stderr
    assert "Traceback" not in result.output


# ----------------------------------------------------------------------------
# annotate
# ----------------------------------------------------------------------------

TABLES = {
    "samples": "SELECT * FROM samples",
    "scores": "SELECT * FROM scores WHERE reward IN ('sharpness', 'contrast')",
    "failures": "SELECT * FROM failures WHERE coalesce(reward, 'contrast') IN ('sharpness', 'contrast')",
    "ledger": "SELECT shard, reward, version, n_read, n_scored, n_failed FROM ledger"
    " WHERE reward IN ('sharpness', 'contrast')",
    "reward_versions": "SELECT reward, version FROM reward_versions"
    " WHERE reward IN ('sharpness', 'contrast')",
}


def _tables(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {name: con.execute(sql + " ORDER BY ALL").fetchall() for name, sql in TABLES.items()}
    finally:
        con.close()


def test_killed_annotate_takes_its_workers_along_and_reruns_exactly(
    pipeline, tmp_path: Path, monkeypatch
) -> None:
    from miro_data.annotate import AnnotateConfig, annotate
    from miro_data.common import MiroError

    rewards = ("sharpness", "tests.fault_plugins:Witness")  # Witness is `contrast`
    db, pids = tmp_path / "k.duckdb", tmp_path / "pids.txt"
    args = ("data", "annotate", pipeline.shards, db, "-r", ",".join(rewards), "--workers", "2")
    # killed as it ingests the first finished shard: the other worker is busy or waiting
    tag, coordinator = _killed(
        *args, fault="annotate.ingested", tmp=tmp_path, env={"MIRO_TEST_PIDS": str(pids)}
    )
    workers = {int(p) for p in pids.read_text().split()}
    assert workers and coordinator not in workers  # the scoring ran in worker processes
    assert _survivors(tag) == []  # workers, their decoders and the resource tracker died too

    monkeypatch.setenv("MIRO_FAULT", "annotate.worker")  # now a worker dies, not its coordinator
    with pytest.raises(MiroError, match="a worker process died"):
        annotate(AnnotateConfig(shards=str(pipeline.shards), db=db, rewards=rewards, workers=2))
    monkeypatch.delenv("MIRO_FAULT")
    annotate(AnnotateConfig(shards=str(pipeline.shards), db=db, rewards=rewards))
    # the same tables as the uninterrupted single-process run of the shared pipeline
    assert _tables(db) == _tables(pipeline.db)
    assert len(_tables(db)["ledger"]) == 2 * 3  # every shard, both rewards
    assert not list((tmp_path / "k.duckdb.parts").glob("*"))
    assert _hidden(tmp_path) == []  # the killed run's lock file went with the rerun


def test_readers_open_the_database_between_ingests(pipeline, tmp_path: Path, monkeypatch) -> None:
    from miro_data.annotate import AnnotateConfig, annotate
    from tests.fault_plugins import ReaderProbe

    db, probe = tmp_path / "r.duckdb", tmp_path / "probe.csv"
    monkeypatch.setenv("MIRO_TEST_PROBE_DB", str(db))
    monkeypatch.setenv("MIRO_TEST_PROBE_OUT", str(probe))
    ReaderProbe.calls = 0
    report = annotate(
        AnnotateConfig(
            shards=str(pipeline.shards), db=db, rewards=("tests.fault_plugins:ReaderProbe",)
        )
    )
    assert report.scored == {"probe": pipeline.n}
    with probe.open() as f:  # the reader saw the first shard, ingested, while the run went on
        assert list(csv.reader(f)) == [["shard", "reward"], ["00000", "probe"]]


class _Holder:
    """Another process that holds the database open (read-only: a `miro data query`; else a
    writer) until `release()`: deterministic, it says when it holds it."""

    def __init__(self, db: Path, read_only: bool) -> None:
        code = (
            "import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == '1'); "
            "print('ready', flush=True); sys.stdin.read(); con.close()"
        )
        argv = [sys.executable, "-c", code, str(db), "1" if read_only else "0"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout.readline() == b"ready\n"
        self.waits: list[int] = []

    def release(self, attempt: int) -> None:  # as on_wait: the holder finishes while we wait
        self.waits.append(attempt)
        self.proc.stdin.close()
        self.proc.wait()

    def __enter__(self) -> _Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def test_ingest_and_readers_wait_for_each_other_and_keep_the_part(tmp_path: Path) -> None:
    from miro_data import db as dbm
    from miro_data import handoff
    from miro_data.common import MiroError

    db = tmp_path / "w.duckdb"
    dbm.connect(db, create=True).close()
    rows = {
        "samples": [{"shard": "s", "key": "k", "caption": "c", "url": None, "width": 1,
                     "height": 1, "image_ext": "png", "status": "ok", "error": None, "meta": None}],
        "scores": [{"shard": "s", "key": "k", "reward": "r", "version": "1", "value": 0.5}],
        "failures": [],
    }  # fmt: skip
    marker = {"shard": "s", "retry": False, "rewards": {"r": {"version": "1", "seconds": 0.0}}}
    part = handoff.write_part(handoff.parts_dir(db), "s", rows, marker)
    with _Holder(db, read_only=True) as reader:
        with pytest.raises(MiroError, match=r"in use by another process.*waits in"):
            handoff.ingest_waiting(db, part, wait=0)
        assert (part / "done.json").exists()  # kept for the next run
        done = handoff.ingest_waiting(db, part, wait=60, on_wait=reader.release)
    assert reader.waits == [1] and done["shard"] == "s" and not part.exists()
    with _Holder(db, read_only=False) as writer:  # a reader waits for a writer too
        con = dbm.connect_waiting(db, 60, read_only=True, on_wait=writer.release)
    assert writer.waits == [1]
    assert con.execute("SELECT shard, key, value FROM scores").fetchall() == [("s", "k", 0.5)]
    con.close()


# ----------------------------------------------------------------------------
# reshard
# ----------------------------------------------------------------------------


def _shard_contents(folder: Path) -> dict[str, list[tuple[str, bytes]]]:
    import tarfile

    out = {}
    for tar in sorted(folder.glob("*.tar")):
        with tarfile.open(tar) as f:
            out[tar.name] = [(m.name, f.extractfile(m).read()) for m in f.getmembers()]
    return out


def test_reshard_killed_while_staging_reruns_to_the_same_shards(pipeline, tmp_path: Path) -> None:
    from miro_data.reshard import ReshardConfig, reshard

    out = tmp_path / "train"
    args = ("data", "reshard", pipeline.shards, pipeline.db, out, "--shard-size", "64")
    _killed(*args, "--shuffle-seed", "3", fault="reshard.shard@2", tmp=tmp_path)
    assert not out.exists()
    assert [n.rsplit("-", 1)[0] for n in _hidden(tmp_path)] == [".train.lock", ".train.partial"]
    reshard(ReshardConfig(str(pipeline.shards), pipeline.db, out, shard_size=64, shuffle_seed=3))
    assert _shard_contents(out) == _shard_contents(pipeline.train)
    assert _hidden(tmp_path) == []  # the killed run's staging folder was removed


def test_reshard_killed_between_its_renames_restores_the_old_output(
    pipeline, tmp_path: Path
) -> None:
    out = tmp_path / "train"
    shutil.copytree(pipeline.train, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    where = ("--where", "shapes_alignment = 1")
    args = ("data", "reshard", pipeline.shards, pipeline.db, out, "--overwrite", *where)
    _killed(*args, fault="reshard.finalize", tmp=tmp_path)
    assert not out.exists()  # moved aside, the new one not yet in place
    assert {n.rsplit("-", 1)[0] for n in _hidden(tmp_path)} >= {".train.old", ".train.partial"}

    result = runner.invoke(app, ["data", "reshard", str(pipeline.shards), str(pipeline.db),
                                 str(out)], env={"COLUMNS": "200"})  # fmt: skip
    assert_clean_error(result, "exists and is not empty")  # the old output is back
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _hidden(tmp_path) == []
    result = runner.invoke(app, ["data", "reshard", str(pipeline.shards), str(pipeline.db),
                                 str(out), "--overwrite", *where])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["where"] == "shapes_alignment = 1"


# ----------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------

# log every 3 steps, checkpoint every 4: the intervals do not divide each other
TRAIN = {"steps": 6, "batch_size": 4, "log_every": 3, "ckpt_every": 4, "warmup": 2, "workers": 0}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny shards, a micro model, and one uninterrupted run (log every 3, checkpoint every 4)."""
    from train_fixtures import micro_config, write_shards

    from miro_train.train import TrainConfig, train

    root = tmp_path_factory.mktemp("faults")
    shards = write_shards(root / "shards", n=32, per_shard=16)
    config = micro_config(root / "micro.json")
    train(TrainConfig(shards=shards, out=root / "straight", model=str(config), **TRAIN))
    return root, shards, config


def _train_args(runs, out: Path, **overrides: object) -> list[str]:
    _, shards, config = runs
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in (TRAIN | overrides).items()]
    return ["train", str(shards), "--out", str(out), "--model", str(config), *flags]


def _log(run: Path) -> list[list[str]]:
    """log.csv without its timing columns (steps/s, elapsed)."""
    with (run / "log.csv").open() as f:
        return [row[:3] for row in csv.reader(f)]


def _assert_same_run(run: Path, straight: Path) -> None:
    from safetensors.torch import load_file

    from miro_train.checkpoint import list_checkpoints

    assert _log(run) == _log(straight)
    assert [c.name for c in list_checkpoints(run)] == [c.name for c in list_checkpoints(straight)]
    for which in ("model", "ema"):
        a = load_file(list_checkpoints(run)[-1] / f"{which}.safetensors")
        b = load_file(list_checkpoints(straight)[-1] / f"{which}.safetensors")
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_train_killed_before_its_first_checkpoint_starts_over(runs, tmp_path: Path) -> None:
    from miro_train.checkpoint import list_checkpoints
    from miro_train.train import TrainConfig, train

    root, shards, config = runs
    run = tmp_path / "run"
    _killed(*_train_args(runs, run), fault="train.step@3", tmp=tmp_path)
    assert _log(run)[1:] and not (run / "checkpoints").exists()
    shutil.copytree(run, tmp_path / "fresh")
    base = {"shards": shards, "model": str(config), **TRAIN}
    train(TrainConfig(out=run, resume=True, **base))  # nothing to resume: it starts over
    _assert_same_run(run, root / "straight")
    result = runner.invoke(app, _train_args(runs, tmp_path / "fresh", steps=1))
    assert result.exit_code == 0, result.output  # a fresh run into such a folder is accepted
    assert [c.name for c in list_checkpoints(tmp_path / "fresh")] == ["step_0000001"]
    assert [r[0] for r in _log(tmp_path / "fresh")] == ["step", "1"]


def test_train_killed_between_checkpoints_resumes_to_the_same_log_and_weights(
    runs, tmp_path: Path
) -> None:
    from miro_train.train import TrainConfig, train

    root, shards, config = runs
    run = tmp_path / "run"
    # at step 5: a log row (step 3) and a checkpoint (step 4) behind it, mid log window
    _killed(*_train_args(runs, run), fault="train.step@5", tmp=tmp_path)
    assert [r[0] for r in _log(run)] == ["step", "3"]
    with (run / "log.csv").open("a") as f:
        f.write("1")  # a row cut short by the kill
    (run / "checkpoints" / ".step_0000006.tmp").mkdir()  # a checkpoint cut short
    train(TrainConfig(shards=shards, out=run, model=str(config), resume=True, **TRAIN))
    _assert_same_run(run, root / "straight")
    assert [r[0] for r in _log(run)] == ["step", "3", "6"]
    assert _hidden(run / "checkpoints") == [] and _hidden(tmp_path) == []


def test_a_checkpoint_moved_aside_while_re_saved_comes_back(runs, tmp_path: Path) -> None:
    from miro_train.checkpoint import list_checkpoints
    from miro_train.train import TrainConfig, train

    root, shards, config = runs
    run = tmp_path / "run"
    shutil.copytree(root / "straight", run)
    ckpts = run / "checkpoints"
    (ckpts / "step_0000006").rename(ckpts / ".step_0000006.old")  # killed between the renames
    last = train(TrainConfig(shards=shards, out=run, model=str(config), resume=True, **TRAIN))
    assert last == ckpts / "step_0000006" and _hidden(ckpts) == []
    assert [c.name for c in list_checkpoints(run)] == ["step_0000004", "step_0000006"]


def test_keep_is_validated_and_never_prunes_the_newest(runs, tmp_path: Path) -> None:
    from miro_train.checkpoint import list_checkpoints

    run = tmp_path / "k"
    for keep in ("0", "-1"):
        result = runner.invoke(app, [*_train_args(runs, run), "--keep", keep])
        assert_clean_error(result, "--keep must be positive")
    assert not run.exists()
    result = runner.invoke(app, [*_train_args(runs, run, steps=2, ckpt_every=1), "--keep", "1"])
    assert result.exit_code == 0, result.output
    assert [c.name for c in list_checkpoints(run)] == ["step_0000002"]


# ----------------------------------------------------------------------------
# one owner per output
# ----------------------------------------------------------------------------


def test_a_second_writer_of_an_output_is_refused_in_one_line(
    pipeline, runs, tmp_path: Path
) -> None:
    root, shards, _ = runs
    out, db = tmp_path / "out", tmp_path / "db.duckdb"
    commands = {
        out: [
            ["data", "synth", out, "--n", "4"],
            ["data", "download", pipeline.url_list, out],
            ["data", "reshard", pipeline.shards, pipeline.db, out],
            _train_args(runs, out),
            ["experiment", "compare", shards, out],
            ["sample", root / "straight", "--out", out, "-p", "a red circle"],
            ["eval", "geneval", root / "straight", "--out", out],
        ],
        db: [["data", "annotate", pipeline.shards, db, "-r", "sharpness"]],
    }
    for target, argvs in commands.items():
        with output_lock(target):  # held by this process: as a running command would
            for argv in argvs:
                result = runner.invoke(app, [str(a) for a in argv], env={"COLUMNS": "300"})
                assert_clean_error(result, "is in use by another miro process")
        assert not target.exists()  # the refused commands wrote nothing
    assert _hidden(tmp_path) == []  # and the lock files go with their owners
