"""TURN benchmark: relayed packets per second and allocations per second, ours vs coturn.

Both servers run on 127.0.0.1 in their own process, one core's worth each (ours is one asyncio
thread on uvloop; coturn gets ``--relay-threads=1``), and face the same client in this process:

- relay: A allocations on UDP, each with a channel to one echo peer; W packets in flight per
  allocation; every packet crosses the server twice (client -> peer as ChannelData, and back as
  ChannelData), so relayed packets = 2 x round trips.
- floor: the same client against a bare uvloop UDP echo (no TURN at all), whose CPU per packet
  is what any asyncio relay pays before doing any work.
- allocations: sequential Allocate (401 challenge, then authenticated) + Refresh(0) on a fresh
  UDP socket each time: complete allocation lifecycles per second.

The client is plain non-blocking Python sockets on the second core; it can be the bottleneck
for the faster server. So the bench also reads each server's CPU time (``/proc``, all threads)
during the relay phase: *packets per server CPU-second* is the per-core efficiency, the fairer
figure when one side is not saturated.

    .venv/bin/python bench/turn.py [--seconds 5] [--allocations 8] [--window 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pulsebeam.turn.attributes import (
    decode_xor_address,
    encode_channel_number,
    encode_u32,
    encode_xor_address,
)
from pulsebeam.turn.channeldata import encode_channel_data, is_channel_data
from pulsebeam.turn.credentials import mint_credential
from pulsebeam.turn.stun import Attr, Message, MessageClass, Method, long_term_key, parse_message

SECRET = b"bench-turn-secret"
REALM = "pulsebeam"
KID = "kid_0123456789abcdef"


@dataclass
class Session:
    sock: socket.socket
    key: bytes
    nonce: bytes
    username: str
    relayed: tuple[str, int]


def _request(sock: socket.socket, msg: Message, session: Session | None = None) -> Message:
    if session is not None:
        msg.add(Attr.USERNAME, session.username.encode())
        msg.add(Attr.REALM, REALM.encode())
        msg.add(Attr.NONCE, session.nonce)
        data = msg.encode(session.key)
    else:
        data = msg.encode()
    for _ in range(5):  # retransmit on loss, bounded
        sock.send(data)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            try:
                data = sock.recv(2048)
            except TimeoutError:
                break
            if is_channel_data(data):
                continue  # relayed data still in flight
            answer = parse_message(data)
            if answer.transaction_id == msg.transaction_id:
                return answer
    raise TimeoutError("no answer from the TURN server")


_CLIENT_PORTS = itertools.cycle(range(20000, 30000))


def _client_socket() -> socket.socket:
    """A UDP socket on the next port of a cycle, so that no 5-tuple is reused soon (Linux hands
    a just-freed ephemeral port out again, and coturn remembers released 5-tuples a while)."""
    for _ in range(100):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", next(_CLIENT_PORTS)))
        except OSError:
            sock.close()
            continue
        sock.settimeout(0.5)
        return sock
    raise RuntimeError("no free client port")


def allocate(server: tuple[str, int]) -> Session:
    cred = mint_credential(SECRET, KID, "bench", int(time.time()) + 3600)
    sock = _client_socket()
    sock.connect(server)
    first = Message(Method.ALLOCATE, MessageClass.REQUEST, os.urandom(12))
    first.add(Attr.REQUESTED_TRANSPORT, b"\x11\0\0\0")
    challenge = _request(sock, first)
    nonce = challenge.get(Attr.NONCE)
    if nonce is None:
        sock.close()
        raise LookupError(f"no 401 challenge: {challenge.get(Attr.ERROR_CODE)!r}")
    key = long_term_key(cred.username, REALM, cred.password)
    session = Session(sock, key, nonce, cred.username, ("", 0))
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST, os.urandom(12))
    msg.add(Attr.REQUESTED_TRANSPORT, b"\x11\0\0\0")
    answer = _request(sock, msg, session)
    relayed = answer.get(Attr.XOR_RELAYED_ADDRESS)
    if answer.message_class != MessageClass.SUCCESS or relayed is None:
        raise RuntimeError(f"Allocate failed: {answer.get(Attr.ERROR_CODE)!r}")
    session.relayed = decode_xor_address(relayed, answer.transaction_id)
    return session


def release(session: Session) -> None:
    msg = Message(Method.REFRESH, MessageClass.REQUEST, os.urandom(12))
    msg.add(Attr.LIFETIME, encode_u32(0))
    _request(session.sock, msg, session)
    session.sock.close()


def channel_bind(session: Session, channel: int, peer: tuple[str, int]) -> None:
    tid = os.urandom(12)
    msg = Message(Method.CHANNEL_BIND, MessageClass.REQUEST, tid)
    msg.add(Attr.CHANNEL_NUMBER, encode_channel_number(channel))
    msg.add(Attr.XOR_PEER_ADDRESS, encode_xor_address(peer, tid))
    answer = _request(session.sock, msg, session)
    if answer.message_class != MessageClass.SUCCESS:
        raise RuntimeError(f"ChannelBind failed: {answer.get(Attr.ERROR_CODE)!r}")


@dataclass
class RelayResult:
    per_second: float  # relayed packets per wall-clock second
    server_cores: float  # server CPU seconds per wall-clock second
    client_cores: float  # the same for this client

    @property
    def per_cpu_second(self) -> float:
        return self.per_second / self.server_cores if self.server_cores else 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def relay_rate(
    server: tuple[str, int], pid: int, seconds: float, allocations: int, window: int
) -> RelayResult:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    sessions = [allocate(server) for _ in range(allocations)]
    frame = encode_channel_data(0x4000, b"x" * 100)
    selector = selectors.DefaultSelector()
    selector.register(peer, selectors.EVENT_READ, None)
    for session in sessions:
        channel_bind(session, 0x4000, peer.getsockname())
        session.sock.setblocking(False)
        selector.register(session.sock, selectors.EVENT_READ, session)
    for session in sessions:
        for _ in range(window):
            session.sock.send(frame)
    round_trips = 0
    server_cpu, client_cpu = _cpu_seconds(pid), time.process_time()
    start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        for key, _ in selector.select(timeout=0.2):
            sock = cast(socket.socket, key.fileobj)
            for _ in range(64):  # drain what is there
                try:
                    if key.data is None:
                        data, addr = sock.recvfrom(2048)
                        peer.sendto(data, addr)  # the peer echoes to the relayed address
                    else:
                        sock.recv(2048)
                        round_trips += 1
                        sock.send(frame)
                except BlockingIOError:
                    break
    elapsed = now - start
    server_cpu, client_cpu = _cpu_seconds(pid) - server_cpu, time.process_time() - client_cpu
    selector.close()
    for session in sessions:
        session.sock.setblocking(True)
        session.sock.settimeout(0.5)
        release(session)
    peer.close()
    return RelayResult(2 * round_trips / elapsed, server_cpu / elapsed, client_cpu / elapsed)


def echo_rate(
    server: tuple[str, int], pid: int, seconds: float, sockets: int, window: int
) -> RelayResult:
    """The same load against a bare echo: each round trip is one crossing of the server."""
    socks = []
    selector = selectors.DefaultSelector()
    for _ in range(sockets):
        sock = _client_socket()
        sock.connect(server)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        socks.append(sock)
    payload = b"x" * 104  # the size of a 100-byte ChannelData message
    for sock in socks:
        for _ in range(window):
            sock.send(payload)
    crossings = 0
    server_cpu, client_cpu = _cpu_seconds(pid), time.process_time()
    start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        for key, _ in selector.select(timeout=0.2):
            sock = cast(socket.socket, key.fileobj)
            for _ in range(64):
                try:
                    sock.recv(2048)
                except BlockingIOError:
                    break
                crossings += 1
                sock.send(payload)
    elapsed = now - start
    server_cpu, client_cpu = _cpu_seconds(pid) - server_cpu, time.process_time() - client_cpu
    selector.close()
    for sock in socks:
        sock.close()
    return RelayResult(crossings / elapsed, server_cpu / elapsed, client_cpu / elapsed)


def allocation_rate(server: tuple[str, int], seconds: float) -> float:
    done = refused = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            session = allocate(server)
        except LookupError:
            # A 5-tuple the server still remembers (437): counted as not done.
            refused += 1
            continue
        release(session)
        done += 1
    if refused:
        print(f"  ({refused} allocate attempts refused with 437)", file=sys.stderr)
    return done / (time.monotonic() - start)


def _free_port() -> int:
    # UDP and TCP both free (both servers listen on both).
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def _wait_ready(server: tuple[str, int]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.3)
            sock.connect(server)
            try:
                _request(sock, Message(Method.BINDING, MessageClass.REQUEST, os.urandom(12)))
                return
            except (TimeoutError, ConnectionRefusedError):
                time.sleep(0.2)
    raise RuntimeError(f"server on {server} did not answer a Binding")


def serve_ours(port: int) -> None:
    """Child process: our server with uvloop on 127.0.0.1:port until stdin closes."""
    import uvloop

    from pulsebeam.config import HostPort, PortRange, TurnConfig
    from pulsebeam.turn.server import TurnServer

    async def main() -> None:
        config = TurnConfig(
            listen=HostPort("127.0.0.1", port),
            relay_ports=PortRange(40000, 49999),
            allow_loopback=True,
            user_quota=100,
            challenge_rate=0.0,  # every allocation starts with a challenge: do not throttle them
        )
        async with TurnServer(config, SECRET, key_is_live=lambda kid: True):
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.read)

    uvloop.run(main())


def serve_echo(port: int) -> None:
    """Child process: a bare uvloop UDP echo, the floor of any asyncio relay's per-packet cost."""
    import uvloop

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.DatagramTransport, transport)

        def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
            self.transport.sendto(data, addr)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", port))
        await loop.run_in_executor(None, sys.stdin.read)
        transport.close()

    uvloop.run(main())


def start_child(mode: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, mode, str(port)], stdin=subprocess.PIPE)


def start_coturn(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    turnserver = shutil.which("turnserver")
    if turnserver is None:
        raise SystemExit("coturn's turnserver is not installed (apt-get install coturn)")
    return subprocess.Popen(
        [
            turnserver, "-n",
            "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
            "--use-auth-secret", f"--static-auth-secret={SECRET.decode()}", f"--realm={REALM}",
            "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls",
            "--relay-threads=1", "--min-port=50000", "--max-port=59999",
            f"--log-file={workdir / 'coturn.log'}", "--no-stdout-log",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


ECHO = "uvloop UDP echo, no TURN (floor)"


def _measure(name: str, workdir: Path, args: argparse.Namespace) -> tuple[RelayResult, float]:
    port = _free_port()
    if name == "pulsebeam":
        process = start_child("--serve-ours", port)
    elif name == ECHO:
        process = start_child("--serve-echo", port)
    else:
        process = start_coturn(port, workdir)
    try:
        server = ("127.0.0.1", port)
        if name == ECHO:
            time.sleep(1.0)  # the echo answers anything, a Binding included, once bound
            return echo_rate(server, process.pid, args.seconds, args.allocations, args.window), 0.0
        _wait_ready(server)
        relay = relay_rate(server, process.pid, args.seconds, args.allocations, args.window)
        return relay, allocation_rate(server, args.seconds)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--allocations", type=int, default=8)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve-ours", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-echo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_ours:
        serve_ours(args.serve_ours)
        return
    if args.serve_echo:
        serve_echo(args.serve_echo)
        return
    # Rounds alternate the two servers and the median is kept: the machine may be shared.
    samples: dict[str, list[tuple[RelayResult, float]]] = {"pulsebeam": [], "coturn": [], ECHO: []}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.rounds):
            for name in samples:
                samples[name].append(_measure(name, Path(workdir), args))
    command = " ".join(["bench/turn.py", *sys.argv[1:]])
    print(f"command: .venv/bin/python {command}")
    print(f"(median of {args.rounds} alternating rounds, {args.seconds:g} s per measurement)")
    print(
        "| server | relayed packets/s | server CPU (cores) | packets per server CPU-s"
        " | client CPU (cores) | allocations/s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    medians: dict[str, tuple[float, float, float]] = {}
    for name, rows in samples.items():
        relay = statistics.median(r.per_second for r, _ in rows)
        per_cpu = statistics.median(r.per_cpu_second for r, _ in rows)
        allocs = statistics.median(a for _, a in rows)
        server_cores = statistics.median(r.server_cores for r, _ in rows)
        client_cores = statistics.median(r.client_cores for r, _ in rows)
        medians[name] = (relay, per_cpu, allocs)
        print(
            f"| {name} | {relay:,.0f} | {server_cores:.2f} | {per_cpu:,.0f}"
            f" | {client_cores:.2f} | {f'{allocs:,.0f}' if allocs else '—'} |"
        )
    ours, theirs = medians["pulsebeam"], medians["coturn"]
    print(
        f"| ratio pulsebeam/coturn | {ours[0] / theirs[0]:.2f} | | {ours[1] / theirs[1]:.2f} |"
        f" | {ours[2] / theirs[2]:.2f} |"
    )
    print(f"| ratio pulsebeam/floor | | | {ours[1] / medians[ECHO][1]:.2f} | | |")


if __name__ == "__main__":
    main()
