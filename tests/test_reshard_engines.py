"""`miro data reshard --engine ray`: one Ray task per output shard, the same shards as the
local engine for the same seed; a missing Ray or an unreachable address is one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from miro_data.reshard import ReshardConfig, reshard
from miro_data.trainshards import read_manifest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _tars(folder: Path) -> dict[str, bytes]:
    return {e.name: (folder / e.name).read_bytes() for e in read_manifest(folder).shards}


def test_ray_writes_the_same_shards_as_the_local_engine(pipeline, tmp_path, ray_local) -> None:
    args = dict(shards=str(pipeline.shards), db=pipeline.db, shard_size=50, shuffle_seed=3)
    local = reshard(ReshardConfig(**args, out=tmp_path / "local"))
    remote = reshard(ReshardConfig(**args, out=tmp_path / "ray", engine="ray", in_flight=2))
    assert (remote.shards, remote.samples) == (local.shards, local.samples) and local.shards > 2
    assert read_manifest(tmp_path / "ray").shards == read_manifest(tmp_path / "local").shards
    # the same samples in the same shards, byte for byte (the tars' headers too)
    assert _tars(tmp_path / "ray") == _tars(tmp_path / "local")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local", "ray"]  # nothing staged left


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )  # fmt: skip


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed on return: nothing listens there


@pytest.mark.parametrize("how", ["unreachable", "missing"])
def test_ray_unavailable_is_one_line_and_writes_nothing(pipeline, tmp_path, how) -> None:
    out = tmp_path / "out"
    args = ["data", "reshard", str(pipeline.shards), str(pipeline.db), str(out), "--engine", "ray"]
    if how == "unreachable":
        port = _refused_port()
        result = _cli("-m", "cli.main", *args, "--ray-address", f"ray://127.0.0.1:{port}")
        expected = f"cannot reach Ray at --ray-address ray://127.0.0.1:{port}"
    else:  # an install without the extra: importing ray fails
        code = "import sys; sys.modules['ray'] = None; from cli.main import main; main()"
        result = _cli("-c", code, *args)
        expected = 'pip install "miro[ray]"'
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no output, no staging folder, no lock left
