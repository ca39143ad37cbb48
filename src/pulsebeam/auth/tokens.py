"""Minting and reading PulseBeam tokens: compact JWS signed with Ed25519 (EdDSA).

The byte layout is the official server SDK's (shared/PROTOCOL.md §2), so tokens minted here work
with the official peer SDKs and vice versa:

- header ``{"alg":"EdDSA","kid":"kid_…"}`` (no ``typ``);
- payload ``{"exp":…,"gid":…,"pid":…,"ap":{"group_id":…,"peer_id":…}}`` in this key order,
  with ``exp`` the only time claim.

JWT libraries are not used for the hot path: the format is fixed and tiny, and a hand-written
reader lets every failure carry its own error class and message, with nothing but the Ed25519
check itself (from ``cryptography``) costing real time. The tests cross-check both directions
against PyJWT.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from pulsebeam.auth.keys import parse_secret, validate_key_id
from pulsebeam.auth.policy import PeerPolicy, validate_id
from pulsebeam.errors import InvalidArgumentError, MalformedTokenError

__all__ = ["AccessToken", "PeerClaims", "UnverifiedToken", "b64url_encode", "decode_unverified"]

MAX_TOKEN_BYTES = 4096
_COMPACT_RE = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, part: str) -> bytes:
    """Strict base64url without padding; the alphabet was checked by the caller's regex."""
    if len(text) % 4 == 1:
        raise MalformedTokenError(f"token {part} is not valid base64url (impossible length)")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedTokenError(f"token {part} is not valid base64url: {exc}") from None


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers that disagree on a duplicated key are a classic JWT confusion: refuse outright.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in JSON object")
    return result


def _json_object(raw: bytes, part: str) -> dict[str, Any]:
    try:
        value = json.loads(raw, object_pairs_hook=_reject_duplicate_keys)
    except (ValueError, RecursionError) as exc:
        raise MalformedTokenError(f"token {part} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedTokenError(f"token {part} must be a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """A token split into its parts; nothing about it is trusted yet."""

    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes


def split_compact(token: str, *, max_bytes: int = MAX_TOKEN_BYTES) -> tuple[str, str, str]:
    """The three base64url parts of a compact JWS, checked for shape and size only."""
    if not isinstance(token, str):
        raise MalformedTokenError("token must be a string")
    if len(token) > max_bytes:
        raise MalformedTokenError(f"token is {len(token)} bytes, over the {max_bytes}-byte limit")
    match = _COMPACT_RE.fullmatch(token)
    if match is None:
        raise MalformedTokenError(
            "token is not a compact JWS: expected three non-empty base64url parts separated by '.'"
        )
    header_b64, payload_b64, signature_b64 = match.groups()
    return header_b64, payload_b64, signature_b64


def decode_json_part(text: str, part: str) -> dict[str, Any]:
    return _json_object(b64url_decode(text, part), part)


def decode_unverified(token: str, *, max_bytes: int = MAX_TOKEN_BYTES) -> UnverifiedToken:
    """Split and decode a compact JWS without checking its signature (for inspection only)."""
    header_b64, payload_b64, signature_b64 = split_compact(token, max_bytes=max_bytes)
    return UnverifiedToken(
        header=decode_json_part(header_b64, "header"),
        payload=decode_json_part(payload_b64, "payload"),
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        signature=b64url_decode(signature_b64, "signature"),
    )


class PeerClaims:
    """Who the token's holder is (group and peer id) and whom it may reach (allow policy)."""

    __slots__ = ("allow_policy", "group_id", "peer_id")

    def __init__(self, group_id: str, peer_id: str) -> None:
        self.group_id = validate_id(group_id, "group_id")
        self.peer_id = validate_id(peer_id, "peer_id")
        self.allow_policy: PeerPolicy | None = None

    def set_allow_policy(self, policy: PeerPolicy) -> None:
        if not isinstance(policy, PeerPolicy):
            raise InvalidArgumentError("set_allow_policy() takes a PeerPolicy")
        self.allow_policy = policy

    def __repr__(self) -> str:
        return (
            f"PeerClaims(group_id={self.group_id!r}, peer_id={self.peer_id!r}, "
            f"allow_policy={self.allow_policy!r})"
        )


class AccessToken:
    """Mints tokens with one API key pair: ``AccessToken(kid, sk).create_token(claims, ttl)``."""

    __slots__ = ("_api_key", "_header_b64", "_private_key")

    def __init__(self, api_key: str, api_secret: str) -> None:
        self._api_key = validate_key_id(api_key)
        self._private_key = parse_secret(api_secret)
        header = json.dumps({"alg": "EdDSA", "kid": api_key}, separators=(",", ":"))
        self._header_b64 = b64url_encode(header.encode())

    @property
    def api_key(self) -> str:
        return self._api_key

    def create_token(self, claims: PeerClaims, duration_secs: int) -> str:
        """A token valid for ``duration_secs`` seconds from now (the official CLI uses 3600)."""
        if isinstance(duration_secs, bool) or not isinstance(duration_secs, int):
            raise InvalidArgumentError("duration_secs must be a whole number of seconds")
        if duration_secs <= 0:
            raise InvalidArgumentError(f"duration_secs must be positive, got {duration_secs}")
        policy = claims.allow_policy
        if policy is None:
            raise InvalidArgumentError(
                "the claims have no allow policy: call claims.set_allow_policy(PeerPolicy(…))"
                " (PeerPolicy('*', '*') allows every peer of the project)"
            )
        payload = {
            "exp": int(time.time()) + duration_secs,
            "gid": claims.group_id,
            "pid": claims.peer_id,
            "ap": {"group_id": policy.group_id, "peer_id": policy.peer_id},
        }
        payload_b64 = b64url_encode(json.dumps(payload, separators=(",", ":")).encode())
        signing_input = f"{self._header_b64}.{payload_b64}"
        signature = self._private_key.sign(signing_input.encode("ascii"))
        return f"{signing_input}.{b64url_encode(signature)}"

    def __repr__(self) -> str:
        return f"AccessToken(api_key={self._api_key!r}, api_secret='sk_…')"
