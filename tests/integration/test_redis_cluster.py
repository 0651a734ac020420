"""TAHOE_REDIS_URL=redis+cluster://…: a private Redis Cluster (three primaries:
tests/redis_cluster.py, never the shared Redis) and two instances on it.

- Rate limits are exact across hash tags: a tenant limit of N allows N Checks and
  refuses the rest, whichever instance is asked, while the per-address policy
  (`{global}`) and the per-tenant one (`{<tenant>}`) sit in different slots; one
  EVALSHA per slot, sent together.
- A revocation made through B reaches A over pub/sub on the cluster (A's change-log
  poll is stopped), whichever nodes the two subscribed on.
- Login throttling counts on the cluster and is shared by the instances.
- A slot in migration: the limiter follows ASK, then MOVED, with the counts intact.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2
from prometheus_client import REGISTRY

from tahoe_auth.domain.ratelimit import Policy, PolicyCheck, Strategy
from tahoe_auth.kernel.changes import SESSION_REVOKED
from tahoe_auth.store.limiter_backends import RedisLimiterBackend
from tahoe_auth.store.redis_store import RedisStore
from tahoe_auth.v1 import auth_pb2
from tests.integration.test_ext_authz import check, check_request
from tests.redis_cluster import PORTS, ClusterDeployment, cluster_deployment, node
from tests.support import (
    RunningServer,
    Tenant,
    call_error,
    error_reason,
    running_server,
    unavailable,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

WITHIN = 30.0  # two shared cores: every wait is for a condition
TENANT_LIMIT = 10
FREE_FAILURES = 5  # domain/throttle.py ACCOUNT_POLICY


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterDeployment]:
    import shutil

    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        unavailable("redis-server and redis-cli are not installed")
    workdir = tmp_path / "cluster"
    workdir.mkdir()
    with cluster_deployment(workdir) as deployment:
        yield deployment


@pytest.fixture
def pair(pg_env: dict[str, str], cluster: ClusterDeployment) -> Iterator[tuple[RunningServer, RunningServer]]:
    env = {**pg_env, "TAHOE_REDIS_URL": cluster.url()}
    with running_server(env) as a, running_server(env) as b:
        for server in (a, b):
            wait_until(server.app.store.notifications_live, limit=WITHIN)
        yield a, b


def outcome(server: RunningServer, token: str, address: str = "203.0.113.7") -> str:
    request = check_request(f"Bearer {token}")
    request.attributes.source.address.socket_address.address = address
    return str(code_pb2.Code.Name(check(server, request).status.code))


def limit_tenant(server: RunningServer, tenant: Tenant) -> None:
    settings = {"rate_limits": {"per_tenant": {"limit": TENANT_LIMIT, "period": 3600}}}
    with server.app.db.unit_of_work(tenant.id) as uow:
        uow.tenants.get(tenant.id).settings = settings
        server.app.notifier.tenant_changed(uow, tenant.id)
        uow.commit()


def knows_the_limit(server: RunningServer, tenant: Tenant) -> bool:
    return server.app.tenant_config.limits(tenant.id).policies["per_tenant"].limit == TENANT_LIMIT


def test_tags_are_in_different_slots_on_different_nodes(cluster: ClusterDeployment) -> None:
    """The premise of the other tests: `{global}` and a tenant's tag may be served by
    different nodes; the limiter then sends one call to each."""
    store = RedisStore(cluster.url(), timeout=2.0)
    limiter = RedisLimiterBackend(store.client)
    try:
        tenant, nodes = "", set()
        for i in range(50):  # a tenant tag served by another node than {global}
            tenant = f"t{i}"
            nodes = {
                store.client.nodes_manager.get_node_from_slot(store.client.keyslot(f"rl:{{{tag}}}:x")).port  # type: ignore[union-attr]
                for tag in ("global", tenant)
            }
            if len(nodes) == 2:
                break
        assert len(nodes) == 2
        checks = [
            PolicyCheck("rl:{global}:addr:a", Policy("per_address", 100, 3600.0, Strategy.GCRA)),
            PolicyCheck(f"rl:{{{tenant}}}:tenant", Policy("per_tenant", 3, 3600.0, Strategy.GCRA)),
        ]
        limiter.evaluate(checks, None)  # loads the script where needed
        cluster.reset_stats()
        results = [[o.allowed for o in limiter.evaluate(checks, None)] for _ in range(5)]
        # The tenant's 3 (one already spent above); the address counts the refused too.
        assert results == [[True, True], [True, True], [True, False], [True, False], [True, False]]
        assert cluster.commands().get("evalsha") == 10  # one per slot per request
        remaining = limiter.evaluate(checks[:1], None)[0].remaining
        assert remaining == 100 - 7, "the per-address limit counts every request its slot allowed"
    finally:
        limiter.close()
        store.close()


def test_a_slot_in_migration_is_followed_by_ask_then_moved(cluster: ClusterDeployment) -> None:
    """A resharding moves a slot's keys one by one: a key that has left answers ASK
    (this call only, after ASKING, on the importing node), then the slot's new owner
    answers MOVED. The limiter follows both with the key's count intact."""
    store = RedisStore(cluster.url(), timeout=2.0)
    limiter = RedisLimiterBackend(store.client)
    key = "rl:{tenant-m}:migrating"
    check = [PolicyCheck(key, Policy("per_tenant", 10, 3600.0, Strategy.FIXED_WINDOW))]
    with contextlib.ExitStack() as stack:
        stack.callback(store.close)
        stack.callback(limiter.close)
        nodes = {port: stack.enter_context(contextlib.closing(node(port))) for port in PORTS}
        assert [limiter.evaluate(check, None)[0].remaining for _ in range(3)] == [9, 8, 7]
        slot = store.client.keyslot(key)  # type: ignore[union-attr]
        source = store.client.nodes_manager.get_node_from_slot(slot).port  # type: ignore[union-attr]
        target = next(port for port in PORTS if port != source)
        ids = {port: str(client.execute_command("CLUSTER", "MYID")) for port, client in nodes.items()}
        nodes[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        nodes[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        nodes[source].execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", key)
        # The source answers ASK now (its copy has gone); the slot map still names it.
        assert limiter.evaluate(check, None)[0].remaining == 6
        keys_in_slot = {
            port: nodes[port].execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) for port in (source, target)
        }
        assert keys_in_slot == {source: 0, target: 1}, "counted on the importing node"
        for client in nodes.values():  # the migration ends: the target owns the slot
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        assert limiter.evaluate(check, None)[0].remaining == 5  # MOVED, then the map follows
        assert store.client.nodes_manager.get_node_from_slot(slot).port == target  # type: ignore[union-attr]
        assert limiter.evaluate(check, None)[0].remaining == 4


def test_rate_limits_are_exact_across_tags(pair: tuple[RunningServer, RunningServer]) -> None:
    a, b = pair
    limited = b.create_tenant()
    limit_tenant(b, limited)
    for server in (a, b):
        wait_until(functools.partial(knows_the_limit, server, limited), limit=WITHIN)
    token = b.login(limited).tokens.access_token
    outcomes = [outcome(server, token) for server in (a, b) * 8]
    assert outcomes == ["OK"] * TENANT_LIMIT + ["RESOURCE_EXHAUSTED"] * (16 - TENANT_LIMIT), outcomes
    assert not (a.app.limiter.degraded or b.app.limiter.degraded)
    # Another tenant, same address: its own budget, and the address's is far from spent.
    other = b.login(b.create_tenant()).tokens.access_token
    assert outcome(a, other) == "OK"


def test_a_revocation_reaches_the_other_instance_over_pubsub(pair: tuple[RunningServer, RunningServer]) -> None:
    a, b = pair
    a.app.changes.stop()
    heard_on_a: list[tuple[str, str]] = []
    a.app.changes.add_listener(lambda change, message: heard_on_a.append((change, message)))
    tenant = b.create_tenant()
    revoked, kept = (b.login(tenant).tokens.access_token for _ in range(2))
    assert outcome(a, revoked) == "OK" and outcome(a, kept) == "OK"  # cached on A
    b.auth.Logout(auth_pb2.LogoutRequest(), metadata=(("authorization", f"Bearer {revoked}"),), timeout=30)
    wait_until(lambda: any(change == SESSION_REVOKED for change, _ in heard_on_a), limit=WITHIN)
    wait_until(lambda: outcome(a, revoked) != "OK", limit=WITHIN)
    assert outcome(a, kept) == "OK"
    assert a.app.store.notifications_live()


def test_login_throttling_is_shared_on_the_cluster(pair: tuple[RunningServer, RunningServer]) -> None:
    a, b = pair
    fallbacks = throttle_fallbacks()
    tenant = a.create_tenant()
    bad = auth_pb2.LoginRequest(tenant=tenant.slug, email=tenant.owner_email, password="wrong password")
    for i in range(FREE_FAILURES):  # spread over both instances: one count
        server = (a, b)[i % 2]
        assert error_reason(call_error(server.auth.Login, bad, timeout=30)) == "INVALID_CREDENTIALS"
    for server in (a, b):
        throttled = call_error(server.auth.Login, bad, timeout=30)
        assert throttled.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, throttled
        assert error_reason(throttled) == "LOGIN_THROTTLED"
    assert throttle_fallbacks() == fallbacks, "the throttle fell back to memory"
    keys = []
    for port in PORTS:
        with contextlib.closing(node(port)) as client:
            keys += [str(k) for k in client.scan_iter(match="thr:{*:count")]
    assert keys, "no throttle count on any node"


def throttle_fallbacks() -> float:
    labels = {"site": "login_throttle", "action": "fallback"}
    return REGISTRY.get_sample_value("tahoe_store_failures_total", labels) or 0.0
