"""Sign-in (session cookie), sign-up (when enabled), the caller's account and API tokens."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response, status

from pulsebeam.control.api.deps import ERRORS, StoreDep
from pulsebeam.control.api.schemas import (
    AccountOut,
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenOut,
    Credentials,
    PasswordChange,
    SessionOut,
)
from pulsebeam.control.api.security import CookieNames, CurrentCaller
from pulsebeam.control.base import utcnow
from pulsebeam.control.throttle import LoginThrottle
from pulsebeam.control.views import Actor
from pulsebeam.errors import PermissionDeniedError, TokenError

__all__ = ["router"]

router = APIRouter(responses=ERRORS)


def _address(request: Request) -> str:
    # The direct peer only: forwarded-for headers are client-controlled unless a proxy is trusted.
    return request.client.host if request.client else "unknown"


@router.post("/session", tags=["session"], summary="Sign in (sets the session cookie)")
async def sign_in(
    body: Credentials, request: Request, response: Response, store: StoreDep
) -> SessionOut:
    throttle: LoginThrottle = request.app.state.throttle
    address = _address(request)
    throttle.attempt(body.email, address)  # counted as a failure until it succeeds
    account = await store.authenticate(body.email, body.password)
    if account is None:
        raise TokenError("wrong email or password")
    throttle.succeeded(body.email, address)
    session = await store.create_session(account)
    cookies: CookieNames = request.app.state.cookies
    cookies.set(response, session, utcnow())
    return SessionOut(
        account=AccountOut.of(account),
        csrf_token=session.csrf_token,
        expires_at=session.expires_at,
        via="session",
    )


@router.get("/session", tags=["session"], summary="Who is signed in")
async def whoami(who: CurrentCaller) -> SessionOut:
    session = who.session
    return SessionOut(
        account=AccountOut.of(who.account),
        csrf_token=None if session is None else session.csrf_token,
        expires_at=None if session is None else session.expires_at,
        via=who.via,
    )


@router.delete(
    "/session", tags=["session"], status_code=status.HTTP_204_NO_CONTENT, summary="Sign out"
)
async def sign_out(who: CurrentCaller, request: Request, store: StoreDep) -> Response:
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    if who.session_token is not None:
        await store.delete_session(who.session_token)
        cookies: CookieNames = request.app.state.cookies
        cookies.clear(response)
    return response


@router.post(
    "/accounts",
    tags=["session"],
    status_code=status.HTTP_201_CREATED,
    summary="Sign up (only when the server allows it)",
)
async def sign_up(body: Credentials, request: Request, store: StoreDep) -> AccountOut:
    if not request.app.state.allow_signup:
        raise PermissionDeniedError(
            "sign-up is disabled on this server: ask an administrator ('pulsebeam account create')"
        )
    account = await store.create_account(body.email, body.password, Actor("sign-up"))
    return AccountOut.of(account)


@router.put(
    "/account/password",
    tags=["session"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change your password (signs out every session)",
)
async def change_password(
    body: PasswordChange, who: CurrentCaller, store: StoreDep, request: Request
) -> None:
    # Throttled like sign-in: a stolen session or API token must not be a way to guess the
    # password itself (people reuse passwords).
    throttle: LoginThrottle = request.app.state.throttle
    address = _address(request)
    throttle.attempt(who.account.email, address)
    if await store.authenticate(who.account.email, body.current_password) is None:
        raise PermissionDeniedError("the current password is wrong")
    throttle.succeeded(who.account.email, address)
    await store.change_password(who.account.id, body.new_password, who.actor)


@router.get("/tokens", tags=["tokens"], summary="Your personal API tokens")
async def list_tokens(who: CurrentCaller, store: StoreDep) -> list[ApiTokenOut]:
    return [ApiTokenOut.of(t) for t in await store.list_api_tokens(who.account.id)]


@router.post(
    "/tokens",
    tags=["tokens"],
    status_code=status.HTTP_201_CREATED,
    summary="Create a personal API token (shown once)",
)
async def create_token(
    body: ApiTokenCreate, who: CurrentCaller, store: StoreDep
) -> ApiTokenCreated:
    expires = None if body.expires_in_days is None else utcnow() + timedelta(body.expires_in_days)
    created = await store.create_api_token(who.account.id, body.name, expires, who.actor)
    return ApiTokenCreated(**ApiTokenOut.of(created.info).model_dump(), token=created.token)


@router.delete(
    "/tokens/{token_id}",
    tags=["tokens"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a personal API token",
)
async def delete_token(token_id: str, who: CurrentCaller, store: StoreDep) -> None:
    await store.delete_api_token(who.account.id, token_id[:64], who.actor)
