"""Routes of `miro serve`: a Starlette app rendering Jinja2 pages, plus images and one JSON API.

Every route only reads. A bad parameter, query, shard or key raises a `BadRequest` /
`NotFound` (or a library `MiroError`), which becomes the error page with status 400 / 404 —
for /api/ routes a JSON `{"error": …}`; anything else is logged with its traceback and
answered with a short 500 page that shows none of it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from miro_data.common import MiroError
from miro_serve import charts, sql
from miro_serve.config import BadRequest, NotFound, ServeConfig
from miro_serve.corpus import Corpus, check_version
from miro_serve.images import ShardImages

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_PER_LEVEL = 48
MAX_PAGE_ROWS = 500

env = Environment(loader=PackageLoader("miro_serve", "templates"), autoescape=select_autoescape())


def _image_url(shard: str, key: str, size: str = "thumb") -> str:
    return "/image?" + urlencode({"shard": shard, "key": key, "size": size})


def _sample_url(shard: str, key: str) -> str:
    return "/sample?" + urlencode({"shard": shard, "key": key})


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _cell(value: Any) -> str:
    text = _fmt(value, 6) if isinstance(value, float) else str(value)
    return text if len(text) <= 300 else text[:300] + "…"


env.globals |= {"image_url": _image_url, "sample_url": _sample_url, "urlencode": urlencode}
env.filters |= {"fmt": _fmt, "cell": _cell, "corr_style": charts.correlation_style}


def _int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    """A whole-number query parameter within [lo, hi], or a BadRequest naming it."""
    text = request.query_params.get(name, "")
    if text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, not {text!r}") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo:,} and {hi:,}, not {value:,}")
    return value


def _text(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise BadRequest(f"the parameter {name!r} is missing")
    return value


class Pages:
    """The app's state (corpus, images, model) and its route handlers."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.corpus = Corpus(cfg.db)
        self.images = ShardImages(
            cfg.shards, self.corpus.shard_names, cache_bytes=cfg.thumb_cache_mb << 20
        )
        self.generator = None
        if cfg.run is not None:
            from miro_serve.generate import Generator

            self.generator = Generator(cfg.run, cfg.device, cfg.weights, cfg.allow_download)

    def close(self) -> None:
        self.images.close()
        self.corpus.close()

    def render(
        self, name: str, request: Request, status: int = 200, **context: Any
    ) -> HTMLResponse:
        context |= {
            "request": request,
            "db": self.cfg.db,
            "has_run": self.generator is not None,
            "has_shards": bool(self.images.paths),
        }
        return HTMLResponse(env.get_template(name).render(**context), status_code=status)

    # -- pages ---------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        version = check_version(request.query_params.get("version"))
        data = self.corpus.overview(version)
        hists = [(h, charts.histogram_svg(h)) for h in data["histograms"]]
        return self.render(
            "overview.html", request, data=data, hists=hists, versions=self.corpus.bin_versions
        )

    def bins(self, request: Request) -> Response:
        rewards = list(self.corpus.reward_versions)
        if not rewards:
            raise NotFound("the database has no scores yet: run `miro data annotate`")
        reward = request.query_params.get("reward") or rewards[0]
        version = check_version(request.query_params.get("version"))
        per = _int(request, "per", 12, 1, MAX_PER_LEVEL)
        seed = _int(request, "seed", 0, 0, 2**31 - 1)
        data = self.corpus.bin_rows(reward, version, per, seed)
        return self.render(
            "bins.html", request, data=data, rewards=rewards, per=per, seed=seed,
            versions=self.corpus.bin_versions,
        )  # fmt: skip

    def query(self, request: Request) -> Response:
        text = request.query_params.get("sql", "")
        context: dict[str, Any] = {
            "sql": text, "examples": sql.examples(list(self.corpus.reward_versions)),
            "result": None, "error": None, "max_rows": self.cfg.max_rows,
            "seconds": self.cfg.query_seconds,
        }  # fmt: skip
        status = 200
        if text.strip():
            try:
                page = _int(request, "page", 1, 1, self.cfg.max_rows)
                rows = _int(request, "rows", 50, 1, MAX_PAGE_ROWS)
                result = sql.run_page(
                    self.corpus.cursor, text, page=page, rows=rows,
                    max_rows=self.cfg.max_rows, seconds=self.cfg.query_seconds,
                )  # fmt: skip
                context |= {"result": result, "page": page, "rows": rows,
                            "thumbs": {"shard", "key"} <= set(result.columns)}  # fmt: skip
            except BadRequest as err:
                context["error"], status = str(err), err.status
        return self.render("query.html", request, status=status, **context)

    def export(self, request: Request) -> Response:
        fmt = request.query_params.get("format", "parquet")
        data, n = sql.export(
            self.corpus.cursor, _text(request, "sql"), fmt,
            max_rows=self.cfg.max_rows, seconds=self.cfg.query_seconds,
        )  # fmt: skip
        media = "application/vnd.apache.parquet" if fmt == "parquet" else "text/csv"
        headers = {
            "Content-Disposition": f'attachment; filename="query.{fmt}"',
            "X-Miro-Rows": str(n),
        }
        return Response(data, media_type=media, headers=headers)

    def sample(self, request: Request) -> Response:
        shard, key = _text(request, "shard"), _text(request, "key")
        version = check_version(request.query_params.get("version"))
        data = self.corpus.sample(shard, key, version)
        return self.render("sample.html", request, shard=shard, key=key, data=data)

    def image(self, request: Request) -> Response:
        shard, key = _text(request, "shard"), _text(request, "key")
        size = request.query_params.get("size", "thumb")
        if size == "thumb":
            data, media = self.images.thumbnail(shard, key, self.cfg.thumb_side)
        elif size == "full":
            data, media = self.images.full(shard, key)
        else:
            raise BadRequest(f"size must be thumb or full, not {size!r}")
        headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
        return Response(data, media_type=media, headers=headers)

    def generate_page(self, request: Request) -> Response:
        if self.generator is None:
            raise NotFound("Generate needs a model: restart with `miro serve … --run RUN`")
        from miro_data.rewards import REGISTRY

        # The model's own rewards first: weight-free ones work on any machine.
        own = [r for r in self.generator.rewards if r in REGISTRY]
        scorers = own + sorted(set(REGISTRY) - set(own))
        return self.render("generate.html", request, info=self.generator.info(), scorers=scorers)

    def generate_api(self, request: Request) -> Response:
        from miro_serve.generate import data_url, parse_request

        if self.generator is None:
            raise NotFound("no model: restart with `miro serve … --run RUN`")
        png, row = self.generator.make(parse_request(dict(request.query_params)))
        return JSONResponse({"image": data_url(png), "manifest": row})


# ----------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------


def _error_response(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    html = env.get_template("error.html").render(status=status, message=message, has_run=False)
    return HTMLResponse(html, status_code=status)


async def _on_miro_error(request: Request, err: Exception) -> Response:
    return _error_response(request, getattr(err, "status", 400), str(err))


async def _on_http_error(request: Request, err: Exception) -> Response:
    assert isinstance(err, HTTPException)
    message = "no such page" if err.status_code == 404 else str(err.detail)
    return _error_response(request, err.status_code, message)


async def _on_bug(request: Request, err: Exception) -> Response:
    log.exception("internal error on %s", request.url.path)
    return _error_response(request, 500, "internal error (the server log has the details)")


def _lifespan(pages: Pages):
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        pages.close()

    return lifespan


def build_app(cfg: ServeConfig) -> Starlette:
    """The Starlette application; its pages read the database and shards named in `cfg`."""
    pages = Pages(cfg)
    routes = [
        Route("/", pages.overview),
        Route("/bins", pages.bins),
        Route("/query", pages.query),
        Route("/export", pages.export),
        Route("/sample", pages.sample),
        Route("/image", pages.image),
        Route("/generate", pages.generate_page),
        Route("/api/generate", pages.generate_api),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    # Only names that point at this machine: a web page elsewhere cannot reach the server
    # through DNS rebinding. Binding all interfaces is a deliberate choice: then any name.
    local = ["127.0.0.1", "localhost", "::1", cfg.host]
    hosts = ["*"] if cfg.host in ("0.0.0.0", "::") else local
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
        exception_handlers={
            MiroError: _on_miro_error,
            HTTPException: _on_http_error,
            Exception: _on_bug,
        },
        lifespan=_lifespan(pages),
    )
    app.state.pages = pages
    return app


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is a one-line error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise MiroError(f"cannot resolve --host {host!r}: {err}") from None
    family, kind, proto, _, address = infos[0]
    # The protocol must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets
    # only then, and without it Nagle + delayed ACKs add 40 ms to every response.
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)  # connections queue from here on, until uvicorn accepts them
    except OSError as err:
        sock.close()
        raise MiroError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def run(cfg: ServeConfig) -> None:
    """Serve until Ctrl-C."""
    import uvicorn

    sock = _bind(cfg.host, cfg.port)
    app = build_app(cfg)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    log.info("miro serve: http://%s:%d/  (Ctrl-C stops)", shown, port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    # uvicorn re-raises the Ctrl-C it shut down on; for a server that is the normal end.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
    log.info("miro serve: stopped")
