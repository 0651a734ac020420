"""`last_used_at` for API keys without a database write per request.

Authentication only notes the time in memory, at most once a minute per key; a
background thread writes what it noted every few seconds, one transaction per tenant.
Best effort: a failed flush is logged and retried with the next batch; losing a
minute of "last used" on a crash is acceptable, slowing the hot path is not.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from tahoe_auth.kernel.cache import TTLCache
from tahoe_auth.store.db import Database

log = logging.getLogger(__name__)

RECORD_EVERY = 60.0
FLUSH_EVERY = 5.0


class LastUsedRecorder:
    def __init__(self, db: Database, flush_every: float = FLUSH_EVERY, max_keys: int = 100_000) -> None:
        self._db = db
        self._flush_every = flush_every
        self._recent: TTLCache[str, bool] = TTLCache(max_keys)
        self._pending: dict[tuple[str, str], dt.datetime] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def touch(self, tenant_id: str, key_id: str) -> None:
        if self._recent.get(key_id):
            return
        self._recent.put(key_id, True, time.time() + RECORD_EVERY)
        with self._lock:
            self._pending[(tenant_id, key_id)] = dt.datetime.now(dt.UTC)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="api-key-last-used", daemon=True)
                self._thread.start()

    def pending(self, tenant_id: str, key_id: str) -> dt.datetime | None:
        with self._lock:
            return self._pending.get((tenant_id, key_id))

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, {}
        by_tenant: dict[str, dict[str, dt.datetime]] = {}
        for (tenant_id, key_id), when in batch.items():
            by_tenant.setdefault(tenant_id, {})[key_id] = when
        for tenant_id, used in by_tenant.items():
            try:
                with self._db.unit_of_work(tenant_id) as uow:
                    uow.api_keys.record_last_used(used)
                    uow.commit()
            except Exception:  # best effort; see the module docstring
                log.warning("could not record API key last use for tenant %s; will retry", tenant_id, exc_info=True)
                with self._lock:
                    for key_id, when in used.items():
                        self._pending.setdefault((tenant_id, key_id), when)

    def _run(self) -> None:
        while not self._stop.wait(self._flush_every):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.flush()
