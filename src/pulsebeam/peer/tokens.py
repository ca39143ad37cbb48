"""The peer's token: the current one, its identity, and refresh before expiry.

The official SDK keeps one token for the life of the peer, so a session dies with a short TTL.
Here the application can hand over a new token at any time (``Peer.update_token``) or give a
``token_provider`` coroutine that the peer calls before the current token expires. A new token
must name the same group and peer: the connection's identity cannot change under it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from pulsebeam.errors import InvalidArgumentError
from pulsebeam.peer.identity import TokenIdentity

__all__ = ["TokenProvider", "Tokens"]

TokenProvider = Callable[[], Awaitable[str]]

# Refresh when this share of the token's lifetime is left, within [MIN_MARGIN, MAX_MARGIN] seconds.
REFRESH_SHARE = 0.25
MIN_MARGIN = 1.0
MAX_MARGIN = 60.0


class Tokens:
    """Holds the current token; ``version`` grows with each accepted new token."""

    def __init__(self, token: str, provider: TokenProvider | None = None) -> None:
        self.identity = TokenIdentity.of(token)
        self._token = token
        self._received_at = time.time()
        self._provider = provider
        self.version = 0
        # Called after each accepted new token (the peer then renews its TURN credential).
        self.on_update: Callable[[], None] | None = None

    @property
    def current(self) -> str:
        return self._token

    @property
    def has_provider(self) -> bool:
        return self._provider is not None

    def update(self, token: str) -> bool:
        """Take a new token (same group and peer); returns False if it is the current one."""
        identity = TokenIdentity.of(token)
        if (identity.group_id, identity.peer_id) != (
            self.identity.group_id,
            self.identity.peer_id,
        ):
            raise InvalidArgumentError(
                f"the new token is for {identity.group_id}/{identity.peer_id}, but this peer is"
                f" {self.identity.group_id}/{self.identity.peer_id}: create a new peer instead"
            )
        if token == self._token:
            return False
        self.identity = identity
        self._token = token
        self._received_at = time.time()
        self.version += 1
        if self.on_update is not None:
            self.on_update()
        return True

    async def refresh(self) -> bool:
        """Ask the provider for a token; True if it gave a new one."""
        if self._provider is None:
            return False
        return self.update(await self._provider())

    def seconds_until_refresh(self, now: float | None = None) -> float:
        """When the provider should be asked, from the lifetime the token had when received."""
        now = time.time() if now is None else now
        lifetime = max(0.0, self.identity.expires_at - self._received_at)
        margin = min(MAX_MARGIN, max(MIN_MARGIN, lifetime * REFRESH_SHARE))
        return max(0.0, self.identity.expires_at - margin - now)
