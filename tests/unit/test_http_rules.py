"""The JSON API's HTTP rules, read from the descriptor set Envoy's transcoder loads
(envoy/tahoe_auth.pb, `make proto`): every method of the transcoder's services has
one, under /auth/v1/, no two collide, and no credential ever travels in a URL."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from google.protobuf import descriptor

from tests import http_rules
from tests.e2e.stack import TRANSCODER, load_envoy_config

POOL = http_rules.load_pool()
CONFIG = load_envoy_config()
HCM = CONFIG["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
(TRANSCODER_CONFIG,) = [f["typed_config"] for f in HCM["http_filters"] if f["name"] == TRANSCODER]
SERVICES = [POOL.FindServiceByName(name) for name in TRANSCODER_CONFIG["services"]]
RULES = http_rules.rules(SERVICES)
STRING = descriptor.FieldDescriptor.TYPE_STRING


def test_the_transcoder_serves_every_public_service() -> None:
    from tahoe_auth import server

    assert {s.full_name for s in SERVICES} >= {s.full_name for s in server.GOVERNED_SERVICES}


def test_every_method_has_an_http_route() -> None:
    assert http_rules.unannotated(SERVICES) == []
    assert {(r.service, r.method.name) for r in RULES} == {(s.full_name, m.name) for s in SERVICES for m in s.methods}
    assert len(RULES) >= 74


def test_every_path_is_under_auth_v1() -> None:
    assert [r.name for r in RULES if not r.template.startswith("/auth/v1/")] == []


def test_no_two_rules_share_a_method_and_path() -> None:
    shapes = Counter(r.shape() for r in RULES)
    assert [r.name for r in RULES if shapes[r.shape()] > 1] == []


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_the_rule_names_real_fields(rule: http_rules.Rule) -> None:
    request = rule.method.input_type
    for path in rule.path_fields():
        field = http_rules.field_at(request, path)
        assert field.type == STRING and not field.is_repeated, path  # ids
    if rule.body not in ("", "*"):
        assert request.fields_by_name[rule.body].message_type is not None
    # Reads have no body; what they take is in the path and the query.
    assert (rule.verb in ("GET", "DELETE")) == (rule.body == "")


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_no_secret_is_bound_to_the_path_or_query(rule: http_rules.Rule) -> None:
    """URLs land in access logs, proxies and browser history: a password, token or
    client secret travels in the body only."""
    in_url = [path for path, field in http_rules.outside_body(rule) if http_rules.is_secret(field)]
    assert in_url == [], f"{rule.name} takes {in_url} from the URL"


def test_the_secret_check_knows_the_secrets() -> None:
    found = {
        field.name
        for service in SERVICES
        for method in service.methods
        for _, field in http_rules.leaf_fields(method.input_type)
        if http_rules.is_secret(field)
    }
    expected = {"password", "current_password", "new_password", "refresh_token", "token", "client_secret", "credential"}
    assert found == expected
    page_token = POOL.FindMessageTypeByName("tahoe_auth.v1.ListUsersRequest").fields_by_name["page_token"]
    assert not http_rules.is_secret(page_token)


def stream_route_regex() -> str:
    (vhost,) = HCM["route_config"]["virtual_hosts"]
    (regex,) = [r["match"]["safe_regex"]["regex"] for r in vhost["routes"] if "safe_regex" in r["match"]]
    assert isinstance(regex, str)
    return regex


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_server_streams_and_only_they_take_the_route_without_a_timeout(rule: http_rules.Rule) -> None:
    # An example path: each variable one segment.
    path = http_rules.VARIABLE.sub("x", rule.template)
    streams = re.fullmatch(stream_route_regex(), path) is not None
    assert streams == rule.method.server_streaming, rule.name
    if rule.method.server_streaming:
        assert rule.verb == "GET"


def test_the_generated_modules_carry_the_same_rules() -> None:
    """What the tests' own stubs see (tests/e2e) is what Envoy loads."""
    from tahoe_auth import server

    generated = {
        (r.service, r.method.name, r.verb, r.template, r.body) for r in http_rules.rules(server.GOVERNED_SERVICES)
    }
    governed = {s.full_name for s in server.GOVERNED_SERVICES}
    committed = {(r.service, r.method.name, r.verb, r.template, r.body) for r in RULES if r.service in governed}
    assert generated == committed
