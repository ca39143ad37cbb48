"""The peer's side of ``pulsebeam.v1.Signaling``: Prepare, Send with retries, Recv forever.

Retry rules follow the official SDK (shared/PROTOCOL.md §3), with two deliberate differences:
a ``TokenError`` is not fatal while a fresher token is at hand (so a refreshed token keeps the
peer alive across the old one's expiry), and a ``Send`` to a known connection retries NOT_FOUND
for a few seconds, because that peer's ``Recv`` may be reopening (server restart, rotation).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pulsebeam.errors import NotFoundError, PulseBeamError, TokenError
from pulsebeam.peer.backoff import Backoff
from pulsebeam.peer.errors import is_fatal
from pulsebeam.peer.identity import PeerInfo
from pulsebeam.peer.rpc import GrpcWebClient
from pulsebeam.peer.tokens import Tokens
from pulsebeam.proto import (
    IceServer,
    Message,
    PrepareReq,
    PrepareResp,
    RecvReq,
    RecvResp,
    SendReq,
    SendResp,
)

__all__ = ["SignalingClient"]

logger = logging.getLogger(__name__)

PREPARE_ATTEMPTS = 5
SEND_DEADLINE = 10.0


class SignalingClient:
    """One peer connection's signaling calls, all authenticated with ``tokens.current``."""

    def __init__(self, base_url: str, tokens: Tokens, info: PeerInfo) -> None:
        self.base_url = base_url
        self.tokens = tokens
        self.info = info
        self._rpc = GrpcWebClient(base_url, lambda: tokens.current)

    async def aclose(self) -> None:
        await self._rpc.aclose()

    def preconnect(self) -> None:
        self._rpc.preconnect()

    async def prepare(self) -> list[IceServer]:
        """The deployment's ICE servers (TURN with credentials tied to this token)."""
        backoff = Backoff()
        for attempt in range(1, PREPARE_ATTEMPTS + 1):
            try:
                response = await self._rpc.unary("Prepare", PrepareReq(), PrepareResp)
            except PulseBeamError as exc:
                if is_fatal(exc) or attempt == PREPARE_ATTEMPTS:
                    raise
                logger.info("Prepare failed (attempt %s): %s", attempt, exc)
                await asyncio.sleep(backoff.next_delay())
            else:
                return list(response.ice_servers)
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(
        self, message: Message, *, retry_not_found: bool = True, deadline: float = SEND_DEADLINE
    ) -> None:
        """Send one message; retries what may pass (within ``deadline`` s), raises the rest."""
        backoff = Backoff()
        give_up_at = time.monotonic() + deadline
        token_retried = False
        while True:
            version = self.tokens.version
            try:
                await self._rpc.unary("Send", SendReq(msg=message), SendResp)
            except PulseBeamError as exc:
                if isinstance(exc, TokenError):
                    # One retry with a newer token; a revoked key fails again and is final.
                    if token_retried or not await self._token_renewed(version):
                        raise
                    token_retried = True
                    continue
                if not self._should_retry(exc, retry_not_found):
                    raise
                delay = backoff.next_delay()
                if time.monotonic() + delay > give_up_at:
                    raise
                logger.debug("Send to %s failed, retrying: %s", message.header.dst.peer_id, exc)
                await asyncio.sleep(delay)
            else:
                return

    @staticmethod
    def _should_retry(exc: PulseBeamError, retry_not_found: bool) -> bool:
        if isinstance(exc, NotFoundError):
            return retry_not_found
        return not is_fatal(exc)

    async def _token_renewed(self, version: int) -> bool:
        """True if a newer token than the one that failed is available now."""
        if self.tokens.version != version:
            return True
        try:
            return await self.tokens.refresh()
        except Exception:  # the application's provider may fail in any way
            logger.warning("the token provider failed", exc_info=True)
            return False

    async def receive(
        self,
        on_message: Callable[[Message], None],
        on_open: Callable[[], None],
        on_lost: Callable[[PulseBeamError], None],
    ) -> None:
        """Keep ``Recv`` open forever (reopening with backoff); raises only a fatal error.

        ``on_open`` runs each time the server accepts the stream, ``on_lost`` each time it
        ends with an error that is retried.
        """
        backoff = Backoff()
        request = RecvReq(src=self.info.to_proto())
        # Set when a stream ended with a TokenError; cleared once a stream opens. A second
        # TokenError before any stream opened (a revoked key, a banned peer) is final.
        token_retried = False

        def opened() -> None:
            nonlocal token_retried
            token_retried = False
            backoff.reset()
            on_open()

        while True:
            version = self.tokens.version
            try:
                async for response in self._rpc.server_stream("Recv", request, RecvResp, opened):
                    on_message(response.msg)
            except PulseBeamError as exc:
                if isinstance(exc, TokenError):
                    if token_retried or not await self._token_renewed(version):
                        raise
                    token_retried = True
                    logger.info("Recv ended (%s); reopening with the new token", exc)
                    on_lost(exc)
                    continue
                if is_fatal(exc):
                    raise
                on_lost(exc)
                delay = backoff.next_delay()
                logger.info("Recv failed (%s); reopening in %.2f s", exc, delay)
                await asyncio.sleep(delay)
            else:
                logger.debug("Recv rotated by the server; reopening")
