"""Webhooks end to end on PostgreSQL: events from real use cases, signed deliveries
checked by the spec's reference implementation, retries with backoff, Retry-After,
410, dead letters and replay, SSRF refusals, and at-least-once across a worker crash."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from tahoe_auth.domain import events
from tahoe_auth.domain.webhooks import RetryPolicy
from tahoe_auth.services.webhook_delivery import WebhookWorker, WorkerConfig
from tahoe_auth.store.db import SYSTEM
from tahoe_auth.v1 import auth_pb2, webhooks_pb2, webhooks_pb2_grpc
from tahoe_auth.webhooks.sender import EgressPolicy
from tests import support
from tests.support import RunningServer, Tenant, bearer, error_reason
from tests.webhook_receiver import Receiver, Reply, receiver

pytestmark = [pytest.mark.postgres]

LOCAL = {"webhook_allowed_networks": ("127.0.0.0/8",), "webhook_allow_http": True}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def hooks(pg_env: dict[str, str]) -> Iterator[RunningServer]:
    with support.running_server(pg_env, **LOCAL) as running:
        yield running


@pytest.fixture
def sink() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def stub(server: RunningServer) -> webhooks_pb2_grpc.WebhookServiceStub:
    return webhooks_pb2_grpc.WebhookServiceStub(server.channel)


def add_endpoint(server: RunningServer, tenant: Tenant, url: str, types: list[str] | None = None) -> tuple[str, str]:
    token = server.login(tenant).tokens.access_token
    created = stub(server).CreateWebhookEndpoint(
        webhooks_pb2.CreateWebhookEndpointRequest(
            endpoint=webhooks_pb2.WebhookEndpoint(url=url, event_types=types or ["session.*"])
        ),
        metadata=bearer(token),
    )
    assert created.secret.startswith("whsec_") and created.endpoint.enabled
    return created.endpoint.id, created.secret


def logout(server: RunningServer, tenant: Tenant, request_id: str = "") -> None:
    token = server.login(tenant).tokens.access_token
    metadata = [*bearer(token), ("traceparent", TRACEPARENT)]
    if request_id:
        metadata.append(("x-request-id", request_id))
    server.auth.Logout(auth_pb2.LogoutRequest(), metadata=metadata)


def fast_worker(server: RunningServer, retry: RetryPolicy, **config: float) -> WebhookWorker:
    app = server.app
    return WebhookWorker(
        app.db,
        app.webhooks.box,
        EgressPolicy.parse(["127.0.0.0/8"], True),
        app.audit,
        app.clock,
        WorkerConfig(retry=retry, idle_wait=0.02, timeout=2.0, lease=5.0, **config),  # type: ignore[arg-type]
    )


def deliveries(server: RunningServer, tenant: Tenant, **filters: str) -> list[webhooks_pb2.WebhookDelivery]:
    """As the platform administrator (polling as the owner would trip the login rate limit)."""
    request = webhooks_pb2.ListWebhookDeliveriesRequest(tenant_id=tenant.id, **filters)
    return list(stub(server).ListWebhookDeliveries(request, metadata=bearer(server.platform_key)).deliveries)


def test_events_are_signed_per_the_spec_and_carry_correlation(hooks: RunningServer, sink: Receiver) -> None:
    tenant = hooks.create_tenant()
    _, secret = add_endpoint(hooks, tenant, sink.url)
    logout(hooks, tenant, request_id="req-logout-1")
    hooks.app.webhook_worker.drain()
    (message,) = sink.wait_for(1)
    assert message.verify(secret)["type"] == events.SESSION_REVOKED  # the reference implementation agrees
    payload = message.payload
    assert payload["id"] == message.id and payload["data"]["reason"] == "logout"
    assert payload["metadata"] == {"tenant_id": tenant.id, "request_id": "req-logout-1", "traceparent": TRACEPARENT}
    assert message.headers["webhook-signature"].startswith("v1,")
    (row,) = deliveries(hooks, tenant)
    assert row.status == webhooks_pb2.WEBHOOK_DELIVERY_STATUS_SUCCEEDED and row.attempts == 1
    assert row.event_id == message.id and row.last_response_code == 200


def test_secret_rotation_signs_with_both_secrets_until_the_old_expires(hooks: RunningServer, sink: Receiver) -> None:
    tenant = hooks.create_tenant()
    endpoint_id, old = add_endpoint(hooks, tenant, sink.url)
    token = hooks.login(tenant).tokens.access_token
    rotated = stub(hooks).RotateWebhookSecret(
        webhooks_pb2.RotateWebhookSecretRequest(endpoint_id=endpoint_id), metadata=bearer(token)
    )
    assert rotated.secret != old and rotated.endpoint.secrets_in_force == 2
    logout(hooks, tenant)
    hooks.app.webhook_worker.drain()
    (message,) = sink.wait_for(1)
    assert len(message.headers["webhook-signature"].split()) == 2
    assert message.verify(old) and message.verify(rotated.secret)
    immediate = stub(hooks).RotateWebhookSecret(
        webhooks_pb2.RotateWebhookSecretRequest(
            endpoint_id=endpoint_id, previous_secret_ttl=duration_pb2.Duration(seconds=0)
        ),
        metadata=bearer(token),
    )
    assert immediate.endpoint.secrets_in_force == 1
    logout(hooks, tenant)
    hooks.app.webhook_worker.drain()
    second = sink.wait_for(2)[1]
    assert second.verify(immediate.secret)
    with pytest.raises(Exception, match=r"(?i)signature"):
        second.verify(rotated.secret)


def test_failures_are_retried_with_backoff_and_the_same_webhook_id(hooks: RunningServer, sink: Receiver) -> None:
    tenant = hooks.create_tenant()
    add_endpoint(hooks, tenant, sink.url)
    sink.script = [Reply(500), Reply(502), Reply(503)]
    worker = fast_worker(hooks, RetryPolicy(first_delay=0.2, factor=2.0, jitter=0.0, horizon=60))
    worker.start()
    try:
        logout(hooks, tenant)
        received = sink.wait_for(4, timeout=15)
    finally:
        worker.stop()
    assert len({r.id for r in received}) == 1  # receivers can deduplicate
    gaps = [b.at - a.at for a, b in itertools.pairwise(received)]
    for gap, expected in zip(gaps, [0.2, 0.4, 0.8], strict=True):
        assert expected * 0.9 <= gap <= expected + 1.0, gaps
    support.wait_until(lambda: deliveries(hooks, tenant)[0].status == webhooks_pb2.WEBHOOK_DELIVERY_STATUS_SUCCEEDED)
    (row,) = deliveries(hooks, tenant)
    assert row.attempts == 4 and row.last_response_code == 200


def test_retry_after_is_honoured(hooks: RunningServer, sink: Receiver) -> None:
    tenant = hooks.create_tenant()
    add_endpoint(hooks, tenant, sink.url)
    sink.script = [Reply(429, {"retry-after": "2"})]
    worker = fast_worker(hooks, RetryPolicy(first_delay=0.05, jitter=0.0))
    worker.start()
    try:
        logout(hooks, tenant)
        first, second = sink.wait_for(2, timeout=10)
    finally:
        worker.stop()
    assert second.at - first.at >= 1.9


def test_gone_disables_the_endpoint_and_is_audited(hooks: RunningServer, sink: Receiver) -> None:
    tenant = hooks.create_tenant()
    endpoint_id, _ = add_endpoint(hooks, tenant, sink.url)
    sink.default = Reply(410)
    logout(hooks, tenant)
    hooks.app.webhook_worker.drain()
    sink.wait_for(1)
    token = hooks.login(tenant).tokens.access_token
    got = stub(hooks).GetWebhookEndpoint(
        webhooks_pb2.GetWebhookEndpointRequest(endpoint_id=endpoint_id), metadata=bearer(token)
    )
    assert not got.endpoint.enabled and "410" in got.endpoint.disabled_reason
    assert deliveries(hooks, tenant)[0].status == webhooks_pb2.WEBHOOK_DELIVERY_STATUS_DEAD
    with hooks.app.db.unit_of_work(tenant.id) as uow:
        actions = [e.action for e in uow.audit.find(tenant.id, support_filter(), None, 50)]
    assert actions.count("webhook.endpoint_disable") == 1
    logout(hooks, tenant)  # a disabled endpoint gets nothing more
    hooks.app.webhook_worker.drain()
    time.sleep(0.2)
    assert len(sink.received) == 1
    stub(hooks).UpdateWebhookEndpoint(
        webhooks_pb2.UpdateWebhookEndpointRequest(
            endpoint=webhooks_pb2.WebhookEndpoint(id=endpoint_id, enabled=True),
            update_mask=field_mask_pb2.FieldMask(paths=["enabled"]),
        ),
        metadata=bearer(token),
    )
    sink.default = Reply(200)
    logout(hooks, tenant)  # re-enabled: new events go out (those of the disabled time do not)
    hooks.app.webhook_worker.drain()
    assert len(sink.wait_for(2)) == 2


def support_filter():  # type: ignore[no-untyped-def]
    from tahoe_auth.domain.audit import AuditFilter

    return AuditFilter()


def test_dead_letter_then_replay_keeps_the_webhook_id(hooks: RunningServer, sink: Receiver) -> None:
    tenant = hooks.create_tenant()
    endpoint_id, secret = add_endpoint(hooks, tenant, sink.url)
    sink.default = Reply(500)
    worker = fast_worker(hooks, RetryPolicy(first_delay=0.1, factor=1.0, jitter=0.0, horizon=0.35))
    worker.start()
    try:
        logout(hooks, tenant)
        support.wait_until(
            lambda: [d.status for d in deliveries(hooks, tenant)] == [webhooks_pb2.WEBHOOK_DELIVERY_STATUS_DEAD],
            limit=10,
        )
        attempts = len(sink.received)
        assert attempts >= 2
        sink.default = Reply(200)
        token = hooks.login(tenant).tokens.access_token
        replayed = stub(hooks).ReplayWebhookDeliveries(
            webhooks_pb2.ReplayWebhookDeliveriesRequest(endpoint_id=endpoint_id), metadata=bearer(token)
        )
        assert len(replayed.deliveries) == 1
        received = sink.wait_for(attempts + 1)
    finally:
        worker.stop()
    assert received[-1].id == received[0].id and received[-1].verify(secret)
    support.wait_until(lambda: deliveries(hooks, tenant)[0].status == webhooks_pb2.WEBHOOK_DELIVERY_STATUS_SUCCEEDED)


def test_ssrf_refusals(hooks: RunningServer, pg_env: dict[str, str], sink: Receiver) -> None:
    tenant = hooks.create_tenant()
    token = hooks.login(tenant).tokens.access_token
    for url in ["http://169.254.169.254/latest/meta-data", "http://10.0.0.8/", "ftp://example.com/", "http://[::1]/"]:
        with pytest.raises(grpc.RpcError) as caught:
            stub(hooks).CreateWebhookEndpoint(
                webhooks_pb2.CreateWebhookEndpointRequest(endpoint=webhooks_pb2.WebhookEndpoint(url=url)),
                metadata=bearer(token),
            )
        assert error_reason(caught.value) == "INVALID_ARGUMENT", url
    # A name that resolves to a private address is refused at send time: dead, not retried.
    endpoint_id, _ = add_endpoint(hooks, tenant, "http://hooks.internal.example:8080/x")
    app = hooks.app
    worker = WebhookWorker(
        app.db,
        app.webhooks.box,
        EgressPolicy.parse(["127.0.0.0/8"], True),
        app.audit,
        app.clock,
        WorkerConfig(timeout=2.0, lease=5.0),
        resolver=lambda host, port: ["10.1.2.3"],
    )
    logout(hooks, tenant)
    worker.drain()
    worker.stop()
    (row,) = deliveries(hooks, tenant, endpoint_id=endpoint_id)
    assert row.status == webhooks_pb2.WEBHOOK_DELIVERY_STATUS_DEAD and "non-public" in row.last_error
    # Without the deployment allowing local networks, loopback receivers are refused.
    with support.running_server(pg_env) as strict:
        owner = strict.login(tenant).tokens.access_token
        with pytest.raises(grpc.RpcError) as caught:
            stub(strict).CreateWebhookEndpoint(
                webhooks_pb2.CreateWebhookEndpointRequest(endpoint=webhooks_pb2.WebhookEndpoint(url=sink.url)),
                metadata=bearer(owner),
            )
        assert error_reason(caught.value) == "INVALID_ARGUMENT"


def test_send_test_event_and_tenant_walls(hooks: RunningServer, sink: Receiver) -> None:
    tenant, other = hooks.create_tenant(), hooks.create_tenant()
    endpoint_id, secret = add_endpoint(hooks, tenant, sink.url, types=["user.created"])
    token = hooks.login(tenant).tokens.access_token
    sent = stub(hooks).SendTestWebhookEvent(
        webhooks_pb2.SendTestWebhookEventRequest(endpoint_id=endpoint_id), metadata=bearer(token)
    )
    hooks.app.webhook_worker.drain()
    (message,) = sink.wait_for(1)
    assert message.id == sent.event_id and message.verify(secret)["type"] == events.WEBHOOK_TEST
    other_token = hooks.login(other).tokens.access_token
    for call, request in [
        (stub(hooks).GetWebhookEndpoint, webhooks_pb2.GetWebhookEndpointRequest(endpoint_id=endpoint_id)),
        (
            stub(hooks).ListWebhookEndpoints,
            webhooks_pb2.ListWebhookEndpointsRequest(tenant_id=tenant.id),
        ),
        (stub(hooks).SendTestWebhookEvent, webhooks_pb2.SendTestWebhookEventRequest(endpoint_id=endpoint_id)),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            call(request, metadata=bearer(other_token))
        assert error_reason(caught.value) == "NOT_FOUND"
    listed = stub(hooks).ListWebhookEndpoints(
        webhooks_pb2.ListWebhookEndpointsRequest(tenant_id=tenant.id), metadata=bearer(hooks.platform_key)
    )
    assert [e.id for e in listed.endpoints] == [endpoint_id]
    types = stub(hooks).ListWebhookEventTypes(webhooks_pb2.ListWebhookEventTypesRequest(), metadata=bearer(token))
    assert events.SESSION_REVOKED in types.event_types


def test_at_least_once_across_a_worker_crash(pg_env: dict[str, str], sink: Receiver, tmp_path: Path) -> None:
    """The worker process is killed after the receiver got the request but before the
    worker recorded the answer: the lease lapses and another worker sends it again,
    with the same webhook-id."""
    with support.running_server(pg_env, **LOCAL) as server:
        tenant = server.create_tenant()
        add_endpoint(server, tenant, sink.url)
        release = __import__("threading").Event()
        sink.script = [Reply(200, hold=release)]
        env = {
            **os.environ,
            **pg_env,
            "TAHOE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "TAHOE_WEBHOOK_ALLOW_HTTP": "true",
            "TAHOE_WEBHOOK_TIMEOUT": "1",
            "TAHOE_WEBHOOK_LEASE": "2",
        }
        crashing = subprocess.Popen(
            [sys.executable, "-m", "tahoe_auth", "worker"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            logout(server, tenant)
            (first,) = sink.wait_for(1, timeout=20)
            crashing.send_signal(signal.SIGKILL)
            crashing.wait(10)
        finally:
            release.set()
            if crashing.poll() is None:
                crashing.kill()
        with server.app.db.unit_of_work(SYSTEM) as uow:
            row = uow.webhooks.delivery(deliveries(server, tenant)[0].id)
            assert row.status == events.PENDING and row.attempts == 1  # claimed, never acknowledged
        started = time.monotonic()
        worker = fast_worker(server, RetryPolicy())
        worker.start()
        try:
            received = sink.wait_for(2, timeout=15)
        finally:
            worker.stop()
        assert time.monotonic() - started < 10
        assert received[1].id == first.id and received[1].body == first.body
        support.wait_until(
            lambda: deliveries(server, tenant)[0].status == webhooks_pb2.WEBHOOK_DELIVERY_STATUS_SUCCEEDED
        )
        assert deliveries(server, tenant)[0].attempts == 2


def test_replay_refuses_deliveries_still_in_flight(hooks: RunningServer, sink: Receiver) -> None:
    tenant = hooks.create_tenant()
    add_endpoint(hooks, tenant, sink.url)
    logout(hooks, tenant)
    hooks.app.webhook_worker.dispatch()
    (row,) = deliveries(hooks, tenant)
    token = hooks.login(tenant).tokens.access_token
    with pytest.raises(grpc.RpcError) as caught:
        stub(hooks).ReplayWebhookDeliveries(
            webhooks_pb2.ReplayWebhookDeliveriesRequest(delivery_id=row.id), metadata=bearer(token)
        )
    assert error_reason(caught.value) == "FAILED_PRECONDITION"
    assert row.create_time.ToDatetime(tzinfo=dt.UTC) <= dt.datetime.now(dt.UTC)
