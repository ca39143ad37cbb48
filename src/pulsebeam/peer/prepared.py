"""A new RTCPeerConnection with its ``__internal`` channel, gathering ICE candidates at once.

aiortc gathers candidates inside the first ``setLocalDescription`` (host, STUN and a TURN
allocation: a few round trips to the server). Starting that when the connection is made lets
it run while signaling messages are still in flight: ``Peer.connect`` prepares one before its
``Join`` round trips, and a session created by an incoming message gathers while it waits for
the offer. ``setLocalDescription`` must wait for :meth:`PreparedConnection.ready`, because
aiortc skips gathering that has already started instead of waiting for it.
``setRemoteDescription`` need not, when the remote description keeps the transport that is
gathering (:meth:`PreparedConnection.keeps_transport`): aiortc starts ICE only on a transport
with local candidates, and aioice reveals them all when gathering ends.
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
# Gathering takes milliseconds when the STUN/TURN servers answer, and ends within aioice's own
# 5 s limit when not: a close waits this long for it, then goes on in the background.
GATHERING_GRACE = 1.0
# Closings that outlived their close() call (see PreparedConnection.close).
_closings: set[asyncio.Task[None]] = set()


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
        self._closing: asyncio.Task[None] | None = None

    async def _gather(self) -> None:
        sctp = self.pc.sctp
        assert sctp is not None  # created by createDataChannel
        await sctp.transport.transport.iceGatherer.gather()

    @staticmethod
    def keeps_transport(sdp: str) -> bool:
        """Whether applying the remote ``sdp`` keeps the data channel's ICE transport, the one
        gathering: aiortc stops and replaces it when a BUNDLE group names another m-line first,
        and a transport stopped while gathering leaves aioice's requests running on their own."""
        bundle: list[str] = []
        data_mid: str | None = None
        in_data = False
        for line in sdp.splitlines():
            if line.startswith("a=group:BUNDLE"):
                bundle = line.split()[1:]
            elif line.startswith("m="):
                in_data = line.startswith("m=application")
            elif in_data and data_mid is None and line.startswith("a=mid:"):
                data_mid = line[len("a=mid:") :]
        return data_mid is not None and (not bundle or bundle[0] == data_mid)

    @property
    def gathered(self) -> bool:
        """Gathering has ended (successfully or not)."""
        return self._gathering.done()

    async def ready(self) -> None:
        """Wait until the candidates are gathered (raises what gathering raised)."""
        # Shielded: a waiter cancelled (a session closing) must not cancel gathering (close()).
        await asyncio.shield(self._gathering)

    async def close(self) -> None:
        """Close the connection once gathering has ended, waiting at most ``GATHERING_GRACE``
        for that and ``PC_CLOSE_TIMEOUT`` for the TURN server; later, it closes in the background.

        Gathering is never cancelled: aioice would leave its STUN and TURN requests running on
        their own, and an allocation that one of them completes after the close would live on,
        refreshed, for as long as the process.
        """
        if self._closing is None:
            self._closing = asyncio.create_task(self._close_after_gathering(), name="closing")
            _closings.add(self._closing)
            self._closing.add_done_callback(_closings.discard)
        await asyncio.wait([self._gathering], timeout=GATHERING_GRACE)
        if self._gathering.done():
            await asyncio.shield(self._closing)

    async def _close_after_gathering(self) -> None:
        await asyncio.wait([self._gathering])
        try:
            async with asyncio.timeout(PC_CLOSE_TIMEOUT):
                await self.pc.close()
        except TimeoutError:
            logger.info("gave up waiting for the TURN server while closing a connection")


def _log_failure(task: asyncio.Task[None]) -> None:
    # Retrieved here, so that a connection closed before anyone awaited ready() logs it once.
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.warning("ICE gathering failed: %s", error)
