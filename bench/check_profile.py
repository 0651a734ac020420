"""What each step of a warm Check costs, in CPU microseconds, without Envoy or gRPC.

    .venv/bin/python bench/check_profile.py [--n 20000] [--rounds 5] [--profile] [--sqlite]

Builds the app in-process as ``tahoe-auth serve`` does (PostgreSQL + Redis unless
``--sqlite``), logs in, and then calls the handlers directly, a warm credential each
time, with steps switched off one at a time:

    grpc full        AuthorizationServicer.Check on a CheckRequest like Envoy's
    http full        HttpCheck on the headers Envoy's http_service sends
    - admission      no post-decision hook (no quota, rate limits, metering)
    - rate limits    the limiter disabled (quota and metering still on)
    - metering       UsageRecorder.record_request a no-op
    - quota          Quotas.check always allows from nothing
    - metrics        the per-Check counter and histogram a no-op
    denied ...       a 404 (another tenant's resource), with and without the denial audit

and the pieces on their own: the admission hook (and within it the limiter, quota and
metering), the per-Check metrics, the HTTP answer's bytes, the HTTP server's parse and
context (httptools, a stub Check), and the HTTP server's whole path for one request
Envoy sent (parse, context, Check, response bytes; no socket, so no syscalls).

Figures are the lowest over rounds (the least disturbed by other work on the machine)
of this thread's CPU time per call: what one Check costs the GIL. ``--profile`` adds a cProfile of each full path.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as ext_authz_pb2

from bench import ext_authz_bench as bench
from tests import harness


def check_request(token: str, extensions: dict[str, str]) -> ext_authz_pb2.CheckRequest:
    request = ext_authz_pb2.CheckRequest()
    attributes = request.attributes
    attributes.source.address.socket_address.address = "127.0.0.1"
    http = attributes.request.http
    http.method, http.path, http.host = "GET", "/", "127.0.0.1"
    http.headers.update({"authorization": f"Bearer {token}", "x-request-id": "5d2c7c1e-bench", ":path": "/"})
    attributes.context_extensions.update(extensions)
    return request


def http_headers(token: str, permission: str) -> dict[str, str]:
    return {
        "host": "tahoe-authz",
        "authorization": f"Bearer {token}",
        "x-request-id": "5d2c7c1e-bench",
        "x-tahoe-route-permission": permission,
        "x-tahoe-route-upstream": "transcription",
        "x-tahoe-client-address": "127.0.0.1",
        "content-length": "0",
    }


def per_call_us(call: Callable[[], object], n: int) -> float:
    call()
    started = time.thread_time()  # this thread only: the app's background threads excluded
    for _ in range(n):
        call()
    return 1e6 * (time.thread_time() - started) / n


def envoy_request(headers: dict[str, str]) -> bytes:
    """The request Envoy's http_service sends for one client request (header names lower-case)."""
    lines = ["GET / HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "x-forwarded-proto: http"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Transport:
    """Enough of an asyncio transport for one answered request; the write is dropped."""

    def get_extra_info(self, name: str) -> None:
        return None

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        pass


class _StubCheck:
    """A Check that answers every request from memory with fixed bytes: the server's parse only."""

    def answers_from_memory(self, context: object) -> bool:
        return True

    def __call__(self, context: object, traceparent: str = "") -> bytes:
        return b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class _OnTheLoop:
    """The real Check, always answered as the loop answers a warm one: an expired
    decision (every DECISION_TTL) is decided again inline, not handed to the pool."""

    def __init__(self, check: Any) -> None:
        self._check = check

    def answers_from_memory(self, context: object) -> bool:
        self._check.answers_from_memory(context)
        return True

    def __call__(self, context: object, traceparent: str = "") -> bytes:
        return self._check(context, traceparent)  # type: ignore[no-any-return]


def connection_for(ext_authz_http: Any, check: Any) -> Any:
    connection = ext_authz_http._Connection(check, None, set())
    connection.connection_made(_Transport())
    return connection


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="calls per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--threads", type=int, default=bench.THREADS)
    parser.add_argument("--database-url", default=bench.DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=bench.DEFAULT_REDIS_URL)
    parser.add_argument("--ports", type=int, nargs=2, metavar=("FIRST", "LAST"))
    args = parser.parse_args()
    if args.ports:
        harness.use_port_range(*args.ports)

    from tahoe_auth.api import ext_authz, ext_authz_http
    from tahoe_auth.app import build_app
    from tahoe_auth.config import Settings
    from tahoe_auth.server import create_server
    from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc

    with harness.workdir() as tmp:
        env = bench.auth_env(tmp, args)
        app = build_app(Settings.from_env(env))
        app.keys.ensure_active_key()
        app.start_background()
        server, port, _ = create_server(app, env["TAHOE_GRPC_ADDR"])
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = auth_pb2_grpc.AuthServiceStub(channel)
                login = auth_pb2.LoginRequest(tenant=bench.TENANT, email=bench.EMAIL, password=bench.PASSWORD)
                token = stub.Login(login).tokens.access_token
            deadline = time.monotonic() + 10
            while not app.changes.caches_trusted() and time.monotonic() < deadline:
                time.sleep(0.05)
            report(app, token, args, ext_authz, ext_authz_http)
        finally:
            server.stop(0)
            app.close()
    return 0


def pieces_of_a_check(
    app: Any, headers: dict[str, str], http_check: Any, ext_authz_http: Any
) -> dict[str, Callable[[], object]]:
    """The pieces of an allowed Check on their own (what the "- x" rows take away)."""
    from tahoe_auth.api import ext_authz_common
    from tahoe_auth.domain.principal import USER
    from tahoe_auth.domain.ratelimit import RateLimitSubject
    from tahoe_auth.domain.usage import API_REQUESTS

    warm = ext_authz_http.context_of("GET", "/", headers)
    decided = app.gatekeeper._decide(warm)
    principal = decided.decision.principal
    hook = app.gatekeeper.hooks[0]
    subject = RateLimitSubject("127.0.0.1", principal.tenant_id, "", principal.subject)

    def admission_hook() -> object:
        return hook(warm, decided)

    def limiter_only() -> object:
        return app.limiter.check(subject)

    def quota_only() -> object:
        return app.quotas.check(principal.tenant_id, API_REQUESTS)

    def metering_only() -> object:
        app.usage_recorder.record_request(principal.tenant_id, warm.route, USER)
        return None

    def metrics_only() -> object:
        ext_authz_common.observe("allowed", "allowed", time.perf_counter())
        return None

    def answer_only() -> object:
        return http_check.allowed(hook(warm, decided))

    # The HTTP server's own path: httptools parsing, context, Check and response bytes,
    # as the event loop runs them for one request (no socket: the write is a no-op).
    raw = envoy_request(headers)
    connection = connection_for(ext_authz_http, _OnTheLoop(http_check))
    parse_only = connection_for(ext_authz_http, _StubCheck())

    def http_connection() -> object:
        connection.data_received(raw)
        return None

    def http_parse_only() -> object:
        parse_only.data_received(raw)
        return None

    return {
        "admission hook only": admission_hook,
        "  limiter only": limiter_only,
        "  quota only": quota_only,
        "  metering only": metering_only,
        "metrics only": metrics_only,
        "http answer bytes only": answer_only,
        "http parse+context only": http_parse_only,
        "http connection (no socket)": http_connection,
    }


def report(app: Any, token: str, args: argparse.Namespace, ext_authz: Any, ext_authz_http: Any) -> None:
    from tahoe_auth.api import ext_authz_common

    servicer = ext_authz.AuthorizationServicer(app.gatekeeper)
    http_check = ext_authz_http.HttpCheck(app.gatekeeper)
    allowed = check_request(token, bench.ROUTE)
    denied = check_request(token, {**bench.ROUTE, "tenant_path_prefix": "/v1/tenants/"})
    denied.attributes.request.http.path = "/v1/tenants/another/files"
    headers = http_headers(token, bench.ROUTE["required_permission"])

    def grpc_full() -> object:
        return servicer.Check(allowed, None)

    def grpc_denied() -> object:
        return servicer.Check(denied, None)

    def http_full() -> object:
        return http_check(ext_authz_http.context_of("GET", "/", headers))

    def http_context() -> object:
        return ext_authz_http.context_of("GET", "/", headers)

    def grpc_context() -> object:
        return ext_authz.context_of(allowed)

    def decide_only() -> object:
        return app.gatekeeper._decide(ext_authz.context_of(allowed))

    pieces = pieces_of_a_check(app, headers, http_check, ext_authz_http)

    assert grpc_full().ok_response.headers, "the bench token must be allowed"
    assert grpc_denied().denied_response.status.code == 404
    assert http_full().startswith(b"HTTP/1.1 200")

    def no_quota(tenant_id: str, metric: str = "") -> Any:
        from tahoe_auth.domain.usage import API_REQUESTS, QuotaDecision

        return QuotaDecision(True, metric or API_REQUESTS)

    variants: list[tuple[str, Callable[[], object], list[tuple[Any, str, Any]]]] = [
        ("grpc context_of only", grpc_context, []),
        ("http context_of only", http_context, []),
        ("decision only (cached)", decide_only, []),
        *((name, call, []) for name, call in pieces.items() if name != "http connection (no socket)"),
        ("http connection (no socket)", pieces["http connection (no socket)"], []),
        ("grpc full", grpc_full, []),
        ("grpc - admission", grpc_full, [(app.gatekeeper, "hooks", [])]),
        ("grpc - rate limits", grpc_full, [(app.limiter, "enabled", False)]),
        ("grpc - metering", grpc_full, [(app.usage_recorder, "record_request", lambda *a: None)]),
        ("grpc - quota", grpc_full, [(app.quotas, "check", no_quota)]),
        ("grpc - metrics", grpc_full, [(ext_authz_common, "observe", lambda *a: None)]),
        ("http full", http_full, []),
        ("http - admission", http_full, [(app.gatekeeper, "hooks", [])]),
        ("http - metrics", http_full, [(ext_authz_common, "observe", lambda *a: None)]),
        ("http connection - admission", pieces["http connection (no socket)"], [(app.gatekeeper, "hooks", [])]),
        ("grpc denied 404", grpc_denied, []),
        ("grpc denied - audit", grpc_denied, [(app.gatekeeper, "_audit", None)]),
    ]
    figures: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for _ in range(args.rounds):
        for name, call, patches in variants:
            with contextlib.ExitStack() as stack:
                for obj, attr, value in patches:
                    stack.enter_context(patched(obj, attr, value))
                figures[name].append(per_call_us(call, args.n))
    print(f"CPU µs per call, lowest of {args.rounds} rounds x {args.n} calls, one thread")
    bases = {
        "grpc": "grpc full",
        "http": "http full",
        "grpc denied": "grpc denied 404",
        "http connection": "http connection (no socket)",
    }
    for name, values in figures.items():
        value = min(values)
        base = min(figures[bases[name.split(" - ")[0]]]) if " - " in name else None
        saved = f"   (saves {base - value:5.1f})" if base is not None else ""
        print(f"  {name:<28}{value:8.1f}{saved}")
    if args.profile:
        for name, call in (("grpc full", grpc_full), ("http full", http_full)):
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.n):
                call()
            profiler.disable()
            print(f"\ncProfile of {name} ({args.n} calls), by own time")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    raise SystemExit(main())
