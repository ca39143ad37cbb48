"""Password hashing (argon2id through argon2-cffi) and the password rules.

Hashing is deliberately slow, so it runs in a worker thread and never blocks the event loop. The
store takes its :class:`~argon2.PasswordHasher` as a parameter (default: the library's RFC 9106
profile), so an operator can tune the cost; hashes record their own parameters, so changing
them keeps old passwords working.
"""

from __future__ import annotations

import asyncio
import functools

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from pulsebeam.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_HASHER",
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "check_password_rules",
    "hash_password",
    "verify",
]

MIN_PASSWORD = 10
MAX_PASSWORD = 256  # bounds the hashing work one request can cause
DEFAULT_HASHER = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4


def check_password_rules(password: str, email: str) -> None:
    """Refuse passwords that are short, huge, repetitive or the email address itself."""
    if len(password) < MIN_PASSWORD:
        raise InvalidArgumentError(f"password too weak: use at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidArgumentError(f"password too long: at most {MAX_PASSWORD} characters")
    if len(set(password)) < 5:
        raise InvalidArgumentError("password too weak: use at least 5 different characters")
    lowered, local = password.lower(), email.lower().partition("@")[0]
    if lowered in email.lower() or (len(local) >= 4 and local in lowered):
        raise InvalidArgumentError("password too weak: it must not contain the email address")


async def hash_password(hasher: PasswordHasher, password: str) -> str:
    if hasher.type is not Type.ID:
        raise ValueError("passwords are hashed with argon2id only")
    return await asyncio.to_thread(hasher.hash, password)


def _verify_sync(hasher: PasswordHasher, password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash(time_cost: int, memory_cost: int, parallelism: int) -> str:
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
    return hasher.hash("not a real password, only spends the same time")


async def verify(hasher: PasswordHasher, password_hash: str | None, password: str) -> bool:
    """Check a password; with no hash (unknown account) spend the same time and fail."""
    if len(password) > MAX_PASSWORD:
        return False
    if password_hash is None:
        dummy = _dummy_hash(hasher.time_cost, hasher.memory_cost, hasher.parallelism)
        await asyncio.to_thread(_verify_sync, hasher, dummy, password)
        return False
    return await asyncio.to_thread(_verify_sync, hasher, password_hash, password)
