"""Pieces of a rolling restart on loopback: real `tahoe-auth serve` processes (the
instances of one deployment), Envoy's view of them, and steady traffic through Envoy
that counts every answer. Used by tests/e2e/test_rolling_restart.py and
bench/rolling_restart_bench.py."""

from __future__ import annotations

import collections
import contextlib
import http.client
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc
from tests import harness
from tests.e2e import stack as e2e

AUTH_CLUSTER = "tahoe_auth"  # Check over gRPC
AUTHZ_HTTP_CLUSTER = "tahoe_authz_http"  # Check over HTTP (the default)
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


class Instance:
    """One `tahoe-auth serve` process on fixed ports, so that it can stop and come back
    as the same endpoint of Envoy's cluster (what a restart in place looks like)."""

    def __init__(self, name: str, env: Mapping[str, str], tmp: Path, source: Path | None = None) -> None:
        self.name = name
        self.grpc_port, self.http_port = harness.free_port(), harness.free_port()
        self.authz_http_port = harness.free_port()
        self.env = {
            **os.environ,
            **env,
            "TAHOE_GRPC_ADDR": f"127.0.0.1:{self.grpc_port}",
            "TAHOE_HTTP_ADDR": f"127.0.0.1:{self.http_port}",
            "TAHOE_AUTHZ_HTTP_ADDR": f"127.0.0.1:{self.authz_http_port}",
        }
        if source is not None:  # another checkout's server (a benchmark's baseline)
            self.env["PYTHONPATH"] = os.pathsep.join([str(source), self.env.get("PYTHONPATH", "")])
        self.source = source
        self.tmp = tmp
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.tmp / f"{self.name}-{self.starts}.log"

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/.well-known/jwks.json"

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tahoe_auth", "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.source,  # `python -m` looks in the working directory first
                start_new_session=True,
            )
        # The HTTP side listens last: once all three ports listen the process has started
        # (a port it could not bind ends it, and _alive says so with its log). An older
        # checkout's server may not serve Check over HTTP.
        ports = (self.grpc_port,) if self.source else (self.grpc_port, self.authz_http_port, self.http_port)
        wait_for(lambda: self._alive() and all(map(_listening, ports)), 30, f"{self.name} listening")

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None:
            harness.stop_process(self.process, grace_s=20)


def _listening(port: int) -> bool:
    try:
        harness.wait_for_port(port, timeout_s=0.1)
        return True
    except TimeoutError:
        return False


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `predicate()` holds; fails naming `what` after `timeout`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not reached within {timeout:g} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - started


@dataclass(frozen=True)
class Host:
    """Envoy's view of one endpoint of the auth cluster (admin /clusters)."""

    healthy: bool
    flags: str
    rq_success: int
    rq_error: int


def auth_hosts(admin_port: int, cluster: str = AUTH_CLUSTER) -> dict[int, Host]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/clusters", timeout=5) as response:
        lines = response.read().decode().splitlines()
    raw: dict[int, dict[str, str]] = collections.defaultdict(dict)
    for line in lines:
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and parts[1].rpartition(":")[2].isdigit():  # a host
            raw[int(parts[1].rsplit(":", 1)[1])][parts[2]] = parts[3]
    return {
        port: Host(
            healthy=stats.get("health_flags") == "healthy",
            flags=stats.get("health_flags", ""),
            rq_success=int(stats.get("rq_success", 0)),
            rq_error=int(stats.get("rq_error", 0)),
        )
        for port, stats in raw.items()
    }


@dataclass
class Load:
    """Clients sending the same valid request through Envoy on keep-alive connections,
    back to back, until stopped; every answer (or failure to get one) is counted."""

    port: int
    path: str
    headers: Mapping[str, str]
    clients: int = 3
    statuses: list[int] = field(default_factory=list)  # -1: no HTTP answer at all
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for number in range(self.clients):
            thread = threading.Thread(target=self._run, name=f"load-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            try:
                conn.request("GET", self.path, headers=dict(self.headers))
                response = conn.getresponse()
                body = response.read()
                self.statuses.append(response.status)  # list.append is atomic
                if response.status != 200:
                    self.failures.append(f"{response.status} {body[:200]!r}")
            except (OSError, http.client.HTTPException) as error:
                self.statuses.append(-1)
                self.failures.append(repr(error))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.close()

    @property
    def total(self) -> int:
        return len(self.statuses)

    def errors(self, since: int = 0) -> int:
        return sum(1 for status in self.statuses[since:] if status != 200)

    def ok_since(self, mark: int) -> int:
        return sum(1 for status in self.statuses[mark:] if status == 200)

    def summary(self, since: int = 0, until: int | None = None) -> dict[int, int]:
        return dict(collections.Counter(self.statuses[since:until]))


@dataclass
class Deployment:
    instances: list[Instance]
    envoy: harness.Envoy
    token: str
    transport: str = "http"
    tenant: str = ""  # the tenant's slug, and its owner's email (password: PASSWORD)
    email: str = ""

    @property
    def cluster(self) -> str:
        """Envoy's cluster of Check's instances."""
        return AUTHZ_HTTP_CLUSTER if self.transport == "http" else AUTH_CLUSTER

    def hosts(self) -> dict[int, Host]:
        return auth_hosts(self.envoy.admin_port, self.cluster)

    def stats(self) -> dict[str, int]:
        """Envoy's counters about the auth cluster and ext_authz."""
        return harness.envoy_stats(self.envoy.admin_port, f"{self.cluster}|ext_authz")

    def host(self, instance: Instance) -> Host:
        return self.hosts()[instance.authz_http_port if self.transport == "http" else instance.grpc_port]

    def load(self, clients: int = 3) -> Load:
        return Load(self.envoy.listener_port, "/v1/jobs", {"authorization": f"Bearer {self.token}"}, clients)


@contextlib.contextmanager
def deployment(
    env: Mapping[str, str],
    tmp: Path,
    count: int = 2,
    source: Path | None = None,
    transport: str = "http",
    configure: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Iterator[Deployment]:
    """`count` instances sharing `env`'s PostgreSQL and Redis behind Envoy with the
    committed config for Check's `transport` (envoy/envoy.yaml over HTTP, envoy.grpc.yaml
    over gRPC; of `source`, a checkout, when given), in front of the demo upstream; a
    tenant whose owner's access token is valid for GET /v1/jobs."""
    root = source or ROOT
    slug = f"roll{secrets.token_hex(4)}"
    email = f"owner@{slug}.test"
    subprocess.run(
        [sys.executable, "-m", "tahoe_auth", "bootstrap", "--tenant", slug, "--owner-email", email, "--password-stdin"],
        env={**os.environ, **env, **({"PYTHONPATH": str(source)} if source else {})},
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
        cwd=source,
    )
    with contextlib.ExitStack() as stack:
        instances = [Instance(f"auth{n}", env, tmp, source) for n in range(count)]
        for instance in instances:
            stack.callback(instance.stop)
            instance.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{instances[0].grpc_port}") as channel:
                login = auth_pb2_grpc.AuthServiceStub(channel).Login(
                    auth_pb2.LoginRequest(tenant=slug, email=email, password=PASSWORD), timeout=30
                )
            for instance in instances:
                # What a deployment's first minutes do: the first Check of a new process
                # (connections, compiled statements) can take longer than Envoy waits for it.
                check(instance, login.tokens.access_token)
        except (grpc.RpcError, AssertionError) as error:
            logs = "\n".join(
                f"--- {i.name} (exit {i.process and i.process.poll()}):\n{i.log()[-3000:]}" for i in instances
            )
            raise RuntimeError(f"the deployment's instances did not answer:\n{logs}") from error
        # The demo fetches the JWKS once (every instance signs with the same keys).
        demo = stack.enter_context(e2e.demo_service(tmp, instances[-1].jwks_url))
        if transport == "http":
            config = e2e.envoy_config(
                [],
                demo.port,
                path=root / "envoy" / "envoy.yaml",
                authz_http_ports=[i.authz_http_port for i in instances],
                side_ports=[i.http_port for i in instances],
                api_ports=[i.grpc_port for i in instances],
            )
        else:
            config = e2e.envoy_config([i.grpc_port for i in instances], demo.port, path=grpc_envoy_config(root))
        if configure is not None:  # a benchmark's change to the committed config
            config = configure(config)
        envoy = stack.enter_context(harness.run_envoy(config, tmp))
        running = Deployment(instances, envoy, login.tokens.access_token, transport, slug, email)
        wait_for(lambda: all(h.healthy for h in running.hosts().values()), 30, "every instance healthy in Envoy")
        status = e2e.request(envoy.listener_port, "GET", "/v1/jobs", {"authorization": f"Bearer {running.token}"})
        assert status.status == 200, status
        yield running


def grpc_envoy_config(root: Path) -> Path:
    """The checkout's committed config with Check over gRPC (envoy.yaml in older
    checkouts, from before Check over HTTP became the default)."""
    path = root / "envoy" / "envoy.grpc.yaml"
    return path if path.exists() else root / "envoy" / "envoy.yaml"


def check(instance: Instance, token: str) -> float:
    """One allowed Check sent straight to `instance` (no Envoy): its duration in seconds."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "GET", "/v1/jobs", "rolling.test"
    http.headers["authorization"] = f"Bearer {token}"
    request.attributes.context_extensions.update({"upstream": "transcription", "route": "jobs.read"})
    started = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{instance.grpc_port}") as channel:
        response = external_auth_pb2_grpc.AuthorizationStub(channel).Check(request, timeout=30)
    assert response.status.code == 0, response
    return time.monotonic() - started
