"""The HTTP API, behind Envoy. Identity comes only from the verified `x-tahoe-identity`
token (tahoe_auth.identity); the plain x-tahoe-* headers must agree with it.

    GET  /healthz                       liveness (no identity needed)
    GET  /v1/whoami                     the verified identity
    POST /v1/jobs                       {"audio_url", "language", "audio_seconds"} -> 201
    GET  /v1/jobs                       the caller's tenant's jobs
    GET  /v1/jobs/{id}                  one job of the caller's tenant, else 404
    GET  /v1/tenants/{tenant}/jobs      the same list, naming the tenant (another's: 404)
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tahoe_auth.identity import Identity, IdentityError, IdentityVerifier
from transcription_demo.config import Config
from transcription_demo.store import JobStore
from transcription_demo.usage import UsageReporter

log = logging.getLogger("transcription")

JOB = re.compile(r"^/v1/jobs/([0-9a-f-]{36})$")
TENANT_JOBS = re.compile(r"^/v1/tenants/([^/]+)/jobs$")
MAX_BODY = 64 * 1024


class Journal:
    """Test aid: one JSON line per request received, with its headers (of `authorization`
    only whether it was there)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def record(self, method: str, path: str, headers: Any) -> None:
        entry = {
            "method": method,
            "path": path,
            "headers": {k.lower(): v for k, v in headers.items() if k.lower() != "authorization"},
            "authorization": headers.get("authorization") is not None,
        }
        with self._lock, open(self._path, "a") as out:
            out.write(json.dumps(entry) + "\n")


class Service:
    def __init__(self, store: JobStore, verifier: IdentityVerifier, usage: UsageReporter) -> None:
        self.store = store
        self.verifier = verifier
        self.usage = usage

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        path = path.split("?", 1)[0]
        if path == "/healthz":
            return 200, {"status": "ok"}
        try:
            identity = self.verifier.verify_headers(headers)
        except IdentityError as exc:
            log.warning("rejected %s %s: %s", method, path, exc)
            return 401, {"error": "unauthenticated", "message": "no valid identity from the gateway"}
        request_id = headers.get("x-request-id", "")
        if method == "GET" and path == "/v1/whoami":
            return 200, {"identity": _identity_json(identity)}
        if method == "POST" and path == "/v1/jobs":
            return self._create(identity, body, request_id)
        if method == "GET" and path == "/v1/jobs":
            return 200, {"jobs": [j.to_json() for j in self.store.list(identity.tenant_id)]}
        if method == "GET" and (match := JOB.match(path)):
            job = self.store.get(identity.tenant_id, match.group(1))
            return (200, {"job": job.to_json()}) if job else (404, {"error": "not_found", "message": "no such job"})
        if method == "GET" and (match := TENANT_JOBS.match(path)):
            if match.group(1) != identity.tenant_id:  # Envoy's Check already refused; a second wall
                return 404, {"error": "not_found", "message": "no such tenant"}
            return 200, {"jobs": [j.to_json() for j in self.store.list(identity.tenant_id)]}
        return 404, {"error": "not_found", "message": "no such route"}

    def _create(self, identity: Identity, body: bytes, request_id: str) -> tuple[int, dict[str, Any]]:
        if not identity.allows("transcription:write"):
            return 403, {"error": "permission_denied", "message": "needs transcription:write"}
        try:
            fields = json.loads(body or b"{}")
            audio_url = str(fields["audio_url"])
            language = str(fields.get("language", "en"))[:16]
            seconds = float(fields.get("audio_seconds", 0))
        except (ValueError, KeyError, TypeError):
            return 400, {
                "error": "invalid_argument",
                "message": "send JSON with audio_url (and language, audio_seconds)",
            }
        if not 0 <= seconds <= 24 * 3600:
            return 400, {"error": "invalid_argument", "message": "audio_seconds must be within 0..86400"}
        job = self.store.create(
            identity.tenant_id, f"{identity.subject_type}:{identity.subject}", audio_url, language, seconds
        )
        self.usage.job_done(identity.tenant_id, job.id, seconds, request_id)
        return 201, {"job": job.to_json()}


def _identity_json(identity: Identity) -> dict[str, Any]:
    return {
        "tenant_id": identity.tenant_id,
        "subject": identity.subject,
        "subject_type": identity.subject_type,
        "permissions": sorted(identity.permissions),
    }


def make_server(config: Config, service: Service) -> ThreadingHTTPServer:
    journal = Journal(config.journal) if config.journal else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "transcription-demo"

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                self._reply(413, {"error": "too_large", "message": f"at most {MAX_BODY} bytes"})
                return
            body = self.rfile.read(length) if length else b""
            if journal is not None:
                journal.record(self.command, self.path, self.headers)
            try:
                status, payload = service.handle(self.command, self.path, self.headers, body)
            except Exception:  # an unexpected error is a 500 and a log line, never a crash
                log.exception("error serving %s %s", self.command, self.path)
                status, payload = 500, {"error": "internal", "message": "internal error"}
            self._reply(status, payload)

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            request_id = self.headers.get("x-request-id")
            if request_id:
                self.send_header("x-request-id", request_id)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    host, _, port = config.addr.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    return server
