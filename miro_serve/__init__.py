"""`miro serve`: a local web app to explore an annotated corpus and steer a trained model.

Pages: Overview, Bins, Query, Sample and (with a run) Generate — see ARCHITECTURE.md. The
package's only public entry point is `serve(ServeConfig)`; `create_app` builds the Starlette
application without running it (tests and benchmarks drive it directly).
"""

from __future__ import annotations

from miro_serve.config import ServeConfig


def serve(cfg: ServeConfig) -> None:
    """Run the web app until interrupted (Ctrl-C)."""
    from miro_serve.app import run

    run(cfg)


def create_app(cfg: ServeConfig):  # -> starlette.applications.Starlette
    """The application for `cfg`, not yet served."""
    from miro_serve.app import build_app

    return build_app(cfg)


__all__ = ["ServeConfig", "create_app", "serve"]
