"""Envoy's HTTP ext_authz (`http_service`): the same Check as api/ext_authz.py, spoken
as plain HTTP/1.1 from one asyncio loop (uvloop, with httptools parsing).

Envoy sends the client's method, path and the headers its `allowed_headers` let
through; it sends no context extensions, so the route's requirements arrive as
request headers that Envoy sets per route and strips from every client request:

    x-tahoe-route-permission     as context extension `required_permission`
    x-tahoe-route-upstream       as `upstream` (the identity token's audience)
    x-tahoe-route-name           as `route`
    x-tahoe-route-tenant-prefix  as `tenant_path_prefix`
    x-tahoe-client-address       the downstream address as Envoy saw it: set by the
                                 ext_authz filter's `headers_to_add`, which overrides
                                 any client-sent copy (envoy/envoy.yaml)

Answers, the same decisions, statuses and bodies as the gRPC transport:

    allowed   200, the x-tahoe-* upstream headers (Envoy copies them through
              `allowed_upstream_headers`), `x-envoy-auth-headers-to-remove` naming the
              credential, the route headers and client-sent x-tahoe-* strays, and the
              `ratelimit-*` headers (to the client: `allowed_client_headers_on_success`)
    denied    the reason's status, JSON body and challenge (`allowed_client_headers`)
    failure   503 + retry-after; Envoy's own `status_on_error` is 503 too

Nothing here ever answers 200 but an allowed Check: no health endpoint (Envoy checks
the side port's /readyz), so no path a client could ask for reads as an allow.

A request whose decision is cached is answered on the loop; any other goes to a small
thread pool, so that a cold credential's database read never holds up warm ones.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import cast

import httptools
import uvloop

from tahoe_auth.api.ext_authz_common import UNAVAILABLE_MESSAGE, ObservedCheck
from tahoe_auth.authz import upstream
from tahoe_auth.authz.access import AccessRequest, bearer_credential
from tahoe_auth.authz.check import CheckContext, CheckOutcome, Gatekeeper, resource_tenant
from tahoe_auth.domain import decision, reasons
from tahoe_auth.kernel.cache import TTLCache

ROUTE_PERMISSION = "x-tahoe-route-permission"
ROUTE_UPSTREAM = "x-tahoe-route-upstream"
ROUTE_NAME = "x-tahoe-route-name"
ROUTE_TENANT_PREFIX = "x-tahoe-route-tenant-prefix"
CLIENT_ADDRESS = "x-tahoe-client-address"
ROUTE_HEADERS = (ROUTE_PERMISSION, ROUTE_UPSTREAM, ROUTE_NAME, ROUTE_TENANT_PREFIX)
SET_BY_ENVOY = frozenset((*ROUTE_HEADERS, CLIENT_ADDRESS))
HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"

_PHRASES = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests"}


def context_of(
    method: str, path: str, headers: Mapping[str, str], strays: tuple[str, ...] | None = None
) -> CheckContext:
    """`headers` with lower-case names, as Envoy sent them. `strays`: the client-sent
    x-tahoe-* names among them if the caller has collected them already (else found here)."""
    if strays is None:
        strays = tuple(name for name in headers if name.startswith(upstream.PREFIX) and name not in SET_BY_ENVOY)
    audience = headers.get(ROUTE_UPSTREAM, "") or upstream.DEFAULT_AUDIENCE
    return CheckContext(
        access=AccessRequest(
            credential=bearer_credential(headers.get("authorization", "")),
            required_permission=headers.get(ROUTE_PERMISSION, ""),
            resource_tenant=resource_tenant(path, headers.get(ROUTE_TENANT_PREFIX, "")),
            upstream=audience,
        ),
        request_id=headers.get("x-request-id", ""),
        method=method,
        path=path,
        route=headers.get(ROUTE_NAME, "") or audience,
        client_address=headers.get(CLIENT_ADDRESS, ""),
        client_tahoe_headers=strays,
    )


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    phrase = _PHRASES.get(status) or ("Service Unavailable" if status == 503 else "Denied")
    lines = [f"HTTP/1.1 {status} {phrase}", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def _extra(headers: Mapping[str, str]) -> bytes:
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")


def allowed_head(outcome: CheckOutcome) -> bytes:
    """Status line and headers of an allow, without the final blank line (per-request
    headers follow): the same for a credential and route until the identity token changes."""
    remove = ",".join((*outcome.remove_headers, *ROUTE_HEADERS))
    headers = [*outcome.upstream_headers.items(), (HEADERS_TO_REMOVE, remove), ("content-length", "0")]
    return _head(200, headers)


@lru_cache(maxsize=1024)
def _denied(reason: str, message: str, permission: str) -> tuple[bytes, bytes]:
    """Head (without the blank line) and body of a denial: few and fixed, built once."""
    row = reasons.REASONS[reason]
    body = json.dumps({"error": row.body_error, "message": message}).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    challenge = row.www_authenticate(permission)
    if challenge:
        headers.append(("www-authenticate", challenge))
    if row.http_status == 503:
        headers.append(("retry-after", "1"))
    return _head(row.http_status, headers), body


def denied_bytes(outcome: CheckOutcome) -> bytes:
    d = outcome.decision
    scoped = reasons.REASONS[d.reason].challenge == reasons.BEARER_INSUFFICIENT_SCOPE
    head, body = _denied(d.reason, d.message, d.permission if scoped else "")
    return head + _extra(outcome.response_headers) + b"\r\n" + body


_ERROR_HEAD, _ERROR_BODY = _denied(decision.UNAVAILABLE, UNAVAILABLE_MESSAGE, "")
ERROR_BYTES = _ERROR_HEAD + b"\r\n" + _ERROR_BODY
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HttpCheck(ObservedCheck[bytes]):
    """One HTTP ext_authz request -> response bytes (the transport-free part)."""

    error_response = ERROR_BYTES

    def __init__(self, gatekeeper: Gatekeeper, max_cached: int = 50_000) -> None:
        super().__init__(gatekeeper)
        # A reused decision keeps its head in its memo; this cache serves the rest.
        self._allowed: TTLCache[tuple[str, tuple[str, ...]], bytes] = TTLCache(max_cached)

    def answers_from_memory(self, context: CheckContext) -> bool:
        return self._gatekeeper.has_cached_decision(context)

    def __call__(self, context: CheckContext, traceparent: str = "") -> bytes:
        return self.answer(context, traceparent, time.perf_counter())

    def denied(self, outcome: CheckOutcome) -> bytes:
        return denied_bytes(outcome)

    def allowed(self, outcome: CheckOutcome) -> bytes:
        memo = outcome.memo
        head = memo.get(_MEMO) if memo is not None else None
        if head is None:
            key = (outcome.upstream_headers[upstream.IDENTITY], outcome.remove_headers)
            head = self._allowed.get(key)
            if head is None:
                head = allowed_head(outcome)
                self._allowed.put(key, head, time.time() + self._gatekeeper.identity_ttl)
            if memo is not None:
                memo[_MEMO] = head
        return cast(bytes, head) + _extra(outcome.response_headers) + b"\r\n"


_MEMO = "http"


class _Connection(asyncio.Protocol):
    """One Envoy connection: HTTP/1.1 keep-alive, one request at a time (Envoy does
    not pipeline; reading pauses while a request is answered off the loop)."""

    def __init__(self, check: HttpCheck, pool: ThreadPoolExecutor, open_connections: set[_Connection]) -> None:
        self._check = check
        self._pool = pool
        self._open = open_connections
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._strays: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._open.add(self)
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._open.discard(self)
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except Exception:  # a malformed request: answer 400 and drop the connection
            if self._transport is not None:
                self._transport.write(BAD_REQUEST)
                self._transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._strays = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        # Collected here rather than by a second pass over every header in context_of.
        if key.startswith(upstream.PREFIX) and key not in SET_BY_ENVOY and key not in self._headers:
            self._strays.append(key)
        self._headers[key] = value.decode("latin-1")

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        method = self._parser.get_method().decode("latin-1")
        context = context_of(method, self._url.decode("latin-1"), self._headers, tuple(self._strays))
        traceparent = self._headers.get("traceparent", "")
        keep_alive = self._parser.should_keep_alive()
        if self._check.answers_from_memory(context):
            self._reply(self._check(context, traceparent), keep_alive)
            return
        transport.pause_reading()
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._check, context, traceparent)
        future.add_done_callback(lambda done: self._finish(done, keep_alive))

    def _finish(self, done: asyncio.Future[bytes], keep_alive: bool) -> None:
        response = ERROR_BYTES if done.cancelled() or done.exception() is not None else done.result()
        self._reply(response, keep_alive)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def _reply(self, response: bytes, keep_alive: bool) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(response)
        if not keep_alive:
            self._transport.close()


class HttpAuthzServer:
    """The HTTP ext_authz transport on its own thread and event loop."""

    def __init__(self, check: HttpCheck, address: str, *, threads: int = 4, reuse_port: bool = False) -> None:
        self._check = check
        host, _, port = address.rpartition(":")
        self._host, self._port = host or "127.0.0.1", int(port)
        self._reuse_port = reuse_port
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="authz-http")
        self._loop = uvloop.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> None:
        # The loop runs on its own thread from the start and the listener is made there:
        # start() works from any thread, one that runs an event loop of its own included.
        self._thread = threading.Thread(target=self._loop.run_forever, name="authz-http-loop", daemon=True)
        self._thread.start()

        async def listen() -> asyncio.AbstractServer:
            return await self._loop.create_server(
                lambda: _Connection(self._check, self._pool, self._connections),
                self._host,
                self._port,
                reuse_port=self._reuse_port or None,
                backlog=1024,
            )

        try:
            server = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(timeout=10)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            raise
        self._server = server
        sockets: list[socket.socket] = list(getattr(server, "sockets", []))
        self.port = int(sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        return f"{self._host}:{self.port}"

    def stop(self) -> None:
        """Stop accepting, let answers in flight go out, then stop the loop."""
        if self._server is None:
            return

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for connection in list(self._connections):
                connection.close()
            await asyncio.sleep(0.05)  # let the transports' close callbacks run

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=False)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._loop.close()
        self._server = None
