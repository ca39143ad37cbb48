"""Ephemeral credentials (coturn REST API scheme) and the ICE servers Prepare hands out."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from pulsebeam.turn.credentials import (
    CredentialError,
    IceServer,
    IceServerProvider,
    mint_credential,
    parse_username,
)


def test_password_is_coturn_rest_api_hmac() -> None:
    cred = mint_credential(b"s3cret", "kid_0123456789abcdef", "proj1", 1_900_000_000)
    assert cred.username == "1900000000:kid_0123456789abcdef:proj1"
    expected = base64.b64encode(hmac.new(b"s3cret", cred.username.encode(), hashlib.sha1).digest())
    assert cred.password == expected.decode()
    assert parse_username(cred.username) == (1_900_000_000, "kid_0123456789abcdef", "proj1")


@pytest.mark.parametrize("username", ["", "abc:kid:p", "123:kid", "123::p", "1:2:3:4", "-5:k:p"])
def test_bad_usernames(username: str) -> None:
    with pytest.raises(CredentialError, match="is not <expiry>:<key id>:<project id>"):
        parse_username(username)


def test_fields_with_a_colon_are_refused() -> None:
    with pytest.raises(CredentialError, match="project id 'a:b' must be"):
        mint_credential(b"s", "kid_x", "a:b", 1)


def test_expiry_is_the_token_capped_by_the_ttl() -> None:
    provider = IceServerProvider(
        b"s", host="127.0.0.1", port=3478, max_ttl_secs=600, clock=lambda: 1000.0
    )
    assert provider.credential("kid_x", "p", 1300).expires_at == 1300  # token ends first
    assert provider.credential("kid_x", "p", 99_999).expires_at == 1600  # capped at now + ttl


def test_ice_servers_lists_stun_and_turn_urls() -> None:
    provider = IceServerProvider(b"s", host="turn.example", port=3478, tls_port=5349)
    stun, turn = provider.ice_servers("kid_x", "p", 2_000_000_000)
    assert stun == IceServer(("stun:turn.example:3478",))
    assert turn.urls == (
        "turn:turn.example:3478?transport=udp",
        "turn:turn.example:3478?transport=tcp",
        "turns:turn.example:5349?transport=tcp",
    )
    assert turn.username is not None
    assert turn.username.endswith(":kid_x:p")
    plain = IceServerProvider(b"s", host="::1", port=3478)
    assert plain.turn_urls == ("turn:[::1]:3478?transport=udp", "turn:[::1]:3478?transport=tcp")


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        IceServerProvider(b"", host="h", port=1)
