"""A W3C traceparent sent to Envoy reaches the upstream and the auth server's log
lines for that request, on the e2e stack (tests/e2e/stack.py, the `live` fixture)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from tahoe_auth.kernel import logs
from tests.e2e import stack as e2e

pytestmark = [pytest.mark.envoy, pytest.mark.postgres]

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_traceparent_reaches_the_upstream_and_the_auth_log(live: e2e.Stack) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    # Check logs denials at INFO (the server's default level; pytest leaves WARNING).
    auth_logger = logging.getLogger("tahoe_auth")
    level = auth_logger.level
    auth_logger.setLevel(logging.INFO)
    try:
        tenant = live.auth.create_tenant()
        token = live.auth.login(tenant).tokens.access_token
        mark = live.journal.mark()
        headers = {"x-request-id": "trace-allowed-1", "traceparent": TRACEPARENT}
        assert live.call("GET", "/v1/jobs", token=token, headers=headers).status == 200
        (seen,) = live.journal.since(mark)
        assert seen["headers"]["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]  # same trace id
        denied = {"x-request-id": "trace-denied-1", "traceparent": TRACEPARENT}
        assert live.call("GET", "/v1/jobs", headers=denied).status == 401
    finally:
        root.removeHandler(handler)
        auth_logger.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("request_id") == "trace-denied-1"]
    assert mine, "Check logged nothing for the denied request"
    assert all(line.get("traceparent") == TRACEPARENT for line in mine)
