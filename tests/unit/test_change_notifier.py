"""The notifier records each change in the caller's transaction and delivers it only
after the commit; a store that cannot publish costs one timeout, not one per change."""

from __future__ import annotations

from collections.abc import Callable

from tahoe_auth.kernel import changes
from tahoe_auth.kernel.changes import ChangeNotifier
from tahoe_auth.store.kv import StoreUnavailable


class Journal:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []
        self.callbacks: list[Callable[[], None]] = []

    def record_change(self, channel: str, message: str) -> int:
        self.rows.append((channel, message))
        return len(self.rows)

    def after_commit(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def commit(self) -> None:
        for callback in self.callbacks:
            callback()


class Sink:
    def __init__(self) -> None:
        self.delivered: list[tuple[int, str, str]] = []

    def deliver(self, change_id: int, channel: str, message: str) -> None:
        self.delivered.append((change_id, channel, message))


class HungStore:
    def __init__(self) -> None:
        self.attempts = 0

    def publish(self, channel: str, message: str) -> None:
        self.attempts += 1
        raise StoreUnavailable("Timeout reading from socket")

    def subscribe(self, listener: object) -> None:
        pass


def test_changes_are_recorded_at_once_and_delivered_after_the_commit() -> None:
    store, sink, journal = HungStore(), Sink(), Journal()
    notifier = ChangeNotifier(store)
    notifier.deliver_locally(sink)
    notifier.sessions_revoked(journal, "t1", ["s1", "s2"])
    assert journal.rows == [(changes.SESSION_REVOKED, "t1:s1"), (changes.SESSION_REVOKED, "t1:s2")]
    assert sink.delivered == []
    journal.commit()
    assert sink.delivered == [(1, changes.SESSION_REVOKED, "t1:s1"), (2, changes.SESSION_REVOKED, "t1:s2")]


def test_after_a_failed_publish_the_next_ones_are_skipped_for_a_while() -> None:
    now = [100.0]
    store, sink = HungStore(), Sink()
    notifier = ChangeNotifier(store, monotonic=lambda: now[0])
    notifier.deliver_locally(sink)
    journal = Journal()
    notifier.sessions_revoked(journal, "t1", [f"s{i}" for i in range(20)])
    journal.commit()
    assert store.attempts == 1 and len(sink.delivered) == 20
    now[0] += ChangeNotifier.PUBLISH_BACKOFF + 0.01
    journal = Journal()
    notifier.user_changed(journal, "t1", "u1")
    journal.commit()
    assert store.attempts == 2


def test_the_published_message_carries_the_change_id() -> None:
    assert changes.from_wire(changes.to_wire(42, "t1:s1")) == (42, "t1:s1")
    assert changes.from_wire(changes.to_wire(7, "")) == (7, "")
    assert changes.from_wire("t1:s1") is None
