"""How long Redis calls take as the auth server sees them, on this machine, under load:
the figures behind TAHOE_REDIS_TIMEOUT's default (docs/operations.md).

    .venv/bin/python bench/redis_latency.py [--seconds 15] [--database-url ...] [--port 19310]

Starts a private redis-server, builds the app in-process on it (real RedisStore) and
serves gRPC. Then, per scenario, a probe thread inside the server process times the
three kinds of call the request path makes (a GET, the live-counter pipeline read, the
rate limiter's Lua script) back to back, on a client without the production timeout
(5 s) so that the tail is seen rather than cut off. Scenarios:

  idle          nothing else running
  cpu           busy-loop processes (one per core unless --burners)
  check         ext_authz Check load from client processes (gRPC, several threads each)
  cpu+check     both

Prints, per scenario, p50 / p90 / p99 / p99.9 / max in milliseconds and how many calls
took longer than 50, 100 and 250 ms. The probe competes for the GIL with the server's
own worker threads, as the real calls do.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

if TYPE_CHECKING:
    from tahoe_auth.app import App

PASSWORD = "quiet kettle orbit 1234"


def _burn() -> None:
    while True:
        pass


def _check_load(address: str, token: str, threads: int) -> None:
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2 as ext_authz
    from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_authz_grpc

    channel = grpc.insecure_channel(address)
    stub = ext_authz_grpc.AuthorizationStub(channel)

    def loop(n: int) -> None:
        request = ext_authz.CheckRequest()
        http = request.attributes.request.http
        http.method, http.path = "GET", "/v1/jobs"
        http.headers.update({"authorization": f"Bearer {token}", "x-forwarded-for": f"10.0.0.{n}"})
        request.attributes.context_extensions.update(
            {"upstream": "transcription", "required_permission": "transcription:read"}
        )
        while True:
            try:
                stub.Check(request, timeout=10)
            except grpc.RpcError:
                time.sleep(0.01)

    for n in range(threads):
        threading.Thread(target=loop, args=(n,), daemon=True).start()
    threading.Event().wait()


def report_header() -> None:
    header = f"{'scenario':<10} {'call':<10} {'n':>6} {'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>7} {'max':>7}"
    print(header + f" {'>50ms':>6} {'>100ms':>6} {'>250ms':>6}")


def report(scenario: str, samples: dict[str, list[float]]) -> None:
    for name, values in samples.items():
        over = [sum(v > limit for v in values) for limit in (50, 100, 250)]
        print(
            f"{scenario:<10} {name:<10} {len(values):>6} "
            + " ".join(f"{percentile(values, q):>7.2f}" for q in (0.5, 0.9, 0.99, 0.999))
            + f" {max(values):>7.2f} "
            + " ".join(f"{n:>6}" for n in over),
            flush=True,
        )


def stop(processes: list[multiprocessing.process.BaseProcess]) -> None:
    for process in processes:
        process.kill()
    for process in processes:
        process.join()
    processes.clear()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def probe(url: str, seconds: float, checks: object) -> dict[str, list[float]]:
    import redis

    from tahoe_auth.store.limiter_backends import RedisLimiterBackend
    from tahoe_auth.store.live_counters import RedisLiveCounters

    client = redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)
    live = RedisLiveCounters(client)
    limiter = RedisLimiterBackend(client)
    calls = {
        "get": lambda: client.get("probe:key"),
        "live read": lambda: live.read(["t1", "t2"], "2026-12"),
        "limiter": lambda: limiter.evaluate(checks, None),  # type: ignore[arg-type]
    }
    samples: dict[str, list[float]] = {name: [] for name in calls}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - started) * 1000)
        time.sleep(0.002)
    client.close()
    return samples


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--port", type=int, default=19310, help="first of two ports (redis, gRPC)")
    parser.add_argument("--clients", type=int, default=2, help="Check load processes")
    parser.add_argument("--threads", type=int, default=6, help="threads per Check load process")
    parser.add_argument("--burners", type=int, default=0, help="busy-loop processes (default: one per core)")
    parser.add_argument(
        "--database-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_bench",
        help="a database of its own: its schema is reset",
    )
    return parser.parse_args()


def owner_token(app: App, address: str) -> str:
    import grpc

    from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc

    slug = f"t{secrets.token_hex(4)}"
    app.tenants.create_tenant_with_owner(slug, slug, f"owner@{slug}.test", PASSWORD)
    with grpc.insecure_channel(address) as channel:
        request = auth_pb2.LoginRequest(tenant=slug, email=f"owner@{slug}.test", password=PASSWORD)
        return str(auth_pb2_grpc.AuthServiceStub(channel).Login(request).tokens.access_token)


def run_scenarios(args: argparse.Namespace, address: str, token: str, redis_url: str, checks: object) -> None:
    spawn = multiprocessing.get_context("spawn")
    cpus = os.cpu_count() or 2
    burners = args.burners or cpus
    print(f"cpus={cpus} load average={os.getloadavg()} burners={burners} seconds per scenario={args.seconds}")
    report_header()
    helpers: list[multiprocessing.process.BaseProcess] = []
    try:
        for scenario in ("idle", "cpu", "check", "cpu+check"):
            if "cpu" in scenario:
                helpers += [spawn.Process(target=_burn, daemon=True) for _ in range(burners)]
            if "check" in scenario:
                load = (address, token, args.threads)
                helpers += [spawn.Process(target=_check_load, args=load, daemon=True) for _ in range(args.clients)]
            for helper in helpers:
                helper.start()
            time.sleep(2 if helpers else 0)  # let the spawned interpreters start loading
            samples = probe(redis_url, args.seconds, checks)
            stop(helpers)
            report(scenario, samples)
    finally:
        stop(helpers)


def main() -> None:
    args = parse_args()
    # A SIGTERM (timeout, a wrapper) still runs the cleanups: the busy loops, the load
    # processes and the private Redis must not outlive the run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    from tahoe_auth.app import build_app
    from tahoe_auth.config import Settings
    from tahoe_auth.domain.ratelimit import RateLimitSubject
    from tahoe_auth.server import create_server
    from tests import harness, support
    from tests.servers import RedisProcess

    support.create_database(args.database_url)
    support.reset_schema(args.database_url)
    with harness.workdir("tahoe-redis-latency-") as tmp:
        own = RedisProcess(tmp, args.port)
        own.start()
        try:
            env = {
                "TAHOE_DATABASE_URL": args.database_url,
                "TAHOE_REDIS_URL": own.url,
                "TAHOE_MASTER_KEY": "B" * 43,
                "TAHOE_VAR_DIR": str(tmp),
                "TAHOE_WEBHOOK_WORKER": "false",
            }
            app = build_app(Settings.from_env(env))
            app.keys.ensure_active_key()
            app.start_background()
            server, port, _ = create_server(app, f"127.0.0.1:{args.port + 1}")
            server.start()
            try:
                address = f"127.0.0.1:{port}"
                checks = app.limiter.checks_for(RateLimitSubject(client_address="10.9.9.9", tenant_id="probe"))
                run_scenarios(args, address, owner_token(app, address), own.url, checks)
            finally:
                server.stop(None)
                app.close()
        finally:
            own.stop()


if __name__ == "__main__":
    main()
