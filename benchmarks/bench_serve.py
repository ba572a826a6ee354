"""`miro serve` speed: pages on a large database, thumbnails from shards, one Generate request.

1. A synthetic database of 1 M samples × 6 rewards (6 M score rows, 64 bin levels): the
   Overview page (first request, then cached) and the Bins page of every reward (goal < 2 s).
2. Thumbnails from real shards (256 px JPEG Shapes World images) by random access: images/s
   from a cold cache (goal ≥ 200/s) and from the cache.
3. One Generate request (25 steps, ω = 3) with the default tiny model (`unet-tiny`, one
   training step: the speed does not depend on the weights).

Requests go through Starlette's TestClient: the whole app, without the network.

    python benchmarks/bench_serve.py [--rows 1000000] [--thumbs 2000]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("MIRO_NO_PROGRESS", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import webdataset as wds
from PIL import Image
from starlette.testclient import TestClient

from miro_data import db
from miro_data.bins import BinsConfig, bins
from miro_data.synth import SynthConfig, generate_sample
from miro_serve import ServeConfig, create_app

REWARDS = ("sharpness", "edge_sharpness", "noise", "colorfulness", "contrast", "aesthetic")
PER_SHARD = 10_000


def make_database(path: Path, rows: int) -> None:
    """`rows` samples in shards of 10 k (1 % failed downloads), six correlated rewards."""
    con = db.connect(path, create=True)
    con.execute("SELECT setseed(0.5)")
    con.execute(
        f"""INSERT INTO samples SELECT
            printf('%05d', i // {PER_SHARD}), printf('%09d', i), 'a photo of a red circle',
            printf('images/%09d.png', i), 256, 256, 'jpg',
            CASE WHEN i % 100 = 99 THEN 'failed_to_download' ELSE 'ok' END, NULL, '{{}}'
        FROM range({rows}) t(i)"""
    )
    base = "(hash(key) % 1000000) / 1000000.0"  # shared by all rewards: correlations
    for k, reward in enumerate(REWARDS):
        con.execute(
            f"""INSERT INTO scores SELECT shard, key, '{reward}', '1',
                {k + 1} * ({base} * 0.{k + 3} + random()) FROM samples WHERE status = 'ok'"""
        )
        con.execute("INSERT INTO reward_versions VALUES ($r, '1', now(), now())", {"r": reward})
    con.execute(
        """INSERT INTO failures SELECT shard, key, 'read', NULL, NULL, 'HTTP Error 404'
        FROM samples WHERE status <> 'ok'"""
    )
    db.refresh_wide_view(con)
    con.close()
    bins(BinsConfig(db=path, n_bins=64, sample=100_000))


def make_shards(root: Path, n: int) -> Path:
    """n Shapes World images at 256 px, JPEG, under the database's first shard names and keys."""
    out = root / "shards"
    out.mkdir()
    cfg = SynthConfig(out=root, n=min(n, 200), size=256, seed=0)
    pictures = [generate_sample(i, cfg)[0] for i in range(cfg.n)]  # reused: decode cost is equal
    for start in range(0, n, PER_SHARD):
        with wds.TarWriter(str(out / f"{start // PER_SHARD:05d}.tar")) as sink:
            for i in range(start, min(n, start + PER_SHARD)):
                buf = io.BytesIO()
                Image.fromarray(pictures[i % len(pictures)]).save(buf, format="JPEG", quality=90)
                sink.write({"__key__": f"{i:09d}", "jpg": buf.getvalue(), "txt": "a photo"})
    return out


def make_run(root: Path) -> Path:
    """One training step of unet-tiny, the default model."""
    from bench_train import write_shards

    from miro_train.train import TrainConfig, train

    data = write_shards(root / "train", 64)
    out = root / "run"
    train(TrainConfig(shards=data, out=out, steps=1, batch_size=8, ckpt_every=1, workers=0))
    return out


def timed(client: TestClient, url: str, **params) -> float:
    start = time.perf_counter()
    response = client.get(url, params=params or None)
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, (url, response.text[:300])
    return elapsed


def bench_pages(client: TestClient) -> None:
    first = timed(client, "/")
    cached = min(timed(client, "/") for _ in range(3))
    print(f"Overview: first request {first:.2f} s, cached {cached * 1000:.0f} ms  (goal < 2 s)")
    times = {r: timed(client, "/bins", reward=r, per=12, seed=0) for r in REWARDS}
    worst = max(times, key=times.get)
    print(
        f"Bins (64 levels, 12 images a row): median {statistics.median(times.values()):.2f} s, "
        f"slowest {times[worst]:.2f} s ({worst})  (goal < 2 s)"
    )
    sample = timed(client, "/sample", shard="00000", key="000000001")
    query = timed(client, "/query", sql="SELECT * FROM scores_wide ORDER BY sharpness DESC")
    print(f"Sample page {sample:.2f} s; Query page (1 M-row ORDER BY) {query:.2f} s")


def _thumb_urls(n: int) -> list[str]:
    keys = [f"{i:09d}" for i in range(n) if i % 100 != 99]  # every 100th failed to download
    return [f"/image?shard={int(k) // PER_SHARD:05d}&key={k}" for k in keys]


def bench_thumbnails(client: TestClient, n: int) -> None:
    """Sequential requests through the TestClient (in-process), cold cache then cached."""
    urls = _thumb_urls(n)
    rates = []
    for _ in ("cold", "cached"):
        start = time.perf_counter()
        for url in urls:
            assert client.get(url).status_code == 200
        rates.append(len(urls) / (time.perf_counter() - start))
    print(
        f"Thumbnails, in-process, one at a time (256 px JPEG → 128 px): {rates[0]:.0f}/s cold, "
        f"{rates[1]:.0f}/s cached  (goal ≥ 200/s)"
    )


def bench_thumbnails_http(cfg: ServeConfig, n: int, root: Path, parallel: int = 4) -> None:
    """Over real HTTP from uvicorn, fetched by curl with `parallel` connections (as a browser
    loads a page of thumbnails); a C client, so that the client does not take the server's CPU."""
    import uvicorn

    curl = shutil.which("curl")
    if curl is None:
        print("Thumbnails over HTTP: skipped (no curl)")
        return
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(cfg), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    urls = _thumb_urls(n)
    config = root / "curl.cfg"
    config.write_text("".join(f'url = "{base}{u}"\noutput = "/dev/null"\n' for u in urls))
    start = time.perf_counter()
    done = subprocess.run(
        [curl, "-s", "--parallel", "--parallel-max", str(parallel), "-w", "%{http_code}\n",
         "-K", str(config)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rate = len(urls) / (time.perf_counter() - start)
    server.should_exit = True
    thread.join()
    assert done.stdout.split().count("200") == len(urls), done.stdout[-300:]
    print(
        f"Thumbnails over HTTP (uvicorn, curl with {parallel} connections, cold cache): {rate:.0f}/s"
    )


def bench_generate(client: TestClient) -> None:
    params = {"prompt": "a photo of a red circle", "steps": 25, "guidance": 3}
    timed(client, "/api/generate", **params, seed=0)  # warm-up: first call allocates
    times = [timed(client, "/api/generate", **params, seed=s) for s in range(1, 4)]
    print(f"Generate (unet-tiny, 32 px, 25 steps, ω=3): {statistics.median(times):.2f} s per image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--thumbs", type=int, default=2_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        make_database(root / "big.duckdb", args.rows)
        shards = make_shards(root, args.thumbs)
        run = make_run(root)
        print(
            f"setup: {args.rows:,} samples × {len(REWARDS)} rewards in {time.perf_counter() - start:.0f} s"
        )
        cfg = ServeConfig(db=root / "big.duckdb", shards=str(shards), run=run)
        with TestClient(create_app(cfg), base_url="http://127.0.0.1") as client:
            bench_pages(client)
            bench_thumbnails(client, args.thumbs)
            bench_generate(client)
        bench_thumbnails_http(cfg, args.thumbs, root)


if __name__ == "__main__":
    main()
