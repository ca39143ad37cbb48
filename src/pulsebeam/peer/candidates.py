"""ICE candidates between SDP text, aiortc objects and the ``ICECandidate`` protobuf.

aiortc gathers every local candidate inside ``setLocalDescription`` and writes them into the
SDP; it never trickles. The browser SDK expects candidate signals, so the session sends the
SDP's candidates again as one ``ice_candidate_batch``, 100 ms after the description as the
official SDK flushes its batches (duplicates are harmless: both ends ignore a candidate they
already have).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

from aiortc import RTCIceCandidate, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from pulsebeam.proto import ICECandidate

__all__ = [
    "RemoteCandidate",
    "RemoteCandidates",
    "candidate_key",
    "local_candidates",
    "parse_remote",
    "sdp_ufrags",
]

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


class RemoteCandidates:
    """The remote candidates of one connection: known ones skipped, early ones held back.

    Candidates may arrive before the remote description (held until it is set) and for another
    ICE generation than its ufrags (dropped); aiortc applies the description's own candidates,
    which are remembered so their repeats in a batch are skipped.
    """

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._pending: list[RemoteCandidate] = []
        self._ufrags: set[str] = set()

    def described(self, sdp: str) -> None:
        """The remote description ``sdp`` was applied."""
        self._known.update(
            candidate_key(line) for line in sdp.splitlines() if line.startswith("a=candidate:")
        )
        self._ufrags = sdp_ufrags(sdp)

    def add(self, candidates: Iterable[ICECandidate]) -> None:
        for message in candidates:
            remote = parse_remote(message)
            if remote is None or remote.key in self._known:
                continue
            self._known.add(remote.key)
            self._pending.append(remote)

    def drop_pending(self) -> None:
        """Forget candidates not applied yet (a new ICE generation makes them stale)."""
        self._pending = []

    async def apply(self, pc: RTCPeerConnection) -> None:
        """Hand the held candidates to ``pc`` once it has a remote description."""
        if not self._pending or pc.remoteDescription is None:
            return
        pending, self._pending = self._pending, []
        for remote in pending:
            if remote.ufrag is not None and remote.ufrag not in self._ufrags:
                continue  # for another ICE generation than the remote description's
            with contextlib.suppress(ValueError):
                await pc.addIceCandidate(remote.candidate)
