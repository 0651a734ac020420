"""Sync ``grpc.server`` vs ``grpc.aio`` for the ext_authz Check hot path.

Run: ``.venv/bin/python bench/server_model.py [--duration 10] [--rounds 1] [--quick]``

Each variant starts a do-nothing Check server in its own process(es), puts Envoy
(ext_authz -> direct_response) in front and drives it with wrk. The "busy"
variants add background load on the same server while wrk runs: two calls that
stay open for the whole variant (like long-lived streams) and ~40 argon2
password hashes per second (logins). Sync hashes on the worker thread; aio
hashes in ``run_in_executor``. argon2 releases the GIL in both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import grpc
from argon2.low_level import Type, hash_secret
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc
from google.rpc import code_pb2, status_pb2

from tests import harness

LOAD_SERVICE = "bench.Load"
LOGIN_METHOD = f"/{LOAD_SERVICE}/Login"
HOLD_METHOD = f"/{LOAD_SERVICE}/Hold"
HELD_CALLS = 2
LOGINS_PER_S = 40.0
WRK_HEADERS = {"authorization": "Bearer bench-token"}


# --- server side -------------------------------------------------------------------


def ok_response() -> authz.CheckResponse:
    """An OK CheckResponse that sets one header on the upstream request."""
    header = HeaderValueOption(
        header=HeaderValue(key="x-tahoe-subject", value="bench-user"),
        append_action=HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )
    return authz.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=authz.OkHttpResponse(headers=[header]),
    )


def password_hash(password: bytes) -> bytes:
    """argon2id with the OWASP minimum parameters (~20 ms, releases the GIL)."""
    return hash_secret(
        password,
        b"bench-salt-16byt",
        time_cost=2,
        memory_cost=19456,
        parallelism=1,
        hash_len=32,
        type=Type.ID,
    )


class SyncAuthorization(authz_grpc.AuthorizationServicer):  # type: ignore[misc]
    def Check(self, request: authz.CheckRequest, context: grpc.ServicerContext) -> authz.CheckResponse:
        return ok_response()


class AioAuthorization(authz_grpc.AuthorizationServicer):  # type: ignore[misc]
    async def Check(self, request: authz.CheckRequest, context: grpc.aio.ServicerContext) -> authz.CheckResponse:
        return ok_response()


def sync_login(request: bytes, context: grpc.ServicerContext) -> bytes:
    return password_hash(request)


def sync_hold(request: bytes, context: grpc.ServicerContext) -> bytes:
    time.sleep(float(request))
    return b""


async def aio_login(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return await asyncio.get_running_loop().run_in_executor(None, password_hash, request)


async def aio_hold(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(float(request))
    return b""


def load_handler(login: Callable[..., Any], hold: Callable[..., Any]) -> grpc.GenericRpcHandler:
    """Raw-bytes Login/Hold methods used to keep the server busy."""
    return grpc.method_handlers_generic_handler(
        LOAD_SERVICE,
        {
            "Login": grpc.unary_unary_rpc_method_handler(login),
            "Hold": grpc.unary_unary_rpc_method_handler(hold),
        },
    )


def serve_sync(port: int, threads: int) -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=threads), options=[("grpc.so_reuseport", 0)])
    authz_grpc.add_AuthorizationServicer_to_server(SyncAuthorization(), server)
    server.add_generic_rpc_handlers((load_handler(sync_login, sync_hold),))
    server.add_insecure_port(f"{harness.LOCALHOST}:{port}")
    server.start()
    server.wait_for_termination()


async def serve_aio(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    authz_grpc.add_AuthorizationServicer_to_server(AioAuthorization(), server)
    server.add_generic_rpc_handlers((load_handler(aio_login, aio_hold),))
    server.add_insecure_port(f"{harness.LOCALHOST}:{port}")
    await server.start()
    await server.wait_for_termination()


# --- background load (client side) ----------------------------------------------------


@dataclass(frozen=True)
class LoginStats:
    per_s: float
    p99_ms: float


class BackgroundLoad:
    """Holds ``HELD_CALLS`` calls open and sends open-loop logins at a fixed rate."""

    def __init__(self, port: int, logins_per_s: float) -> None:
        self._channel = grpc.insecure_channel(f"{harness.LOCALHOST}:{port}")
        self._login = self._channel.unary_unary(LOGIN_METHOD)
        hold = self._channel.unary_unary(HOLD_METHOD)
        self._held = [hold.future(b"3600") for _ in range(HELD_CALLS)]
        self._interval_s = 1 / logins_per_s
        self._lock = threading.Lock()
        self._latencies_s: list[float] = []
        self._since = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send_logins, daemon=True)
        self._thread.start()

    def _send_logins(self) -> None:
        next_at = time.monotonic()
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            started = time.monotonic()
            future = self._login.future(b"correct horse battery staple")
            future.add_done_callback(lambda f, t=started: self._record(f, t))
            next_at += self._interval_s

    def _record(self, future: grpc.Future, started: float) -> None:
        if future.code() == grpc.StatusCode.OK:
            with self._lock:
                self._latencies_s.append(time.monotonic() - started)

    def reset(self) -> None:
        with self._lock:
            self._latencies_s.clear()
            self._since = time.monotonic()

    def stats(self) -> LoginStats:
        with self._lock:
            done = sorted(self._latencies_s)
            elapsed = time.monotonic() - self._since
        p99 = done[int(0.99 * (len(done) - 1))] * 1000 if done else float("nan")
        return LoginStats(per_s=len(done) / elapsed, p99_ms=p99)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for call in self._held:
            call.cancel()
        self._channel.close()


@contextlib.contextmanager
def background_load(port: int, logins_per_s: float = LOGINS_PER_S) -> Iterator[BackgroundLoad]:
    load = BackgroundLoad(port, logins_per_s)
    try:
        yield load
    finally:
        load.close()


# --- benchmark driver ------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    model: str | None = None  # "sync" | "aio"; None = Envoy alone, no ext_authz
    threads: int = 0
    procs: int = 1
    busy: bool = False


@dataclass(frozen=True)
class Row:
    """One wrk measurement; CPU figures are percent of one core over the run."""

    variant: str
    conns: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx responses + socket errors
    server_cpu: float
    envoy_cpu: float
    other_cpu: float  # machine-wide CPU not used by server, Envoy or wrk
    logins_per_s: float | None = None
    login_p99_ms: float | None = None


ALL_VARIANTS = (
    Variant("envoy only, no ext_authz"),
    *(Variant(f"sync {n} thr", "sync", n) for n in (1, 2, 4, 8, 16)),
    Variant("aio", "aio"),
    Variant("sync 4 thr x2 procs", "sync", 4, procs=2),
    Variant("aio x2 procs", "aio", procs=2),
    Variant("sync 4 thr + busy", "sync", 4, busy=True),
    Variant("sync 8 thr + busy", "sync", 8, busy=True),
    Variant("aio + busy", "aio", busy=True),
)
QUICK_VARIANTS = ("sync 8 thr", "aio", "sync 8 thr + busy", "aio + busy")
CONNECTIONS = (8, 32)


def server_argv(variant: Variant, port: int) -> list[str]:
    argv = [sys.executable, __file__, "--serve", str(variant.model), "--port", str(port)]
    return [*argv, "--threads", str(variant.threads)]


def run_variant(variant: Variant, duration_s: int, warmup_s: int, tmp: Path) -> Iterator[Row]:
    with contextlib.ExitStack() as stack:
        ports = [harness.free_port() for _ in range(variant.procs)] if variant.model else []
        pids = [
            stack.enter_context(harness.managed_process(server_argv(variant, p), tmp / f"srv-{p}.log", p)).pid
            for p in ports
        ]
        config = harness.envoy_config(harness.free_port(), ext_authz_ports=ports or None)
        envoy = stack.enter_context(harness.run_envoy(config, tmp))
        load = stack.enter_context(background_load(ports[0])) if variant.busy else None
        for conns in CONNECTIONS:
            harness.run_wrk(envoy.url(), conns, warmup_s, WRK_HEADERS)
            if load:
                load.reset()
            yield measure(variant.name, conns, envoy, pids, duration_s, load)


def measure(
    name: str, conns: int, envoy: harness.Envoy, pids: list[int], duration_s: int, load: BackgroundLoad | None
) -> Row:
    before = harness.cpu_seconds(pids), harness.cpu_seconds([envoy.pid]), harness.machine_cpu_seconds()
    result = harness.run_wrk(envoy.url(), conns, duration_s, WRK_HEADERS)
    after = harness.cpu_seconds(pids), harness.cpu_seconds([envoy.pid]), harness.machine_cpu_seconds()
    server, envoy_cpu, machine = (100 * (a - b) / result.duration_s for a, b in zip(after, before, strict=True))
    logins = load.stats() if load else None
    return Row(
        variant=name,
        conns=conns,
        rps=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.non_2xx + result.socket_errors,
        server_cpu=server,
        envoy_cpu=envoy_cpu,
        other_cpu=machine - server - envoy_cpu - 100 * result.cpu_s / result.duration_s,
        logins_per_s=logins.per_s if logins else None,
        login_p99_ms=logins.p99_ms if logins else None,
    )


def median_row(rows: Sequence[Row]) -> Row:
    """Median of each metric over repeated rounds (errors are summed)."""
    first = rows[0]

    def med(field: str) -> Any:
        values = [getattr(r, field) for r in rows]
        return None if values[0] is None else statistics.median(values)

    numeric = [f.name for f in fields(Row) if f.name not in ("variant", "conns", "errors")]
    return Row(
        variant=first.variant,
        conns=first.conns,
        errors=sum(r.errors for r in rows),
        **{name: med(name) for name in numeric},
    )


HEADER = (
    f"{'variant':<26}{'conns':>6}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'non-2xx':>8}"
    f"{'srv CPU%':>9}{'envoy%':>7}{'other%':>7}  logins/s (p99 ms)"
)


def format_row(row: Row) -> str:
    logins = f"{row.logins_per_s:.1f} ({row.login_p99_ms:.0f})" if row.logins_per_s is not None else ""
    return (
        f"{row.variant:<26}{row.conns:>6}{row.rps:>8.0f}{row.p50_ms:>8.2f}{row.p99_ms:>8.2f}{row.errors:>8}"
        f"{row.server_cpu:>9.0f}{row.envoy_cpu:>7.0f}{row.other_cpu:>7.0f}  {logins}"
    )


def run_benchmark(variants: Sequence[Variant], duration_s: int, warmup_s: int, rounds: int) -> None:
    print(f"wrk: {duration_s}s per row after {warmup_s}s warmup, {rounds} round(s); Envoy --concurrency 1")
    results: dict[tuple[str, int], list[Row]] = {}
    with harness.workdir() as tmp:
        for round_no in range(1, rounds + 1):
            print(f"\nround {round_no}\n{HEADER}", flush=True)
            for variant in variants:
                for row in run_variant(variant, duration_s, warmup_s, tmp):
                    results.setdefault((row.variant, row.conns), []).append(row)
                    print(format_row(row), flush=True)
    if rounds > 1:
        print(f"\nmedian of {rounds} rounds (non-2xx summed)\n{HEADER}")
        for rows in results.values():
            print(format_row(median_row(rows)))


def benchmark_plan(quick: bool, duration_s: int) -> tuple[list[Variant], int, int]:
    """Variants, seconds per wrk run and warmup seconds."""
    if quick:
        return [v for v in ALL_VARIANTS if v.name in QUICK_VARIANTS], 2, 1
    return list(ALL_VARIANTS), duration_s, 2


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=1, help="repeat all variants; print medians")
    parser.add_argument("--quick", action="store_true", help="fewer variants, 2 s runs")
    parser.add_argument("--serve", choices=("sync", "aio"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve == "sync":
        serve_sync(args.port, args.threads)
    elif args.serve == "aio":
        asyncio.run(serve_aio(args.port))
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run cleanups
        run_benchmark(*benchmark_plan(args.quick, args.duration), rounds=args.rounds)


if __name__ == "__main__":
    main()
