"""Every committed change, delivered once to this instance's caches, whatever Redis does.

Changes arrive three ways: from this instance's own use cases (at once, after they
commit), from other instances over pub/sub (milliseconds later), and from polling the
change log in PostgreSQL (within `poll_interval`). The log is the one that cannot lose
anything; pub/sub only makes delivery fast. Each change carries its log id, so a
change that arrives twice is applied once.

Caches are trusted while either path is known to work: pub/sub heard recently (its
heartbeats count) or a poll succeeded recently. Otherwise a revocation could be
committed without this instance hearing of it, and callers read the database instead.

Log ids are allocated at insert, not at commit, so id 12 can become visible before
id 11. The poller therefore keeps a missing id open for `gap_wait` seconds before it
takes it for a rolled-back transaction; changes are written just before their
transaction commits, so a gap closes in milliseconds when it closes at all.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from tahoe_auth.kernel import changes
from tahoe_auth.kernel.changes import Listener
from tahoe_auth.kernel.metrics import CHANGE_FEED_APPLIED, CHANGE_FEED_LAG
from tahoe_auth.store.change_log import Change
from tahoe_auth.store.db import SYSTEM, Database
from tahoe_auth.store.kv import KeyValueStore
from tahoe_auth.store.models import utcnow

log = logging.getLogger(__name__)

DROP_EVERYTHING = ("", "")
CHANGE_FEED_THREAD = "change-feed"
BATCH = 500
POLL_STALLED = 2.0


class ChangeFeed:
    def __init__(
        self,
        db: Database,
        store: KeyValueStore,
        *,
        poll_interval: float = 0.25,
        trust_window: float = 0.75,
        gap_wait: float = 30.0,
        retention: float = 3600.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._store = store
        self.poll_interval = poll_interval
        self._trust_window = trust_window
        self._gap_wait = gap_wait
        self._retention = retention
        self._monotonic = monotonic
        self._listeners: list[Listener] = []
        self._applied = 0
        self._lock = threading.Lock()
        self._floor: int | None = None  # every id <= floor has been applied or is settled
        self._top = 0
        self._seen: set[int] = set()  # applied ids above the floor
        self._gaps: dict[int, float] = {}  # id -> when it was first missed
        self._last_poll: float | None = None
        self._polling_since_failure = True
        self._failed_since: float | None = None
        self._last_prune = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- wiring ---------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def on_published(self, channel: str, message: str) -> None:
        """The store's pub/sub subscriber."""
        if (channel, message) == DROP_EVERYTHING:
            self._subscription_interrupted()
            return
        decoded = changes.from_wire(message)
        if decoded is None:
            log.warning("ignoring a published change without an id on %s", channel)
            return
        self.deliver(decoded[0], channel, decoded[1])

    def deliver(self, change_id: int, channel: str, message: str) -> None:
        """A change with its log id, from this instance or from pub/sub."""
        with self._lock:
            fresh = self._claim(change_id)
        if fresh:
            self._dispatch(channel, message, "local_or_pubsub")

    # -- trust ----------------------------------------------------------------------

    def changes_applied(self) -> int:
        return self._applied

    def caches_trusted(self) -> bool:
        if self._store.notifications_live():
            return True
        last = self._last_poll
        return last is not None and self._monotonic() - last < self._trust_window

    # -- polling ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll_forever, name=CHANGE_FEED_THREAD, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def poll_once(self) -> int:
        """Read what the log holds past the floor and apply what is new; returns how many."""
        started = self._monotonic()
        with self._db.unit_of_work(SYSTEM) as uow:
            if self._floor is None:
                # Replay the recent past once: a transaction in flight while this instance
                # started may commit a change below today's highest id.
                cutoff = utcnow() - dt.timedelta(seconds=self._gap_wait * 2)
                settled = uow.changes.settled_before(cutoff)
                with self._lock:
                    self._floor = settled
                    self._top = max(self._top, settled)
                    self._seen = {i for i in self._seen if i > settled}
            rows: list[Change] = []
            while True:
                with self._lock:
                    after = max(self._floor or 0, rows[-1].id if rows else 0)
                batch = uow.changes.after(after, BATCH)
                rows.extend(batch)
                if len(batch) < BATCH:
                    break
        fresh = []
        with self._lock:
            for row in rows:
                if self._claim(row.id):
                    fresh.append(row)
            self._settle(self._monotonic())
        for row in fresh:
            self._dispatch(row.channel, row.message, "poll")
        self._poll_succeeded(started)
        return len(fresh)

    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
                self._prune_now_and_then()
            except Exception as exc:  # a database outage: keep polling, trust decays on its own
                self._poll_failed(exc)
            self._stop.wait(self.poll_interval)

    def _prune_now_and_then(self) -> None:
        now = self._monotonic()
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        with self._db.unit_of_work(SYSTEM) as uow:
            removed = uow.changes.prune(utcnow() - dt.timedelta(seconds=self._retention))
            uow.commit()
        if removed:
            log.debug("pruned %d change log rows", removed)

    # -- bookkeeping (callers hold the lock) ---------------------------------------------

    def _claim(self, change_id: int) -> bool:
        """True the first time `change_id` is offered."""
        floor = self._floor
        if (floor is not None and change_id <= floor) or change_id in self._seen:
            return False
        self._seen.add(change_id)
        self._gaps.pop(change_id, None)
        return True

    def _settle(self, now: float) -> None:
        floor = self._floor or 0
        top = max(self._seen, default=floor)
        for missing in range(max(floor, self._top) + 1, top):
            if missing not in self._seen:
                self._gaps.setdefault(missing, now)
        self._top = max(self._top, top)
        for gap, since in list(self._gaps.items()):
            if now - since > self._gap_wait:
                del self._gaps[gap]  # a rolled-back transaction's id
        self._floor = min(self._gaps) - 1 if self._gaps else max(floor, self._top)
        self._seen = {i for i in self._seen if i > self._floor}

    # -- health ------------------------------------------------------------------------

    def _poll_succeeded(self, started: float) -> None:
        self._last_poll = started
        CHANGE_FEED_LAG.set(self._monotonic() - started)
        if self._failed_since is not None:
            down_for = self._monotonic() - self._failed_since
            self._failed_since = None
            log.warning("change log readable again after %.1f s; missed changes applied", down_for)
            if down_for > self._retention / 2:
                # Rows older than the retention may be gone: what they said is unknowable.
                self._dispatch(*DROP_EVERYTHING, "resync")

    def _poll_failed(self, exc: Exception) -> None:
        if self._failed_since is None:
            self._failed_since = self._monotonic()
            log.warning("change log unreadable (%s); caches are trusted only while pub/sub is live", type(exc).__name__)

    def _subscription_interrupted(self) -> None:
        """Pub/sub reconnected or dropped: what it missed, the poll delivers, unless the
        poll is not working either (failing, or stalled for longer than POLL_STALLED: a
        poll that is merely late on a busy host still catches up)."""
        last = self._last_poll
        working = last is not None and self._failed_since is None
        if working and last is not None and self._monotonic() - last < max(POLL_STALLED, self._trust_window):
            return
        self._dispatch(*DROP_EVERYTHING, "resync")

    def _dispatch(self, channel: str, message: str, path: str) -> None:
        CHANGE_FEED_APPLIED.labels(path).inc()
        self._applied += 1  # before the listeners run: a fill racing with them must not land
        for listener in list(self._listeners):
            try:
                listener(channel, message)
            except Exception:  # one bad listener must not stop the others
                log.exception("change listener failed on %s", channel or "resync")
