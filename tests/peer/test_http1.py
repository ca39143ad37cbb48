"""The SDK's HTTP/1.1 client against a bare asyncio server that plays the awkward parts:
keep-alive reuse, a pooled connection closed by the server while idle, a server that hangs up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from pulsebeam.peer.http1 import Http1Client, HttpStream, TransportError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Coroutine[Any, Any, str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/grpc"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return head, await reader.readexactly(length)


def reply(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def test_keep_alive_reuse_and_a_connection_closed_while_idle(
    serve: Callable[[Handler], Coroutine[Any, Any, str]],
) -> None:
    connections = 0

    async def two_answers_then_hang_up(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal connections
        connections += 1
        for _ in range(2):
            head, body = await read_request(reader)
            assert head.startswith(b"POST /grpc/Echo HTTP/1.1\r\n")
            assert b"\r\nx-test: 1\r\n" in head
            writer.write(reply(body))
        await writer.drain()
        writer.close()  # idle connection closed by the server

    client = Http1Client(await serve(two_answers_then_hang_up))
    try:
        async with asyncio.timeout(10):
            answers = [await client.post("/Echo", {"x-test": "1"}, b"%d" % i) for i in range(5)]
    finally:
        await client.aclose()
    assert [a.body for a in answers] == [b"0", b"1", b"2", b"3", b"4"]
    assert {a.status for a in answers} == {200}
    assert connections == 3  # two requests per connection; each stale one retried on a new one


async def test_a_server_that_hangs_up_is_a_transport_error(
    serve: Callable[[Handler], Coroutine[Any, Any, str]],
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    client = Http1Client(await serve(hang_up))
    try:
        with pytest.raises(TransportError):
            async with asyncio.timeout(10):
                await client.post("/Echo", {}, b"x")
    finally:
        await client.aclose()
    with pytest.raises(ValueError, match="must be http:// or https://"):
        Http1Client("ws://127.0.0.1/grpc")
    for bad in ("http://127.0.0.1/gr\x7fpc", "http://127.0.0.1/grpc\u00e9", "http://127.0.0.1/a b"):
        with pytest.raises(ValueError, match="printable ASCII"):
            Http1Client(bad)


async def test_a_chunked_stream_arrives_chunk_by_chunk_after_an_informational_response(
    serve: Callable[[Handler], Coroutine[Any, Any, str]],
) -> None:
    release = asyncio.Event()

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Kind: stream\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"3\r\none\r\n")
        await writer.drain()
        await release.wait()  # the first chunk is read before the rest is sent
        writer.write(b"3\r\ntwo\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    client = Http1Client(await serve(stream))
    try:
        async with (
            asyncio.timeout(10),
            client.stream("/Recv", {}, b"", head_timeout=5) as response,
        ):
            assert (response.status, response.headers["x-kind"]) == (200, "stream")
            chunks = []
            async for chunk in response.chunks(idle_timeout=5):
                chunks.append(chunk)
                release.set()
    finally:
        await client.aclose()
    assert chunks == [b"one", b"two"]


async def test_a_stream_that_falls_silent_is_a_transport_error(
    serve: Callable[[Handler], Coroutine[Any, Any, str]],
) -> None:
    """Chunks every 0.1 s for 0.6 s keep a 0.3 s idle watch quiet; then silence trips it (a
    half-open connection: the server's pings stopped coming)."""
    finished = asyncio.Event()

    async def chatty_then_silent(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(6):
            writer.write(b"4\r\nping\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        await finished.wait()  # silent, the connection open
        writer.close()

    client = Http1Client(await serve(chatty_then_silent))
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    last = loop.time()

    async def read_all(response: HttpStream) -> None:
        nonlocal last
        async for chunk in response.chunks(idle_timeout=0.3):
            chunks.append(chunk)
            last = loop.time()

    try:
        async with (
            asyncio.timeout(10),
            client.stream("/Recv", {}, b"", head_timeout=5) as response,
        ):
            with pytest.raises(TransportError, match=r"no data for 0.3 s"):
                await read_all(response)
            silent_for = loop.time() - last
    finally:
        await client.aclose()
        finished.set()
        await asyncio.sleep(0.01)  # the handler closes its side
    assert chunks == [b"ping"] * 6
    assert 0.3 <= silent_for < 5  # tripped by the silence, not before it


@pytest.mark.parametrize(
    ("answer", "body", "error"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n\r\nSECOND", b"x", None),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", None, "malformed HTTP response"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab", None, "closed the connection"),
        (b"HTTP/1.1 200 OK\r\nx-big: " + b"y" * 70_000, None, "response head is over"),
        (
            b"HTTP/1.1 200 OK\r\nx-big: " + b"y" * 120_000 + b"\r\ncontent-length: 0\r\n\r\n",
            None,
            "response head is over",
        ),
        (b"HTTP/1.0 503 Busy\r\ncontent-type: text/plain\r\n\r\ntry later", b"try later", None),
    ],
    ids=[
        "a second response nobody asked for",
        "a garbled status line",
        "a short body",
        "an endless head",
        "a head of 120 KB that ends",
        "a body that ends with the connection",
    ],
)
async def test_a_misbehaving_server_never_leaves_a_usable_connection(
    serve: Callable[[Handler], Coroutine[Any, Any, str]],
    answer: bytes,
    body: bytes | None,
    error: str | None,
) -> None:
    connections = 0

    async def misbehave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()

    client = Http1Client(await serve(misbehave))
    try:
        async with asyncio.timeout(10):
            if error is None:
                assert (await client.post("/Echo", {}, b"x")).body == body
                assert (await client.post("/Echo", {}, b"x")).body == body
            else:
                with pytest.raises(TransportError, match=error):
                    await client.post("/Echo", {}, b"x")
    finally:
        await client.aclose()
    assert connections == (2 if error is None else 1)  # the tainted connection was not reused


async def test_header_values_that_would_inject_headers_are_refused_before_any_io(
    serve: Callable[[Handler], Coroutine[Any, Any, str]],
) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            _, body = await read_request(reader)
            writer.write(reply(body))
        await writer.drain()
        writer.close()

    client = Http1Client(await serve(echo))
    try:
        async with asyncio.timeout(10):
            assert (await client.post("/Echo", {}, b"1")).body == b"1"
            with pytest.raises(ValueError, match="non-printable"):
                await client.post("/Echo", {"authorization": "Bearer x\r\nx-evil: 1"}, b"")
            # The pooled connection was not touched: the next request goes on it.
            assert (await client.post("/Echo", {}, b"2")).body == b"2"
    finally:
        await client.aclose()
