"""WatchUsage: live counters pushed to dashboards.

One poller thread per instance (running only while someone watches) reads the live
counters of every watched tenant in one Redis round trip every 250 ms and hands a
snapshot to each subscriber whose totals changed; a recorded event reaches watchers on
every instance within about a quarter of a second after its commit. Each stream holds
one server worker thread (the gRPC server is synchronous), so the number of concurrent
streams per instance is capped.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass

from tahoe_auth.domain.errors import RateLimited
from tahoe_auth.domain.usage import period_of
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.kernel.metrics import STORE_FAILURES
from tahoe_auth.services.usage_ledger import UsageTotals
from tahoe_auth.store.live_counters import Totals

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25


@dataclass(frozen=True)
class Snapshot:
    tenant_id: str
    period: str
    totals: Totals
    at: dt.datetime


class Subscription:
    def __init__(self, hub: UsageWatch, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self._hub = hub
        self._latest: Snapshot | None = None
        self._changed = threading.Condition()
        self.closed = False

    def offer(self, snapshot: Snapshot) -> None:
        with self._changed:
            self._latest = snapshot
            self._changed.notify_all()

    def next(self, timeout: float) -> Snapshot | None:
        """The newest snapshot not yet taken, waiting up to `timeout`; None on timeout
        or once closed."""
        with self._changed:
            if self._latest is None and not self.closed:
                self._changed.wait(timeout)
            snapshot, self._latest = self._latest, None
            return None if self.closed else snapshot

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()
        self._hub.unsubscribe(self)


class UsageWatch:
    def __init__(
        self, totals: UsageTotals, clock: Clock, *, max_streams: int = 4, interval: float = POLL_INTERVAL
    ) -> None:
        self._totals = totals
        self._clock = clock
        self._max_streams = max_streams
        self._interval = interval
        self._subscriptions: list[Subscription] = []
        self._last: dict[str, Totals] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def subscribe(self, tenant_id: str) -> Subscription:
        subscription = Subscription(self, tenant_id)
        with self._lock:
            if len(self._subscriptions) >= self._max_streams:
                raise RateLimited(
                    f"at most {self._max_streams} WatchUsage streams per server instance; retry later",
                    5.0,
                    quota="watch_usage_streams",
                )
            self._subscriptions.append(subscription)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="usage-watch", daemon=True)
                self._thread.start()
        # The first snapshot, read here; the poller then sends changes from it on.
        try:
            totals = self._totals.current([tenant_id]).get(tenant_id, {})
        except Exception:
            subscription.close()
            raise
        with self._lock:
            self._last.setdefault(tenant_id, totals)
        subscription.offer(Snapshot(tenant_id, period_of(self._clock.now()).name, totals, self._clock.now()))
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def poll_once(self) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions)
        tenants = {s.tenant_id for s in subscriptions}
        if not tenants:
            return
        current = self._totals.current(tenants)
        now = self._clock.now()
        period = period_of(now).name
        for tenant_id in tenants:
            totals = current.get(tenant_id, {})
            if self._last.get(tenant_id) == totals:
                continue
            self._last[tenant_id] = totals
            snapshot = Snapshot(tenant_id, period, totals, now)
            for subscription in subscriptions:
                if subscription.tenant_id == tenant_id:
                    subscription.offer(snapshot)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                if not self._subscriptions:
                    self._thread = None
                    self._last.clear()
                    return
            try:
                self.poll_once()
            except Exception as exc:  # database and Redis both down: try again
                STORE_FAILURES.labels("usage_watch", "retry").inc()
                log.warning("usage watch poll failed (%s: %s)", type(exc).__name__, exc)
