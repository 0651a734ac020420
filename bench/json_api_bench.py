"""What the JSON API's transcoding costs per request: one unary RPC (GetTenant, with
the owner's access token) over gRPC direct, gRPC through Envoy, and JSON through
Envoy's gRPC-JSON transcoder, against one `tahoe-auth serve` process.

    .venv/bin/python bench/json_api_bench.py [--duration 10] [--connections 4]

Rows (each `--duration` seconds, `--connections` callers):
  grpc direct           Python gRPC clients -> the server's gRPC port
  grpc via envoy        the same clients -> Envoy (h2c) -> the `tahoe_api` cluster, on a
                        route added here with neither ext_authz nor the transcoder
  json via envoy, py    Python http.client clients (keep-alive) -> the committed
                        /auth/v1/ route (transcoder on) -> the same cluster
  json via envoy, wrk   wrk (HTTP/1.1 keep-alive) -> the same route
Python clients run in `--procs` child processes. Envoy runs the committed envoy.yaml
(ports rewritten), `--concurrency 1`.

The transcoder's cost is read from Envoy's CPU per request (its own process time over
the requests it answered), "json" minus "grpc via envoy": the clients and the server
share the 2 cores, so req/s moves with whatever else runs, while Envoy's CPU per
request does much less. That difference also holds HTTP/1.1 vs HTTP/2 downstream
codec work (JSON clients speak HTTP/1.1): it is the JSON API's cost in Envoy as a
whole, of which the transcoder is most. The p50 difference of the two Python-client
rows is the same cost as latency.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc, tenant_pb2, tenant_pb2_grpc
from tests import harness
from tests.e2e import stack as e2e

PASSWORD = "quiet kettle orbit 1234"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_bench"
REDIS_URL = "redis://127.0.0.1:6379/14"
EXT_AUTHZ_OFF = {
    "envoy.filters.http.ext_authz": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "disabled": True,
    }
}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


# -- client processes ----------------------------------------------------------------


def grpc_loop(target: str, token: str, tenant_id: str, stop: float, out: list[float], errors: list[int]) -> None:
    stub = tenant_pb2_grpc.TenantServiceStub(grpc.insecure_channel(target))
    request = tenant_pb2.GetTenantRequest(tenant_id=tenant_id)
    metadata = (("authorization", f"Bearer {token}"),)
    while time.monotonic() < stop:
        started = time.perf_counter()
        try:
            stub.GetTenant(request, metadata=metadata, timeout=5)
            out.append(time.perf_counter() - started)
        except grpc.RpcError:
            errors[0] += 1


def json_loop(target: str, token: str, tenant_id: str, stop: float, out: list[float], errors: list[int]) -> None:
    host, port = target.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = {"authorization": f"Bearer {token}"}
    path = f"/auth/v1/tenants/{tenant_id}"
    while time.monotonic() < stop:
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status == 200:
            out.append(time.perf_counter() - started)
        else:
            errors[0] += 1
    conn.close()


def worker(kind: str, target: str, token: str, tenant_id: str, threads: int, duration: float) -> None:
    """Runs in a child process; prints its latencies as JSON."""
    loop = grpc_loop if kind == "grpc" else json_loop
    latencies: list[float] = []
    errors = [0]
    stop = time.monotonic() + duration
    workers = [
        threading.Thread(target=loop, args=(target, token, tenant_id, stop, latencies, errors)) for _ in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps({"latencies": latencies, "errors": errors[0]}))


# -- rows ------------------------------------------------------------------------------


class Meter:
    """CPU seconds of Envoy and the server over a row, less what each burns idle in
    as long (health checks, timers): that is no request's cost."""

    def __init__(self, server_pid: int, envoy_pid: int) -> None:
        self.pids = {"server": server_pid, "envoy": envoy_pid}
        self.idle_per_s = {k: 0.0 for k in self.pids}

    def measure_idle(self, seconds: float) -> None:
        with self:
            time.sleep(seconds)
        self.idle_per_s = {k: v / self.elapsed for k, v in self.cpu.items()}

    def __enter__(self) -> Meter:
        self.before = {k: harness.cpu_seconds([p]) for k, p in self.pids.items()}
        self.started = time.monotonic()
        self.cpu: dict[str, float] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.started
        self.cpu = {
            k: harness.cpu_seconds([p]) - self.before[k] - self.idle_per_s[k] * self.elapsed
            for k, p in self.pids.items()
        }


def python_row(
    kind: str, target: str, token: str, tenant_id: str, args: argparse.Namespace, meter: Meter
) -> dict[str, Any]:
    threads = max(1, args.connections // args.procs)
    argv = [sys.executable, __file__, "--worker", kind, target, token, tenant_id, str(threads), str(args.duration)]
    with meter:
        children = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(args.procs)]
        results = [json.loads(child.communicate()[0]) for child in children]
    latencies = [x for r in results for x in r["latencies"]]
    return row(len(latencies), args.duration, percentile(latencies, 0.5), percentile(latencies, 0.99), meter) | {
        "errors": sum(r["errors"] for r in results)
    }


def wrk_row(port: int, token: str, tenant_id: str, args: argparse.Namespace, meter: Meter) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/auth/v1/tenants/{tenant_id}"
    with meter:
        result = harness.run_wrk(url, args.connections, int(args.duration), {"authorization": f"Bearer {token}"})
    ok = result.requests - result.non_2xx
    return row(ok, result.duration_s, result.p50_ms, result.p99_ms, meter) | {
        "errors": result.non_2xx + result.socket_errors
    }


def row(requests: int, seconds: float, p50_ms: float, p99_ms: float, meter: Meter) -> dict[str, Any]:
    per_request = {k: (v / requests * 1e6 if requests else 0.0) for k, v in meter.cpu.items()}
    return {
        "per_s": requests / seconds if seconds else 0.0,
        "p50_ms": p50_ms,
        "p99_ms": p99_ms,
        "envoy_us": per_request["envoy"],
        "server_us": per_request["server"],
    }


def grpc_route(config: dict[str, Any]) -> dict[str, Any]:
    """The committed config plus gRPC to the JSON API's cluster, untranscoded."""
    (vhost,) = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"
    ]["virtual_hosts"]
    route = {
        "match": {"prefix": "/tahoe_auth.v1."},
        "route": {"cluster": e2e.API_CLUSTER, "timeout": "15s"},
        "typed_per_filter_config": EXT_AUTHZ_OFF,
    }
    vhost["routes"].insert(0, route)
    return config


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, target, token, tenant_id, threads, duration = sys.argv[2:8]
        worker(kind, target, token, tenant_id, int(threads), float(duration))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--procs", type=int, default=2, help="Python client processes")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the rows, interleaved")
    parser.add_argument("--database-url", default=PG_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    args = parser.parse_args()
    with harness.workdir() as tmp:
        env = harness.serve_env(tmp, args.database_url, args.redis_url) | {
            "TAHOE_DRAIN_SECONDS": "0",
            "TAHOE_LOG_LEVEL": "WARNING",
            "TAHOE_RATE_LIMIT_ENABLED": "false",
        }
        harness.bootstrap(env, "bench", "owner@bench.test", PASSWORD)
        grpc_port, http_port, authz_port = harness.listen_ports(env)
        with harness.serve(env, tmp / "server.log") as server:
            login = auth_pb2_grpc.AuthServiceStub(grpc.insecure_channel(env["TAHOE_GRPC_ADDR"])).Login(
                auth_pb2.LoginRequest(tenant="bench", email="owner@bench.test", password=PASSWORD)
            )
            token, tenant_id = login.tokens.access_token, login.tenant_id
            config = e2e.envoy_config(
                [grpc_port], harness.free_port(), authz_http_ports=[authz_port], side_ports=[http_port]
            )
            with harness.run_envoy(grpc_route(config), tmp) as envoy:
                meter = Meter(server.pid, envoy.pid)
                meter.measure_idle(3.0)
                via_envoy = f"127.0.0.1:{envoy.listener_port}"
                python_row(
                    "json", via_envoy, token, tenant_id, argparse.Namespace(**{**vars(args), "duration": 2}), meter
                )  # warm-up
                rows = []
                for _ in range(args.rounds):
                    rows += [
                        ("grpc direct", python_row("grpc", env["TAHOE_GRPC_ADDR"], token, tenant_id, args, meter)),
                        ("grpc via envoy", python_row("grpc", via_envoy, token, tenant_id, args, meter)),
                        ("json via envoy, py", python_row("json", via_envoy, token, tenant_id, args, meter)),
                        ("json via envoy, wrk", wrk_row(envoy.listener_port, token, tenant_id, args, meter)),
                    ]
    load = os.getloadavg()[0]
    print(
        f"\nGetTenant, {args.connections} callers, {args.duration:.0f} s per row "
        f"(PostgreSQL + Redis, {os.cpu_count()} cores, load {load:.1f})"
    )
    print(f"{'row':<22}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'envoy µs/req':>14}{'server µs/req':>15}{'errors':>8}")
    for name, r in rows:
        envoy_us = "-" if name == "grpc direct" else f"{r['envoy_us']:.0f}"
        print(
            f"{name:<22}{r['per_s']:>8.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{envoy_us:>14}{r['server_us']:>15.0f}{r['errors']:>8}"
        )

    def median(name: str, key: str) -> float:
        values = sorted(r[key] for n, r in rows if n == name)
        return values[len(values) // 2]

    print(f"medians over {args.rounds} round(s):")
    for name in ("json via envoy, py", "json via envoy, wrk"):
        cost = median(name, "envoy_us") - median("grpc via envoy", "envoy_us")
        print(f"  JSON API cost in Envoy ({name} - grpc via envoy): {cost:+.0f} µs CPU/req")
    latency = (median("json via envoy, py", "p50_ms") - median("grpc via envoy", "p50_ms")) * 1000
    print(f"  p50 latency, json via envoy (py) - grpc via envoy: {latency:+.0f} µs")
    envoy_hop = (median("grpc via envoy", "p50_ms") - median("grpc direct", "p50_ms")) * 1000
    print(f"  p50 latency, grpc via envoy - grpc direct (Envoy's hop): {envoy_hop:+.0f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
