"""ext_authz denials in the audit log, aggregated so that a flood cannot fill the disk.

Check calls `DenialAuditor.record(tenant_id, reason, route)` (in memory, no I/O). Each
(tenant, reason, route, minute) becomes one `authz.denied` entry with a `count`, written
once its minute has passed (a background flush every few seconds, and at stop). At most
`max_keys` distinct keys are kept per minute; the rest are counted under an `overflow`
entry on the platform chain. A failed flush keeps the counts for the next one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tahoe_auth.domain import audit
from tahoe_auth.kernel.metrics import AUDIT_DENIALS_AGGREGATED, STORE_FAILURES
from tahoe_auth.kernel.periodic import PeriodicFlush
from tahoe_auth.services.audit import AuditLog
from tahoe_auth.services.context import CallContext

log = logging.getLogger(__name__)

ACTION = "authz.denied"
Key = tuple[str, str, str, int]  # tenant, reason, route, minute (epoch minutes)


class DenialAuditor:
    def __init__(
        self, audit_log: AuditLog, clock: Callable[[], float], max_keys: int = 10_000, interval: float = 5.0
    ) -> None:
        self._log = audit_log
        self._clock = clock
        self._max_keys = max_keys
        self._counts: dict[Key, int] = {}
        self._lock = threading.Lock()
        self._ticker = PeriodicFlush("audit-denials", interval, self.flush)

    def record(self, tenant_id: str, reason: str, route: str) -> None:
        minute = int(self._clock() // 60)
        key: Key = (tenant_id, reason[:64], route[:200], minute)
        with self._lock:
            if key not in self._counts and len(self._counts) >= self._max_keys:
                key = ("", "overflow", "", minute)
            self._counts[key] = self._counts.get(key, 0) + 1
        AUDIT_DENIALS_AGGREGATED.inc()
        self._ticker.ensure_started()

    def flush(self, everything: bool = False) -> int:
        """Write the aggregates of finished minutes (all of them if `everything`)."""
        current = int(self._clock() // 60)
        with self._lock:
            ready = {k: v for k, v in self._counts.items() if everything or k[3] < current}
            for key in ready:
                del self._counts[key]
        written = 0
        for (tenant_id, reason, route, minute), count in sorted(ready.items(), key=lambda kv: kv[0][3]):
            try:
                self._log.record_alone(
                    CallContext(),
                    tenant_id,
                    ACTION,
                    f"route:{route}" if route else "route:",
                    audit.DENIED,
                    {"reason": reason, "count": count, "minute_start": minute * 60},
                    actor=None,
                )
                written += 1
            except Exception as exc:  # keep the counts; the next flush tries again
                STORE_FAILURES.labels("audit_denials", "retry").inc()
                log.warning("could not write aggregated denials (%s); retrying at the next flush", exc)
                with self._lock:
                    key = (tenant_id, reason, route, minute)
                    self._counts[key] = self._counts.get(key, 0) + count
        return written

    def pending(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def stop(self) -> None:
        self._ticker.stop(lambda: self.flush(everything=True))
