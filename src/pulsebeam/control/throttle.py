"""Sign-in throttling: too many failures per account or per client address in a window gets a
429 until the oldest failure leaves the window.

Callers use :meth:`LoginThrottle.attempt` *before* checking the password and
:meth:`LoginThrottle.succeeded` after a success: an attempt counts as a failure from the start,
so many sign-ins sent at once (all waiting on the slow password hash) cannot each pass the check
before any failure is recorded.

Written by hand: the few rate-limit libraries around are built for per-route request quotas
behind Redis, not for counting only failed sign-ins per two keys. The state is per process
(documented): behind several nodes an attacker gets a multiple of the budget, still bounded.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from pulsebeam.errors import ResourceExhaustedError

__all__ = ["LoginThrottle", "ThrottledError"]


class ThrottledError(ResourceExhaustedError):
    """Too many failed sign-ins; ``retry_after`` is in whole seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Window:
    """Failure times per key within ``window`` seconds, for at most ``max_keys`` keys."""

    def __init__(self, limit: int, window: float, max_keys: int) -> None:
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def _live(self, key: str, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            return deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if not hits:
            del self._hits[key]
        return hits

    def retry_after(self, key: str, now: float) -> float:
        hits = self._live(key, now)
        return hits[0] + self.window - now if len(hits) >= self.limit else 0.0

    def add(self, key: str, now: float) -> None:
        hits = self._live(key, now)
        self._hits[key] = hits
        self._hits.move_to_end(key)
        hits.append(now)
        if len(hits) > self.limit:
            hits.popleft()
        while len(self._hits) > self.max_keys:  # memory stays bounded under a spray of keys
            self._hits.popitem(last=False)

    def clear(self, key: str) -> None:
        self._hits.pop(key, None)

    def undo(self, key: str) -> None:
        """Take back the newest hit of ``key`` (an attempt that turned out to succeed)."""
        hits = self._hits.get(key)
        if hits:
            hits.pop()
            if not hits:
                del self._hits[key]


class LoginThrottle:
    def __init__(
        self,
        *,
        per_account: int = 5,
        per_address: int = 20,
        window_secs: float = 900.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._accounts = _Window(per_account, window_secs, max_keys)
        self._addresses = _Window(per_address, window_secs, max_keys)
        self._clock = clock

    def check(self, email: str, address: str) -> None:
        """Raise :class:`ThrottledError` if this sign-in must wait."""
        now = self._clock()
        wait = max(
            self._accounts.retry_after(email.strip().lower(), now),
            self._addresses.retry_after(address, now),
        )
        if wait > 0:
            seconds = math.ceil(wait)
            raise ThrottledError(
                f"too many failed sign-ins: try again in {seconds} s", retry_after=seconds
            )

    def failed(self, email: str, address: str) -> None:
        now = self._clock()
        self._accounts.add(email.strip().lower(), now)
        self._addresses.add(address, now)

    def attempt(self, email: str, address: str) -> None:
        """Start a sign-in: raise :class:`ThrottledError` if it must wait, else count it as a
        failure until :meth:`succeeded` says otherwise (so concurrent attempts see it)."""
        self.check(email, address)
        self.failed(email, address)

    def succeeded(self, email: str, address: str) -> None:
        """The attempt succeeded: clear the account's failures and take back the address's."""
        self._accounts.clear(email.strip().lower())
        self._addresses.undo(address)
