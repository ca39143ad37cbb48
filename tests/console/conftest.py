"""Fixtures for the console tests: the console mounted at /console over a real SQLite store,
driven in-process with httpx, or served by a real uvicorn on 127.0.0.1 for Chromium."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from pulsebeam.config import StoreConfig
from pulsebeam.console import announce_first_run, create_console
from pulsebeam.control.events import ControlEvent
from pulsebeam.control.store import Store

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots" / "console"
PASSWORD = "correct horse battery"


class EventLog:
    """The console's event sink in tests: remembers what was published, in order."""

    def __init__(self) -> None:
        self.events: list[ControlEvent] = []

    async def __call__(self, event: ControlEvent) -> None:
        self.events.append(event)


@dataclass
class ConsoleUnderTest:
    store: Store
    events: EventLog
    app: Starlette  # the console app itself
    root: Starlette  # the app that mounts it at /console, as the server does


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(StoreConfig(data_dir=tmp_path / "data"))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def console(store: Store) -> ConsoleUnderTest:
    events = EventLog()
    app = create_console(store, events, secure_cookies=False)
    return ConsoleUnderTest(store, events, app, Starlette(routes=[Mount("/console", app=app)]))


@pytest.fixture
async def client(console: ConsoleUnderTest) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=console.root)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


async def first_account(
    console: ConsoleUnderTest, client: httpx.AsyncClient, email: str = "owner@example.com"
) -> str:
    """Create the first account through the setup link; the client is then signed in. Returns
    the session's CSRF token."""
    url = await announce_first_run(console.app, "http://127.0.0.1/console")
    assert url is not None
    page = await client.get(url)
    assert page.status_code == 200
    token = url.split("token=")[1]
    done = await client.post(
        "/console/setup",
        data={
            "csrf": csrf_of(page.text),
            "token": token,
            "email": email,
            "password": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert done.status_code == 303, done.text
    projects = await client.get("/console/projects")
    assert projects.status_code == 200
    return csrf_of(projects.text)


@pytest.fixture
async def live_console(console: ConsoleUnderTest) -> AsyncIterator[str]:
    """The console served by uvicorn on 127.0.0.1 (port 0); yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    config = uvicorn.Config(
        console.root, lifespan="off", log_config=None, access_log=False, ws="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers only this flag
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task
        sock.close()
