"""Two Python peers chat through PulseBeam: each in its own process, N messages each way.

    python examples/python_chat.py --base-url http://127.0.0.1:8080/grpc \\
        --api-key kid_… --api-secret sk_… --messages 100 [--force-relay]

The parent mints nothing itself: each child mints its own short-lived token with the server
SDK (strict policy: only the other peer of its own group), creates a peer, and the caller
connects to the callee. Both send N numbered messages over one data channel and check that the
other's N arrive, in order. The parent prints one line and exits 0, or prints the reason and
exits 1. ``--host-address 127.0.0.1`` restricts host candidates (for a single machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import subprocess
import sys
import time
from typing import Any

from pulsebeam import AccessToken, PeerClaims, PeerPolicy
from pulsebeam.peer import DataChannel, Session, create_peer, restrict_host_addresses

CALLER, CALLEE = "py-caller", "py-callee"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="signaling URL, ending in /grpc")
    parser.add_argument("--api-key", required=True, help="kid_… of a project key")
    parser.add_argument("--api-secret", required=True, help="sk_… of that key")
    parser.add_argument("--messages", type=int, default=100, help="messages each way")
    parser.add_argument("--force-relay", action="store_true", help="relay through TURN only")
    parser.add_argument(
        "--host-address", action="append", default=[], help="offer only this host address"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for everything")
    parser.add_argument("--role", choices=[CALLER, CALLEE], help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.messages < 1:
        parser.error("--messages must be at least 1")
    return args


# ----------------------------------------------------------------------------- one peer


async def exchange(channel: DataChannel, count: int, me: str) -> None:
    """Send ``count`` numbered messages and check the other side's ``count`` arrive in order."""
    for i in range(count):
        channel.send(f"{me}:{i}")
    for expected in range(count):
        message = await channel.receive()
        other, _, number = str(message).partition(":")
        if other == me or number != str(expected):
            raise RuntimeError(f"message {expected} from the other peer arrived as {message!r}")


async def run_peer(args: argparse.Namespace) -> dict[str, Any]:
    me = args.role
    other = CALLEE if me == CALLER else CALLER
    claims = PeerClaims(args.group, me)
    claims.set_allow_policy(PeerPolicy(args.group, other))
    token = AccessToken(args.api_key, args.api_secret).create_token(claims, 600)
    started = time.perf_counter()
    peer = await create_peer(token, args.base_url, force_relay=args.force_relay, start=True)
    try:
        session: Session
        if me == CALLER:
            session = await peer.connect(args.group, other)
            channel = session.create_data_channel("chat")
        else:
            session = await peer.sessions().get()
            channel = await session.data_channels().get()
        await channel.wait_open()
        open_ms = (time.perf_counter() - started) * 1000
        await exchange(channel, args.messages, me)
        path = session.path
        # Closing drops what is still in flight, so the callee closes only once the caller said
        # it has every message, and the caller waits for that close (the callee's Bye).
        if me == CALLER:
            channel.send("done")
            await session.wait_closed()
        elif await channel.receive() != "done":
            raise RuntimeError("the caller did not confirm the messages")
        return {"ok": True, "open_ms": open_ms, "path": path}
    finally:
        await peer.close()


def child(args: argparse.Namespace) -> int:
    if args.host_address:
        restrict_host_addresses(args.host_address)
    try:
        result = asyncio.run(asyncio.wait_for(run_peer(args), args.timeout))
    except Exception as exc:  # report any failure to the parent as its reason
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["ok"] else 1


# ----------------------------------------------------------------------------- the parent


def spawn(args: argparse.Namespace, role: str, group: str) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "--role", role, "--group", group]
    for name in ("base_url", "api_key", "api_secret", "messages", "timeout"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    command += ["--force-relay"] if args.force_relay else []
    for address in args.host_address:
        command += ["--host-address", address]
    # Our own script with our own arguments: nothing here comes from an untrusted source.
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: S603


def outcome(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return {"ok": False, "error": f"no answer within {timeout:g} s"}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "error": f"exited with {process.returncode} and no result"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role is not None:
        return child(args)
    group = "chat-" + secrets.token_hex(4)
    started = time.perf_counter()
    callee = spawn(args, CALLEE, group)
    caller = spawn(args, CALLER, group)
    results = {
        role: outcome(p, args.timeout + 10) for role, p in ((CALLER, caller), (CALLEE, callee))
    }
    elapsed = time.perf_counter() - started
    failed = {role: r["error"] for role, r in results.items() if not r["ok"]}
    if failed:
        reasons = "; ".join(f"{role}: {error}" for role, error in failed.items())
        sys.stderr.write(f"python_chat failed: {reasons}\n")
        return 1
    sys.stdout.write(
        f"ok: {args.messages} messages each way between two processes, in order;"
        f" data channel open after {results[CALLER]['open_ms']:.0f} ms (caller),"
        f" {results[CALLEE]['open_ms']:.0f} ms (callee); path {results[CALLER]['path']};"
        f" {elapsed:.1f} s in all\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
