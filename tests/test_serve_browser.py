"""`miro serve` in a real browser: Debian's chromium driven by Playwright, uvicorn on a free port.

The install step brings chromium (Makefile: `make chromium`, a dependency of `make test`);
these tests skip only when it cannot be found. Waits are on page state (an element, an image
decoded, a count reached), never on time.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
from pathlib import Path

import pytest
from serve_fixtures import corpus_copy, tiny_run

from miro_serve import ServeConfig, create_app

CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
     if p and Path(p).exists()),
    None,
)  # fmt: skip
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not found: `make chromium` installs Debian's package"
)
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
WAIT_MS = 30_000  # an upper bound for a state to be reached, not a pacing delay


@pytest.fixture(scope="module")
def base_url(pipeline, tmp_path_factory):
    import uvicorn

    root = tmp_path_factory.mktemp("serve-browser")
    cfg = ServeConfig(db=corpus_copy(pipeline, root), shards=str(pipeline.shards),
                      run=tiny_run(pipeline, root))  # fmt: skip
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(cfg), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    # `server.started` turns true once the socket accepts: poll it, bounded, while the thread lives.
    tick = threading.Event()
    for _ in range(3000):
        if server.started or not thread.is_alive():
            break
        tick.wait(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser(base_url):  # the server (and its training run) first, then the browser
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()


def _images_loaded(page, selector: str, at_least: int) -> None:
    """Wait until `at_least` images matching `selector` have decoded (naturalWidth > 0)."""
    page.wait_for_function(
        """([sel, n]) => {
            const imgs = Array.from(document.querySelectorAll(sel)).slice(0, n);
            return imgs.length >= n && imgs.every((i) => i.complete && i.naturalWidth > 0);
        }""",
        arg=[selector, at_least],
    )


def test_every_page_loads_without_errors(page, base_url, pipeline):
    import duckdb

    con = duckdb.connect(str(pipeline.db), read_only=True)
    shard, key = con.execute(
        "SELECT shard, key FROM samples WHERE status = 'ok' ORDER BY key LIMIT 1"
    ).fetchone()
    con.close()
    errors: list[str] = []
    elsewhere: list[str] = []  # every script, style and image must come from the app itself
    page.on(
        "request",
        lambda r: None if r.url.startswith((base_url, "data:")) else elsewhere.append(r.url),
    )
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    for path, heading in [
        ("/", "Overview"), ("/bins", "Bins of"), ("/query", "Query"),
        (f"/sample?shard={shard}&key={key}", f"Sample {key}"), ("/generate", "Generate"),
    ]:  # fmt: skip
        response = page.goto(base_url + path)
        assert response is not None and response.status == 200, path
        assert heading in page.inner_text("h1"), path
    assert page.locator("input.target").count() == 5
    page.goto(base_url + "/")
    assert page.locator("svg.hist").count() == 5 and page.locator("svg.hist line.edge").count() > 0
    assert errors == [] and elsewhere == []


def test_query_shows_thumbnails(page, base_url):
    page.goto(base_url + "/query")
    page.fill("#sql", "SELECT shard, key, caption FROM scores_wide ORDER BY shard, key LIMIT 20")
    page.click("#run")
    page.wait_for_selector("#result img.thumb")
    assert page.locator("#result tr").count() == 21
    _images_loaded(page, "#result img.thumb", 5)
    assert page.locator("#export-parquet").get_attribute("href").startswith("/export?")
    page.click("details.examples summary")
    page.click("a.example >> nth=0")  # an example query runs too
    page.wait_for_selector("#result")


def test_open_a_bin_row_then_its_sample(page, base_url):
    page.goto(base_url + "/bins")
    page.select_option("#reward", "sharpness")
    page.click("#bins-form button")
    page.wait_for_selector("h1:has-text('Bins of sharpness')")
    top = page.locator("section.level").first
    levels = page.locator("section.level").evaluate_all("els => els.map(e => +e.dataset.level)")
    assert levels == sorted(levels, reverse=True) and len(levels) > 1
    _images_loaded(page, "section.level:first-of-type img.thumb", 3)
    top.locator("a").first.click()
    page.wait_for_selector("#full")
    _images_loaded(page, "#full", 1)
    assert page.inner_text("#caption").startswith("a photo of")
    assert "sharpness" in page.inner_text("#scores") and "percentile" in page.inner_text("#scores")


def test_moving_a_slider_brings_a_new_image(page, base_url):
    page.goto(base_url + "/generate")
    page.fill("#steps", "2")
    page.fill("input.target[data-reward='sharpness']", "0.3")
    page.wait_for_selector("#gallery figure.gen img")
    _images_loaded(page, "#gallery figure.gen img", 1)
    assert '"sharpness": 0.3' in page.inner_text("#gallery figure.gen pre")
    page.fill("input.target[data-reward='noise']", "0.6")
    page.wait_for_function("document.querySelectorAll('#gallery figure.gen').length === 2")
    assert '"noise": 0.6' in page.inner_text("#gallery figure.gen >> nth=0 >> pre")
    page.fill("#n", "2")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('#gallery figure.gen').length === 4")
    _images_loaded(page, "#gallery figure.gen img", 4)
    page.fill("#interval-lo", "0.4")  # ω over part of the trajectory, recorded in the row
    page.fill("#n", "1")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('#gallery figure.gen').length === 5")
    row = page.inner_text("#gallery figure.gen >> nth=0 >> pre")
    assert re.search(r'"guidance_interval": \[\s*0\.4,\s*1(\.0)?\s*\]', row), row
    page.fill("#guidance", "99")  # a slider bypasses the form's own checks: the server answers
    page.fill("input.target[data-reward='noise']", "0.2")
    page.wait_for_selector("#gen-error:not([hidden])")
    assert "guidance must be between" in page.inner_text("#gen-error")
