"""ICE restart on failure, done the only way aiortc allows: a new RTCPeerConnection.

aiortc has no ``restartIce``: an RTCPeerConnection keeps its ICE credentials for life, and when
its ICE connection fails (consent expired, TURN allocation gone) its DTLS and SCTP transports
close with it. So the session replaces the whole connection
(:meth:`pulsebeam.peer.session.Session` ``_replace``) and renegotiates under a higher
``generation_counter`` (shared/PROTOCOL.md §4: a higher generation resets the other side's
negotiation state):

- the new connection gets the peer's current ICE servers (fresh TURN credentials); every data
  channel that had a stream id (``__internal`` and the application's, from either side) is made
  again on that id, pre-negotiated (no DCEP open), and the same
  :class:`pulsebeam.peer.DataChannel` objects carry on over them; tracks added with
  ``add_track`` are sent again (a :class:`pulsebeam.peer.aiortc_compat.TrackFeed` per
  connection); remote tracks arrive again through ``tracks()``;
- the side that restarts offers from the new connection at generation + 1; a side that
  receives an offer of a higher generation replaces its own connection and answers from the
  new one (its old one cannot take new DTLS parameters either);
- both sides usually notice the failure together: the impolite side restarts after 0.5 s (time
  for a ``Bye`` to arrive: aiortc reports a connection the other side closed as it reports a
  dead one), the polite one waits 1.5 s for that offer first. If both offer anyway, perfect
  negotiation applies, and the polite side "rolls back" a fresh connection by replacing it.

Timing otherwise as in the official SDK: later attempts at least 5 s apart, at most 3 attempts
without success in between; then the session closes (``ICE failed after 3 restarts``) with a
``Bye``. aiortc notices a dead path by ICE consent (RFC 7675): 6 checks 5 s apart, so ~30 s.

A browser takes such an offer on its existing connection: new ICE credentials, a new DTLS
handshake and a new SCTP association, keeping its data channels; as ours come back on the same
stream ids, the channels carry on (tested with Chromium, tests/web/test_python_ice_restart.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection

from pulsebeam.peer.aiortc_compat import TrackFeed
from pulsebeam.peer.channel import DataChannel

__all__ = [
    "FIRST_RESTART_DELAY",
    "ICE_RESTART_DEBOUNCE",
    "MAX_ICE_RESTARTS",
    "POLITE_RESTART_DELAY",
    "RESTART_TIMEOUT",
    "CarryOver",
    "RestartPolicy",
    "recover",
]

ICE_RESTART_DEBOUNCE = 5.0
MAX_ICE_RESTARTS = 3
# Before the first attempt: a connection the other side closed on purpose looks like a failed
# one here (aiortc closes it), and its Bye, sent just before, may still be on its way.
FIRST_RESTART_DELAY = 0.5
# The polite side gives the impolite side's restart offer this much longer to arrive.
POLITE_RESTART_DELAY = 1.5
# A restarted connection that neither connects nor fails within this long counts as failed.
RESTART_TIMEOUT = 15.0


class RestartPolicy:
    """When the next ICE restart of one session may start, or that it must give up."""

    def __init__(self, impolite: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self._impolite = impolite
        self._clock = clock
        self._failed_attempts = 0
        self._last_start: float | None = None
        self.total = 0

    def delay(self, first_of_failure: bool) -> float | None:
        """Seconds to wait before the next attempt; None once the attempts have run out."""
        if self._failed_attempts >= MAX_ICE_RESTARTS:
            return None
        wait = 0.0
        if self._last_start is not None:
            wait = self._last_start + ICE_RESTART_DEBOUNCE - self._clock()
        if first_of_failure:
            wait = max(wait, FIRST_RESTART_DELAY if self._impolite else POLITE_RESTART_DELAY)
        return max(wait, 0.0)

    def started(self) -> None:
        self._failed_attempts += 1
        self.total += 1
        self._last_start = self._clock()

    def succeeded(self) -> None:
        self._failed_attempts = 0


async def recover(
    policy: RestartPolicy,
    state: Callable[[], str],
    settled: asyncio.Event,
    restart: Callable[[], None],
    give_up: Callable[[str], Awaitable[None]],
) -> None:
    """Restart until the session's connection is connected again, or give up.

    ``state`` is the current connection's state; ``settled`` is set when it gets connected or
    fails (cleared when a connection replaces it); ``restart`` asks the session to replace a
    still failed connection; ``give_up`` closes the session.
    """
    first = True
    while state() != "connected":
        delay = policy.delay(first)
        if delay is None:
            await give_up(f"ICE failed after {MAX_ICE_RESTARTS} restarts")
            return
        if delay > 0:
            # The other side's restart may replace our connection meanwhile.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    while state() != "connected":
                        settled.clear()
                        await settled.wait()
            first = False
            continue
        first = False
        policy.started()
        settled.clear()
        restart()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RESTART_TIMEOUT):
                await settled.wait()


class CarryOver:
    """The data channels (of both sides) and tracks of a session, to set up again on a new
    connection: channels on their old stream ids, pre-negotiated (no DCEP open), so that the
    other side, which does the same or (a browser) keeps its SCTP streams, finds them there."""

    def __init__(self) -> None:
        self.channels: list[DataChannel] = []
        self.tracks: list[MediaStreamTrack] = []

    def set_up(self, pc: RTCPeerConnection) -> None:
        self.channels = [c for c in self.channels if not c.closed]
        for channel in self.channels:
            options = _options_of(channel.channel)
            if channel.channel.id is not None:  # else it never opened: it opens anew
                options.update(negotiated=True, id=channel.channel.id)
            channel.rebind(pc.createDataChannel(channel.label, **options))
        self.tracks = [t for t in self.tracks if t.readyState == "live"]
        for track in self.tracks:
            pc.addTrack(TrackFeed(track))

    def end(self) -> None:
        for channel in self.channels:
            channel.end()


def _options_of(channel: RTCDataChannel) -> dict[str, Any]:
    return {
        "ordered": channel.ordered,
        "maxRetransmits": channel.maxRetransmits,
        "maxPacketLifeTime": channel.maxPacketLifeTime,
        "protocol": channel.protocol,
    }
