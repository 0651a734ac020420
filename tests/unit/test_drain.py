"""Shutdown in two stages: the drain (NOT_SERVING while still answering) and the
grace; and the drain's default against the committed Envoy configs' detection time."""

from __future__ import annotations

import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from grpc_health.v1 import health, health_pb2

from tahoe_auth.config import ConfigError, Settings
from tahoe_auth.health import HealthReporter
from tahoe_auth.server import Shutdown

ENVOY_DIR = Path(__file__).resolve().parents[2] / "envoy"
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration.removesuffix("s"))


def auth_health_check(path: Path) -> dict[str, Any]:
    config = yaml.safe_load(path.read_text())
    # Check's cluster: over HTTP (envoy.yaml), or over gRPC (envoy.grpc.yaml)
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] in ("tahoe_auth", "tahoe_authz_http")]
    (check,) = cluster["health_checks"]
    result: dict[str, Any] = check
    return result


@pytest.mark.parametrize("path", sorted(ENVOY_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_the_default_drain_outlasts_envoys_health_checks(path: Path) -> None:
    check = auth_health_check(path)
    # Both report the draining: gRPC health NOT_SERVING, /readyz 503 (tests/integration/test_server_lifecycle.py).
    assert check.get("grpc_health_check") == {"service_name": "envoy.service.auth.v3.Authorization"} or check.get(
        "http_health_check"
    ) == {"path": "/readyz"}
    interval = seconds(check["interval"])
    # Without traffic Envoy checks every no_traffic_interval (60 s unless set).
    slowest = max(interval, seconds(check["no_traffic_interval"]))
    detection = (
        slowest * check["unhealthy_threshold"] + seconds(check["timeout"]) + seconds(check.get("interval_jitter", "0s"))
    )
    assert Settings().drain_seconds > detection


def test_the_drain_is_configurable() -> None:
    assert Settings.from_env({"TAHOE_DRAIN_SECONDS": "2.5"}).drain_seconds == 2.5
    assert Settings.from_env({"TAHOE_DRAIN_SECONDS": "0"}).drain_seconds == 0
    for bad in ("-1", "soon", "nan", "601"):
        with pytest.raises(ConfigError, match="TAHOE_DRAIN_SECONDS"):
            Settings.from_env({"TAHOE_DRAIN_SECONDS": bad})


class FakeDatabase:
    def __init__(self) -> None:
        self.up = True

    def ping(self) -> bool:
        return self.up


def test_a_stopped_reporter_says_not_serving_for_good() -> None:
    database = FakeDatabase()
    servicer = health.HealthServicer()
    reporter = HealthReporter(SimpleNamespace(db=database), servicer, ["svc"])  # type: ignore[arg-type]

    def status(name: str) -> int:
        return servicer.Check(health_pb2.HealthCheckRequest(service=name), None).status  # type: ignore[arg-type]

    assert reporter.check_once() and reporter.ready and not reporter.draining
    assert status("") == status("svc") == SERVING
    reporter.stop()
    assert reporter.draining and not reporter.ready
    assert status("") == status("svc") == NOT_SERVING
    assert not reporter.check_once()  # a periodic check after the stop changes nothing
    assert status("svc") == NOT_SERVING and not reporter.ready


def test_a_second_signal_ends_the_drain() -> None:
    shutdown = Shutdown()
    shutdown.on_signal(signal.SIGTERM)
    assert shutdown.requested.is_set() and not shutdown.hurried.is_set()
    shutdown.on_signal(signal.SIGINT)
    assert shutdown.hurried.is_set()
