"""The gRPC-Web surface of the real server: framing, content type, CORS, authentication and bad
input, through the tests' own client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time

import httpx

from pulsebeam import proto
from pulsebeam.auth import AccessToken, KeyPair, PeerClaims, PeerPolicy
from tests.fixtures.server import ProjectKeys, RunningServer
from tests.signaling.conftest import ClientFactory
from tests.signaling.grpcweb_client import CONTENT_TYPE, SERVICE, Client, frame, message, peer

OK, INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED = 0, 3, 5, 7
RESOURCE_EXHAUSTED, UNIMPLEMENTED, UNAUTHENTICATED = 8, 12, 16


async def test_prepare_returns_configured_ice_servers(client: ClientFactory) -> None:
    reply = await client("g", "alice").call("Prepare", proto.PrepareReq())
    assert (reply.http_status, reply.status) == (200, OK)
    assert reply.headers["content-type"] == CONTENT_TYPE
    response = reply.parsed(proto.PrepareResp)
    assert isinstance(response, proto.PrepareResp)
    assert [list(s.urls) for s in response.ice_servers] == [["stun:127.0.0.1:3478"]]


async def test_empty_unary_response_is_a_zero_length_frame_then_trailers(
    server: RunningServer, project: ProjectKeys, http: httpx.AsyncClient
) -> None:
    bob = Client(http, server.grpc, project.token("g", "bob"))
    alice = Client(http, server.grpc, project.token("g", "alice"))
    async with bob.recv("g", "bob", 1001):
        response = await http.post(
            f"{server.grpc}/{SERVICE}/Send",
            content=frame(
                proto.SendReq(
                    msg=message(peer("g", "alice", 2002), peer("g", "bob", 0))
                ).SerializeToString()
            ),
            headers=alice.headers(),
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/grpc-web+proto"
    assert response.content == b"\x00\x00\x00\x00\x00\x80\x00\x00\x00\x0fgrpc-status:0\r\n"


async def test_errors_are_trailers_in_a_200_body(client: ClientFactory) -> None:
    reply = await client("g", "alice").send(message(peer("g", "alice", 5000), peer("g", "nobody")))
    assert (reply.http_status, reply.status, reply.data) == (200, NOT_FOUND, [])
    assert "nobody has no open Recv stream" in reply.message
    assert reply.headers["content-type"] == CONTENT_TYPE


async def test_cors_preflight_and_exposed_headers(
    server: RunningServer, client: ClientFactory, http: httpx.AsyncClient
) -> None:
    url = f"{server.grpc}/{SERVICE}/Prepare"
    preflight = await http.options(
        url,
        headers={
            "origin": "http://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,grpc-timeout,x-grpc-web",
        },
    )
    assert preflight.status_code == 204
    allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "grpc-timeout", "x-grpc-web", "x-user-agent"} <= (
        allowed
    )
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-origin"] == "*"
    reply = await client("g", "a").call(
        "Prepare", proto.PrepareReq(), headers={"origin": "http://app.example"}
    )
    exposed = {h.strip() for h in reply.headers["access-control-expose-headers"].split(",")}
    assert exposed == {"grpc-status", "grpc-message"}
    assert reply.headers["access-control-allow-origin"] == "*"


async def test_wrong_or_missing_content_type_is_415(
    server: RunningServer, client: ClientFactory, http: httpx.AsyncClient
) -> None:
    c = client("g", "alice")
    body = frame(b"")
    for content_type in ("application/json", "application/grpc-web-text", ""):
        headers = c.headers({"content-type": content_type})
        response = await http.post(
            f"{server.grpc}/{SERVICE}/Prepare", content=body, headers=headers
        )
        assert response.status_code == 415, content_type
        assert "application/grpc-web+proto" in response.text


async def test_get_is_405_and_unknown_method_unimplemented(
    server: RunningServer, client: ClientFactory, http: httpx.AsyncClient
) -> None:
    response = await http.get(f"{server.grpc}/{SERVICE}/Prepare")
    assert response.status_code == 405
    reply = await client("g", "a").call("Nope", proto.PrepareReq())
    assert reply.status == UNIMPLEMENTED
    assert "Nope" in reply.message


async def test_bad_bodies_are_invalid_argument(client: ClientFactory) -> None:
    c = client("g", "alice")
    good = proto.SendReq(msg=message(peer("g", "alice", 5000), peer("g", "b"))).SerializeToString()
    cases = {
        "truncated frame": frame(good)[:-3],
        "truncated header": b"\x00\x00\x00",
        "no frame": b"",
        "two frames": frame(good) + frame(good),
        "garbage protobuf": frame(b"\xff\xff\xff\xff\x0f"),
        "trailers instead of data": frame(b"grpc-status:0\r\n", 0x80),
        "compressed": frame(good, 0x01),
    }
    for name, body in cases.items():
        reply = await c.call("Send", body=body)
        assert reply.status == INVALID_ARGUMENT, (name, reply)
        assert reply.message, name


async def test_missing_fields_are_invalid_argument(client: ClientFactory) -> None:
    c = client("g", "alice")
    me, bob = peer("g", "alice", 5000), peer("g", "bob")
    no_payload = proto.Message(header=proto.MessageHeader(src=me, dst=bob))
    no_dst = message(me, bob)
    no_dst.header.ClearField("dst")
    cases = {
        "msg": proto.SendReq(),
        "header": proto.SendReq(msg=proto.Message(payload=proto.MessagePayload(join={}))),
        "payload": proto.SendReq(msg=no_payload),
        "dst": proto.SendReq(msg=no_dst),
    }
    for field, request in cases.items():
        reply = await c.call("Send", request)
        assert reply.status == INVALID_ARGUMENT, (field, reply)
        assert field in reply.message, (field, reply.message)
    bad_id = await c.send(message(me, peer("g", "bad id!")))
    assert bad_id.status == INVALID_ARGUMENT
    assert "dst.peer_id" in bad_id.message
    reserved = await c.send(message(peer("g", "alice", 3), bob))
    assert reserved.status == INVALID_ARGUMENT
    assert "reserved" in reserved.message
    async with c.recv("g", "alice", 0) as stream:
        ended = await stream.end()
    assert ended.status == INVALID_ARGUMENT
    no_src = await c.call("Recv", proto.RecvReq())
    assert no_src.status == INVALID_ARGUMENT
    assert "src" in no_src.message


async def test_oversized_payload_is_resource_exhausted(client: ClientFactory) -> None:
    c = client("g", "alice")
    big = message(peer("g", "alice", 5000), peer("g", "bob"), "signal")
    big.payload.signal.sdp.sdp = "a" * 10_230
    reply = await c.send(big)
    assert reply.status == RESOURCE_EXHAUSTED
    assert "10240" in reply.message
    huge = message(peer("g", "alice", 5000), peer("g", "bob"), "signal")
    huge.payload.signal.sdp.sdp = "a" * 200_000
    reply = await c.send(huge)
    assert reply.status == RESOURCE_EXHAUSTED


def _forge(token: str, payload_changes: dict[str, object]) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=="))
    data.update(payload_changes)
    raw = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{raw}.{signature}"


async def test_token_failures_are_unauthenticated_on_every_method(
    server: RunningServer, project: ProjectKeys, http: httpx.AsyncClient
) -> None:
    good = project.token("g", "alice")
    other_secret = KeyPair.generate().api_secret
    claims = PeerClaims("g", "alice")
    claims.set_allow_policy(PeerPolicy("*", "*"))
    wrong_signer = AccessToken(project.api_key, other_secret).create_token(claims, 3600)
    unknown_key = AccessToken(KeyPair.generate().api_key, other_secret).create_token(claims, 3600)
    expired = _forge(good, {"exp": int(time.time()) - 60})  # signature no longer matches either
    claims_expired = project.token("g", "alice", ttl=1)
    await asyncio.sleep(1.1)
    cases = {
        None: "missing",
        "": "Bearer <token>",
        "garbage": "compact JWS",
        wrong_signer: "does not verify",
        unknown_key: "unknown",
        expired: "does not verify",
        claims_expired: "expired",
        _forge(good, {"pid": "mallory"}): "does not verify",
    }
    requests = {
        "Prepare": proto.PrepareReq(),
        "Send": proto.SendReq(msg=message(peer("g", "alice", 5000), peer("g", "b"))),
        "AnalyticsReport": proto.AnalyticsReportReq(),
        "Recv": proto.RecvReq(src=peer("g", "alice", 5000)),
    }
    for token, expected in cases.items():
        for method, request in requests.items():
            reply = await Client(http, server.grpc, token).call(method, request)
            assert reply.status == UNAUTHENTICATED, (method, token, reply)
            assert expected in reply.message, (method, reply.message)
    basic = await Client(http, server.grpc, None).call(
        "Prepare", proto.PrepareReq(), headers={"authorization": "Basic dXNlcjpwYXNz"}
    )
    assert basic.status == UNAUTHENTICATED
    assert "Bearer" in basic.message


async def test_src_must_be_the_tokens_own_peer(client: ClientFactory) -> None:
    alice = client("g", "alice")
    reply = await alice.send(message(peer("g", "mallory", 5000), peer("g", "bob")))
    assert reply.status == PERMISSION_DENIED
    assert "token is for g/alice" in reply.message
    other_group = await alice.send(message(peer("h", "alice", 5000), peer("g", "bob")))
    assert other_group.status == PERMISSION_DENIED
    async with alice.recv("g", "mallory", 5000) as stream:
        ended = await stream.end()
    assert ended.status == PERMISSION_DENIED


async def test_a_malformed_grpc_timeout_is_ignored(
    server: RunningServer, client: ClientFactory
) -> None:
    # Not digits by the gRPC spec (ASCII 0-9, at most 8 of them): the header is ignored and the
    # stream opens as without it, rather than failing with INTERNAL.
    values = {"sup": "\xb2m", "long": "1" + "0" * 399 + "H", "huge": "9" * 5000 + "m"}
    async with contextlib.AsyncExitStack() as stack:
        for conn, (name, value) in enumerate(values.items(), start=5101):
            stream = await stack.enter_async_context(
                client("g", name).recv("g", name, conn, headers={"grpc-timeout": value})
            )
            ping = await stream.next(3, pings=True)  # open: the keepalive arrives
            assert ping.msg.payload.HasField("ping"), name
    assert "signaling call failed" not in server.log()
