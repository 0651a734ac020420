"""`make run` (scripts/run_local.py) as a process manager or a closed terminal stops it:
SIGTERM or SIGHUP to the script alone must stop its children (auth server, demo,
Envoy) and free their ports, as Ctrl-C does. Runs the real script on free ports and a
temporary var directory (SQLite, in-process store)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests import harness
from tests.e2e import stack as e2e
from tests.support import wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "Ctrl-C stops everything."  # the walkthrough's last line, printed once all listen


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listening(port: int) -> bool:
    with socket.socket() as sock:
        # SO_REUSEADDR: connections left in TIME_WAIT do not count, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_to_make_run_stops_every_child_and_frees_the_ports(
    signum: int, tmp_path: Path, envoy_binary: str
) -> None:
    ports = {name: harness.free_port() for name in ("grpc", "http", "authz_http", "demo", "envoy", "admin")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAHOE_", "TRANSCRIPTION_"))}
    env.update(
        TAHOE_VAR_DIR=str(tmp_path / "var"),
        TAHOE_GRPC_ADDR=f"127.0.0.1:{ports['grpc']}",
        TAHOE_HTTP_ADDR=f"127.0.0.1:{ports['http']}",
        TAHOE_AUTHZ_HTTP_ADDR=f"127.0.0.1:{ports['authz_http']}",
        TRANSCRIPTION_ADDR=f"127.0.0.1:{ports['demo']}",
        TAHOE_RUN_ENVOY_ADDR=f"127.0.0.1:{ports['envoy']}",
        TAHOE_RUN_ENVOY_ADMIN_ADDR=f"127.0.0.1:{ports['admin']}",
    )
    # Its own session: whatever happens, the finally below can end the whole group.
    script = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "run_local.py")],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    ready = threading.Event()

    def drain() -> None:  # keep the pipe from filling up, and notice the walkthrough
        assert script.stdout is not None
        for line in script.stdout:
            output.append(line)
            if line.strip() == READY_LINE:
                ready.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180  # migrate, two bootstraps (argon2), three processes
        while not ready.wait(0.2):
            assert script.poll() is None, "run_local.py exited early:\n" + "".join(output)
            assert time.monotonic() < deadline, "run_local.py never got ready:\n" + "".join(output)
        children = children_of(script.pid)
        assert len(children) == 3, (children, "".join(output))  # auth server, demo, Envoy
        assert all(listening(port) for port in ports.values()), ports
        # Envoy asks Check over HTTP at the moved address: a 401 from Check, not the 503
        # of an ext_authz cluster it cannot reach (health checks may need a moment).
        wait_until(lambda: e2e.request(ports["envoy"], "GET", "/v1/jobs").status != 503, limit=20, step=0.2)
        denied = e2e.request(ports["envoy"], "GET", "/v1/jobs")
        assert denied.status == 401 and denied.body["error"] == "missing_credential", denied
        # The committed config names the OpenAPI document relative to the checkout, where make run starts Envoy.
        document = e2e.request(ports["envoy"], "GET", "/auth/v1/openapi.json")
        assert document.status == 200 and document.body["openapi"].startswith("3."), document.status
        # The console, printed by the walkthrough, is served through Envoy from the moved side port.
        assert f"http://localhost:{ports['envoy']}/console/" in "".join(output)
        console = e2e.request(ports["envoy"], "GET", "/console/")
        assert console.status == 200 and "js/main.js" in console.body["raw"], console.status

        script.send_signal(signum)
        assert script.wait(60) == 0, "".join(output)
        # The script waited for its children before exiting: nothing may be left, at once.
        assert [pid for pid in children if alive(pid)] == []
        assert [name for name, port in ports.items() if listening(port)] == []
    finally:
        # Whatever is left of the session started above (children outlive a killed
        # script, and keep its process group).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script.pid, signal.SIGKILL)
        script.wait(10)
        reader.join(10)  # EOF once every process that shared the pipe is gone
        assert script.stdout is not None
        script.stdout.close()
