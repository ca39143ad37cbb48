"""The admin CLI contract: ``pulsebeam account|project|key|ban …`` on the data dir or database,
``--json`` output, one-line errors, exit code 2 for bad arguments."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pulsebeam.auth import public_key_for_secret
from pulsebeam.cli import main

from .helpers import PASSWORD

PULSEBEAM = str(Path(sys.executable).with_name("pulsebeam"))


class Cli:
    """Runs ``pulsebeam.cli.main`` in-process on one data dir (or database URL)."""

    def __init__(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, where: list[str]
    ) -> None:
        self.capsys, self.monkeypatch, self.where = capsys, monkeypatch, where

    def run(self, *args: str, stdin: str = "") -> tuple[int, str, str]:
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        self.capsys.readouterr()
        try:
            main([*args, *self.where])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str, stdin: str = "") -> Any:
        code, out, err = self.run(*args, "--json", stdin=stdin)
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    monkeypatch.delenv("PULSEBEAM_DATABASE_URL", raising=False)
    return Cli(capsys, monkeypatch, ["--data-dir", str(tmp_path / "data")])


def _bootstrap(cli: Cli) -> str:
    cli.json(
        "account",
        "create",
        "--email",
        "alice@example.com",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    return str(
        cli.json("project", "create", "--name", "Demo", "--owner", "alice@example.com")["id"]
    )


def test_bootstrap_keys_and_bans(cli: Cli) -> None:
    pid = _bootstrap(cli)
    assert [p["id"] for p in cli.json("project", "list")] == [pid]
    cli.json("account", "create", "--email", "bob@example.com", "--password-stdin", stdin=PASSWORD)
    member = cli.json("project", "add-member", "--project", pid, "--email", "bob@example.com")
    assert (member["email"], member["role"]) == ("bob@example.com", "member")

    key = cli.json("key", "create", "--project", pid, "--label", "web")
    assert set(key) >= {"api_key", "api_secret", "public_key"}
    assert public_key_for_secret(key["api_secret"]) == key["public_key"]
    listed = cli.json("key", "list", "--project", pid)
    assert [k["api_key"] for k in listed] == [key["api_key"]]
    assert "api_secret" not in listed[0]
    assert listed[0]["needs_rotation"] is False
    assert cli.json("key", "delete", key["api_key"]) == {
        "deleted": key["api_key"],
        "project_id": pid,
    }
    assert cli.json("key", "list", "--project", pid) == []

    ban = cli.json(
        "ban", "add", "--project", pid, "--peer", "bot*", "--reason", "spam", "--duration", "60"
    )
    assert (ban["group_pattern"], ban["peer_pattern"], ban["reason"]) == ("*", "bot*", "spam")
    assert ban["expires_at"] is not None
    assert [b["id"] for b in cli.json("ban", "list")] == [ban["id"]]
    assert [b["id"] for b in cli.json("ban", "list", "--project", pid)] == [ban["id"]]
    assert cli.json("ban", "remove", ban["id"])["removed"] == ban["id"]
    assert cli.json("ban", "list") == []


def test_human_output(cli: Cli) -> None:
    pid = _bootstrap(cli)
    code, out, _ = cli.run("key", "create", "--project", pid)
    assert code == 0
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert lines["api_key"].startswith("kid_")
    assert lines["api_secret"].startswith("sk_")
    assert "shown only now" in out


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ["account", "create", "--email", "x@example.com", "--password-stdin"],
            "short\n",
            "password too weak",
        ),
        (
            ["account", "create", "--email", "not-an-email", "--password-stdin"],
            PASSWORD,
            "not an email",
        ),
        (["account", "create", "--email", "x@example.com", "--password-stdin"], "", "no password"),
        (["account", "create", "--email", "x@example.com"], "", "use --password-stdin"),
        (["account", "create"], "", "Missing option '--email'"),
        (["key", "delete", "bad"], "", "API key 'bad' is invalid"),
        (["ban", "add", "--project", "prj_0000000000000000", "--peer", "a*b*"], "", "peer pattern"),
        (["ban", "add", "--project", "p", "--peer", "x", "--duration", "0"], "", "--duration"),
        (
            [
                "project",
                "add-member",
                "--project",
                "p",
                "--email",
                "a@example.com",
                "--role",
                "king",
            ],
            "",
            "--role",
        ),
        (["key", "create", "--frobnicate"], "", "No such option"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    cli: Cli, args: list[str], stdin: str, message: str
) -> None:
    code, out, err = cli.run(*args, stdin=stdin)
    assert code == 2
    assert err.startswith("pulsebeam: error: ")
    assert message in err
    assert err.count("\n") == 1
    assert out == ""


def test_failures_change_nothing(cli: Cli) -> None:
    pid = _bootstrap(cli)
    cases = [
        (
            ["account", "create", "--email", "ALICE@example.com", "--password-stdin"],
            "already exists",
        ),
        (["project", "create", "--name", "X", "--owner", "nobody@example.com"], "no account"),
        (
            ["project", "add-member", "--project", pid, "--email", "nobody@example.com"],
            "no account",
        ),
        (["key", "create", "--project", "prj_0000000000000000"], "not found"),
        (["key", "list", "--project", "prj_0000000000000000"], "not found"),
        (["key", "delete", "kid_0000000000000000"], "not found"),
        (["ban", "remove", "ban_0000000000000000"], "not found"),
    ]
    for args, message in cases:
        code, _, err = cli.run(*args, stdin=PASSWORD)
        assert code == 1, args
        assert err.startswith("pulsebeam: error: "), err
        assert message in err, err
    assert [a["email"] for a in cli.json("account", "list")] == ["alice@example.com"]
    assert [p["id"] for p in cli.json("project", "list")] == [pid]
    assert cli.json("key", "list", "--project", pid) == []


def test_console_script_end_to_end(tmp_path: Path) -> None:
    """The installed ``pulsebeam`` command, configured by the environment."""
    env = {"PULSEBEAM_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PULSEBEAM, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
        )

    assert (
        run(
            "account", "create", "--email", "a@example.com", "--password-stdin", stdin=PASSWORD
        ).returncode
        == 0
    )
    project = json.loads(
        run("project", "create", "--name", "P", "--owner", "a@example.com", "--json").stdout
    )
    key = json.loads(run("key", "create", "--project", project["id"], "--json").stdout)
    assert key["api_key"].startswith("kid_")
    assert (tmp_path / "data" / "pulsebeam.db").is_file()
    with sqlite3.connect(tmp_path / "data" / "pulsebeam.db") as db:
        (stored,) = db.execute("SELECT password_hash FROM accounts").fetchone()
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")  # the default cost
    bad = run("ban", "add", "--project", project["id"])
    assert bad.returncode == 2
    assert bad.stderr.startswith("pulsebeam: error: ")


@pytest.mark.postgres
def test_cli_on_postgres(cli: Cli, postgres_url: str) -> None:
    cli.where = ["--database-url", postgres_url]
    pid = _bootstrap(cli)
    key = cli.json("key", "create", "--project", pid)
    assert [k["api_key"] for k in cli.json("key", "list", "--project", pid)] == [key["api_key"]]
