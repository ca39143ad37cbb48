"""Fixtures of the browser SDK tests: the real server with its TURN on 127.0.0.1 (loopback
relaying allowed), a project and key, the example app server, and Chromium browsers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import uvicorn
from playwright.sync_api import BrowserContext, Playwright, sync_playwright

from examples.app_server import Settings, create_app
from pulsebeam.control.records import AnalyticsEntry
from pulsebeam.control.store import Store
from tests.fixtures.server import ProjectKeys, RunningServer, create_project, start_server
from tests.web.demo_page import DemoPage, launch

T = TypeVar("T")


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for an unreachable server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def web_server() -> Iterator[RunningServer]:
    args = [
        "--turn-enabled",  # on 127.0.0.1, a free port: RunningServer.turn
        "--turn-allow-loopback",
        "--token-leeway",
        "0",
        "--records-flush",
        "0.5",
    ]
    with (
        tempfile.TemporaryDirectory(prefix="pulsebeam-web-") as tmp,
        start_server(Path(tmp), *args) as server,
    ):
        yield server


def off_loop(function: Callable[[], T]) -> T:
    """Run ``function`` on a thread of its own: the sync Playwright API owns this thread's
    event loop once started, so ``asyncio.run`` (store access) must happen elsewhere."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(function).result(timeout=60)


@pytest.fixture(scope="module")
def keys(web_server: RunningServer) -> ProjectKeys:
    return off_loop(lambda: create_project(web_server))


def recent_analytics(server: RunningServer, project_id: str) -> list[AnalyticsEntry]:
    """The project's newest analytics rows, read from the server's store."""

    async def read() -> list[AnalyticsEntry]:
        store = await Store.open(server.store_config)
        try:
            return await store.recent_analytics(project_id)
        finally:
            await store.close()

    return off_loop(lambda: asyncio.run(read()))


class AppServer:
    """``examples/app_server.py`` served by uvicorn on a thread, on a free port."""

    def __init__(self, settings: Settings) -> None:
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the app server did not start")
            time.sleep(0.02)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def app_servers() -> Iterator[Callable[[Settings], AppServer]]:
    started: list[AppServer] = []

    def start(settings: Settings) -> AppServer:
        started.append(AppServer(settings))
        return started[-1]

    yield start
    for app in started:
        app.stop()


@pytest.fixture(scope="module")
def app_url(
    web_server: RunningServer, keys: ProjectKeys, app_servers: Callable[[Settings], AppServer]
) -> str:
    return app_servers(Settings(web_server.url, keys.api_key, keys.api_secret, token_ttl=300)).url


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture
def browser(playwright: Playwright, tmp_path: Path) -> Iterator[Callable[[str], DemoPage]]:
    """``browser(app_url)`` -> a user on the demo page, each in its own Chromium and profile."""
    contexts: list[BrowserContext] = []

    def open_page(url: str) -> DemoPage:
        contexts.append(launch(playwright, tmp_path / f"profile-{len(contexts)}"))
        return DemoPage(contexts[-1], url)

    yield open_page
    for context in contexts:
        context.close()
