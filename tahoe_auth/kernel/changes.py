"""Change notifications that every instance applies to its caches within a second.

A change is written to the change log in the transaction that makes it (the
ChangeJournal, a unit of work), then, once committed, applied to this instance's own
caches at once and published on the key-value store's pub/sub: the fast path for the
others. Pub/sub may lose a message (a hung, killed or restarted Redis); the log does
not, and every instance polls it (services/change_feed.py), so a committed change
reaches every cache whatever Redis does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from tahoe_auth.domain.errors import Unavailable

# Called with (channel, message) for every change, or with ("", "") when changes may
# have been missed and cannot be recovered: drop every cache.
Listener = Callable[[str, str], None]


class Channel(Protocol):
    """Where changes travel between instances (the key-value store's pub/sub)."""

    def publish(self, channel: str, message: str) -> None: ...

    def subscribe(self, listener: Listener) -> None: ...


class ChangeJournal(Protocol):
    """The transaction a change is made in (a unit of work)."""

    def record_change(self, channel: str, message: str) -> int:
        """Append to the change log in this transaction; returns the change's id."""
        ...

    def after_commit(self, callback: Callable[[], None]) -> None: ...


class ChangeSink(Protocol):
    """This instance's caches, reached through the change feed (which drops repeats)."""

    def deliver(self, change_id: int, channel: str, message: str) -> None: ...


class CacheTrust(Protocol):
    """Whether caches may be read and filled. A filler takes `changes_applied()` before
    it reads the database and puts only if it is unchanged after: otherwise a change
    applied meanwhile could be overwritten by what was read before it."""

    def caches_trusted(self) -> bool:
        """False while a committed change might not have reached this instance: caches
        must be bypassed then."""
        ...

    def changes_applied(self) -> int: ...


class ChangeListener(Protocol):
    """A cache that drops what a change makes stale. The composition root (app.py
    wire_changes) registers every one with the change feed."""

    def apply_change(self, channel: str, message: str) -> None: ...


log = logging.getLogger(__name__)

SESSION_REVOKED = "session.revoked"
USER_CHANGED = "user.changed"
TENANT_CHANGED = "tenant.changed"
KEYS_CHANGED = "keys.changed"
CREDENTIAL_REVOKED = "credential.revoked"
SERVICE_CHANGED = "service.changed"
PLANS_CHANGED = "usage.plans_changed"


def to_wire(change_id: int, message: str) -> str:
    """The published message: the change's id travels with it, so that a receiver
    applies each change once whether it arrives by pub/sub, by polling, or both."""
    return f"{change_id} {message}"


def from_wire(published: str) -> tuple[int, str] | None:
    head, _, message = published.partition(" ")
    return (int(head), message) if head.isdigit() else None


class ChangeNotifier:
    # After a failed publish, skip publishing for this long: a hung Redis would otherwise
    # hold every change's caller for a timeout per change, and the log delivers anyway.
    PUBLISH_BACKOFF = 1.0

    def __init__(self, channel: Channel, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._channel = channel
        self._sinks: list[ChangeSink] = []
        self._monotonic = monotonic
        self._publish_after = 0.0

    def deliver_locally(self, sink: ChangeSink) -> None:
        """Also hand every committed change to `sink` in this process, before publishing it."""
        self._sinks.append(sink)

    def _record(self, journal: ChangeJournal, channel: str, message: str) -> None:
        change_id = journal.record_change(channel, message)
        journal.after_commit(lambda: self._deliver(change_id, channel, message))

    def _deliver(self, change_id: int, channel: str, message: str) -> None:
        for sink in self._sinks:
            try:
                sink.deliver(change_id, channel, message)
            except Exception:  # the change is committed; other paths still deliver it
                log.exception("applying %s locally failed", channel)
        if self._monotonic() < self._publish_after:
            return
        try:
            self._channel.publish(channel, to_wire(change_id, message))
        except Unavailable as exc:
            self._publish_after = self._monotonic() + self.PUBLISH_BACKOFF
            log.warning(
                "could not publish %s %s (%s); other instances read it from the change log", channel, message, exc
            )

    def sessions_revoked(self, journal: ChangeJournal, tenant_id: str, session_ids: list[str]) -> None:
        for session_id in session_ids:
            self._record(journal, SESSION_REVOKED, f"{tenant_id}:{session_id}")

    def user_changed(self, journal: ChangeJournal, tenant_id: str, user_id: str) -> None:
        self._record(journal, USER_CHANGED, f"{tenant_id}:{user_id}")

    def tenant_changed(self, journal: ChangeJournal, tenant_id: str) -> None:
        self._record(journal, TENANT_CHANGED, tenant_id)

    def keys_changed(self, journal: ChangeJournal) -> None:
        self._record(journal, KEYS_CHANGED, "")

    def credential_revoked(self, journal: ChangeJournal, tenant_id: str, credential_id: str) -> None:
        self._record(journal, CREDENTIAL_REVOKED, f"{tenant_id}:{credential_id}")

    def plans_changed(self, journal: ChangeJournal, plan: str) -> None:
        """A usage plan was created or changed (quotas reload plans)."""
        self._record(journal, PLANS_CHANGED, plan)

    def service_changed(self, journal: ChangeJournal, tenant_id: str, account_id: str) -> None:
        """A service account's permissions or secrets changed (tenant "" for platform-wide)."""
        self._record(journal, SERVICE_CHANGED, f"{tenant_id}:{account_id}")
