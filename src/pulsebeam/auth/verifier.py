"""Verifying tokens on every signaling call, cheaply and strictly.

Exactly one algorithm is accepted (EdDSA with Ed25519); ``exp`` is required; the key comes from
the caller's lookup (key id -> public key, or ``None`` when unknown or revoked).

Verified tokens are cached so that the calls of one peer (``Prepare``, ``Recv``, each ``Send``)
pay for the signature once. A cache hit is honoured only while the token has not expired and the
lookup still returns the *same* key object it was verified with, so deleting a key (or replacing
its entry) invalidates every cached token of that key without any bookkeeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pulsebeam.auth.keys import is_key_id
from pulsebeam.auth.policy import PeerPolicy, validate_id, validate_pattern
from pulsebeam.auth.tokens import (
    MAX_TOKEN_BYTES,
    b64url_decode,
    decode_json_part,
    split_compact,
)
from pulsebeam.errors import (
    ExpiredTokenError,
    InvalidClaimsError,
    InvalidPatternError,
    InvalidSignatureError,
    UnknownKeyError,
    UnsupportedAlgorithmError,
)

__all__ = ["KeyLookup", "TokenVerifier", "VerifiedToken"]

KeyLookup = Callable[[str], Ed25519PublicKey | None]
"""Key id -> its public key, or ``None`` when the key is unknown or revoked."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """The claims of a token whose signature, key and expiry have been checked."""

    key_id: str
    group_id: str
    peer_id: str
    policy: PeerPolicy
    expires_at: int


@dataclass(frozen=True, slots=True)
class _CacheEntry:
    claims: VerifiedToken
    key: Ed25519PublicKey
    valid_until: float


class TokenVerifier:
    """``TokenVerifier(lookup).verify(token)`` -> :class:`VerifiedToken` or a ``TokenError``."""

    def __init__(
        self,
        lookup: KeyLookup,
        *,
        leeway_secs: float = 5.0,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        cache_size: int = 50_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if leeway_secs < 0 or leeway_secs > 300:
            raise ValueError("leeway_secs must be between 0 and 300")
        self._lookup = lookup
        self._leeway = leeway_secs
        self._max_bytes = max_token_bytes
        self._cache_size = cache_size
        self._clock = clock
        self._cache: dict[str, _CacheEntry] = {}
        # Every token of one key has the same header part: decode it once.
        self._headers: dict[str, dict[str, Any]] = {}

    def verify(self, token: str) -> VerifiedToken:
        now = self._clock()
        entry = self._cache.get(token)
        if entry is not None:
            if now <= entry.valid_until and self._lookup(entry.claims.key_id) is entry.key:
                return entry.claims
            del self._cache[token]  # expired or key revoked: verify afresh for the exact error
        claims, key = self._verify_fresh(token, now)
        if self._cache_size > 0:
            self._remember(token, _CacheEntry(claims, key, claims.expires_at + self._leeway), now)
        return claims

    def _verify_fresh(self, token: str, now: float) -> tuple[VerifiedToken, Ed25519PublicKey]:
        header_b64, payload_b64, signature_b64 = split_compact(token, max_bytes=self._max_bytes)
        header = self._header(header_b64)
        alg = header.get("alg")
        if alg != "EdDSA":
            raise UnsupportedAlgorithmError(
                f"token algorithm {str(alg)[:20]!r} is not accepted: only EdDSA (Ed25519) is"
            )
        if "crit" in header:
            raise UnsupportedAlgorithmError(
                "token header has 'crit' extensions, and none are supported"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not is_key_id(kid):
            raise UnknownKeyError(
                "token header has no valid 'kid' (expected 'kid_' + 16 lowercase hex digits)"
            )
        key = self._lookup(kid)
        if key is None:
            raise UnknownKeyError(f"token key {kid} is unknown or has been deleted")
        signature = b64url_decode(signature_b64, "signature")
        if len(signature) != 64:
            raise InvalidSignatureError("token signature must be 64 bytes for Ed25519")
        try:
            key.verify(signature, f"{header_b64}.{payload_b64}".encode("ascii"))
        except InvalidSignature:
            raise InvalidSignatureError(f"token signature does not verify with key {kid}") from None
        claims = _claims(kid, decode_json_part(payload_b64, "payload"))
        if now > claims.expires_at + self._leeway:
            ago = int(now - claims.expires_at)
            raise ExpiredTokenError(f"token expired {ago} s ago: mint a new one")
        return claims, key

    def _header(self, header_b64: str) -> dict[str, Any]:
        header = self._headers.get(header_b64)
        if header is None:
            header = decode_json_part(header_b64, "header")
            if len(self._headers) >= 1024:  # bounded: headers are per key, keys are few
                self._headers.clear()
            self._headers[header_b64] = header
        return header

    def _remember(self, token: str, entry: _CacheEntry, now: float) -> None:
        cache = self._cache
        if len(cache) >= self._cache_size:
            for stale in [t for t, e in cache.items() if e.valid_until < now]:
                del cache[stale]
            # Still full of live tokens: drop the oldest quarter (dicts keep insertion order).
            if len(cache) >= self._cache_size:
                for oldest in list(cache)[: max(1, self._cache_size // 4)]:
                    del cache[oldest]
        cache[token] = entry


def _claims(kid: str, payload: dict[str, Any]) -> VerifiedToken:
    exp = payload.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int):
        raise InvalidClaimsError("token claim 'exp' is missing or not an integer (unix seconds)")
    ap = payload.get("ap")
    if ap is None:
        raise InvalidClaimsError("token has no allow policy ('ap'): mint it with a PeerPolicy")
    if not isinstance(ap, dict):
        raise InvalidClaimsError("token claim 'ap' must be an object with group_id and peer_id")
    try:
        group_id = validate_id(payload.get("gid"), "token claim 'gid'")
        peer_id = validate_id(payload.get("pid"), "token claim 'pid'")
        policy = PeerPolicy(
            validate_pattern(ap.get("group_id"), "token claim 'ap.group_id'"),
            validate_pattern(ap.get("peer_id"), "token claim 'ap.peer_id'"),
        )
    except InvalidPatternError as exc:
        raise InvalidClaimsError(str(exc)) from None
    return VerifiedToken(kid, group_id, peer_id, policy, exp)
