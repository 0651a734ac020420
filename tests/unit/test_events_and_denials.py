from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from tahoe_auth.domain import audit, events
from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.services.denials import DenialAuditor


@pytest.mark.parametrize(
    ("filters", "event_type", "expected"),
    [
        ([], "user.created", True),
        ([], "webhook.test", False),  # test events go only to the endpoint they were sent to
        (["user.*"], "user.created", True),
        (["user.*"], "apikey.created", False),
        (["session.revoked"], "session.revoked", True),
        (["*"], "tenant.updated", True),
    ],
)
def test_event_filters(filters: list[str], event_type: str, expected: bool) -> None:
    assert events.matches(filters, event_type) is expected


def test_filters_are_validated() -> None:
    assert events.validate_filters([" user.* ", "user.*", "session.revoked"]) == ["session.revoked", "user.*"]
    for bad in ["User.created", "user..x", "a b", "user.*.x*"]:
        with pytest.raises(InvalidArgument):
            events.validate_filters([bad])


def test_the_body_is_stable_and_carries_correlation() -> None:
    event = events.Event(
        "e1", "t1", "user.created", dt.datetime(2030, 1, 1, tzinfo=dt.UTC), {"user_id": "u1"}, "req-1", ""
    )
    body = events.webhook_body(event)
    assert body == events.webhook_body(event)
    assert json.loads(body) == {
        "id": "e1",
        "type": "user.created",
        "timestamp": "2030-01-01T00:00:00.000000Z",
        "data": {"user_id": "u1"},
        "metadata": {"tenant_id": "t1", "request_id": "req-1"},
    }


def test_scrub_redacts_secret_looking_keys() -> None:
    details = {"password": "x", "api_key_id": "k1", "nested": {"refresh_token": "rt_x"}, "reason": "ok"}
    assert audit.scrub(details) == {
        "password": "[redacted]",
        "api_key_id": "k1",
        "nested": {"refresh_token": "[redacted]"},
        "reason": "ok",
    }


class FakeLog:
    def __init__(self, fail: bool = False) -> None:
        self.entries: list[tuple[str, str, str, dict[str, Any]]] = []
        self.fail = fail

    def record_alone(
        self, ctx: Any, tenant_id: str, action: str, target: str, outcome: str, details: Any, actor: Any
    ) -> None:
        if self.fail:
            raise RuntimeError("database down")
        self.entries.append((tenant_id, action, target, dict(details)))


def test_denials_are_aggregated_per_minute_and_bounded() -> None:
    now = [120.0]
    log = FakeLog()
    # No background flush within this test: an hour between flushes.
    auditor = DenialAuditor(log, lambda: now[0], max_keys=2, interval=3600)  # type: ignore[arg-type]
    for _ in range(1000):
        auditor.record("t1", "permission_denied", "r1")
    auditor.record("t2", "invalid_token", "r1")
    auditor.record("t3", "tenant_suspended", "r2")  # a third key this minute: overflow
    assert auditor.flush() == 0  # the minute is not over
    now[0] = 180.0
    auditor.record("t1", "permission_denied", "r1")  # next minute: kept for later
    assert auditor.flush() == 3
    assert sorted((e[0], e[3]["reason"], e[3]["count"]) for e in log.entries) == [
        ("", "overflow", 1),
        ("t1", "permission_denied", 1000),
        ("t2", "invalid_token", 1),
    ]
    assert auditor.pending() == 1


def test_a_failed_flush_keeps_the_counts() -> None:
    log = FakeLog(fail=True)
    auditor = DenialAuditor(log, lambda: 0.0, interval=3600)  # type: ignore[arg-type]
    auditor.record("t1", "permission_denied", "r1")
    assert auditor.flush(everything=True) == 0 and auditor.pending() == 1
    log.fail = False
    assert auditor.flush(everything=True) == 1 and log.entries[0][3]["count"] == 1
