"""Fixtures for the control-plane tests: a store on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from pulsebeam.config import StoreConfig
from pulsebeam.control.api import create_api
from pulsebeam.control.events import ControlEvent
from pulsebeam.control.store import Store
from pulsebeam.control.views import Actor
from tests.fixtures.postgres import postgres_server, postgres_url

from .helpers import FAST_HASHER, PASSWORD

__all__ = ["ApiClient", "EventLog", "postgres_server", "postgres_url"]

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class EventLog:
    """An EventSink that remembers what it was given, in order."""

    def __init__(self) -> None:
        self.events: list[ControlEvent] = []

    async def __call__(self, event: ControlEvent) -> None:
        self.events.append(event)


@pytest.fixture(params=BACKENDS)
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    """A fresh, empty database of each backend."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        return StoreConfig(data_dir=tmp_path / "unused", database_url=url)
    return StoreConfig(data_dir=tmp_path / "data")


@pytest.fixture
async def store(store_config: StoreConfig) -> AsyncIterator[Store]:
    opened = await Store.open(store_config, hasher=FAST_HASHER)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def events() -> EventLog:
    return EventLog()


class ApiClient:
    """An httpx client on the API app in-process, remembering the CSRF token of its session."""

    def __init__(self, app: FastAPI, base_url: str = "http://127.0.0.1") -> None:
        self.app = app
        # Mounted at /api/v1 as the server mounts it.
        outer = Starlette(routes=[Mount("/api/v1", app)])
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=outer, client=("127.0.0.1", 40000)),
            base_url=base_url + "/api/v1",
        )
        self.csrf: str | None = None

    async def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        response = await self.http.post("/session", json={"email": email, "password": password})
        if response.status_code == 200:
            self.csrf = response.json()["csrf_token"]
        return response

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.csrf is not None:
            headers.setdefault("X-CSRF-Token", self.csrf)
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def aclose(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(StoreConfig(data_dir=tmp_path / "api"), hasher=FAST_HASHER)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def api_app(sqlite_store: Store, events: EventLog) -> FastAPI:
    return create_api(sqlite_store, events, secure_cookies=False, allow_signup=True)


@pytest.fixture
async def client(api_app: FastAPI) -> AsyncIterator[ApiClient]:
    c = ApiClient(api_app)
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture
async def alice(sqlite_store: Store, client: ApiClient) -> ApiClient:
    """``client`` signed in as alice@example.com."""
    await sqlite_store.create_account("alice@example.com", PASSWORD, Actor.admin_cli())
    assert (await client.sign_in("alice@example.com")).status_code == 200
    return client
