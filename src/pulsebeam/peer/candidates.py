"""ICE candidates between SDP text, aiortc objects and the ``ICECandidate`` protobuf.

aiortc gathers every local candidate inside ``setLocalDescription`` and writes them into the
SDP; it never trickles. The browser SDK expects candidate signals, so the session sends the
SDP's candidates again as one ``ice_candidate_batch`` right after the description
(duplicates are harmless: both ends ignore a candidate they already have).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

from pulsebeam.proto import ICECandidate

__all__ = ["RemoteCandidate", "candidate_key", "local_candidates", "parse_remote", "sdp_ufrags"]

_PREFIX = "candidate:"


def candidate_key(text: str) -> str:
    """A candidate line reduced to what identifies it (no ``a=``/``candidate:`` prefix)."""
    text = text.strip()
    if text.startswith("a="):
        text = text[2:]
    if text.startswith(_PREFIX):
        text = text[len(_PREFIX) :]
    return text


def local_candidates(sdp: str) -> list[ICECandidate]:
    """Every distinct candidate of an SDP, tagged with its m-line, mid and ufrag."""
    result: list[ICECandidate] = []
    seen: set[str] = set()
    index = -1
    mid: str | None = None
    ufrag: str | None = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            index += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        elif line.startswith("a=ice-ufrag:"):
            ufrag = line[len("a=ice-ufrag:") :]
        elif line.startswith("a=candidate:") and index >= 0:
            key = candidate_key(line)
            if key in seen:
                continue
            seen.add(key)
            result.append(
                ICECandidate(
                    candidate=_PREFIX + key, sdp_m_line_index=index, sdp_mid=mid, username=ufrag
                )
            )
    return result


def sdp_ufrags(sdp: str) -> set[str]:
    return {
        line[len("a=ice-ufrag:") :] for line in sdp.splitlines() if line.startswith("a=ice-ufrag:")
    }


@dataclass(frozen=True, slots=True)
class RemoteCandidate:
    key: str
    ufrag: str | None
    candidate: RTCIceCandidate


def parse_remote(message: ICECandidate) -> RemoteCandidate | None:
    """The aiortc candidate of a remote signal; None for an end-of-candidates or unusable one."""
    key = candidate_key(message.candidate)
    if len(key.split()) < 8:
        return None
    try:
        candidate = candidate_from_sdp(key)
    except ValueError:
        return None
    candidate.sdpMid = message.sdp_mid if message.HasField("sdp_mid") else None
    if message.HasField("sdp_m_line_index"):
        candidate.sdpMLineIndex = message.sdp_m_line_index
    elif candidate.sdpMid is None:
        candidate.sdpMLineIndex = 0
    ufrag = message.username if message.HasField("username") else None
    return RemoteCandidate(key, ufrag, candidate)
