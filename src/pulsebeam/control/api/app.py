"""The REST API application: :func:`create_api` builds the FastAPI app that the server mounts at
``/api/v1`` (so its OpenAPI document is ``/api/v1/openapi.json``).

Every error is JSON ``{"error": {"code": ..., "message": ...}}``: the code is the lower-case gRPC
status name of the error (``invalid_argument``, ``not_found``, ``already_exists``, …).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import pulsebeam
from pulsebeam.control.api import routes_access, routes_logs, routes_projects, routes_session
from pulsebeam.control.api.security import CookieNames
from pulsebeam.control.events import EventSink
from pulsebeam.control.store import Store
from pulsebeam.control.throttle import LoginThrottle, ThrottledError
from pulsebeam.errors import PulseBeamError

__all__ = ["MAX_BODY", "create_api"]

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
_HTTP_CODES = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "already_exists",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_argument",
    429: "resource_exhausted",
}


def error_response(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers or None
    )


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by Content-Length or while reading a
    chunked body (so a client cannot stream an unbounded body into memory)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(scope, receive, send)
            return
        seen, started, refused = 0, False, False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    if not started:
                        refused = True
                        await self._refuse(scope, receive, send)
                    # The app sees the client gone and stops reading; its answer is dropped.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "payload_too_large", f"request body too large: at most {self.limit} bytes"
        )
        await response(scope, receive, send)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "malformed request"


def _install_errors(app: FastAPI) -> None:
    async def pulsebeam_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PulseBeamError)
        if exc.http_status >= 500:
            logger.error("request %s %s failed: %s", request.method, request.url.path, exc)
            return error_response(exc.http_status, exc.grpc_status.name.lower(), "internal error")
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, ThrottledError) else {}
        return error_response(exc.http_status, exc.grpc_status.name.lower(), str(exc), **headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "invalid_argument", _validation_message(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), **(exc.headers or {}))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error in %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error")

    app.add_exception_handler(PulseBeamError, pulsebeam_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with 422 answers described by our error body (which they use)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                answer = operation.get("responses", {}).get("422")
                if answer is not None:
                    answer["content"] = {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                    }
        components = schema.get("components", {}).get("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema


def create_api(
    store: Store,
    events: EventSink,
    *,
    secure_cookies: bool,
    allow_signup: bool = False,
    throttle: LoginThrottle | None = None,
) -> FastAPI:
    """The REST API over ``store``; revocations are published through ``events``.

    ``secure_cookies`` must be True when served over TLS (Secure, ``__Host-`` cookie).
    ``allow_signup`` opens ``POST /accounts`` to anyone (off: accounts come from the admin CLI).
    """
    app = FastAPI(
        title="PulseBeam control-plane API",
        version=pulsebeam.__version__,
        description="Accounts, projects, keys, bans, audit log and usage. See docs/api.md.",
        openapi_url="/openapi.json",
        docs_url=None,  # the interactive pages load scripts from a CDN; the JSON is enough
        redoc_url=None,
        redirect_slashes=False,  # an API answers 404 rather than redirecting a stray "/"
    )
    app.state.store = store
    app.state.events = events
    app.state.cookies = CookieNames.for_tls(secure_cookies)
    app.state.allow_signup = allow_signup
    app.state.throttle = throttle or LoginThrottle()
    for module in (routes_session, routes_projects, routes_access, routes_logs):
        app.include_router(module.router)
    _install_errors(app)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
