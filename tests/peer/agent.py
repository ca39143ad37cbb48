"""A remote peer for the end-to-end tests, run in its own process: ``python -m tests.peer.agent``.

It mints its own tokens with the server SDK, echoes every data-channel message back on the same
channel, optionally sends a video track (aiortc's test source) on each session, and reports
what happens as JSON lines on stdout. It exits when stdin closes or says ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aioice.ice
from aiortc.mediastreams import VideoStreamTrack

from pulsebeam.auth import AccessToken, PeerClaims, PeerPolicy
from pulsebeam.peer import DataChannel, Peer, Session, create_peer, restrict_host_addresses


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    parser.add_argument("--group", default="g1")
    parser.add_argument("--peer", required=True)
    parser.add_argument("--policy", default="*:*")
    parser.add_argument("--ttl", type=int, default=3600)
    parser.add_argument("--refresh", action="store_true", help="refresh tokens before expiry")
    parser.add_argument("--force-relay", action="store_true")
    parser.add_argument("--send-video", action="store_true")
    parser.add_argument(
        "--consent-interval",
        type=float,
        help="aioice's ICE consent check interval (5 s; 6 misses fail the path): tests shorten it",
    )
    return parser.parse_args(argv)


async def echo(channel: DataChannel) -> None:
    async for message in channel:
        channel.send(message)


async def serve_session(session: Session, send_video: bool) -> None:
    emit("session", other=session.other.peer_id)
    if send_video:
        session.add_track(VideoStreamTrack())
    echoes: set[asyncio.Task[None]] = set()

    async def report_tracks() -> None:
        async for track in session.tracks():
            emit("track", kind=track.kind)

    async def report_states() -> None:
        async for state in session.connection_states():
            emit("state", state=state, generation=session.generation)

    echoes.add(asyncio.create_task(report_tracks()))
    echoes.add(asyncio.create_task(report_states()))
    async for channel in session.data_channels():
        emit("channel", label=channel.label)
        task = asyncio.create_task(echo(channel))
        echoes.add(task)
        task.add_done_callback(echoes.discard)
    emit("session_closed", other=session.other.peer_id, reason=await session.wait_closed())


async def run(args: argparse.Namespace) -> None:
    if args.consent_interval is not None:
        aioice.ice.CONSENT_INTERVAL = args.consent_interval
    if not args.force_relay:
        restrict_host_addresses(["127.0.0.1"])
    claims = PeerClaims(args.group, args.peer)
    claims.set_allow_policy(PeerPolicy.parse(args.policy))
    minter = AccessToken(args.api_key, args.api_secret)

    async def fresh_token() -> str:
        emit("token_refreshed")
        return minter.create_token(claims, args.ttl)

    peer: Peer = await create_peer(
        minter.create_token(claims, args.ttl),
        args.base_url,
        force_relay=args.force_relay,
        token_provider=fresh_token if args.refresh else None,
    )
    peer.start()
    await peer.wait_ready()
    emit("ready", conn_id=peer.info.conn_id)
    sessions: set[asyncio.Task[None]] = set()

    async def accept() -> None:
        async for session in peer.sessions():
            task = asyncio.create_task(serve_session(session, args.send_video))
            sessions.add(task)
            task.add_done_callback(sessions.discard)

    async def until_quit() -> None:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line or line.strip() == b"quit":
                return

    accepting = asyncio.create_task(accept())
    quitting = asyncio.create_task(until_quit())
    closed = asyncio.create_task(peer.wait_closed())
    await asyncio.wait({accepting, quitting, closed}, return_when=asyncio.FIRST_COMPLETED)
    error = peer.error
    emit("peer_closed", error=type(error).__name__ if error else None, message=str(error or ""))
    await peer.close()
    for task in (accepting, quitting, closed, *sessions):
        task.cancel()


def main() -> None:
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
