"""A RedisStore whose Redis goes away: calls fail fast with StoreUnavailable, the
subscription reports itself not live (so caches are bypassed), and both recover."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tahoe_auth.store.kv import StoreUnavailable
from tahoe_auth.store.redis_store import RedisStore
from tests.servers import redis_server


def test_outage_is_fast_visible_and_recovers(tmp_path: Path) -> None:
    with redis_server(tmp_path) as own:
        store = RedisStore(own.url)
        store.subscribe(lambda channel, message: None)
        assert store.subscribed.wait(5)
        store.set("k", "v")
        own.stop()
        started = time.perf_counter()
        with pytest.raises(StoreUnavailable):
            store.get("k")
        assert time.perf_counter() - started < 0.5
        deadline = time.monotonic() + 5
        while store.notifications_live() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not store.notifications_live()
        own.start()
        assert store.subscribed.wait(10)
        store.set("k", "back")
        assert store.get("k") == "back"
        store.close()
