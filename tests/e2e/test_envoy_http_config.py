"""envoy/envoy.http.yaml, Check over Envoy's HTTP ext_authz: generated from envoy.yaml
and current, fail closed, the route requirements set only by Envoy, and every route's
requirements the same as over gRPC."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from tahoe_auth.api import ext_authz_http
from tests.e2e.stack import ENVOY_DIR, load_envoy_config

HTTP_YAML = ENVOY_DIR / "envoy.http.yaml"
GRPC_YAML = ENVOY_DIR / "envoy.yaml"
EXT_AUTHZ = "envoy.filters.http.ext_authz"


def generator() -> Any:
    path = Path(__file__).resolve().parents[2] / "scripts" / "envoy_http_config.py"
    spec = importlib.util.spec_from_file_location("envoy_http_config", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def manager(config: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def test_the_committed_file_is_what_the_generator_writes() -> None:
    assert HTTP_YAML.read_text() == generator().render(), "run scripts/envoy_http_config.py"


def test_it_fails_closed_and_strips_the_clients_copies_first() -> None:
    hcm = manager(load_envoy_config(HTTP_YAML))
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == [
        "envoy.filters.http.header_mutation",
        "tahoe.route_requirements",
        EXT_AUTHZ,
        "envoy.filters.http.router",
    ]
    strip = hcm["http_filters"][0]["typed_config"]["mutations"]["request_mutations"]
    assert {"remove_on_match": {"key_matcher": {"prefix": "x-tahoe-"}}} in strip
    authz = hcm["http_filters"][2]["typed_config"]
    assert authz["failure_mode_allow"] is False
    assert authz["status_on_error"] == {"code": "ServiceUnavailable"}
    service = authz["http_service"]
    assert service["server_uri"]["timeout"] == "0.5s"
    added = {h["key"]: h["value"] for h in service["authorization_request"]["headers_to_add"]}
    assert added == {ext_authz_http.CLIENT_ADDRESS: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}
    assert hcm["use_remote_address"] is True  # the address is the peer's, not X-Forwarded-For's


def requirements(config: dict[str, Any], http: bool) -> list[tuple[str, dict[str, str]]]:
    names = {v: k for k, v in generator().ROUTE_HEADERS.items()}
    found = []
    for host in manager(config)["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            per_filter = route.get("typed_per_filter_config", {})
            match = str(route["match"])
            if http and "tahoe.route_requirements" in per_filter:
                mutations = per_filter["tahoe.route_requirements"]["mutations"]["request_mutations"]
                headers = {m["append"]["header"]["key"]: m["append"]["header"]["value"] for m in mutations}
                assert set(headers) <= set(ext_authz_http.ROUTE_HEADERS)
                found.append((match, {names[k]: v for k, v in headers.items()}))
            elif not http and EXT_AUTHZ in per_filter and not per_filter[EXT_AUTHZ].get("disabled"):
                found.append((match, dict(per_filter[EXT_AUTHZ]["check_settings"]["context_extensions"])))
    return found


def test_every_route_requires_over_http_what_it_requires_over_grpc() -> None:
    over_http = requirements(load_envoy_config(HTTP_YAML), http=True)
    assert over_http == requirements(load_envoy_config(GRPC_YAML), http=False)
    assert len(over_http) >= 4


def test_the_transport_is_health_checked_on_the_side_port_never_on_itself() -> None:
    (cluster,) = [
        c for c in load_envoy_config(HTTP_YAML)["static_resources"]["clusters"] if c["name"] == "tahoe_authz_http"
    ]
    assert cluster["health_checks"][0]["http_health_check"] == {"path": "/readyz"}
    for group in cluster["load_assignment"]["endpoints"]:
        for endpoint in group["lb_endpoints"]:
            assert endpoint["endpoint"]["address"]["socket_address"]["port_value"] == 9202
            assert endpoint["endpoint"]["health_check_config"] == {"port_value": 9201}
