"""A database outage while orchestrators keep probing: readiness follows the database,
and the log says so once when it goes (with the reason, no traceback) and once when it
returns, however many probes ask in between."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tahoe_auth import migrate
from tahoe_auth.app import build_app
from tahoe_auth.config import Settings
from tahoe_auth.http_side import SideServer
from tahoe_auth.server import create_server
from tests.servers import OwnPostgres
from tests.support import wait_until

PROBES = 25


def readyz(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            json.load(response)
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            json.load(error)
            return error.code


def health_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tahoe_auth.health"]


def test_an_outage_logs_one_line_down_and_one_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    postgres = OwnPostgres()
    postgres.init()
    postgres.start()
    try:
        migrate.upgrade(postgres.url)
        settings = Settings.from_env(
            {"TAHOE_DATABASE_URL": postgres.url, "TAHOE_MASTER_KEY": "A" * 43, "TAHOE_VAR_DIR": str(tmp_path)}
        )
        app = build_app(settings)
        app.keys.ensure_active_key()
        server, port, health = create_server(app, "127.0.0.1:0")
        side = SideServer(app, health, "127.0.0.1:0")
        server.start()
        side.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = health_pb2_grpc.HealthStub(channel)
        ready_url = f"http://{side.address}/readyz"

        def probe_all() -> set[int]:
            """One round of what orchestrators do: /readyz, the health loop's check, gRPC Check."""
            seen = {readyz(ready_url)}
            health.check_once()
            seen.add(stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status)
            return seen

        caplog.set_level(logging.DEBUG)
        try:
            assert health.check_once()
            caplog.clear()

            postgres.stop()
            for _ in range(PROBES):
                assert probe_all() == {503, health_pb2.HealthCheckResponse.NOT_SERVING}
            tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
            assert not tracebacks, f"{len(tracebacks)} tracebacks in {PROBES} probe rounds: {tracebacks[:3]}"
            assert "Traceback" not in caplog.text
            down = health_lines(caplog)
            assert len(down) == 1, down
            assert "database unreachable (" in down[0], "the reason is missing"
            assert "(no answer)" not in down[0], "the reason is missing"

            postgres.start()
            wait_until(lambda: readyz(ready_url) == 200, limit=30, step=0.1)
            for _ in range(PROBES):
                assert probe_all() == {200, health_pb2.HealthCheckResponse.SERVING}
            lines = health_lines(caplog)
            assert lines[1:] == ["health: serving"], lines
            assert "Traceback" not in caplog.text
        finally:
            channel.close()
            side.stop()
            server.stop(None)
            app.close()
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped if the test failed mid-outage
            postgres.stop()
        postgres.remove()
