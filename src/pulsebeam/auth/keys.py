"""API key pairs in the official formats.

- key id (API key): ``kid_`` + 16 lowercase hex characters;
- API secret: ``sk_`` + 64 lowercase hex characters, the 32-byte Ed25519 private seed;
- public key (our documented string form): ``pk_`` + 64 lowercase hex characters, the raw
  32-byte Ed25519 public key. The server stores only this and the key id.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pulsebeam.errors import InvalidArgumentError

_KID_RE = re.compile(r"kid_[0-9a-f]{16}")
_SECRET_RE = re.compile(r"sk_[0-9a-f]{64}")
_PUBLIC_RE = re.compile(r"pk_[0-9a-f]{64}")


def is_key_id(value: str) -> bool:
    return _KID_RE.fullmatch(value) is not None


def validate_key_id(value: str) -> str:
    if not is_key_id(value):
        raise InvalidArgumentError(
            f"API key {value[:24]!r} is invalid: expected 'kid_' followed by 16 lowercase hex"
            " digits"
        )
    return value


def parse_secret(api_secret: str) -> Ed25519PrivateKey:
    """Decode an ``sk_…`` secret. The message never echoes the secret itself."""
    if not _SECRET_RE.fullmatch(api_secret):
        raise InvalidArgumentError(
            "API secret is invalid: expected 'sk_' followed by 64 lowercase hex digits"
            " (the 32-byte Ed25519 seed)"
        )
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(api_secret[3:]))


def format_public_key(key: Ed25519PublicKey) -> str:
    return "pk_" + key.public_bytes_raw().hex()


def parse_public_key(text: str) -> Ed25519PublicKey:
    if not _PUBLIC_RE.fullmatch(text):
        raise InvalidArgumentError(
            f"public key {text[:24]!r}… is invalid: expected 'pk_' followed by 64 lowercase hex"
            " digits (the raw 32-byte Ed25519 public key)"
        )
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text[3:]))


def public_key_for_secret(api_secret: str) -> str:
    """The ``pk_…`` public key that belongs to an ``sk_…`` secret."""
    return format_public_key(parse_secret(api_secret).public_key())


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A freshly generated key pair. ``api_secret`` must be shown once and never stored."""

    api_key: str
    api_secret: str
    public_key: str

    @classmethod
    def generate(cls) -> KeyPair:
        private = Ed25519PrivateKey.generate()
        seed = private.private_bytes_raw()
        return cls(
            api_key="kid_" + secrets.token_hex(8),
            api_secret="sk_" + seed.hex(),
            public_key=format_public_key(private.public_key()),
        )

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return (
            f"KeyPair(api_key={self.api_key!r}, api_secret='sk_…', public_key={self.public_key!r})"
        )
