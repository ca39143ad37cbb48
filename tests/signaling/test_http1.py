"""The HTTP/1.1 fast path (:mod:`pulsebeam.signaling.http1`) on a raw socket: what HTTP clients
other than browsers may do — pipelining, HTTP/1.0, chunked request bodies, oversized bodies,
closing mid-stream — is answered correctly and in order."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pulsebeam import proto
from tests.fixtures.server import RunningServer, acreate_project, start_server
from tests.signaling.conftest import ClientFactory
from tests.signaling.grpcweb_client import (
    CONTENT_TYPE,
    SERVICE,
    frame,
    message,
    parse_trailers,
    peer,
    split_frames,
)


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def grpc_status(self) -> int:
        frames, rest = split_frames(self.body)
        assert not rest
        trailers = [payload for flag, payload in frames if flag & 0x80]
        assert len(trailers) == 1, frames
        return int(parse_trailers(trailers[0])["grpc-status"])


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    async with asyncio.timeout(5):
        status_line = await reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            assert headers.get("transfer-encoding") == "chunked", headers
            parts = []
            while (size := int((await reader.readuntil(b"\r\n")).strip(), 16)) > 0:
                parts.append(await reader.readexactly(size))
                assert await reader.readexactly(2) == b"\r\n"
            assert await reader.readexactly(2) == b"\r\n"
            body = b"".join(parts)
    return RawResponse(status, headers, body)


@contextlib.asynccontextmanager
async def raw_connection(
    server: RunningServer,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    url = urllib.parse.urlsplit(server.url)
    assert url.hostname is not None
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def grpc_request(
    method: str, token: str, body: bytes, *, version: str = "1.1", extra: str = ""
) -> bytes:
    head = (
        f"POST /grpc/{SERVICE}/{method} HTTP/{version}\r\nhost: 127.0.0.1\r\n"
        f"content-type: {CONTENT_TYPE}\r\nauthorization: Bearer {token}\r\n{extra}"
    )
    if "transfer-encoding" not in extra:
        head += f"content-length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


@pytest.fixture
def alice_token(client: ClientFactory) -> str:
    token = client("g", "alice").token
    assert token is not None
    return token


def send_body(src: proto.PeerInfo, dst: proto.PeerInfo) -> bytes:
    return frame(proto.SendReq(msg=message(src, dst, "ping")).SerializeToString())


async def test_pipelined_requests_are_answered_in_order(
    server: RunningServer, alice_token: str
) -> None:
    me = peer("g", "alice", 1001)
    dropped = send_body(me, me)  # self-addressed: OK, dropped
    missing = send_body(me, peer("g", "nobody", 0))  # NOT_FOUND
    async with raw_connection(server) as (reader, writer):
        writer.write(
            grpc_request("Send", alice_token, dropped)
            + b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
            + grpc_request("Send", alice_token, missing)
            + grpc_request("Send", alice_token, dropped)
        )
        first = await read_response(reader)
        health = await read_response(reader)
        third = await read_response(reader)
        fourth = await read_response(reader)
    assert (first.status, first.grpc_status()) == (200, 0)
    assert health.status == 200
    assert b"ok" in health.body.lower()
    assert (third.status, third.grpc_status()) == (200, 5)  # NOT_FOUND
    assert (fourth.status, fourth.grpc_status()) == (200, 0)


async def test_http10_and_chunked_request_bodies_are_served(
    server: RunningServer, alice_token: str
) -> None:
    me = peer("g", "alice", 1002)
    body = send_body(me, me)
    chunked = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    async with raw_connection(server) as (reader, writer):
        writer.write(
            grpc_request("Send", alice_token, chunked, extra="transfer-encoding: chunked\r\n")
        )
        reply = await read_response(reader)
        assert (reply.status, reply.grpc_status()) == (200, 0)
        assert reply.headers["content-type"] == CONTENT_TYPE
    async with raw_connection(server) as (reader, writer):
        writer.write(grpc_request("Send", alice_token, body, version="1.0"))
        reply = await read_response(reader)
        assert (reply.status, reply.grpc_status()) == (200, 0)


async def test_an_oversized_body_is_refused_at_once_and_the_connection_closed(
    server: RunningServer, alice_token: str
) -> None:
    async with raw_connection(server) as (reader, writer):
        head = grpc_request("Send", alice_token, b"", extra="content-length: 100000000\r\n")
        # The request claims 100 MB; the server answers after the first 64 KiB, not the rest.
        writer.write(head.replace(b"content-length: 0\r\n", b"") + b"\0" * 65536)
        await asyncio.sleep(0.2)
        writer.write(b"\0" * 262144)  # still sending: must not reset the answer away
        reply = await read_response(reader)
        assert reply.status == 200
        assert reply.grpc_status() == 8  # RESOURCE_EXHAUSTED
        assert reply.headers.get("connection") == "close"
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the server


async def test_a_recv_stream_is_chunked_and_ends_when_the_client_leaves(
    server: RunningServer, client: ClientFactory
) -> None:
    bob = client("g", "bob")
    alice = client("g", "alice")
    assert bob.token is not None
    recv = frame(proto.RecvReq(src=peer("g", "bob", 2001)).SerializeToString())
    async with raw_connection(server) as (reader, writer):
        writer.write(grpc_request("Recv", bob.token, recv))
        async with asyncio.timeout(5):
            status_line = await reader.readuntil(b"\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
        assert status_line.startswith(b"HTTP/1.1 200")
        assert b"transfer-encoding: chunked" in head.lower()
        reply = await alice.send(message(peer("g", "alice", 2002), peer("g", "bob", 2001), "ack"))
        assert reply.status == 0, reply.message
        async with asyncio.timeout(5):
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size)
        frames, _ = split_frames(chunk)
        assert proto.RecvResp.FromString(frames[0][1]).msg.payload.HasField("ack")
    # The client left: the stream is gone, so bob is no longer reachable.
    async with asyncio.timeout(5):
        while True:
            reply = await alice.send(
                message(peer("g", "alice", 2002), peer("g", "bob", 2001), "ack")
            )
            if reply.status == 5:
                break
            await asyncio.sleep(0.05)


async def test_keep_alive_closes_idle_connections_only(tmp_path: Path) -> None:
    with start_server(tmp_path, "--keep-alive", "1") as server:
        keys = await acreate_project(server)
        token = keys.token("g", "alice", "*:*", 3600)
        me = peer("g", "alice", 3001)
        async with raw_connection(server) as (reader, writer):
            for _ in range(6):  # busy for 1.8 s, never idle for 1 s: stays open
                writer.write(grpc_request("Send", token, send_body(me, me)))
                reply = await read_response(reader)
                assert reply.grpc_status() == 0
                await asyncio.sleep(0.3)
            async with asyncio.timeout(5):
                assert await reader.read() == b""  # then idle: closed after about 1 s
        # A Recv that arrives in the same read as an answered call is busy, not idle.
        recv = frame(proto.RecvReq(src=peer("g", "alice", 3002)).SerializeToString())
        async with raw_connection(server) as (reader, writer):
            writer.write(
                grpc_request("Send", token, send_body(me, me)) + grpc_request("Recv", token, recv)
            )
            assert (await read_response(reader)).grpc_status() == 0
            async with asyncio.timeout(5):
                await reader.readuntil(b"\r\n\r\n")  # the stream's head
            with pytest.raises(TimeoutError):  # open past twice the keep-alive: no EOF
                await asyncio.wait_for(reader.read(), 2.5)


async def test_expect_100_continue_is_answered_before_the_body(
    server: RunningServer, alice_token: str
) -> None:
    me = peer("g", "alice", 1003)
    body = send_body(me, me)
    request = grpc_request("Send", alice_token, body, extra="expect: 100-continue\r\n")
    async with raw_connection(server) as (reader, writer):
        writer.write(request[: -len(body)])  # the head alone: the client waits for 100
        async with asyncio.timeout(5):
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        reply = await read_response(reader)
        assert (reply.status, reply.grpc_status()) == (200, 0)


async def test_a_call_that_must_fetch_its_key_answers_before_what_is_pipelined_behind(
    server: RunningServer,
) -> None:
    # A brand-new key: the Send waits for the store (it cannot finish inline), and the request
    # pipelined behind it must wait for its answer.
    keys = await acreate_project(server)
    token = keys.token("g", "dora", "*:*", 3600)
    me = peer("g", "dora", 1004)
    async with raw_connection(server) as (reader, writer):
        writer.write(
            grpc_request("Send", token, send_body(me, peer("g", "nobody", 0)))
            + b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
        )
        first = await read_response(reader)
        second = await read_response(reader)
    assert (first.status, first.grpc_status()) == (200, 5)  # NOT_FOUND: the key was found
    assert second.status == 200


async def test_a_client_that_reads_no_answers_is_read_no_further(server: RunningServer) -> None:
    # Unauthenticated requests, each answered at once (UNIMPLEMENTED), never read: the server
    # must stop reading rather than pile the answers up in memory.
    many = b"POST /grpc/x/y HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n" * 500
    url = urllib.parse.urlsplit(server.url)
    _reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    handed_over = [0]

    async def flood() -> None:
        while True:
            writer.write(many)
            await writer.drain()
            handed_over[0] += len(many)

    task = asyncio.create_task(flood())
    try:
        await asyncio.sleep(3)  # time to fill every buffer on the way
        before = handed_over[0]
        await asyncio.sleep(1.5)
        after = handed_over[0]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        writer.transport.abort()  # its send buffer is full: a graceful close would wait forever
    assert after == before, f"the server read on: {after - before} bytes in 1.5 s, answers unread"
    async with raw_connection(server) as (reader, writer):  # and it serves others meanwhile
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await read_response(reader)).status == 200


async def test_nothing_pipelined_after_a_refused_body_runs(
    server: RunningServer, client: ClientFactory, alice_token: str
) -> None:
    bob = client("g", "bob")
    me = peer("g", "alice", 1005)
    oversized = frame(b"\0" * 20_000)
    to_bob = frame(proto.SendReq(msg=message(me, peer("g", "bob", 0), "ack")).SerializeToString())
    async with bob.recv("g", "bob", 2005) as bob_stream:
        async with raw_connection(server) as (reader, writer):
            writer.write(
                grpc_request("Send", alice_token, oversized)
                + grpc_request("Send", alice_token, to_bob)
            )
            reply = await read_response(reader)
            assert reply.grpc_status() == 8  # RESOURCE_EXHAUSTED
            async with asyncio.timeout(5):
                assert await reader.read() == b""  # no second answer: closed
        with pytest.raises(TimeoutError):
            await bob_stream.next(0.5)  # and the second Send was never delivered


async def test_deep_pipelining_closes_the_connection(server: RunningServer) -> None:
    async with raw_connection(server) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n" * 200)
        answers = 0
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await read_response(reader)
                answers += 1
    assert answers < 200  # cut off (maybe before any answer): such a client is abusive
    async with raw_connection(server) as (reader, writer):  # the server serves others
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await read_response(reader)).status == 200
