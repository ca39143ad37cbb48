"""First-run setup, sign-in and sign-out.

The session is the control plane's own (same cookie as the REST API, path ``/``), so a person
signed in to the console is signed in to the API from the same browser and vice versa. The two
forms shown before sign-in carry a double-submit CSRF token (a random cookie echoed in the form),
since there is no session yet to hold one.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from pulsebeam.console.common import (
    check_csrf,
    console_of,
    link,
    read_form,
    redirect,
    render,
    signed_in,
)
from pulsebeam.control.base import utcnow
from pulsebeam.control.passwords import MIN_PASSWORD
from pulsebeam.control.views import AccountInfo
from pulsebeam.errors import InvalidArgumentError, NotFoundError, PulseBeamError, TokenError

__all__ = ["home", "setup", "setup_submit", "sign_in", "sign_in_submit", "sign_out"]

logger = logging.getLogger(__name__)


def _address(request: Request) -> str:
    # The direct peer only: forwarded-for headers are client-controlled unless a proxy is trusted.
    return request.client.host if request.client else "unknown"


def _safe_next(request: Request, value: str) -> str:
    """Only a path inside the console: never another site (no open redirect)."""
    root = request.scope.get("root_path", "")
    if value.startswith(root + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return link(request, "projects")


def _login_form(
    request: Request, template: str, context: Mapping[str, object], *, status: int = 200
) -> Response:
    """Render a pre-sign-in form with the browser's double-submit CSRF token (a new one if it
    has none), so forms open in several tabs all stay valid."""
    console = console_of(request)
    token = request.cookies.get(console.login_cookie, "")
    if not 24 <= len(token) <= 64:
        token = secrets.token_urlsafe(24)
    response = render(request, template, {**context, "csrf": token}, status=status)
    response.set_cookie(
        console.login_cookie,
        token,
        max_age=3600,
        path="/",
        secure=console.cookies.secure,
        httponly=True,
        samesite="strict",
    )
    return response


async def _start_session(request: Request, account: AccountInfo, target: str) -> Response:
    console = console_of(request)
    session = await console.store.create_session(account)
    response = RedirectResponse(target, status_code=303)
    console.cookies.set(response, session, utcnow())
    response.delete_cookie(console.login_cookie, path="/", secure=console.cookies.secure)
    return response


async def home(request: Request) -> Response:
    console = console_of(request)
    if not await console.store.has_accounts():
        return render(request, "setup_needed.html", {"title": "Set up"})
    return redirect(request, "projects")


async def setup(request: Request) -> Response:
    console = console_of(request)
    if await console.store.has_accounts():
        return redirect(request, "signin", query={"notice": "setup_done"})
    token = request.query_params.get("token", "")
    if not console.first_run.matches(token):
        raise NotFoundError(
            "this setup link is not valid: use the link the server printed in its log"
        )
    return _login_form(
        request, "setup.html", {"title": "Set up", "token": token, "min_password": MIN_PASSWORD}
    )


async def setup_submit(request: Request) -> Response:
    console = console_of(request)
    form = await read_form(request)
    check_csrf(form, request.cookies.get(console.login_cookie, ""))
    token = form.get("token", "")
    if not console.first_run.matches(token):
        raise NotFoundError(
            "this setup link is not valid: use the link the server printed in its log"
        )
    email, password = form.get("email", ""), form.get("password", "")
    context = {"title": "Set up", "token": token, "min_password": MIN_PASSWORD, "email": email}
    try:
        if password != form.get("password2", ""):
            raise InvalidArgumentError("the two passwords differ: type the same one twice")
        account = await console.store.create_first_account(email, password)
    except PulseBeamError as exc:
        return _login_form(
            request, "setup.html", {**context, "error": str(exc)}, status=exc.http_status
        )
    console.first_run.token = None
    logger.info("first-run setup done: account %s created", account.email)
    return await _start_session(request, account, link(request, "projects"))


async def sign_in(request: Request) -> Response:
    console = console_of(request)
    if not await console.store.has_accounts():
        return redirect(request, "home")
    token = request.cookies.get(console.cookies.session)
    if token is not None and await console.store.get_session(token) is not None:
        return redirect(request, "projects")
    context = {
        "title": "Sign in",
        "next": request.query_params.get("next", ""),
        "notice_code": request.query_params.get("notice", ""),
    }
    return _login_form(request, "signin.html", context)


async def sign_in_submit(request: Request) -> Response:
    console = console_of(request)
    form = await read_form(request)
    check_csrf(form, request.cookies.get(console.login_cookie, ""))
    email, password = form.get("email", ""), form.get("password", "")
    context = {"title": "Sign in", "email": email, "next": form.get("next", "")}
    address = _address(request)
    try:
        console.throttle.attempt(email, address)  # counted as a failure until it succeeds
        account = await console.store.authenticate(email, password)
        if account is None:
            raise TokenError("wrong email or password")
    except PulseBeamError as exc:
        return _login_form(
            request, "signin.html", {**context, "error": str(exc)}, status=exc.http_status
        )
    console.throttle.succeeded(email, address)
    return await _start_session(request, account, _safe_next(request, form.get("next", "")))


async def sign_out(request: Request) -> Response:
    console = console_of(request)
    session = await signed_in(request)
    check_csrf(await read_form(request), session.csrf_token)
    token = request.cookies.get(console.cookies.session)
    if token is not None:
        await console.store.delete_session(token)
    response = redirect(request, "signin", query={"notice": "signed_out"})
    console.cookies.clear(response)
    return response
