"""A revocation committed to PostgreSQL holds on every instance within a second, whatever
Redis does: hung (SIGSTOP), killed, or restarted empty. Two instances share the
database and a private Redis; the revocation goes through B, and A must refuse.

While Redis is out, A keeps trusting its caches (the change log is polled), so warm
Checks stay off the database; an instance that hears neither pub/sub nor the log stops
trusting them within a second."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.rpc import code_pb2

from tahoe_auth.v1 import auth_pb2
from tests.integration.test_ext_authz import check, check_request
from tests.servers import OwnPostgres, RedisProcess
from tests.support import RunningServer, Tenant, bearer, request_sql, running_server, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ENFORCED_WITHIN = 1.0


def allowed(server: RunningServer, token: str) -> bool:
    return check(server, check_request(f"Bearer {token}")).status.code == code_pb2.OK


def env_for(database_url: str, redis: RedisProcess, tmp_path: Path) -> dict[str, str]:
    return {
        "TAHOE_DATABASE_URL": database_url,
        "TAHOE_REDIS_URL": redis.url,
        "TAHOE_MASTER_KEY": "R" * 43,
        "TAHOE_VAR_DIR": str(tmp_path),
    }


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def pair(clean_pg: str, redis: RedisProcess, tmp_path: Path) -> Iterator[tuple[RunningServer, RunningServer]]:
    env = env_for(clean_pg, redis, tmp_path)
    with running_server(env) as a, running_server(env) as b:
        for server in (a, b):
            wait_until(server.app.store.notifications_live, limit=5)
        yield a, b


def pause(redis: RedisProcess, a: RunningServer) -> Callable[[], None]:
    redis.pause()
    wait_until(lambda: not a.app.store.notifications_live(), limit=5)
    return redis.resume


def kill(redis: RedisProcess, a: RunningServer) -> Callable[[], None]:
    redis.kill()
    wait_until(lambda: not a.app.store.notifications_live(), limit=5)
    return redis.start


FAULTS = {"hung": pause, "killed": kill}


def login_twice(server: RunningServer, tenant: Tenant) -> tuple[str, str]:
    """Two sessions of the tenant's owner: one to revoke, one that stays valid."""
    return server.login(tenant).tokens.access_token, server.login(tenant).tokens.access_token


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_logout_through_b_holds_on_a_while_redis_is_out(
    pair: tuple[RunningServer, RunningServer], redis: RedisProcess, fault: str
) -> None:
    a, b = pair
    tenant = b.create_tenant()
    revoked, kept = login_twice(b, tenant)
    assert allowed(a, revoked) and allowed(a, kept)  # both cached on A

    recover = FAULTS[fault](redis, a)
    started = time.monotonic()
    b.auth.Logout(auth_pb2.LogoutRequest(), metadata=bearer(revoked), timeout=10)
    took = wait_until(lambda: not allowed(a, revoked), limit=ENFORCED_WITHIN)
    print(f"redis {fault}: logout through B refused by A after {took * 1000:.0f} ms")

    # A is sure of its caches (the log is read), so warm Checks stay off the database
    # while Redis is out (one Check first: what the revocation dropped is read again).
    assert a.app.changes.caches_trusted()
    assert allowed(a, kept)
    with request_sql(a.app.db) as statements:
        for _ in range(5):
            assert allowed(a, kept)
    assert statements == []

    recover()
    wait_until(a.app.store.notifications_live, limit=10)
    assert not allowed(a, revoked)
    assert allowed(a, kept)
    assert time.monotonic() - started < 30


def test_a_revocation_made_while_redis_is_down_holds_after_it_returns_empty(
    pair: tuple[RunningServer, RunningServer], redis: RedisProcess
) -> None:
    a, b = pair
    tenant = b.create_tenant()
    revoked, kept = login_twice(b, tenant)
    assert allowed(a, revoked)
    redis.kill()
    b.auth.Logout(auth_pb2.LogoutRequest(), metadata=bearer(revoked), timeout=10)
    redis.start()  # empty: nothing of the lost publish survives
    wait_until(a.app.store.notifications_live, limit=10)
    wait_until(lambda: not allowed(a, revoked), limit=ENFORCED_WITHIN)
    assert allowed(a, kept)


def test_a_silent_channel_counts_as_down(pair: tuple[RunningServer, RunningServer], redis: RedisProcess) -> None:
    """With A's log polling stopped, pub/sub is all A has: a hung Redis must not look
    healthy (its heartbeats stop), so A bypasses its caches and sees the revocation."""
    a, b = pair
    a.app.changes.stop()
    wait_until(lambda: not a.app.changes.caches_trusted() or a.app.store.notifications_live(), limit=5)
    tenant = b.create_tenant()
    revoked, _ = login_twice(b, tenant)
    assert allowed(a, revoked)
    redis.pause()
    try:
        b.auth.Logout(auth_pb2.LogoutRequest(), metadata=bearer(revoked), timeout=10)
        # A can no longer be sure: it bypasses its caches and reads the revocation itself.
        wait_until(lambda: not a.app.changes.caches_trusted(), limit=ENFORCED_WITHIN)
        assert not allowed(a, revoked)
    finally:
        redis.resume()


def test_an_instance_that_hears_neither_path_stops_trusting_its_caches_within_a_second(
    own_postgres: OwnPostgres, redis: RedisProcess, tmp_path: Path
) -> None:
    with running_server(env_for(own_postgres.url, redis, tmp_path)) as a:
        wait_until(a.app.store.notifications_live, limit=5)
        tenant = a.create_tenant()
        token = a.login(tenant).tokens.access_token
        assert allowed(a, token)
        redis.pause()
        try:
            assert a.app.changes.caches_trusted()  # the log is still read
            own_postgres.stop()
            took = wait_until(lambda: not a.app.changes.caches_trusted(), limit=ENFORCED_WITHIN)
            print(f"neither pub/sub nor the change log: caches distrusted after {took * 1000:.0f} ms")
            # Not trusted, the cached facts are not used: the Check fails closed.
            assert not allowed(a, token)
            own_postgres.start()
            wait_until(a.app.changes.caches_trusted, limit=10)
            assert allowed(a, token)
        finally:
            redis.resume()
