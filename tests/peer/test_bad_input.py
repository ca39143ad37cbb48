"""Bad input to the SDK gets a clear error and changes nothing (real server, no TURN)."""

from __future__ import annotations

import pytest

from pulsebeam.errors import (
    GrpcStatus,
    InvalidArgumentError,
    InvalidPatternError,
    MalformedTokenError,
    UnavailableError,
)
from pulsebeam.peer import PeerState, SignalingError, create_peer
from tests.fixtures.server import ProjectKeys, RunningServer


async def test_bad_input_is_refused_clearly(
    pulsebeam_server: RunningServer, pulsebeam_project: ProjectKeys
) -> None:
    grpc, keys = pulsebeam_server.grpc, pulsebeam_project
    with pytest.raises(MalformedTokenError, match="not a compact JWS"):
        await create_peer("not a token", grpc)
    with pytest.raises(InvalidArgumentError, match="must be http:// or https://"):
        await create_peer(keys.token("g1", "alice"), "ftp://127.0.0.1/grpc")
    with pytest.raises(InvalidArgumentError, match="force_relay needs a TURN server"):
        await create_peer(keys.token("g1", "alice"), grpc, force_relay=True)
    with pytest.raises(InvalidArgumentError, match="ice_candidate_pool_size must be 0 to 4"):
        await create_peer(keys.token("g1", "alice"), grpc, ice_candidate_pool_size=5)
    peer = await create_peer(keys.token("g1", "alice"), grpc)
    try:
        with pytest.raises(InvalidPatternError, match="peer_id 'b o b' is invalid"):
            await peer.connect("g1", "b o b")
        with pytest.raises(InvalidArgumentError, match="cannot connect to itself"):
            await peer.connect("g1", "alice")
        with pytest.raises(InvalidArgumentError, match="this peer is g1/alice"):
            peer.update_token(keys.token("g1", "mallory"))
        assert peer.state is PeerState.NEW  # nothing was started by the refused calls
        assert peer.configuration.iceServers == []  # no TURN here, and never Google's STUN
    finally:
        await peer.close()


@pytest.mark.slow
@pytest.mark.parametrize("start", [False, True])
async def test_wrong_or_unreachable_server(
    pulsebeam_server: RunningServer, pulsebeam_project: ProjectKeys, start: bool
) -> None:
    token = pulsebeam_project.token("g1", "alice")
    # Started at creation, Recv meets the same refusal as Prepare, and may meet it first.
    with pytest.raises(SignalingError, match=r"(Prepare|Recv): HTTP 404") as raised:
        await create_peer(token, f"{pulsebeam_server.url}/not-grpc", start=start)
    assert raised.value.grpc_status is GrpcStatus.UNIMPLEMENTED
    # Port 9 (discard) has no listener here: refused, retried 5 times, then a clear error.
    with pytest.raises(UnavailableError, match=r"cannot reach the signaling server at http://127"):
        await create_peer(token, "http://127.0.0.1:9/grpc", start=start)
