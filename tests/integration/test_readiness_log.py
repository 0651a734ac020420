"""A database outage while orchestrators keep probing: readiness follows the database,
and the log says so once when it goes (with the reason, no traceback) and once when it
returns, however many probes ask in between."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.servers import OwnPostgres
from tests.support import probed_server, wait_until

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


def test_an_outage_logs_one_line_down_and_one_up(
    own_postgres: OwnPostgres, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with probed_server(own_postgres.url, tmp_path) as probed:
        health, stub = probed.health, health_pb2_grpc.HealthStub(probed.channel)

        def probe_all() -> set[int]:
            """One round of what orchestrators do: /readyz, the health loop's check, gRPC Check."""
            seen = {readyz(probed.ready_url)}
            health.check_once()
            seen.add(stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status)
            return seen

        caplog.set_level(logging.DEBUG)
        assert health.check_once()
        caplog.clear()

        own_postgres.stop()
        for _ in range(PROBES):
            assert probe_all() == {503, health_pb2.HealthCheckResponse.NOT_SERVING}
        tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
        assert not tracebacks, f"{len(tracebacks)} tracebacks in {PROBES} probe rounds: {tracebacks[:3]}"
        assert "Traceback" not in caplog.text
        down = health_lines(caplog)
        assert len(down) == 1, down
        assert "database unreachable (" in down[0], "the reason is missing"
        assert "(no answer)" not in down[0], "the reason is missing"

        own_postgres.start()
        wait_until(lambda: readyz(probed.ready_url) == 200, limit=30, step=0.1)
        for _ in range(PROBES):
            assert probe_all() == {200, health_pb2.HealthCheckResponse.SERVING}
        lines = health_lines(caplog)
        assert lines[1:] == ["health: serving"], lines
        assert "Traceback" not in caplog.text
