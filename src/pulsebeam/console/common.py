"""What every console page shares: the console's parts, the signed-in session, forms with CSRF
tokens, links under the mount point, rendering. (Revocation events go out through the REST
API's ``publish``, which reads ``app.state.events``.)"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from pulsebeam.control.api.security import CookieNames
from pulsebeam.control.store import Store
from pulsebeam.control.throttle import LoginThrottle
from pulsebeam.control.views import Actor, ProjectInfo, SessionInfo
from pulsebeam.errors import InvalidArgumentError, PermissionDeniedError, PulseBeamError

__all__ = [
    "MAX_FORM_BYTES",
    "NOTICES",
    "Console",
    "FormTooLargeError",
    "SignInRequiredError",
    "actor",
    "check_csrf",
    "console_of",
    "link",
    "project_form",
    "project_page",
    "read_form",
    "redirect",
    "render",
    "signed_in",
]

NOTICES = {
    "created": "Project created. Create a key next, then follow the quick start.",
    "renamed": "Project renamed.",
    "project_deleted": "Project deleted; every token of its keys stopped working.",
    "left_project": "You left the project.",
    "member_added": "Member added.",
    "member_removed": "Member removed.",
    "role_changed": "Role changed.",
    "key_deleted": "Key deleted: every token minted with it stopped working.",
    "ban_added": "Ban added: matching peers were disconnected and are refused from now on.",
    "ban_removed": "Ban lifted.",
    "signed_out": "You are signed out.",
    "setup_done": "Setup is done: sign in.",
}

MAX_FORM_BYTES = 16 * 1024  # every console form is a few short fields
_MAX_FIELDS = 20
_MIN_CSRF = 24  # every CSRF token we issue is longer (token_urlsafe(24) or more)


@dataclass(slots=True)
class FirstRun:
    """The one-time setup token, while no account exists (per process, kept in memory)."""

    token: str | None = None

    def issue(self) -> str:
        if self.token is None:
            self.token = secrets.token_urlsafe(32)
        return self.token

    def matches(self, token: str) -> bool:
        return self.token is not None and hmac.compare_digest(token.encode(), self.token.encode())


@dataclass(slots=True)
class Console:
    """The parts the console pages use; one per console app, in ``app.state.console``."""

    store: Store
    cookies: CookieNames
    throttle: LoginThrottle
    templates: Jinja2Templates
    public_url: str | None
    first_run: FirstRun = field(default_factory=FirstRun)

    @property
    def login_cookie(self) -> str:
        """The double-submit CSRF cookie of the forms shown before sign-in (setup, sign-in)."""
        return "__Host-pulsebeam_login" if self.cookies.secure else "pulsebeam_login"


class SignInRequiredError(PulseBeamError):
    """No live session: the page redirects to the sign-in form."""

    http_status = 401


class FormTooLargeError(InvalidArgumentError):
    http_status = 413


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


async def signed_in(request: Request) -> SessionInfo:
    """The live session of the request's cookie (kept in ``request.state`` for the templates)."""
    console = console_of(request)
    token = request.cookies.get(console.cookies.session)
    session = None if token is None else await console.store.get_session(token)
    if session is None:
        raise SignInRequiredError("sign in first")
    request.state.session = session
    return session


async def project_page(request: Request, *, owner: bool = False) -> tuple[SessionInfo, ProjectInfo]:
    """The session and the project in the path; 404 unless the account is a member (so a
    project's existence never leaks), 403 for member-only accounts when ``owner``."""
    session = await signed_in(request)
    project_id = str(request.path_params["project_id"])[:64]
    project = await console_of(request).store.require_access(
        project_id, session.account.id, owner=owner
    )
    return session, project


async def project_form(
    request: Request, *, owner: bool = False
) -> tuple[SessionInfo, ProjectInfo, dict[str, str]]:
    """As :func:`project_page`, for a form POST: also reads the form and checks its CSRF token."""
    session, project = await project_page(request, owner=owner)
    form = await read_form(request)
    check_csrf(form, session.csrf_token)
    return session, project, form


def actor(session: SessionInfo) -> Actor:
    return Actor(session.account.email, session.account.id)


async def read_form(request: Request) -> dict[str, str]:
    """A URL-encoded form body, at most :data:`MAX_FORM_BYTES`; the last value of a name wins.

    Parsed with the standard library rather than Starlette's form parser because that one reads
    the whole body before any limit applies to URL-encoded forms.
    """
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise InvalidArgumentError("send the form as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLargeError(f"form too large: at most {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=_MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgumentError("the form is not valid UTF-8 URL-encoded data") from None
    return dict(pairs)


def check_csrf(form: dict[str, str], expected: str) -> None:
    """Every form carries its CSRF token in the ``csrf`` field; compared in constant time.

    ``expected`` may come from the pre-sign-in cookie, which a cross-site form post does not
    carry: an empty or short one is refused, else an empty field would match an absent cookie.
    """
    sent = form.get("csrf", "")
    if len(expected) < _MIN_CSRF or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise PermissionDeniedError(
            "the form's security token is missing or stale: reload the page and try again"
        )


def link(request: Request, name: str, /, query: dict[str, Any] | None = None, **params: Any) -> str:
    """The path of a console route, under wherever the console is mounted."""
    root: str = request.scope.get("root_path", "")
    path = root + str(request.app.url_path_for(name, **params))
    if query:
        kept = {k: v for k, v in query.items() if v is not None and v != ""}
        if kept:
            path += "?" + urlencode(kept)
    return path


def redirect(
    request: Request, name: str, /, query: dict[str, Any] | None = None, **params: Any
) -> RedirectResponse:
    # 303: the browser follows a form POST with a GET.
    return RedirectResponse(link(request, name, query, **params), status_code=303)


def render(
    request: Request, template: str, context: dict[str, Any], *, status: int = 200
) -> Response:
    """Render a page; every template also gets links, the account, its CSRF token, the notice."""
    session: SessionInfo | None = getattr(request.state, "session", None)
    base: dict[str, Any] = {
        "link": lambda name, query=None, **params: link(request, name, query, **params),
        "static": lambda path: link(request, "static", path=path),
        "account": None if session is None else session.account,
        "csrf": None if session is None else session.csrf_token,
        "notice": NOTICES.get(request.query_params.get("notice", "")),
        "error": None,
    }
    return console_of(request).templates.TemplateResponse(
        request, template, {**base, **context}, status_code=status
    )
