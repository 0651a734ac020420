"""The shared fast store: counters, flags with expiry, and change notifications.

Two implementations pass one contract suite (tests/contract): RedisStore, shared by
every instance, and MemoryStore, for a single instance with no Redis (the embedded
default). Keys are plain strings; callers put the tenant in every tenant-bound key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from tahoe_auth.domain.errors import Unavailable
from tahoe_auth.kernel.changes import Listener

# A Listener is called with (channel, message) for every published message, or with
# ("", "") when notifications may have been missed (a reconnect, or a silence).


class StoreUnavailable(Unavailable):
    """The store could not be reached; each caller decides to fail open or closed.

    An `Unavailable` like any other: callers hear the generic `message`; the driver's
    words stay in `detail` (and `str()`) for logs."""

    MESSAGE = "a backing store is unavailable; retry shortly"

    def __init__(self, detail: str = "") -> None:
        super().__init__(self.MESSAGE)
        self.detail = f"store unavailable: {detail}" if detail else "store unavailable"
        self._raw = detail

    def __str__(self) -> str:
        return self._raw or self.message


class KeyValueStore(Protocol):
    def get(self, key: str) -> str | None: ...

    def get_many(self, keys: list[str]) -> list[str | None]: ...

    def set(self, key: str, value: str, ttl: float | None = None) -> None: ...

    def delete(self, *keys: str) -> None: ...

    def incr(self, key: str, ttl: float) -> int:
        """Add one; the key expires `ttl` seconds after it was created."""
        ...

    def ttl(self, key: str) -> float | None:
        """Seconds until the key expires; None when absent or without expiry."""
        ...

    def publish(self, channel: str, message: str) -> None: ...

    def subscribe(self, listener: Listener) -> None: ...

    def notifications_live(self) -> bool:
        """False while published changes might not reach this instance. The change
        feed (services/change_feed.py) trusts caches while this or its poll is live."""
        ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class MemoryStore:
    """In-process store: correct for one instance, shares nothing with others."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[str, tuple[str, float | None]] = {}
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def _live(self, key: str) -> tuple[str, float | None] | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= self._clock():
            del self._data[key]
            return None
        return entry

    def get(self, key: str) -> str | None:
        with self._lock:
            entry = self._live(key)
        return None if entry is None else entry[0]

    def get_many(self, keys: list[str]) -> list[str | None]:
        return [self.get(k) for k in keys]

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        with self._lock:
            self._data[key] = (value, None if ttl is None else self._clock() + ttl)

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def incr(self, key: str, ttl: float) -> int:
        with self._lock:
            entry = self._live(key)
            if entry is None:
                self._data[key] = ("1", self._clock() + ttl)
                return 1
            value = int(entry[0]) + 1
            self._data[key] = (str(value), entry[1])
            return value

    def ttl(self, key: str) -> float | None:
        with self._lock:
            entry = self._live(key)
        if entry is None or entry[1] is None:
            return None
        return max(0.0, entry[1] - self._clock())

    def publish(self, channel: str, message: str) -> None:
        for listener in list(self._listeners):
            listener(channel, message)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def notifications_live(self) -> bool:
        return True

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        self._listeners.clear()
