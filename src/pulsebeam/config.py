"""One :class:`Config` of frozen per-subsystem sections, read from defaults, a TOML file, the
environment and CLI flags (later wins).

Every setting has one flag name, from which the other two spellings follow:

====================  =======================  ==============================
flag                  environment              TOML
====================  =======================  ==============================
``--data-dir``        ``PULSEBEAM_DATA_DIR``   ``[store] data_dir = "…"``
``--turn-relay-ports`` ``PULSEBEAM_TURN_RELAY_PORTS`` ``[turn] relay_ports = "…"``
====================  =======================  ==============================

A value that cannot be used raises :class:`~pulsebeam.errors.ConfigError` naming the setting and
where it came from, before anything starts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pulsebeam.errors import ConfigError

__all__ = [
    "AuthConfig",
    "Config",
    "HostPort",
    "HttpConfig",
    "PortRange",
    "SignalingConfig",
    "StoreConfig",
    "TurnConfig",
    "load_config",
    "setting_flags",
]

ENV_PREFIX = "PULSEBEAM_"


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r} is not HOST:PORT (port 0-65535; 0 picks a free port)")
        host = host.strip("[]")
        return cls(host, int(port_text))

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PortRange:
    low: int
    high: int

    @classmethod
    def parse(cls, text: str) -> PortRange:
        low, sep, high = text.partition("-")
        if not (sep and low.isdigit() and high.isdigit()):
            raise ValueError(f"{text!r} is not LOW-HIGH, e.g. 49152-65535")
        lo, hi = int(low), int(high)
        if not 1024 <= lo <= hi <= 65535:
            raise ValueError(f"{text!r}: need 1024 <= LOW <= HIGH <= 65535")
        return cls(lo, hi)

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise ValueError(f"{value} is below the minimum {low}")
        return value

    return parse


def setting(default: Any, flag: str, help: str, parse: Callable[[str], Any] | None = None) -> Any:
    """A config field with its flag name (``--flag``, ``PULSEBEAM_FLAG``) and help text."""
    meta = {"flag": flag, "help": help, "parse": parse}
    if isinstance(default, list | dict | set):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class HttpConfig:
    listen: HostPort = setting(
        HostPort("127.0.0.1", 8080),
        "http",
        "HTTP(S) address for signaling, API and console",
        HostPort.parse,
    )
    tls_cert: Path | None = setting(None, "tls-cert", "PEM certificate chain (enables HTTPS)")
    tls_key: Path | None = setting(None, "tls-key", "PEM private key for --tls-cert")
    public_host: str | None = setting(
        None, "public-host", "host name clients use to reach this server (ICE URLs, links)"
    )
    insecure_http: bool = setting(
        False, "insecure-http", "allow plain HTTP on a non-loopback address (not for production)"
    )
    shutdown_timeout_secs: float = setting(
        5.0, "shutdown-timeout", "seconds to wait for open requests on shutdown"
    )
    keep_alive_secs: float = setting(
        5.0,
        "keep-alive",
        "seconds an idle HTTP/1.1 keep-alive connection stays open (longer than a reverse"
        " proxy's idle timeout when behind one)",
    )


@dataclass(frozen=True, slots=True)
class StoreConfig:
    data_dir: Path = setting(Path(".pulsebeam"), "data-dir", "directory for the SQLite database")
    database_url: str | None = setting(
        None, "database-url", "SQLAlchemy URL, e.g. postgresql+asyncpg://user@host/db"
    )


@dataclass(frozen=True, slots=True)
class AuthConfig:
    token_leeway_secs: float = setting(5.0, "token-leeway", "clock skew allowed on token expiry")
    key_miss_cache_secs: float = setting(
        5.0, "key-miss-cache", "seconds an unknown key id is remembered as unknown"
    )
    key_resync_secs: float = setting(
        30.0, "key-resync", "period of the full reload of keys and bans (backs up events)"
    )


@dataclass(frozen=True, slots=True)
class SignalingConfig:
    redis_url: str | None = setting(
        None, "redis-url", "Redis URL for multi-node routing (default: in-process router)"
    )
    ping_interval_secs: float = setting(45.0, "ping-interval", "keepalive Ping period on streams")
    max_message_bytes: int = setting(10_240, "max-message-bytes", "largest signaling message")
    stream_max_age_secs: float = setting(
        840.0, "stream-max-age", "end Recv streams (OK) after this; the SDK's deadline is 15 min"
    )
    stream_queue: int = setting(
        256, "stream-queue", "messages buffered per stream; a stream that falls further behind ends"
    )
    send_rate: float = setting(50.0, "send-rate", "messages per second per peer (sustained)")
    send_burst: int = setting(200, "send-burst", "messages a peer may send in a burst")
    max_streams_per_project: int = setting(
        10_000, "max-project-streams", "open Recv streams per project, across all nodes"
    )
    max_streams_per_peer: int = setting(
        16, "max-streams-per-peer", "open Recv streams per peer (group/peer id), all nodes"
    )
    recv_rate: float = setting(2.0, "recv-rate", "Recv opens per second per peer (sustained)")
    recv_burst: int = setting(32, "recv-burst", "Recv opens a peer may make in a burst")
    analytics_rate: float = setting(
        1.0, "analytics-rate", "AnalyticsReport calls per second per peer (sustained)"
    )
    analytics_burst: int = setting(
        20, "analytics-burst", "AnalyticsReport calls a peer may make in a burst"
    )
    cors_origins: tuple[str, ...] = setting(
        ("*",), "cors-origins", "origins allowed to call signaling from a browser (comma list)"
    )
    ice_servers: tuple[str, ...] = setting(
        (), "ice-servers", "extra ICE server URLs that Prepare returns (comma list, no credentials)"
    )
    node_id: str | None = setting(None, "node-id", "this node's name in Redis (default: random)")
    presence_ttl_secs: float = setting(
        6.0, "presence-ttl", "seconds a node's presence in Redis outlives its last heartbeat"
    )
    records_flush_secs: float = setting(
        5.0, "records-flush", "period of batched usage and connection-log writes"
    )


@dataclass(frozen=True, slots=True)
class TurnConfig:
    enabled: bool = setting(True, "turn-enabled", "run the built-in STUN/TURN server")
    listen: HostPort = setting(
        HostPort("127.0.0.1", 3478), "turn", "STUN/TURN address (UDP and TCP)", HostPort.parse
    )
    tls_listen: HostPort | None = setting(
        None, "turns", "TURN over TLS address (uses --tls-cert/--tls-key)", HostPort.parse
    )
    relay_ports: PortRange = setting(
        PortRange(49152, 65535), "turn-relay-ports", "UDP port range for relays", PortRange.parse
    )
    allow_loopback: bool = setting(
        False, "turn-allow-loopback", "let TURN relay to loopback peers (tests and demos only)"
    )
    relay_ip: str | None = setting(
        None, "turn-relay-ip", "IPv4 address relay sockets bind to (default: the --turn host)"
    )
    realm: str = setting("pulsebeam", "turn-realm", "STUN/TURN realm of long-term credentials")
    secret: str | None = setting(
        None, "turn-secret", "HMAC secret of TURN credentials (coturn static-auth-secret)"
    )
    external: HostPort | None = setting(
        None,
        "turn-external",
        "HOST:PORT of an external TURN (coturn) sharing --turn-secret",
        HostPort.parse,
    )
    allow_peers: tuple[str, ...] = setting(
        (), "turn-allow-peers", "CIDRs TURN may relay to even if internal (comma-separated)"
    )
    deny_peers: tuple[str, ...] = setting(
        (), "turn-deny-peers", "CIDRs TURN never relays to (comma-separated)"
    )
    user_quota: int = setting(
        10, "turn-user-quota", "live allocations per TURN credential", _int_at_least(1)
    )
    project_quota: int = setting(
        1000, "turn-project-quota", "live allocations per project", _int_at_least(1)
    )
    bandwidth: int = setting(
        0, "turn-bandwidth", "bytes/s cap per allocation (0 = no cap)", _int_at_least(0)
    )
    credential_ttl_secs: int = setting(
        3600, "turn-credential-ttl", "longest TURN credential lifetime", _int_at_least(60)
    )
    max_lifetime_secs: int = setting(
        3600, "turn-max-lifetime", "longest allocation lifetime granted", _int_at_least(600)
    )
    max_session_secs: int = setting(
        86400,
        "turn-max-session",
        "seconds an allocation may be refreshed past its credential's expiry (0 = not at all)",
        _int_at_least(0),
    )
    nonce_ttl_secs: int = setting(
        600, "turn-nonce-ttl", "seconds before a nonce is stale (438)", _int_at_least(1)
    )
    auth_failure_rate: float = setting(
        5.0, "turn-401-rate", "failed-credential 401 answers per second per source IP"
    )
    challenge_rate: float = setting(
        50.0,
        "turn-challenge-rate",
        "401 challenges per second per source IP to requests without credentials (0 = no limit)",
    )


@dataclass(frozen=True, slots=True)
class Config:
    http: HttpConfig = field(default_factory=HttpConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    signaling: SignalingConfig = field(default_factory=SignalingConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)


S = TypeVar("S")


def _sections() -> dict[str, type[Any]]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def setting_flags() -> dict[str, tuple[str, str, dataclasses.Field[Any]]]:
    """flag name -> (section, field name, field), for the CLI and the docs."""
    flags: dict[str, tuple[str, str, dataclasses.Field[Any]]] = {}
    for section, cls in _sections().items():
        for f in dataclasses.fields(cls):
            if f.metadata["flag"] in flags:
                raise TypeError(f"setting flag --{f.metadata['flag']} is declared twice")
            flags[f.metadata["flag"]] = (section, f.name, f)
    return flags


def _convert(value: Any, f: dataclasses.Field[Any], hint: Any, source: str) -> Any:
    """Turn a TOML value or a string into the field's type, or raise a ConfigError."""
    flag = f.metadata["flag"]
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    try:
        if value is None or (optional and value == ""):
            if not optional:
                raise ValueError("a value is required")
            return None
        parse = f.metadata["parse"]
        if parse is not None:
            return parse(str(value))
        if base is bool:
            return _parse_bool(value)
        if base is int and not isinstance(value, bool):
            return int(value)
        if base is float and not isinstance(value, bool):
            return float(value)
        if base is Path:
            return Path(str(value)).expanduser()
        if base is str:
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
        if typing.get_origin(base) is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        raise ValueError(f"unsupported type {base}")
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"setting --{flag} from {source}: {exc}") from None


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")


def load_config(
    toml_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults < TOML file < ``PULSEBEAM_*`` environment < flags (by flag name, None = unset)."""
    env = os.environ if env is None else env
    file_data: dict[str, Any] = {}
    if toml_path is not None:
        try:
            file_data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {toml_path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {toml_path} is not valid TOML: {exc}") from None
    sections = _sections()
    unknown = set(file_data) - set(sections)
    if unknown:
        raise ConfigError(
            f"config file {toml_path}: unknown section(s) {sorted(unknown)};"
            f" known: {sorted(sections)}"
        )
    known_flags = setting_flags()
    unknown_flags = set(flags or {}) - set(known_flags)
    if unknown_flags:
        raise ConfigError(f"unknown setting(s): {sorted(unknown_flags)}")
    built: dict[str, Any] = {}
    for section, cls in sections.items():
        table = file_data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"config file {toml_path}: [{section}] must be a table")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        extra = set(table) - names
        if extra:
            raise ConfigError(
                f"config file {toml_path}: unknown key(s) {sorted(extra)} in [{section}];"
                f" known: {sorted(names)}"
            )
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            flag = f.metadata["flag"]
            env_name = ENV_PREFIX + flag.upper().replace("-", "_")
            if flags and flags.get(flag) is not None:
                raw, source = flags[flag], f"--{flag}"
            elif env_name in env:
                raw, source = env[env_name], f"${env_name}"
            elif f.name in table:
                raw, source = table[f.name], f"{toml_path} [{section}] {f.name}"
            else:
                continue
            values[f.name] = _convert(raw, f, hints[f.name], source)
        built[section] = cls(**values)
    return Config(**built)
