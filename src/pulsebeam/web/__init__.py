"""The browser peer SDK (``pulsebeam-peer.js``) and the demo page, as files and ASGI routes.

The SDK is one hand-written ES module served by the PulseBeam server under ``/sdk/``::

    from pulsebeam.web import sdk_mount
    routes = [..., sdk_mount()]  # serves /sdk/pulsebeam-peer.js

Applications on other origins import it as a module script, so its responses allow any origin
(``Access-Control-Allow-Origin: *``): the file is public code, no credentials are involved.
The demo page (``demo/``) is served by ``examples/app_server.py`` with :func:`demo_app`.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["DEMO_DIR", "SDK_FILENAME", "SDK_PATH", "demo_app", "sdk_mount"]

SDK_FILENAME = "pulsebeam-peer.js"
SDK_PATH = Path(__file__).with_name(SDK_FILENAME)
DEMO_DIR = Path(__file__).with_name("demo")

_HEADERS = {
    "access-control-allow-origin": "*",
    # Revalidated on each load (ETag), so a server upgrade reaches browsers at once.
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
}


async def _sdk(request: Request) -> Response:
    return FileResponse(SDK_PATH, media_type="text/javascript; charset=utf-8", headers=_HEADERS)


def sdk_mount(prefix: str = "/sdk") -> Mount:
    """A Starlette route that serves ``<prefix>/pulsebeam-peer.js`` (GET and HEAD)."""
    return Mount(prefix, routes=[Route(f"/{SDK_FILENAME}", _sdk, methods=["GET", "HEAD"])])


def demo_app() -> StaticFiles:
    """The demo page's static files (``index.html``, ``demo.js``, ``demo.css``)."""
    return StaticFiles(directory=DEMO_DIR, html=True)
