"""``examples/python_chat.py``: two peer processes, N messages each way, one line, exit code."""

from __future__ import annotations

import asyncio
import re
import sys

import pytest

from tests.fixtures.server import ProjectKeys, RunningServer
from tests.peer.remote import ROOT

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "examples" / "python_chat.py"


async def chat(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(90):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_chat_between_two_processes(server: RunningServer, keys: ProjectKeys) -> None:
    code, out, err = await chat(
        "--base-url", server.grpc, "--api-key", keys.api_key, "--api-secret", keys.api_secret,
        "--messages", "300", "--force-relay",
    )  # fmt: skip
    assert code == 0, err
    assert re.fullmatch(
        r"ok: 300 messages each way between two processes, in order; data channel open after"
        r" \d+ ms \(caller\), \d+ ms \(callee\); path relay; [\d.]+ s in all\n",
        out,
    ), out


async def test_chat_failure_gives_the_reason(server: RunningServer, keys: ProjectKeys) -> None:
    code, out, err = await chat(
        "--base-url", server.grpc, "--api-key", "kid_0123456789abcdef",
        "--api-secret", keys.api_secret, "--messages", "5", "--host-address", "127.0.0.1",
    )  # fmt: skip
    assert code == 1
    assert out == ""
    assert "py-caller: TokenError: Prepare: token key kid_0123456789abcdef is unknown" in err
