"""Ephemeral TURN credentials in coturn's "TURN REST API" scheme, tied to API keys.

Username: ``"<expiry unix seconds>:<kid>:<project id>"``; password:
``base64(HMAC-SHA1(secret, username))``. A TURN server that knows the secret checks a password
without any lookup (coturn does the same with ``use-auth-secret`` / ``static-auth-secret``: it reads
only the expiry before the first ``:``). Ours also reads the key id, so that deleting the key
tears down the allocations made with it, and the project id, for quotas and usage.

:class:`IceServerProvider` is what signaling's ``Prepare`` calls: it returns the ICE server
entries (STUN and TURN URLs with a fresh credential) for one verified token, whose expiry is the
token's, capped at the configured maximum TTL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "CredentialError",
    "IceServer",
    "IceServerProvider",
    "TurnCredential",
    "mint_credential",
    "parse_username",
    "password_for",
]


class CredentialError(ValueError):
    """A TURN username that is not ``expiry:kid:project`` (or a bad argument to mint one)."""


@dataclass(frozen=True, slots=True)
class TurnCredential:
    username: str
    password: str
    expires_at: int
    key_id: str
    project_id: str


@dataclass(frozen=True, slots=True)
class IceServer:
    """One ``RTCIceServer`` entry; signaling turns it into the protobuf ``IceServer``."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


def password_for(secret: bytes, username: str) -> str:
    digest = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _check_field(value: str, name: str) -> None:
    if not value or ":" in value or not value.isascii() or not value.isprintable():
        raise CredentialError(f"{name} {value!r} must be non-empty printable ASCII without ':'")


def mint_credential(secret: bytes, key_id: str, project_id: str, expires_at: int) -> TurnCredential:
    _check_field(key_id, "key id")
    _check_field(project_id, "project id")
    username = f"{int(expires_at)}:{key_id}:{project_id}"
    return TurnCredential(
        username, password_for(secret, username), int(expires_at), key_id, project_id
    )


def parse_username(username: str) -> tuple[int, str, str]:
    """``"expiry:kid:project"`` -> (expiry, kid, project) or :class:`CredentialError`."""
    parts = username.split(":")
    # isascii: str.isdigit() accepts digits such as "²" that int() refuses.
    if len(parts) != 3 or not (parts[0].isascii() and parts[0].isdigit()):
        raise CredentialError(f"TURN username {username!r} is not <expiry>:<key id>:<project id>")
    if not parts[1] or not parts[2]:
        raise CredentialError(f"TURN username {username!r} is not <expiry>:<key id>:<project id>")
    return int(parts[0]), parts[1], parts[2]


class IceServerProvider:
    """ICE servers for ``Prepare``: ``provider.ice_servers(key_id, project_id, token_exp)``.

    ``host``/``port`` are what clients dial (the TURN listener, or an external coturn sharing the
    secret); ``tls_port`` adds a ``turns:`` URL. ``max_ttl_secs`` caps the credential lifetime.
    """

    def __init__(
        self,
        secret: bytes,
        *,
        host: str,
        port: int,
        tls_port: int | None = None,
        max_ttl_secs: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("the TURN secret must not be empty")
        if max_ttl_secs <= 0:
            raise ValueError("max_ttl_secs must be positive")
        self._secret = secret
        self._max_ttl = max_ttl_secs
        self._clock = clock
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.stun_urls = (f"stun:{where}",)
        turn_urls = [f"turn:{where}?transport=udp", f"turn:{where}?transport=tcp"]
        if tls_port is not None:
            tls_where = f"[{host}]:{tls_port}" if ":" in host else f"{host}:{tls_port}"
            turn_urls.append(f"turns:{tls_where}?transport=tcp")
        self.turn_urls = tuple(turn_urls)

    def credential(self, key_id: str, project_id: str, token_expires_at: int) -> TurnCredential:
        expires_at = min(int(token_expires_at), int(self._clock()) + self._max_ttl)
        return mint_credential(self._secret, key_id, project_id, expires_at)

    def ice_servers(self, key_id: str, project_id: str, token_expires_at: int) -> list[IceServer]:
        cred = self.credential(key_id, project_id, token_expires_at)
        return [IceServer(self.stun_urls), IceServer(self.turn_urls, cred.username, cred.password)]
