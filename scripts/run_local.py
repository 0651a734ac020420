"""`make run`: migrate, bootstrap a demo tenant, start the server, print what to do next.

Everything runs on embedded defaults (SQLite under ./var, in-process store) unless
TAHOE_* variables say otherwise. Ctrl-C stops it all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
DEMO_FILE = VAR / "demo.json"
DEMO_TENANT = "demo"
DEMO_EMAIL = "owner@demo.test"
CLI = [sys.executable, "-m", "tahoe_auth"]


def bootstrap(env: dict[str, str]) -> dict[str, str]:
    """Create the demo tenant once; keep its secrets in var/demo.json for later runs."""
    if DEMO_FILE.exists():
        return dict(json.loads(DEMO_FILE.read_text()))
    result = subprocess.run(
        [*CLI, "bootstrap", "--tenant", DEMO_TENANT, "--owner-email", DEMO_EMAIL],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"bootstrap failed: {result.stderr.strip()}")
    demo = json.loads(result.stdout)
    DEMO_FILE.write_text(json.dumps(demo, indent=2))
    DEMO_FILE.chmod(0o600)
    return dict(demo)


def walkthrough(demo: dict[str, str], grpc_addr: str, http_addr: str) -> str:
    grpcurl = ".venv/bin/grpcurl"
    login = json.dumps({"tenant": DEMO_TENANT, "email": DEMO_EMAIL, "password": demo["owner_password"]})
    return f"""
Tahoe Auth is running (embedded defaults: SQLite in ./var, in-process store).
  gRPC   {grpc_addr}   (AuthService, health, reflection)
  HTTP   {http_addr}   (/.well-known/jwks.json, /healthz, /readyz)
Demo tenant '{DEMO_TENANT}', owner {DEMO_EMAIL} / {demo["owner_password"]}   (saved in var/demo.json)

Try it (copy-paste):
  {grpcurl} -plaintext {grpc_addr} list
  {grpcurl} -plaintext -d '{login}' {grpc_addr} tahoe_auth.v1.AuthService/Login
  TOKEN=$({grpcurl} -plaintext -d '{login}' {grpc_addr} tahoe_auth.v1.AuthService/Login \\
          | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"]["access_token"])')
  {grpcurl} -plaintext -H "authorization: Bearer $TOKEN" {grpc_addr} tahoe_auth.v1.AuthService/ListSessions
  curl -s http://{http_addr}/.well-known/jwks.json

Ctrl-C stops everything.
"""


def main() -> int:
    env = dict(os.environ)
    env.setdefault("TAHOE_VAR_DIR", str(VAR))
    grpc_addr = env.setdefault("TAHOE_GRPC_ADDR", "127.0.0.1:9200")
    http_addr = env.setdefault("TAHOE_HTTP_ADDR", "127.0.0.1:9201")
    VAR.mkdir(exist_ok=True)
    subprocess.run([*CLI, "migrate"], env=env, check=True, cwd=ROOT)
    demo = bootstrap(env)
    server = subprocess.Popen([*CLI, "serve"], env=env, cwd=ROOT)
    time.sleep(1.5)
    if server.poll() is not None:
        return server.returncode or 1
    print(walkthrough(demo, grpc_addr, http_addr), flush=True)
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.send_signal(signal.SIGTERM)
        return server.wait(15)


if __name__ == "__main__":
    raise SystemExit(main())
