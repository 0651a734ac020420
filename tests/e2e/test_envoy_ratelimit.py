"""Envoy's own rate-limit filter pointed at our RateLimitService: a real Envoy, a real
server (PostgreSQL + Redis), HTTP requests through the listener."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from tests import harness, support

pytestmark = pytest.mark.envoy


def envoy_config(listen: int, ratelimit_port: int, upstream_port: int) -> dict[str, Any]:
    ratelimit_filter = harness._typed(
        "envoy.filters.http.ratelimit",
        "extensions.filters.http.ratelimit.v3.RateLimit",
        domain="tahoe",
        failure_mode_deny=True,
        enable_x_ratelimit_headers="DRAFT_VERSION_03",
        # The filter's own deadline for ShouldRateLimit: Envoy sends it as grpc-timeout
        # and ignores grpc_service.timeout. Its default, 20 ms, is shorter than a cold
        # first call (tenant settings, Lua script) on a shared machine: Envoy then gives
        # up (500 under failure_mode_deny) while the server goes on and counts the hit.
        timeout="5s",
        rate_limit_service={
            "grpc_service": {"envoy_grpc": {"cluster_name": "ratelimit"}},
            "transport_api_version": "V3",
        },
    )
    router = harness._typed("envoy.filters.http.router", "extensions.filters.http.router.v3.Router")
    actions = [{"request_headers": {"header_name": "x-tenant", "descriptor_key": "tenant_id"}}]
    route = {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "rate_limits": [{"actions": actions}]}}
    virtual_host = {"name": "all", "domains": ["*"], "routes": [route]}
    hcm = harness._typed(
        "envoy.filters.network.http_connection_manager",
        "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="ingress",
        route_config={"name": "local", "virtual_hosts": [virtual_host]},
        http_filters=[ratelimit_filter, router],
    )
    return {
        "admin": {"address": harness._address(harness.free_port())},
        "static_resources": {
            "listeners": [
                {"name": "ingress", "address": harness._address(listen), "filter_chains": [{"filters": [hcm]}]}
            ],
            "clusters": [
                harness._cluster("ratelimit", [ratelimit_port], http2=True),
                harness._cluster("upstream", [upstream_port]),
            ],
        },
    }


@pytest.fixture
def limited_server(pg_env: dict[str, str]) -> Iterator[support.RunningServer]:
    env = {**pg_env, "TAHOE_RATE_LIMITS": json.dumps({"per_tenant": {"limit": 3, "period": 60}})}
    with support.running_server(env) as server:
        yield server


def get(url: str, tenant: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers={"x-tenant": tenant})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}


def test_envoy_rate_limit_filter_uses_the_tenant_policy(
    envoy_binary: str, limited_server: support.RunningServer, tmp_path: Path
) -> None:
    port = int(limited_server.address.rsplit(":", 1)[1])
    listen = harness.free_port()
    with (
        harness.http_upstream() as upstream,
        harness.run_envoy(envoy_config(listen, port, upstream), tmp_path) as envoy,
    ):
        answers = [get(envoy.url("/"), "tenant-a") for _ in range(4)]
        other = get(envoy.url("/"), "tenant-b")
    assert [status for status, _ in answers] == [200, 200, 200, 429]
    headers = answers[0][1]
    assert headers["x-ratelimit-limit"].startswith("3") and headers["x-ratelimit-remaining"] == "2"
    assert answers[3][1]["x-ratelimit-remaining"] == "0"
    assert other[0] == 200  # another tenant's budget


def test_descriptor_limit_overrides_and_hits_addend(limited_server: support.RunningServer) -> None:
    stub = rls_pb2_grpc.RateLimitServiceStub(limited_server.channel)
    entry = ratelimit_pb2.RateLimitDescriptor.Entry
    override = ratelimit_pb2.RateLimitDescriptor.RateLimitOverride(
        requests_per_unit=5, unit=rls_pb2.RateLimitResponse.RateLimit.MINUTE
    )
    descriptor = ratelimit_pb2.RateLimitDescriptor(entries=[entry(key="path", value="/upload")], limit=override)
    first = stub.ShouldRateLimit(rls_pb2.RateLimitRequest(domain="d", descriptors=[descriptor], hits_addend=4))
    assert first.overall_code == rls_pb2.RateLimitResponse.OK
    assert (first.statuses[0].current_limit.requests_per_unit, first.statuses[0].limit_remaining) == (5, 1)
    second = stub.ShouldRateLimit(rls_pb2.RateLimitRequest(domain="d", descriptors=[descriptor], hits_addend=2))
    assert second.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT
    assert second.statuses[0].code == rls_pb2.RateLimitResponse.OVER_LIMIT
    unknown = ratelimit_pb2.RateLimitDescriptor(entries=[entry(key="colour", value="red")])
    free = stub.ShouldRateLimit(rls_pb2.RateLimitRequest(domain="d", descriptors=[unknown]))
    assert free.overall_code == rls_pb2.RateLimitResponse.OK and not free.statuses[0].HasField("current_limit")
