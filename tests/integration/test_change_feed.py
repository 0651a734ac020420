"""The change feed on PostgreSQL: every committed change applied exactly once, including
one that commits after a later one (ids are taken at insert, not at commit), and no
wait forever for the id of a transaction that rolled back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tahoe_auth.kernel import changes
from tahoe_auth.kernel.changes import ChangeNotifier
from tahoe_auth.services.change_feed import ChangeFeed
from tahoe_auth.store.db import SYSTEM, Database
from tahoe_auth.store.kv import MemoryStore

pytestmark = pytest.mark.postgres


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(clean_pg: str) -> Iterator[Database]:
    database = Database(clean_pg)
    try:
        yield database
    finally:
        database.dispose()


def feed_for(db: Database, clock: Clock | None = None) -> tuple[ChangeFeed, list[tuple[str, str]]]:
    heard: list[tuple[str, str]] = []
    feed = ChangeFeed(db, MemoryStore(), gap_wait=30, monotonic=clock or Clock())
    feed.add_listener(lambda channel, message: heard.append((channel, message)))
    return feed, heard


def record(db: Database, message: str) -> None:
    with db.unit_of_work(SYSTEM) as uow:
        uow.record_change(changes.TENANT_CHANGED, message)
        uow.commit()


def test_a_change_that_commits_after_a_later_one_is_still_applied(db: Database) -> None:
    feed, heard = feed_for(db)
    feed.poll_once()
    with db.unit_of_work(SYSTEM) as slow:
        slow.record_change(changes.TENANT_CHANGED, "slow")  # the lower id, not yet committed
        record(db, "fast")
        assert feed.poll_once() == 1
        slow.commit()
    assert feed.poll_once() == 1
    assert heard == [(changes.TENANT_CHANGED, "fast"), (changes.TENANT_CHANGED, "slow")]
    assert feed.poll_once() == 0


def test_the_id_of_a_rolled_back_change_is_given_up_after_a_while(db: Database) -> None:
    clock = Clock()
    feed, heard = feed_for(db, clock)
    feed.poll_once()
    with db.unit_of_work(SYSTEM) as doomed:
        doomed.record_change(changes.TENANT_CHANGED, "never")
    record(db, "after")
    feed.poll_once()
    floor = feed._floor
    clock.now += 31
    feed.poll_once()
    assert feed._floor is not None and floor is not None and feed._floor > floor
    assert heard == [(changes.TENANT_CHANGED, "after")]


def test_each_change_is_applied_once_whichever_paths_deliver_it(db: Database) -> None:
    store = MemoryStore()
    feed = ChangeFeed(db, store)
    heard: list[tuple[str, str]] = []
    feed.add_listener(lambda channel, message: heard.append((channel, message)))
    notifier = ChangeNotifier(store)
    notifier.deliver_locally(feed)
    store.subscribe(feed.on_published)  # the publish comes back to this instance too
    feed.poll_once()
    with db.unit_of_work(SYSTEM) as uow:
        notifier.user_changed(uow, "t1", "u1")
        uow.commit()
    feed.poll_once()
    assert heard == [(changes.USER_CHANGED, "t1:u1")]


def test_a_new_instance_replays_the_recent_past_once(db: Database) -> None:
    """A change whose transaction was in flight while the instance started must not be
    skipped as 'older than what was there'."""
    record(db, "recent")
    feed, heard = feed_for(db)
    feed.poll_once()
    feed.poll_once()
    assert heard == [(changes.TENANT_CHANGED, "recent")]
