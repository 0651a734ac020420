from __future__ import annotations

import importlib.util

import pytest

from tahoe_auth import tracing


def test_off_without_an_endpoint() -> None:
    assert tracing.configure(env={}) is None


@pytest.mark.skipif(importlib.util.find_spec("opentelemetry.sdk") is not None, reason="the otel extra is installed")
def test_off_without_the_packages(caplog: pytest.LogCaptureFixture) -> None:
    assert tracing.configure(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) is None
    assert "not installed" in caplog.text
