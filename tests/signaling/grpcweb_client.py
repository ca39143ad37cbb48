"""A minimal gRPC-Web client for the tests, written apart from the server's framing code so that
the two check each other. Binary format only, over httpx."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field

import httpx
from google.protobuf.message import Message as ProtoMessage

from pulsebeam import proto

CONTENT_TYPE = "application/grpc-web+proto"
SERVICE = "pulsebeam.v1.Signaling"


def frame(payload: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + struct.pack(">I", len(payload)) + payload


def split_frames(body: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    frames = []
    while len(body) >= 5:
        length = struct.unpack(">I", body[1:5])[0]
        if len(body) < 5 + length:
            break
        frames.append((body[0], body[5 : 5 + length]))
        body = body[5 + length :]
    return frames, body


def parse_trailers(block: bytes) -> dict[str, str]:
    out = {}
    for line in block.decode("ascii").split("\r\n"):
        if line:
            name, _, value = line.partition(":")
            out[name.strip().lower()] = value.strip()
    if "grpc-message" in out:
        out["grpc-message"] = urllib.parse.unquote(out["grpc-message"])
    return out


@dataclass
class Reply:
    http_status: int
    headers: httpx.Headers
    status: int | None  # grpc-status (None if the body had no trailers)
    message: str
    data: list[bytes] = field(default_factory=list)  # data frame payloads

    def parsed(self, cls: type[ProtoMessage]) -> ProtoMessage:
        assert len(self.data) == 1, self.data
        message = cls()
        message.ParseFromString(self.data[0])
        return message


class Client:
    """Calls ``pulsebeam.v1.Signaling`` at ``base`` (ending in ``/grpc``) with one token."""

    def __init__(self, http: httpx.AsyncClient, base: str, token: str | None) -> None:
        self.http = http
        self.base = base
        self.token = token

    def headers(self, extra: dict[str, str] | None = None) -> httpx.Headers:
        """The call's headers, encoded as latin-1 so a test can send any byte in a value."""
        headers = {"content-type": CONTENT_TYPE, "x-grpc-web": "1"}
        if self.token is not None:
            headers["authorization"] = f"Bearer {self.token}".strip()
        headers.update(extra or {})
        return httpx.Headers(headers, encoding="latin-1")

    async def call(
        self,
        method: str,
        request: ProtoMessage | None = None,
        *,
        body: bytes | AsyncIterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One call; ``body`` replaces the framed ``request`` (an async iterable is streamed)."""
        if body is None:
            assert request is not None
            body = frame(request.SerializeToString())
        response = await self.http.post(
            f"{self.base}/{SERVICE}/{method}", content=body, headers=self.headers(headers)
        )
        frames, rest = split_frames(response.content)
        assert not rest, f"truncated response body: {response.content!r}"
        reply = Reply(response.status_code, response.headers, None, "")
        for flag, payload in frames:
            if flag & 0x80:
                trailers = parse_trailers(payload)
                reply.status = int(trailers["grpc-status"])
                reply.message = trailers.get("grpc-message", "")
            else:
                reply.data.append(payload)
        return reply

    async def send(self, msg: proto.Message) -> Reply:
        return await self.call("Send", proto.SendReq(msg=msg))

    @contextlib.asynccontextmanager
    async def recv(
        self, group: str, peer: str, conn: int, *, headers: dict[str, str] | None = None
    ) -> AsyncIterator[RecvStream]:
        request = proto.RecvReq(src=proto.PeerInfo(group_id=group, peer_id=peer, conn_id=conn))
        async with self.http.stream(
            "POST",
            f"{self.base}/{SERVICE}/Recv",
            content=frame(request.SerializeToString()),
            headers=self.headers({"grpc-timeout": "900000m", **(headers or {})}),
        ) as response:
            stream = RecvStream(response)
            try:
                yield stream
            finally:
                await stream.close()


class StreamEnded(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"stream ended: {status} {message}")
        self.status = status
        self.message = message


class RecvStream:
    """Frames of an open ``Recv`` response, read by a background task (so a timed-out wait does
    not break the underlying byte stream)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._frames: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())
        self.trailers: dict[str, str] | None = None

    async def _read(self) -> None:
        buffer = b""
        try:
            async for chunk in self.response.aiter_raw():
                frames, buffer = split_frames(buffer + chunk)
                for item in frames:
                    self._frames.put_nowait(item)
        except httpx.HTTPError:
            pass
        finally:
            self._frames.put_nowait(None)

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _next_frame(self) -> tuple[int, bytes]:
        item = await self._frames.get()
        if item is None:
            self._frames.put_nowait(None)
            raise EOFError("Recv response ended without trailers")
        return item

    async def next(self, within: float = 5.0, *, pings: bool = False) -> proto.RecvResp:
        """The next message (pings skipped unless asked); raises StreamEnded at the trailers."""
        async with asyncio.timeout(within):
            while True:
                flag, payload = await self._next_frame()
                if flag & 0x80:
                    self.trailers = parse_trailers(payload)
                    raise StreamEnded(
                        int(self.trailers["grpc-status"]), self.trailers.get("grpc-message", "")
                    )
                resp = proto.RecvResp()
                resp.ParseFromString(payload)
                if pings or resp.msg.payload.WhichOneof("payload_type") != "ping":
                    return resp

    async def end(self, within: float = 5.0) -> StreamEnded:
        """Read until the trailers; returns them (fails if a non-ping message comes first)."""
        try:
            message = await self.next(within)
        except StreamEnded as ended:
            return ended
        raise AssertionError(f"expected the end of the stream, got {message}")


def peer(group: str, peer_id: str, conn: int = 0) -> proto.PeerInfo:
    return proto.PeerInfo(group_id=group, peer_id=peer_id, conn_id=conn)


def message(
    src: proto.PeerInfo, dst: proto.PeerInfo, kind: str = "join", **fields: object
) -> proto.Message:
    payload = proto.MessagePayload()
    if kind == "signal":
        payload.signal.CopyFrom(proto.Signal(**fields))  # type: ignore[arg-type]
    else:
        getattr(payload, kind).SetInParent()
    return proto.Message(header=proto.MessageHeader(src=src, dst=dst), payload=payload)
