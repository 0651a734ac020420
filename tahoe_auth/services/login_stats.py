"""Login counts for the dashboards (login_rollups, login_active_users).

Successes and failures are counted in the transaction of the login's own writes (the
session and audit entry, or the failure's audit entry). Throttled attempts are refused
before any database work, and a flood of them must not become a flood of writes: they
are tallied in memory by (tenant slug, hour) and written every few seconds (and at
stop), like the aggregated denials. A failed write keeps the tally for the next one.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from tahoe_auth.domain.dashboards import LOGIN_FAILURE, LOGIN_SUCCESS, LOGIN_THROTTLED
from tahoe_auth.domain.usage import Granularity, truncate
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.kernel.metrics import STORE_FAILURES
from tahoe_auth.kernel.periodic import PeriodicFlush
from tahoe_auth.store.db import SYSTEM, Database, UnitOfWork

log = logging.getLogger(__name__)

MAX_SLUGS = 10_000


class LoginStats:
    def __init__(self, db: Database, clock: Clock, interval: float = 5.0) -> None:
        self._db = db
        self._clock = clock
        self._throttled: dict[tuple[str, dt.datetime], int] = {}
        self._lock = threading.Lock()
        self._ticker = PeriodicFlush("login-stats", interval, self.flush)

    def succeeded(self, uow: UnitOfWork, tenant_id: str, user_id: str) -> None:
        now = self._clock.now()
        uow.dashboards.count_login(tenant_id, truncate(now, Granularity.HOUR), LOGIN_SUCCESS)
        uow.dashboards.mark_active(tenant_id, truncate(now, Granularity.DAY), user_id)

    def failed(self, uow: UnitOfWork, tenant_id: str) -> None:
        uow.dashboards.count_login(tenant_id, truncate(self._clock.now(), Granularity.HOUR), LOGIN_FAILURE)

    def throttled(self, tenant_slug: str) -> None:
        """In memory, no I/O. Slugs of unknown tenants are dropped when written."""
        key = (tenant_slug[:63], truncate(self._clock.now(), Granularity.HOUR))
        with self._lock:
            if key not in self._throttled and len(self._throttled) >= MAX_SLUGS:
                return  # bounded: a spray of made-up slugs cannot grow it
            self._throttled[key] = self._throttled.get(key, 0) + 1
        self._ticker.ensure_started()

    def flush(self) -> int:
        with self._lock:
            ready, self._throttled = self._throttled, {}
        if not ready:
            return 0
        try:
            with self._db.unit_of_work(SYSTEM) as uow:
                for (slug, hour), count in ready.items():
                    uow.dashboards.count_login_by_slug(slug, hour, LOGIN_THROTTLED, count)
                uow.commit()
        except Exception as exc:  # keep the tally; the next flush tries again
            STORE_FAILURES.labels("login_stats", "retry").inc()
            log.warning("could not write throttled login counts (%s); retrying at the next flush", exc)
            with self._lock:
                for key, count in ready.items():
                    self._throttled[key] = self._throttled.get(key, 0) + count
            return 0
        return len(ready)

    def stop(self) -> None:
        self._ticker.stop()
