"""HTTP ext_authz Check throughput through Envoy with 1 vs 2 Check processes
(TAHOE_AUTHZ_WORKERS), Envoy at --concurrency 1 and 2, in one run.

    .venv/bin/python bench/check_workers_bench.py [--rounds 3] [--duration 5] [--connections 32]

Two `tahoe-auth serve` on the same PostgreSQL + Redis (TAHOE_AUTHZ_WORKERS=1 and =2)
and four Envoys (each server x concurrency 1, 2), each an `http_service` ext_authz
filter in the committed configs' shape (route requirements added by a header_mutation
filter, the client address by `headers_to_add`) in front of a 200 `direct_response`.
wrk (one thread) sends a user access token on a route requiring `transcription:read`.
Rows are interleaved round by round and reported as medians; CPU% is per process group
(the serve process and its workers; Envoy), `machine%` the whole machine's busy time
(200% = both cores of this machine), and Checks per tahoe CPU-second what a Check costs.
Compare ratios within one run: Envoy, wrk and every Python process share the cores, so
a second Check process only helps while a core has time left over.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ext_authz_bench import auth_env, credentials  # noqa: E402
from tests import harness  # noqa: E402

ROUTE_HEADERS = {"x-tahoe-route-permission": "transcription:read", "x-tahoe-route-upstream": "transcription"}
CLUSTER = "tahoe_authz_http"


def http_ext_authz_config(listener_port: int, authz_port: int) -> dict[str, Any]:
    config = harness.envoy_config(listener_port)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    mutations = [
        {"append": {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}
        for k, v in ROUTE_HEADERS.items()
    ]
    route_requirements = harness._typed(
        "tahoe.route_requirements",
        "extensions.filters.http.header_mutation.v3.HeaderMutation",
        mutations={"request_mutations": mutations},
    )
    ext_authz = harness._typed(
        "envoy.filters.http.ext_authz",
        "extensions.filters.http.ext_authz.v3.ExtAuthz",
        http_service={
            "server_uri": {"uri": "http://tahoe-authz", "cluster": CLUSTER, "timeout": "0.5s"},
            "authorization_request": {
                "headers_to_add": [
                    {"key": "x-tahoe-client-address", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}
                ]
            },
            "authorization_response": {
                "allowed_upstream_headers": {"patterns": [{"prefix": "x-tahoe-"}]},
                "allowed_client_headers": {"patterns": [{"exact": "www-authenticate"}, {"prefix": "ratelimit-"}]},
                "allowed_client_headers_on_success": {"patterns": [{"prefix": "ratelimit-"}]},
            },
        },
        failure_mode_allow=False,
        status_on_error={"code": "ServiceUnavailable"},
        allowed_headers={"patterns": [{"exact": "authorization"}, {"prefix": "x-tahoe-"}]},
    )
    hcm["http_filters"] = [route_requirements, ext_authz, *hcm["http_filters"]]
    config["static_resources"]["clusters"].append(harness._cluster(CLUSTER, [authz_port]))
    return config


@dataclass(frozen=True)
class Case:
    label: str
    workers: int
    concurrency: int
    envoy: harness.Envoy
    server_pids: Sequence[int]


@dataclass(frozen=True)
class Row:
    label: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu: float
    envoy_cpu: float
    wrk_cpu: float
    machine_cpu: float


def group_pids(pid: int) -> list[int]:
    """`pid` and its descendants (the Check workers; the argon2 pool idles)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def measure(case: Case, conns: int, duration: int, warmup: int, headers: dict[str, str]) -> Row:
    harness.run_wrk(case.envoy.url(), conns, warmup, headers)
    pids = [pid for server in case.server_pids for pid in group_pids(server)]
    before = harness.cpu_seconds(pids), harness.cpu_seconds([case.envoy.pid]), harness.machine_cpu_seconds()
    result = harness.run_wrk(case.envoy.url(), conns, duration, headers)
    after = harness.cpu_seconds(pids), harness.cpu_seconds([case.envoy.pid]), harness.machine_cpu_seconds()
    server, envoy, machine = (100 * (a - b) / result.duration_s for a, b in zip(after, before, strict=True))
    return Row(
        case.label,
        result.rps,
        result.p50_ms,
        result.p99_ms,
        result.non_2xx + result.socket_errors,
        server,
        envoy,
        100 * result.cpu_s / result.duration_s,
        machine,
    )


HEADER = (
    f"{'case':<34}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>8}"
    f"{'tahoe%':>8}{'envoy%':>8}{'wrk%':>7}{'machine%':>10}{'Checks/tahoe CPU-s':>20}"
)


def format_row(row: Row) -> str:
    return (
        f"{row.label:<34}{row.rps:>8.0f}{row.p50_ms:>8.2f}{row.p99_ms:>8.2f}{row.errors:>8}"
        f"{row.server_cpu:>8.0f}{row.envoy_cpu:>8.0f}{row.wrk_cpu:>7.0f}{row.machine_cpu:>10.0f}"
        f"{row.rps / max(row.server_cpu / 100, 1e-9):>20.0f}"
    )


def median(rows: Sequence[Row]) -> Row:
    def med(name: str) -> float:
        return statistics.median(getattr(r, name) for r in rows)

    return Row(
        rows[0].label,
        med("rps"),
        med("p50_ms"),
        med("p99_ms"),
        sum(r.errors for r in rows),
        med("server_cpu"),
        med("envoy_cpu"),
        med("wrk_cpu"),
        med("machine_cpu"),
    )


@contextlib.contextmanager
def serve(env: dict[str, str], tmp: Path, workers: int, name: str) -> Iterator[tuple[int, dict[str, str]]]:
    env = {
        **env,
        **harness.listen_env(),
        "TAHOE_AUTHZ_WORKERS": str(workers),
        "TAHOE_LOG_LEVEL": "INFO",  # the workers' "serving" lines
    }
    log = tmp / f"{name}.log"
    with harness.serve(env, log) as proc:
        deadline = time.monotonic() + 90
        while log.read_text(errors="replace").count(") serving HTTP ext_authz") < workers - 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: Check workers not serving")
            time.sleep(0.2)
        yield proc.pid, env


def run(args: argparse.Namespace) -> list[Row]:
    with harness.workdir() as tmp, contextlib.ExitStack() as stack:
        base = auth_env(tmp, argparse.Namespace(sqlite=False, threads=8, **vars(args)))
        servers = {w: stack.enter_context(serve(base, tmp, w, f"serve-{w}")) for w in (1, 2)}
        one_env = servers[1][1]
        creds = credentials(one_env["TAHOE_GRPC_ADDR"], one_env["TAHOE_HTTP_ADDR"])
        headers = {"authorization": f"Bearer {creds.access_token}"}
        cases = []
        for concurrency in (1, 2):
            for workers, (pid, env) in servers.items():
                authz_port = harness.port_of(env["TAHOE_AUTHZ_HTTP_ADDR"])
                config = http_ext_authz_config(harness.free_port(), authz_port)
                envoy = stack.enter_context(harness.run_envoy(config, tmp, concurrency=concurrency))
                label = f"envoy x{concurrency}, {workers} Check process{'es' if workers > 1 else ''}"
                cases.append(Case(label, workers, concurrency, envoy, (pid,)))
        measured: dict[str, list[Row]] = {}
        print(HEADER, flush=True)
        for conns in args.connections:
            for round_no in range(1, args.rounds + 1):
                for case in cases:
                    row = measure(case, conns, args.duration, args.warmup, headers)
                    row = Row(f"{case.label} c{conns}", *list(vars(row).values())[1:])
                    measured.setdefault(row.label, []).append(row)
                    print(f"{format_row(row)}   round {round_no}", flush=True)
        return [median(rows) for rows in measured.values()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--connections", type=int, nargs="+", default=[32])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TAHOE_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_bench"),
    )
    parser.add_argument("--redis-url", default=os.environ.get("TAHOE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--port-base", type=int, help="open ports from this one on (default: any free port)")
    args = parser.parse_args()
    if args.port_base:
        harness.use_port_range(args.port_base, args.port_base + 999)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    rows = run(args)
    print("\nmedians:")
    print(HEADER)
    for row in rows:
        print(format_row(row))
    by = {row.label: row for row in rows}
    print()
    for conns in args.connections:
        for concurrency in (1, 2):
            one = by.get(f"envoy x{concurrency}, 1 Check process c{conns}")
            two = by.get(f"envoy x{concurrency}, 2 Check processes c{conns}")
            if one and two:
                print(f"envoy x{concurrency}, {conns} connections: 2 processes / 1 = {two.rps / one.rps:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
