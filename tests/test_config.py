"""Settings: defaults < TOML < environment < flags, and a clear ConfigError for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from pulsebeam.config import HostPort, PortRange, load_config, setting_flags
from pulsebeam.errors import ConfigError


def test_defaults_are_the_embedded_single_machine_setup() -> None:
    config = load_config(env={})
    assert config.http.listen == HostPort("127.0.0.1", 8080)
    assert config.store.database_url is None
    assert config.signaling.redis_url is None
    assert config.turn.listen == HostPort("127.0.0.1", 3478)
    assert config.turn.allow_loopback is False


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "pulsebeam.toml"
    toml.write_text('[http]\nlisten = "127.0.0.1:9000"\n[turn]\nrelay_ports = "50000-50100"\n')
    from_file = load_config(toml, env={})
    assert from_file.http.listen.port == 9000
    assert from_file.turn.relay_ports == PortRange(50000, 50100)
    env = {"PULSEBEAM_HTTP": "127.0.0.1:9001", "PULSEBEAM_TURN_ALLOW_LOOPBACK": "yes"}
    from_env = load_config(toml, env=env)
    assert from_env.http.listen.port == 9001
    assert from_env.turn.allow_loopback is True
    from_flags = load_config(toml, env=env, flags={"http": "[::1]:0", "data-dir": "~/pb"})
    assert from_flags.http.listen == HostPort("::1", 0)
    assert str(from_flags.http.listen) == "[::1]:0"
    assert from_flags.store.data_dir == Path("~/pb").expanduser()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PULSEBEAM_HTTP": "8080"}, r"--http from \$PULSEBEAM_HTTP: '8080' is not HOST:PORT"),
        ({"PULSEBEAM_HTTP": "h:70000"}, "is not HOST:PORT"),
        ({"PULSEBEAM_TURN_RELAY_PORTS": "9-5"}, "LOW <= HIGH"),
        ({"PULSEBEAM_TURN_ALLOW_LOOPBACK": "maybe"}, "'maybe' is not a boolean"),
        ({"PULSEBEAM_MAX_MESSAGE_BYTES": "ten"}, "--max-message-bytes"),
    ],
)
def test_bad_values_name_the_setting_and_its_source(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env=env)


def test_bad_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[http\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, env={})
    bad.write_text("[nope]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['nope'\]"):
        load_config(bad, env={})
    bad.write_text("[http]\nlisten_on = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['listen_on'\] in \[http\]"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml", env={})
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(env={}, flags={"no-such-flag": 1})


def test_every_setting_has_a_unique_flag_and_help() -> None:
    flags = setting_flags()
    assert "data-dir" in flags
    assert "turn-allow-loopback" in flags
    for flag, (_section, _name, field) in flags.items():
        assert field.metadata["help"], flag
