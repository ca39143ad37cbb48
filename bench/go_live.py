"""Time for a new peer to go live (its Recv stream open), with a round trip to the server.

Run: .venv/bin/python bench/go_live.py [--runs 20] [--rtt-ms 0 10 40]

The SDK talks to ``pulsebeam serve`` through a proxy on 127.0.0.1 that delays every chunk by
half the round trip in each direction (a server across a network, as seen from the peer).
Rows, interleaved run by run, median of ``--runs``:

- ``create_peer``, then ``start()``: the official SDK's order: Prepare's answer, then Recv;
- ``create_peer(start=True)``: Recv sent while Prepare is under way.

Each run ends when ``wait_ready()`` returns: the server has accepted the stream (and sent the
peer's ``Join`` to its group).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pulsebeam.peer import create_peer
from tests.fixtures.proxy import tcp_proxy
from tests.fixtures.server import ProjectKeys, create_project, start_server

ROWS = {False: "create_peer, then start()", True: "create_peer(start=True)"}


async def live_once(keys: ProjectKeys, url: str, start: bool, n: int) -> float:
    token = keys.token("bench", f"p{n}")  # minted by the application's back end beforehand
    started = time.perf_counter()
    peer = await create_peer(token, url, start=start)
    try:
        await peer.wait_ready()  # (starts it, when create_peer did not)
        return time.perf_counter() - started
    finally:
        await peer.close()


async def measure(
    keys: ProjectKeys, target: tuple[str, int], rtts_ms: list[float], runs: int
) -> list[tuple[float, bool, list[float]]]:
    results = []
    for rtt in rtts_ms:
        async with tcp_proxy(target, one_way_delay=rtt / 2000) as proxy:
            url = f"http://127.0.0.1:{proxy.port}/grpc"
            samples: dict[bool, list[float]] = {False: [], True: []}
            for n in range(runs):
                for start in (False, True):
                    samples[start].append(await live_once(keys, url, start, n))
        results += [(rtt, start, samples[start]) for start in (False, True)]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0, 10.0, 40.0])
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if any(rtt < 0 or rtt > 1000 for rtt in args.rtt_ms):
        parser.error("--rtt-ms values must be between 0 and 1000")
    with (
        tempfile.TemporaryDirectory(prefix="pulsebeam-bench-") as tmp,
        start_server(Path(tmp)) as server,
    ):
        keys = create_project(server)
        results = asyncio.run(measure(keys, server.address, args.rtt_ms, args.runs))
    lines = ["| RTT to the server | how | runs | median ms | p90 ms |", "|---:|---|---:|---:|---:|"]
    for rtt, start, samples in results:
        p90 = statistics.quantiles(samples, n=10)[-1] if len(samples) > 1 else samples[0]
        lines.append(
            f"| {rtt:g} ms | {ROWS[start]} | {len(samples)} | "
            f"{statistics.median(samples) * 1000:.1f} | {p90 * 1000:.1f} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
