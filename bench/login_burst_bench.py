"""Check latency through Envoy while a burst of Logins hits the same auth instance.

    .venv/bin/python bench/login_burst_bench.py [--rounds 3] [--duration 4] [--logins 64] [--wave-interval 0] [--sqlite]

Starts one `tahoe-auth serve` (PostgreSQL + Redis by default; rate limiting off, since
one account logs in over and over) and Envoy in front of it (ext_authz over gRPC with
the committed configs' 0.5 s timeout and 503 on error, a 200 `direct_response` route).
A child process sends steady, paced Check traffic through Envoy with a valid access
token (`--check-clients` connections, one request every `--check-interval-ms` each),
alone, then while waves of `--logins` concurrent Logins hit the gRPC port (each wave
starts when the previous one has answered, and `--wave-interval` s after the previous
one started at the earliest), round after round. It prints:
  - Check p50/p99 without and with the burst per round, the medians of the p99s, their
    ratio and the non-200 answers (503: Envoy's ext_authz timeout or a fail-closed Check);
  - Login refusals (code, median and p99 latency as the client saw them) and the
    logins that succeeded.
Compare figures within one run: the two cores are shared with Envoy, PostgreSQL, Redis
and the clients (the load generator is a separate process, so that the Login client
threads do not hold up its clock).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from tests import harness

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "quiet kettle orbit 1234"
TENANT = "bench"
EMAIL = "owner@bench.test"
ROUTE = {"required_permission": "transcription:read", "upstream": "transcription"}
ENVOY_TIMEOUT_MS = 500  # as envoy/envoy.yaml


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the Check load (a child process) ---------------------------------------------


def check_load(port: int, token: str, duration: float, clients: int, interval_ms: float) -> dict[str, Any]:
    """Paced requests through Envoy on keep-alive connections: (statuses, latencies ms)."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + duration
    headers = {"authorization": f"Bearer {token}"}

    def client() -> None:
        conn = http.client.HTTPConnection(harness.LOCALHOST, port, timeout=10)
        next_at = time.monotonic()
        while next_at < stop:
            started = time.perf_counter()
            try:
                conn.request("GET", "/v1/jobs", headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(harness.LOCALHOST, port, timeout=10)
                status = 0
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                latencies.append(elapsed)
                statuses[status] += 1
            next_at += interval_ms / 1000
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_at = time.monotonic()  # behind schedule: no catch-up burst
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "statuses": {str(k): v for k, v in statuses.items()}}


def start_check_load(args: argparse.Namespace, port: int, token: str) -> subprocess.Popen[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--check-load", str(port), token]
    argv += ["--duration", str(args.duration), "--check-clients", str(args.check_clients)]
    argv += ["--check-interval-ms", str(args.check_interval_ms)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)


def finish_check_load(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"check load failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


# --- the Login burst ----------------------------------------------------------------


def login_waves(target: str, logins: int, until: float, interval: float = 0.0) -> list[tuple[str, float]]:
    """Waves of `logins` concurrent Logins until `until`: (code, latency ms) each; a
    wave starts when the previous one has answered, and `interval` s after it started
    at the earliest. One thread starts each wave (grpc futures), so that client
    threads queueing for the GIL do not inflate the latencies."""
    from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc

    request = auth_pb2.LoginRequest(tenant=TENANT, email=EMAIL, password=PASSWORD)
    results: list[tuple[str, float]] = []
    lock = threading.Lock()

    def timed(started: float, done: threading.Semaphore) -> Callable[[grpc.Future], None]:
        def finished(future: grpc.Future) -> None:
            elapsed = (time.perf_counter() - started) * 1000
            error = future.exception()
            with lock:
                results.append(("OK" if error is None else error.code().name, elapsed))
            done.release()

        return finished

    with grpc.insecure_channel(target) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        while time.monotonic() < until:
            began = time.monotonic()
            done = threading.Semaphore(0)
            for _ in range(logins):
                stub.Login.future(request, timeout=10).add_done_callback(timed(time.perf_counter(), done))
            for _ in range(logins):
                done.acquire()
            time.sleep(max(0.0, min(began + interval, until) - time.monotonic()))
    return results


# --- set-up -------------------------------------------------------------------------


def auth_env(tmp: Path, args: argparse.Namespace) -> dict[str, str]:
    stores = (None, None) if args.sqlite else (args.database_url, args.redis_url)
    env = harness.serve_env(tmp, *stores) | {
        "TAHOE_LOG_LEVEL": "WARNING",
        # One account logs in hundreds of times: Login's own limits would measure the
        # limiter, not the hashing.
        "TAHOE_RATE_LIMIT_ENABLED": "false",
    }
    harness.bootstrap(env, TENANT, EMAIL, PASSWORD)
    return env


def access_token(target: str) -> str:
    from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        login = stub.Login(auth_pb2.LoginRequest(tenant=TENANT, email=EMAIL, password=PASSWORD), timeout=30)
        return login.tokens.access_token


def describe_checks(label: str, result: dict[str, Any]) -> tuple[float, int]:
    latencies: list[float] = result["latencies"]
    statuses = {int(k): v for k, v in result["statuses"].items()}
    non_200 = sum(v for k, v in statuses.items() if k != 200)
    p99 = percentile(latencies, 0.99)
    print(
        f"  Check {label:<13} requests {len(latencies):>6}  p50 {percentile(latencies, 0.5):7.2f} ms"
        f"  p99 {p99:7.2f} ms  max {max(latencies, default=0):7.1f} ms  non-200 {non_200}"
        f" {dict(sorted(statuses.items()))}",
        flush=True,
    )
    return p99, non_200


def run(args: argparse.Namespace) -> int:
    """Rounds of (Checks alone, Checks during the burst), so that drift in the machine's
    load hits both alike; the summary takes medians over the rounds."""
    print(f"load average before the run: {args.load_before}")
    print(
        f"{args.check_clients} Check clients, one request every {args.check_interval_ms:g} ms each;"
        f" {args.rounds} rounds of {args.duration:g} s without and {args.duration:g} s with waves of"
        f" {args.logins} concurrent Logins"
        + (f", one wave every {args.wave_interval:g} s at most" if args.wave_interval else ", back to back"),
        flush=True,
    )
    quiet_p99: list[float] = []
    burst_p99: list[float] = []
    burst_non_200 = 0
    logins: list[tuple[str, float]] = []
    with harness.workdir() as tmp, contextlib.ExitStack() as stack:
        env = auth_env(tmp, args)
        target = env["TAHOE_GRPC_ADDR"]
        auth_port = harness.port_of(target)
        stack.enter_context(harness.serve(env, tmp / "auth.log"))
        token = access_token(target)
        config = harness.envoy_config(
            harness.free_port(), ext_authz_ports=[auth_port], timeout_ms=ENVOY_TIMEOUT_MS, context_extensions=ROUTE
        )
        envoy = stack.enter_context(harness.run_envoy(config, tmp))
        # Warm the caches, the connections and the hashing workers.
        warm = start_check_load(argparse.Namespace(**{**vars(args), "duration": 1.0}), envoy.listener_port, token)
        login_waves(target, min(args.logins, 4), time.monotonic() + 0.5)
        finish_check_load(warm)
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}", flush=True)
            quiet = finish_check_load(start_check_load(args, envoy.listener_port, token))
            loaded = start_check_load(args, envoy.listener_port, token)
            time.sleep(0.5)  # the load is steady before the burst starts
            # Returns once its last wave has answered: the next quiet phase is quiet.
            logins += login_waves(target, args.logins, time.monotonic() + args.duration - 1.0, args.wave_interval)
            burst = finish_check_load(loaded)
            quiet_p99.append(describe_checks("without burst", quiet)[0])
            p99, non_200 = describe_checks("with burst", burst)
            burst_p99.append(p99)
            burst_non_200 += non_200

    without, with_burst = statistics.median(quiet_p99), statistics.median(burst_p99)
    print(f"Check p99 without burst (median of rounds): {without:.2f} ms")
    print(f"Check p99 with burst (median of rounds):    {with_burst:.2f} ms")
    print(f"Check p99 ratio (with / without burst):     {with_burst / without:.2f}")
    print(f"Check non-200 (503s) during the bursts:     {burst_non_200}")
    codes = Counter(code for code, _ in logins)
    refused = [ms for code, ms in logins if code != "OK"]
    succeeded = [ms for code, ms in logins if code == "OK"]
    print(f"Logins: {len(logins)} sent, {len(succeeded)} succeeded, {len(refused)} refused {dict(codes)}")
    for code in sorted(c for c in codes if c != "OK"):
        times = [ms for c, ms in logins if c == code]
        print(
            f"  refused {code:<18} median {statistics.median(times):7.1f} ms"
            f"  p99 {percentile(times, 0.99):7.1f} ms  max {max(times):7.1f} ms"
        )
    if refused:
        print(
            f"  all refusals        median {statistics.median(refused):7.1f} ms"
            f"  p99 {percentile(refused, 0.99):7.1f} ms"
        )
    if succeeded:
        print(
            f"  succeeded           median {statistics.median(succeeded):7.1f} ms"
            f"  p99 {percentile(succeeded, 0.99):7.1f} ms"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--logins", type=int, default=64, help="concurrent Logins per wave")
    parser.add_argument(
        "--wave-interval",
        type=float,
        default=0.0,
        help="seconds from one wave's start to the next at least (0: back to back, as clients ignoring RetryInfo)",
    )
    parser.add_argument("--check-clients", type=int, default=4)
    parser.add_argument("--check-interval-ms", type=float, default=2.0)
    parser.add_argument("--sqlite", action="store_true", help="the embedded default instead of PostgreSQL + Redis")
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/tahoe_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--check-load", nargs=2, metavar=("PORT", "TOKEN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.check_load:
        port, token = args.check_load
        result = check_load(int(port), token, args.duration, args.check_clients, args.check_interval_ms)
        print(json.dumps(result))
        return 0
    args.load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
