"""The rate limiter on real Redis: shared by instances, surviving a Redis outage, per-tenant
settings, and the gRPC API's own limits (Login) through a real server."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from tahoe_auth.authz.ratelimit import RateLimiter
from tahoe_auth.domain.ratelimit import LimitSet, Policy, RateLimitSubject, Strategy, headers
from tahoe_auth.store.limiter_backends import MemoryLimiterBackend, RedisLimiterBackend
from tahoe_auth.store.redis_store import RedisStore
from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc
from tests import support
from tests.servers import RedisProcess

TENANT_LIMIT = LimitSet({"per_tenant": Policy("per_tenant", 20, 3600.0, Strategy.GCRA)})


LimiterFactory = Callable[..., RateLimiter]


@pytest.fixture
def limiter_on() -> Iterator[LimiterFactory]:
    """Makes rate limiters on a Redis URL, each with its own connections (one instance
    each), and closes those connections after the test."""
    made: list[tuple[RedisStore, RateLimiter]] = []

    def make(url: str, limits: LimitSet = TENANT_LIMIT, **kwargs: object) -> RateLimiter:
        store = RedisStore(url)
        limiter = RateLimiter(
            RedisLimiterBackend(store.client),
            lambda _tenant: limits,
            fallback=MemoryLimiterBackend(),
            **kwargs,  # type: ignore[arg-type]
        )
        made.append((store, limiter))
        return limiter

    yield make
    for store, limiter in made:
        limiter.close()
        store.close()


def fallback_active() -> float | None:
    return REGISTRY.get_sample_value("tahoe_ratelimit_fallback_active")


def test_limits_are_shared_by_instances(clean_redis: str, limiter_on: LimiterFactory) -> None:
    """Two limiters (two instances) with their own connections race for one budget."""
    instances = [limiter_on(clean_redis), limiter_on(clean_redis)]
    subject = RateLimitSubject(tenant_id="shared")
    barrier = threading.Barrier(16)

    def client(index: int) -> int:
        barrier.wait()
        return sum(instances[index % 2].check(subject).allowed for _ in range(5))

    with ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(client, range(16))) == 20
    decision = instances[0].check(subject)
    assert not decision.allowed and decision.policy == "per_tenant"
    assert dict(headers(decision))["retry-after"] == "180"  # one 3600/20 s emission interval


def test_redis_stopped_mid_test_falls_back_and_recovers(
    own_redis: RedisProcess, caplog: pytest.LogCaptureFixture, limiter_on: LimiterFactory
) -> None:
    limiter = limiter_on(own_redis.url, instance_count=2, probe_interval=0.2)
    subject = RateLimitSubject(tenant_id="t")
    assert all(limiter.check(subject).allowed for _ in range(5))
    assert limiter.check(subject).remaining == 14

    own_redis.stop()
    with caplog.at_level(logging.WARNING, logger="tahoe_auth.authz.ratelimit"):
        during = [limiter.check(subject) for _ in range(15)]  # no exception reaches the caller
    assert all(d.degraded for d in during) and limiter.degraded
    # This instance's share: 20 / 2 instances = 10, counted from zero in memory.
    assert sum(d.allowed for d in during) == 10
    assert during[0].limit == 10 and not during[-1].allowed
    assert fallback_active() == 1
    assert "Redis unavailable" in caplog.text

    own_redis.start()  # same port, empty: the shared counts start again
    time.sleep(0.3)
    with caplog.at_level(logging.WARNING, logger="tahoe_auth.authz.ratelimit"):
        back = limiter.check(subject)
    assert not back.degraded and back.allowed and back.limit == 20 and back.remaining == 19
    assert fallback_active() == 0
    assert "Redis is back" in caplog.text


def test_hung_redis_costs_one_short_timeout_not_one_per_request(
    own_redis: RedisProcess, limiter_on: LimiterFactory
) -> None:
    limiter = limiter_on(own_redis.url, probe_interval=0.3)
    subject = RateLimitSubject(tenant_id="t")
    assert limiter.check(subject).allowed
    own_redis.pause()
    try:
        started = time.perf_counter()
        slowest = 0.0
        for _ in range(200):
            one = time.perf_counter()
            assert limiter.check(subject).degraded
            slowest = max(slowest, time.perf_counter() - one)
        elapsed = time.perf_counter() - started
    finally:
        own_redis.resume()
    assert slowest < 0.5  # a 50 ms socket timeout, not a hang
    assert elapsed < 2.0  # the other 199 went straight to memory (~10 ms)
    time.sleep(0.35)
    assert not limiter.check(subject).degraded


def test_tenant_settings_override_the_defaults_without_a_restart(server: support.RunningServer) -> None:
    tenant = server.create_tenant()
    subject = RateLimitSubject(client_address="10.9.8.7", tenant_id=tenant.id)
    first = server.app.limiter.check(subject)
    assert first.allowed and first.limit == 100  # per_address is the tighter default

    with server.app.db.unit_of_work(tenant.id) as uow:
        uow.tenants.get(tenant.id).settings = {
            "rate_limits": {"per_tenant": {"limit": 3, "period": 60, "strategy": "fixed_window"}}
        }
        server.app.notifier.tenant_changed(uow, tenant.id)
        uow.commit()
    deadline = time.monotonic() + 2
    while server.app.tenant_config.limits(tenant.id).policies["per_tenant"].limit != 3:
        assert time.monotonic() < deadline, "tenant.changed did not reach the cache"
        time.sleep(0.02)
    outcomes = [server.app.limiter.check(subject) for _ in range(4)]
    assert [d.allowed for d in outcomes] == [True, True, True, False]
    assert outcomes[-1].policy == "per_tenant"


def test_shadow_mode_per_tenant_counts_but_never_denies(server: support.RunningServer) -> None:
    tenant = server.create_tenant()
    with server.app.db.unit_of_work(tenant.id) as uow:
        uow.tenants.get(tenant.id).settings = {"rate_limits": {"shadow": True, "per_tenant": {"limit": 2}}}
        uow.commit()
    subject = RateLimitSubject(tenant_id=tenant.id)
    decisions = [server.app.limiter.check(subject) for _ in range(4)]
    assert all(d.allowed for d in decisions)
    assert [d.shadow_hits for d in decisions] == [(), (), ("per_tenant",), ("per_tenant",)]
    shadow = REGISTRY.get_sample_value(
        "tahoe_ratelimit_decisions_total", {"result": "shadow_limited", "policy": "per_tenant"}
    )
    assert shadow is not None and shadow >= 2


def login_error_details(error: grpc.RpcError) -> tuple[int, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    retry, subject = -1, ""
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry = info.retry_delay.seconds
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            subject = failure.violations[0].subject
    return retry, subject


def test_login_is_rate_limited_per_account_across_two_instances(pg_env: dict[str, str]) -> None:
    """Two servers share PostgreSQL and Redis; the account's Login budget is shared too."""
    with support.running_server(pg_env) as a, support.running_server(pg_env) as b:
        tenant = a.create_tenant()
        request = auth_pb2.LoginRequest(tenant=tenant.slug, email=tenant.owner_email, password=tenant.owner_password)
        stubs = [auth_pb2_grpc.AuthServiceStub(a.channel), auth_pb2_grpc.AuthServiceStub(b.channel)]
        for i in range(10):
            assert stubs[i % 2].Login(request).tokens.access_token
        with pytest.raises(grpc.RpcError) as info:
            stubs[0].Login(request)
        error = info.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert support.error_reason(error) == "RATE_LIMITED"
        retry, subject = login_error_details(error)
        assert subject == "login_per_account" and 1 <= retry <= 6  # one 60 s / 10 interval, minus time spent
        # Another account from the same address is not affected.
        other = b.create_tenant()
        assert b.login(other).tokens.access_token


def test_health_checks_are_never_rate_limited(server: support.RunningServer) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(server.channel)
    for _ in range(700):
        stub.Check(health_pb2.HealthCheckRequest())


def test_secret_exchanges_without_a_credential_are_rate_limited(server: support.RunningServer) -> None:
    """AcceptInvitation guesses tokens like Login guesses passwords: limited per address."""
    from tahoe_auth.api.rate_limit import INVITATION_PER_ADDRESS
    from tahoe_auth.v1 import tenant_pb2

    reasons = []
    for _ in range(INVITATION_PER_ADDRESS.limit + 1):
        with pytest.raises(grpc.RpcError) as info:
            server.tenants.AcceptInvitation(tenant_pb2.AcceptInvitationRequest(token="inv_guess", password="x" * 12))
        reasons.append(support.error_reason(info.value))
    assert set(reasons[:-1]) == {"INVITATION_INVALID"}
    assert reasons[-1] == "RATE_LIMITED"
