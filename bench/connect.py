"""Time from ``create_peer`` to an open data channel, beside two aiortc peers wired directly.

Run: .venv/bin/python bench/connect.py [--runs 20]

It starts ``pulsebeam serve`` with its TURN on 127.0.0.1 (``--turn-allow-loopback``) and
measures, for host candidates (restricted to 127.0.0.1) and relay-only:

- PulseBeam SDK: the caller's ``create_peer(start=True)`` (``Prepare``, and ``Recv`` sent
  meanwhile), ``connect`` to a callee that is already listening, ``create_data_channel``, until
  the channel is open; signaling goes through the server, the callee's session starts on the
  caller's ``Join``.
- lower bound: two ``RTCPeerConnection`` in this process with the same ICE configuration (the
  same TURN credentials), offer and answer handed over as Python objects, no signaling at all.

Both run in this one process on the same event loop; rows are interleaved run by run, and each
row is the median of ``--runs`` runs. ``--pin`` runs the server on the last CPU and this process
on the others (Linux), as a server on another machine would be: unpinned, the kernel often wakes
the server on this process's CPU when a request reaches it, and its work then delays the SDK.
Each run has a new callee, whose random ``conn_id`` decides which side is polite; the SDK's runs
are also shown split by the first exchange that this gave.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiortc import RTCConfiguration, RTCPeerConnection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pulsebeam.peer import Peer, create_peer, restrict_host_addresses
from tests.fixtures.server import (
    ProjectKeys,
    create_project,
    start_server,
)

TIMEOUT = 30.0
# Time for a new callee to gather its spare connection, as a callee that has been up a while has.
CALLEE_SETTLE = 0.05
# The protocol's two first exchanges, by whether the caller (the newer connection) is the
# impolite side, which makes the first offer.
EXCHANGES = {
    False: "callee offers: offer, answer",
    True: "callee polite: its Join back, offer, answer",
}


async def sdk_once(
    keys: ProjectKeys, grpc: str, callee: Peer, relay: bool, n: int
) -> tuple[float, bool]:
    """Seconds from the caller's create_peer to its open data channel, and whether the caller
    was the impolite side (then the callee sends a Join back before the caller's offer)."""
    token = keys.token("bench", f"caller{n}")  # the application's back end mints it before
    started = time.perf_counter()
    caller = await create_peer(token, grpc, force_relay=relay, start=True)
    try:
        session = await caller.connect("bench", callee.peer_id)
        channel = session.create_data_channel("bench")
        await channel.wait_open()
        return time.perf_counter() - started, session.impolite
    finally:
        await caller.close()


async def direct_once(configuration: RTCConfiguration) -> float:
    """Seconds from creating the first RTCPeerConnection to its open data channel."""
    started = time.perf_counter()
    a = RTCPeerConnection(configuration)
    b = RTCPeerConnection(configuration)
    try:
        opened = asyncio.Event()
        channel = a.createDataChannel("bench")
        channel.on("open", opened.set)
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        await opened.wait()
        return time.perf_counter() - started
    finally:
        await a.close()
        await b.close()


async def measure(
    keys: ProjectKeys, grpc: str, runs: int, modes: list[bool]
) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    for relay in modes:
        mode = "relay-only" if relay else "host (127.0.0.1)"
        sdk_label = f"PulseBeam SDK, {mode}"
        direct_label = f"lower bound: aiortc direct, {mode}"
        for n in range(runs):
            # A new callee each run: its random conn_id decides which side is polite, and so
            # which of the protocol's two first exchanges the run takes.
            callee = await create_peer(keys.token("bench", f"callee{n}"), grpc, force_relay=relay)
            await callee.wait_ready()
            accept = asyncio.create_task(_accept_forever(callee))
            await asyncio.sleep(CALLEE_SETTLE)
            try:
                async with asyncio.timeout(TIMEOUT):
                    sdk, caller_offered = await sdk_once(keys, grpc, callee, relay, n)
                    direct = await direct_once(callee.configuration)
            finally:
                accept.cancel()
                await callee.close()
            results.setdefault(sdk_label, []).append(sdk)
            exchange = EXCHANGES[caller_offered]
            results.setdefault(f"{sdk_label.split(',')[0]} ({exchange}), {mode}", []).append(sdk)
            results.setdefault(direct_label, []).append(direct)
    return results


async def _accept_forever(callee: Peer) -> None:
    # The callee's sessions run on their own; each closes when its caller says Bye.
    async for _session in callee.sessions():
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--mode", choices=["host", "relay", "both"], default="both")
    parser.add_argument("--pin", action="store_true", help="server on its own CPU (Linux)")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.pin and len(cpus) < 2:
        parser.error("--pin needs at least two CPUs")
    restrict_host_addresses(["127.0.0.1"])
    with (
        tempfile.TemporaryDirectory(prefix="pulsebeam-bench-") as tmp,
        start_server(
            Path(tmp), "--turn-enabled", "--turn", "127.0.0.1:0", "--turn-allow-loopback"
        ) as server,
    ):
        keys = create_project(server)
        if args.pin:
            _pin(server.process.pid, {cpus[-1]}, set(cpus[:-1]))
        modes = {"host": [False], "relay": [True], "both": [False, True]}[args.mode]
        results = asyncio.run(measure(keys, server.grpc, args.runs, modes))
    lines = [
        "| what | runs | median ms | p90 ms | vs lower bound |",
        "|---|---:|---:|---:|---:|",
    ]
    bounds = {k.split(", ")[-1]: statistics.median(v) for k, v in results.items() if "lower" in k}
    for label, samples in sorted(results.items(), key=lambda item: _row_order(item[0])):
        median = statistics.median(samples)
        p90 = statistics.quantiles(samples, n=10)[-1] if len(samples) > 1 else samples[0]
        ratio = median / bounds[label.split(", ")[-1]]
        lines.append(
            f"| {label} | {len(samples)} | {median * 1000:.1f} | {p90 * 1000:.1f} | {ratio:.0%} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")


def _pin(server_pid: int, server_cpus: set[int], own_cpus: set[int]) -> None:
    for thread in Path(f"/proc/{server_pid}/task").iterdir():
        os.sched_setaffinity(int(thread.name), server_cpus)
    os.sched_setaffinity(0, own_cpus)


def _row_order(label: str) -> tuple[str, int, str]:
    # By mode; in each: all SDK runs, the SDK runs of each exchange, then the lower bound.
    what, _, mode = label.rpartition(", ")
    rank = 2 if what.startswith("lower") else (1 if "(" in what else 0)
    return mode, rank, what


if __name__ == "__main__":
    main()
