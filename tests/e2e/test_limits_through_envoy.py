"""Rate limits, quotas and metering in the same Check hop, through a real Envoy to the
real demo upstream: 429s stop at Envoy with their headers, allowed requests carry the
`ratelimit-*` headers and are counted as `api.requests` usage."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest

from tahoe_auth.domain.principal import PLATFORM, Principal
from tahoe_auth.domain.usage import QuotaRule
from tahoe_auth.services.context import CallContext
from tests.e2e import stack as e2e
from tests.scenarios import api_key
from tests.support import wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]

OPERATOR = CallContext(principal=Principal(tenant_id="", subject="ops", subject_type=PLATFORM, platform_admin=True))
TENANT_LIMIT = 5


@pytest.fixture(scope="module")
def limited(
    module_env: dict[str, str], transport: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[e2e.Stack]:
    # Low per-tenant limit; the per-address limit stays out of the way (every test
    # request comes from 127.0.0.1).
    limits = {"per_tenant": {"limit": TENANT_LIMIT, "period": 60}, "per_address": {"limit": 100_000, "period": 60}}
    env = {**module_env, "TAHOE_RATE_LIMITS": json.dumps(limits)}
    tmp = tmp_path_factory.mktemp("limited")
    with e2e.stack(env, tmp, transport=transport) as running:
        yield running
    shutil.rmtree(tmp, ignore_errors=True)


def test_rate_limit_answers_429_with_headers_before_the_upstream(limited: e2e.Stack) -> None:
    tenant = limited.auth.create_tenant()
    _, key = api_key(limited.auth, tenant, ["transcription:read"])
    mark = limited.journal.mark()
    answers = [limited.call("GET", "/v1/jobs", token=key) for _ in range(TENANT_LIMIT + 1)]
    assert [a.status for a in answers] == [200] * TENANT_LIMIT + [429]
    first, denied = answers[0], answers[-1]
    assert first.headers["ratelimit-limit"] == str(TENANT_LIMIT)
    assert first.headers["ratelimit-remaining"] == str(TENANT_LIMIT - 1)
    assert int(first.headers["ratelimit-reset"]) >= 0
    assert denied.headers["ratelimit-remaining"] == "0" and int(denied.headers["retry-after"]) >= 1
    assert denied.body["error"] == "rate_limited" and denied.body["message"]
    assert len(limited.journal.since(mark)) == TENANT_LIMIT  # the 429 never reached the upstream
    # Another tenant has its own budget.
    other = limited.auth.create_tenant()
    _, other_key = api_key(limited.auth, other, ["transcription:read"])
    assert limited.call("GET", "/v1/jobs", token=other_key).status == 200


def test_hard_quota_answers_429_with_an_explanation(limited: e2e.Stack) -> None:
    app = limited.auth.app
    tenant = limited.auth.create_tenant()
    with app.db.unit_of_work(tenant.id) as uow:  # out of the rate limit's way: this is about the quota
        uow.tenants.get(tenant.id).settings = {"rate_limits": {"per_tenant": {"limit": 1000, "period": 60}}}
        uow.commit()
    app.usage.upsert_plan(OPERATOR, "tiny", "Tiny", {"api.requests": QuotaRule("api.requests", 2.0, hard=True)})
    app.usage.assign_plan(OPERATOR, tenant.id, "tiny")
    _, key = api_key(limited.auth, tenant, ["transcription:read"])
    wait_until(lambda: app.quotas.check(tenant.id).has_quota, limit=5)
    assert [limited.call("GET", "/v1/jobs", token=key).status for _ in range(2)] == [200, 200]
    # The allowed requests are metered (batched, flushed every second), then the quota bites.
    mark = limited.journal.mark()
    wait_until(lambda: limited.call("GET", "/v1/jobs", token=key).status == 429, limit=10, step=0.2)
    denied = limited.call("GET", "/v1/jobs", token=key)
    assert denied.status == 429 and denied.body["error"] == "quota_exceeded"
    assert "api.requests" in denied.body["message"]
    assert int(denied.headers["retry-after"]) >= 1
    # The overshoot is bounded by the documented lag (metering is flushed each second and
    # quota state refreshed each second: about two seconds of traffic, five requests a
    # second here), and nothing passes once the quota has bitten.
    assert len(limited.journal.since(mark)) <= 15
    mark = limited.journal.mark()
    assert limited.call("GET", "/v1/jobs", token=key).status == 429
    assert limited.journal.since(mark) == []


def test_allowed_requests_are_counted_as_usage(limited: e2e.Stack) -> None:
    app = limited.auth.app
    tenant = limited.auth.create_tenant()
    _, key = api_key(limited.auth, tenant, ["transcription:read"])
    for _ in range(3):
        assert limited.call("GET", "/v1/jobs", token=key).status == 200

    def counted() -> float:
        lines = app.usage.summary(OPERATOR, tenant.id, "").lines
        return sum(line.quantity for line in lines if line.metric == "api.requests")

    wait_until(lambda: counted() == 3, limit=5, step=0.1)
