"""The real thing on loopback ports: Tahoe Auth instance(s), a committed Envoy config
(envoy/envoy.yaml, Check over HTTP, or envoy/envoy.grpc.yaml, with their ports
rewritten) and the demo transcription service."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tahoe_auth.http_side import SideServer
from tahoe_auth.v1 import tenant_pb2
from tests import harness
from tests.support import RunningServer, bearer, running_server

ROOT = Path(__file__).resolve().parents[2]
ENVOY_DIR = ROOT / "envoy"
ENVOY_YAML = ENVOY_DIR / "envoy.yaml"  # the default: Check over Envoy's HTTP ext_authz
ENVOY_GRPC_YAML = ENVOY_DIR / "envoy.grpc.yaml"
# Check's transport -> the committed config that speaks it (the conformance suite runs both).
TRANSPORTS = {"grpc": ENVOY_GRPC_YAML, "http": ENVOY_YAML}
AUTHZ_HTTP_CLUSTER = "tahoe_authz_http"
DEMO_DIR = ROOT / "examples" / "transcription"
AUTH_CLUSTER = "tahoe_auth"
API_CLUSTER = "tahoe_api"  # the JSON API's transcoded calls, to the gRPC port
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
UPSTREAM_CLUSTER = "transcription"
CONSOLE_CLUSTER = "tahoe_console"  # the console's files, from a side port


def load_envoy_config(path: Path = ENVOY_YAML) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return config


def _set_endpoints(cluster: dict[str, Any], ports: Sequence[int], health_ports: Sequence[int] = ()) -> None:
    cluster["type"] = "STATIC"
    endpoints: list[dict[str, Any]] = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}} for p in ports
    ]
    for endpoint, health_port in zip(endpoints, health_ports, strict=False):
        endpoint["endpoint"]["health_check_config"] = {"port_value": health_port}
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": endpoints}]


def _absolute_descriptors(config: dict[str, Any]) -> None:
    """The transcoder's descriptor set and the OpenAPI document are named relative to
    the checkout (Envoy runs there in `make run` and compose); tests run Envoy elsewhere."""

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("proto_descriptor") == "envoy/tahoe_auth.pb":
                node["proto_descriptor"] = str(ENVOY_DIR / "tahoe_auth.pb")
            if node.get("filename") == "envoy/openapi.json":
                node["filename"] = str(ENVOY_DIR / "openapi.json")
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(config)


def envoy_config(
    auth_ports: Sequence[int],
    upstream_port: int,
    *,
    health_checks: bool = True,
    path: Path = ENVOY_YAML,
    authz_http_ports: Sequence[int] = (),
    side_ports: Sequence[int] = (),
    api_ports: Sequence[int] = (),
    console_ports: Sequence[int] = (),
) -> dict[str, Any]:
    """The committed config, listening and pointing at free loopback ports: the auth
    instances' gRPC ports, or, for the HTTP transport's cluster, their
    `authz_http_ports` health-checked on their `side_ports`. The JSON API goes to
    `api_ports` (default: `auth_ports`), their gRPC ports; the console to
    `console_ports` (default: `side_ports`), side ports."""
    config = load_envoy_config(path)
    config["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=harness.free_port())
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address="127.0.0.1", port_value=harness.free_port())
    _absolute_descriptors(config)
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == API_CLUSTER:
            _set_endpoints(cluster, api_ports or auth_ports)
        elif cluster["name"] == AUTH_CLUSTER:
            _set_endpoints(cluster, auth_ports)
            if not health_checks:
                cluster.pop("health_checks", None)
        elif cluster["name"] == AUTHZ_HTTP_CLUSTER:
            _set_endpoints(cluster, authz_http_ports, side_ports)
            if not health_checks:
                cluster.pop("health_checks", None)
        elif cluster["name"] == UPSTREAM_CLUSTER:
            _set_endpoints(cluster, [upstream_port])
        elif cluster["name"] == CONSOLE_CLUSTER:
            _set_endpoints(cluster, console_ports or side_ports)
    return config


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


def request(port: int, method: str, path: str, headers: Mapping[str, str] | None = None, body: Any = None) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        all_headers = {"content-type": "application/json", **(headers or {})} if payload else dict(headers or {})
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"raw": raw.decode(errors="replace")}
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, parsed)
    finally:
        conn.close()


ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


def error_reason(body: dict[str, Any]) -> str:
    """The ErrorInfo reason of a JSON API error body (a google.rpc.Status as JSON)."""
    (info,) = [d for d in body.get("details", []) if d["@type"] == ERROR_INFO]
    reason: str = info["reason"]
    return reason


@dataclass
class Stream:
    """A server stream over the JSON API: newline-delimited JSON, read line by line."""

    status: int
    headers: dict[str, str]
    response: http.client.HTTPResponse

    def next_message(self) -> dict[str, Any]:
        """The next line (the socket's timeout bounds the wait)."""
        line = self.response.readline()
        assert line.strip(), "the stream ended"
        message: dict[str, Any] = json.loads(line)
        return message

    def error_body(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.response.read())
        return body


@contextlib.contextmanager
def open_stream(port: int, path: str, token: str | None = None, timeout: float = 5.0) -> Iterator[Stream]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        yield Stream(response.status, {k.lower(): v for k, v in response.getheaders()}, response)
    finally:
        conn.close()


class Journal:
    """What the demo upstream received (its TRANSCRIPTION_JOURNAL file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def mark(self) -> int:
        return len(self.entries())

    def since(self, mark: int) -> list[dict[str, Any]]:
        return self.entries()[mark:]


@dataclass
class Demo:
    port: int
    journal: Journal


@contextlib.contextmanager
def demo_service(tmp: Path, jwks_url: str, extra_env: Mapping[str, str] | None = None) -> Iterator[Demo]:
    port = harness.free_port()
    env = {
        "PYTHONPATH": os.pathsep.join([str(DEMO_DIR), str(ROOT)]),
        "TRANSCRIPTION_ADDR": f"127.0.0.1:{port}",
        "TRANSCRIPTION_DATABASE_URL": f"sqlite:///{tmp / 'transcription.db'}",
        "TAHOE_JWKS_URL": jwks_url,
        "TRANSCRIPTION_JOURNAL": str(tmp / "journal.jsonl"),
        **(extra_env or {}),
    }
    journal = Journal(tmp / "journal.jsonl")
    argv = [sys.executable, "-m", "transcription_demo"]
    with harness.managed_process(argv, tmp / "demo.log", ready_port=port, env=env):
        yield Demo(port, journal)


@dataclass
class Stack:
    auth: RunningServer
    side_address: str
    demo: Demo
    envoy: harness.Envoy

    @property
    def port(self) -> int:
        return self.envoy.listener_port

    @property
    def journal(self) -> Journal:
        return self.demo.journal

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["authorization"] = f"Bearer {token}"
        return request(self.port, method, path, all_headers, body)


@contextlib.contextmanager
def side_server(auth: RunningServer) -> Iterator[str]:
    """The auth instance's HTTP side port (JWKS for the demo's identity verifier)."""
    from tahoe_auth.health import HealthReporter

    side = SideServer(auth.app, HealthReporter(auth.app, _NoHealth()), "127.0.0.1:0")
    side.start()
    try:
        yield side.address
    finally:
        side.stop()


class _NoHealth:
    def set(self, service: str, status: int) -> None:
        return None


@contextlib.contextmanager
def stack(
    env: Mapping[str, str],
    tmp: Path,
    configure: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    transport: str = "http",
) -> Iterator[Stack]:
    """The whole stack, Check over `transport` (TRANSPORTS); `configure` may rewrite
    the Envoy config (ports already set)."""
    with contextlib.ExitStack() as stack:
        auth = stack.enter_context(running_server(env))
        side = stack.enter_context(side_server(auth))
        demo_env = usage_credentials(auth)
        demo = stack.enter_context(demo_service(tmp, f"http://{side}/.well-known/jwks.json", demo_env))
        config = envoy_config(
            [port_of(auth.address)],
            demo.port,
            path=TRANSPORTS[transport],
            authz_http_ports=[auth.authz_http_port],
            side_ports=[port_of(side)],
            console_ports=[port_of(side)],
        )
        if configure is not None:
            config = configure(config)
        envoy = stack.enter_context(harness.run_envoy(config, tmp))
        yield Stack(auth, side, demo, envoy)


def usage_credentials(auth: RunningServer) -> dict[str, str]:
    """The demo reports usage as a platform-wide service account with `usage:write`,
    registered by a platform administrator (as `tahoe-auth service-account create` does)."""
    created = auth.tenants.CreateServiceAccount(
        tenant_pb2.CreateServiceAccountRequest(
            service_account=tenant_pb2.ServiceAccount(name="transcription", permissions=["usage:write"])
        ),
        metadata=bearer(auth.platform_key),
    )
    return {
        "TAHOE_GRPC_TARGET": auth.address,
        "TRANSCRIPTION_CLIENT_ID": created.client_id,
        "TRANSCRIPTION_CLIENT_SECRET": created.client_secret,
    }


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])
