"""The HTTP side port: JWKS for verifiers, liveness and readiness for orchestrators,
Prometheus metrics at /metrics, and the web console's files under /console/."""

from __future__ import annotations

import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from tahoe_auth.console import Console

if TYPE_CHECKING:
    from tahoe_auth.app import App
    from tahoe_auth.health import HealthReporter

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    # A console page load asks for some 30 files at once, and Envoy opens connections
    # for them in a burst: the default listen backlog of 5 overflows, the kernel drops
    # the connection attempts, and Envoy (0.25 s connect timeout) answers 503, so the
    # browser's module graph fails to load.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A peer that goes away mid-request (Envoy closing a kept-alive connection, a
        # probe timing out) is routine: not a traceback on stderr, as socketserver prints.
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            log.debug("side port: %s from %s", error, client_address)
        else:
            log.exception("side port: a request from %s failed", client_address)


class SideServer:
    def __init__(self, app: App, health: HealthReporter, address: str) -> None:
        host, _, port = address.rpartition(":")
        handler = type("Handler", (_Handler,), {"app": app, "health": health, "console": Console()})
        self._httpd = _Server((host, int(port)), handler)
        self._httpd.daemon_threads = True
        self.address = f"{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="http-side", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    app: App
    health: HealthReporter
    console: Console
    server_version = "tahoe-auth"
    # Keep-alive (every answer has a content-length): Envoy's health checks and a
    # console page's files reuse a few connections instead of one per request.
    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/console"):
            self._console(path, head=True)
        else:
            self._json(405, {"error": "method_not_allowed", "message": "HEAD is answered for /console/ only"})

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/console"):
            self._console(path)
        elif path == "/.well-known/jwks.json":
            # max-age < the publication delay: a verifier that honours it holds a NEXT key
            # before the key signs (docs/operations.md, key rotation).
            max_age = self.app.settings.jwks_max_age
            self._json(200, self.app.keys.ring().jwks(), cache=f"public, max-age={max_age}")
        elif path == "/metrics":
            payload = generate_latest(REGISTRY)
            self.send_response(200)
            self.send_header("content-type", CONTENT_TYPE_LATEST)
            self.send_header("cache-control", "no-store")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        elif path == "/healthz":
            self._json(200, {"status": "ok"})
        elif path == "/readyz":
            # Draining (after SIGTERM) is not ready either: orchestrators and load
            # balancers that probe here stop sending before the listener closes.
            if self.health.draining:
                self._json(503, {"status": "draining"})
            else:
                ready = self.health.check_once()  # logs only when readiness changes
                self._json(200 if ready else 503, {"status": "ready" if ready else "database unreachable"})
        else:
            self._json(404, {"error": "not_found", "message": f"no such path {path}"})

    def _console(self, path: str, head: bool = False) -> None:
        answer = self.console.answer(path, self.headers.get("if-none-match"), head=head)
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def _json(self, status: int, body: Any, cache: str = "no-store") -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("cache-control", cache)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)
