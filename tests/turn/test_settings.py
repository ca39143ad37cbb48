"""The [turn] settings: parsing, and the errors a TurnServer gives for unusable ones."""

from __future__ import annotations

import ssl

import pytest

from pulsebeam.config import HostPort, load_config
from pulsebeam.errors import ConfigError
from pulsebeam.turn.server import TurnServer
from tests.turn.conftest import SECRET, base_config


def test_turn_settings_from_the_environment() -> None:
    config = load_config(
        env={
            "PULSEBEAM_TURN_DENY_PEERS": "203.0.113.0/24, 198.51.100.7/32",
            "PULSEBEAM_TURN_USER_QUOTA": "3",
            "PULSEBEAM_TURN_BANDWIDTH": "125000",
            "PULSEBEAM_TURN_REALM": "example.org",
            "PULSEBEAM_TURN_MAX_SESSION": "7200",
            "PULSEBEAM_TURN_CHALLENGE_RATE": "12.5",
        }
    )
    assert config.turn.deny_peers == ("203.0.113.0/24", "198.51.100.7/32")
    assert config.turn.user_quota == 3
    assert config.turn.bandwidth == 125_000
    assert config.turn.realm == "example.org"
    assert config.turn.max_session_secs == 7200
    assert config.turn.challenge_rate == 12.5
    assert load_config(env={}).turn.max_session_secs == 86400
    assert load_config(env={}).turn.challenge_rate == 50.0


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("PULSEBEAM_TURN_USER_QUOTA", "0", "--turn-user-quota from .*: 0 is below the minimum 1"),
        ("PULSEBEAM_TURN_BANDWIDTH", "-1", "--turn-bandwidth from .*: -1 is below the minimum 0"),
        ("PULSEBEAM_TURN_MAX_LIFETIME", "60", "--turn-max-lifetime from .*: 60 is below"),
        ("PULSEBEAM_TURN_MAX_SESSION", "-1", "--turn-max-session from .*: -1 is below the min"),
        ("PULSEBEAM_TURN_MAX_SESSION", "1d", "--turn-max-session from .*: .*'1d'"),
        ("PULSEBEAM_TURN_CHALLENGE_RATE", "fast", "--turn-challenge-rate from .*: .*'fast'"),
        ("PULSEBEAM_TURN_EXTERNAL", "coturn", "--turn-external from .*: 'coturn' is not HOST:PORT"),
    ],
)
def test_bad_turn_settings(name: str, value: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_config(env={name: value})


def _never(kid: str) -> bool:
    return False


@pytest.mark.parametrize(
    ("overrides", "secret", "context", "error"),
    [
        ({}, b"", None, "--turn-secret: the TURN secret must not be empty"),
        (
            {"listen": HostPort("0.0.0.0", 3478)},
            SECRET,
            None,
            "--turn-relay-ip: relays need one concrete IPv4 address, not '0.0.0.0'",
        ),
        ({"relay_ip": "::1"}, SECRET, None, "relays need one concrete IPv4 address, not '::1'"),
        ({"relay_ip": "relay.local"}, SECRET, None, "'relay.local' is not an IPv4 address"),
        ({"tls_listen": HostPort("127.0.0.1", 0)}, SECRET, None, "--turns needs a TLS certificate"),
        ({"deny_peers": ("10.0.0.0/99",)}, SECRET, None, "'10.0.0.0/99' is not an IP network"),
        ({"auth_failure_rate": 0.0}, SECRET, None, "--turn-401-rate: must be a positive number"),
        ({"challenge_rate": -1.0}, SECRET, None, "--turn-challenge-rate: must be 0 .* or positive"),
        ({"challenge_rate": float("nan")}, SECRET, None, "--turn-challenge-rate: must be 0"),
    ],
)
def test_unusable_settings_are_refused_before_binding(
    overrides: dict[str, object], secret: bytes, context: ssl.SSLContext | None, error: str
) -> None:
    with pytest.raises(ConfigError, match=error):
        TurnServer(base_config(**overrides), secret, key_is_live=_never, tls_context=context)
