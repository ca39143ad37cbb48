"""A Python peer (``pulsebeam.peer`` on aiortc) for the browser tests, run as its own process.

It joins the room of its token, and on every session: opens a ``chat`` data channel and says
hello on it, and answers each message that arrives on the other side's ``chat`` channel with
``echo: <message>``. It prints one line per event (``SESSION``, ``OPEN``, ``GOT``, ``PATH``) so
the test can follow it, and exits after ``--lifetime`` seconds or when stdin closes. With
``--break-on TEXT`` it cuts its ICE path after echoing TEXT and reports ``BROKE`` and each
``STATE`` of the session that follows (with its generation).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys

from aiortc import RTCIceServer

from pulsebeam.peer import DataChannel, Session, create_peer


def say(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


async def echo(channel: DataChannel, session: Session, break_on: str | None) -> None:
    reporter: asyncio.Task[None] | None = None
    async for message in channel:
        text = message if isinstance(message, str) else message.decode()
        say("GOT", text)
        channel.send(f"echo: {text}")
        if text == break_on and reporter is None:
            await asyncio.sleep(0.2)  # let the echo leave first
            reporter = asyncio.create_task(break_path(session))


async def break_path(session: Session) -> None:
    """Cut the ICE path (as when the network goes away) and report the session's states."""
    sctp = session.pc.sctp
    assert sctp is not None
    await sctp.transport.transport._connection.close()
    say("BROKE", session.other.peer_id)
    async for state in session.connection_states():
        say("STATE", state, session.generation)


async def serve_session(session: Session, break_on: str | None = None) -> None:
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
                tasks.append(asyncio.create_task(echo(channel, session, break_on)))
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
    parser.add_argument("--break-on", help="cut the ICE path after echoing this message")
    args = parser.parse_args()
    extra = [RTCIceServer(**server) for server in json.loads(args.ice_servers)]
    peer = await create_peer(args.token, args.base_url, force_relay=True, ice_servers=extra)
    tasks: list[asyncio.Task[None]] = []
    try:
        peer.start()
        await peer.wait_ready()
        say("READY", peer.peer_id)

        async def accept() -> None:
            async for session in peer.sessions():
                tasks.append(asyncio.create_task(serve_session(session, args.break_on)))

        tasks.append(asyncio.create_task(accept()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stdin_closed(), args.lifetime)
    finally:
        for task in tasks:
            task.cancel()
        await peer.close()


if __name__ == "__main__":
    asyncio.run(main())
