"""Rolling restart: what clients see while one of two auth instances gets SIGTERM.

Two `tahoe-auth serve` processes (one PostgreSQL, a private Redis) behind Envoy with the
committed envoy/envoy.yaml, in front of the demo upstream, as in
tests/e2e/test_rolling_restart.py. Clients send a valid GET /v1/jobs back to back; one
instance gets SIGTERM. Counted: every answer from the signal until that instance has
exited, Envoy has marked it unhealthy and `--after` more requests have been answered.

`--baseline PATH` runs the same first with another checkout's server and envoy.yaml
(for instance `git worktree add /tmp/before <commit>`), in the same run, so that the
two rows share the machine's load.

    .venv/bin/python bench/rolling_restart_bench.py [--baseline /tmp/before] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from tests import harness, support
from tests.e2e import rolling
from tests.servers import redis_server

NEVER_LIMITED = json.dumps({name: {"limit": 10_000_000, "period": 60} for name in ("per_address", "per_tenant")})


@dataclass(frozen=True)
class Outcome:
    errors: int
    total: int
    statuses: dict[int, int]
    seconds: float
    exit_code: int


def one_sigterm(args: argparse.Namespace, source: Path | None, tmp: Path) -> Outcome:
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
        }
        with (
            rolling.deployment(env, tmp, source=source, transport=args.transport) as fleet,
            fleet.load(args.clients) as load,
        ):
            leaving = fleet.instances[0]
            rolling.wait_for(lambda: all(fleet.host(i).rq_success >= 50 for i in fleet.instances), 60, "traffic")
            # A long-running Envoy: its health checks at their regular interval. The first
            # after start comes only after no_traffic_interval (60 s unless the config sets it).
            rolling.wait_for(lambda: health_checks(fleet) >= 3 * len(fleet.instances), 90, "regular health checks")
            mark, started = load.total, time.monotonic()
            leaving.signal(signal.SIGTERM)
            exit_code = leaving.wait_exit(60)
            rolling.wait_for(lambda: not fleet.host(leaving).healthy, 90, "Envoy marks it unhealthy")
            after = load.total
            rolling.wait_for(lambda: load.ok_since(after) >= args.after, 60, "traffic after the exit")
            end = load.total
            seconds = time.monotonic() - started
            load.stop()
            return Outcome(
                load.errors(mark) - load.errors(end), end - mark, load.summary(mark, end), seconds, exit_code
            )


def health_checks(fleet: rolling.Deployment) -> int:
    return harness.envoy_stats(fleet.envoy.admin_port, f"{fleet.cluster}.health_check.attempt$").get(
        f"cluster.{fleet.cluster}.health_check.attempt", 0
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout to measure first, in the same run")
    parser.add_argument("--rounds", type=int, default=1, help="SIGTERMs per tree (each on a fresh deployment)")
    parser.add_argument("--clients", type=int, default=4, help="clients sending back to back")
    parser.add_argument(
        "--transport",
        choices=("http", "grpc"),
        default="http",
        help="Check's transport (a --baseline from before the HTTP transport needs grpc)",
    )
    parser.add_argument("--after", type=int, default=300, help="answers to wait for after the exit")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "TAHOE_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_bench_rolling"
        ),
    )
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    trees: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.baseline is not None:
        trees.insert(0, (f"baseline {args.baseline}", args.baseline.resolve()))
    for label, source in trees:
        for round_number in range(1, args.rounds + 1):
            with harness.workdir("tahoe-rolling-") as tmp:
                outcome = one_sigterm(args, source, tmp)
            print(
                f"{label}, round {round_number}: SIGTERM to 1 of 2 instances: "
                f"{outcome.errors} errors of {outcome.total:,} requests "
                f"({100 * outcome.errors / max(outcome.total, 1):.1f}%) over {outcome.seconds:.1f} s; "
                f"statuses {outcome.statuses}; the instance exited with {outcome.exit_code}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
