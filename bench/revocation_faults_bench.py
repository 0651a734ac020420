"""Revocations and Check speed while Redis is hung, killed or restarted empty.

    .venv/bin/python bench/revocation_faults_bench.py [--duration 3] [--threads 4]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_bench]

Two instances (A and B, in this process) share PostgreSQL and a private Redis. For
each Redis state, a logout goes through B and the bench measures how long A keeps
accepting that session's token (capped at --cap seconds), then how many warm Checks
per second A answers (gRPC, --threads callers, one still-valid token) and what share
of them read the database. Compare rows within one run: the machine is shared.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from google.rpc import code_pb2
from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tahoe_auth import migrate
from tahoe_auth.v1 import auth_pb2
from tests.integration.test_ext_authz import check, check_request
from tests.servers import RedisProcess
from tests.support import RunningServer, bearer, running_server, truncate_all


def allowed(server: RunningServer, token: str) -> bool:
    return check(server, check_request(f"Bearer {token}")).status.code == code_pb2.OK


def accepted_for(a: RunningServer, token: str, cap: float) -> float:
    started = time.monotonic()
    while allowed(a, token):
        if time.monotonic() - started > cap:
            return float("inf")
        time.sleep(0.005)
    return time.monotonic() - started


def throughput(a: RunningServer, token: str, duration: float, threads: int) -> tuple[float, float]:
    """Checks per second, and SQL statements per Check issued by request threads."""
    done = [0]
    statements = [0]
    stop = threading.Event()
    lock = threading.Lock()

    def count(*_: object) -> None:
        if threading.current_thread().name.startswith("grpc"):
            statements[0] += 1

    def caller() -> None:
        while not stop.is_set():
            allowed(a, token)
            with lock:
                done[0] += 1

    event.listen(a.app.db.engine, "before_cursor_execute", count)
    workers = [threading.Thread(target=caller) for _ in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    time.sleep(duration)
    stop.set()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    event.remove(a.app.db.engine, "before_cursor_execute", count)
    return done[0] / elapsed, statements[0] / max(1, done[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--cap", type=float, default=10.0)
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_bench")
    args = parser.parse_args()
    migrate.upgrade(args.database_url)
    truncate_all(args.database_url)
    workdir = Path(tempfile.mkdtemp(prefix="tahoe-bench-redis-"))
    redis = RedisProcess(workdir)
    redis.start()
    env = {
        "TAHOE_DATABASE_URL": args.database_url,
        "TAHOE_REDIS_URL": redis.url,
        "TAHOE_MASTER_KEY": "B" * 43,
        "TAHOE_VAR_DIR": str(workdir),
        "TAHOE_RATE_LIMIT_ENABLED": "false",
    }

    def up() -> Callable[[], None]:
        return lambda: None

    def hung() -> Callable[[], None]:
        redis.pause()
        time.sleep(1)
        return redis.resume

    def killed() -> Callable[[], None]:
        redis.kill()
        time.sleep(1)
        return redis.start

    rows = []
    try:
        with running_server(env) as a, running_server(env) as b:
            tenant = b.create_tenant()
            for name, fault in (("redis up", up), ("redis hung (SIGSTOP)", hung), ("redis killed", killed)):
                revoked = b.login(tenant).tokens.access_token
                kept = b.login(tenant).tokens.access_token
                assert allowed(a, revoked) and allowed(a, kept)
                recover = fault()
                b.auth.Logout(auth_pb2.LogoutRequest(), metadata=bearer(revoked), timeout=10)
                window = accepted_for(a, revoked, args.cap)
                rate, sql = throughput(a, kept, args.duration, args.threads)
                rows.append((name, window, rate, sql))
                recover()
                time.sleep(1.5)
    finally:
        redis.stop()
    print(f"{'Redis':<24} {'revoked token accepted by A':>28} {'warm Checks/s on A':>20} {'SQL per Check':>14}")
    for name, window, rate, sql in rows:
        shown = f">{args.cap:.0f} s" if window == float("inf") else f"{window * 1000:.0f} ms"
        print(f"{name:<24} {shown:>28} {rate:>20.0f} {sql:>14.2f}")


if __name__ == "__main__":
    main()
