"""Health, readiness, reflection and shutdown of a real server process or instance."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import text

from tahoe_auth.http_side import SideServer
from tahoe_auth.server import create_server
from tahoe_auth.store.db import SYSTEM, Database
from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc
from tests import harness
from tests.servers import OwnPostgres
from tests.support import OWNER_PASSWORD, RunningServer, probed_server, running_server


def http_get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def health_status(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def listed_services(channel: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    return {s.name for r in responses for s in r.list_services_response.service}


def test_reflection_lists_services(embedded_server: RunningServer) -> None:
    expected = {
        "tahoe_auth.v1.AuthService",
        "tahoe_auth.v1.TenantService",
        "tahoe_auth.v1.UsageService",
        "envoy.service.auth.v3.Authorization",
        "envoy.service.ratelimit.v3.RateLimitService",
        "grpc.health.v1.Health",
    }
    assert expected <= listed_services(embedded_server.channel)


def test_reflection_can_be_turned_off(sqlite_url: str, tmp_path: Path) -> None:
    env = {"TAHOE_DATABASE_URL": sqlite_url, "TAHOE_VAR_DIR": str(tmp_path), "TAHOE_GRPC_REFLECTION": "false"}
    with running_server(env) as running:
        with pytest.raises(grpc.RpcError) as info:
            listed_services(running.channel)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_health_follows_the_database(own_postgres: OwnPostgres, tmp_path: Path) -> None:
    with probed_server(own_postgres.url, tmp_path) as probed:
        health, channel = probed.health, probed.channel
        assert health.check_once()
        assert health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        assert health_status(channel, "tahoe_auth.v1.AuthService") == health_pb2.HealthCheckResponse.SERVING
        assert http_get(probed.ready_url)[0] == 200

        own_postgres.stop()
        assert not health.check_once()
        assert health_status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert http_get(probed.ready_url) == (503, {"status": "database unreachable"})
        # A call that needs the database fails cleanly, not with INTERNAL.
        with pytest.raises(grpc.RpcError) as call:
            auth_pb2_grpc.AuthServiceStub(channel).Login(
                auth_pb2.LoginRequest(tenant="acme", email="a@b.test", password="whatever1"), timeout=30
            )
        assert call.value.code() == grpc.StatusCode.UNAVAILABLE

        own_postgres.start()
        assert health.check_once()
        assert health_status(channel) == health_pb2.HealthCheckResponse.SERVING


def test_jwks_and_liveness_on_the_side_port(embedded_server: RunningServer) -> None:
    app = embedded_server.app
    _, _, health = create_server(app, "127.0.0.1:0")
    health.check_once()
    side = SideServer(app, health, "127.0.0.1:0")
    side.start()
    try:
        status, jwks = http_get(f"http://{side.address}/.well-known/jwks.json")
        assert status == 200
        assert [k["kid"] for k in jwks["keys"]] == [app.keys.ring().active_kid]  # type: ignore[attr-defined]
        assert http_get(f"http://{side.address}/healthz") == (200, {"status": "ok"})
        assert http_get(f"http://{side.address}/nope")[0] == 404
    finally:
        side.stop()


def _wait_for(predicate, timeout: float = 15) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def _children(pid: int) -> list[int]:
    """The (Linux) child processes of `pid`, whichever of its threads started them."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            children += [int(child) for child in (task / "children").read_text().split()]
    return children


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def on_port_zero(tmp_path: Path) -> dict[str, str]:
    """`serve` on the embedded default, every address on port 0: its log says which."""
    return {**os.environ, "TAHOE_VAR_DIR": str(tmp_path), **dict.fromkeys(harness.LISTEN_ADDRESSES, "127.0.0.1:0")}


@contextlib.contextmanager
def logged_serve(env: dict[str, str], log_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, str]]:
    """`serve` writing to `log_path`, once listening: (process, gRPC port, side HTTP
    address); killed afterwards if the test has not stopped it."""
    with log_path.open("w") as log_file:
        process = subprocess.Popen([*harness.TAHOE_CLI, "serve"], env=env, stderr=log_file, stdout=log_file)
    try:
        _wait_for(lambda: "gRPC listening on" in log_path.read_text())
        started = log_path.read_text().split("gRPC listening on 127.0.0.1:")[1]
        yield process, int(started.split(",")[0]), started.split("HTTP on ")[1].split()[0]
    finally:
        if process.poll() is None:
            process.kill()


def test_sigterm_drains_in_flight_calls_then_exits(tmp_path: Path) -> None:
    env = on_port_zero(tmp_path) | {
        # Slow hashing makes a login last long enough to be in flight at SIGTERM.
        "TAHOE_ARGON2_TIME_COST": "60",
        # The grace for in-flight calls is what this test is about, not the drain before it.
        "TAHOE_DRAIN_SECONDS": "0",
    }
    harness.bootstrap(env, "acme", "o@acme.test", OWNER_PASSWORD)
    log_path = tmp_path / "server.log"
    with logged_serve(env, log_path) as (process, port, _):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        result: dict[str, object] = {}

        def login() -> None:
            request = auth_pb2.LoginRequest(tenant="acme", email="o@acme.test", password=OWNER_PASSWORD)
            result["response"] = stub.Login(request, timeout=30)

        workers = _children(process.pid)  # the argon2 workers, started before serving
        assert workers
        caller = threading.Thread(target=login)
        caller.start()
        time.sleep(0.15)
        process.send_signal(signal.SIGTERM)
        caller.join(30)
        assert process.wait(30) == 0
        # The workers stopped with the server (multiprocessing's resource tracker, a
        # child too, follows once its pipe from the server closes): none is orphaned.
        _wait_for(lambda: not [pid for pid in workers if _alive(pid)], timeout=5)
        response = result["response"]
        assert isinstance(response, auth_pb2.LoginResponse) and response.tokens.access_token
        log = log_path.read_text()
        assert "received SIGTERM" in log and log.rstrip().endswith("stopped")
        channel.close()


def test_sigterm_drains_not_serving_but_answering_until_a_second_signal(tmp_path: Path) -> None:
    env = on_port_zero(tmp_path) | {"TAHOE_DRAIN_SECONDS": "600"}  # only the second signal can end it within the test
    subprocess.run([*harness.TAHOE_CLI, "migrate"], env=env, check=True, capture_output=True)
    log_path = tmp_path / "server.log"
    with logged_serve(env, log_path) as (process, port, http_addr):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        service = "envoy.service.auth.v3.Authorization"
        assert health_status(channel, service) == health_pb2.HealthCheckResponse.SERVING
        assert http_get(f"http://{http_addr}/readyz")[0] == 200
        process.send_signal(signal.SIGTERM)
        _wait_for(lambda: health_status(channel, service) == health_pb2.HealthCheckResponse.NOT_SERVING)
        assert http_get(f"http://{http_addr}/readyz") == (503, {"status": "draining"})
        # Still answering every call, and the process is still there.
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ValidateToken(auth_pb2.ValidateTokenRequest(token="not-a-token"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert http_get(f"http://{http_addr}/healthz")[0] == 200
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        log = log_path.read_text()
        assert "drain cut short" in log and log.rstrip().endswith("stopped")
        channel.close()


def test_a_connection_still_in_use_at_shutdown_is_closed_when_handed_back(clean_pg: str) -> None:
    database = Database(clean_pg)
    with database.session(SYSTEM) as session:  # work a stopping server could not wait for
        session.execute(text("SELECT 1"))
        driver_connection = session.connection().connection.driver_connection
        database.dispose()
        assert not driver_connection.closed
    assert driver_connection.closed
