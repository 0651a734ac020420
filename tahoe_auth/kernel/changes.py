"""Change notifications that every instance applies to its caches within a second.

Published after the change commits. A failed publish is logged, never raised: the
change itself is durable, and instances that miss a notification while their own
subscription is down bypass their caches until it returns (see store/redis_store.py).
The instance that made the change applies it to its own caches first, synchronously,
so that its very next request already sees it (the published copy arrives later).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from tahoe_auth.domain.errors import Unavailable

# Called with (channel, message) for every published message, or with ("", "") when
# notifications may have been missed (a reconnect): drop every cache.
Listener = Callable[[str, str], None]


class Channel(Protocol):
    """Where changes travel between instances (the key-value store's pub/sub)."""

    def publish(self, channel: str, message: str) -> None: ...

    def subscribe(self, listener: Listener) -> None: ...


class ChangeListener(Protocol):
    """A cache that drops what a change makes stale. The composition root (app.py
    wire_changes) registers every one, both for this instance's changes and others'."""

    def apply_change(self, channel: str, message: str) -> None: ...


log = logging.getLogger(__name__)

SESSION_REVOKED = "session.revoked"
USER_CHANGED = "user.changed"
TENANT_CHANGED = "tenant.changed"
KEYS_CHANGED = "keys.changed"
CREDENTIAL_REVOKED = "credential.revoked"
SERVICE_CHANGED = "service.changed"
PLANS_CHANGED = "usage.plans_changed"


class ChangeNotifier:
    def __init__(self, store: Channel) -> None:
        self._store = store
        self._local: list[Listener] = []

    def apply_locally(self, listener: Listener) -> None:
        """Also hand every change to `listener` in this process, before publishing it."""
        self._local.append(listener)

    def _publish(self, channel: str, message: str) -> None:
        for listener in self._local:
            try:
                listener(channel, message)
            except Exception:  # the change is committed; the published copy still follows
                log.exception("applying %s locally failed", channel)
        try:
            self._store.publish(channel, message)
        except Unavailable as exc:
            log.error("could not publish %s %s: %s; other instances may serve stale caches", channel, message, exc)

    def sessions_revoked(self, tenant_id: str, session_ids: list[str]) -> None:
        for session_id in session_ids:
            self._publish(SESSION_REVOKED, f"{tenant_id}:{session_id}")

    def user_changed(self, tenant_id: str, user_id: str) -> None:
        self._publish(USER_CHANGED, f"{tenant_id}:{user_id}")

    def tenant_changed(self, tenant_id: str) -> None:
        self._publish(TENANT_CHANGED, tenant_id)

    def keys_changed(self) -> None:
        self._publish(KEYS_CHANGED, "")

    def credential_revoked(self, tenant_id: str, credential_id: str) -> None:
        self._publish(CREDENTIAL_REVOKED, f"{tenant_id}:{credential_id}")

    def plans_changed(self, plan: str) -> None:
        """A usage plan was created or changed (quotas reload plans)."""
        self._publish(PLANS_CHANGED, plan)

    def service_changed(self, tenant_id: str, account_id: str) -> None:
        """A service account's permissions or secrets changed (tenant "" for platform-wide)."""
        self._publish(SERVICE_CHANGED, f"{tenant_id}:{account_id}")
