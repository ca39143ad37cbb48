"""Rate limiting per peer: a token bucket per key, for sends, ``Recv`` opens and analytics.

The service keys buckets by the token's (project, group, peer), never by anything the caller
picks freely such as a ``conn_id``, so a client cannot get a fresh bucket by renaming itself.

Written by hand because it is a dozen lines on the hot path; the library limiters available are
built for HTTP middleware or Redis, not for an in-memory per-key check.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["RateLimiter"]


class RateLimiter:
    """``allow(key)`` spends one token of ``key``'s bucket (``rate``/s, up to ``burst``)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._rate = rate
        self._burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def allow(self, key: Hashable) -> bool:
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)  # most recently used last
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)  # a forgotten bucket starts full: errs generous
        return allowed
