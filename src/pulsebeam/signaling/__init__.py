"""Signaling: ``pulsebeam.v1.Signaling`` over gRPC-Web, with every token checked and every
policy enforced.

- :mod:`.grpcweb_frames` — the gRPC-Web frame codec (pure; clients may reuse it);
- :mod:`.grpcweb` — the gRPC-Web endpoint: routing, content type, CORS, bodies, errors;
- :mod:`.http1`, :mod:`.http1_parts` — the HTTP/1.1 fast path (calls answered in uvicorn's
  protocol, no ASGI) and its lighter per-connection parts;
- :mod:`.grpcweb_asgi` — the same endpoint over ASGI (HTTP/2 under TLS, everything else);
- :mod:`.service` — the rules of Prepare, Send, Recv and AnalyticsReport;
- :mod:`.streams` — open streams writing to their transports, and the node's hub of them;
- :mod:`.router`, :mod:`.redis_router` — where messages go: in-process, or across nodes;
- :mod:`.directory` — keys and bans in memory; :mod:`.records` — batched usage and logs;
- :mod:`.connection_log` — who signaled whom: one row per session start and end.

The composition root (:mod:`pulsebeam.server`) builds all of it from one
:class:`~pulsebeam.config.Config`.
"""

from pulsebeam.signaling.grpcweb import GrpcWebEndpoint
from pulsebeam.signaling.grpcweb_asgi import GrpcWebMiddleware
from pulsebeam.signaling.router import LocalRouter, Presence, Router
from pulsebeam.signaling.service import Caller, SignalingService
from pulsebeam.signaling.store import SignalingStore
from pulsebeam.signaling.streams import Address, Hub, Stream

__all__ = [
    "Address",
    "Caller",
    "GrpcWebEndpoint",
    "GrpcWebMiddleware",
    "Hub",
    "LocalRouter",
    "Presence",
    "Router",
    "SignalingService",
    "SignalingStore",
    "Stream",
]
