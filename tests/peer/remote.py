"""Drive a :mod:`tests.peer.agent` process from a test: start it, await its JSON events."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tests.fixtures.server import ProjectKeys

ROOT = Path(__file__).resolve().parents[2]
EVENT_TIMEOUT = 20.0


class Agent:
    """A remote peer process; ``await agent.expect("ready")`` returns that event's fields."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def start(
        cls, base_url: str, keys: ProjectKeys, peer: str, *args: str, group: str = "g1"
    ) -> Agent:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.peer.agent",
            "--base-url",
            base_url,
            "--api-key",
            keys.api_key,
            "--api-secret",
            keys.api_secret,
            "--group",
            group,
            "--peer",
            peer,
            *args,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        agent = cls(process)
        await agent.expect("ready")
        return agent

    async def expect(self, event: str) -> dict[str, Any]:
        """The next event named ``event`` (earlier other events are kept in ``events``)."""
        assert self.process.stdout is not None
        async with asyncio.timeout(EVENT_TIMEOUT):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise AssertionError(
                        f"agent exited ({await self.process.wait()}) before {event!r};"
                        f" events: {self.events}"
                    )
                fields: dict[str, Any] = json.loads(line)
                self.events.append(fields)
                if fields["event"] == event:
                    return fields

    async def stop(self) -> int:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            try:
                self.process.stdin.write(b"quit\n")
                await self.process.stdin.drain()
                self.process.stdin.close()
                async with asyncio.timeout(10):
                    return await self.process.wait()
            except (TimeoutError, ConnectionError):
                self.process.kill()
        return await self.process.wait()
