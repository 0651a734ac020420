"""`make run`: migrate, bootstrap two demo tenants, start the auth server, the demo
transcription service and Envoy in front of it, and print what to do next.

Everything runs on embedded defaults (SQLite under ./var, in-process store) unless
TAHOE_* variables say otherwise. Every address can be moved, for a second run or a test:
TAHOE_GRPC_ADDR, TAHOE_HTTP_ADDR, TAHOE_AUTHZ_HTTP_ADDR, TRANSCRIPTION_ADDR (the demo),
TAHOE_RUN_ENVOY_ADDR and TAHOE_RUN_ENVOY_ADMIN_ADDR; TAHOE_VAR_DIR moves ./var.

Ctrl-C, SIGTERM (a process manager, `kill`) and SIGHUP (its terminal closed) all stop
it the same way: the children are asked to stop, waited for, and killed if they linger.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("TAHOE_VAR_DIR") or ROOT / "var").resolve()
DEMO_FILE = VAR / "demo.json"
TENANTS = {"demo": "owner@demo.test", "acme": "owner@acme.test"}
SERVICE = "transcription_service"
CLI = [sys.executable, "-m", "tahoe_auth"]
BIN = Path(sys.executable).parent
ENVOY_CONFIG = ROOT / "envoy" / "envoy.yaml"
DEFAULT_GRPC, DEFAULT_HTTP, DEFAULT_AUTHZ_HTTP = "127.0.0.1:9200", "127.0.0.1:9201", "127.0.0.1:9202"
DEFAULT_DEMO, DEFAULT_ENVOY, DEFAULT_ENVOY_ADMIN = "127.0.0.1:9300", "127.0.0.1:8080", "127.0.0.1:9901"
ENVOY_ADDR = os.environ.get("TAHOE_RUN_ENVOY_ADDR") or DEFAULT_ENVOY
ENVOY_ADMIN_ADDR = os.environ.get("TAHOE_RUN_ENVOY_ADMIN_ADDR") or DEFAULT_ENVOY_ADMIN
DEMO_ADDR = os.environ.get("TRANSCRIPTION_ADDR") or DEFAULT_DEMO
STOP_GRACE = 15.0
"""Seconds the children get, all together, between SIGTERM and SIGKILL (serve drains
in-flight calls for up to 10 s, after a drain period that this script sets to 0)."""


class Stop(Exception):
    """Ctrl-C, SIGTERM or SIGHUP arrived: stop everything."""


_stop_requests: list[int] = []


def _request_stop(signum: int, frame: object) -> None:
    # Only noted here and acted on by `check_stop` in the waiting loops: raising at an
    # arbitrary point (say, inside Popen) could lose a child just started, left running.
    _stop_requests.append(signum)


def check_stop() -> None:
    if _stop_requests:
        raise Stop(signal.Signals(_stop_requests[0]).name)


def bootstrap(env: dict[str, str]) -> dict[str, dict[str, str]]:
    """Create the demo tenants once; keep their secrets in var/demo.json for later runs."""
    saved: dict[str, dict[str, str]] = json.loads(DEMO_FILE.read_text()) if DEMO_FILE.exists() else {}
    if "tenant" in saved:  # written by an older `make run`: the demo tenant alone
        saved = {str(saved["tenant"]): dict(saved)}  # type: ignore[arg-type]
    for slug, email in TENANTS.items():
        if slug in saved:
            continue
        result = subprocess.run(
            [*CLI, "bootstrap", "--tenant", slug, "--owner-email", email],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            sys.exit(f"bootstrap of {slug} failed: {result.stderr.strip()}")
        saved[slug] = json.loads(result.stdout)
    if SERVICE not in saved:
        # The demo reports usage as a platform-wide service account (usage:write).
        result = subprocess.run(
            [*CLI, "service-account", "create", "--name", "transcription", "--permission", "usage:write"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            sys.exit(f"creating the transcription service account failed: {result.stderr.strip()}")
        saved[SERVICE] = json.loads(result.stdout)
    DEMO_FILE.write_text(json.dumps(saved, indent=2))
    DEMO_FILE.chmod(0o600)
    return saved


def wait_for(address: str, process: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> None:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_stop()
        if process.poll() is not None:
            sys.exit(f"{what} exited with {process.returncode}; see the lines above")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} is not listening on {address} after {timeout:.0f} s")


def envoy_config(authz_http_addr: str, http_addr: str) -> Path:
    """envoy/envoy.yaml as committed (Check over HTTP on TAHOE_AUTHZ_HTTP_ADDR, health
    on the side port), or a copy with the addresses that were moved."""
    moves = {
        DEFAULT_ENVOY_ADMIN: ENVOY_ADMIN_ADDR,
        DEFAULT_ENVOY: ENVOY_ADDR,
        DEFAULT_AUTHZ_HTTP: authz_http_addr,
        DEFAULT_HTTP: http_addr,  # the console's files
        DEFAULT_DEMO: DEMO_ADDR,
    }
    health_port, side_port = DEFAULT_HTTP.rpartition(":")[2], http_addr.rpartition(":")[2]
    if all(old == new for old, new in moves.items()) and health_port == side_port:
        return ENVOY_CONFIG
    text = ENVOY_CONFIG.read_text()
    replacements = [
        (f"health_check_config: {{port_value: {health_port}}}", f"health_check_config: {{port_value: {side_port}}}")
    ]
    for old, new in moves.items():
        old_host, _, old_port = old.rpartition(":")
        host, _, port = new.rpartition(":")
        replacements.append(
            (f"{{address: {old_host}, port_value: {old_port}}}", f"{{address: {host}, port_value: {port}}}")
        )
    for written, moved in replacements:
        if text.count(written) != 1:  # the committed config changed shape: say so, never run a half-moved copy
            sys.exit(f"{ENVOY_CONFIG} does not hold `{written}` exactly once; cannot move it")
        text = text.replace(written, moved)
    path = VAR / "envoy.yaml"
    path.write_text(text)
    return path


def walkthrough(demo: dict[str, dict[str, str]], grpc_addr: str, http_addr: str, authz_http_addr: str) -> str:
    grpcurl = ".venv/bin/grpcurl"
    envoy = f"http://{ENVOY_ADDR}"
    console = f"http://localhost:{ENVOY_ADDR.rpartition(':')[2]}/console/"
    logins = {
        slug: json.dumps({"tenant": slug, "email": TENANTS[slug], "password": demo[slug]["owner_password"]})
        for slug in TENANTS
    }
    token_of = 'python3 -c \'import json,sys; print(json.load(sys.stdin)["tokens"]["access_token"])\''
    return f"""
Tahoe Auth is running (embedded defaults: SQLite in ./var, in-process store).
  Envoy          {envoy}   ext_authz -> Tahoe Auth, then the demo transcription service
  gRPC           {grpc_addr}   AuthService, DecisionService, ext_authz Check, health, reflection
  HTTP           {http_addr}   /.well-known/jwks.json, /healthz, /readyz
  ext_authz      {authz_http_addr}   Check over HTTP, which Envoy asks about every request
  transcription  {DEMO_ADDR}   the demo upstream (trusts only Envoy's verified identity)
  Console        {console}   the web console: sign in with a tenant below
                 (localhost, not 127.0.0.1: browsers take passkeys only for a host name)
  Mail           {VAR / "mail"}/   each mail the server sends (invitations, password resets), as .eml
                 (set TAHOE_SMTP_URL=smtp://user:password@host:587 to send them for real)
Tenants 'demo' ({TENANTS["demo"]} / {demo["demo"]["owner_password"]}) and 'acme' ({TENANTS["acme"]} / \
{demo["acme"]["owner_password"]}); saved in var/demo.json.

Try it (copy-paste):
  # No credential: Envoy answers 401 and the upstream never sees the request
  curl -si {envoy}/v1/jobs

  # Log in to 'demo' (gRPC) and keep the access token
  TOKEN=$({grpcurl} -plaintext -d '{logins["demo"]}' {grpc_addr} tahoe_auth.v1.AuthService/Login | {token_of})
  # ... or the same call as JSON through Envoy (every RPC is under {envoy}/auth/v1/)
  curl -s -d '{logins["demo"]}' {envoy}/auth/v1/login
  # Every JSON call, described (OpenAPI 3.1; docs/http-api.md shows them with curl)
  curl -s {envoy}/auth/v1/openapi.json

  # Through Envoy: create a job, list the tenant's jobs, see the verified identity
  curl -s -H "authorization: Bearer $TOKEN" -d '{{"audio_url": "s3://demo/hello.wav", "audio_seconds": 42}}' \\
       {envoy}/v1/jobs
  curl -s -H "authorization: Bearer $TOKEN" {envoy}/v1/jobs
  curl -s -H "authorization: Bearer $TOKEN" -H "x-tahoe-tenant-id: forged" {envoy}/v1/whoami

  # Another tenant sees only its own jobs; naming a tenant that is not yours is 404
  ACME=$({grpcurl} -plaintext -d '{logins["acme"]}' {grpc_addr} tahoe_auth.v1.AuthService/Login | {token_of})
  curl -s -H "authorization: Bearer $ACME" {envoy}/v1/jobs
  curl -si -H "authorization: Bearer $ACME" {envoy}/v1/tenants/{demo["demo"]["tenant_id"]}/jobs

  # Each job was metered (transcription.seconds) by the demo through the UsageService
  {grpcurl} -plaintext -H "authorization: Bearer $TOKEN" {grpc_addr} tahoe_auth.v1.UsageService/GetUsageSummary

  # Why was a request allowed or denied? (the decision Envoy's Check makes)
  {grpcurl} -plaintext -H "authorization: Bearer $TOKEN" \\
       -d '{{"required_permission": "transcription:write", "upstream": "transcription"}}' \\
       {grpc_addr} tahoe_auth.v1.DecisionService/ExplainDecision

  # Log out: the same token is refused through Envoy at once
  {grpcurl} -plaintext -H "authorization: Bearer $TOKEN" {grpc_addr} tahoe_auth.v1.AuthService/Logout
  curl -si -H "authorization: Bearer $TOKEN" {envoy}/v1/jobs

Ctrl-C stops everything.
"""


def start(argv: list[str], env: dict[str, str], processes: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    check_stop()
    process = subprocess.Popen(argv, env=env, cwd=ROOT)
    processes.append(process)
    return process


def name_of(process: subprocess.Popen[bytes]) -> str:
    args = process.args
    return str(args[0] if isinstance(args, list | tuple) else args)


def stop_all(processes: list[subprocess.Popen[bytes]], grace: float = STOP_GRACE) -> None:
    """SIGTERM to every child still running (the last started first), then SIGKILL to
    those still there after `grace` seconds; every child is reaped before returning."""
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace
    for process in reversed(processes):
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name_of(process)} did not stop within {grace:.0f} s: killing it", file=sys.stderr)
            process.kill()
            process.wait()


def main() -> int:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _request_stop)
    env = dict(os.environ)
    env["TAHOE_VAR_DIR"] = str(VAR)
    grpc_addr = env.setdefault("TAHOE_GRPC_ADDR", DEFAULT_GRPC)
    http_addr = env.setdefault("TAHOE_HTTP_ADDR", DEFAULT_HTTP)
    authz_http_addr = env.setdefault("TAHOE_AUTHZ_HTTP_ADDR", DEFAULT_AUTHZ_HTTP)
    # One instance, and Envoy stops with it: there is nowhere to drain traffic to, so a
    # Ctrl-C stops at once (in-flight calls still finish) unless the caller says otherwise.
    env.setdefault("TAHOE_DRAIN_SECONDS", "0")
    # Envoy reaches the gRPC port from loopback: believe the client address it forwards
    # for the JSON API (so that limits and sessions see each client, not Envoy).
    env.setdefault("TAHOE_TRUSTED_PROXIES", "127.0.0.1/32,::1")
    # Links in mail (invitations, password resets) open the console through Envoy;
    # with no TAHOE_SMTP_URL the mail is written to var/mail/ instead of sent.
    env.setdefault("TAHOE_PUBLIC_URL", f"http://localhost:{ENVOY_ADDR.rpartition(':')[2]}")
    VAR.mkdir(exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        migrated = subprocess.run([*CLI, "migrate"], env=env, check=False, cwd=ROOT)
        check_stop()  # a Ctrl-C reaches migrate too: that is a stop, not a failure
        if migrated.returncode != 0:
            sys.exit(f"migrate failed with {migrated.returncode}; see the lines above")
        demo = bootstrap(env)
        auth = start([*CLI, "serve"], env, processes)
        wait_for(grpc_addr, auth, "the auth server")
        wait_for(http_addr, auth, "the auth server's HTTP side port")
        wait_for(authz_http_addr, auth, "the auth server's ext_authz over HTTP")
        demo_env = {
            **env,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "examples" / "transcription"), str(ROOT)]),
            "TRANSCRIPTION_ADDR": DEMO_ADDR,
            "TRANSCRIPTION_DATABASE_URL": f"sqlite:///{VAR / 'transcription.db'}",
            "TAHOE_JWKS_URL": f"http://{http_addr}/.well-known/jwks.json",
            "TAHOE_GRPC_TARGET": grpc_addr,
            "TRANSCRIPTION_CLIENT_ID": demo[SERVICE]["client_id"],
            "TRANSCRIPTION_CLIENT_SECRET": demo[SERVICE]["client_secret"],
        }
        transcription = start([sys.executable, "-m", "transcription_demo"], demo_env, processes)
        wait_for(DEMO_ADDR, transcription, "the transcription demo")
        envoy_argv = [str(BIN / "envoy"), "-c", str(envoy_config(authz_http_addr, http_addr)), "--log-level", "warn"]
        envoy = start([*envoy_argv, "--disable-hot-restart"], env, processes)
        wait_for(ENVOY_ADDR, envoy, "Envoy")
        print(walkthrough(demo, grpc_addr, http_addr, authz_http_addr), flush=True)
        while all(p.poll() is None for p in processes):
            check_stop()
            time.sleep(0.2)
        failed = next(p for p in processes if p.poll() is not None)
        print(f"{name_of(failed)} exited with {failed.returncode}; stopping the rest", file=sys.stderr)
        return failed.returncode or 1
    except Stop as stop:
        print(f"{stop}: stopping the auth server, the demo and Envoy", file=sys.stderr, flush=True)
        return 0
    finally:
        stop_all(processes)


if __name__ == "__main__":
    raise SystemExit(main())
