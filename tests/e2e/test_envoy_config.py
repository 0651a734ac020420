"""The committed Envoy configs: valid for this Envoy, fail closed, strip client
x-tahoe-* headers before ext_authz, and agree with each other and with design.md.

envoy.yaml (and envoy.compose.yaml) ask Check over Envoy's HTTP ext_authz, the default;
envoy.grpc.yaml, generated from envoy.yaml, asks it over gRPC."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tahoe_auth.api import ext_authz_http
from tahoe_auth.domain import permissions
from tests import harness
from tests.e2e.stack import ENVOY_DIR, ENVOY_GRPC_YAML, ENVOY_YAML, load_envoy_config

CONFIGS = sorted(ENVOY_DIR.glob("*.yaml"))
HTTP_CONFIGS = [ENVOY_YAML, ENVOY_DIR / "envoy.compose.yaml"]
EXT_AUTHZ = "envoy.filters.http.ext_authz"
STRIP = "envoy.filters.http.header_mutation"
ROUTE_REQUIREMENTS = "tahoe.route_requirements"
ROUTER = "envoy.filters.http.router"
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
JSON_API_RESPONSE = "tahoe.json_api_response"
API_MATCHES = ({"safe_regex": {"regex": "/auth/v1/.*(:watch|/auditEvents:export)"}}, {"prefix": "/auth/v1/"})
OPENAPI_PATH = "/auth/v1/openapi.json"
CONSOLE_MATCHES = ({"path": "/console"}, {"prefix": "/console/"})


def generator() -> Any:
    path = Path(__file__).resolve().parents[2] / "scripts" / "envoy_configs.py"
    spec = importlib.util.spec_from_file_location("envoy_configs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_configs_and_no_python_in_the_envoy_folder() -> None:
    assert {p.name for p in CONFIGS} == {"envoy.yaml", "envoy.compose.yaml", "envoy.grpc.yaml"}
    assert not list(ENVOY_DIR.rglob("*.py")), "xds-protos owns the top-level `envoy` package"


def test_the_grpc_config_is_what_the_generator_writes() -> None:
    assert ENVOY_GRPC_YAML.read_text() == generator().render(), "run scripts/envoy_configs.py"


@pytest.mark.envoy
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_envoy_accepts_the_config(path: Path, envoy_binary: str) -> None:
    argv = [envoy_binary, "--mode", "validate", "-c", str(path)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def hcm(config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    typed: dict[str, Any] = manager["typed_config"]
    return typed


def authz_filter(config: dict[str, Any]) -> dict[str, Any]:
    (authz,) = [f["typed_config"] for f in hcm(config)["http_filters"] if f["name"] == EXT_AUTHZ]
    return authz


def authz_service(config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(grpc_service or http_service, the cluster it calls)."""
    authz = authz_filter(config)
    if "grpc_service" in authz:
        return authz["grpc_service"], authz["grpc_service"]["envoy_grpc"]["cluster_name"]
    return authz["http_service"], authz["http_service"]["server_uri"]["cluster"]


def clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def endpoints(cluster: dict[str, Any]) -> list[tuple[str, int]]:
    return [
        (
            e["endpoint"]["address"]["socket_address"]["address"],
            e["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for group in cluster["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]
    ]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_ext_authz_fails_closed_with_a_timeout_after_the_clients_copies_are_gone(path: Path) -> None:
    config = load_envoy_config(path)
    names = [f["name"] for f in hcm(config)["http_filters"]]
    over_http = path in HTTP_CONFIGS
    expected = [STRIP, ROUTE_REQUIREMENTS, EXT_AUTHZ, JSON_API_RESPONSE, TRANSCODER, ROUTER]
    assert names == (expected if over_http else [n for n in expected if n != ROUTE_REQUIREMENTS])
    strip = hcm(config)["http_filters"][0]["typed_config"]["mutations"]["request_mutations"]
    assert {"remove_on_match": {"key_matcher": {"prefix": "x-tahoe-"}}} in strip
    authz = authz_filter(config)
    assert authz["failure_mode_allow"] is False
    assert authz["status_on_error"] == {"code": "ServiceUnavailable"}
    assert authz["transport_api_version"] == "V3"
    service, cluster_name = authz_service(config)
    cluster = clusters(config)[cluster_name]
    if over_http:
        assert service["server_uri"]["timeout"] == "0.5s"
        added = {h["key"]: h["value"] for h in service["authorization_request"]["headers_to_add"]}
        assert added == {ext_authz_http.CLIENT_ADDRESS: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}
        response = service["authorization_response"]
        assert response["allowed_upstream_headers"] == {"patterns": [{"prefix": "x-tahoe-"}]}
        assert response["allowed_client_headers_on_success"] == {"patterns": [{"prefix": "ratelimit-"}]}
        # Health from the side port: the transport answers 200 only to an allowed Check.
        assert cluster["health_checks"][0]["http_health_check"] == {"path": "/readyz"}
        assert "typed_extension_protocol_options" not in cluster  # HTTP/1.1
    else:
        assert service["timeout"] == "0.5s"
        options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert "http2_protocol_options" in options["explicit_http_config"]
        assert cluster["health_checks"][0]["grpc_health_check"]
    assert hcm(config)["use_remote_address"] is True  # the client address is the peer's, not X-Forwarded-For's
    assert hcm(config)["generate_request_id"] and hcm(config)["preserve_external_request_id"]


EXT_AUTHZ_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"


def transcoder(config: dict[str, Any]) -> dict[str, Any]:
    (found,) = [f for f in hcm(config)["http_filters"] if f["name"] == TRANSCODER]
    assert found["disabled"] is True  # only the JSON API's routes turn it on
    typed: dict[str, Any] = found["typed_config"]
    return typed


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_the_json_api_is_transcoded_from_the_committed_descriptors(path: Path) -> None:
    config = transcoder(load_envoy_config(path))
    assert config["proto_descriptor"] == "envoy/tahoe_auth.pb"  # Envoy runs in the checkout (/app in compose)
    assert (ENVOY_DIR / "tahoe_auth.pb").is_file()
    assert config["match_incoming_request_route"] is True and config["convert_grpc_status"] is True
    assert config["request_validation_options"]["reject_unknown_method"] is True
    assert config["print_options"]["stream_newline_delimited"] is True
    assert set(config["services"]) >= {"tahoe_auth.v1.AuthService", "tahoe_auth.v1.TenantService"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_envoy_answers_the_openapi_document_itself_before_the_api_routes(path: Path) -> None:
    config = load_envoy_config(path)
    route_config = hcm(config)["route_config"]
    (vhost,) = route_config["virtual_hosts"]
    matches = [r["match"] for r in vhost["routes"]]
    (route,) = [r for r in vhost["routes"] if r["match"] == {"path": OPENAPI_PATH}]
    assert matches.index(route["match"]) < min(matches.index(m) for m in API_MATCHES)
    assert route["direct_response"] == {"status": 200, "body": {"filename": "envoy/openapi.json"}}
    (header,) = route["response_headers_to_add"]
    assert header["header"] == {"key": "content-type", "value": "application/json"}
    per_filter = route["typed_per_filter_config"]
    assert per_filter == {EXT_AUTHZ: {"@type": EXT_AUTHZ_PER_ROUTE, "disabled": True}}  # no transcoder
    # Envoy refuses to start when the file is larger than this (4 KiB by default).
    size = (ENVOY_DIR / "openapi.json").stat().st_size
    assert size < route_config["max_direct_response_body_size_bytes"] // 2, "raise the limit"


def requirements(config: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """Each checked route's requirements, in context-extension terms, whichever the
    transport; routes without Check must be the health check, the JSON API (which the
    gRPC server checks itself, from the bearer that only these routes keep), its OpenAPI
    document, the console's public files (from a side port, credentials removed) and
    the 404."""
    names = generator().CONTEXT_EXTENSIONS
    found = []
    (vhost,) = hcm(config)["route_config"]["virtual_hosts"]
    assert "request_headers_to_remove" not in vhost
    for route in vhost["routes"]:
        per_filter = route.get("typed_per_filter_config", {})
        match = str(route["match"])
        if route["match"] in API_MATCHES:
            assert per_filter[EXT_AUTHZ] == {"@type": EXT_AUTHZ_PER_ROUTE, "disabled": True}
            assert per_filter[TRANSCODER] == transcoder(config)  # the filter's own config, turned on
            assert route["route"]["cluster"] == "tahoe_api" and "request_headers_to_remove" not in route
            continue
        if route["match"] in CONSOLE_MATCHES:
            assert per_filter == {EXT_AUTHZ: {"@type": EXT_AUTHZ_PER_ROUTE, "disabled": True}}
            if "route" in route:
                assert route["route"]["cluster"] == "tahoe_console"
                assert "connect-failure" in route["route"]["retry_policy"]["retry_on"]
                assert route["request_headers_to_remove"] == ["authorization", "cookie"]
            else:
                assert route["redirect"] == {"path_redirect": "/console/"}
            continue
        if per_filter.get(EXT_AUTHZ, {}).get("disabled"):
            assert route["match"] in ({"path": "/healthz"}, {"path": OPENAPI_PATH}, {"prefix": "/"})
            continue
        assert route["request_headers_to_remove"] == ["authorization"], route["match"]
        if ROUTE_REQUIREMENTS in per_filter:
            mutations = per_filter[ROUTE_REQUIREMENTS]["mutations"]["request_mutations"]
            headers = {m["append"]["header"]["key"]: m["append"]["header"]["value"] for m in mutations}
            assert {m["append"]["append_action"] for m in mutations} == {"OVERWRITE_IF_EXISTS_OR_ADD"}
            assert set(headers) <= set(ext_authz_http.ROUTE_HEADERS)
            found.append((match, {names[k]: v for k, v in headers.items()}))
        else:
            found.append((match, dict(per_filter[EXT_AUTHZ]["check_settings"]["context_extensions"])))
    return found


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_route_says_what_it_needs(path: Path) -> None:
    permissions_seen = set()
    for _, extensions in requirements(load_envoy_config(path)):
        assert extensions["upstream"] == "transcription" and extensions["route"]
        if "required_permission" in extensions:
            permissions.parse(extensions["required_permission"])
            permissions_seen.add(extensions["required_permission"])
    assert permissions_seen == {"transcription:read", "transcription:write"}


def test_every_route_requires_over_grpc_what_it_requires_over_http() -> None:
    over_http = requirements(load_envoy_config(ENVOY_YAML))
    assert over_http == requirements(load_envoy_config(ENVOY_GRPC_YAML))
    assert len(over_http) >= 4


def test_local_ports_follow_the_contract() -> None:
    for path in (ENVOY_YAML, ENVOY_GRPC_YAML):
        config = load_envoy_config(path)
        (listener,) = config["static_resources"]["listeners"]
        assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8080}
        assert endpoints(clusters(config)["transcription"]) == [("127.0.0.1", 9300)]
    over_http = clusters(load_envoy_config(ENVOY_YAML))["tahoe_authz_http"]
    assert endpoints(over_http) == [("127.0.0.1", 9202)]
    for group in over_http["load_assignment"]["endpoints"]:
        assert [e["endpoint"]["health_check_config"] for e in group["lb_endpoints"]] == [{"port_value": 9201}]
    assert endpoints(clusters(load_envoy_config(ENVOY_GRPC_YAML))["tahoe_auth"]) == [("127.0.0.1", 9200)]


def test_the_compose_config_is_the_local_one_with_other_addresses() -> None:
    local, compose = load_envoy_config(ENVOY_YAML), load_envoy_config(ENVOY_DIR / "envoy.compose.yaml")
    assert hcm(local) == hcm(compose)
    assert endpoints(clusters(compose)["tahoe_authz_http"]) == [("auth", 9202)]
    assert endpoints(clusters(compose)["transcription"]) == [("transcription", 9300)]
    for name, cluster in clusters(local).items():
        other = dict(clusters(compose)[name])
        assert other.pop("type") == "STRICT_DNS" and other.pop("dns_lookup_family") == "V4_ONLY"
        assert {k: v for k, v in cluster.items() if k not in ("type", "load_assignment")} == {
            k: v for k, v in other.items() if k != "load_assignment"
        }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_a_check_that_reached_no_instance_is_asked_of_another(path: Path) -> None:
    config = load_envoy_config(path)
    service, cluster_name = authz_service(config)
    retry = service["retry_policy"]
    conditions = set(retry["retry_on"].split(","))
    assert "connect-failure" in conditions
    assert conditions & {"refused-stream", "reset-before-request"}
    # Never where Check may have run already (it counts and meters what it decides).
    assert not conditions & {"reset", "5xx", "gateway-error", "deadline-exceeded", "cancelled"}
    assert retry["num_retries"] >= 1
    assert [p["name"] for p in retry["retry_host_predicate"]] == ["envoy.retry_host_predicates.previous_hosts"]
    # Envoy applies max_interval as each try's timeout (measured with Envoy 1.40: a
    # 0.15 s Check failed under max_interval 0.1 s): never shorter than the call's own.
    timeout = float((service.get("timeout") or service["server_uri"]["timeout"]).removesuffix("s"))
    assert float(retry["retry_back_off"]["max_interval"].removesuffix("s")) >= timeout
    cluster = clusters(config)[cluster_name]
    outliers = cluster["outlier_detection"]
    assert outliers["consecutive_5xx"] <= 5 and outliers["max_ejection_percent"] >= 50
    assert "slow_start_config" in cluster["round_robin_lb_config"]
    (check,) = cluster["health_checks"]
    assert check["no_traffic_interval"] == check["interval"]


@pytest.mark.envoy
@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_generated_configs_carry_the_committed_retries_and_validate(
    transport: str, envoy_binary: str, tmp_path: Path
) -> None:
    ports = [harness.free_port(), harness.free_port()]
    if transport == "grpc":
        config = harness.envoy_config(harness.free_port(), ext_authz_ports=ports)
        resilience = harness.committed_auth_resilience(ENVOY_GRPC_YAML)
        cluster = harness.EXT_AUTHZ_CLUSTER
    else:
        config = harness.envoy_config(harness.free_port(), http_authz_ports=ports, timeout_ms=500)
        resilience = harness.committed_auth_resilience(ENVOY_YAML)
        cluster = harness.EXT_AUTHZ_HTTP_CLUSTER
    service, _ = authz_service(config)
    assert service["retry_policy"] == resilience.retry_policy
    assert clusters(config)[cluster]["outlier_detection"] == resilience.outlier_detection
    path = tmp_path / "generated.json"
    path.write_text(json.dumps(config))
    argv = [envoy_binary, "--mode", "validate", "-c", str(path)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
