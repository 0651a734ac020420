"""Automatic usage from Check, with no network round trip per request.

`record` adds to an in-process aggregate keyed by (tenant, metric, minute, dimensions):
a dictionary update under a lock. A thread flushes the aggregate every second (sooner
when it grows large) through the same durable path as RecordUsage (UsageLedger: one
database transaction, then one Redis pipeline). Each flushed aggregate carries an
idempotency key made of this recorder's id and a sequence number, so a flush retried
after a failure whose commit did in fact succeed is counted once.

If the database is unreachable the flushed batch is kept and retried first (up to
`max_backlog` aggregates; beyond that the oldest are dropped, logged and counted).
`stop()` flushes what is left: a clean shutdown loses nothing; a hard crash loses at most
the last second of Check counts.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable

from tahoe_auth.domain.errors import NotFound
from tahoe_auth.domain.usage import API_REQUESTS, UsageEvent
from tahoe_auth.kernel.metrics import STORE_FAILURES, USAGE_RECORDER_BUFFERED
from tahoe_auth.services.usage_ledger import UsageLedger

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0
MAX_PENDING_KEYS = 20_000
MAX_BACKLOG = 200_000

Dimensions = tuple[tuple[str, str], ...]
AggregateKey = tuple[str, str, int, Dimensions]


class UsageRecorder:
    def __init__(
        self,
        ledger: UsageLedger,
        *,
        clock: Callable[[], float] = time.time,
        flush_interval: float = FLUSH_INTERVAL,
        max_pending_keys: int = MAX_PENDING_KEYS,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self._ledger = ledger
        self._clock = clock
        self._interval = flush_interval
        self._max_pending = max_pending_keys
        self._max_backlog = max_backlog
        self._id = uuid.uuid4().hex[:12]
        self._sequence = itertools.count(1)
        self._pending: dict[AggregateKey, float] = {}
        self._backlog: dict[str, list[UsageEvent]] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, tenant_id: str, metric: str, quantity: float = 1.0, dimensions: Dimensions = ()) -> None:
        """O(1), in memory. `dimensions` as sorted (key, value) pairs."""
        key = (tenant_id, metric, int(self._clock() // 60), dimensions)
        with self._lock:
            self._pending[key] = self._pending.get(key, 0.0) + quantity
            size = len(self._pending)
        if self._thread is None:
            self.start()
        if size >= self._max_pending:
            self._wake.set()

    def record_request(self, tenant_id: str, route: str, subject_type: str, credential: str = "") -> None:
        """One allowed request through Envoy: `api.requests` by route, subject type and
        (when known) credential (domain.dashboards.credential_label)."""
        dimensions: Dimensions = (("route", route), ("subject_type", subject_type))
        if credential:
            dimensions = (("credential", credential), *dimensions)
        self.record(tenant_id, API_REQUESTS, 1.0, dimensions)

    def flush(self) -> int:
        """Write what is pending (and any backlog). Returns the events written."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
            USAGE_RECORDER_BUFFERED.set(0)
            batch = self._backlog
            self._backlog = {}
            for event_tenant, event in self._events(pending):
                batch.setdefault(event_tenant, []).append(event)
            if not batch:
                return 0
            try:
                return self._ledger.append(batch).recorded
            except NotFound:  # a tenant was deleted meanwhile: write the others
                return self._append_each(batch)
            except Exception as exc:  # database down or slow: keep the batch, same keys
                self._keep(batch)
                STORE_FAILURES.labels("usage_recorder_flush", "retry").inc()
                log.warning("usage flush failed (%s: %s); will retry", type(exc).__name__, exc)
                return 0

    def _append_each(self, batch: dict[str, list[UsageEvent]]) -> int:
        written = 0
        left = dict(batch)
        for tenant_id, events in batch.items():
            try:
                written += self._ledger.append({tenant_id: events}).recorded
            except NotFound:
                log.warning("usage of deleted tenant %s dropped (%d aggregates)", tenant_id, len(events))
            except Exception as exc:
                self._keep(left)
                STORE_FAILURES.labels("usage_recorder_flush", "retry").inc()
                log.warning("usage flush failed (%s: %s); will retry", type(exc).__name__, exc)
                break
            del left[tenant_id]
        return written

    def _events(self, pending: dict[AggregateKey, float]) -> list[tuple[str, UsageEvent]]:
        sequence = next(self._sequence)
        return [
            (
                tenant_id,
                UsageEvent(
                    metric,
                    quantity,
                    dt.datetime.fromtimestamp(minute * 60, dt.UTC),
                    dict(dimensions),
                    f"rec:{self._id}:{sequence}:{index}",
                ),
            )
            for index, ((tenant_id, metric, minute, dimensions), quantity) in enumerate(pending.items())
        ]

    def _keep(self, batch: dict[str, list[UsageEvent]]) -> None:
        total = sum(len(events) for events in batch.values())
        while total > self._max_backlog and batch:
            tenant_id = next(iter(batch))
            dropped = batch.pop(tenant_id)
            total -= len(dropped)
            STORE_FAILURES.labels("usage_recorder_flush", "dropped").inc(len(dropped))
            log.error("usage backlog full: dropped %d aggregates of tenant %s", len(dropped), tenant_id)
        self._backlog = batch
        USAGE_RECORDER_BUFFERED.set(total)

    # -- background thread -------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name="usage-recorder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.flush()
