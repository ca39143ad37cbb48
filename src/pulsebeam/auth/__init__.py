"""Keys, tokens and allow policies: the server SDK and the verifier the servers use."""

from pulsebeam.auth.keys import KeyPair, format_public_key, parse_public_key, public_key_for_secret
from pulsebeam.auth.policy import PeerPolicy, pattern_matches, validate_id, validate_pattern
from pulsebeam.auth.tokens import AccessToken, PeerClaims, decode_unverified
from pulsebeam.auth.verifier import KeyLookup, TokenVerifier, VerifiedToken

__all__ = [
    "AccessToken",
    "KeyLookup",
    "KeyPair",
    "PeerClaims",
    "PeerPolicy",
    "TokenVerifier",
    "VerifiedToken",
    "decode_unverified",
    "format_public_key",
    "parse_public_key",
    "pattern_matches",
    "public_key_for_secret",
    "validate_id",
    "validate_pattern",
]
