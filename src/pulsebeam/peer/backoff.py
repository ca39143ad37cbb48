"""Exponential backoff with jitter, as the official SDK reopens ``Recv`` (250 ms base, 1 s cap)."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """``next_delay()`` doubles from ``base`` up to ``cap``; ``reset()`` after a success."""

    def __init__(self, base: float = 0.25, cap: float = 1.0) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(self._attempt, 32))
        self._attempt += 1
        # Jitter in [ceiling/2, ceiling]: peers dropped together do not come back in lockstep.
        return ceiling * (0.5 + random.random() / 2)
