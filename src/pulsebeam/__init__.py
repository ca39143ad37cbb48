"""PulseBeam: a self-hostable real-time communication platform.

The top level holds the server SDK (mint tokens for your end users)::

    from pulsebeam import AccessToken, PeerClaims, PeerPolicy

    claims = PeerClaims("room1", "alice")
    claims.set_allow_policy(PeerPolicy("room1", "*"))
    token = AccessToken(api_key, api_secret).create_token(claims, 3600)

The peer SDK lives in :mod:`pulsebeam.peer`, the servers behind ``pulsebeam serve``.
"""

from pulsebeam.auth import (
    AccessToken,
    KeyPair,
    PeerClaims,
    PeerPolicy,
    TokenVerifier,
    VerifiedToken,
)

__version__ = "0.1.0"

__all__ = [
    "AccessToken",
    "KeyPair",
    "PeerClaims",
    "PeerPolicy",
    "TokenVerifier",
    "VerifiedToken",
    "__version__",
]
