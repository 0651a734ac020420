"""One slow Redis answer (a busy host) is invisible; an outage still behaves as
documented (docs/operations.md, Redis timeouts).

The slow answer is a private redis-server stopped (SIGSTOP) for longer than one
TAHOE_REDIS_TIMEOUT but less than two, so that the first try of a call times out and an
immediate second try is answered."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
import pytest
from prometheus_client import REGISTRY

from tahoe_auth.domain.ratelimit import RateLimitSubject
from tahoe_auth.domain.usage import UsageEvent
from tahoe_auth.v1 import auth_pb2
from tests.servers import RedisProcess
from tests.support import RunningServer, call_error, error_reason, running_server

TIMEOUT = 0.5
SLOW = 0.75  # between one and two timeouts

T = TypeVar("T")


def failures(site: str, action: str) -> float:
    return REGISTRY.get_sample_value("tahoe_store_failures_total", {"site": site, "action": action}) or 0.0


def during_one_slow_answer(redis: RedisProcess, call: Callable[[], T]) -> T:
    """`call`, started just after Redis stops answering for SLOW seconds."""
    redis.pause()
    timer = threading.Timer(SLOW, redis.resume)
    timer.start()
    try:
        return call()
    finally:
        timer.join()


@pytest.fixture
def running(own_redis_env: dict[str, str]) -> Iterator[RunningServer]:
    env = {**own_redis_env, "TAHOE_REDIS_TIMEOUT": str(TIMEOUT)}
    with running_server(env, rate_limit_enabled=False) as server:
        yield server


def test_the_timeout_is_a_setting(running: RunningServer) -> None:
    assert running.app.settings.redis_timeout == TIMEOUT
    pool = running.app.store.client.connection_pool  # type: ignore[attr-defined]
    assert pool.connection_kwargs["socket_timeout"] == TIMEOUT


def test_one_slow_answer_leaves_usage_totals_on_the_live_counters(
    running: RunningServer, own_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = running.create_tenant()
    now = dt.datetime.now(dt.UTC)
    running.app.usage_ledger.append({tenant.id: [UsageEvent("api.requests", 1, now) for _ in range(3)]})
    totals = running.app.usage_totals
    assert totals.current([tenant.id]) == {tenant.id: {"api.requests": 3.0}}
    to_database, retried = failures("usage_live_read", "database"), failures("usage_live_read", "retry")

    with caplog.at_level(logging.WARNING):
        seen = during_one_slow_answer(own_redis, lambda: totals.current([tenant.id]))
    assert seen == {tenant.id: {"api.requests": 3.0}}
    assert failures("usage_live_read", "database") == to_database, "one slow answer sent the read to the database"
    assert "live usage counters unreadable" not in caplog.text
    assert failures("usage_live_read", "retry") == retried + 1, "the slow answer did not happen"

    # An outage: the totals come from the database, and the log says so.
    own_redis.stop()
    with caplog.at_level(logging.WARNING):
        assert totals.current([tenant.id]) == {tenant.id: {"api.requests": 3.0}}
    assert failures("usage_live_read", "database") == to_database + 1
    assert "live usage counters unreadable" in caplog.text


def test_one_slow_answer_keeps_a_throttled_account_throttled(
    running: RunningServer, own_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = running.create_tenant()
    bad = auth_pb2.LoginRequest(tenant=tenant.slug, email=tenant.owner_email, password="wrong password")
    for _ in range(5):
        assert error_reason(call_error(running.auth.Login, bad, timeout=30)) == "INVALID_CREDENTIALS"
    assert error_reason(call_error(running.auth.Login, bad, timeout=30)) == "LOGIN_THROTTLED"
    fallbacks = failures("login_throttle", "fallback")

    with caplog.at_level(logging.WARNING):
        error = during_one_slow_answer(own_redis, lambda: call_error(running.auth.Login, bad, timeout=30))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert error_reason(error) == "LOGIN_THROTTLED"
    assert failures("login_throttle", "fallback") == fallbacks
    assert "login throttle" not in caplog.text


def test_one_slow_answer_does_not_switch_the_rate_limiter(running: RunningServer, own_redis: RedisProcess) -> None:
    limiter = running.app.limiter
    limiter.enabled = True
    subject = RateLimitSubject(tenant_id=running.create_tenant().id)
    first = limiter.check(subject)
    assert first.allowed and not first.degraded
    fallbacks = failures("ratelimit", "fallback")

    during_one_slow_answer(own_redis, lambda: limiter.check(subject))
    assert not limiter.degraded, "one slow answer switched the limiter to memory"
    assert failures("ratelimit", "fallback") == fallbacks + 1, "the slow answer did not happen"
    after = limiter.check(subject)
    assert after.allowed and not after.degraded

    # An outage switches it (two failures in a row), as documented.
    own_redis.stop()
    assert all(limiter.check(subject).degraded for _ in range(3))
    assert limiter.degraded
