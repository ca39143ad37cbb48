"""Spare RTCPeerConnections gathered ahead of the sessions that will use them.

The SDK's counterpart of a browser's ``iceCandidatePoolSize``: a peer keeps ``size`` connections
whose ICE candidates (host, STUN, a TURN allocation) are gathered before any session asks for
one, so a session that starts, above all one started by another peer's ``Join``, sends its
first description without waiting for gathering. A spare is replaced when it is taken (a
moment later, not during the new session's first exchange), when the ICE servers change (new TURN
credentials) and when it is ``SPARE_MAX_AGE`` old (a TURN allocation's default lifetime), since
its TURN allocation or host addresses may have gone stale by then. Each spare with TURN is an
allocation in the project's usage: an idle peer makes one each time its spare is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aiortc import RTCConfiguration

from pulsebeam.peer.prepared import PreparedConnection

__all__ = ["MAX_POOL_SIZE", "ConnectionPool"]

MAX_POOL_SIZE = 4
SPARE_MAX_AGE = 600.0
# After a spare is taken, the next one gathers this much later: after the new session's
# descriptions, whose round trips its own gathering would otherwise slow down.
REFILL_DELAY = 0.05


@dataclass(frozen=True, slots=True)
class _Spare:
    made_at: float  # loop time
    conn: PreparedConnection


class ConnectionPool:
    """Up to ``size`` spare connections for ``configuration``; ``size`` 0 keeps none.

    Without a configuration yet (a peer started before ``Prepare`` has answered), the pool
    holds none until :meth:`reconfigure` gives it one.
    """

    def __init__(self, size: int, configuration: RTCConfiguration | None = None) -> None:
        self._size = size
        self._configuration = configuration
        self._spares: list[_Spare] = []
        self._refill_at = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False  # for good: nothing is made after close()

    def start(self) -> None:
        """Gather the first spares now and keep the pool full; needs a running event loop."""
        if self._size and self._task is None and not self._closed:
            self._fill(asyncio.get_running_loop().time())
            self._task = asyncio.create_task(self._maintain(), name="connection pool")

    def take(self) -> PreparedConnection | None:
        """A spare for a new session, gathered or gathering; None when there is none."""
        if self._task is None:
            return None
        now = asyncio.get_running_loop().time()
        self._wake.set()
        while self._spares:
            spare = self._spares.pop(0)
            if now - spare.made_at < SPARE_MAX_AGE:
                self._refill_at = now + REFILL_DELAY
                return spare.conn
            self._retire(spare.conn)
        return None

    def reconfigure(self, configuration: RTCConfiguration) -> None:
        """Use ``configuration`` from now on: the spares made with the old one are replaced
        at once (a started pool gathers the new ones now, for the session that may ask next)."""
        self._configuration = configuration
        for spare in self._spares:
            self._retire(spare.conn)
        self._spares.clear()
        self._refill_at = 0.0
        if self._task is not None:
            self._fill(asyncio.get_running_loop().time())
        self._wake.set()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        for spare in self._spares:
            self._retire(spare.conn)
        self._spares.clear()
        await asyncio.gather(*self._retiring, return_exceptions=True)

    @property
    def spares(self) -> tuple[PreparedConnection, ...]:
        """The spares held now, oldest first."""
        return tuple(spare.conn for spare in self._spares)

    async def _maintain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            for spare in [s for s in self._spares if now - s.made_at >= SPARE_MAX_AGE]:
                self._spares.remove(spare)
                self._retire(spare.conn)
            if now >= self._refill_at:
                self._fill(now)
            wake_at = [s.made_at + SPARE_MAX_AGE for s in self._spares]
            if len(self._spares) < self._size and self._configuration is not None:
                wake_at.append(self._refill_at)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(min(wake_at, default=None)):
                    await self._wake.wait()

    def _fill(self, now: float) -> None:
        if self._configuration is None or self._closed:
            return
        while len(self._spares) < self._size:
            self._spares.append(_Spare(now, PreparedConnection(self._configuration)))

    def _retire(self, conn: PreparedConnection) -> None:
        task = asyncio.create_task(conn.close(), name="closing a spare connection")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
