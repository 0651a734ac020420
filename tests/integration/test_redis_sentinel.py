"""TAHOE_REDIS_URL=redis+sentinel://…: a private Sentinel deployment (a master, a
replica, three sentinels: tests/redis_sentinel.py, never the shared Redis) and two
instances on it. Across a failover, whether asked for (SENTINEL FAILOVER: the old
master is demoted, and stays up) or forced (the master SIGKILLed), revocations hold
(one made before, one made after), pub/sub follows the new master, the rate limits are
counted there, and no call fails with INTERNAL.

A's change-log poll is stopped: what B revokes reaches A through pub/sub alone (or A
distrusts its caches and reads the database, as when Redis is out)."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from google.rpc import code_pb2
from prometheus_client import REGISTRY

from tahoe_auth.domain.ratelimit import Policy, PolicyCheck, Strategy
from tahoe_auth.kernel.changes import SESSION_REVOKED
from tahoe_auth.store.limiter_backends import CHECK_SCRIPT, RedisLimiterBackend
from tahoe_auth.store.redis_store import RedisStore, channel_for
from tahoe_auth.v1 import auth_pb2
from tests.integration.test_ext_authz import check, check_request
from tests.redis_sentinel import HOST, MASTER_PORT, REPLICA_PORT, SentinelDeployment, sentinel_deployment
from tests.support import RunningServer, Tenant, bearer, running_server, unavailable, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

# Generous: two cores, shared with other runs; every wait is for a condition.
SWITCH_WITHIN = 30.0
ENFORCED_WITHIN = 5.0
TENANT_LIMIT = 10  # Checks an hour for the rate-limited tenant


def retries() -> float:
    return REGISTRY.get_sample_value("tahoe_store_failures_total", {"site": "redis_failover", "action": "retry"}) or 0.0


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelDeployment]:
    import shutil

    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    workdir = tmp_path / "sentinel"
    workdir.mkdir()
    with sentinel_deployment(workdir) as deployment:
        yield deployment


@pytest.fixture
def pair(pg_env: dict[str, str], sentinels: SentinelDeployment) -> Iterator[tuple[RunningServer, RunningServer]]:
    env = {**pg_env, "TAHOE_REDIS_URL": sentinels.url()}
    with running_server(env) as a, running_server(env) as b:
        for server in (a, b):
            wait_until(server.app.store.notifications_live, limit=SWITCH_WITHIN)
        yield a, b


class Calls:
    """Every gRPC outcome of the test, by code name, from any thread."""

    def __init__(self) -> None:
        self.codes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _record(self, code: str) -> None:
        with self._lock:
            self.codes[code] += 1

    def check(self, server: RunningServer, token: str) -> str:
        """Check's answer for `token`: OK, or the code it refuses with."""
        try:
            response = check(server, check_request(f"Bearer {token}"))
        except grpc.RpcError as error:
            self._record(error.code().name)
            return str(error.code().name)
        code = code_pb2.Code.Name(response.status.code)
        self._record(code)
        return code

    def allowed(self, server: RunningServer, token: str) -> bool:
        return self.check(server, token) == "OK"

    def logout(self, server: RunningServer, token: str) -> None:
        try:
            server.auth.Logout(auth_pb2.LogoutRequest(), metadata=bearer(token), timeout=30)
        except grpc.RpcError as error:
            self._record(error.code().name)
            raise
        self._record("OK")


def limit_tenant(server: RunningServer, tenant: Tenant) -> None:
    """TENANT_LIMIT Checks an hour for the tenant (GCRA: one more each 3600/limit s, no
    refill worth counting during the test)."""
    settings = {"rate_limits": {"per_tenant": {"limit": TENANT_LIMIT, "period": 3600}}}
    with server.app.db.unit_of_work(tenant.id) as uow:
        uow.tenants.get(tenant.id).settings = settings
        server.app.notifier.tenant_changed(uow, tenant.id)
        uow.commit()


def knows_the_limit(server: RunningServer, tenant: Tenant) -> bool:
    return server.app.tenant_config.limits(tenant.id).policies["per_tenant"].limit == TENANT_LIMIT


@contextlib.contextmanager
def checks_meanwhile(calls: Calls, servers: tuple[RunningServer, ...], token: str) -> Iterator[list[bool]]:
    """Check `token` on each server every 0.1 s while the block runs (the failover
    happens under traffic); yields the results."""
    results: list[bool] = []
    stop = threading.Event()

    def run(server: RunningServer) -> None:
        while not stop.wait(0.1):
            results.append(calls.allowed(server, token))

    threads = [threading.Thread(target=run, args=(server,), daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    try:
        yield results
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def follows(server: RunningServer, port: int) -> bool:
    """The instance's store knows the sentinels name the master at `port`."""
    return server.app.store.master == (HOST, port)  # type: ignore[attr-defined]


def subscribers(port: int, channel: str) -> int:
    with contextlib.closing(redis.Redis(HOST, port, socket_timeout=2, decode_responses=True)) as client:
        return int(client.pubsub_numsub(channel)[0][1])


def replicated(port: int) -> None:
    """Everything written to the master at `port` is on its replica (WAIT)."""
    with contextlib.closing(redis.Redis(HOST, port, socket_timeout=30)) as client:
        assert client.execute_command("WAIT", 1, 20_000) >= 1


def script_loaded(port: int) -> bool:
    import hashlib

    sha = hashlib.sha1(CHECK_SCRIPT.encode()).hexdigest()
    with contextlib.closing(redis.Redis(HOST, port, socket_timeout=2)) as client:
        return bool(client.script_exists(sha)[0])


@pytest.mark.parametrize("fault", ["failover", "killed"])
def test_revocations_and_rate_limits_hold_across_a_failover(
    pair: tuple[RunningServer, RunningServer], sentinels: SentinelDeployment, fault: str
) -> None:
    a, b = pair
    calls = Calls()
    channel = channel_for(sentinels.url())
    a.app.changes.stop()
    heard_on_a: list[tuple[str, str]] = []
    a.app.changes.add_listener(lambda change, message: heard_on_a.append((change, message)))

    tenant = b.create_tenant()
    before, after, kept = (b.login(tenant).tokens.access_token for _ in range(3))
    assert all(calls.allowed(a, token) for token in (before, after, kept))  # cached on A
    calls.logout(b, before)
    wait_until(lambda: not calls.allowed(a, before), limit=ENFORCED_WITHIN)

    # A tenant allowed TENANT_LIMIT Checks, counted in Redis: 4 before the failover.
    limited = b.create_tenant()
    limit_tenant(b, limited)
    for server in (a, b):
        wait_until(functools.partial(knows_the_limit, server, limited), limit=ENFORCED_WITHIN)
    limited_token = b.login(limited).tokens.access_token
    assert [calls.check(server, limited_token) for server in (a, b, a, b)] == ["OK"] * 4
    assert subscribers(MASTER_PORT, channel) == 2

    with checks_meanwhile(calls, (a, b), kept) as during:
        replicated(MASTER_PORT)  # what the instances wrote is on the replica, to be promoted
        new = sentinels.failover() if fault == "failover" else sentinels.kill_master()
        assert new == REPLICA_PORT
        # Both instances follow: pub/sub on the new master, the limiter back on Redis.
        for server in (a, b):
            wait_until(functools.partial(follows, server, new), limit=SWITCH_WITHIN)
            wait_until(server.app.store.notifications_live, limit=SWITCH_WITHIN)
        wait_until(lambda: subscribers(new, channel) == 2, limit=SWITCH_WITHIN)
        wait_until(lambda: not (a.app.limiter.degraded or b.app.limiter.degraded), limit=SWITCH_WITHIN)
        wait_until(lambda: len(during) >= 10, limit=SWITCH_WITHIN)  # Checks ran on the new master too
    print(f"{fault}: {len(during)} Checks during the failover, {retries():.0f} retried calls, {dict(calls.codes)}")
    assert all(during), "a valid token was refused during the failover"

    # Revoked before the failover: still refused, on both.
    assert not calls.allowed(a, before) and not calls.allowed(b, before)

    # Revoked after: A hears it over pub/sub on the new master (its poll is stopped).
    heard_on_a.clear()
    calls.logout(b, after)
    wait_until(lambda: not calls.allowed(a, after), limit=ENFORCED_WITHIN)
    wait_until(lambda: any(change == SESSION_REVOKED for change, _ in heard_on_a), limit=ENFORCED_WITHIN)
    assert calls.allowed(a, kept) and calls.allowed(b, kept)

    # The tenant's budget carried over (replicated) and is counted on the new master:
    # TENANT_LIMIT Checks in all, then 429, whichever instance is asked.
    outcomes = [calls.check(server, limited_token) for server in (a, b) * 4]
    assert outcomes == ["OK"] * (TENANT_LIMIT - 4) + ["RESOURCE_EXHAUSTED"] * (8 - TENANT_LIMIT + 4), outcomes
    assert not (a.app.limiter.degraded or b.app.limiter.degraded)
    assert script_loaded(new), "the rate limiter never ran on the new master"

    assert "INTERNAL" not in calls.codes, calls.codes
    assert set(calls.codes) <= {"OK", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED"}, calls.codes


def test_a_demoted_master_answering_readonly_costs_one_retry_not_an_error(sentinels: SentinelDeployment) -> None:
    """The sentinels name a master that has become a replica (as just before they
    learn of a failover): its READONLY answer closes the connection, and the call is
    tried once more, on the master they name then. Nothing is counted twice."""
    store = RedisStore(sentinels.url(), timeout=2.0)
    limiter = RedisLimiterBackend(store.client)
    pool = store.client.connection_pool
    manager = pool.sentinel_manager  # type: ignore[attr-defined]
    # The store's watch would correct the stale answer by itself: only the retry here.
    store._stop.set()
    assert store._watch is not None
    store._watch.join()
    real = manager.discover_master
    stale = [0]

    def discover(service: str) -> tuple[str, int]:
        if stale[0] > 0:
            stale[0] -= 1
            return HOST, REPLICA_PORT
        return real(service)  # type: ignore[no-any-return]

    manager.discover_master = discover
    policy = PolicyCheck("t:{ro}:limit", Policy("per_tenant", 5, 60.0, Strategy.FIXED_WINDOW))
    try:
        retried = retries()
        stale[0] = 1
        assert store.incr("t:{ro}:n", 60) == 1
        assert retries() == retried + 1
        assert store.get("t:{ro}:n") == "1"  # the READONLY try wrote nothing

        stale[0] = 1
        first = limiter.evaluate([policy], None)
        assert retries() == retried + 2
        assert first[0].allowed and first[0].remaining == 4  # counted once
        assert limiter.evaluate([policy], None)[0].remaining == 3
        assert script_loaded(MASTER_PORT)

        stale[0] = 1
        store.publish("tahoe.test", "hello")  # publish and set take the same path
        store.set("t:{ro}:k", "v", ttl=60)
        assert store.get("t:{ro}:k") == "v"
        assert retries() == retried + 3
    finally:
        limiter.close()
        store.close()
