"""Group/peer ids and allow-policy patterns: validation and matching.

Rules (docs/security.md explains the choices):

- An id (group or peer) is 1-36 characters of ``[A-Za-z0-9_-]``. The official SDK documents 1-16
  characters; PulseBeam's own token endpoint accepted 36, so we accept the wider form.
- A pattern is an id-shaped string with at most one ``*``: ``*`` (any), ``room`` (exact),
  ``dev*`` (prefix), ``*bob`` (suffix), ``a*z`` (prefix and suffix). Its literal part follows the
  id alphabet and length, so every pattern can match some id, and an exact pattern can name any id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pulsebeam.errors import InvalidPatternError

ID_MAX_LENGTH = 36
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,36}")
_PATTERN_RE = re.compile(r"[A-Za-z0-9_-]{0,36}(?:\*[A-Za-z0-9_-]{0,36})?")


def validate_id(value: object, what: str) -> str:
    """Return ``value`` if it is a valid group/peer id, else raise with a precise message."""
    if not isinstance(value, str):
        raise InvalidPatternError(f"{what} must be a string, got {type(value).__name__}")
    if not _ID_RE.fullmatch(value):
        raise InvalidPatternError(
            f"{what} {value[:40]!r} is invalid: use 1-{ID_MAX_LENGTH} characters of A-Z a-z 0-9 _ -"
        )
    return value


def validate_pattern(value: object, what: str) -> str:
    """Return ``value`` if it is a valid allow-policy pattern, else raise with a precise message."""
    if not isinstance(value, str):
        raise InvalidPatternError(f"{what} must be a string, got {type(value).__name__}")
    literal_length = len(value) - value.count("*")
    if not value or literal_length > ID_MAX_LENGTH or not _PATTERN_RE.fullmatch(value):
        raise InvalidPatternError(
            f"{what} {value[:40]!r} is invalid: use '*', an exact id, 'prefix*', '*suffix' or "
            f"'prefix*suffix' (at most one '*', otherwise A-Z a-z 0-9 _ -, up to "
            f"{ID_MAX_LENGTH} characters)"
        )
    return value


def pattern_matches(pattern: str, value: str) -> bool:
    """Whether a (validated) pattern matches an id."""
    if pattern == "*":  # the common policy, checked twice per relayed message
        return True
    star = pattern.find("*")
    if star < 0:
        return pattern == value
    prefix, suffix = pattern[:star], pattern[star + 1 :]
    return (
        len(value) >= len(prefix) + len(suffix)
        and value.startswith(prefix)
        and value.endswith(suffix)
    )


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """Whom a token's holder may reach: a group-id pattern and a peer-id pattern.

    Whatever it says, a peer only ever reaches peers of its own project.
    """

    group_id: str
    peer_id: str

    def __post_init__(self) -> None:
        validate_pattern(self.group_id, "allow policy group_id")
        validate_pattern(self.peer_id, "allow policy peer_id")

    @classmethod
    def parse(cls, text: str) -> PeerPolicy:
        """Parse the CLI form ``"group:peer"`` (e.g. ``"*:*"``, ``"room1:bot*"``)."""
        group, sep, peer = text.partition(":")
        if not sep:
            raise InvalidPatternError(
                f"allow policy {text[:40]!r} is invalid: write it as GROUP_PATTERN:PEER_PATTERN,"
                " e.g. '*:*'"
            )
        return cls(group, peer)

    def allows(self, group_id: str, peer_id: str) -> bool:
        return pattern_matches(self.group_id, group_id) and pattern_matches(self.peer_id, peer_id)

    def __str__(self) -> str:
        return f"{self.group_id}:{self.peer_id}"
