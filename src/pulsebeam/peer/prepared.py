"""A new RTCPeerConnection with its ``__internal`` channel, gathering ICE candidates at once.

aiortc gathers candidates inside the first ``setLocalDescription`` (host, STUN and a TURN
allocation: a few round trips to the server). Starting that when the connection is made lets
it run while signaling messages are still in flight: ``Peer.connect`` prepares one before its
``Join`` round trips, and a session created by an incoming message gathers while it waits for
the offer. ``setLocalDescription`` must wait for :meth:`PreparedConnection.ready`, because
aiortc skips gathering that has already started instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import logging

from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection

__all__ = ["GATHERING_GRACE", "INTERNAL_LABEL", "PC_CLOSE_TIMEOUT", "PreparedConnection"]

logger = logging.getLogger(__name__)

INTERNAL_LABEL = "__internal"
# Closing deletes TURN allocations; with the TURN server gone each deletion would retry ~40 s.
PC_CLOSE_TIMEOUT = 3.0
# Gathering takes milliseconds when the STUN/TURN servers answer; this bounds a close when not.
GATHERING_GRACE = 1.0


class PreparedConnection:
    """``pc`` plus its ``__internal`` data channel; needs a running event loop."""

    def __init__(self, configuration: RTCConfiguration, internal_ids: tuple[int, ...] = ()) -> None:
        """``internal_ids``: re-create the ``__internal`` channels of a replaced connection on
        their stream ids (pre-negotiated) instead of opening a new one (see restart.py)."""
        self.pc = RTCPeerConnection(configuration)
        # Both sides open it at start (protocol), so SCTP is negotiated in the first exchange
        # and later channels need no renegotiation. It also creates the ICE transport to gather on.
        self.internal: list[RTCDataChannel] = [
            self.pc.createDataChannel(INTERNAL_LABEL, negotiated=True, id=i) for i in internal_ids
        ] or [self.pc.createDataChannel(INTERNAL_LABEL)]
        self._gathering = asyncio.create_task(self._gather(), name="ICE gathering")
        self._gathering.add_done_callback(_log_failure)

    async def _gather(self) -> None:
        sctp = self.pc.sctp
        assert sctp is not None  # created by createDataChannel
        await sctp.transport.transport.iceGatherer.gather()

    @property
    def gathered(self) -> bool:
        """Gathering has ended (successfully or not)."""
        return self._gathering.done()

    async def ready(self) -> None:
        """Wait until the candidates are gathered (raises what gathering raised)."""
        await self._gathering

    async def close(self) -> None:
        """Close the connection, waiting at most ``PC_CLOSE_TIMEOUT`` for the TURN server.

        Gathering is let finish first, for up to ``GATHERING_GRACE``: cancelled midway, aioice
        leaves its STUN requests running, and they fail noisily on the closed sockets.
        """
        await asyncio.wait([self._gathering], timeout=GATHERING_GRACE)
        self._gathering.cancel()
        try:
            async with asyncio.timeout(PC_CLOSE_TIMEOUT):
                await self.pc.close()
        except TimeoutError:
            logger.info("gave up waiting for the TURN server while closing a connection")


def _log_failure(task: asyncio.Task[None]) -> None:
    # Retrieved here, so that a connection closed before anyone awaited ready() logs it once.
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.warning("ICE gathering failed: %s", error)
