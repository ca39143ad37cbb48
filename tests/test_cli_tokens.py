"""`pulsebeam token …` and `pulsebeam key generate`, run as the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pulsebeam import TokenVerifier
from pulsebeam.auth import parse_public_key, public_key_for_secret

PULSEBEAM = shutil.which("pulsebeam", path=str(Path(sys.executable).parent)) or "pulsebeam"


def run(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PULSEBEAM_")}
    full_env.update(env or {})
    return subprocess.run(
        [PULSEBEAM, *args], capture_output=True, text=True, env=full_env, input=stdin, timeout=60
    )


@pytest.fixture(scope="module")
def keypair() -> dict[str, str]:
    result = run("key", "generate", "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_key_generate_gives_official_formats(keypair: dict[str, str]) -> None:
    assert set(keypair) == {"api_key", "api_secret", "public_key"}
    assert keypair["api_key"].startswith("kid_")
    assert len(keypair["api_key"]) == 20
    assert keypair["api_secret"].startswith("sk_")
    assert len(keypair["api_secret"]) == 67
    assert public_key_for_secret(keypair["api_secret"]) == keypair["public_key"]
    human = run("key", "generate")
    assert "api_secret: sk_" in human.stdout
    assert "shown only now" in human.stdout


def test_token_create_from_flags_and_env_verifies(keypair: dict[str, str]) -> None:
    created = run(
        "token", "create",
        "--api-key", keypair["api_key"], "--api-secret", keypair["api_secret"],
        "--group-id", "room1", "--peer-id", "bob", "--duration", "120",
        "--allow-policy", "room1:a*",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    lookup = {keypair["api_key"]: parse_public_key(keypair["public_key"])}.get
    claims = TokenVerifier(lookup).verify(created.stdout.strip())
    assert (claims.group_id, claims.peer_id, str(claims.policy)) == ("room1", "bob", "room1:a*")

    env = {"PULSEBEAM_API_KEY": keypair["api_key"], "PULSEBEAM_API_SECRET": keypair["api_secret"]}
    from_env = run("token", "create", "--group-id", "g", "--peer-id", "p", env=env)
    assert from_env.returncode == 0, from_env.stderr
    assert str(TokenVerifier(lookup).verify(from_env.stdout.strip()).policy) == "*:*"


def test_token_inspect_shows_header_claims_and_expiry(keypair: dict[str, str]) -> None:
    token = run(
        "token", "create", "--api-key", keypair["api_key"], "--api-secret",
        keypair["api_secret"], "--group-id", "g", "--peer-id", "p",
    ).stdout.strip()  # fmt: skip
    shown = run("token", "inspect", token)
    assert shown.returncode == 0
    assert f'"kid": "{keypair["api_key"]}"' in shown.stdout
    assert '"pid": "p"' in shown.stdout
    assert "expires in 59 min" in shown.stdout or "expires in 60 min" in shown.stdout
    as_json = json.loads(run("token", "inspect", "--json", "-", stdin=token).stdout)
    assert as_json["claims"]["gid"] == "g"
    assert as_json["header"] == {"alg": "EdDSA", "kid": keypair["api_key"]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["token", "create", "--group-id", "g", "--peer-id", "p"], "Missing option '--api-key'"),
        (
            ["token", "create", "--api-key", "kid_x", "--api-secret", "sk_y", "--group-id", "g",
             "--peer-id", "p"],
            "API key 'kid_x' is invalid",
        ),
        (["token", "create", "--api-key", "K", "--api-secret", "S", "--group-id", "g",
          "--peer-id", "p", "--duration", "0"], "'--duration'"),
        (["token", "inspect", "not-a-token"], "not a compact JWS"),
        (["token", "frobnicate"], "No such command 'frobnicate'"),
        (["key", "generate", "--bogus"], "No such option: --bogus"),
    ],
)  # fmt: skip
def test_bad_arguments_give_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pulsebeam: error: ")
    assert message in lines[0]


def test_bad_policy_and_ids_are_refused(keypair: dict[str, str]) -> None:
    base = ["token", "create", "--api-key", keypair["api_key"], "--api-secret",
            keypair["api_secret"]]  # fmt: skip
    bad_policy = run(*base, "--group-id", "g", "--peer-id", "p", "--allow-policy", "a**:b")
    assert bad_policy.returncode == 2
    assert "at most one '*'" in bad_policy.stderr
    bad_id = run(*base, "--group-id", "has space", "--peer-id", "p")
    assert bad_id.returncode == 2
    assert "group_id 'has space' is invalid" in bad_id.stderr
    assert keypair["api_secret"] not in bad_id.stderr
