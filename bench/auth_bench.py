"""Login and ValidateToken figures for a real server process on this machine.

    .venv/bin/python bench/auth_bench.py [--duration 10] [--sqlite]

Starts `tahoe-auth serve` (PostgreSQL + Redis by default, like production; --sqlite for
the embedded default; rate limiting off, since one account logs in over and over),
bootstraps a tenant, then prints:
  - Login: logins/s and p50/p99 at OWASP argon2 parameters (m=19 MiB, t=2, p=1) with
    `--login-clients` concurrent callers;
  - ValidateToken: calls/s and p50/p99 from `--validate-procs` client processes (clients
    in Python cost CPU too: the 2 cores are shared by clients and server).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc
from tests import harness

PASSWORD = "quiet kettle orbit 1234"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_bench"
REDIS_URL = "redis://127.0.0.1:6379/14"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def prepare_env(tmp: Path, sqlite: bool) -> dict[str, str]:
    stores = (None, None) if sqlite else (PG_URL, REDIS_URL)
    env = harness.serve_env(tmp, *stores) | {
        "TAHOE_DRAIN_SECONDS": "0",  # one instance: nowhere to drain to
        "TAHOE_LOG_LEVEL": "WARNING",
        # The API's own Login limits (10 per account and 60 per address a minute) would
        # measure the limiter, not login: one account logs in here hundreds of times.
        "TAHOE_RATE_LIMIT_ENABLED": "false",
    }
    harness.bootstrap(env, "bench", "owner@bench.test", PASSWORD)
    return env


def bench_logins(target: str, clients: int, duration: float) -> dict[str, float]:
    stub = auth_pb2_grpc.AuthServiceStub(grpc.insecure_channel(target))
    request = auth_pb2.LoginRequest(tenant="bench", email="owner@bench.test", password=PASSWORD)
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.monotonic() + duration

    def loop() -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                stub.Login(request, timeout=10)
                latencies.append(time.perf_counter() - started)
            except grpc.RpcError as error:
                errors.append(error.code().name)

    stub.Login(request)  # warm up
    threads = [threading.Thread(target=loop) for _ in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    return {
        "per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "errors": len(errors),
    }


def validate_worker(target: str, token: str, threads: int, duration: float) -> None:
    """Runs in a child process; prints its latencies as JSON."""
    stub = auth_pb2_grpc.AuthServiceStub(grpc.insecure_channel(target))
    request = auth_pb2.ValidateTokenRequest(token=token)
    latencies: list[float] = []
    failures = [0]
    stop = time.monotonic() + duration

    def loop() -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                stub.ValidateToken(request, timeout=5)
                latencies.append(time.perf_counter() - started)
            except grpc.RpcError:
                failures[0] += 1

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps({"latencies": latencies, "failures": failures[0]}))


def bench_validate(target: str, token: str, procs: int, threads: int, duration: float) -> dict[str, float]:
    argv = [sys.executable, __file__, "--worker", target, token, str(threads), str(duration)]
    children = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    results = [json.loads(child.communicate()[0]) for child in children]
    latencies = [x for r in results for x in r["latencies"]]
    return {
        "per_s": len(latencies) / duration,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "errors": sum(r["failures"] for r in results),
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        validate_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--sqlite", action="store_true", help="embedded default instead of PostgreSQL + Redis")
    parser.add_argument("--login-clients", type=int, default=4)
    parser.add_argument("--validate-procs", type=int, default=2)
    parser.add_argument("--validate-threads", type=int, default=4)
    args = parser.parse_args()
    with harness.workdir() as tmp:
        env = prepare_env(tmp, args.sqlite)
        target = env["TAHOE_GRPC_ADDR"]
        with harness.serve(env, tmp / "server.log"):
            logins = bench_logins(target, args.login_clients, args.duration)
            stub = auth_pb2_grpc.AuthServiceStub(grpc.insecure_channel(target))
            token = stub.Login(
                auth_pb2.LoginRequest(tenant="bench", email="owner@bench.test", password=PASSWORD)
            ).tokens.access_token
            validate = bench_validate(target, token, args.validate_procs, args.validate_threads, args.duration)
    backend = "SQLite + in-process store" if args.sqlite else "PostgreSQL + Redis"
    print(f"\nTahoe Auth figures ({backend}, {os.cpu_count()} cores, {args.duration:.0f} s per row)")
    print(f"{'what':<34}{'per s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    rows = [
        (f"Login, argon2id OWASP, {args.login_clients} clients", logins),
        (f"ValidateToken, {args.validate_procs}x{args.validate_threads} clients", validate),
    ]
    for name, r in rows:
        print(f"{name:<34}{r['per_s']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
