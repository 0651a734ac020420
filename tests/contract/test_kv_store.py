"""One contract, two stores: the in-process MemoryStore and RedisStore on real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tahoe_auth.store.kv import KeyValueStore, MemoryStore
from tahoe_auth.store.redis_store import RedisStore


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[KeyValueStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    url = request.getfixturevalue("clean_redis")
    redis_store = RedisStore(url)
    yield redis_store
    redis_store.close()


def test_set_get_delete(store: KeyValueStore) -> None:
    assert store.get("k") is None
    store.set("k", "v")
    assert store.get("k") == "v"
    assert store.get_many(["k", "missing"]) == ["v", None]
    store.delete("k", "missing")
    assert store.get("k") is None


def test_values_expire(store: KeyValueStore) -> None:
    store.set("k", "v", ttl=0.2)
    remaining = store.ttl("k")
    assert remaining is not None and 0 < remaining <= 0.2
    time.sleep(0.3)
    assert store.get("k") is None and store.ttl("k") is None


def test_ttl_is_none_without_expiry(store: KeyValueStore) -> None:
    store.set("k", "v")
    assert store.ttl("k") is None


def test_incr_counts_and_keeps_the_first_expiry(store: KeyValueStore) -> None:
    assert store.incr("c", ttl=1.0) == 1
    assert store.incr("c", ttl=10) == 2
    remaining = store.ttl("c")
    assert remaining is not None and remaining <= 1.0  # a later ttl does not extend the window
    time.sleep(1.1)
    assert store.incr("c", ttl=10) == 1


def test_incr_is_atomic_under_concurrency(store: KeyValueStore) -> None:
    def bump() -> None:
        for _ in range(50):
            store.incr("n", ttl=30)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("n") == "400"


def test_publish_reaches_subscribers(store: KeyValueStore) -> None:
    received: list[tuple[str, str]] = []
    arrived = threading.Event()

    def listener(channel: str, message: str) -> None:
        if channel:
            received.append((channel, message))
            arrived.set()

    store.subscribe(listener)
    deadline = time.monotonic() + 5
    while not store.notifications_live() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.notifications_live()
    store.publish("session.revoked", "t1:s1")
    assert arrived.wait(1.0)
    assert received == [("session.revoked", "t1:s1")]


def test_ping(store: KeyValueStore) -> None:
    assert store.ping()
