"""Live usage counters: this billing period's totals per tenant, for WatchUsage and the
quota checks. A cache of the database (which is the truth), kept close by increments
after each commit and rebuilt from the database by `replace`.

Redis: one hash per tenant and period, `usage:{<tenant>}:live:<YYYY-MM>`, metric ->
total, plus `_synced` (when it was last rebuilt). A hash without `_synced` was created
by increments alone (after a Redis restart, say): `read` reports it as missing so that
the caller rebuilds it. Every method raises StoreUnavailable on a Redis error; `read`
first retries once after a timeout or a dropped connection.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Protocol

import redis
from redis.cluster import RedisCluster

from tahoe_auth.kernel.metrics import STORE_FAILURES
from tahoe_auth.store.kv import StoreUnavailable

SYNCED = "_synced"
TTL_SECONDS = 40 * 86400

Totals = dict[str, float]


class LiveCounters(Protocol):
    def add(self, increments: Mapping[tuple[str, str], Mapping[str, float]]) -> None:
        """(tenant, period) -> metric -> amount, all in one round trip."""
        ...

    def read(self, tenant_ids: Iterable[str], period: str) -> dict[str, Totals | None]:
        """tenant -> totals, or None when missing or never rebuilt."""
        ...

    def replace(self, period: str, totals: Mapping[str, Mapping[str, float]]) -> None:
        """Overwrite (and mark rebuilt) each tenant's totals."""
        ...


def live_key(tenant_id: str, period: str) -> str:
    return f"usage:{{{tenant_id}}}:live:{period}"


class RedisLiveCounters:
    def __init__(self, client: redis.Redis | RedisCluster) -> None:
        self._client = client

    def add(self, increments: Mapping[tuple[str, str], Mapping[str, float]]) -> None:
        if not increments:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for (tenant, period), amounts in increments.items():
                key = live_key(tenant, period)
                for metric, amount in amounts.items():
                    pipe.hincrbyfloat(key, metric, amount)
                pipe.expire(key, TTL_SECONDS)
            pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def read(self, tenant_ids: Iterable[str], period: str) -> dict[str, Totals | None]:
        tenants = list(tenant_ids)
        if not tenants:
            return {}
        try:
            replies = self._read(tenants, period)
        except (redis.TimeoutError, redis.ConnectionError):
            # A read is safe to repeat, and one slow answer on a busy host (or a pooled
            # connection Redis dropped) must not send the readers to the database: once,
            # at once. An outage fails this second try too.
            STORE_FAILURES.labels("usage_live_read", "retry").inc()
            try:
                replies = self._read(tenants, period)
            except redis.RedisError as exc:
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except redis.RedisError as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return {tenant: _totals(reply) for tenant, reply in zip(tenants, replies, strict=True)}

    def _read(self, tenants: list[str], period: str) -> list[Mapping[str | bytes, str | bytes]]:
        pipe = self._client.pipeline(transaction=False)
        for tenant in tenants:
            pipe.hgetall(live_key(tenant, period))
        return pipe.execute()

    def replace(self, period: str, totals: Mapping[str, Mapping[str, float]]) -> None:
        if not totals:
            return
        try:
            # Built aside and renamed over: each tenant's hash changes atomically, and the
            # two keys share the tenant's hash tag (one slot on a cluster too).
            pipe = self._client.pipeline(transaction=False)
            suffix = secrets.token_hex(4)
            for tenant, metrics in totals.items():
                key = live_key(tenant, period)
                scratch = f"{key}:rebuild:{suffix}"
                fields: dict[str | bytes, str | bytes] = {m: repr(float(v)) for m, v in metrics.items()}
                fields[SYNCED] = str(time.time())
                pipe.hset(scratch, mapping=fields)  # type: ignore[arg-type]
                pipe.expire(scratch, TTL_SECONDS)
                # Not pipe.rename: redis-py's cluster pipeline refuses it by name (keys
                # may be in two slots); these two share one, and Redis accepts it.
                pipe.execute_command("RENAME", scratch, key)
            pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc


def _totals(reply: Mapping[str | bytes, str | bytes]) -> Totals | None:
    decoded = {(k.decode() if isinstance(k, bytes) else k): v for k, v in reply.items()}
    if SYNCED not in decoded:
        return None
    return {k: float(v) for k, v in decoded.items() if k != SYNCED}


class MemoryLiveCounters:
    """For a single instance without Redis."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], Totals] = {}
        self._lock = threading.Lock()

    def add(self, increments: Mapping[tuple[str, str], Mapping[str, float]]) -> None:
        with self._lock:
            for key, amounts in increments.items():
                totals = self._data.get(key)
                if totals is None:
                    continue  # never rebuilt: the next read rebuilds it from the database
                for metric, amount in amounts.items():
                    totals[metric] = totals.get(metric, 0.0) + amount

    def read(self, tenant_ids: Iterable[str], period: str) -> dict[str, Totals | None]:
        with self._lock:
            result: dict[str, Totals | None] = {}
            for tenant in tenant_ids:
                totals = self._data.get((tenant, period))
                result[tenant] = None if totals is None else dict(totals)
            return result

    def replace(self, period: str, totals: Mapping[str, Mapping[str, float]]) -> None:
        with self._lock:
            for tenant, metrics in totals.items():
                self._data[(tenant, period)] = dict(metrics)
