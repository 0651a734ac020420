"""Per-tenant limits and plan, cached in-process for the hot path (no SQL when warm).

Read from the tenant row: `settings["rate_limits"]` (schema: domain.ratelimit.parse_limits),
`settings["quotas"]` (per-tenant quota overrides, schema: domain.usage.parse_quotas) and
the `plan` column. Entries are dropped by the `tenant.changed` notification from any
instance (TenantService publishes it after changing settings), by a reconnect of the
notification channel, and after a backstop age. If the database cannot be read, the
deployment defaults apply for a few seconds (fail open to the defaults, logged).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tahoe_auth.domain.errors import InvalidArgument, NotFound
from tahoe_auth.domain.ratelimit import DEFAULT_LIMITS, LimitSet, parse_limits
from tahoe_auth.kernel import changes
from tahoe_auth.kernel.cache import TTLCache
from tahoe_auth.kernel.metrics import STORE_FAILURES
from tahoe_auth.store.db import Database

log = logging.getLogger(__name__)

MAX_AGE = 60.0
RETRY_AFTER_FAILURE = 5.0


@dataclass(frozen=True)
class TenantConfig:
    limits: LimitSet
    plan: str = ""
    quota_overrides: Mapping[str, Any] = field(default_factory=dict)
    exists: bool = True


@dataclass(frozen=True)
class TenantRow:
    plan: str
    settings: Mapping[str, Any]


def database_loader(db: Database) -> Callable[[str], TenantRow | None]:
    def load(tenant_id: str) -> TenantRow | None:
        with db.unit_of_work(tenant_id) as uow:
            try:
                tenant = uow.tenants.get(tenant_id)
            except NotFound:
                return None
            return TenantRow(tenant.plan, dict(tenant.settings or {}))

    return load


class TenantConfigCache:
    def __init__(
        self,
        load: Callable[[str], TenantRow | None],
        defaults: LimitSet = DEFAULT_LIMITS,
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._load = load
        self._clock = clock
        self.defaults = defaults
        self._cache: TTLCache[str, TenantConfig] = TTLCache(max_entries, clock)

    def get(self, tenant_id: str) -> TenantConfig:
        if not tenant_id:
            return TenantConfig(self.defaults, exists=False)
        cached = self._cache.get(tenant_id)
        if cached is not None:
            return cached
        config, max_age = self._read(tenant_id)
        self._cache.put(tenant_id, config, self._clock() + max_age)
        return config

    def limits(self, tenant_id: str) -> LimitSet:
        return self.get(tenant_id).limits

    def _read(self, tenant_id: str) -> tuple[TenantConfig, float]:
        try:
            row = self._load(tenant_id)
        except Exception as exc:  # database down or slow: the defaults, briefly
            STORE_FAILURES.labels("tenant_config", "fail_open_defaults").inc()
            log.warning("tenant %s settings unreadable (%s): default limits apply", tenant_id, type(exc).__name__)
            return TenantConfig(self.defaults), RETRY_AFTER_FAILURE
        if row is None:
            return TenantConfig(self.defaults, exists=False), MAX_AGE
        try:
            limits = parse_limits(row.settings.get("rate_limits"), self.defaults, "settings.rate_limits")
        except InvalidArgument as exc:
            log.error("tenant %s has invalid rate_limits (%s): default limits apply", tenant_id, exc.message)
            limits = self.defaults
        quotas = row.settings.get("quotas")
        return TenantConfig(limits, row.plan, quotas if isinstance(quotas, Mapping) else {}), MAX_AGE

    def apply_change(self, channel: str, message: str) -> None:
        if channel == changes.TENANT_CHANGED:
            self._cache.pop(message)
        elif channel == "":
            self._cache.clear()
