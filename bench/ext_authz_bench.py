"""Envoy + ext_authz figures for this machine, in one run.

    .venv/bin/python bench/ext_authz_bench.py [--rounds 5] [--duration 5] [--connections 8 32] [--sqlite]

wrk drives Envoy (``--concurrency 1``) on 127.0.0.1; every route ends in a 200
``direct_response`` so that no upstream is the bottleneck. Rows:

  (a) Envoy answering directly, no auth
  (b) Envoy's native ``jwt_authn`` verifying the same ES256 access token (no cache)
  (c) Envoy + ext_authz -> a do-nothing Python handler on the same server model as
      ours (sync ``grpc.server``, 8 threads; bench/server_model.py): the Python floor
  (d) Envoy + ext_authz -> ``tahoe-auth serve``'s full Check, user access token, on a
      route requiring ``transcription:read``
  (e) the same with an API key (``tahoe_sk_…``)
  (f) as (d), on a second server with rate limiting off (TAHOE_RATE_LIMIT_ENABLED=false)
  (g) Envoy's HTTP ext_authz (``http_service``) -> a do-nothing uvloop + httptools
      server (bench/http_floor.py), behind the same two header_mutation filters as (h)
  (h) Envoy's HTTP ext_authz -> ``tahoe-auth serve``'s TAHOE_AUTHZ_HTTP_ADDR, user
      access token, the route's ``transcription:read`` set by a per-route header_mutation
  (i) the same with an API key
  (d0), (h0) as (d) and (h), on a server running other code (``--baseline-src DIR``, a
      checkout's root; e.g. ``git archive <commit> tahoe_auth | tar -x -C DIR``): a
      before/after within one run, on the same machine load

then (d)/(c), (d)/(b), (d)/(f), (h)/(b), (h)/(g) and the targets: (d) >= 80% of (c);
(h) >= (b); (h) >= 85% of (g); p99 of (h) <= 1.5 x p99 of (b); p99 < 15 ms at 8
connections and < 40 ms at 32; no non-2xx for valid credentials; (d) >= 85% of (f)
with the Redis commands (d) sent per Check, from Redis's commandstats
(target: one round trip). Both servers run every Check step but the limiter: quota,
metering and the rate limits, the latter set so high here that nothing is refused
(the figure is the limiter's cost, not its denials). "µs/req" is the server
process's CPU time (/proc/<pid>/stat utime+stime) over the measured run divided by
the requests answered: Python's cost per Check, Envoy's and wrk's excluded. The auth server runs
on PostgreSQL + Redis as in production (``--sqlite`` for the embedded default); its
warm Check touches neither. Envoy, wrk and Python share the machine's cores, and other
work on the machine shows up in the load average printed first: compare rows within
one run. Cases are interleaved round by round and reported as medians, so that a
burst of load elsewhere on the machine does not land on one case only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from tests import harness

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "quiet kettle orbit 1234"
TENANT = "bench"
EMAIL = "owner@bench.test"
ROUTE = {"required_permission": "transcription:read", "upstream": "transcription"}
THREADS = 8
DEFAULT_DATABASE_URL = os.environ.get(
    "TAHOE_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_bench_authz"
)
DEFAULT_REDIS_URL = os.environ.get("TAHOE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
# What envoy/envoy.yaml's per-route header_mutation sets for such a route (HTTP transport).
ROUTE_HEADERS = {"x-tahoe-route-permission": ROUTE["required_permission"], "x-tahoe-route-upstream": ROUTE["upstream"]}


@dataclass(frozen=True)
class Row:
    case: str
    conns: int
    result: harness.WrkResult
    server_cpu: float
    envoy_cpu: float
    # Server CPU microseconds per request (0 without a server process).
    server_us: float = 0.0


NEVER_LIMITED = json.dumps({name: {"limit": 10_000_000, "period": 60} for name in ("per_address", "per_tenant")})


def auth_env(tmp: Path, args: argparse.Namespace) -> dict[str, str]:
    env = {
        **os.environ,
        "TAHOE_VAR_DIR": str(tmp / "var"),
        "TAHOE_GRPC_ADDR": f"127.0.0.1:{harness.free_port()}",
        "TAHOE_DRAIN_SECONDS": "0",  # one instance: nowhere to drain to
        "TAHOE_HTTP_ADDR": f"127.0.0.1:{harness.free_port()}",
        "TAHOE_AUTHZ_HTTP_ADDR": f"127.0.0.1:{harness.free_port()}",
        "TAHOE_LOG_LEVEL": "WARNING",
        "TAHOE_GRPC_WORKERS": str(args.threads),
        "TAHOE_RATE_LIMITS": NEVER_LIMITED,
    }
    if not args.sqlite:
        from tests import support

        support.create_database(args.database_url)
        support.reset_schema(args.database_url)
        import redis

        redis.Redis.from_url(args.redis_url).flushdb()
        env |= {
            "TAHOE_DATABASE_URL": args.database_url,
            "TAHOE_REDIS_URL": args.redis_url,
            "TAHOE_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        }
    cli = [sys.executable, "-m", "tahoe_auth"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True, cwd=ROOT)
    subprocess.run(
        [*cli, "bootstrap", "--tenant", TENANT, "--owner-email", EMAIL, "--password-stdin"],
        env=env,
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return env


@dataclass(frozen=True)
class Credentials:
    access_token: str
    api_key: str | None
    jwks_json: str
    issuer: str
    audience: str


def credentials(target: str, http_addr: str) -> Credentials:
    from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        token = stub.Login(auth_pb2.LoginRequest(tenant=TENANT, email=EMAIL, password=PASSWORD)).tokens.access_token
        api_key = create_api_key(stub, token)
    import urllib.request

    with urllib.request.urlopen(f"http://{http_addr}/.well-known/jwks.json") as response:
        jwks = response.read().decode()
    return Credentials(token, api_key, jwks, issuer="tahoe-auth", audience="tahoe")


def create_api_key(stub: object, token: str) -> str | None:
    """An API key for row (e), when this build has API keys."""
    from tahoe_auth.v1 import auth_pb2

    if not hasattr(auth_pb2, "CreateApiKeyRequest"):
        return None
    request = auth_pb2.CreateApiKeyRequest(name="bench", scopes=["transcription:read"])
    response = stub.CreateApiKey(request, metadata=(("authorization", f"Bearer {token}"),))  # type: ignore[attr-defined]
    return str(response.secret)


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    envoy: harness.Envoy
    pids: tuple[int, ...]
    headers: Mapping[str, str] | None
    # Count the Redis commands this case sends (its server's Redis), per request.
    redis_url: str | None = None


def redis_calls(url: str) -> int:
    """EVALSHA calls so far: the limiter's round trips (Lua's own commands inside a
    call count in commandstats too, but are no round trips)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def measure(case: Case, conns: int, duration: int, warmup: int, redis_per_request: list[float]) -> Row:
    harness.run_wrk(case.envoy.url(), conns, warmup, case.headers)  # warm caches and connections
    before = harness.cpu_seconds(case.pids), harness.cpu_seconds([case.envoy.pid])
    calls_before = redis_calls(case.redis_url) if case.redis_url else 0
    result = harness.run_wrk(case.envoy.url(), conns, duration, case.headers)
    if case.redis_url:
        redis_per_request.append((redis_calls(case.redis_url) - calls_before) / max(1, result.requests))
    after = harness.cpu_seconds(case.pids), harness.cpu_seconds([case.envoy.pid])
    server, envoy_cpu = (100 * (a - b) / result.duration_s for a, b in zip(after, before, strict=True))
    server_us = 1e6 * (after[0] - before[0]) / max(1, result.requests) if case.pids else 0.0
    return Row(f"{case.key} {case.label}", conns, result, server, envoy_cpu, server_us)


@contextlib.contextmanager
def envoy_for(tmp: Path, **config: object) -> Iterator[harness.Envoy]:
    with harness.run_envoy(harness.envoy_config(harness.free_port(), **config), tmp) as envoy:  # type: ignore[arg-type]
        yield envoy


HEADER = (
    f"{'case':<48}{'conns':>6}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'non-2xx':>9}"
    f"{'srv CPU%':>9}{'µs/req':>8}{'envoy%':>8}"
)


def format_row(row: Row) -> str:
    r = row.result
    return (
        f"{row.case:<48}{row.conns:>6}{r.rps:>9.0f}{r.p50_ms:>8.2f}{r.p99_ms:>8.2f}"
        f"{r.non_2xx + r.socket_errors:>9}{row.server_cpu:>9.0f}{row.server_us:>8.0f}{row.envoy_cpu:>8.0f}"
    )


def median_row(rows: Sequence[Row]) -> Row:
    """Median req/s, latencies and CPU over rounds; non-2xx summed."""
    results = [r.result for r in rows]

    def med(values: Sequence[float]) -> float:
        return statistics.median(values)

    duration = med([r.duration_s for r in results])
    merged = harness.WrkResult(
        requests=int(med([r.rps for r in results]) * duration),
        duration_s=duration,
        non_2xx=sum(r.non_2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        p50_ms=med([r.p50_ms for r in results]),
        p90_ms=med([r.p90_ms for r in results]),
        p99_ms=med([r.p99_ms for r in results]),
        max_ms=max(r.max_ms for r in results),
    )
    return Row(
        rows[0].case,
        rows[0].conns,
        merged,
        med([r.server_cpu for r in rows]),
        med([r.envoy_cpu for r in rows]),
        med([r.server_us for r in rows]),
    )


def start_baseline(
    stack: contextlib.ExitStack, tmp: Path, argv: list[str], env: dict[str, str], src: str
) -> tuple[int, int, int]:
    """`tahoe-auth serve` from the tahoe_auth under `src` (first on PYTHONPATH), on the
    same database and Redis: (pid, gRPC port, HTTP ext_authz port)."""
    port = harness.free_port()
    env_base = env | {
        "TAHOE_GRPC_ADDR": f"127.0.0.1:{port}",
        "TAHOE_HTTP_ADDR": f"127.0.0.1:{harness.free_port()}",
        "TAHOE_AUTHZ_HTTP_ADDR": f"127.0.0.1:{harness.free_port()}",
        "PYTHONPATH": str(Path(src).resolve()),
    }
    base = stack.enter_context(harness.managed_process(argv, tmp / "auth-base.log", ready_port=port, env=env_base))
    http_port = int(env_base["TAHOE_AUTHZ_HTTP_ADDR"].rsplit(":", 1)[1])
    harness.wait_for_port(http_port)
    return base.pid, port, http_port


def run(args: argparse.Namespace, redis_per_request: list[float]) -> list[Row]:
    """Every case runs in every round, interleaved, so that drift in the machine's
    load hits all of them alike; the table reports medians over the rounds."""
    with harness.workdir() as tmp, contextlib.ExitStack() as stack:
        env = auth_env(tmp, args)
        target, http_addr = env["TAHOE_GRPC_ADDR"], env["TAHOE_HTTP_ADDR"]
        auth_port = int(target.rsplit(":", 1)[1])
        argv = [sys.executable, "-m", "tahoe_auth", "serve"]
        auth = stack.enter_context(harness.managed_process(argv, tmp / "auth.log", ready_port=auth_port, env=env))
        off_port = harness.free_port()
        env_off = env | {
            "TAHOE_GRPC_ADDR": f"127.0.0.1:{off_port}",
            "TAHOE_HTTP_ADDR": f"127.0.0.1:{harness.free_port()}",
            "TAHOE_AUTHZ_HTTP_ADDR": f"127.0.0.1:{harness.free_port()}",
            "TAHOE_RATE_LIMIT_ENABLED": "false",
        }
        auth_off = stack.enter_context(
            harness.managed_process(argv, tmp / "auth-off.log", ready_port=off_port, env=env_off)
        )
        baseline = start_baseline(stack, tmp, argv, env, args.baseline_src) if args.baseline_src else None
        creds = credentials(target, http_addr)
        bearer = {"authorization": f"Bearer {creds.access_token}"}
        floor_port = harness.free_port()
        floor_argv = [sys.executable, str(ROOT / "bench" / "server_model.py"), "--serve", "sync"]
        floor_argv += ["--port", str(floor_port), "--threads", str(args.threads)]
        floor = stack.enter_context(harness.managed_process(floor_argv, tmp / "floor.log", ready_port=floor_port))
        http_floor_port = harness.free_port()
        http_floor_argv = [sys.executable, str(ROOT / "bench" / "http_floor.py"), "--port", str(http_floor_port)]
        http_floor = stack.enter_context(
            harness.managed_process(http_floor_argv, tmp / "http-floor.log", ready_port=http_floor_port)
        )
        authz_http_port = int(env["TAHOE_AUTHZ_HTTP_ADDR"].rsplit(":", 1)[1])
        harness.wait_for_port(authz_http_port)
        provider = harness.JwtProvider(creds.issuer, creds.jwks_json, audiences=(creds.audience,))
        direct = stack.enter_context(envoy_for(tmp))
        jwt_authn = stack.enter_context(envoy_for(tmp, jwt_provider=provider))
        to_floor = stack.enter_context(envoy_for(tmp, ext_authz_ports=[floor_port], context_extensions=ROUTE))
        to_tahoe = stack.enter_context(envoy_for(tmp, ext_authz_ports=[auth_port], context_extensions=ROUTE))
        to_tahoe_off = stack.enter_context(envoy_for(tmp, ext_authz_ports=[off_port], context_extensions=ROUTE))
        http_to_floor = stack.enter_context(
            envoy_for(tmp, http_authz_ports=[http_floor_port], route_headers=ROUTE_HEADERS)
        )
        http_to_tahoe = stack.enter_context(
            envoy_for(tmp, http_authz_ports=[authz_http_port], route_headers=ROUTE_HEADERS)
        )
        redis_url = None if args.sqlite else args.redis_url
        cases = [
            Case("(a)", "Envoy direct, no auth", direct, (), None),
            Case("(b)", "Envoy jwt_authn ES256", jwt_authn, (), bearer),
            Case("(c)", "ext_authz -> do-nothing Python", to_floor, (floor.pid,), bearer),
            Case("(d)", "ext_authz -> Tahoe Check, user token", to_tahoe, (auth.pid,), bearer, redis_url),
            Case("(f)", "as (d), rate limiting off", to_tahoe_off, (auth_off.pid,), bearer),
            Case("(g)", "HTTP ext_authz -> do-nothing Python", http_to_floor, (http_floor.pid,), bearer),
            Case("(h)", "HTTP ext_authz -> Tahoe Check, user token", http_to_tahoe, (auth.pid,), bearer),
        ]
        if baseline is not None:
            base_pid, base_port, base_http_port = baseline
            to_base = stack.enter_context(envoy_for(tmp, ext_authz_ports=[base_port], context_extensions=ROUTE))
            http_to_base = stack.enter_context(
                envoy_for(tmp, http_authz_ports=[base_http_port], route_headers=ROUTE_HEADERS)
            )
            cases.append(Case("(d0)", "as (d), --baseline-src code", to_base, (base_pid,), bearer))
            cases.append(Case("(h0)", "as (h), --baseline-src code", http_to_base, (base_pid,), bearer))
        if creds.api_key is None:
            print("(e) ext_authz -> Tahoe Check, API key: skipped (no API keys in this build)")
        else:
            key = {"authorization": f"Bearer {creds.api_key}"}
            cases.append(Case("(e)", "ext_authz -> Tahoe Check, API key", to_tahoe, (auth.pid,), key))
            cases.append(Case("(i)", "HTTP ext_authz -> Tahoe Check, API key", http_to_tahoe, (auth.pid,), key))
        if args.cases:
            cases = [c for c in cases if c.key.strip("()") in args.cases]
        return measure_rounds(cases, args, redis_per_request)


def measure_rounds(cases: Sequence[Case], args: argparse.Namespace, redis_per_request: list[float]) -> list[Row]:
    measured: dict[tuple[str, int], list[Row]] = {}
    print(HEADER, flush=True)
    for conns in args.connections:
        for round_no in range(1, args.rounds + 1):
            for case in cases:
                row = measure(case, conns, args.duration, args.warmup, redis_per_request)
                measured.setdefault((case.key, conns), []).append(row)
                print(f"{format_row(row)}   round {round_no}", flush=True)
    return [median_row(rows) for rows in measured.values()]


def summary(rows: list[Row], conns_list: Sequence[int]) -> list[str]:
    by = {(r.case.split()[0], r.conns): r for r in rows}
    lines = []
    for conns in conns_list:
        a, b, c, d, f = (by.get((k, conns)) for k in ("(a)", "(b)", "(c)", "(d)", "(f)"))
        if not (b and c and d):
            continue
        lines.append(
            f"{conns} connections: (d)/(c) = {d.result.rps / c.result.rps:.2f} (target >= 0.80), "
            f"(d)/(b) = {d.result.rps / b.result.rps:.2f}"
            + (f", (d)/(a) = {d.result.rps / a.result.rps:.2f}" if a else "")
            + (f", rate limiting on/off (d)/(f) = {d.result.rps / f.result.rps:.2f} (target >= 0.85)" if f else "")
        )
        g, h = by.get(("(g)", conns)), by.get(("(h)", conns))
        if h:
            lines.append(
                f"  HTTP: (h)/(b) = {h.result.rps / b.result.rps:.2f} (target >= 1.00)"
                + (f", (h)/(g) = {h.result.rps / g.result.rps:.2f} (target >= 0.85)" if g else "")
                + f", (h)/(d) = {h.result.rps / d.result.rps:.2f}"
                + f"; p99 (h) {h.result.p99_ms:.2f} ms vs (b) {b.result.p99_ms:.2f} ms = "
                + f"{h.result.p99_ms / b.result.p99_ms:.2f} x (target <= 1.50)"
            )
        cpu = [
            f"{k} {row.server_us:.0f}"
            for k in ("(c)", "(d)", "(e)", "(g)", "(h)", "(i)", "(d0)", "(h0)")
            if (row := by.get((k, conns)))
        ]
        lines.append("  Python CPU µs per Check: " + ", ".join(cpu))
        d0, h0 = by.get(("(d0)", conns)), by.get(("(h0)", conns))
        if d0 and h0 and h and g:
            lines.append(
                f"  against --baseline-src: (d)/(d0) = {d.result.rps / d0.result.rps:.2f}, "
                f"(h)/(h0) = {h.result.rps / h0.result.rps:.2f}; "
                f"(d0)/(c) = {d0.result.rps / c.result.rps:.2f}, (h0)/(b) = {h0.result.rps / b.result.rps:.2f}, "
                f"(h0)/(g) = {h0.result.rps / g.result.rps:.2f}"
            )
        limit = 15.0 if conns <= 8 else 40.0
        for key in ("(d)", "(e)", "(h)", "(i)"):
            row = by.get((key, conns))
            if row is None:
                continue
            errors = row.result.non_2xx + row.result.socket_errors
            ok = row.result.p99_ms < limit and errors == 0
            lines.append(
                f"  {key} p99 {row.result.p99_ms:.1f} ms (target < {limit:.0f} ms), non-2xx {errors}: "
                + ("met" if ok else "NOT met")
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured wrk run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk before each measured run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the table shows medians")
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--sqlite", action="store_true", help="embedded default instead of PostgreSQL + Redis")
    parser.add_argument("--threads", type=int, default=THREADS, help="gRPC worker threads (ours and the floor's)")
    parser.add_argument("--cases", nargs="+", metavar="LETTER", help="only these cases (e.g. --cases d f)")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--baseline-src", metavar="DIR", help="also run (d0), (h0) on the tahoe_auth under DIR")
    parser.add_argument(
        "--ports", type=int, nargs=2, metavar=("FIRST", "LAST"), help="take every port from this range only"
    )
    args = parser.parse_args()
    if args.ports:
        harness.use_port_range(*args.ports)
    load = os.getloadavg()
    print(
        f"ext_authz benchmark: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"wrk 1 thread, {args.rounds} x {args.duration} s per row; Envoy --concurrency 1; "
        f"Python: sync grpc.server, {args.threads} threads"
    )
    redis_per_request: list[float] = []
    rows = run(args, redis_per_request)
    print(f"\nmedians of {args.rounds} interleaved rounds (non-2xx summed)\n{HEADER}")
    for row in rows:
        print(format_row(row))
    print()
    for line in summary(rows, args.connections):
        print(line)
    if redis_per_request:
        print(
            f"Limiter round trips (EVALSHA) per Check in (d), median over runs: "
            f"{statistics.median(redis_per_request):.3f} (target: at most one)"
        )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
