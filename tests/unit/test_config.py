from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tahoe_auth.config import ConfigError, Settings

KEY = base64.urlsafe_b64encode(b"k" * 32).decode()


def test_embedded_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({"TAHOE_VAR_DIR": str(tmp_path)})
    assert settings.grpc_addr == "127.0.0.1:9200" and settings.http_addr == "127.0.0.1:9201"
    assert settings.database_url == f"sqlite:///{tmp_path / 'tahoe.db'}"
    assert settings.redis_url is None and settings.grpc_reflection
    assert len(settings.master_key) == 32
    # The generated key is kept: a restart reads the same one.
    assert Settings.from_env({"TAHOE_VAR_DIR": str(tmp_path)}).master_key == settings.master_key
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600


def test_postgres_needs_a_master_key() -> None:
    with pytest.raises(ConfigError, match="TAHOE_MASTER_KEY is required"):
        Settings.from_env({"TAHOE_DATABASE_URL": "postgresql://u@h/db"})
    settings = Settings.from_env({"TAHOE_DATABASE_URL": "postgresql://u@h/db", "TAHOE_MASTER_KEY": KEY})
    assert settings.database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TAHOE_GRPC_ADDR": "nowhere"}, "TAHOE_GRPC_ADDR"),
        ({"TAHOE_GRPC_REFLECTION": "maybe"}, "TAHOE_GRPC_REFLECTION"),
        ({"TAHOE_LOG_FORMAT": "xml"}, "TAHOE_LOG_FORMAT"),
        ({"TAHOE_REDIS_URL": "http://x"}, "TAHOE_REDIS_URL"),
        ({"TAHOE_DATABASE_URL": "mysql://x"}, "TAHOE_DATABASE_URL"),
        ({"TAHOE_MASTER_KEY": "c2hvcnQ="}, "32 bytes"),
        ({"TAHOE_ACCESS_TOKEN_TTL": "ten"}, "not an integer"),
        ({"TAHOE_ARGON2_MEMORY_KIB": "1024"}, "outside"),
        ({"TAHOE_SESSION_IDLE_TTL": "7200", "TAHOE_SESSION_ABSOLUTE_TTL": "3600"}, "ABSOLUTE"),
        ({"TAHOE_SIGNING_KEY_PUBLISH_DELAY": "300"}, "TAHOE_JWKS_MAX_AGE must be shorter"),
        ({"TAHOE_SIGNING_KEY_PUBLISH_DELAY": "60", "TAHOE_JWKS_MAX_AGE": "60"}, "TAHOE_JWKS_MAX_AGE must be shorter"),
        ({"TAHOE_SIGNING_KEY_PUBLISH_DELAY": "0"}, "outside"),
        ({"TAHOE_REDIS_TIMEOUT": "fast"}, "TAHOE_REDIS_TIMEOUT.*not a number"),
        ({"TAHOE_REDIS_TIMEOUT": "0"}, "TAHOE_REDIS_TIMEOUT.*outside"),
        ({"TAHOE_REDIS_TIMEOUT": "nan"}, "TAHOE_REDIS_TIMEOUT.*outside"),
        ({"TAHOE_WEBAUTHN_RP_ID": "127.0.0.1"}, "TAHOE_WEBAUTHN_RP_ID='127.0.0.1' is an IP address"),
        ({"TAHOE_WEBAUTHN_RP_ID": "[::1]"}, "TAHOE_WEBAUTHN_RP_ID.*is an IP address"),
        ({"TAHOE_WEBAUTHN_RP_ID": "https://example.com"}, "TAHOE_WEBAUTHN_RP_ID.*is not a domain name"),
        ({"TAHOE_WEBAUTHN_RP_ID": "example..com"}, "TAHOE_WEBAUTHN_RP_ID.*is not a domain name"),
        ({"TAHOE_WEBAUTHN_RP_ID": "-example.com"}, "TAHOE_WEBAUTHN_RP_ID.*is not a domain name"),
        ({"TAHOE_WEBAUTHN_RP_ID": "10.0.0"}, "TAHOE_WEBAUTHN_RP_ID.*is not a domain name"),
        ({"TAHOE_WEBAUTHN_RP_ID": "a" * 64 + ".com"}, "TAHOE_WEBAUTHN_RP_ID.*is not a domain name"),
        ({"TAHOE_WEBAUTHN_ORIGINS": "http://localhost:8080/console"}, "TAHOE_WEBAUTHN_ORIGINS.*no path"),
        ({"TAHOE_WEBAUTHN_ORIGINS": "http://localhost:8080?x=1"}, "TAHOE_WEBAUTHN_ORIGINS.*no path"),
        ({"TAHOE_WEBAUTHN_ORIGINS": "http://me@localhost:8080"}, "TAHOE_WEBAUTHN_ORIGINS.*no path"),
        ({"TAHOE_WEBAUTHN_ORIGINS": "localhost:8080"}, "TAHOE_WEBAUTHN_ORIGINS.*not an http\\(s\\) origin"),
        ({"TAHOE_WEBAUTHN_ORIGINS": "ftp://localhost"}, "TAHOE_WEBAUTHN_ORIGINS.*not an http\\(s\\) origin"),
        ({"TAHOE_WEBAUTHN_ORIGINS": "http://localhost:99999"}, "TAHOE_WEBAUTHN_ORIGINS.*not an origin"),
        (
            {"TAHOE_WEBAUTHN_RP_ID": "example.com", "TAHOE_WEBAUTHN_ORIGINS": "http://example.com"},
            "TAHOE_WEBAUTHN_ORIGINS: 'http://example.com' uses http: WebAuthn needs https except on localhost",
        ),
        ({"TAHOE_WEBAUTHN_ORIGINS": "https://localhost.evil.com"}, "not on TAHOE_WEBAUTHN_RP_ID='localhost'"),
        (
            {"TAHOE_WEBAUTHN_RP_ID": "example.com", "TAHOE_WEBAUTHN_ORIGINS": "https://notexample.com"},
            "not on TAHOE_WEBAUTHN_RP_ID='example.com'",
        ),
        (
            {"TAHOE_WEBAUTHN_RP_ID": "example.com"},
            "'http://localhost:8080' is not on.*the default: set TAHOE_WEBAUTHN_ORIGINS",
        ),
    ],
)
def test_bad_configuration_is_one_clear_line(env: dict[str, str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Settings.from_env({"TAHOE_VAR_DIR": str(tmp_path), **env})
    assert "\n" not in str(info.value)


def test_redis_timeout_default_and_override(tmp_path: Path) -> None:
    assert Settings.from_env({"TAHOE_VAR_DIR": str(tmp_path)}).redis_timeout == 0.25
    settings = Settings.from_env({"TAHOE_VAR_DIR": str(tmp_path), "TAHOE_REDIS_TIMEOUT": "0.1"})
    assert settings.redis_timeout == 0.1


def test_staged_rotation_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({"TAHOE_VAR_DIR": str(tmp_path)})
    assert (settings.jwks_max_age, settings.signing_key_publish_delay) == (300, 900)
    assert settings.signing_key_refresh_interval == 2
    short = Settings.from_env(
        {"TAHOE_VAR_DIR": str(tmp_path), "TAHOE_SIGNING_KEY_PUBLISH_DELAY": "2", "TAHOE_JWKS_MAX_AGE": "1"}
    )
    assert (short.jwks_max_age, short.signing_key_publish_delay) == (1, 2)


def test_reflection_can_be_turned_off(tmp_path: Path) -> None:
    assert not Settings.from_env({"TAHOE_VAR_DIR": str(tmp_path), "TAHOE_GRPC_REFLECTION": "false"}).grpc_reflection


def test_check_workers_default_to_one_and_need_redis(tmp_path: Path) -> None:
    assert Settings.from_env({"TAHOE_VAR_DIR": str(tmp_path)}).authz_workers == 1
    shared = {"TAHOE_VAR_DIR": str(tmp_path), "TAHOE_REDIS_URL": "redis://127.0.0.1:1/0", "TAHOE_AUTHZ_WORKERS": "3"}
    assert Settings.from_env(shared).authz_workers == 3
    with pytest.raises(ConfigError, match="TAHOE_AUTHZ_WORKERS=2 needs TAHOE_REDIS_URL") as info:
        Settings.from_env({"TAHOE_VAR_DIR": str(tmp_path), "TAHOE_AUTHZ_WORKERS": "2"})
    assert "\n" not in str(info.value)


def test_each_check_process_falls_back_to_its_share_of_the_limits(tmp_path: Path) -> None:
    """Without Redis every process limits alone: 3 instances x 2 Check processes share 60/min."""
    from tahoe_auth.app import build_limiter
    from tahoe_auth.domain.ratelimit import RateLimitSubject, parse_limits
    from tahoe_auth.services.tenant_config import TenantConfigCache
    from tahoe_auth.store.redis_store import RedisStore

    env = {
        "TAHOE_VAR_DIR": str(tmp_path),
        "TAHOE_REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens: every call fails at once
        "TAHOE_INSTANCE_COUNT": "3",
        "TAHOE_AUTHZ_WORKERS": "2",
    }
    settings = Settings.from_env(env)
    limits = parse_limits({"per_tenant": {"limit": 60, "period": 60}})
    store = RedisStore(settings.redis_url or "", timeout=0.05)
    try:
        limiter = build_limiter(settings, store, TenantConfigCache(lambda _tenant: None, limits))
        decision = limiter.check(RateLimitSubject(tenant_id="t"))
    finally:
        store.close()
    assert decision.degraded and decision.limit == 10


def test_webauthn_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({"TAHOE_VAR_DIR": str(tmp_path)})
    assert settings.webauthn_rp_id == "localhost"
    assert settings.webauthn_rp_name == "Tahoe Auth"
    assert settings.webauthn_origins == ("http://localhost:8080",)


def test_webauthn_origins_are_kept_as_browsers_write_them(tmp_path: Path) -> None:
    # clientDataJSON's origin is compared as a string: lowercase, no default port.
    settings = Settings.from_env(
        {
            "TAHOE_VAR_DIR": str(tmp_path),
            "TAHOE_WEBAUTHN_RP_ID": "Example.COM",
            "TAHOE_WEBAUTHN_RP_NAME": "Example Sign-in",
            "TAHOE_WEBAUTHN_ORIGINS": " HTTPS://Auth.Example.com:443 ,, https://example.com:8443",
        }
    )
    assert settings.webauthn_rp_id == "example.com"
    assert settings.webauthn_rp_name == "Example Sign-in"
    assert settings.webauthn_origins == ("https://auth.example.com", "https://example.com:8443")
    local = Settings.from_env({"TAHOE_VAR_DIR": str(tmp_path), "TAHOE_WEBAUTHN_ORIGINS": "http://app.localhost:80"})
    assert local.webauthn_origins == ("http://app.localhost",)
