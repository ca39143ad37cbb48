"""Which peer addresses the TURN server may relay to: an injected policy.

A relay that forwards to anything would be an open door into the operator's network (its loopback
services, cloud metadata at 169.254.169.254, private subnets). So internal ranges are refused by
default, also when an IPv4 address hides inside an IPv6 one: IPv4-mapped (``::ffff:a.b.c.d``),
IPv4-compatible (``::a.b.c.d``), 6to4 (``2002:AABB:CCDD::/48``), Teredo (``2001::/32``, server and
obfuscated client), NAT64 (``64:ff9b::/96``) — and the local-use NAT64 prefix ``64:ff9b:1::/48``
outright, since its embedding depends on a local prefix length.

Order of decisions, for the address and every IPv4 address embedded in it: an operator *deny*
entry refuses; an operator *allow* entry permits; loopback is permitted when ``allow_loopback``
(tests and demos only); any built-in internal range refuses. One refused form refuses the peer.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

from pulsebeam.errors import ConfigError

__all__ = ["BLOCKED_NETWORKS", "PeerFilter"]

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

BLOCKED_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(text)
    for text in (
        "0.0.0.0/8",  # "this network", 0.0.0.0 reaches the local host on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata services
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)
_LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address stands for, in each form a stack might translate."""
    if ip.version == 4:
        return []
    assert isinstance(ip, ipaddress.IPv6Address)
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64 or (ip in _COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _parse_networks(entries: Iterable[str], setting: str) -> tuple[Network, ...]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"setting --{setting}: {entry!r} is not an IP network such as 203.0.113.0/24"
            ) from None
    return tuple(networks)


class PeerFilter:
    """``PeerFilter(allow=..., deny=..., allow_loopback=...).refusal(ip)`` -> reason or None."""

    def __init__(
        self,
        *,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        allow_loopback: bool = False,
    ) -> None:
        self._allow = _parse_networks(allow, "turn-allow-peers")
        self._deny = _parse_networks(deny, "turn-deny-peers")
        self._allow_loopback = allow_loopback
        if allow_loopback:
            logger.warning(
                "TURN relays to loopback peers (--turn-allow-loopback): for tests and local demos"
                " only, never on a shared host"
            )

    def refusal(self, host: str) -> str | None:
        """Why relaying to ``host`` is refused, or ``None`` when it is allowed."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return f"{host!r} is not an IP address"
        for candidate in (ip, *_embedded_ipv4(ip)):
            reason = self._refuse_one(candidate)
            if reason is not None:
                if candidate != ip:
                    return f"{ip} embeds {candidate}: {reason}"
                return reason
        return None

    def _refuse_one(self, ip: IPAddress) -> str | None:
        if any(ip in net for net in self._deny):
            return f"{ip} is in the operator's deny list"
        if any(ip in net for net in self._allow):
            return None
        if self._allow_loopback and any(ip in net for net in _LOOPBACK):
            return None
        for net in BLOCKED_NETWORKS:
            if ip in net:
                return f"{ip} is in the internal range {net}"
        return None
