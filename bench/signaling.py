"""Signaling benchmark: PulseBeam's server side by side with the PeerJS server (npm ``peer``).

Two workloads, the same for both servers, in one run:

1. **Relay:** N pairs of peers; each sender sends M messages (~250 bytes, like a batch of ICE
   candidates) to its receiver through the server, one at a time: the next leaves when the
   previous one arrived (closed loop). Reports delivered messages per second (all pairs) and the
   p50/p99 one-way delivery latency (sender's clock to receiver's, same process).
2. **Idle streams:** opens K receive connections that then stay idle (PulseBeam: ``Recv`` streams
   over HTTP/1.1; PeerJS: WebSockets) and reports the growth of the server's resident memory per
   connection.

The clients are lean on both sides and of the same shape: an asyncio protocol per connection
(raw HTTP/1.1 for gRPC-Web, the ``websockets`` library for PeerJS), a coroutine per sender and
per receiver, all in this one process. Their CPU per message is reported too, since on a small
machine the client shares the cores with the server. Usage::

    .venv/bin/python bench/signaling.py [--pairs 50] [--messages 200] [--idle 5000]

PeerJS is installed with npm into ``bench/.peerjs`` on first use and started on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pulsebeam import proto  # noqa: E402
from tests.fixtures.server import ProjectKeys, create_project, start_server  # noqa: E402

PEERJS_DIR = ROOT / "bench" / ".peerjs"
PEERJS_BIN = PEERJS_DIR / "node_modules" / "peer" / "dist" / "bin" / "peerjs.js"
PAD = "candidate:1 1 udp 2122260223 127.0.0.1 54321 typ host generation 0 ufrag abcd " * 2
BATCH = 200  # connections opened at once
_RUNS = itertools.count()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_secs(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(latencies_ns: list[int], count: int, elapsed: float) -> dict[str, float]:
    ordered = sorted(latencies_ns)
    return {
        "msgs_per_s": count / elapsed,
        "p50_ms": ordered[len(ordered) // 2] / 1e6,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] / 1e6,
    }


# -- a minimal HTTP/1.1 gRPC-Web client ---------------------------------------------------------


def frame(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


class Http1(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection as an asyncio protocol, the same shape as the
    ``websockets`` client on the PeerJS side: unary calls one at a time (answers carry a content
    length), or one ``Recv`` stream whose chunked gRPC-Web frames queue up for a reader."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None
        self.frames: asyncio.Queue[bytes] | None = None  # set once this carries a stream
        self.body_left = -1  # bytes of a unary body still to come; -1 while reading a head
        self.heads: dict[tuple[str, str], bytes] = {}

    @classmethod
    async def open(cls, host: str, port: int) -> Http1:
        _, protocol = await asyncio.get_running_loop().create_connection(cls, host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def post(self, path: str, token: str, body: bytes) -> asyncio.Future[bytes]:
        head = self.heads.get((path, token))
        if head is None:
            head = self.heads[(path, token)] = (
                f"POST {path} HTTP/1.1\r\nhost: bench\r\n"
                f"content-type: application/grpc-web+proto\r\nauthorization: Bearer {token}\r\n"
            ).encode()
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(b"%bcontent-length: %d\r\n\r\n%b" % (head, len(body), body))
        return self.waiter

    async def unary(self, path: str, token: str, body: bytes) -> bytes:
        return await self.post(path, token, body)

    async def stream(self, path: str, token: str, body: bytes) -> asyncio.Queue[bytes]:
        """Open a stream; returns the queue its frames' payloads arrive on."""
        self.frames = asyncio.Queue()
        await self.post(path, token, body)
        return self.frames

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            if self.body_left < 0:  # a response head
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buffer[:end]).lower()
                del buffer[: end + 4]
                if not head.startswith(b"http/1.1 200"):
                    self._resolve(RuntimeError(head.decode(errors="replace")))
                    return
                marker = head.find(b"content-length:")
                if marker < 0:  # the stream's head: chunks follow
                    self.body_left = 0
                    self._resolve(b"")
                    continue
                self.body_left = int(head[marker + 15 :].split(b"\r\n", 1)[0])
            if self.frames is None:  # a unary body
                if len(buffer) < self.body_left:
                    return
                body = bytes(buffer[: self.body_left])
                del buffer[: self.body_left]
                self.body_left = -1
                self._resolve(body)
                continue
            line = buffer.find(b"\r\n")
            if line < 0:
                return
            size = int(buffer[:line], 16)
            if len(buffer) < line + size + 4:
                return
            chunk = bytes(buffer[line + 2 : line + 2 + size])
            del buffer[: line + size + 4]
            while len(chunk) >= 5:  # our server writes one frame per chunk; be general anyway
                length = int.from_bytes(chunk[1:5], "big")
                self.frames.put_nowait(chunk[5 : 5 + length])
                chunk = chunk[5 + length :]

    def _resolve(self, result: bytes | Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            if isinstance(result, Exception):
                waiter.set_exception(result)
            else:
                waiter.set_result(result)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


SEND = "/grpc/pulsebeam.v1.Signaling/Send"
RECV = "/grpc/pulsebeam.v1.Signaling/Recv"


def recv_request(group: str, peer: str, conn: int) -> bytes:
    src = proto.PeerInfo(group_id=group, peer_id=peer, conn_id=conn)
    return frame(proto.RecvReq(src=src).SerializeToString())


async def pulsebeam_relay(
    host: str, port: int, keys: ProjectKeys, pairs: int, messages: int
) -> dict[str, float]:
    latencies: list[int] = []
    arrived = [asyncio.Event() for _ in range(pairs)]

    async def receive(i: int, frames: asyncio.Queue[bytes]) -> None:
        while True:
            resp = proto.RecvResp.FromString(await frames.get())
            if resp.msg.payload.HasField("signal"):
                sent = int(resp.msg.payload.signal.sdp.sdp.split(" ", 1)[0])
                latencies.append(time.perf_counter_ns() - sent)
                arrived[i].set()

    receivers = []
    for i in range(pairs):
        conn = await Http1.open(host, port)
        request = recv_request(f"pair{i}", "rx", 1000)
        frames = await conn.stream(RECV, keys.token(f"pair{i}", "rx"), request)
        receivers.append((conn, asyncio.create_task(receive(i, frames))))

    async def send(i: int) -> None:
        token = keys.token(f"pair{i}", "tx")
        conn = await Http1.open(host, port)
        msg = proto.Message(
            header=proto.MessageHeader(
                src=proto.PeerInfo(group_id=f"pair{i}", peer_id="tx", conn_id=2000),
                dst=proto.PeerInfo(group_id=f"pair{i}", peer_id="rx", conn_id=0),
                reliable=True,
            )
        )
        for n in range(messages):
            arrived[i].clear()
            msg.header.seqnum = n
            msg.payload.signal.sdp.sdp = f"{time.perf_counter_ns()} {PAD}"
            reply = await conn.unary(SEND, token, frame(proto.SendReq(msg=msg).SerializeToString()))
            if b"grpc-status:0\r\n" not in reply:
                raise RuntimeError(f"Send failed: {reply!r}")
            await asyncio.wait_for(arrived[i].wait(), 10)
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(send(i) for i in range(pairs)))
    elapsed = time.perf_counter() - started
    for conn, task in receivers:
        task.cancel()
        conn.close()
    return summary(latencies, pairs * messages, elapsed)


async def pulsebeam_idle(host: str, port: int, keys: ProjectKeys, count: int) -> list[Http1]:
    tokens = [keys.token(f"idle{i}", "p") for i in range(count)]
    conns: list[Http1] = []

    async def one(i: int) -> Http1:
        conn = await Http1.open(host, port)
        await conn.stream(RECV, tokens[i], recv_request(f"idle{i}", "p", 5000 + i))
        return conn

    for start in range(0, count, BATCH):
        conns += await asyncio.gather(*(one(i) for i in range(start, min(count, start + BATCH))))
    return conns


# -- PeerJS --------------------------------------------------------------------------------------


@contextlib.contextmanager
def peerjs_server(port: int, limit: int) -> Iterator[subprocess.Popen[bytes]]:
    if not PEERJS_BIN.exists():
        subprocess.run(
            ["npm", "install", "--prefix", str(PEERJS_DIR), "--no-audit", "--no-fund", "peer@1"],
            check=True,
        )
        (PEERJS_DIR / ".gitignore").write_text("*\n")
    process = subprocess.Popen(
        [
            "node",
            str(PEERJS_BIN),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--concurrent_limit",
            str(limit),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


async def peerjs_connect(port: int, peer_id: str) -> websockets.ClientConnection:
    url = f"ws://127.0.0.1:{port}/peerjs?key=peerjs&id={peer_id}&token=t{peer_id}"
    for _ in range(100):
        try:
            ws = await websockets.connect(url, max_size=2**20, ping_interval=None)
            break
        except OSError:
            await asyncio.sleep(0.1)
    else:
        raise RuntimeError("PeerJS did not start")
    opened = json.loads(await ws.recv())
    if opened.get("type") != "OPEN":
        raise RuntimeError(f"PeerJS refused {peer_id}: {opened}")
    return ws


async def peerjs_relay(port: int, pairs: int, messages: int) -> dict[str, float]:
    run = next(_RUNS)  # fresh ids: PeerJS frees a closed peer's id asynchronously
    latencies: list[int] = []
    arrived = [asyncio.Event() for _ in range(pairs)]

    async def receive(i: int, ws: websockets.ClientConnection) -> None:
        async for raw in ws:
            data = json.loads(raw)
            if data.get("type") == "CANDIDATE":
                latencies.append(time.perf_counter_ns() - data["payload"]["t"])
                arrived[i].set()

    receivers = []
    for i in range(pairs):
        ws = await peerjs_connect(port, f"rx{run}x{i}")
        receivers.append((ws, asyncio.create_task(receive(i, ws))))

    async def send(i: int) -> None:
        ws = await peerjs_connect(port, f"tx{run}x{i}")
        for n in range(messages):
            arrived[i].clear()
            payload = {"t": time.perf_counter_ns(), "n": n, "candidate": PAD}
            await ws.send(
                json.dumps({"type": "CANDIDATE", "dst": f"rx{run}x{i}", "payload": payload})
            )
            await asyncio.wait_for(arrived[i].wait(), 10)
        await ws.close()

    started = time.perf_counter()
    await asyncio.gather(*(send(i) for i in range(pairs)))
    elapsed = time.perf_counter() - started
    for ws, task in receivers:
        task.cancel()
        await ws.close()
    return summary(latencies, pairs * messages, elapsed)


async def peerjs_idle(port: int, count: int) -> list[websockets.ClientConnection]:
    conns: list[websockets.ClientConnection] = []
    for start in range(0, count, BATCH):
        batch = range(start, min(count, start + BATCH))
        conns += await asyncio.gather(*(peerjs_connect(port, f"idle{i}") for i in batch))
    return conns


# -- the run -------------------------------------------------------------------------------------


async def measure_idle(
    pid: int, open_all: Awaitable[Sequence[Any]], close: Callable[[Any], Awaitable[None]]
) -> float:
    """RSS growth per connection in KiB, after the connections settled."""
    before = rss_kib(pid)
    conns = await open_all
    await asyncio.sleep(2)
    after = rss_kib(pid)
    await close(conns)
    return (after - before) / len(conns)


async def close_h1(conns: list[Http1]) -> None:
    for c in conns:
        c.close()


async def close_ws(conns: list[websockets.ClientConnection]) -> None:
    await asyncio.gather(*(c.close() for c in conns))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def best_of(
    runs: int, relay: Callable[[int], Coroutine[Any, Any, dict[str, float]]], pid: int, count: int
) -> dict[str, float]:
    """A short warm-up, then ``runs`` measured runs: the run with the median throughput, and
    the server's CPU time per relayed message (median too), which the machine's load moves less
    than wall-clock figures."""
    asyncio.run(relay(20))
    results = []
    for _ in range(runs):
        before, client_before = cpu_secs(pid), cpu_secs(os.getpid())
        result = asyncio.run(relay(0))
        result["cpu_us_per_msg"] = (cpu_secs(pid) - before) / count * 1e6
        result["client_us_per_msg"] = (cpu_secs(os.getpid()) - client_before) / count * 1e6
        results.append(result)
    median = sorted(results, key=lambda r: r["msgs_per_s"])[len(results) // 2]
    for figure in ("cpu_us_per_msg", "client_us_per_msg"):
        median[figure] = sorted(r[figure] for r in results)[len(results) // 2]
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    limits = (
        "--send-rate", "1000000", "--send-burst", "1000000", "--max-project-streams", "1000000",
        "--log-level", "WARNING",
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, start_server(Path(tmp), *limits) as server:
        keys = create_project(server)
        host, port = server.address
        pid = server.process.pid

        def pb_relay(warmup: int) -> Coroutine[Any, Any, dict[str, float]]:
            count = warmup or args.messages
            return pulsebeam_relay(host, port, keys, args.pairs, count)

        results["PulseBeam"] = best_of(args.runs, pb_relay, pid, args.pairs * args.messages)
        results["PulseBeam"]["rss_mib_start"] = rss_kib(pid) / 1024
        results["PulseBeam"]["kib_per_idle"] = asyncio.run(
            measure_idle(pid, pulsebeam_idle(host, port, keys, args.idle), close_h1)
        )
    peer_port = free_port()
    with peerjs_server(peer_port, args.idle + 2 * args.pairs + 10) as peerjs:

        def pj_relay(warmup: int) -> Coroutine[Any, Any, dict[str, float]]:
            return peerjs_relay(peer_port, args.pairs, warmup or args.messages)

        results["PeerJS"] = best_of(args.runs, pj_relay, peerjs.pid, args.pairs * args.messages)
        results["PeerJS"]["rss_mib_start"] = rss_kib(peerjs.pid) / 1024
        results["PeerJS"]["kib_per_idle"] = asyncio.run(
            measure_idle(peerjs.pid, peerjs_idle(peer_port, args.idle), close_ws)
        )
    print(
        f"pairs={args.pairs} messages/pair={args.messages} idle={args.idle} runs={args.runs}\n"
        "| server | relayed msgs/s | p50 ms | p99 ms | server CPU µs/msg | client CPU µs/msg"
        " | RSS after relay (MiB) | KiB per idle stream |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    for name, r in results.items():
        print(
            f"| {name} | {r['msgs_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
            f" {r['cpu_us_per_msg']:.0f} | {r['client_us_per_msg']:.0f} |"
            f" {r['rss_mib_start']:.0f} | {r['kib_per_idle']:.1f} |"
        )


if __name__ == "__main__":
    main()
