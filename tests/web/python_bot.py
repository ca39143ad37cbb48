"""A Python peer (``pulsebeam.peer`` on aiortc) for the browser tests, run as its own process.

It joins the room of its token, and on every session: opens a ``chat`` data channel and says
hello on it, and answers each message that arrives on the other side's ``chat`` channel with
``echo: <message>``. It prints one line per event (``SESSION``, ``OPEN``, ``GOT``, ``PATH``) so
the test can follow it, and exits after ``--lifetime`` seconds or when stdin closes. With
``--break-on TEXT`` it cuts its ICE path after echoing TEXT and reports ``BROKE`` and each
``STATE`` of the session that follows (with its generation). With ``--mute-on TEXT`` it instead
stops taking anything from its ICE path after echoing TEXT, without noticing for long (its
consent checks tolerate any number of misses), so that the other side's ICE fails first and
that side restarts; it reports ``MUTED`` and each ``STATE``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import aioice.ice
from aiortc import RTCIceServer

from pulsebeam.peer import DataChannel, Session, create_peer


def say(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


Fault = Callable[[Session], Coroutine[Any, Any, None]]


async def echo(channel: DataChannel, session: Session, trigger: str | None, fault: Fault) -> None:
    reporter: asyncio.Task[None] | None = None
    async for message in channel:
        text = message if isinstance(message, str) else message.decode()
        say("GOT", text)
        channel.send(f"echo: {text}")
        if text == trigger and reporter is None:
            await asyncio.sleep(0.2)  # let the echo leave first
            reporter = asyncio.create_task(fault(session))


async def break_path(session: Session) -> None:
    """Cut the ICE path (as when the network goes away) and report the session's states."""
    sctp = session.pc.sctp
    assert sctp is not None
    await sctp.transport.transport._connection.close()
    say("BROKE", session.other.peer_id)
    await report_states(session)


async def mute_path(session: Session) -> None:
    """Drop whatever arrives on the ICE path, and never give up on consent: only the other
    side sees its path fail."""
    sctp = session.pc.sctp
    assert sctp is not None
    aioice.ice.CONSENT_FAILURES = 10**6
    for protocol in sctp.transport.transport._connection._protocols:
        protocol.datagram_received = lambda data, addr: None  # type: ignore[method-assign]
    say("MUTED", session.other.peer_id)
    await report_states(session)


async def report_states(session: Session) -> None:
    async for state in session.connection_states():
        say("STATE", state, session.generation)


async def serve_session(
    session: Session, trigger: str | None = None, fault: Fault = break_path
) -> None:
    say("SESSION", session.other.peer_id)
    mine = session.create_data_channel("chat")
    tasks: list[asyncio.Task[None]] = []
    try:
        async with asyncio.timeout(30):
            await session.wait_connected()
        say("PATH", session.path)
        await mine.wait_open()
        say("OPEN", session.other.peer_id)
        mine.send("hello from python")
        async for channel in session.data_channels():
            if channel.label == "chat":
                tasks.append(asyncio.create_task(echo(channel, session, trigger, fault)))
    finally:
        for task in tasks:
            task.cancel()


async def stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--ice-servers", default="[]", help="extra ICE servers as JSON")
    parser.add_argument("--lifetime", type=float, default=90.0)
    faults = parser.add_mutually_exclusive_group()
    faults.add_argument("--break-on", help="cut the ICE path after echoing this message")
    faults.add_argument("--mute-on", help="stop taking from the ICE path after this message")
    args = parser.parse_args()
    trigger, fault = (args.mute_on, mute_path) if args.mute_on else (args.break_on, break_path)
    extra = [RTCIceServer(**server) for server in json.loads(args.ice_servers)]
    peer = await create_peer(args.token, args.base_url, force_relay=True, ice_servers=extra)
    tasks: list[asyncio.Task[None]] = []
    try:
        peer.start()
        await peer.wait_ready()
        say("READY", peer.peer_id)

        async def accept() -> None:
            async for session in peer.sessions():
                tasks.append(asyncio.create_task(serve_session(session, trigger, fault)))

        tasks.append(asyncio.create_task(accept()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stdin_closed(), args.lifetime)
    finally:
        for task in tasks:
            task.cancel()
        await peer.close()


if __name__ == "__main__":
    asyncio.run(main())
