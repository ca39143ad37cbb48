"""Revocation events: the control plane emits them; signaling and TURN act on them at once.

The router of the signaling layer carries them to every node (in-process, or through Redis), so
they serialise to small JSON documents. :func:`event_from_json` checks every field's type, so a
malformed event is refused with ``ValueError`` before anything acts on it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from pulsebeam.control.records import BanInfo

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
    """A ban to apply now; ``expires_at`` (ISO 8601, UTC) or None for "until lifted".

    ``expires_at`` defaults to None because events from older nodes do not carry it.
    """

    ban_id: str
    project_id: str
    group_pattern: str
    peer_pattern: str
    expires_at: str | None = None

    @classmethod
    def of(cls, ban: BanInfo) -> BanAdded:
        expires = None if ban.expires_at is None else ban.expires_at.astimezone(UTC).isoformat()
        return cls(ban.id, ban.project_id, ban.group_pattern, ban.peer_pattern, expires)

    def ban(self) -> BanInfo:
        """The ban as the signaling layer holds it (the reason stays in the store)."""
        expires = None if self.expires_at is None else _utc(self.expires_at)
        return BanInfo(
            self.ban_id, self.project_id, self.group_pattern, self.peer_pattern, "", expires
        )


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


def _utc(text: str) -> datetime:
    """An ISO 8601 time with a zone, in UTC; ``ValueError`` otherwise."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone")
    return when.astimezone(UTC)


def event_to_json(event: ControlEvent) -> str:
    return json.dumps({"type": type(event).__name__, **asdict(event)}, separators=(",", ":"))


def event_from_json(text: str | bytes) -> ControlEvent:
    """Parse an event; raises ``ValueError`` for anything that is not one, or a field of the
    wrong type. Unknown fields are ignored, so that a newer node's events still apply here."""
    try:
        data: Any = json.loads(text)
    except RecursionError:  # absurdly nested JSON: not an event either
        raise ValueError("not a control event") from None
    if not isinstance(data, dict) or data.get("type") not in _TYPES:
        raise ValueError("not a control event")
    cls = _TYPES[data["type"]]
    values: dict[str, str | None] = {}
    for field in fields(cls):
        value = data.get(field.name, field.default)
        if value is MISSING:
            raise ValueError(f"malformed {cls.__name__} event: {field.name} is missing")
        # Every field is a string; the defaulted ones (expires_at) may also be null.
        if not (isinstance(value, str) or (value is None and field.default is None)):
            raise ValueError(f"malformed {cls.__name__} event: {field.name} must be a string")
        values[field.name] = value
    expires = values.get("expires_at")
    if expires is not None:
        try:
            _utc(expires)
        except ValueError:
            raise ValueError(
                f"malformed {cls.__name__} event: expires_at {expires[:40]!r} is not an"
                " ISO 8601 time with a zone"
            ) from None
    return cls(**values)  # type: ignore[arg-type]
