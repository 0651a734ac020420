"""Metrics on the HTTP side port change under traffic; request ids and W3C traceparent
reach the JSON log lines, audit entries and outbox events."""

from __future__ import annotations

import io
import json
import logging
import re
import urllib.request
from collections.abc import Iterator

import pytest

from tahoe_auth.domain import events
from tahoe_auth.http_side import SideServer
from tahoe_auth.kernel import logs
from tahoe_auth.v1 import auth_pb2
from tests import support
from tests.support import RunningServer, bearer
from tests.webhook_receiver import receiver

pytestmark = [pytest.mark.postgres]

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
LOGIN = "/tahoe_auth.v1.AuthService/Login"


def scrape(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        assert response.headers["content-type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def sample(samples: dict[str, float], name: str, **labels: str) -> float:
    for key, value in samples.items():
        if key.split("{")[0] == name and all(f'{k}="{v}"' in key for k, v in labels.items()):
            return value
    return 0.0


@pytest.fixture
def side(server: RunningServer) -> Iterator[str]:
    from tahoe_auth.health import HealthReporter

    health = HealthReporter(server.app, __import__("grpc_health.v1.health", fromlist=["x"]).HealthServicer())
    health.check_once()
    http = SideServer(server.app, health, "127.0.0.1:0")
    http.start()
    try:
        yield http.address
    finally:
        http.stop()


def test_metrics_are_exposed_and_change_under_traffic(server: RunningServer, side: str, pg_env: dict) -> None:  # type: ignore[type-arg]
    before = scrape(side)
    tenant = server.create_tenant()
    tokens = [server.login(tenant).tokens.access_token for _ in range(3)]
    for token in tokens:
        server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=token))
        server.auth.ListSessions(auth_pb2.ListSessionsRequest(), metadata=bearer(token))
    after = scrape(side)
    assert sample(after, "tahoe_rpc_duration_seconds_count", method=LOGIN, code="OK") == (
        sample(before, "tahoe_rpc_duration_seconds_count", method=LOGIN, code="OK") + 3
    )
    assert sample(after, "tahoe_rpc_duration_seconds_bucket", method=LOGIN, code="OK", le="+Inf") >= 3
    assert sample(after, "tahoe_audit_entries_total", action="auth.login", outcome="success") >= 3
    assert sample(after, "tahoe_cache_hits_total", cache="tokens") + sample(
        after, "tahoe_cache_misses_total", cache="tokens"
    ) > sample(before, "tahoe_cache_misses_total", cache="tokens")
    for name in ("tahoe_outbox_depth", "tahoe_webhook_deliveries_due", "tahoe_store_failures_total"):
        assert any(key.split("{")[0] == name for key in after) or name == "tahoe_store_failures_total"


def test_webhook_metrics(pg_env: dict[str, str]) -> None:
    with (
        support.running_server(pg_env, webhook_allowed_networks=("127.0.0.0/8",), webhook_allow_http=True) as hooks,
        receiver() as sink,
    ):
        from tahoe_auth.kernel import metrics

        succeeded = metrics.WEBHOOK_ATTEMPTS.labels("succeeded")._value.get()
        lag_count = metrics.WEBHOOK_LAG._sum.get()
        tenant = hooks.create_tenant()
        token = hooks.login(tenant).tokens.access_token
        from tahoe_auth.v1 import webhooks_pb2, webhooks_pb2_grpc

        webhooks_pb2_grpc.WebhookServiceStub(hooks.channel).CreateWebhookEndpoint(
            webhooks_pb2.CreateWebhookEndpointRequest(endpoint=webhooks_pb2.WebhookEndpoint(url=sink.url)),
            metadata=bearer(token),
        )
        hooks.auth.Logout(auth_pb2.LogoutRequest(), metadata=bearer(token))
        hooks.app.webhook_worker.update_gauges()
        assert metrics.OUTBOX_DEPTH._value.get() >= 1
        hooks.app.webhook_worker.drain()
        sink.wait_for(1)
        hooks.app.webhook_worker.update_gauges()
        assert metrics.WEBHOOK_ATTEMPTS.labels("succeeded")._value.get() == succeeded + 1
        assert metrics.WEBHOOK_LAG._sum.get() > lag_count
        assert metrics.OUTBOX_DEPTH._value.get() == 0


class _Capture:
    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.addFilter(logs.ContextFilter())
        self.handler.setFormatter(logs.JsonFormatter())

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.startswith("{")]


@pytest.fixture
def json_logs() -> Iterator[_Capture]:
    capture = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture.handler)
    root.setLevel(logging.INFO)
    try:
        yield capture
    finally:
        root.removeHandler(capture.handler)
        root.setLevel(old_level)


def test_request_id_and_traceparent_reach_logs_audit_and_events(server: RunningServer, json_logs: _Capture) -> None:
    tenant = server.create_tenant()
    token = server.login(tenant).tokens.access_token
    metadata = [*bearer(token), ("x-request-id", "req-trace-1"), ("traceparent", TRACEPARENT)]
    server.auth.Logout(auth_pb2.LogoutRequest(), metadata=metadata)
    (line,) = [entry for entry in json_logs.lines() if entry.get("request_id") == "req-trace-1"]
    assert line["traceparent"] == TRACEPARENT and line["tenant"] == tenant.id
    assert str(line["subject"]).startswith("user:") and re.match(r"rpc .*Logout OK", str(line["message"]))
    assert token not in json_logs.stream.getvalue()
    with server.app.db.unit_of_work(tenant.id) as uow:
        (event,) = uow.outbox.of_type(events.SESSION_REVOKED)
        (entry,) = [e for e in uow.audit.find(tenant.id, _all(), None, 10) if e.action == "auth.logout"]
    assert (event.request_id, event.traceparent) == ("req-trace-1", TRACEPARENT)
    assert (entry.request_id, entry.traceparent) == ("req-trace-1", TRACEPARENT)


def test_malformed_traceparent_is_dropped(server: RunningServer, json_logs: _Capture) -> None:
    tenant = server.create_tenant()
    token = server.login(tenant).tokens.access_token
    for bad in ["garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", TRACEPARENT + "\nx: injected"]:
        server.auth.ListSessions(
            auth_pb2.ListSessionsRequest(),
            metadata=[*bearer(token), ("x-request-id", "req-bad-tp"), ("traceparent", bad.replace("\n", ""))],
        )
    lines = [entry for entry in json_logs.lines() if entry.get("request_id") == "req-bad-tp"]
    assert len(lines) == 3 and all("traceparent" not in entry for entry in lines)


def _all():  # type: ignore[no-untyped-def]
    from tahoe_auth.domain.audit import AuditFilter

    return AuditFilter()
