"""No upstream receives the caller's credential, whatever the Envoy config: Check
removes `authorization` from every allowed request. Here Envoy strips nothing itself
(no header_mutation filter, no request_headers_to_remove) in front of the demo
upstream, which journals the headers it receives."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import support
from tests.e2e import stack as e2e
from tests.scenarios import api_key, service_token

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]

HEADER_MUTATION = "envoy.filters.http.header_mutation"


def strip_nothing(config: dict[str, Any]) -> dict[str, Any]:
    """The committed config without anything that removes request headers."""
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    hcm = manager["typed_config"]
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != HEADER_MUTATION]
    for vhost in hcm["route_config"]["virtual_hosts"]:
        vhost.pop("request_headers_to_remove", None)
        for route in vhost["routes"]:
            route.pop("request_headers_to_remove", None)
    dumped = json.dumps(config)
    assert "request_headers_to_remove" not in dumped and HEADER_MUTATION not in dumped
    return config


@pytest.fixture(scope="module")
def bare(module_env: dict[str, str], transport: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[e2e.Stack]:
    tmp = tmp_path_factory.mktemp("bare")
    with e2e.stack(module_env, tmp, configure=strip_nothing, transport=transport) as running:
        yield running
    shutil.rmtree(tmp, ignore_errors=True)


def user_token(live: e2e.Stack, tenant: support.Tenant) -> tuple[str, str]:
    return tenant.owner_id, live.auth.login(tenant).tokens.access_token


def key(live: e2e.Stack, tenant: support.Tenant) -> tuple[str, str]:
    return api_key(live.auth, tenant, ["transcription:read"])


def service(live: e2e.Stack, tenant: support.Tenant) -> tuple[str, str]:
    return service_token(live.auth, tenant, ["transcription:read"])


Credential = Callable[[e2e.Stack, support.Tenant], tuple[str, str]]


def test_this_envoy_passes_authorization_through(bare: e2e.Stack) -> None:
    """On a route without ext_authz the header arrives: only Check can remove it."""
    mark = bare.journal.mark()
    assert bare.call("GET", "/healthz", token="not-a-secret").status == 200
    (seen,) = bare.journal.since(mark)
    assert seen["authorization"] is True


@pytest.mark.parametrize(
    ("credential", "subject_type"),
    [(user_token, "user"), (key, "api_key"), (service, "service")],
    ids=["access-token", "api-key", "service-token"],
)
def test_an_allowed_request_reaches_the_upstream_without_the_credential(
    bare: e2e.Stack, credential: Credential, subject_type: str
) -> None:
    tenant = bare.auth.create_tenant()
    subject, secret = credential(bare, tenant)
    mark = bare.journal.mark()
    forged = {"x-tahoe-tenant-id": "evil", "x-tahoe-role": "admin"}
    response = bare.call("GET", "/v1/jobs", token=secret, headers=forged)
    assert response.status == 200, response.body
    (seen,) = bare.journal.since(mark)
    assert seen["authorization"] is False, "the upstream received an authorization header"
    assert secret not in json.dumps(seen), "the credential reached the upstream"
    headers = seen["headers"]
    assert (headers["x-tahoe-tenant-id"], headers["x-tahoe-subject"]) == (tenant.id, subject)
    assert headers["x-tahoe-subject-type"] == subject_type
    assert "x-tahoe-role" not in headers
