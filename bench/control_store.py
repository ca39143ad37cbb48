"""Control-store write and read paths: a batched usage flush beside one write per message (the
reference the batching exists to beat), and key lookups (the signaling cache-miss path).

Run: .venv/bin/python bench/control_store.py [--deltas N] [--database-url URL]

Without --database-url the store is SQLite in a temporary data dir.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable
from datetime import date
from pathlib import Path

from pulsebeam.config import StoreConfig
from pulsebeam.control.records import UsageDelta
from pulsebeam.control.store import Store
from pulsebeam.control.views import Actor

PROJECTS = 20


async def timed(work: Awaitable[None]) -> float:
    start = time.perf_counter()
    await work
    return time.perf_counter() - start


async def run(config: StoreConfig, count: int) -> list[tuple[str, float]]:
    store = await Store.open(config)
    try:
        actor = Actor.admin_cli()
        account = await store.create_account(
            f"bench{time.time_ns()}@example.com", "bench password 1", actor
        )
        pids = [
            (await store.create_project(f"p{n}", account.id, actor)).id for n in range(PROJECTS)
        ]
        kids = [(await store.create_key(pid, "", actor)).key.kid for pid in pids]
        day = date(2026, 1, 1)
        deltas = [
            UsageDelta(
                pids[n % PROJECTS], day, messages=1, peers=frozenset({("g", f"peer{n % 500}")})
            )
            for n in range(count)
        ]
        rows: dict[str, list[float]] = {"batched flush": [], "one write per message": []}
        for _ in range(3):
            rows["batched flush"].append(count / await timed(store.record_usage(deltas)))

            async def one_by_one() -> None:
                for delta in deltas:
                    await store.record_usage([delta])

            rows["one write per message"].append(count / await timed(one_by_one()))

        async def lookups() -> None:
            for n in range(count):
                await store.get_key(kids[n % len(kids)])

        rows["get_key (cache miss)"] = [count / await timed(lookups()) for _ in range(3)]
        return [(label, statistics.median(rates)) for label, rates in rows.items()]
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deltas", type=int, default=2000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = StoreConfig(data_dir=Path(tmp), database_url=args.database_url)
        results = asyncio.run(run(config, args.deltas))
    backend = "PostgreSQL" if args.database_url else "SQLite"
    reference = dict(results)["one write per message"]
    print(f"| what ({backend}, {args.deltas} usage deltas) | per second | vs per-message |")
    print("|---|---:|---:|")
    for label, value in results:
        ratio = f"{value / reference:.0%}" if label != "get_key (cache miss)" else "—"
        print(f"| {label} | {value:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
