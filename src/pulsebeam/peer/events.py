"""A closable, single-consumer async stream: the one async idiom of the peer SDK.

Everything that happens over time (new sessions, incoming data channels and tracks, connection
states, channel messages) is an ``async for`` over one of these; every one-off outcome is an
awaitable. When the producer closes the stream with an error, the consumer's iteration raises it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["EventStream", "first_of"]

T = TypeVar("T")


class EventStream(Generic[T]):
    """Items in arrival order; ``close()`` ends the iteration after the queued items."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._error: BaseException | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> None:
        if self._closed:
            return
        self._items.append(item)
        self._wakeup.set()

    def close(self, error: BaseException | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._wakeup.set()

    async def get(self) -> T:
        """The next item; raises the close error, or ``StopAsyncIteration`` once closed."""
        while not self._items:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()

    def __aiter__(self) -> EventStream[T]:
        return self

    async def __anext__(self) -> T:
        return await self.get()


async def first_of(*events: asyncio.Event) -> None:
    """Wait until any of ``events`` is set."""
    waiters = {asyncio.ensure_future(event.wait()) for event in events}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
