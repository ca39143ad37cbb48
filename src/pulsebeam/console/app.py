"""The console app factory and the first-run setup link.

``create_console`` builds a Starlette app meant to be mounted (at ``/console`` by the server);
links inside it follow wherever it is mounted. ``announce_first_run`` is called once at start:
while no account exists it logs, and returns, the one-time link that creates the first account.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pulsebeam.console import access_pages, monitor_pages, project_pages, session_pages
from pulsebeam.console.common import Console, SignInRequiredError, redirect, render
from pulsebeam.console.filters import FILTERS
from pulsebeam.control.api.security import CookieNames
from pulsebeam.control.events import EventSink
from pulsebeam.control.store import Store
from pulsebeam.control.throttle import LoginThrottle
from pulsebeam.errors import PulseBeamError

__all__ = ["announce_first_run", "create_console"]

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent


_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        b" connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # The setup link carries its token in the URL: never send it to another site.
    (b"referrer-policy", b"no-referrer"),
]


class _SecurityHeaders:
    """Security headers on every console response; pages (not static files) are never cached,
    since they show account data and, once, a key's secret."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(scope.get("root_path", "") + "/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *_HEADERS]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, SignInRequiredError):
        query = {"next": request.url.path} if request.method == "GET" else None
        return redirect(request, "signin", query=query)
    if isinstance(exc, PulseBeamError):
        status, message = exc.http_status, str(exc)
    elif isinstance(exc, HTTPException):
        status, message = (
            exc.status_code,
            "page not found" if exc.status_code == 404 else exc.detail,
        )
    else:
        raise exc
    return render(
        request,
        "error.html",
        {"title": "Error", "message": message, "status": status},
        status=status,
    )


def _routes() -> list[Route | Mount]:
    s, p, a, m = session_pages, project_pages, access_pages, monitor_pages
    project = "/projects/{project_id}"
    get, post = ["GET"], ["POST"]
    return [
        Route("/", s.home, methods=get, name="home"),
        Route("/setup", s.setup, methods=get, name="setup"),
        Route("/setup", s.setup_submit, methods=post, name="setup_submit"),
        Route("/signin", s.sign_in, methods=get, name="signin"),
        Route("/signin", s.sign_in_submit, methods=post, name="signin_submit"),
        Route("/signout", s.sign_out, methods=post, name="signout"),
        Route("/projects", p.projects, methods=get, name="projects"),
        Route("/projects", p.create_project, methods=post, name="project_create"),
        Route(project, p.overview, methods=get, name="project"),
        Route(f"{project}/rename", p.rename_project, methods=post, name="project_rename"),
        Route(f"{project}/delete", p.delete_project_confirm, methods=get, name="project_delete"),
        Route(f"{project}/delete", p.delete_project, methods=post, name="project_delete_submit"),
        Route(f"{project}/members", p.members, methods=get, name="members"),
        Route(f"{project}/members", p.add_member, methods=post, name="member_add"),
        Route(
            f"{project}/members/{{account_id}}/role",
            p.set_member_role,
            methods=post,
            name="member_role",
        ),
        Route(
            f"{project}/members/{{account_id}}/remove",
            p.remove_member,
            methods=post,
            name="member_remove",
        ),
        Route(f"{project}/keys", a.keys, methods=get, name="keys"),
        Route(f"{project}/keys", a.create_key, methods=post, name="key_create"),
        Route(
            f"{project}/keys/{{kid}}/delete", a.delete_key_confirm, methods=get, name="key_delete"
        ),
        Route(
            f"{project}/keys/{{kid}}/delete", a.delete_key, methods=post, name="key_delete_submit"
        ),
        Route(f"{project}/bans", a.bans, methods=get, name="bans"),
        Route(f"{project}/bans", a.add_ban, methods=post, name="ban_add"),
        Route(f"{project}/bans/{{ban_id}}/remove", a.remove_ban, methods=post, name="ban_remove"),
        Route(f"{project}/usage", m.usage, methods=get, name="usage"),
        Route(f"{project}/connections", m.connections, methods=get, name="connections"),
        Route(f"{project}/audit", m.audit, methods=get, name="audit"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


def create_console(
    store: Store,
    events: EventSink,
    *,
    secure_cookies: bool,
    throttle: LoginThrottle | None = None,
    public_url: str | None = None,
) -> Starlette:
    """The console as an ASGI app, to mount at ``/console``.

    ``events`` receives ``KeyDeleted``/``BanAdded``/``BanRemoved`` after each change commits.
    ``secure_cookies`` (true under TLS) picks the same session cookie as the REST API.
    ``throttle`` may be shared with the API so sign-in failures count once across both.
    ``public_url`` (e.g. ``https://rtc.example.com``) is the server URL shown in the quick
    start; by default the URL the browser used.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(FILTERS)
    templates = Jinja2Templates(env=env)
    app = Starlette(
        routes=_routes(),
        middleware=[Middleware(_SecurityHeaders)],
        exception_handlers={PulseBeamError: _error, HTTPException: _error},
    )
    app.state.console = Console(
        store=store,
        cookies=CookieNames.for_tls(secure_cookies),
        throttle=throttle or LoginThrottle(),
        templates=templates,
        public_url=public_url,
    )
    # The REST API's publish() reads this, so key and ban changes are published the same way.
    app.state.events = events
    return app


async def announce_first_run(console: Starlette, console_url: str) -> str | None:
    """While no account exists: log and return the one-time link that creates the first one
    (``console_url`` is where the console is mounted, e.g. ``http://127.0.0.1:8080/console``).
    The link works until it is used or the process ends."""
    state = console_of_app(console)
    if await state.store.has_accounts():
        return None
    url = f"{console_url.rstrip('/')}/setup?token={state.first_run.issue()}"
    logger.warning("no account exists yet: create the first one at %s", url)
    return url


def console_of_app(app: Starlette) -> Console:
    state: Console = app.state.console
    return state
