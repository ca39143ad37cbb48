"""The Python peer SDK: WebRTC sessions on aiortc through PulseBeam signaling and TURN.

It speaks the official browser SDK's session protocol, so a Python peer and a browser form a
session with each other. One async idiom throughout: ``async for`` over whatever happens over
time, ``await`` for one-off outcomes::

    from pulsebeam.peer import create_peer

    peer = await create_peer(token, "http://127.0.0.1:8080/grpc")
    peer.start()
    session = await peer.connect("room1", "bob")
    chat = session.create_data_channel("chat")
    await chat.wait_open()
    chat.send("hi")
    async for message in chat:
        ...
    await peer.close()

Fatal server answers surface as the typed errors of :mod:`pulsebeam.errors` (a policy refusal is
``PermissionDeniedError``, a bad, expired or revoked token ``TokenError``). See docs/peer-sdk.md.
"""

from pulsebeam.peer.aiortc_compat import restrict_host_addresses
from pulsebeam.peer.channel import DataChannel
from pulsebeam.peer.errors import PeerClosedError, SignalingError
from pulsebeam.peer.events import EventStream
from pulsebeam.peer.identity import PeerInfo
from pulsebeam.peer.peer import Peer, PeerState, create_peer
from pulsebeam.peer.session import Session
from pulsebeam.peer.tokens import TokenProvider

__all__ = [
    "DataChannel",
    "EventStream",
    "Peer",
    "PeerClosedError",
    "PeerInfo",
    "PeerState",
    "Session",
    "SignalingError",
    "TokenProvider",
    "create_peer",
    "restrict_host_addresses",
]
