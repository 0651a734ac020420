from __future__ import annotations

from tahoe_auth.kernel.cache import TTLCache


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(10, clock)
    cache.put("a", 1, expires_at=105)
    assert cache.get("a") == 1
    clock.now = 105
    assert cache.get("a") is None


def test_bounded_least_recently_used_goes_first() -> None:
    cache: TTLCache[str, int] = TTLCache(2, Clock())
    cache.put("a", 1, 1e9)
    cache.put("b", 2, 1e9)
    cache.get("a")
    cache.put("c", 3, 1e9)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2


def test_drop_where_and_counters() -> None:
    cache: TTLCache[tuple[str, str], int] = TTLCache(10, Clock())
    cache.put(("t1", "x"), 1, 1e9)
    cache.put(("t2", "y"), 2, 1e9)
    cache.drop_where(lambda key: key[0] == "t1")
    assert cache.get(("t1", "x")) is None and cache.get(("t2", "y")) == 2
    assert (cache.hits, cache.misses) == (1, 1)
