"""`miro data annotate --engine ray` against the local engine, on a real Ray cluster.

One `ray.cluster_utils.Cluster` per module (a head without CPUs, so all work lands on its
two worker nodes); each annotate run joins it as its own driver and leaves. Both engines
must leave identical `samples`, `scores`, `failures` and `ledger` rows (timing columns
aside) — also after a worker node is removed mid-run, and after the driver is killed and the
same command run again.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import CLASSIC

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]
TABLES = {
    "samples": "SELECT * FROM samples",
    "scores": "SELECT * FROM scores",
    "failures": "SELECT * FROM failures",
    "ledger": "SELECT shard, reward, version, n_read, n_scored, n_failed FROM ledger",
}
PICKY = "tests.ray_plugins:Picky"
GATED = "tests.ray_plugins:Gated"


def _tables(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {name: con.execute(sql + " ORDER BY ALL").fetchall() for name, sql in TABLES.items()}
    finally:
        con.close()


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "MIRO_NO_PROGRESS": "1", **(extra or {})}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # The nodes' processes inherit this environment: Ray's workers import this checkout's
    # miro_data (and tests.ray_plugins), not an installed copy.
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", path)
        c = Cluster(
            initialize_head=True,
            connect=False,
            head_node_args={"num_cpus": 0, "include_dashboard": False},
        )
        for _ in range(2):  # 2 CPUs each: a node keeps a scoring actor and a read task going
            c.add_node(num_cpus=2)
        c.wait_for_nodes()
    yield c
    c.shutdown()


def _annotate(shards: Path, db: Path, rewards, **kw):
    from miro_data.annotate import AnnotateConfig, annotate

    return annotate(AnnotateConfig(shards=str(shards), db=db, rewards=tuple(rewards), **kw))


def test_ray_engine_leaves_the_tables_of_the_local_engine(pipeline, cluster, tmp_path: Path):
    """Same corpus, both engines: a first run, a reward added later (scoring only itself),
    and --retry-failed of the samples a reward failed on."""
    fail = {"picky": {"fail": 1}}
    rewards = (*CLASSIC, PICKY)
    ray = {"engine": "ray", "ray_address": cluster.address}
    local, remote = tmp_path / "local.duckdb", tmp_path / "ray.duckdb"
    _annotate(pipeline.shards, local, rewards, reward_options=fail)

    _annotate(pipeline.shards, remote, rewards[1:], reward_options=fail, **ray)
    con = duckdb.connect(str(remote), read_only=True)
    before = con.execute("SELECT shard, reward, finished_at FROM ledger ORDER BY ALL").fetchall()
    con.close()
    report = _annotate(pipeline.shards, remote, rewards, reward_options=fail, **ray)
    assert report.scored[CLASSIC[0]] == pipeline.n  # the reward added later scored every sample
    con = duckdb.connect(str(remote), read_only=True)
    after = con.execute(
        "SELECT shard, reward, finished_at FROM ledger WHERE reward <> $r ORDER BY ALL",
        {"r": CLASSIC[0]},
    ).fetchall()
    con.close()
    assert after == before  # the rewards done before were not run again
    tables = _tables(local)
    assert _tables(remote) == tables
    assert any(row[2] == "score" and row[3] == "picky" for row in tables["failures"])

    for db, engine in ((local, {}), (remote, ray)):
        _annotate(pipeline.shards, db, rewards, retry_failed=True, **engine)
    retried = _tables(local)
    assert _tables(remote) == retried
    assert not [row for row in retried["failures"] if row[2] == "score"]
    assert retried["scores"] != tables["scores"]  # the retry scored the failed samples


def _cli(*args: object, env: dict[str, str] | None = None, prelude: str = ""):
    """`miro ARGS` in a subprocess; `prelude` runs first (e.g. to hide an installed package)."""
    code = f"{prelude}\nimport sys\nfrom cli.main import main\nsys.argv = ['miro', *sys.argv[1:]]\nmain()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        env=_env(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_killed_driver_reruns_to_the_tables_of_an_uninterrupted_run(
    pipeline, cluster, tmp_path: Path
):
    """One of the shards is cut in half: its `read` failure row (and no ledger rows) must
    come out of both engines alike."""
    shards = tmp_path / "shards"
    shutil.copytree(pipeline.shards, shards)
    cut = sorted(shards.glob("*.tar"))[1]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    rewards = ",".join(CLASSIC[:2])
    local, db = tmp_path / "local.duckdb", tmp_path / "ray.duckdb"
    _annotate(shards, local, CLASSIC[:2])
    args = ("data", "annotate", shards, db, "-r", rewards, "--engine", "ray")
    args += ("--ray-address", cluster.address)
    killed = _cli(*args, env={"MIRO_FAULT": "annotate.ingested"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    con = duckdb.connect(str(db), read_only=True)
    (shards_in,) = con.execute("SELECT count(DISTINCT shard) FROM samples").fetchone()
    con.close()
    assert shards_in == 1  # killed as it ingested its first finished shard
    again = _cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    # Ray's own log lines (timestamped, from its Python and C++ loggers) stay off the CLI's stderr
    assert not re.search(r"^\[?\d{4}-\d\d-\d\d|core_worker|WARNING", again.stderr, re.M), (
        again.stderr
    )
    tables = _tables(local)
    assert _tables(db) == tables
    assert [row[:3] for row in tables["failures"] if row[2] == "read"] == [(cut.stem, None, "read")]
    assert not list(Path(f"{db}.parts").glob("*"))  # every part ingested, none left over


@pytest.mark.parametrize(
    ("address", "prelude", "expected"),
    [
        ("127.0.0.1:1", "", "cannot reach Ray at --ray-address 127.0.0.1:1: Connection refused"),
        ("ray://127.0.0.1:1", "", "ray://127.0.0.1:1: Connection refused"),
        (None, "sys.modules['ray'] = None", '--engine ray needs Ray: pip install "miro[ray]"'),
    ],
    ids=["refused", "client-refused", "no-ray"],
)
def test_ray_engine_bad_setup_is_one_line_and_writes_nothing(
    pipeline, tmp_path: Path, address, prelude, expected
):
    db = tmp_path / "out" / "a.duckdb"
    db.parent.mkdir()
    args = ["data", "annotate", pipeline.shards, db, "-r", "contrast", "--engine", "ray"]
    args += ["--ray-address", address] if address else []
    result = _cli(*args, prelude=f"import sys\n{prelude}")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert list(db.parent.iterdir()) == []  # no database, no parts, no lock file


def test_an_address_some_other_server_holds_is_one_line_at_once(cluster, monkeypatch):
    """Ray's own connect would retry a port that answers but is not Ray for minutes."""
    from miro_data import raycluster
    from miro_data.common import MiroError

    raycluster.check_address(cluster.address)  # Ray's GCS speaks gRPC: accepted
    handler = http.server.BaseHTTPRequestHandler  # answers every request with an HTTP/1 error
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        port = web.server_address[1]
        for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
            with pytest.raises(MiroError, match="answers, but not as Ray"):
                raycluster.check_address(address)
        web.shutdown()
    # a server that accepts (the kernel does, before any accept()) and never says a word
    monkeypatch.setattr(raycluster, "CONNECT_TIMEOUT", 0.2)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(
            MiroError, match=f"cannot reach Ray at --ray-address {address}: timed out"
        ):
            raycluster.check_address(address)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"actors": 2}, "--actors is an option of --engine ray"),
        ({"ray_address": "auto"}, "--ray-address is an option of --engine ray"),
        ({"engine": "ray", "workers": 2}, "--workers is for --engine local"),
        ({"engine": "ray", "actors": 0}, "--actors must be 1 or more"),
        ({"engine": "ray", "device": "cuda:1"}, "Ray gives each actor its GPU"),
        ({"engine": "spark"}, "--engine 'spark': use local or ray"),
        ({"engine": "ray", "ray_address": "nohost"}, "use auto, HOST:PORT or ray://HOST:PORT"),
    ],
)
def test_engine_options_are_checked(options, expected):
    from miro_data.annotate import AnnotateConfig
    from miro_data.common import MiroError

    with pytest.raises(MiroError, match=expected.replace("(", r"\(").replace("'", ".")):
        AnnotateConfig(shards="x", db=Path("x.duckdb"), rewards=("contrast",), **options)


def test_ray_run_survives_losing_a_worker_node(pipeline, cluster, tmp_path: Path):
    """The worker node scoring the first batch is removed while that batch waits at a gate
    (the Gated reward's files): the actor restarts on the other node, lost tasks and blocks
    are redone, and the tables equal an uninterrupted local run's. Runs last: it shrinks the
    module's cluster."""
    rewards = (GATED, "sharpness")
    local, db, gate = tmp_path / "local.duckdb", tmp_path / "ray.duckdb", tmp_path / "gate"
    gate.mkdir()
    _annotate(pipeline.shards, local, rewards)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            _annotate(
                pipeline.shards, db, rewards, engine="ray", ray_address=cluster.address,
                reward_options={"gated": {"gate": str(gate)}}, batch_size=16,
            )  # fmt: skip
        except BaseException as err:  # handed to the test thread
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 240
        while not (gate / "started").exists():  # the scorer is inside its first batch
            assert thread.is_alive() and time.monotonic() < deadline, errors
            time.sleep(0.05)
        node_id = (gate / "started").read_text()
        node = next(n for n in cluster.worker_nodes if n.node_id == node_id)
        cluster.remove_node(node)
    finally:
        (gate / "go").touch()
        thread.join(timeout=300)
    assert not thread.is_alive() and not errors, errors
    assert _tables(db) == _tables(local)
