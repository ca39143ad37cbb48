"""Who is calling: a console session cookie (with CSRF protection) or a personal API token.

- The session cookie is HttpOnly, SameSite=Strict, and under TLS Secure with the ``__Host-``
  prefix (no Domain, Path=/), so no other site or subdomain can set or read it.
- Cookie-authenticated unsafe requests (POST, PUT, PATCH, DELETE) must carry the session's CSRF
  token in ``X-CSRF-Token``; it is compared in constant time. Bearer tokens need no CSRF check:
  browsers never attach them on their own.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, Request, Response

from pulsebeam.control.store import Store
from pulsebeam.control.views import AccountInfo, Actor, SessionInfo
from pulsebeam.errors import PermissionDeniedError, TokenError

__all__ = ["CSRF_HEADER", "Caller", "CookieNames", "CurrentCaller", "caller"]

CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class CookieNames:
    session: str
    secure: bool

    @classmethod
    def for_tls(cls, secure: bool) -> CookieNames:
        return cls("__Host-pulsebeam_session" if secure else "pulsebeam_session", secure)

    def set(self, response: Response, session: SessionInfo, now: datetime) -> None:
        assert session.token is not None
        response.set_cookie(
            self.session,
            session.token,
            max_age=int((session.expires_at - now).total_seconds()),
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    def clear(self, response: Response) -> None:
        response.delete_cookie(
            self.session, path="/", secure=self.secure, httponly=True, samesite="strict"
        )


@dataclass(frozen=True, slots=True)
class Caller:
    account: AccountInfo
    via: Literal["session", "token"]
    session: SessionInfo | None = None
    session_token: str | None = None

    @property
    def actor(self) -> Actor:
        return Actor(self.account.email, self.account.id)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise TokenError("the Authorization header must be 'Bearer <API token>'")
    return value.strip()


async def caller(request: Request) -> Caller:
    """Authenticate the request (FastAPI dependency); 401 when nobody is signed in."""
    store: Store = request.app.state.store
    cookies: CookieNames = request.app.state.cookies
    bearer = _bearer(request)
    if bearer is not None:
        account = await store.account_for_api_token(bearer)
        if account is None:
            raise TokenError("the API token is unknown, revoked or expired")
        return Caller(account=account, via="token")
    token = request.cookies.get(cookies.session)
    session = None if token is None else await store.get_session(token)
    if token is None or session is None:
        raise TokenError("sign in first (POST /api/v1/session) or send an API token")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
            raise PermissionDeniedError(
                f"missing or wrong {CSRF_HEADER} header (use the csrf_token from sign-in)"
            )
    return Caller(account=session.account, via="session", session=session, session_token=token)


CurrentCaller = Annotated[Caller, Depends(caller)]
