"""Configuration from the environment (TRANSCRIPTION_* and the auth service's TAHOE_*)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    addr: str = "127.0.0.1:9300"
    database_url: str = "sqlite:///var/transcription.db"
    jwks_url: str = "http://127.0.0.1:9201/.well-known/jwks.json"
    issuer: str = "tahoe-auth"
    # The name Envoy's routes give this upstream: the identity token's audience.
    audience: str = "transcription"
    # The tenant that owns rows created before the service was multi-tenant.
    legacy_tenant_id: str = ""
    # Test aid: append one JSON line per request received (never set in production).
    journal: str = ""
    # Usage reporting to Tahoe Auth's UsageService (off unless client credentials are set).
    auth_grpc_target: str = "127.0.0.1:9200"
    client_id: str = ""
    client_secret: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        return cls(
            addr=env.get("TRANSCRIPTION_ADDR") or cls.addr,
            database_url=env.get("TRANSCRIPTION_DATABASE_URL") or cls.database_url,
            jwks_url=env.get("TAHOE_JWKS_URL") or cls.jwks_url,
            issuer=env.get("TAHOE_ISSUER") or cls.issuer,
            audience=env.get("TRANSCRIPTION_AUDIENCE") or cls.audience,
            legacy_tenant_id=env.get("TRANSCRIPTION_LEGACY_TENANT_ID", ""),
            journal=env.get("TRANSCRIPTION_JOURNAL", ""),
            auth_grpc_target=env.get("TAHOE_GRPC_TARGET") or cls.auth_grpc_target,
            client_id=env.get("TRANSCRIPTION_CLIENT_ID", ""),
            client_secret=env.get("TRANSCRIPTION_CLIENT_SECRET", ""),
        )
