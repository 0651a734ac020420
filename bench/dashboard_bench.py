"""Dashboard RPC latency over a large tenant, on this machine.

    .venv/bin/python bench/dashboard_bench.py [--events 1000000] [--calls 200] [--tenants 20]

Loads `--events` raw usage events (one INSERT ... SELECT generate_series, spread over
the last 7 days, 20 routes, 3 subject types, 200 credentials; half of them for one
"big" tenant, the rest over the others) and 30 days of hourly login rollups, runs the
usage rollup job to completion (timed), runs VACUUM ANALYZE (the steady state), then
calls each DashboardService RPC `--calls` times over gRPC against an in-process server
(the app as the `tahoe_app` role, row-level security on, as in production) and prints
p50/p99 in milliseconds.

Uses the PostgreSQL database `tahoe_dash_bench` (dropped and re-created) and Redis DB 13.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2
from sqlalchemy import create_engine, pool, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tahoe_auth.app import App
from tahoe_auth.v1 import dashboard_pb2, dashboard_pb2_grpc, usage_pb2
from tests import support
from tests.conftest import APP_ROLE

PG_URL = os.environ.get("TAHOE_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_dash_bench")
REDIS_URL = os.environ.get("TAHOE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")

LOAD_EVENTS = """
INSERT INTO usage_events (tenant_id, metric, quantity, occurred_at, dimensions, recorded_at, rolled_up)
SELECT CASE WHEN :n_others = 0 OR i % 2 = 0 THEN :big
            ELSE ((:others)::varchar[])[1 + (i / 2) % greatest(:n_others, 1)] END,
       'api.requests', 1,
       now() - make_interval(secs => (i % 604800)),
       json_build_object(
         'route', '/v1/route' || (i % 20),
         'subject_type', (ARRAY['user', 'api_key', 'service'])[1 + i % 3],
         'credential', 'api key tk_' || (i % 200)),
       now(), false
FROM generate_series(1, :events) AS i
"""
LOAD_LOGINS = """
INSERT INTO login_rollups (tenant_id, bucket_start, outcome, count)
SELECT :big, date_trunc('hour', now()) - make_interval(hours => h), o, 1 + (h * 7) % 40
FROM generate_series(0, 24 * 30 - 1) AS h, unnest(ARRAY['success', 'failure', 'throttled']) AS o
"""
LOAD_ACTIVE = """
INSERT INTO login_active_users (tenant_id, day, user_id)
SELECT :big, date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - make_interval(days => d),
       'user-' || u
FROM generate_series(0, 29) AS d, generate_series(1, 500) AS u
WHERE (d + u) % 3 <> 0
"""


def load_events(pg_url: str, big: str, others: list[str], events: int, *, logins: bool = False) -> float:
    """`events` raw usage events, half of them for tenant `big` and the rest spread over
    `others` (all for `big` when `others` is empty), as the superuser in one statement;
    with `logins`, 30 days of hourly login rollups and daily active users for `big`.
    Then ANALYZE. Returns the seconds it took."""
    admin = create_engine(pg_url, poolclass=pool.NullPool)
    started = time.perf_counter()
    with admin.begin() as conn:
        params = {"big": big, "others": others, "n_others": len(others)}
        conn.execute(text(LOAD_EVENTS), params | {"events": events})
        if logins:
            conn.execute(text(LOAD_LOGINS), {"big": big})
            conn.execute(text(LOAD_ACTIVE), {"big": big})
    with admin.connect() as conn:
        conn.execute(text("ANALYZE"))
    admin.dispose()
    return time.perf_counter() - started


def roll_up(app: App, pg_url: str) -> tuple[int, float, float]:
    """Runs the usage rollup job to completion, then VACUUM ANALYZE: (events rolled up,
    rollup seconds, vacuum seconds)."""
    started = time.perf_counter()
    rolled = app.usage_pipeline.run_once()
    rollup = time.perf_counter() - started
    started = time.perf_counter()
    # The steady state: autovacuum keeps up with a rollup running every 2 s, but a
    # million rows marked rolled up at once leave as many dead entries in the
    # partial index of unrolled events, which the exact totals (rolled up + not yet)
    # walk until vacuum removes them (~0.7 s per overview here before it).
    admin = create_engine(pg_url, poolclass=pool.NullPool)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    admin.dispose()
    return rolled, rollup, time.perf_counter() - started


def dimension_rows(pg_url: str) -> int:
    admin = create_engine(pg_url, poolclass=pool.NullPool)
    with admin.connect() as conn:
        count: int = conn.execute(text("SELECT count(*) FROM usage_dimension_rollups")).scalar_one()
    admin.dispose()
    return count


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return pick(0.50), pick(0.99)


def ts(seconds_ago: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromSeconds(int(time.time() - seconds_ago))
    return stamp


def measure(name: str, call: Callable[[], Any], calls: int) -> tuple[str, float, float]:
    for _ in range(5):  # warm: compiled statements, pooled connections
        call()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    p50, p99 = percentiles(samples)
    return name, p50, p99


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--tenants", type=int, default=20)
    args = parser.parse_args()

    support.create_database(PG_URL)
    support.reset_schema(PG_URL)
    env = {
        "TAHOE_DATABASE_URL": PG_URL,
        "TAHOE_DATABASE_ROLE": APP_ROLE,
        "TAHOE_REDIS_URL": REDIS_URL,
        "TAHOE_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "TAHOE_VAR_DIR": tempfile.mkdtemp(prefix="dash-bench-"),
        "TAHOE_LOG_LEVEL": "WARNING",
    }
    with support.running_server(env) as server:
        tenants = [server.create_tenant() for _ in range(args.tenants)]
        big = tenants[0]
        loaded = load_events(PG_URL, big.id, [t.id for t in tenants[1:]], args.events, logins=True)
        rolled, rollup, vacuum = roll_up(server.app, PG_URL)
        print(
            f"loaded {args.events:,} raw events in {loaded:.1f} s; rollup of {rolled:,} in {rollup:.1f} s "
            f"({rolled / rollup:,.0f} events/s); VACUUM ANALYZE {vacuum:.1f} s; "
            f"usage_dimension_rollups rows: {dimension_rows(PG_URL):,}"
        )

        stub = dashboard_pb2_grpc.DashboardServiceStub(server.channel)
        owner = support.bearer(server.owner_token(big))
        platform = support.bearer(server.platform_key)
        week = 7 * 86400
        rows = [
            measure(
                "GetTenantOverview",
                lambda: stub.GetTenantOverview(dashboard_pb2.GetTenantOverviewRequest(), metadata=owner),
                args.calls,
            ),
            measure(
                "GetUsageBreakdown route/day 7d top10",
                lambda: stub.GetUsageBreakdown(
                    dashboard_pb2.GetUsageBreakdownRequest(
                        dimension=dashboard_pb2.USAGE_DIMENSION_ROUTE,
                        granularity=usage_pb2.GRANULARITY_DAY,
                        start_time=ts(week),
                    ),
                    metadata=owner,
                ),
                args.calls,
            ),
            measure(
                "GetUsageBreakdown credential/hour 7d top10",
                lambda: stub.GetUsageBreakdown(
                    dashboard_pb2.GetUsageBreakdownRequest(
                        dimension=dashboard_pb2.USAGE_DIMENSION_CREDENTIAL,
                        granularity=usage_pb2.GRANULARITY_HOUR,
                        start_time=ts(week),
                    ),
                    metadata=owner,
                ),
                args.calls,
            ),
            measure(
                "GetLoginAnalytics 30d",
                lambda: stub.GetLoginAnalytics(dashboard_pb2.GetLoginAnalyticsRequest(), metadata=owner),
                args.calls,
            ),
            measure(
                "GetPlatformOverview",
                lambda: stub.GetPlatformOverview(dashboard_pb2.GetPlatformOverviewRequest(), metadata=platform),
                args.calls,
            ),
        ]
    print(f"{'RPC':<45} {'p50 ms':>8} {'p99 ms':>8}   ({args.calls} calls each, one client)")
    for name, p50, p99 in rows:
        print(f"{name:<45} {p50:8.1f} {p99:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
