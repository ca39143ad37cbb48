"""Tokens: the official format, cross-checked with PyJWT, each refusal with its own error."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pulsebeam import AccessToken, KeyPair, PeerClaims, PeerPolicy, TokenVerifier
from pulsebeam.auth import decode_unverified, parse_public_key
from pulsebeam.auth.tokens import b64url_encode
from pulsebeam.errors import (
    ExpiredTokenError,
    InvalidArgumentError,
    InvalidClaimsError,
    InvalidPatternError,
    InvalidSignatureError,
    MalformedTokenError,
    UnknownKeyError,
    UnsupportedAlgorithmError,
)


@pytest.fixture
def pair() -> KeyPair:
    return KeyPair.generate()


def lookup_for(pair: KeyPair) -> dict[str, Ed25519PublicKey]:
    return {pair.api_key: parse_public_key(pair.public_key)}


def mint(pair: KeyPair, group: str = "room1", peer: str = "alice", ttl: int = 3600) -> str:
    claims = PeerClaims(group, peer)
    claims.set_allow_policy(PeerPolicy("room1", "*"))
    return AccessToken(pair.api_key, pair.api_secret).create_token(claims, ttl)


def b64json(obj: object) -> str:
    return b64url_encode(json.dumps(obj, separators=(",", ":")).encode())


def signed(pair: KeyPair, header: str, payload: str) -> str:
    """Sign arbitrary header/payload parts with the pair's real key (so only the content is bad)."""
    seed = bytes.fromhex(pair.api_secret[3:])
    sig = Ed25519PrivateKey.from_private_bytes(seed).sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{b64url_encode(sig)}"


def raw_parts(token: str) -> list[bytes]:
    return [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in token.split(".")]


def test_header_and_payload_bytes_are_exactly_the_official_sdks(pair: KeyPair) -> None:
    before = int(time.time())
    token = mint(pair, ttl=3600)
    header, payload, signature = raw_parts(token)
    assert header == f'{{"alg":"EdDSA","kid":"{pair.api_key}"}}'.encode()
    exp = json.loads(payload)["exp"]
    assert before + 3600 <= exp <= int(time.time()) + 3600
    assert (
        payload
        == (
            f'{{"exp":{exp},"gid":"room1","pid":"alice","ap":{{"group_id":"room1","peer_id":"*"}}}}'
        ).encode()
    )
    assert len(signature) == 64
    assert "=" not in token


def test_our_token_verifies_with_pyjwt(pair: KeyPair) -> None:
    token = mint(pair)
    claims = jwt.decode(token, parse_public_key(pair.public_key), algorithms=["EdDSA"])
    assert claims["gid"] == "room1"
    assert claims["pid"] == "alice"
    assert claims["ap"] == {"group_id": "room1", "peer_id": "*"}
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": pair.api_key}


def test_pyjwt_token_verifies_with_ours(pair: KeyPair) -> None:
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(pair.api_secret[3:]))
    exp = int(time.time()) + 60
    payload = {"exp": exp, "gid": "g1", "pid": "bob", "ap": {"group_id": "*", "peer_id": "a*z"}}
    token = jwt.encode(payload, private, algorithm="EdDSA", headers={"kid": pair.api_key})
    verified = TokenVerifier(lookup_for(pair).get).verify(token)
    assert (verified.key_id, verified.group_id, verified.peer_id) == (pair.api_key, "g1", "bob")
    assert verified.policy == PeerPolicy("*", "a*z")
    assert verified.expires_at == exp


def test_real_example_token_parses_but_fails_on_its_unpublished_key(pair: KeyPair) -> None:
    header = '{"alg":"EdDSA","kid":"kid_0dfa569b10850a5a"}'
    payload = (
        '{"exp":1738441174,"gid":"default","pid":"peer-83","ap":{"group_id":"*","peer_id":"*"}}'
    )
    # The example's signature is not public; any 64 bytes stand in for it.
    token = ".".join(b64url_encode(p) for p in (header.encode(), payload.encode(), b"\x07" * 64))
    parts = decode_unverified(token)
    assert parts.header == {"alg": "EdDSA", "kid": "kid_0dfa569b10850a5a"}
    assert parts.payload["pid"] == "peer-83"
    with pytest.raises(UnknownKeyError, match="kid_0dfa569b10850a5a is unknown"):
        TokenVerifier({}.get).verify(token)
    some_key = parse_public_key(pair.public_key)
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        TokenVerifier({"kid_0dfa569b10850a5a": some_key}.get).verify(token)


def forged_hs256(pair: KeyPair) -> str:
    # The classic confusion: HMAC keyed with the *public* key.
    header = b64json({"alg": "HS256", "kid": pair.api_key})
    payload = b64json({"exp": int(time.time()) + 60, "gid": "g", "pid": "p", "ap": None})
    secret = pair.public_key.encode()
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url_encode(mac)}"


def es256_token(pair: KeyPair) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    claims = {"exp": int(time.time()) + 60, "gid": "g", "pid": "p"}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": pair.api_key})


def none_token(pair: KeyPair) -> str:
    header = b64json({"alg": "none", "kid": pair.api_key})
    payload = b64json({"exp": int(time.time()) + 60, "gid": "g", "pid": "p"})
    return f"{header}.{payload}.AA"


def future() -> int:
    return int(time.time()) + 600


AP = {"group_id": "*", "peer_id": "*"}


def expired_token(pair: KeyPair) -> str:
    payload = b64json({"exp": int(time.time()) - 60, "gid": "g", "pid": "p", "ap": AP})
    return signed(pair, b64json({"alg": "EdDSA", "kid": pair.api_key}), payload)


def flip_signature_bit(token: str) -> str:
    head, body, _ = token.split(".")
    raw = bytearray(raw_parts(token)[2])
    raw[0] ^= 1
    return f"{head}.{body}.{b64url_encode(bytes(raw))}"


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda p: "abc", MalformedTokenError, "not a compact JWS"),
        (lambda p: "a.b", MalformedTokenError, "not a compact JWS"),
        (lambda p: "a.b.c.d", MalformedTokenError, "not a compact JWS"),
        (lambda p: "a..c", MalformedTokenError, "not a compact JWS"),
        (lambda p: "a+b.c.d", MalformedTokenError, "not a compact JWS"),
        (lambda p: "abcde.eyJ9.AAAA", MalformedTokenError, "header is not valid base64url"),
        (
            lambda p: b64url_encode(b"{nope") + ".e30.AA",
            MalformedTokenError,
            "header is not valid JSON",
        ),
        (lambda p: b64url_encode(b"[1]") + ".e30.AA", MalformedTokenError, "must be a JSON object"),
        (
            lambda p: b64url_encode(b'{"alg":"EdDSA","alg":"none"}') + ".e30.AA",
            MalformedTokenError,
            "duplicate key",
        ),
        (lambda p: "e30." + "A" * 5000 + ".AA", MalformedTokenError, "over the 4096-byte limit"),
        (none_token, UnsupportedAlgorithmError, "'none' is not accepted"),
        (forged_hs256, UnsupportedAlgorithmError, "'HS256' is not accepted"),
        (es256_token, UnsupportedAlgorithmError, "'ES256' is not accepted"),
        (
            lambda p: signed(p, b64json({"alg": "EdDSA", "kid": p.api_key, "crit": ["x"]}), "e30"),
            UnsupportedAlgorithmError,
            "crit",
        ),
        (lambda p: signed(p, b64json({"alg": "EdDSA"}), "e30"), UnknownKeyError, "no valid 'kid'"),
        (
            lambda p: signed(p, b64json({"alg": "EdDSA", "kid": "kid_XYZ"}), "e30"),
            UnknownKeyError,
            "no valid 'kid'",
        ),
        (
            lambda p: mint(KeyPair.generate()),
            UnknownKeyError,
            "unknown or has been deleted",
        ),
        (lambda p: flip_signature_bit(mint(p)), InvalidSignatureError, "does not verify"),
        (
            lambda p: ".".join(mint(p).split(".")[:2]) + "." + b64url_encode(b"x" * 10),
            InvalidSignatureError,
            "must be 64 bytes",
        ),
        (
            lambda p: signed(p, b64json({"alg": "EdDSA", "kid": p.api_key}), b64json({"gid": "g"})),
            InvalidClaimsError,
            "'exp' is missing",
        ),
        (
            lambda p: signed(
                p,
                b64json({"alg": "EdDSA", "kid": p.api_key}),
                b64json({"exp": str(future()), "gid": "g", "pid": "p", "ap": AP}),
            ),
            InvalidClaimsError,
            "'exp' is missing or not an integer",
        ),
        (
            lambda p: signed(
                p,
                b64json({"alg": "EdDSA", "kid": p.api_key}),
                b64json({"exp": future(), "pid": "p", "ap": AP}),
            ),
            InvalidClaimsError,
            "'gid' must be a string",
        ),
        (
            lambda p: signed(
                p,
                b64json({"alg": "EdDSA", "kid": p.api_key}),
                b64json({"exp": future(), "gid": "g", "pid": "bad id!", "ap": AP}),
            ),
            InvalidClaimsError,
            "'pid' 'bad id!' is invalid",
        ),
        (
            lambda p: signed(
                p,
                b64json({"alg": "EdDSA", "kid": p.api_key}),
                b64json({"exp": future(), "gid": "g", "pid": "p", "ap": None}),
            ),
            InvalidClaimsError,
            "no allow policy",
        ),
        (
            lambda p: signed(
                p,
                b64json({"alg": "EdDSA", "kid": p.api_key}),
                b64json(
                    {
                        "exp": future(),
                        "gid": "g",
                        "pid": "p",
                        "ap": {"group_id": "a**", "peer_id": "*"},
                    }
                ),
            ),
            InvalidClaimsError,
            "'ap.group_id' 'a\\*\\*' is invalid",
        ),
        (
            lambda p: signed(
                p,
                b64json({"alg": "EdDSA", "kid": p.api_key}),
                b64json({"exp": future(), "gid": "g", "pid": "p", "ap": "*:*"}),
            ),
            InvalidClaimsError,
            "'ap' must be an object",
        ),
        (expired_token, ExpiredTokenError, "expired 60 s ago"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_tokens_each_get_their_own_error(
    pair: KeyPair, build: object, error: type[Exception], message: str
) -> None:
    token = build(pair)  # type: ignore[operator]
    with pytest.raises(error, match=message):
        TokenVerifier(lookup_for(pair).get).verify(token)


def test_leeway_accepts_small_skew_only(pair: KeyPair) -> None:
    token = mint(pair, ttl=100)
    exp = decode_unverified(token).payload["exp"]
    lookup = lookup_for(pair).get
    TokenVerifier(lookup, leeway_secs=5, clock=lambda: exp + 4.5).verify(token)
    with pytest.raises(ExpiredTokenError, match="expired 5 s ago"):
        TokenVerifier(lookup, leeway_secs=5, clock=lambda: exp + 5.5).verify(token)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_cache_never_outlives_expiry_or_revocation(pair: KeyPair) -> None:
    keys = lookup_for(pair)
    clock = Clock()
    verifier = TokenVerifier(keys.get, leeway_secs=0, clock=clock)
    token = mint(pair, ttl=30)
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # served from the cache
    clock.now += 31
    with pytest.raises(ExpiredTokenError):
        verifier.verify(token)
    clock.now -= 31
    verifier.verify(token)
    del keys[pair.api_key]  # the key is deleted: cached verifications die with it
    with pytest.raises(UnknownKeyError):
        verifier.verify(token)
    other = KeyPair.generate()
    keys[pair.api_key] = parse_public_key(other.public_key)  # same kid, another key
    with pytest.raises(InvalidSignatureError):
        verifier.verify(token)


def test_cache_stays_bounded(pair: KeyPair) -> None:
    verifier = TokenVerifier(lookup_for(pair).get, cache_size=8)
    tokens = [mint(pair, peer=f"p{i}") for i in range(40)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier._cache) <= 8
    assert verifier.verify(tokens[0]).peer_id == "p0"  # evicted tokens still verify afresh


def test_tampered_payload_fails_signature(pair: KeyPair) -> None:
    token = mint(pair)
    header, _, sig = token.split(".")
    payload = b64json({"exp": future(), "gid": "room1", "pid": "admin", "ap": AP})
    with pytest.raises(InvalidSignatureError):
        TokenVerifier(lookup_for(pair).get).verify(f"{header}.{payload}.{sig}")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda p: AccessToken("kid_123", p.api_secret), InvalidArgumentError, "API key"),
        (lambda p: AccessToken(p.api_key, "sk_" + "0" * 63), InvalidArgumentError, "API secret"),
        (lambda p: AccessToken(p.api_key, p.api_secret.upper()), InvalidArgumentError, "secret"),
        (lambda p: PeerClaims("", "a"), InvalidPatternError, "group_id '' is invalid"),
        (lambda p: PeerClaims("g" * 37, "a"), InvalidPatternError, "1-36 characters"),
        (lambda p: PeerClaims("g", "a/b"), InvalidPatternError, "peer_id 'a/b' is invalid"),
        (lambda p: PeerPolicy("a*b*", "*"), InvalidPatternError, "at most one"),
        (lambda p: PeerPolicy("*", ""), InvalidPatternError, "peer_id '' is invalid"),
        (lambda p: PeerPolicy.parse("nocolon"), InvalidPatternError, "GROUP_PATTERN:PEER_PATTERN"),
    ],
)
def test_minting_refuses_bad_input(
    pair: KeyPair, call: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        call(pair)  # type: ignore[operator]


def test_minting_needs_a_policy_and_positive_ttl(pair: KeyPair) -> None:
    minter = AccessToken(pair.api_key, pair.api_secret)
    claims = PeerClaims("g", "p")
    with pytest.raises(InvalidArgumentError, match="no allow policy"):
        minter.create_token(claims, 60)
    claims.set_allow_policy(PeerPolicy("*", "*"))
    for bad in (0, -5):
        with pytest.raises(InvalidArgumentError, match="must be positive"):
            minter.create_token(claims, bad)
    with pytest.raises(InvalidArgumentError, match="whole number"):
        minter.create_token(claims, 1.5)  # type: ignore[arg-type]


def test_secrets_stay_out_of_reprs(pair: KeyPair) -> None:
    assert pair.api_secret not in repr(pair)
    assert pair.api_secret[3:] not in repr(AccessToken(pair.api_key, pair.api_secret))
