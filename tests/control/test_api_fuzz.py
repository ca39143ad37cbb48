"""Property-based run over the OpenAPI document (schemathesis strategies, hypothesis driver):
valid and invalid requests to every operation, signed in and not, against real and made-up
project ids. No request may cause a 5xx, and every 4xx must be our JSON error body."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from pulsebeam.config import StoreConfig
from pulsebeam.control.api import create_api
from pulsebeam.control.store import Store
from pulsebeam.control.views import Actor

from .conftest import EventLog
from .helpers import FAST_HASHER, PASSWORD

BASE = "http://127.0.0.1/api/v1"
EXAMPLES = 15  # per operation and backend: the whole run stays well under a minute
MOSTLY = st.sampled_from([True, True, True, False])  # deep paths need a caller and a project


class Target:
    """The API on a fresh store, with a signed-in account and a project it owns."""

    def __init__(self, runner: asyncio.Runner, config: StoreConfig) -> None:
        self.runner = runner
        self.store = runner.run(Store.open(config, hasher=FAST_HASHER))
        self.app = create_api(self.store, EventLog(), secure_cookies=False, allow_signup=True)
        # Served under /api/v1 as when mounted, but without an outer router in front: paths the
        # outer router cannot match (a newline in a path) are that router's business, not ours.
        transport = httpx.ASGITransport(
            app=self.app, root_path="/api/v1", raise_app_exceptions=False
        )
        self.http = httpx.AsyncClient(transport=transport)
        self.account = runner.run(
            self.store.create_account("fuzz@example.com", PASSWORD, Actor.admin_cli())
        )
        token = runner.run(self.store.create_api_token(self.account.id, "fuzz", None, Actor("t")))
        self.auth = {"Authorization": f"Bearer {token.token}"}
        self.project_id = self.new_project()
        self.statuses: Counter[int] = Counter()

    def new_project(self) -> str:
        actor = Actor(self.account.email, self.account.id)
        return self.runner.run(self.store.create_project("Fuzz", self.account.id, actor)).id

    def send(self, kwargs: dict[str, Any]) -> httpx.Response:
        headers = dict(kwargs.get("headers") or {})
        if kwargs.get("cookies"):  # httpx wants cookies on the client; a header is the same
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in kwargs["cookies"].items())
        request = {
            "method": kwargs["method"],
            "url": kwargs["url"],
            "headers": headers,
            "params": kwargs.get("params"),
        }
        for name in ("json", "data", "content", "files"):
            if name in kwargs:
                raw = name == "data" and isinstance(kwargs[name], bytes | str)
                request["content" if raw else name] = kwargs[name]
        response = self.runner.run(self.http.request(**request))
        self.statuses[response.status_code] += 1
        return response

    def close(self) -> None:
        self.runner.run(self.http.aclose())
        self.runner.run(self.store.close())


def _operations() -> list[Any]:
    # The document only: building it needs no store.
    spec = create_api(None, EventLog(), secure_cookies=False).openapi()  # type: ignore[arg-type]
    schema = schemathesis.openapi.from_dict(spec)
    return [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]


OPERATIONS = _operations()


def test_no_server_errors(store_config: StoreConfig) -> None:
    """On SQLite and on PostgreSQL (which refuses some text SQLite takes, such as NUL)."""
    with asyncio.Runner() as runner:
        target = Target(runner, store_config)
        try:
            for operation in OPERATIONS:
                _explore(target, operation)
            # The run got past authentication and validation, not only bounced off them.
            successes = sum(n for status, n in target.statuses.items() if status < 300)
            assert successes >= len(OPERATIONS), target.statuses
        finally:
            target.close()


def _explore(target: Target, operation: Any) -> None:
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, signed_in=MOSTLY, real_project=MOSTLY)
    def check(case: Any, signed_in: bool, real_project: bool) -> None:
        params = case.path_parameters
        if real_project and params and "project_id" in params:
            params["project_id"] = target.project_id
        headers = dict(target.auth) if signed_in else {}
        response = target.send(case.as_transport_kwargs(base_url=BASE, headers=headers))
        where = f"{case.method} {response.request.url} -> {response.status_code} {response.text}"
        assert response.status_code < 500, where
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/json", where
            error = response.json()["error"]
            assert isinstance(error["code"], str), where
            assert isinstance(error["message"], str), where
        if (
            case.method.upper() == "DELETE"
            and case.operation.path == "/projects/{project_id}"
            and response.status_code == 204
        ):
            target.project_id = target.new_project()

    check()
