"""Usage metering and rate-limiting figures on this machine.

    .venv/bin/python bench/usage_bench.py [--duration 10] [--clients 4] [--batch 1000]

Prints:
  - RecordUsageBatch ingest into PostgreSQL: events/s through a real `tahoe-auth serve`
    process (PostgreSQL + its own Redis), its rollup pipeline running alongside, and
    how long the rollups then take to catch up (target: at least 10,000 events/s);
  - the rate limiter's Redis round trips per check with four policies (per address,
    tenant, API key, user), counted on the client socket and in Redis's own
    `INFO commandstats` (target: one), and its checks/s and latency from one thread;
  - (Check with rate limiting on vs off through Envoy is row (f) of bench/ext_authz_bench.py.)

It starts its own redis-server on a free port (so that other work on the shared one
cannot skew the counts) and uses the PostgreSQL database `tahoe_bench_usage`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tahoe_auth.authz.ratelimit import RateLimiter
from tahoe_auth.domain.ratelimit import LimitSet, Policy, RateLimitSubject, Strategy
from tahoe_auth.store.limiter_backends import MemoryLimiterBackend, RedisLimiterBackend
from tahoe_auth.v1 import usage_pb2, usage_pb2_grpc
from tests import harness

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_bench_usage"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


@contextmanager
def own_redis(tmp: Path) -> Iterator[str]:
    port = harness.free_port()
    binary = shutil.which("redis-server") or "redis-server"
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with harness.managed_process(argv, tmp / "redis.log", ready_port=port):
        yield f"redis://127.0.0.1:{port}/0"


# --- RecordUsageBatch ingest ---------------------------------------------------------------


def prepare_server_env(tmp: Path, redis_url: str) -> dict[str, str]:
    return harness.serve_env(tmp, PG_URL, redis_url) | {
        "TAHOE_DRAIN_SECONDS": "0",  # one instance: nowhere to drain to
        "TAHOE_LOG_LEVEL": "WARNING",
    }


def bootstrap(env: dict[str, str]) -> tuple[str, str]:
    """Create a tenant and a platform key; returns (tenant_id, platform_key)."""
    import json

    cli = [sys.executable, "-m", "tahoe_auth"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    out = subprocess.run(
        [*cli, "bootstrap", "--tenant", "bench", "--owner-email", "owner@bench.test"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out)
    return result["tenant_id"], result["platform_admin_key"]


def make_batches(count: int, size: int) -> list[usage_pb2.RecordUsageBatchRequest]:
    from google.protobuf import timestamp_pb2

    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    run = secrets.token_hex(4)
    metrics = ["api.requests", "transcription.seconds", "storage.bytes"]
    return [
        usage_pb2.RecordUsageBatchRequest(
            events=[
                usage_pb2.UsageEvent(
                    metric=metrics[i % 3],
                    quantity=1.0 + (i % 7),
                    time=now,
                    dimensions={"route": "/v1/transcribe"},
                    idempotency_key=f"{run}-{b}-{i}",
                )
                for i in range(size)
            ]
        )
        for b in range(count)
    ]


def bench_ingest(target: str, platform_key: str, tenant_id: str, clients: int, batch: int, duration: float) -> Any:
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 1 << 20)])
    stub = usage_pb2_grpc.UsageServiceStub(channel)
    metadata = (("authorization", f"Bearer {platform_key}"),)
    # Enough pre-built batches for ~60,000 events/s; built before the clock starts.
    batches = make_batches(max(clients, int(60_000 * duration / batch)), batch)
    for request in batches:
        request.tenant_id = tenant_id
    recorded, errors, latencies = [0], [0], []
    lock = threading.Lock()
    cursor = iter(batches)
    stop = time.monotonic() + duration

    def client() -> None:
        while time.monotonic() < stop:
            with lock:
                request = next(cursor, None)
            if request is None:
                return
            started = time.perf_counter()
            try:
                response = stub.RecordUsageBatch(request, metadata=metadata, timeout=30)
            except grpc.RpcError as error:
                with lock:
                    errors[0] += 1
                print(f"  RecordUsageBatch failed: {error.code().name} {error.details()}", file=sys.stderr)
                continue
            with lock:
                recorded[0] += response.recorded_count
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    channel.close()
    return {
        "events_per_s": recorded[0] / elapsed,
        "events": recorded[0],
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "errors": errors[0],
    }


def rollup_catch_up(timeout: float = 120.0) -> tuple[int, float]:
    """(events left unrolled right after ingest, seconds until the server's pipeline drained them)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_URL)
    started = time.monotonic()
    with engine.connect() as conn:
        pending = int(conn.execute(text("SELECT count(*) FROM usage_events WHERE NOT rolled_up")).scalar() or 0)
        left = pending
        while left and time.monotonic() - started < timeout:
            time.sleep(0.5)
            left = int(conn.execute(text("SELECT count(*) FROM usage_events WHERE NOT rolled_up")).scalar() or 0)
            conn.commit()
        raw = conn.execute(text("SELECT coalesce(sum(quantity), 0) FROM usage_events")).scalar()
        rolled = conn.execute(text("SELECT coalesce(sum(quantity), 0) FROM usage_rollups")).scalar()
    engine.dispose()
    if raw != rolled:
        print(f"  WARNING: rollups ({rolled}) differ from raw events ({raw})", file=sys.stderr)
    return pending, time.monotonic() - started


# --- limiter round trips ------------------------------------------------------------------------


class CountingConnection(redis.Connection):
    """Counts writes to the socket: one per command, one per pipeline: round trips."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


def commandstats(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def bench_limiter_round_trips(redis_url: str, checks: int) -> dict[str, float]:
    kwargs = redis.connection.parse_url(redis_url)  # type: ignore[no-untyped-call]
    pool = redis.ConnectionPool(connection_class=CountingConnection, socket_timeout=0.05, **kwargs)
    client = redis.Redis(connection_pool=pool)
    admin = redis.Redis.from_url(redis_url)
    limits = LimitSet(
        {
            "per_address": Policy("per_address", 10**9, 60.0, Strategy.SLIDING_WINDOW),
            "per_tenant": Policy("per_tenant", 10**9, 60.0, Strategy.GCRA),
            "per_api_key": Policy("per_api_key", 10**9, 60.0, Strategy.FIXED_WINDOW),
            "per_user": Policy("per_user", 10**9, 60.0, Strategy.GCRA),
        }
    )
    limiter = RateLimiter(RedisLimiterBackend(client), lambda _t: limits, fallback=MemoryLimiterBackend())
    subject = RateLimitSubject("10.1.2.3", "tenant-a", api_key_id="key-1", user_id="user-1")
    limiter.check(subject)  # loads the script (EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA: once)
    before_server = commandstats(admin)
    before_client = CountingConnection.sent
    latencies = []
    began = time.perf_counter()
    for _ in range(checks):
        started = time.perf_counter()
        decision = limiter.check(subject)
        latencies.append(time.perf_counter() - started)
        assert decision.allowed and not decision.degraded
    elapsed = time.perf_counter() - began
    after_server = commandstats(admin)
    round_trips = CountingConnection.sent - before_client
    commands = {k: after_server.get(k, 0) - before_server.get(k, 0) for k in after_server}
    commands.pop("info", None)
    limiter_commands = {k: v for k, v in commands.items() if v}
    client.close()
    admin.close()
    return {
        "round_trips_per_check": round_trips / checks,
        "commands": limiter_commands,  # type: ignore[dict-item]
        "checks_per_s": checks / elapsed,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
    }


# --- Check through Envoy (for the lead to complete) -------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of ingest")
    parser.add_argument("--clients", type=int, default=4, help="concurrent RecordUsageBatch callers")
    parser.add_argument("--batch", type=int, default=1000, help="events per RecordUsageBatch")
    parser.add_argument("--checks", type=int, default=20_000, help="limiter checks for the round-trip count")
    args = parser.parse_args()
    with harness.workdir() as tmp, own_redis(tmp) as redis_url:
        limiter = bench_limiter_round_trips(redis_url, args.checks)
        env = prepare_server_env(tmp, redis_url)
        tenant_id, platform_key = bootstrap(env)
        target = env["TAHOE_GRPC_ADDR"]
        with harness.serve(env, tmp / "server.log"):
            ingest = bench_ingest(target, platform_key, tenant_id, args.clients, args.batch, args.duration)
            pending, drained_in = rollup_catch_up()

    print(f"\nUsage and rate-limit figures ({os.cpu_count()} cores)")
    print(
        f"RecordUsageBatch ingest into PostgreSQL: {ingest['events_per_s']:,.0f} events/s "
        f"({ingest['events']:,} events, {args.clients} clients x {args.batch}-event batches, "
        f"{args.duration:.0f} s; per batch p50 {ingest['p50_ms']:.1f} ms, p99 {ingest['p99_ms']:.1f} ms; "
        f"{ingest['errors']} errors)"
    )
    print(f"  rollups: {pending:,} events pending after ingest, drained in {drained_in:.1f} s")
    commands: dict[str, int] = limiter["commands"]  # type: ignore[assignment]
    inner = ", ".join(f"{name} {n / args.checks:g}" for name, n in sorted(commands.items()) if name != "evalsha")
    print(
        f"Limiter, 4 policies: {limiter['round_trips_per_check']:.2f} Redis round trips per check (client socket); "
        f"server side {commands.get('evalsha', 0) / args.checks:.2f} EVALSHA per check (inside it: {inner}); "
        f"{limiter['checks_per_s']:,.0f} checks/s from one thread, "
        f"p50 {limiter['p50_ms']:.2f} ms, p99 {limiter['p99_ms']:.2f} ms"
    )
    print("Check through Envoy with rate limiting on vs off: bench/ext_authz_bench.py, row (f)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
