"""Long-term credential checks for TURN requests (RFC 8489 section 9.2), with expiring nonces.

Nonces are stateless: ``obMatJos2`` + the security-feature bits (password algorithms) + base64 of
(issue time, HMAC of that time and the client's IP under a per-server random key). A nonce from
another client, another server instance or older than ``nonce_ttl`` gets 438 (Stale Nonce) and a
fresh one, so nothing has to be remembered per client.

401 answers to requests that *carried* credentials (wrong password, expired credential, revoked
key) are rate limited per source IP: past the limit the request is dropped unanswered, which slows
password guessing and keeps the server from being used to reflect traffic. The first 401 of every
exchange (the challenge to a request without credentials) has its own, more generous per-source
limit in the handler (:mod:`pulsebeam.turn.handler`): it reveals nothing but amplifies.

A credential's expiry is checked for every request except those the caller marks ``renewable``:
requests on an existing allocation with the username that created it (see
:mod:`pulsebeam.turn.handler`). The HMAC and the key's liveness are checked for every request, so a
deleted key still ends everything at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from pulsebeam.turn.attributes import (
    decode_password_algorithm,
    decode_text,
    encode_password_algorithms,
)
from pulsebeam.turn.credentials import CredentialError, parse_username, password_for
from pulsebeam.turn.stun import Attr, Message, long_term_key

__all__ = ["AuthFailure", "Authenticator", "Identity", "RateLimiter"]

ALGORITHM_MD5 = 1
ALGORITHM_SHA256 = 2
_ALGORITHMS = encode_password_algorithms([ALGORITHM_MD5, ALGORITHM_SHA256])
# RFC 8489 section 9.2: the nonce cookie, then 24 security-feature bits in base64; bit 0
# ("password algorithms") set, bit 1 ("username anonymity", USERHASH) not offered.
_NONCE_PREFIX = "obMatJos2" + base64.b64encode(b"\x80\x00\x00").decode()
_NONCE_MAC = 12


@dataclass(frozen=True, slots=True)
class Identity:
    """Who an authenticated request came from, and how to protect the response."""

    username: str
    key: bytes
    key_id: str
    project_id: str
    sha1: bool  # the request carried MESSAGE-INTEGRITY: answer with it
    sha256: bool  # ... MESSAGE-INTEGRITY-SHA256: answer with it
    renewed: bool = False  # the credential has expired; accepted for its own allocation only


class AuthFailure(Exception):
    """A request that cannot be authenticated: answer ``code`` with ``reason``.

    ``challenge`` adds REALM and NONCE (401 and 438); ``limited`` marks failures counted by the
    401 rate limiter.
    """

    def __init__(self, code: int, reason: str, *, challenge: bool, limited: bool) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.challenge = challenge
        self.limited = limited


class RateLimiter:
    """Token bucket per key (source IP): ``rate`` per second, bursts of ``burst``."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._pruned_at = -math.inf

    def allow(self, key: str) -> bool:
        now = self._clock()
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            # Bounded memory under a flood of sources: keep only the sources being refused
            # right now (tokens refilled to this instant); when even those fill the table, a new
            # source is refused too (fail closed) rather than tracked. At most one such O(n)
            # pass per refill period, so a flood cannot turn it into a CPU sink.
            if now - self._pruned_at < 1.0 / self._rate:
                return False
            self._pruned_at = now
            self._buckets = {
                k: (t, s) for k, (t, s) in self._buckets.items() if t + (now - s) * self._rate < 1.0
            }
            if len(self._buckets) >= self._max_keys:
                return False
        self._buckets[key] = (tokens - 1.0, now)
        return True


class Authenticator:
    """Checks the long-term credentials of a request; see the module docstring."""

    def __init__(
        self,
        secret: bytes,
        realm: str,
        *,
        key_is_live: Callable[[str], bool],
        nonce_ttl_secs: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.realm = realm
        self._secret = secret
        self._key_is_live = key_is_live
        self._nonce_ttl = nonce_ttl_secs
        self._clock = clock
        self._nonce_key = os.urandom(32)

    def key_is_live(self, key_id: str) -> bool:
        return self._key_is_live(key_id)

    def challenge_attributes(self, client_ip: str) -> list[tuple[int, bytes]]:
        return [
            (Attr.REALM, self.realm.encode()),
            (Attr.NONCE, self.new_nonce(client_ip).encode()),
            (Attr.PASSWORD_ALGORITHMS, _ALGORITHMS),
        ]

    def new_nonce(self, client_ip: str) -> str:
        stamp = struct.pack("!Q", int(self._clock()))
        mac = hmac.new(self._nonce_key, stamp + client_ip.encode(), hashlib.sha256).digest()
        return _NONCE_PREFIX + base64.urlsafe_b64encode(stamp + mac[:_NONCE_MAC]).decode()

    def _nonce_fresh(self, nonce: str, client_ip: str) -> bool:
        if not nonce.startswith(_NONCE_PREFIX):
            return False
        try:
            raw = base64.urlsafe_b64decode(nonce[len(_NONCE_PREFIX) :])
        except ValueError:
            return False
        if len(raw) != 8 + _NONCE_MAC:
            return False
        stamp, mac = raw[:8], raw[8:]
        expected = hmac.new(self._nonce_key, stamp + client_ip.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected[:_NONCE_MAC]):
            return False
        age = self._clock() - int.from_bytes(stamp, "big")
        return 0 <= age <= self._nonce_ttl

    def authenticate(
        self, msg: Message, client_ip: str, *, renewable: str | None = None
    ) -> Identity:
        """The request's :class:`Identity`, or :class:`AuthFailure` saying how to answer.

        ``renewable`` is the username of the existing allocation the request is for, when that
        allocation may still be kept alive: a credential with exactly this username is accepted
        after its expiry (``Identity.renewed``); its HMAC and key are checked as always.
        """
        sha1 = Attr.MESSAGE_INTEGRITY in msg.integrity_offsets
        sha256 = Attr.MESSAGE_INTEGRITY_SHA256 in msg.integrity_offsets
        if not (sha1 or sha256):
            raise AuthFailure(401, "Unauthorized", challenge=True, limited=False)
        raw_user, raw_realm, raw_nonce = (
            msg.get(Attr.USERNAME),
            msg.get(Attr.REALM),
            msg.get(Attr.NONCE),
        )
        if raw_user is None or raw_realm is None or raw_nonce is None:
            raise AuthFailure(
                400, "USERNAME, REALM and NONCE are required", challenge=False, limited=False
            )
        nonce = decode_text(raw_nonce, "NONCE")
        if not self._nonce_fresh(nonce, client_ip):
            raise AuthFailure(438, "Stale Nonce", challenge=True, limited=False)
        algorithm = ALGORITHM_MD5
        offered = msg.get(Attr.PASSWORD_ALGORITHMS)
        chosen = msg.get(Attr.PASSWORD_ALGORITHM)
        if (offered is None) != (chosen is None):
            # RFC 8489 section 9.2.4: both or neither (a downgrade attempt otherwise).
            raise AuthFailure(
                400,
                "PASSWORD-ALGORITHM and PASSWORD-ALGORITHMS go together",
                challenge=False,
                limited=False,
            )
        if offered is not None and offered != _ALGORITHMS:
            raise AuthFailure(
                400, "PASSWORD-ALGORITHMS differs from ours", challenge=False, limited=False
            )
        if chosen is not None:
            algorithm = decode_password_algorithm(chosen)
            if algorithm not in (ALGORITHM_MD5, ALGORITHM_SHA256):
                raise AuthFailure(
                    400,
                    f"unsupported password algorithm {algorithm}",
                    challenge=False,
                    limited=False,
                )
        if decode_text(raw_realm, "REALM") != self.realm:
            raise AuthFailure(401, "wrong realm", challenge=True, limited=True)
        username = decode_text(raw_user, "USERNAME")
        try:
            expires_at, key_id, project_id = parse_username(username)
        except CredentialError:
            raise AuthFailure(
                401, "username is not <expiry>:<key id>:<project id>", challenge=True, limited=True
            ) from None
        password = password_for(self._secret, username)
        key = long_term_key(username, self.realm, password, sha256=algorithm == ALGORITHM_SHA256)
        if not msg.check_integrity(key):
            raise AuthFailure(401, "wrong credentials", challenge=True, limited=True)
        expired = expires_at < self._clock()
        if expired and username != renewable:
            raise AuthFailure(401, "credential expired", challenge=True, limited=True)
        if not self._key_is_live(key_id):
            raise AuthFailure(401, "API key revoked or unknown", challenge=True, limited=True)
        return Identity(username, key, key_id, project_id, sha1, sha256, renewed=expired)
