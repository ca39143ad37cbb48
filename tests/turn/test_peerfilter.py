"""Which peers the relay refuses: every internal range, in every spelling."""

from __future__ import annotations

import logging

import pytest

from pulsebeam.errors import ConfigError
from pulsebeam.turn.peerfilter import PeerFilter

# Each internal range, and the IPv6 forms that carry an internal IPv4 address.
REFUSED = [
    "127.0.0.1",
    "127.255.0.9",
    "0.0.0.0",
    "0.1.2.3",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "::",
    "::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible
    "::10.0.0.1",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1 (obfuscated)
    "2001:0:a00:1::1",  # Teredo, server 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::1",  # local-use NAT64
]

ALLOWED = ["8.8.8.8", "203.0.113.9", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", REFUSED)
def test_internal_addresses_are_refused(address: str) -> None:
    assert PeerFilter().refusal(address) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert PeerFilter().refusal(address) is None


def test_refusal_names_the_embedded_address() -> None:
    reason = PeerFilter().refusal("::ffff:127.0.0.1")
    assert (
        reason == "::ffff:7f00:1 embeds 127.0.0.1: 127.0.0.1 is in the internal range 127.0.0.0/8"
    )


def test_allow_loopback_admits_only_loopback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        peers = PeerFilter(allow_loopback=True)
    assert "tests and local demos only" in caplog.text
    assert peers.refusal("127.0.0.1") is None
    assert peers.refusal("::1") is None
    assert peers.refusal("10.0.0.1") is not None
    assert peers.refusal("169.254.169.254") is not None


def test_operator_lists() -> None:
    peers = PeerFilter(allow=["10.20.0.0/16"], deny=["203.0.113.0/24", "10.20.30.0/24"])
    assert peers.refusal("10.20.1.1") is None
    assert peers.refusal("::ffff:10.20.1.1") is None
    assert peers.refusal("10.21.1.1") is not None
    assert peers.refusal("203.0.113.5") == "203.0.113.5 is in the operator's deny list"
    assert peers.refusal("10.20.30.40") == "10.20.30.40 is in the operator's deny list"
    assert peers.refusal("not-an-ip") == "'not-an-ip' is not an IP address"


def test_bad_cidr_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"--turn-deny-peers: '10\.0\.0\.0/33' is not an IP"):
        PeerFilter(deny=["10.0.0.0/33"])
