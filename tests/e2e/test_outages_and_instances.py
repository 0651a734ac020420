"""Failure and scale through a real Envoy: a dead auth server lets nothing through,
and a revocation made on one auth instance is enforced by another within a second."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tahoe_auth.authz.check import DECISION_TTL
from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc
from tests import harness
from tests.e2e import stack as e2e
from tests.scenarios import api_key, revoke_api_key, suspend
from tests.support import OWNER_PASSWORD, RunningServer, bearer, running_server, wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@contextlib.contextmanager
def auth_process(env: dict[str, str], tmp: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int, int]]:
    """`serve` in its own process: (process, gRPC port, side port, HTTP ext_authz port)."""
    env = {**env, **harness.listen_env()}
    with harness.serve(env, tmp / "auth.log") as proc:
        yield proc, *harness.listen_ports(env)


def child_pids(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_dead_auth_server_lets_nothing_through(module_env: dict[str, str], transport: str, tmp_path: Path) -> None:
    slug = f"kill{int(time.time() * 1000) % 10**9}"
    harness.bootstrap(module_env, slug, f"o@{slug}.test", OWNER_PASSWORD, migrate=False)
    with contextlib.ExitStack() as stack:
        proc, grpc_port, http_port, authz_port = stack.enter_context(auth_process(module_env, tmp_path))
        http_addr = f"127.0.0.1:{http_port}"
        channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
        login = auth_pb2_grpc.AuthServiceStub(channel).Login(
            auth_pb2.LoginRequest(tenant=slug, email=f"o@{slug}.test", password=OWNER_PASSWORD)
        )
        token = login.tokens.access_token
        demo = stack.enter_context(e2e.demo_service(tmp_path, f"http://{http_addr}/.well-known/jwks.json"))
        config = e2e.envoy_config(
            [grpc_port],
            demo.port,
            path=e2e.TRANSPORTS[transport],
            authz_http_ports=[authz_port],
            side_ports=[http_port],
        )
        envoy = stack.enter_context(harness.run_envoy(config, tmp_path))
        headers = {"authorization": f"Bearer {token}"}
        assert e2e.request(envoy.listener_port, "GET", "/v1/jobs", headers).status == 200
        children = child_pids(proc.pid)
        assert children, "serve has its password-hashing workers"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # Its workers do not outlive it (a SIGKILL gives it no chance to stop them).
        wait_until(lambda: not [pid for pid in children if Path(f"/proc/{pid}").exists()], limit=10)
        mark = demo.journal.mark()
        statuses = {e2e.request(envoy.listener_port, "GET", "/v1/jobs", headers).status for _ in range(20)}
        statuses |= {e2e.request(envoy.listener_port, "GET", "/v1/jobs").status for _ in range(5)}
        assert statuses == {503}
        assert demo.journal.since(mark) == []


@pytest.fixture
def two_instances(
    module_env: dict[str, str], transport: str, tmp_path: Path
) -> Iterator[tuple[RunningServer, e2e.Stack]]:
    """Instance A serves the gRPC API; Envoy asks only instance B."""
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(running_server(module_env))
        b = stack.enter_context(running_server(module_env))
        for instance in (a, b):
            assert instance.app.store.subscribed.wait(5)  # type: ignore[attr-defined]
        side = stack.enter_context(e2e.side_server(b))
        demo = stack.enter_context(e2e.demo_service(tmp_path, f"http://{side}/.well-known/jwks.json"))
        config = e2e.envoy_config(
            [e2e.port_of(b.address)],
            demo.port,
            path=e2e.TRANSPORTS[transport],
            authz_http_ports=[b.authz_http_port],
            side_ports=[e2e.port_of(side)],
        )
        envoy = stack.enter_context(harness.run_envoy(config, tmp_path))
        yield a, e2e.Stack(b, side, demo, envoy)


def test_a_revocation_on_one_instance_is_enforced_by_the_other_within_a_second(
    two_instances: tuple[RunningServer, e2e.Stack],
) -> None:
    a, through_b = two_instances
    tenant = a.create_tenant()
    tokens = a.login(tenant).tokens
    # B has cached the decision, and (once that is past its short life) the verified
    # token, its session and its subject: the revocation must reach those caches.
    for pause in (0.0, 0.0, DECISION_TTL + 0.1, 0.0):
        time.sleep(pause)
        assert through_b.call("GET", "/v1/jobs", token=tokens.access_token).status == 200
    assert through_b.auth.app.authenticator.tokens.hits >= 1
    a.auth.RevokeSession(
        auth_pb2.RevokeSessionRequest(session_id=tokens.session_id), metadata=bearer(tokens.access_token)
    )
    elapsed = wait_until(lambda: through_b.call("GET", "/v1/jobs", token=tokens.access_token).status == 401, 1.0)
    assert elapsed < 1.0
    mark = through_b.journal.mark()
    assert through_b.call("GET", "/v1/jobs", token=tokens.access_token).status == 401
    assert through_b.journal.since(mark) == []


def test_a_suspension_on_one_instance_is_enforced_by_the_other_within_a_second(
    two_instances: tuple[RunningServer, e2e.Stack],
) -> None:
    a, through_b = two_instances
    tenant = a.create_tenant()
    token = a.login(tenant).tokens.access_token
    assert through_b.call("GET", "/v1/jobs", token=token).status == 200
    suspend(a, tenant)
    assert wait_until(lambda: through_b.call("GET", "/v1/jobs", token=token).status == 403, 1.0) < 1.0


def test_an_api_key_revoked_on_one_instance_is_refused_by_the_other_within_a_second(
    two_instances: tuple[RunningServer, e2e.Stack],
) -> None:
    a, through_b = two_instances
    tenant = a.create_tenant()
    key_id, secret = api_key(a, tenant, ["transcription:read"])
    for pause in (0.0, DECISION_TTL + 0.1, 0.0):
        time.sleep(pause)
        assert through_b.call("GET", "/v1/jobs", token=secret).status == 200
    revoke_api_key(a, tenant, key_id)
    assert wait_until(lambda: through_b.call("GET", "/v1/jobs", token=secret).status == 401, 1.0) < 1.0
