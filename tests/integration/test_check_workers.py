"""`serve` with TAHOE_AUTHZ_WORKERS=2: a second process answers HTTP ext_authz Checks
on the same port, enforces a revocation as fast as the parent, is started again when
it dies, and stops with the parent (SIGTERM, or SIGKILL of the parent). Without Redis
more than one is refused at start."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc
from tests import harness
from tests.support import OWNER_PASSWORD, bearer, wait_until

CLI = [sys.executable, "-m", "tahoe_auth"]
pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
SERVING = re.compile(r"Check worker (\d+) \(pid (\d+)\) serving")
# Workers import and build an App of their own: on a busy 2-core machine that takes a while.
WORKER_START = 60.0
SAMPLE = re.compile(r"^tahoe_check(?:_worker)?_decisions_total\{(.*)\} ([0-9.e+]+)$", re.MULTILINE)


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    log: Path
    grpc_port: int
    side_port: int
    authz_port: int

    def workers(self) -> dict[int, int]:
        """Serving workers by slot: the latest pid each logged."""
        return {int(slot): int(pid) for slot, pid in SERVING.findall(self.log.read_text(errors="replace"))}

    def decisions(self) -> dict[tuple[str, str], float]:
        """Checks answered so far: by ("parent" or the worker slot, outcome)."""
        with contextlib.closing(http.client.HTTPConnection("127.0.0.1", self.side_port, timeout=5)) as connection:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
        counts: dict[tuple[str, str], float] = {}
        for labels, value in SAMPLE.findall(text):
            fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            key = (fields.get("worker", "parent"), fields["outcome"])
            counts[key] = counts.get(key, 0.0) + float(value)
        return counts


def check(authz_port: int, credential: str) -> int:
    """One Check on a new connection (SO_REUSEPORT spreads connections, not requests)."""
    connection = http.client.HTTPConnection("127.0.0.1", authz_port, timeout=10)
    try:
        headers = {"x-tahoe-route-upstream": "transcription", "x-tahoe-route-permission": "transcription:read"}
        connection.request("GET", "/v1/jobs", headers={**headers, "authorization": f"Bearer {credential}"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def env(pg_env: dict[str, str]) -> dict[str, str]:
    # Every Check comes from 127.0.0.1: the per-address default (100/min) is not under test.
    limits = {"per_address": {"limit": 100_000, "period": 60}, "per_tenant": {"limit": 100_000, "period": 60}}
    return {**pg_env, "TAHOE_RATE_LIMITS": json.dumps(limits), "TAHOE_AUTHZ_WORKERS": "2"}


@contextlib.contextmanager
def serve(env: dict[str, str], tmp: Path) -> Iterator[Serve]:
    env = env | harness.listen_env()
    log = tmp / "serve.log"
    with harness.serve(env, log, ready_timeout_s=WORKER_START) as proc:
        running = Serve(proc, log, *harness.listen_ports(env))
        wait_until(lambda: 1 in running.workers(), limit=WORKER_START, step=0.1)
        yield running


def owner_api_key(env: dict[str, str], running: Serve) -> tuple[str, str, str]:
    """A new tenant's owner: (API key id, its secret, the owner's access token)."""
    slug = f"wk{int(time.time() * 1000) % 10**9}"
    harness.bootstrap(env, slug, f"o@{slug}.test", OWNER_PASSWORD, migrate=False)
    with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        login = auth.Login(auth_pb2.LoginRequest(tenant=slug, email=f"o@{slug}.test", password=OWNER_PASSWORD))
        token = login.tokens.access_token
        created = auth.CreateApiKey(
            auth_pb2.CreateApiKeyRequest(name="workers", scopes=["transcription:read"]), metadata=bearer(token)
        )
    return created.api_key.id, created.secret, token


def revoke(running: Serve, key_id: str, token: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        auth.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(api_key_id=key_id), metadata=bearer(token))


def answered_by_both(running: Serve, before: dict[tuple[str, str], float], outcome: str) -> bool:
    after = running.decisions()
    return all(after.get((who, outcome), 0.0) > before.get((who, outcome), 0.0) for who in ("parent", "1"))


def test_two_processes_answer_enforce_revocations_restart_and_stop(env: dict[str, str], tmp_path: Path) -> None:
    with serve(env, tmp_path) as running:
        key_id, secret, owner = owner_api_key(env, running)

        # (a) Both processes answer: the parent's /metrics counts its own and the worker's.
        before = running.decisions()
        statuses: list[int] = []

        def both_allowed() -> bool:
            statuses.extend(check(running.authz_port, secret) for _ in range(10))
            return answered_by_both(running, before, "allowed")

        wait_until(both_allowed, limit=15, step=0.2)
        assert set(statuses) == {200}

        # (b) A revocation through gRPC holds in every process within a second (both
        # have the allowed decision cached).
        revoke(running, key_id, owner)
        revoked_at = time.monotonic()
        before = running.decisions()
        time.sleep(max(0.0, revoked_at + 1.0 - time.monotonic()))
        late = [check(running.authz_port, secret) for _ in range(40)]
        assert set(late) == {401}, late
        # Both processes answered some of those 401s (the worker reports once a second).
        wait_until(lambda: answered_by_both(running, before, "denied"), limit=5, step=0.1)

        # (c) A killed worker is started again (and logged), and answers.
        first = running.workers()[1]
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: running.workers()[1] != first, limit=WORKER_START, step=0.1)
        assert re.search(rf"Check worker 1 \(pid {first}\) exited with code -9", running.log.read_text())
        second = running.workers()[1]
        assert alive(second)
        assert not alive(first)

        # (d) SIGTERM stops the parent and its workers.
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(30) == 0
        wait_until(lambda: not alive(second), limit=10, step=0.05)
        assert "Check worker 1 stopped" in running.log.read_text()


def test_workers_stop_when_the_parent_is_killed(env: dict[str, str], tmp_path: Path) -> None:
    with serve(env, tmp_path) as running:
        worker = running.workers()[1]
        running.proc.send_signal(signal.SIGKILL)
        running.proc.wait(10)
        try:
            wait_until(lambda: not alive(worker), limit=10, step=0.05)
        finally:
            # The argon2 pool's processes outlive a SIGKILLed parent: not under test.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.proc.pid, signal.SIGKILL)


def test_more_than_one_worker_needs_redis(env: dict[str, str]) -> None:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TAHOE_")}
    embedded = {k: v for k, v in env.items() if k != "TAHOE_REDIS_URL"}
    done = subprocess.run(
        [*CLI, "serve"], env={**inherited, **embedded}, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "TAHOE_AUTHZ_WORKERS=2 needs TAHOE_REDIS_URL" in lines[0]
