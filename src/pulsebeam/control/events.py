"""Revocation events: the control plane emits them; signaling and TURN act on them at once.

The router of the signaling layer carries them to every node (in-process, or through Redis), so
they serialise to small JSON documents.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "BanAdded",
    "BanRemoved",
    "ControlEvent",
    "EventSink",
    "KeyDeleted",
    "event_from_json",
    "event_to_json",
]


@dataclass(frozen=True, slots=True)
class KeyDeleted:
    """Every token minted with ``kid`` stops working; its streams and allocations end now."""

    kid: str
    project_id: str


@dataclass(frozen=True, slots=True)
class BanAdded:
    ban_id: str
    project_id: str
    group_pattern: str
    peer_pattern: str


@dataclass(frozen=True, slots=True)
class BanRemoved:
    ban_id: str
    project_id: str


ControlEvent = KeyDeleted | BanAdded | BanRemoved
EventSink = Callable[[ControlEvent], Awaitable[None]]
"""Where the control plane publishes events (the router's ``publish_event`` in a server)."""

_TYPES: dict[str, type[KeyDeleted] | type[BanAdded] | type[BanRemoved]] = {
    cls.__name__: cls for cls in (KeyDeleted, BanAdded, BanRemoved)
}


def event_to_json(event: ControlEvent) -> str:
    return json.dumps({"type": type(event).__name__, **asdict(event)}, separators=(",", ":"))


def event_from_json(text: str | bytes) -> ControlEvent:
    """Parse an event; raises ``ValueError`` for anything that is not one."""
    data: Any = json.loads(text)
    if not isinstance(data, dict) or data.get("type") not in _TYPES:
        raise ValueError("not a control event")
    cls = _TYPES[data.pop("type")]
    try:
        return cls(**data)
    except TypeError as exc:
        raise ValueError(f"malformed {cls.__name__} event: {exc}") from None
