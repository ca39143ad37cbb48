"""Runs the SDK's JavaScript unit tests (protobuf codec, gRPC-Web framing, token reading) with
node's own test runner, so that the pytest suite (the CI runner) covers them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JS_TESTS = Path(__file__).with_name("js") / "codec.test.mjs"


def test_node_unit_tests_pass() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    result = subprocess.run(
        [node, "--test", str(JS_TESTS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
    assert "# pass 11" in result.stdout
