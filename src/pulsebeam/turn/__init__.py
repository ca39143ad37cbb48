"""STUN/TURN (RFC 8489 / RFC 8656) over UDP, TCP and TLS, with credentials tied to API keys.

- :mod:`~pulsebeam.turn.stun`, :mod:`~pulsebeam.turn.attributes`,
  :mod:`~pulsebeam.turn.channeldata`: pure codecs (no I/O).
- :mod:`~pulsebeam.turn.credentials`: coturn-compatible ephemeral credentials and the ICE server
  entries that signaling's ``Prepare`` hands out.
- :mod:`~pulsebeam.turn.server`: :class:`TurnServer`, built from the ``[turn]`` settings.
"""

from pulsebeam.turn.credentials import IceServer, IceServerProvider, TurnCredential, mint_credential
from pulsebeam.turn.server import TurnServer
from pulsebeam.turn.stun import StunDecodeError

__all__ = [
    "IceServer",
    "IceServerProvider",
    "StunDecodeError",
    "TurnCredential",
    "TurnServer",
    "mint_credential",
]
