"""Who signaled whom, for the console's connection log: one row per session start and end,
not one per message."""

from __future__ import annotations

import collections
import dataclasses

from pulsebeam.control.records import ConnectionLogEntry
from pulsebeam.signaling.records import Recorder
from pulsebeam.signaling.streams import Address

__all__ = ["ConnectionLog"]


class ConnectionLog:
    """Turns delivered messages into rows: a ``Join`` (per peer, any of its connections) and the
    first signal between two connections start a session, a ``Bye`` ends it. The pairs seen are
    bounded (oldest forgotten first): a forgotten pair at most logs its start twice."""

    def __init__(self, recorder: Recorder, *, max_pairs: int = 100_000) -> None:
        self._recorder = recorder
        self._max_pairs = max_pairs
        self._seen: collections.OrderedDict[tuple[Address, Address], None] = (
            collections.OrderedDict()
        )

    def delivered(self, src: Address, dst: Address, kind: str) -> None:
        if kind == "bye":
            event = "bye"
            self._seen.pop((src, dst), None)
        elif kind in ("join", "signal"):
            event = "join" if kind == "join" else "connect"
            pair = (src, dst) if kind == "signal" else (src, dataclasses.replace(dst, conn_id=0))
            if pair in self._seen:
                return
            self._seen[pair] = None
            if len(self._seen) > self._max_pairs:
                self._seen.popitem(last=False)
        else:
            return
        self._recorder.connection(
            ConnectionLogEntry(
                project_id=src.project_id,
                at=self._recorder.now(),
                src_group=src.group_id,
                src_peer=src.peer_id,
                src_conn=src.conn_id,
                dst_group=dst.group_id,
                dst_peer=dst.peer_id,
                dst_conn=dst.conn_id,
                event=event,
            )
        )
