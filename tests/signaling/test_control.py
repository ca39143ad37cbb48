"""Revocation, bans, records, analytics, logs, health and metrics on the real server, with the
control plane driven through its real REST API and store."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import httpx

from pulsebeam import proto
from pulsebeam.control.store import Store
from tests.fixtures.server import ProjectKeys, RunningServer
from tests.signaling.conftest import ClientFactory
from tests.signaling.grpcweb_client import Client, message, peer

OK, PERMISSION_DENIED, UNAUTHENTICATED = 0, 7, 16


async def test_deleting_a_key_closes_its_streams_at_once(
    server: RunningServer, project: ProjectKeys, client: ClientFactory, http: httpx.AsyncClient
) -> None:
    alice = client("room", "alice")
    async with alice.recv("room", "alice", 8001) as stream:
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await http.delete(
            f"{server.url}/api/v1/projects/{project.project_id}/keys/{project.api_key}",
            headers={"authorization": f"Bearer {project.api_token}"},
        )
        assert response.status_code == 204, response.text
        ended = await stream.end(within=2)
        assert loop.time() - started < 1.0
    assert ended.status == UNAUTHENTICATED
    assert project.api_key in ended.message
    for method, request in (
        ("Prepare", proto.PrepareReq()),
        ("Recv", proto.RecvReq(src=peer("room", "alice", 8001))),
    ):
        reply = await alice.call(method, request)
        assert reply.status == UNAUTHENTICATED, method
    fresh = client("room", "bob")  # minted with the deleted key too
    assert (await fresh.call("Prepare", proto.PrepareReq())).status == UNAUTHENTICATED


async def test_bans_close_streams_and_refuse_tokens_until_lifted(
    server: RunningServer, project: ProjectKeys, client: ClientFactory, http: httpx.AsyncClient
) -> None:
    rest = f"{server.url}/api/v1/projects/{project.project_id}/bans"
    auth = {"authorization": f"Bearer {project.api_token}"}
    mallory, bob = client("room", "mallory"), client("room", "bob")
    async with (
        mallory.recv("room", "mallory", 8101) as mallory_stream,
        bob.recv("room", "bob", 8102) as bob_stream,
    ):
        assert (await mallory_stream.next()).msg.payload.HasField("join")  # bob's arrival
        created = await http.post(
            rest, json={"group_pattern": "*", "peer_pattern": "mall*"}, headers=auth
        )
        assert created.status_code == 201, created.text
        ended = await mallory_stream.end(within=2)
        assert ended.status == PERMISSION_DENIED
        assert "banned" in ended.message
        reply = await mallory.call("Prepare", proto.PrepareReq())
        assert reply.status == PERMISSION_DENIED
        # Others are untouched.
        to_bob = await client("room", "alice").send(
            message(peer("room", "alice", 8103), peer("room", "bob"), "ack")
        )
        assert to_bob.status == OK
        assert (await bob_stream.next()).msg.payload.HasField("ack")
    lifted = await http.delete(f"{rest}/{created.json()['id']}", headers=auth)
    assert lifted.status_code == 204
    assert (await mallory.call("Prepare", proto.PrepareReq())).status == OK


async def test_new_keys_work_without_restart_and_unknown_ones_do_not(
    server: RunningServer, project: ProjectKeys, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        f"{server.url}/api/v1/projects/{project.project_id}/keys",
        json={"label": "second"},
        headers={"authorization": f"Bearer {project.api_token}"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    second = ProjectKeys(
        project.project_id, project.account_id, body["api_key"], body["api_secret"], ""
    )
    reply = await Client(http, server.grpc, second.token("g", "p")).call(
        "Prepare", proto.PrepareReq()
    )
    assert reply.status == OK


async def test_usage_connection_log_and_analytics_are_recorded(
    server: RunningServer, project: ProjectKeys, client: ClientFactory
) -> None:
    alice, bob = client("room", "alice"), client("room", "bob")
    a, b = peer("room", "alice", 8201), peer("room", "bob", 8202)
    async with bob.recv("room", "bob", 8202) as bob_stream, alice.recv("room", "alice", 8201):
        assert (await alice.send(message(a, peer("room", "bob"), "join"))).status == OK
        assert (await alice.send(message(a, b, "signal"))).status == OK
        assert (await alice.send(message(a, b, "signal"))).status == OK
        assert (await alice.send(message(a, b, "bye"))).status == OK
        for _ in range(4):
            await bob_stream.next()
    report = proto.AnalyticsReport(tags=proto.AnalyticsTags(src=a, dst=b))
    report.metrics.add(timestamp_us=1_700_000_000_000_000, rtt_us=2500, quality_score=90)
    odd = report.metrics.add(timestamp_us=5)
    odd.ice_connection_type = 7  # a code this server has no name for: still accepted
    reply = await alice.call("AnalyticsReport", proto.AnalyticsReportReq(reports=[report]))
    assert reply.status == OK
    forged = proto.AnalyticsReport(tags=proto.AnalyticsTags(src=peer("room", "bob", 1)))
    refused = await alice.call("AnalyticsReport", proto.AnalyticsReportReq(reports=[forged]))
    assert refused.status == PERMISSION_DENIED

    store = await Store.open(server.store_config)
    try:
        today = datetime.now(UTC).date()
        for _ in range(50):  # the server flushes every 0.3 s
            usage = await store.usage(project.project_id, today, today)
            log = await store.connection_log(project.project_id)
            analytics = await store.recent_analytics(project.project_id)
            if usage and usage[0].messages >= 4 and len(log) >= 3 and len(analytics) >= 2:
                break
            await asyncio.sleep(0.1)
        assert usage[0].messages == 4
        assert usage[0].active_peers == 2
        assert usage[0].peak_streams == 2
        events = sorted((row.event, row.src_peer, row.dst_peer) for row in log)
        assert events == [
            ("bye", "alice", "bob"),
            ("connect", "alice", "bob"),  # one row for two signals
            ("join", "alice", "bob"),
        ]
        metrics = sorted((e.metrics for e in analytics), key=lambda m: m["timestamp_us"])
        assert metrics[0] == {"timestamp_us": 5, "ice_connection_type": 7}
        assert metrics[1]["rtt_us"] == 2500
        assert metrics[1]["quality_score"] == 90
    finally:
        await store.close()


async def test_logs_name_peers_but_never_tokens_or_sdps(
    server: RunningServer, project: ProjectKeys, client: ClientFactory
) -> None:
    token = project.token("room", "logged")
    alice = client("room", "logged")
    alice.token = token
    secret_sdp = "v=0\r\no=- 4242 2 IN IP4 127.0.0.1\r\ns=sdp-marker-xyzzy\r\n"
    async with client("room", "bob").recv("room", "bob", 8302), alice.recv("room", "logged", 8301):
        offer = message(peer("room", "logged", 8301), peer("room", "bob"), "signal")
        offer.payload.signal.sdp.sdp = secret_sdp
        assert (await alice.send(offer)).status == OK
    await asyncio.sleep(0.2)
    log = server.log()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    opened = [r for r in records if r["msg"] == "stream opened room/logged/8301"]
    assert len(opened) == 1
    assert opened[0]["project"] == project.project_id
    assert (opened[0]["group"], opened[0]["peer"], opened[0]["conn"]) == ("room", "logged", 8301)
    assert {"ts", "level", "logger"} <= set(opened[0])
    assert "sdp-marker-xyzzy" not in log
    assert token not in log
    assert token.split(".")[2] not in log
    assert project.api_secret not in log


async def test_healthz_and_metrics(
    server: RunningServer, client: ClientFactory, http: httpx.AsyncClient
) -> None:
    health = await http.get(f"{server.url}/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["node"] == server.node_id
    await client("g", "p").call("Prepare", proto.PrepareReq())
    metrics = await http.get(f"{server.url}/metrics")
    assert metrics.status_code == 200
    assert 'pulsebeam_signaling_calls_total{code="OK",method="Prepare"}' in metrics.text
    assert "pulsebeam_signaling_open_streams" in metrics.text


async def test_the_server_mounts_console_api_and_sdk(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    home = await http.get(f"{server.url}/")
    assert home.status_code in (302, 307)
    assert home.headers["location"] == "/console/"
    assert (await http.get(f"{server.url}/api/v1/openapi.json")).status_code == 200
    sdk = await http.get(f"{server.url}/sdk/pulsebeam-peer.js")
    assert sdk.status_code == 200
    assert "javascript" in sdk.headers["content-type"]
    assert (await http.get(f"{server.url}/nope")).status_code == 404
