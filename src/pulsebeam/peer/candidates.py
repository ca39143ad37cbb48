"""ICE candidates between SDP text, aiortc objects and the ``ICECandidate`` protobuf.

aiortc writes the candidates it has gathered into the SDP and never trickles them. A session
whose description went before gathering ended sends them as one ``ice_candidate_batch`` as soon
as it has, closed by an end-of-candidates mark per m-line (an empty ``candidate``, as a browser
reports it); otherwise it sends the SDP's candidates again 100 ms after the description, as the
official SDK flushes its batches, for the browser SDK (duplicates are harmless: both ends
ignore a candidate they already have).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiortc import RTCIceCandidate, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from pulsebeam.proto import ICECandidate

__all__ = [
    "RemoteCandidate",
    "RemoteCandidates",
    "all_candidates_in",
    "candidate_key",
    "end_of_candidates",
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


@dataclass(slots=True)
class _Section:
    """One m-line of an SDP: its index, mid, ICE ufrag and candidate keys."""

    index: int
    ufrag: str | None
    mid: str | None = None
    candidates: list[str] = field(default_factory=list)


def _sections(sdp: str) -> list[_Section]:
    sections: list[_Section] = []
    ufrag: str | None = None  # a session-level or earlier ufrag applies until one is given
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append(_Section(len(sections), ufrag))
        elif line.startswith("a=ice-ufrag:"):
            ufrag = line[len("a=ice-ufrag:") :]
            if sections:
                sections[-1].ufrag = ufrag
        elif not sections:
            continue
        elif line.startswith("a=mid:"):
            sections[-1].mid = line[len("a=mid:") :]
        elif line.startswith("a=candidate:"):
            sections[-1].candidates.append(candidate_key(line))
    return sections


def local_candidates(sdp: str) -> list[ICECandidate]:
    """Every distinct candidate of an SDP, tagged with its m-line, mid and ufrag."""
    result: list[ICECandidate] = []
    seen: set[str] = set()
    for section in _sections(sdp):
        for key in section.candidates:
            if key not in seen:
                seen.add(key)
                result.append(_tagged(_PREFIX + key, section))
    return result


def all_candidates_in(sdp: str) -> bool:
    """Whether every m-line of an SDP says its candidates are complete (aiortc writes
    ``a=end-of-candidates`` once its transport has gathered)."""
    sections = sdp.split("\nm=")[1:]
    return bool(sections) and all("a=end-of-candidates" in section for section in sections)


def end_of_candidates(sdp: str) -> list[ICECandidate]:
    """One end-of-candidates mark per m-line of an SDP (candidate "", its mid and ufrag)."""
    return [_tagged("", section) for section in _sections(sdp)]


def _tagged(candidate: str, section: _Section) -> ICECandidate:
    return ICECandidate(
        candidate=candidate,
        sdp_m_line_index=section.index,
        sdp_mid=section.mid,
        username=section.ufrag,
    )


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
        # The ufrag of an end-of-candidates mark not applied yet ("" when it named none).
        self._end: str | None = None

    def described(self, sdp: str) -> None:
        """The remote description ``sdp`` was applied."""
        self._known.update(
            candidate_key(line) for line in sdp.splitlines() if line.startswith("a=candidate:")
        )
        self._ufrags = sdp_ufrags(sdp)

    def add(self, candidates: Iterable[ICECandidate]) -> None:
        for message in candidates:
            if not message.candidate.strip():
                self._end = message.username if message.HasField("username") else ""
                continue
            remote = parse_remote(message)
            if remote is None or remote.key in self._known:
                continue
            self._known.add(remote.key)
            self._pending.append(remote)

    def drop_pending(self) -> None:
        """Forget candidates not applied yet (a new ICE generation makes them stale)."""
        self._pending = []
        self._end = None

    async def apply(self, pc: RTCPeerConnection) -> None:
        """Hand the held candidates to ``pc`` once it has a remote description."""
        if pc.remoteDescription is None:
            return
        pending, self._pending = self._pending, []
        for remote in pending:
            if self._current(remote.ufrag):
                with contextlib.suppress(ValueError):
                    await pc.addIceCandidate(remote.candidate)
        end, self._end = self._end, None
        if end is not None and self._current(end or None):
            await pc.addIceCandidate(None)

    def _current(self, ufrag: str | None) -> bool:
        """False for a candidate of another ICE generation than the remote description's."""
        return ufrag is None or ufrag in self._ufrags
