"""Starting and stopping the real server: graceful shutdown with open streams, the refusal of
plain HTTP on public addresses, bad settings, and HTTP/2 under TLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pulsebeam import proto
from pulsebeam.cli import main
from pulsebeam.turn.client import StunError, TurnClient
from tests.fixtures.server import acreate_project, start_server
from tests.fixtures.tls import write_self_signed
from tests.signaling.grpcweb_client import Client, frame, message, peer

OK, UNAVAILABLE = 0, 14


async def test_shutdown_ends_open_streams_with_unavailable(tmp_path: Path) -> None:
    with start_server(tmp_path) as server:
        project = await acreate_project(server)
        async with httpx.AsyncClient(timeout=10) as http:
            alice = Client(http, server.grpc, project.token("g", "alice"))
            async with alice.recv("g", "alice", 9001) as stream:
                loop = asyncio.get_running_loop()
                started = loop.time()
                stopping = loop.run_in_executor(None, server.stop)
                ended = await stream.end(within=5)
                assert ended.status == UNAVAILABLE
                assert "shutting down" in ended.message
                assert await stopping == 0
                assert loop.time() - started < 3


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--http", "0.0.0.0:0"], "refusing plain HTTP on non-loopback address"),
        (["--http", "nonsense"], "is not HOST:PORT"),
        (["--tls-cert", "/nonexistent.pem"], "go together"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem"], "cannot use"),
        (["--ping-interval", "0"], "--ping-interval must be positive"),
        (["--send-rate", "fast"], "--send-rate"),
        (["--stream-max-age", "1000"], "under 900"),
        (["--log-level", "LOUD"], "--log-level"),
    ],
)
def test_bad_settings_exit_2_with_a_clear_message(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--data-dir", str(tmp_path), *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "pulsebeam.db").exists()  # nothing was started


def test_unreachable_redis_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pulsebeam.cli import main; main()",
            "serve",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path),
            "--no-turn",
            "--redis-url",
            "redis://127.0.0.1:1/0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "cannot reach Redis at --redis-url" in result.stderr


async def test_tls_serves_http2_with_streams_multiplexed_on_one_connection(tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path)
    tls = ("--tls-cert", str(cert), "--tls-key", str(key), "--shutdown-timeout", "1")
    with start_server(tmp_path / "data", *tls) as server:
        assert server.url.startswith("https://127.0.0.1:")
        project = await acreate_project(server)
        context = ssl.create_default_context(cafile=str(cert))
        limits = httpx.Limits(max_connections=1)  # one TCP connection, like a browser origin
        async with httpx.AsyncClient(http2=True, verify=context, limits=limits, timeout=10) as h2:
            bob = Client(h2, server.grpc, project.token("g", "bob"))
            alice = Client(h2, server.grpc, project.token("g", "alice"))
            prepare = await h2.post(
                f"{server.grpc}/pulsebeam.v1.Signaling/Prepare",
                content=b"\x00\x00\x00\x00\x00",
                headers=alice.headers(),
            )
            assert prepare.http_version == "HTTP/2"
            assert prepare.headers["content-type"] == "application/grpc-web+proto"
            # An open Recv stream and a Send at once on one TCP connection: multiplexed (over
            # HTTP/1.1 the open stream would hold the only connection). httpcore's HTTP/2 client
            # serialises reads across streams, so the test keeps to two streams at a time.
            async with bob.recv("g", "bob", 9101) as bob_stream:
                reply = await alice.send(message(peer("g", "alice", 9200), peer("g", "bob"), "ack"))
                assert reply.status == OK
                assert (await bob_stream.next()).msg.payload.HasField("ack")
                assert bob_stream.response.http_version == "HTTP/2"


async def test_prepare_hands_out_turn_credentials_bound_to_the_token(tmp_path: Path) -> None:
    with start_server(tmp_path, "--turn-enabled", "--turn-allow-loopback") as server:
        assert server.turn is not None
        host, port = server.turn.split(":")
        project = await acreate_project(server)
        token = project.token("g", "alice", ttl=600)
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await Client(http, server.grpc, token).call("Prepare", proto.PrepareReq())
        assert reply.status == OK
        response = reply.parsed(proto.PrepareResp)
        assert isinstance(response, proto.PrepareResp)
        stun, turn = response.ice_servers
        assert list(stun.urls) == [f"stun:{host}:{port}"]
        assert not stun.HasField("username")
        assert f"turn:{host}:{port}?transport=udp" in turn.urls
        expires, kid, project_id = turn.username.split(":")
        assert (kid, project_id) == (project.api_key, project.project_id)
        assert int(expires) <= int(time.time()) + 600
        # The credential works, and deleting the key ends its allocation at once.
        client = await TurnClient.connect("udp", (host, int(port)))
        try:
            await client.allocate(turn.username, turn.credential)
            async with httpx.AsyncClient(timeout=10) as http:
                deleted = await http.delete(
                    f"{server.url}/api/v1/projects/{project.project_id}/keys/{kid}",
                    headers={"authorization": f"Bearer {project.api_token}"},
                )
            assert deleted.status_code == 204
            with pytest.raises(StunError):
                await client.refresh(600)
        finally:
            client.close()
        again = await TurnClient.connect("udp", (host, int(port)))
        try:
            with pytest.raises(StunError) as refused:
                await again.allocate(turn.username, turn.credential)
            assert refused.value.code == 401
        finally:
            again.close()
    secret_file = tmp_path / "turn-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600


def test_settings_come_from_toml_and_environment_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "pulsebeam.toml"
    config.write_text('[signaling]\nsend_rate = 0\n[http]\nlisten = "127.0.0.1:0"\n')
    with pytest.raises(SystemExit):
        main(["serve", "--data-dir", str(tmp_path), "--config", str(config)])
    assert "--send-rate must be positive" in capsys.readouterr().err
    monkeypatch.setenv("PULSEBEAM_STREAM_QUEUE", "0")
    with pytest.raises(SystemExit):
        main(["serve", "--data-dir", str(tmp_path)])
    assert "--stream-queue must be positive" in capsys.readouterr().err
    config.write_text("[signaling]\nno_such_setting = 1\n")
    with pytest.raises(SystemExit):
        main(["serve", "--data-dir", str(tmp_path), "--config", str(config)])
    assert "unknown key(s) ['no_such_setting']" in capsys.readouterr().err


@pytest.mark.slow
async def test_a_receiver_that_stops_reading_is_cut_off(tmp_path: Path) -> None:
    limits = ("--stream-queue", "8", "--send-rate", "100000", "--send-burst", "100000")
    with start_server(tmp_path, *limits) as server:
        project = await acreate_project(server)
        host, port = server.address
        # A receiver that opens its stream, reads the response headers, then never reads again.
        reader, writer = await asyncio.open_connection(host, port)
        request = frame(proto.RecvReq(src=peer("g", "slow", 9301)).SerializeToString())
        writer.write(
            b"POST /grpc/pulsebeam.v1.Signaling/Recv HTTP/1.1\r\nhost: x\r\n"
            b"content-type: application/grpc-web+proto\r\n"
            + f"authorization: Bearer {project.token('g', 'slow')}\r\n".encode()
            + f"content-length: {len(request)}\r\n\r\n".encode()
            + request
        )
        await reader.readuntil(b"\r\n\r\n")
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                sender = Client(http, server.grpc, project.token("g", "fast"))
                big = message(peer("g", "fast", 9302), peer("g", "slow", 9301), "signal")
                big.payload.signal.sdp.sdp = "x" * 9000
                statuses = []
                for _ in range(3000):  # ~27 MB: far more than socket buffers hold
                    statuses.append((await sender.send(big)).status)
                    if statuses[-1] != OK:
                        break
            # The stream was ended once its queue overflowed: nothing more is accepted for it.
            assert statuses[-1] == 5, statuses[-5:]
            assert "overflowed and was closed" in server.log()
        finally:
            writer.close()
