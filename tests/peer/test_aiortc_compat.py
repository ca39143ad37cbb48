"""The SDK's aioice fixes on real aiortc connections over loopback (the TURN one, a check lost
for want of a permission, is in tests/turn/test_aiortc_relay.py)."""

from __future__ import annotations

import asyncio

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

import pulsebeam.peer.aiortc_compat  # noqa: F401 - installs the fixes, as importing the SDK does

TIMEOUT = 10.0


def _without_candidates(sdp: str) -> tuple[str, list[str]]:
    lines = sdp.splitlines()
    candidates = [line[len("a=") :] for line in lines if line.startswith("a=candidate:")]
    kept = [line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(kept) + "\r\n", candidates


async def test_a_candidate_trickled_once_checks_run_is_checked_at_once(
    loopback_ice: RTCConfiguration,
) -> None:
    """The callee's ICE starts with no remote candidate (the offer had none); the caller's
    candidate then arrives. aioice alone would check it at its next 20 ms tick."""
    caller, callee = RTCPeerConnection(loopback_ice), RTCPeerConnection(loopback_ice)
    try:
        opened = asyncio.Event()
        caller.createDataChannel("chat").on("open", opened.set)
        await caller.setLocalDescription(await caller.createOffer())
        offer, candidates = _without_candidates(caller.localDescription.sdp)
        assert candidates
        await callee.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await callee.setLocalDescription(await callee.createAnswer())
        await caller.setRemoteDescription(callee.localDescription)
        sctp = callee.sctp
        assert sctp is not None
        ice = sctp.transport.transport
        async with asyncio.timeout(TIMEOUT):
            while ice.state != "checking":  # noqa: ASYNC110 - aiortc has no event for it
                await asyncio.sleep(0.001)
        checks = ice._connection._check_list
        assert not checks
        candidate = candidate_from_sdp(candidates[0].removeprefix("candidate:"))
        candidate.sdpMid, candidate.sdpMLineIndex = sctp.mid, 0
        await callee.addIceCandidate(candidate)
        await asyncio.sleep(0)  # the check task's first step
        (pair,) = checks
        assert pair.task is not None  # started now, not at the next tick
        async with asyncio.timeout(TIMEOUT):
            await opened.wait()
    finally:
        await caller.close()
        await callee.close()
