"""The RTCConfiguration of a peer's sessions: the application's ICE servers, then Prepare's.

``Prepare`` hands out our STUN/TURN URLs with a credential that expires with the token, so the
peer calls it again after each token refresh: sessions created later gather with a valid TURN
credential. aiortc is always given an explicit list (maybe empty), never its default public
STUN server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from pulsebeam.errors import InvalidArgumentError
from pulsebeam.proto import IceServer

__all__ = ["IcePolicy"]


@dataclass(frozen=True)
class IcePolicy:
    """What the application chose: its own ICE servers and whether to relay only."""

    extra_servers: Sequence[RTCIceServer] = ()
    force_relay: bool = False

    def configuration(self, prepared: Iterable[IceServer]) -> RTCConfiguration:
        servers = [*self.extra_servers, *(_rtc_ice_server(s) for s in prepared)]
        if self.force_relay and not any(_is_turn(s) for s in servers):
            raise InvalidArgumentError(
                "force_relay needs a TURN server, but neither ice_servers nor Prepare gave one"
            )
        policy = RTCIceTransportPolicy.RELAY if self.force_relay else RTCIceTransportPolicy.ALL
        return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


def _rtc_ice_server(server: IceServer) -> RTCIceServer:
    return RTCIceServer(
        urls=list(server.urls),
        username=server.username if server.HasField("username") else None,
        credential=server.credential if server.HasField("credential") else None,
    )


def _is_turn(server: RTCIceServer) -> bool:
    urls = [server.urls] if isinstance(server.urls, str) else server.urls
    return any(url.startswith(("turn:", "turns:")) for url in urls)
