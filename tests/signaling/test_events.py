"""Control events on the wire between nodes: JSON round trip, a ban's expiry carried along, older
events without it still accepted, and malformed events refused with ``ValueError``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pulsebeam.control.events import (
    BanAdded,
    BanRemoved,
    ControlEvent,
    KeyDeleted,
    event_from_json,
    event_to_json,
)
from pulsebeam.control.records import BanInfo


@pytest.mark.parametrize(
    "event",
    [
        KeyDeleted("kid_0123456789abcdef", "prj_a"),
        BanAdded("ban_1", "prj_a", "room*", "mallory", "2030-01-02T03:04:05.123456+00:00"),
        BanAdded("ban_2", "prj_a", "*", "eve"),
        BanRemoved("ban_1", "prj_a"),
    ],
)
def test_events_round_trip(event: ControlEvent) -> None:
    assert event_from_json(event_to_json(event)) == event
    assert event_from_json(event_to_json(event).encode()) == event


def test_a_ban_event_carries_its_expiry_both_ways() -> None:
    ends = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    ban = BanInfo("ban_1", "prj_a", "room*", "mallory", "spam", ends)
    event = BanAdded.of(ban)
    assert event.expires_at == "2030-01-02T03:04:05.123456+00:00"
    back = event_from_json(event_to_json(event))
    assert isinstance(back, BanAdded)
    assert back.ban() == BanInfo("ban_1", "prj_a", "room*", "mallory", "", ends)
    assert not back.ban().active_at(ends + timedelta(seconds=1))
    forever = BanAdded.of(BanInfo("ban_2", "prj_a", "*", "eve", "", None))
    assert forever.expires_at is None
    assert forever.ban().expires_at is None
    # Another zone, or "Z", is read as the same instant in UTC.
    east = BanAdded("ban_3", "prj_a", "*", "x", "2030-01-02T05:04:05.123456+02:00").ban()
    assert east.expires_at == ends
    assert east.expires_at is not None
    assert east.expires_at.utcoffset() == timedelta(0)
    assert BanAdded("b", "p", "*", "x", "2030-01-02T03:04:05.123456Z").ban().expires_at == ends


def test_events_from_older_nodes_without_an_expiry_and_newer_fields_are_accepted() -> None:
    old = '{"type":"BanAdded","ban_id":"b","project_id":"p","group_pattern":"*","peer_pattern":"x"}'
    assert event_from_json(old) == BanAdded("b", "p", "*", "x", None)
    newer = {"type": "BanRemoved", "ban_id": "b", "project_id": "p", "reason": "later field"}
    assert event_from_json(json.dumps(newer)) == BanRemoved("b", "p")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not json", "Expecting value"),
        (b"\xff", "can't decode"),
        ("[1, 2]", "not a control event"),
        ('{"type": "Shutdown"}', "not a control event"),
        ('{"kid": "kid_0123456789abcdef"}', "not a control event"),
        ("[" * 100_000 + "]" * 100_000, "not a control event"),
        ('{"type": "KeyDeleted", "kid": "k"}', "KeyDeleted event: project_id is missing"),
        ('{"type": "KeyDeleted", "kid": 5, "project_id": "p"}', "kid must be a string"),
        ('{"type": "KeyDeleted", "kid": null, "project_id": "p"}', "kid must be a string"),
        (
            '{"type":"BanAdded","ban_id":"b","project_id":"p","group_pattern":["*"],'
            '"peer_pattern":"x"}',
            "BanAdded event: group_pattern must be a string",
        ),
        (
            '{"type":"BanAdded","ban_id":"b","project_id":"p","group_pattern":"*",'
            '"peer_pattern":"x","expires_at":1893456000}',
            "expires_at must be a string",
        ),
        (
            '{"type":"BanAdded","ban_id":"b","project_id":"p","group_pattern":"*",'
            '"peer_pattern":"x","expires_at":"next tuesday"}',
            "expires_at 'next tuesday' is not an ISO 8601 time with a zone",
        ),
        (
            '{"type":"BanAdded","ban_id":"b","project_id":"p","group_pattern":"*",'
            '"peer_pattern":"x","expires_at":"2030-01-01T00:00:00"}',
            "is not an ISO 8601 time with a zone",
        ),
        ('{"type": "BanRemoved", "ban_id": {}, "project_id": "p"}', "ban_id must be a string"),
    ],
)
def test_malformed_events_are_refused_with_value_error(text: str | bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        event_from_json(text)
