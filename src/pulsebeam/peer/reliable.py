"""De-duplication of reliable messages by ``seqnum`` (a retried ``Send`` may arrive twice).

A window of the highest seqnum seen plus a bounded set below it: memory stays constant however
long the session lives, and a seqnum far behind the window counts as already seen.
"""

from __future__ import annotations

__all__ = ["SeqnumWindow"]

_MODULUS = 2**32


class SeqnumWindow:
    """``add(seqnum)`` is True the first time a seqnum is seen, False for a repeat."""

    def __init__(self, size: int = 1024) -> None:
        if size <= 0:
            raise ValueError(f"window size must be positive, got {size}")
        self._size = size
        self._highest: int | None = None
        self._seen: set[int] = set()

    def add(self, seqnum: int) -> bool:
        if self._highest is None:
            self._highest = seqnum
            self._seen.add(seqnum)
            return True
        # Distance forward from the highest, modulo 2**32 (seqnums wrap like uint32).
        ahead = (seqnum - self._highest) % _MODULUS
        if 0 < ahead < _MODULUS // 2:
            self._highest = seqnum
            self._seen.add(seqnum)
            floor = (seqnum - self._size) % _MODULUS
            self._seen = {s for s in self._seen if (s - floor) % _MODULUS <= self._size}
            return True
        behind = (self._highest - seqnum) % _MODULUS
        if behind >= self._size or seqnum in self._seen:
            return False
        self._seen.add(seqnum)
        return True
