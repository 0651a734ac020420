"""One contract for both rate-limit backends: the in-process one (the embedded default
and the fallback) and the Redis Lua one, on one Redis and on a 3-primary Redis Cluster.
Every strategy must answer exactly what the reference maths (domain.ratelimit.step)
answers and hold its limit under many concurrent clients. One server counts a request
in all of its policies or in none; a cluster does so per slot, erring strict (the
backend module's docstring)."""

from __future__ import annotations

import contextlib
import random
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from redis.crc import key_slot

from tahoe_auth.domain import ratelimit as rl
from tahoe_auth.domain.ratelimit import Policy, PolicyCheck, Strategy
from tahoe_auth.store.limiter_backends import LimiterBackend, MemoryLimiterBackend, RedisLimiterBackend
from tahoe_auth.store.redis_store import RedisClient, redis_client
from tests.redis_cluster import PORTS as CLUSTER_PORTS
from tests.redis_cluster import cluster_deployment
from tests.redis_cluster import node as cluster_node
from tests.support import unavailable

S = rl.US
T0 = 1_900_800_000 * S
STRATEGIES = list(Strategy)

BackendFactory = Callable[[], LimiterBackend]


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private 3-primary cluster for this module (emptied before each use)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        unavailable("redis-server and redis-cli are not installed")
    with cluster_deployment(tmp_path_factory.mktemp("cluster")) as deployment:
        yield deployment.url()


def _factory(request: pytest.FixtureRequest, kind: str) -> Iterator[BackendFactory]:
    if kind == "memory":
        shared = MemoryLimiterBackend()
        yield lambda: shared
        return
    if kind == "cluster":
        url = request.getfixturevalue("cluster_url")
        for port in CLUSTER_PORTS:
            with contextlib.closing(cluster_node(port)) as node:
                node.flushall()
    else:
        url = request.getfixturevalue("clean_redis")
    made: list[tuple[RedisClient, RedisLimiterBackend]] = []

    def factory() -> LimiterBackend:
        client = redis_client(url, timeout=5)
        made.append((client, RedisLimiterBackend(client)))
        return made[-1][1]

    yield factory
    for client, backend in made:
        backend.close()
        client.close()


@pytest.fixture(params=["memory", "redis", "cluster"])
def make_backend(request: pytest.FixtureRequest) -> Iterator[BackendFactory]:
    """A factory: each call is another client of the same state (another instance)."""
    yield from _factory(request, request.param)


@pytest.fixture(params=["memory", "redis"])
def make_single_server_backend(request: pytest.FixtureRequest) -> Iterator[BackendFactory]:
    """As make_backend, where every key of a request is on one server."""
    yield from _factory(request, request.param)


@pytest.fixture
def make_cluster_backend(request: pytest.FixtureRequest) -> Iterator[BackendFactory]:
    yield from _factory(request, "cluster")


def reference(policies: list[PolicyCheck], requests: list[tuple[int, int]]) -> list[list[rl.Outcome]]:
    state: dict[str, tuple[int, ...]] = {}
    answers = []
    for now, cost in requests:
        steps = [rl.step(c.policy, state.get(c.key), now, cost) for c in policies]
        outcomes = [s[0] for s in steps]
        if rl.overall_allowed(policies, outcomes):
            for check, (outcome, new, _) in zip(policies, steps, strict=True):
                if outcome.allowed:
                    state[check.key] = new
        answers.append(outcomes)
    return answers


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_matches_the_reference_maths(make_backend: BackendFactory, strategy: Strategy) -> None:
    rng = random.Random(f"{strategy}")
    policies = [
        PolicyCheck("rl:{t}:a", Policy("a", 7, 10.0, strategy)),
        PolicyCheck("rl:{t}:b", Policy("b", 20, 60.0, strategy)),
        PolicyCheck("rl:{t}:c", Policy("c", 3, 1.0, strategy, shadow=True)),
    ]
    requests, now = [], T0 + rng.randrange(S)
    for _ in range(400):
        now += rng.choice([0, 0, 1, 997, 150_000, 700_000, 3 * S, 11 * S])
        requests.append((now, rng.choice([1, 1, 1, 2, 5])))
    backend = make_backend()
    got = [backend.evaluate(policies, now, cost) for now, cost in requests]
    assert got == reference(policies, requests)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_window_edges(make_backend: BackendFactory, strategy: Strategy) -> None:
    backend = make_backend()
    check = [PolicyCheck("rl:{t}:edge", Policy("edge", 10, 60.0, strategy))]
    before = sum(backend.evaluate(check, T0 + 60 * S - S // 2)[0].allowed for _ in range(15))
    after = sum(backend.evaluate(check, T0 + 60 * S + S // 2)[0].allowed for _ in range(15))
    assert before == 10
    # fixed: a fresh window (the documented 2x edge); sliding: the previous window
    # still weighs ~10, so nothing; gcra: no edge, nothing refilled in 1 s.
    assert after == {Strategy.FIXED_WINDOW: 10, Strategy.SLIDING_WINDOW: 0, Strategy.GCRA: 0}[strategy]
    later = sum(backend.evaluate(check, T0 + 90 * S)[0].allowed for _ in range(15))
    # 30 s on: fixed still full; sliding: previous weighs 5 -> 5 fit; gcra: 5 refilled.
    assert later == {Strategy.FIXED_WINDOW: 0, Strategy.SLIDING_WINDOW: 5, Strategy.GCRA: 5}[strategy]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_limit_holds_exactly_under_concurrent_clients(make_backend: BackendFactory, strategy: Strategy) -> None:
    """32 clients (separate connections: separate instances) race for 100 requests."""
    limit, clients, per_client = 100, 32, 8
    check = [PolicyCheck("rl:{t}:race", Policy("race", limit, 3600.0, strategy))]
    backends = [make_backend() for _ in range(clients)]
    barrier = threading.Barrier(clients)

    def client(index: int) -> int:
        barrier.wait()
        return sum(backends[index].evaluate(check, T0 + 1800 * S)[0].allowed for _ in range(per_client))

    with ThreadPoolExecutor(clients) as pool:
        admitted = sum(pool.map(client, range(clients)))
    assert admitted == limit


def test_several_policies_in_one_call_count_all_or_nothing(make_single_server_backend: BackendFactory) -> None:
    backend = make_single_server_backend()
    address = PolicyCheck("rl:{global}:addr:1.2.3.4", Policy("per_address", 3, 60.0, Strategy.FIXED_WINDOW))
    tenant = PolicyCheck("rl:{t}:tenant", Policy("per_tenant", 100, 60.0, Strategy.GCRA))
    for _ in range(3):
        assert all(o.allowed for o in backend.evaluate([address, tenant], T0))
    denied = backend.evaluate([address, tenant], T0)
    assert [o.allowed for o in denied] == [False, True]
    # The denied request took nothing from the tenant's bucket: 97 left, not 96.
    assert backend.evaluate([tenant], T0)[0].remaining == 96


def test_policies_in_two_slots_count_per_slot_and_err_strict(make_cluster_backend: BackendFactory) -> None:
    """{global} and {t} are two slots: a request refused by one slot's policy is still
    counted by the other's, so a later request may be refused early, never let over."""
    backend = make_cluster_backend()
    assert key_slot(b"rl:{global}:addr:1.2.3.4") != key_slot(b"rl:{t}:tenant")
    address = PolicyCheck("rl:{global}:addr:1.2.3.4", Policy("per_address", 3, 60.0, Strategy.FIXED_WINDOW))
    other_address = PolicyCheck("rl:{global}:addr:5.6.7.8", Policy("per_address", 3, 60.0, Strategy.FIXED_WINDOW))
    tenant = PolicyCheck("rl:{t}:tenant", Policy("per_tenant", 5, 60.0, Strategy.FIXED_WINDOW))
    answers = [backend.evaluate([address, tenant], T0) for _ in range(6)]
    assert [rl.overall_allowed([address, tenant], a) for a in answers] == [True] * 3 + [False] * 3
    # Refused by its address, the 4th and 5th still spent the tenant's budget (the
    # 6th found it spent): another address now gets nothing, where one server gives 2.
    assert [a[1].allowed for a in answers] == [True] * 5 + [False]
    assert not rl.overall_allowed([other_address, tenant], backend.evaluate([other_address, tenant], T0))
    assert backend.evaluate([tenant], T0)[0].remaining == 0


def test_shadow_policies_count_but_never_deny(make_backend: BackendFactory) -> None:
    backend = make_backend()
    shadow = PolicyCheck("rl:{t}:shadow", Policy("s", 2, 60.0, Strategy.FIXED_WINDOW, shadow=True))
    enforced = PolicyCheck("rl:{t}:enf", Policy("e", 100, 60.0, Strategy.FIXED_WINDOW))
    results = [backend.evaluate([shadow, enforced], T0) for _ in range(4)]
    decisions = [rl.decide([shadow, enforced], r) for r in results]
    assert all(d.allowed for d in decisions)
    assert [d.shadow_hits for d in decisions] == [(), (), ("s",), ("s",)]
    assert backend.evaluate([enforced], T0)[0].remaining == 95


def open_connections(client: redis.Redis, name: str) -> int:
    return sum(1 for entry in client.client_list() if entry["name"] == name)


def test_redis_connections_of_ended_threads_and_at_close_are_closed(clean_redis: str) -> None:
    """The backend keeps a connection per thread outside redis-py's pool, so it closes
    them itself: an ended thread's when another thread opens one, the rest at close."""
    observer = redis.Redis.from_url(clean_redis)
    backend = RedisLimiterBackend(redis.Redis.from_url(clean_redis, client_name="limiter-under-test"))
    check = [PolicyCheck("rl:{t}:threads", Policy("c", 100, 60.0, Strategy.FIXED_WINDOW))]
    for _ in range(3):  # three threads, one after the other
        thread = threading.Thread(target=backend.evaluate, args=(check, None))
        thread.start()
        thread.join()
    assert open_connections(observer, "limiter-under-test") == 1  # the last thread's
    backend.evaluate(check, None)
    assert open_connections(observer, "limiter-under-test") == 1  # this thread's
    backend.close()
    assert open_connections(observer, "limiter-under-test") == 0
    observer.close()


def test_redis_server_clock(clean_redis: str) -> None:
    backend = RedisLimiterBackend(redis.Redis.from_url(clean_redis))
    check = [PolicyCheck("rl:{t}:clock", Policy("c", 2, 3600.0, Strategy.GCRA))]
    assert [backend.evaluate(check, None)[0].allowed for _ in range(3)] == [True, True, False]
    retry = backend.evaluate(check, None)[0].retry_us
    assert 1790 * S < retry <= 1800 * S


def test_redis_keys_expire(clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis)
    backend = RedisLimiterBackend(client)
    for strategy in STRATEGIES:
        backend.evaluate([PolicyCheck(f"rl:{{t}}:{strategy}", Policy("x", 5, 10.0, strategy))], None)
        assert 0 < client.pttl(f"rl:{{t}}:{strategy}") <= 20_000
