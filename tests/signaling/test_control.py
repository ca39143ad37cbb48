"""Revocation, bans, records, analytics, logs, health and metrics on the real server, with the
control plane driven through its real REST API and store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
from google.protobuf.message import Message as ProtoMessage

from pulsebeam import proto
from pulsebeam.control.store import Store
from tests.fixtures.server import ProjectKeys, RunningServer
from tests.signaling.conftest import ClientFactory
from tests.signaling.grpcweb_client import Client, Reply, frame, message, peer

OK, INVALID_ARGUMENT, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAUTHENTICATED = 0, 3, 7, 8, 16


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


async def _held_back(body: bytes, release: asyncio.Event) -> AsyncIterator[bytes]:
    await release.wait()
    yield body


def _call_with_late_body(
    caller: Client, method: str, request: ProtoMessage, release: asyncio.Event
) -> asyncio.Task[Reply]:
    """Start a call whose headers go at once and whose body waits for ``release``."""
    body = _held_back(frame(request.SerializeToString()), release)
    return asyncio.create_task(caller.call(method, body=body))


async def test_a_key_deleted_while_a_body_is_in_flight_is_caught(
    server: RunningServer, project: ProjectKeys, client: ClientFactory, http: httpx.AsyncClient
) -> None:
    # The server checks the token when the headers arrive, then waits for the body: the key's
    # deletion in between must still stop the call (without the re-check the stream would open).
    bob = client("room", "bob")
    async with bob.recv("room", "bob", 8401):
        alice = client("room", "alice")
        release = asyncio.Event()
        recv = _call_with_late_body(
            alice, "Recv", proto.RecvReq(src=peer("room", "alice", 8402)), release
        )
        send = _call_with_late_body(
            alice,
            "Send",
            proto.SendReq(msg=message(peer("room", "alice", 8403), peer("room", "bob"))),
            release,
        )
        await asyncio.sleep(0.3)  # both calls have passed the header check and wait for bodies
        deleted = await http.delete(
            f"{server.url}/api/v1/projects/{project.project_id}/keys/{project.api_key}",
            headers={"authorization": f"Bearer {project.api_token}"},
        )
        assert deleted.status_code == 204, deleted.text
        release.set()
        async with asyncio.timeout(5):
            replies = {"Recv": await recv, "Send": await send}
    for method, reply in replies.items():
        assert reply.status == UNAUTHENTICATED, (method, reply)
        assert f"{project.api_key} is unknown or has been deleted" in reply.message, method


async def test_a_ban_added_while_a_body_is_in_flight_is_caught(
    server: RunningServer, project: ProjectKeys, client: ClientFactory, http: httpx.AsyncClient
) -> None:
    mallory = client("room", "mallory")
    release = asyncio.Event()
    recv = _call_with_late_body(
        mallory, "Recv", proto.RecvReq(src=peer("room", "mallory", 8501)), release
    )
    send = _call_with_late_body(
        mallory,
        "Send",
        proto.SendReq(msg=message(peer("room", "mallory", 8502), peer("room", "x"))),
        release,
    )
    await asyncio.sleep(0.3)
    created = await http.post(
        f"{server.url}/api/v1/projects/{project.project_id}/bans",
        json={"peer_pattern": "mallory"},
        headers={"authorization": f"Bearer {project.api_token}"},
    )
    assert created.status_code == 201, created.text
    release.set()
    async with asyncio.timeout(5):
        replies = {"Recv": await recv, "Send": await send}
    for method, reply in replies.items():
        assert reply.status == PERMISSION_DENIED, (method, reply)
        assert "peer room/mallory is banned from this project" in reply.message, method


async def test_a_temporary_ban_ends_on_time_without_a_reload(
    server: RunningServer, project: ProjectKeys, client: ClientFactory, http: httpx.AsyncClient
) -> None:
    # The ban reaches signaling as a BanAdded event; its expiry must come along, or the ban
    # would hold until the next full reload (--key-resync, 30 s here).
    ends = datetime.now(UTC) + timedelta(seconds=1)
    created = await http.post(
        f"{server.url}/api/v1/projects/{project.project_id}/bans",
        json={"peer_pattern": "briefly", "expires_at": ends.isoformat()},
        headers={"authorization": f"Bearer {project.api_token}"},
    )
    assert created.status_code == 201, created.text
    briefly = client("room", "briefly")
    assert (await briefly.call("Prepare", proto.PrepareReq())).status == PERMISSION_DENIED
    await asyncio.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds()))
    status = PERMISSION_DENIED
    for _ in range(30):
        status = (await briefly.call("Prepare", proto.PrepareReq())).status
        if status == OK:
            break
        await asyncio.sleep(0.1)
    assert status == OK


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


async def test_analytics_reports_tell_the_connection_log_direct_or_relayed(
    server: RunningServer, project: ProjectKeys, client: ClientFactory
) -> None:
    carol = client("room", "carol")
    me = peer("room", "carol", 8301)
    reports = []
    for dst, codes in ((peer("room", "dave", 8302), [1, 3]), (peer("room", "erin", 8303), [1])):
        report = proto.AnalyticsReport(tags=proto.AnalyticsTags(src=me, dst=dst))
        for code in codes:  # the last connection type a report names is the session's path
            report.metrics.add(timestamp_us=code, ice_connection_type=code)
        reports.append(report)
    reply = await carol.call("AnalyticsReport", proto.AnalyticsReportReq(reports=reports))
    assert reply.status == OK

    store = await Store.open(server.store_config)
    try:
        for _ in range(50):  # the server flushes every 0.3 s
            log = [
                r for r in await store.connection_log(project.project_id) if r.src_peer == "carol"
            ]
            if len(log) >= 2:
                break
            await asyncio.sleep(0.1)
        rows = sorted((r.event, r.dst_peer, r.dst_conn, r.path) for r in log)
        assert rows == [("report", "dave", 8302, "relay"), ("report", "erin", 8303, "direct")]
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
    for path in ("/nope", "/api/v1/projects/x%0Ay"):  # the second matches no mount's pattern
        missing = await http.get(f"{server.url}{path}")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"


async def test_sign_in_throttle_ignores_forwarded_for(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    # 20 failures per address per window: a caller may not pick a new address per attempt.
    statuses = []
    for n in range(21):
        reply = await http.post(
            f"{server.url}/api/v1/session",
            json={"email": f"nobody{n}@example.test", "password": "wrong"},
            headers={"X-Forwarded-For": f"203.0.113.{n}", "Forwarded": f"for=198.51.100.{n}"},
        )
        statuses.append(reply.status_code)
    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429


async def test_analytics_reports_are_checked_bounded_and_rate_limited(
    server: RunningServer, project: ProjectKeys, client: ClientFactory
) -> None:
    alice = client("room", "alice")
    me = peer("room", "alice", 8601)

    def report(dst: proto.PeerInfo, count: int = 1, rtt_us: int = 1) -> proto.AnalyticsReport:
        made = proto.AnalyticsReport(tags=proto.AnalyticsTags(src=me, dst=dst))
        for i in range(count):
            made.metrics.add(timestamp_us=i, rtt_us=rtt_us)
        return made

    def request(*reports: proto.AnalyticsReport) -> proto.AnalyticsReportReq:
        return proto.AnalyticsReportReq(reports=list(reports))

    # A bad destination id refuses the whole request, the good report before it included.
    bad_ids = request(report(peer("room", "bob"), rtt_us=111), report(peer("x" * 100, "bob")))
    refused = await alice.call("AnalyticsReport", bad_ids)
    assert refused.status == INVALID_ARGUMENT
    assert "reports[1].tags.dst.group_id" in refused.message
    bad_peer = await alice.call("AnalyticsReport", request(report(peer("room", "b b"))))
    assert bad_peer.status == INVALID_ARGUMENT
    assert "reports[0].tags.dst.peer_id" in bad_peer.message
    # Over 1000 metrics in all (one per row): refused before anything is buffered.
    too_many = request(report(peer("room", "bob"), 600), report(peer("room", "carol"), 401))
    over = await alice.call("AnalyticsReport", too_many)
    assert over.status == RESOURCE_EXHAUSTED
    assert "at most 1000 reports and 1000 metrics in all (got 2 reports, 1001 metrics)" in (
        over.message
    )
    fine = await alice.call("AnalyticsReport", request(report(peer("room", "bob"), rtt_us=222)))
    assert fine.status == OK
    # Refused calls count too: alice's burst of 5 (1/s after it) runs out at once.
    limited = [
        await alice.call("AnalyticsReport", request(report(peer("room", "bob"), rtt_us=444)))
        for _ in range(4)
    ]
    assert limited[-1].status == RESOURCE_EXHAUSTED
    assert "peer room/alice sends analytics reports faster than 1/s" in limited[-1].message
    # bob's budget is his own; a report without a destination is fine.
    bob = client("room", "bob")
    no_dst = proto.AnalyticsReport(tags=proto.AnalyticsTags(src=peer("room", "bob", 8602)))
    no_dst.metrics.add(timestamp_us=1, rtt_us=333)
    assert (await bob.call("AnalyticsReport", request(no_dst))).status == OK

    store = await Store.open(server.store_config)
    try:
        for _ in range(50):  # the server flushes every 0.3 s, in the order calls came in
            analytics = await store.recent_analytics(project.project_id)
            if {e.metrics.get("rtt_us") for e in analytics} >= {222, 333}:
                break
            await asyncio.sleep(0.1)
        rows = sorted(
            (e.src_peer, e.dst_group, e.dst_peer, e.metrics["rtt_us"])
            for e in analytics
            if e.metrics["rtt_us"] != 444
        )
        assert rows == [("alice", "room", "bob", 222), ("bob", "", "", 333)]
    finally:
        await store.close()
