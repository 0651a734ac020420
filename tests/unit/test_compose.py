"""docker-compose.yml cannot run here: check its services, ports, health checks and
wiring against the contract (design.md) and the Envoy config it mounts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tahoe_auth.config import Settings
from tahoe_auth.server import GRACE_SECONDS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def published(service: str) -> set[int]:
    return {int(p.rsplit(":", 1)[1]) for p in SERVICES[service].get("ports", [])}


def test_the_stack_and_its_health_checks() -> None:
    assert set(SERVICES) == {"postgres", "redis", "auth", "transcription", "envoy"}
    for name, service in SERVICES.items():
        check = service["healthcheck"]
        assert check["test"] and check["interval"] and check["retries"], name


def test_ports_follow_the_contract_and_stay_on_localhost() -> None:
    assert published("auth") == {9200, 9201}
    assert published("envoy") == {8080}
    for service in SERVICES.values():
        for mapping in service.get("ports", []):
            assert mapping.startswith("127.0.0.1:")


def test_the_auth_server_migrates_at_start_on_postgres_and_redis() -> None:
    auth = SERVICES["auth"]
    assert auth["command"][:3] == ["tahoe-auth", "serve", "--migrate"]
    env = auth["environment"]
    assert (
        env["TAHOE_DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:5432/" in env["TAHOE_DATABASE_URL"]
    )
    assert env["TAHOE_REDIS_URL"].startswith("redis://redis:6379")
    assert "TAHOE_MASTER_KEY" in env and ":?" in env["TAHOE_MASTER_KEY"]  # required, never baked in
    assert env["TAHOE_GRPC_ADDR"].endswith(":9200") and env["TAHOE_HTTP_ADDR"].endswith(":9201")
    # Envoy's container reaches Check over HTTP: it must listen beyond its own loopback.
    assert env["TAHOE_AUTHZ_HTTP_ADDR"] == "0.0.0.0:9202"
    assert auth["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert "/readyz" in " ".join(auth["healthcheck"]["test"])


def test_envoy_and_the_demo_are_wired_to_the_auth_server() -> None:
    envoy, demo = SERVICES["envoy"], SERVICES["transcription"]
    config = envoy["command"][envoy["command"].index("-c") + 1]
    assert config == "/app/envoy/envoy.compose.yaml" and (ROOT / "envoy" / "envoy.compose.yaml").exists()
    assert envoy["depends_on"]["auth"] == {"condition": "service_healthy"}
    assert demo["environment"]["TRANSCRIPTION_ADDR"].endswith(":9300")
    clusters = yaml.safe_load((ROOT / "envoy" / "envoy.compose.yaml").read_text())["static_resources"]["clusters"]
    (authz,) = [c for c in clusters if c["name"] == "tahoe_authz_http"]
    (endpoint,) = [e["endpoint"] for group in authz["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]
    assert endpoint["address"]["socket_address"] == {"address": "auth", "port_value": 9202}
    assert endpoint["health_check_config"] == {"port_value": 9201}
    assert demo["environment"]["TAHOE_JWKS_URL"] == "http://auth:9201/.well-known/jwks.json"
    assert demo["environment"]["TRANSCRIPTION_AUDIENCE"] == "transcription"
    assert demo["environment"]["TAHOE_GRPC_TARGET"] == "auth:9200"  # usage reporting


def test_the_image_is_built_from_the_locked_requirements() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert "USER tahoe" in dockerfile
    for service in ("auth", "transcription", "envoy"):
        assert SERVICES[service]["build"] == "."


def test_the_auth_server_may_drain_before_compose_kills_it() -> None:
    period = SERVICES["auth"]["stop_grace_period"]
    assert period.endswith("s") and float(period[:-1]) > Settings().drain_seconds + GRACE_SECONDS


def test_the_auth_server_trusts_only_envoys_fixed_address_for_client_addresses() -> None:
    import ipaddress

    (subnet,) = [c["subnet"] for c in COMPOSE["networks"]["default"]["ipam"]["config"]]
    envoy_ip = SERVICES["envoy"]["networks"]["default"]["ipv4_address"]
    assert ipaddress.ip_address(envoy_ip) in ipaddress.ip_network(subnet)
    trusted = Settings.from_env(
        {"TAHOE_TRUSTED_PROXIES": SERVICES["auth"]["environment"]["TAHOE_TRUSTED_PROXIES"]}
    ).trusted_proxies
    assert trusted == (f"{envoy_ip}/32",)
