"""Throughput of Check through one Envoy in front of 1, 2 and 3 auth instances.

    .venv/bin/python bench/instances_bench.py [--duration 10] [--connections 32]

Each count gets a fresh deployment (tests/e2e/rolling.py: `tahoe-auth serve` processes
sharing one PostgreSQL and a private Redis, the committed envoy.yaml with Check over
HTTP, the demo upstream) and wrk sends GET /v1/jobs with one user's token through Envoy
for `--duration` seconds after a warm-up; Envoy answers the request itself once Check
allowed it (direct_response), so that Check, not the demo upstream, is measured. Prints req/s, p50/p99 and the share of
requests each instance decided, and the load average.

On a 2-core machine the figure should stay flat: every instance, Envoy, the demo, wrk,
PostgreSQL and Redis share the same two cores, so a second instance adds processes, not
CPU. More instances help only where there are cores (or machines) for them.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import harness, support
from tests.e2e import rolling
from tests.servers import redis_server

NEVER_LIMITED = json.dumps({n: {"limit": 10_000_000, "period": 60} for n in ("per_address", "per_tenant")})


def answer_jobs_in_envoy(config: dict[str, Any]) -> dict[str, Any]:
    """GET /v1/jobs answered by Envoy itself after Check (direct_response): the demo
    upstream, one Python process on SQLite, would otherwise be what is measured."""
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for http_filter in chain["filters"]:
                for host in http_filter["typed_config"].get("route_config", {}).get("virtual_hosts", []):
                    for route in host["routes"]:
                        match = route["match"]
                        methods = [h.get("string_match", {}).get("exact") for h in match.get("headers", [])]
                        if match.get("prefix") == "/v1/jobs" and methods == ["GET"]:
                            route.pop("route")
                            route["direct_response"] = {"status": 200, "body": {"inline_string": "[]"}}
                            return config
    raise SystemExit("envoy.yaml has no GET /v1/jobs route to answer directly")


def one_count(count: int, args: argparse.Namespace, tmp: Path) -> str:
    support.create_database(args.database_url)
    support.reset_schema(args.database_url)
    with redis_server(tmp) as redis:
        env = {
            "TAHOE_DATABASE_URL": args.database_url,
            "TAHOE_DATABASE_ROLE": "tahoe_app",
            "TAHOE_REDIS_URL": redis.url,
            "TAHOE_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "TAHOE_VAR_DIR": str(tmp / "var"),
            "TAHOE_LOG_LEVEL": "WARNING",
            "TAHOE_RATE_LIMITS": NEVER_LIMITED,
            "TAHOE_INSTANCE_COUNT": str(count),
        }
        with rolling.deployment(env, tmp, count=count, configure=answer_jobs_in_envoy) as fleet:
            url = f"http://127.0.0.1:{fleet.envoy.listener_port}/v1/jobs"
            headers = {"authorization": f"Bearer {fleet.token}"}
            harness.run_wrk(url, args.connections, 3, headers=headers)  # warm: connections, caches
            before = {port: h.rq_success for port, h in fleet.hosts().items()}
            result = harness.run_wrk(url, args.connections, args.duration, headers=headers)
            after = {port: h.rq_success for port, h in fleet.hosts().items()}
            decided = [after[p] - before.get(p, 0) for p in sorted(after)]
            total = sum(decided) or 1
            shares = " / ".join(f"{100 * d / total:.0f}%" for d in decided)
            errors = result.non_2xx + result.socket_errors
            return (
                f"{count} instance{'s' if count > 1 else ' '}  {result.rps:8,.0f} req/s  p50 {result.p50_ms:6.2f} ms"
                f"  p99 {result.p99_ms:7.2f} ms  errors {errors}  decided {shares}"
            )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "TAHOE_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_instances_bench"
        ),
    )
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    for count in (1, 2, 3):
        with tempfile.TemporaryDirectory(prefix=f"instances-{count}-") as tmp:
            print(one_count(count, args, Path(tmp)), flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
