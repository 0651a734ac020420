"""tahoe_auth.identity: what a downstream service checks in x-tahoe-identity."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from tahoe_auth.domain import tokens
from tahoe_auth.identity import IdentityError, IdentityVerifier

ISSUER, AUDIENCE = "tahoe-auth", "transcription"


def claims(**changes: object) -> tokens.IdentityClaims:
    now = int(time.time())
    base: dict[str, object] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "tenant_id": "t1",
        "subject": "u1",
        "subject_type": "user",
        "permissions": ("transcription:*",),
        "issued_at": now,
        "expires_at": now + 60,
    }
    return tokens.IdentityClaims(**{**base, **changes})  # type: ignore[arg-type]


class Jwks:
    def __init__(self, *keys: tokens.SigningKey) -> None:
        self.keys = list(keys)
        self.fetches = 0

    def __call__(self, url: str, timeout: float) -> bytes:
        self.fetches += 1
        return json.dumps({"keys": [k.public_jwk for k in self.keys]}).encode()


@pytest.fixture
def key() -> tokens.SigningKey:
    return tokens.generate_key()


def ring(key: tokens.SigningKey) -> tokens.KeyRing:
    return tokens.KeyRing.of([key], key.kid)


def verifier(jwks: Jwks, audience: str = AUDIENCE) -> IdentityVerifier:
    return IdentityVerifier("http://auth/jwks", audience=audience, issuer=ISSUER, fetch=jwks)


def test_a_valid_token_yields_its_facts_and_is_cached(key: tokens.SigningKey) -> None:
    jwks = Jwks(key)
    v = verifier(jwks)
    token = tokens.issue_identity_token(ring(key), claims())
    identity = v.verify(token)
    assert (identity.tenant_id, identity.subject, identity.subject_type) == ("t1", "u1", "user")
    assert identity.allows("transcription:write") and not identity.allows("users:read")
    assert v.verify(token) is identity
    assert jwks.fetches == 1


@pytest.mark.parametrize(
    "change",
    [
        {"audience": "billing"},
        {"issuer": "someone-else"},
        {"issued_at": 1, "expires_at": 100},
    ],
)
def test_wrong_audience_issuer_or_expired_is_refused(key: tokens.SigningKey, change: dict[str, object]) -> None:
    token = tokens.issue_identity_token(ring(key), claims(**change))
    with pytest.raises(IdentityError):
        verifier(Jwks(key)).verify(token)


def test_access_tokens_and_foreign_signatures_are_refused(key: tokens.SigningKey) -> None:
    access, _ = tokens.issue_access_token(
        ring(key),
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="u1",
        tenant_id="t1",
        subject_type="user",
        session_id="s",
        now=int(time.time()),
        ttl=60,
    )
    with pytest.raises(IdentityError, match="token type"):
        verifier(Jwks(key)).verify(access)
    stranger = tokens.generate_key()
    forged = tokens.issue_identity_token(tokens.KeyRing.of([stranger], stranger.kid), claims())
    with pytest.raises(IdentityError):
        verifier(Jwks(key)).verify(forged)
    unsigned = jwt.encode(claims().to_payload(), None, algorithm="none", headers={"typ": tokens.IDENTITY_TOKEN_TYPE})
    with pytest.raises(IdentityError, match="algorithm"):
        verifier(Jwks(key)).verify(unsigned)
    with pytest.raises(IdentityError):
        verifier(Jwks(key)).verify("")


def test_a_rotated_key_is_fetched_once_not_per_request(key: tokens.SigningKey) -> None:
    jwks = Jwks(key)
    v = verifier(jwks)
    v.verify(tokens.issue_identity_token(ring(key), claims()))
    new = tokens.generate_key()
    jwks.keys.append(new)
    v._fetched_at -= 2  # past the minimum refresh interval
    assert v.verify(tokens.issue_identity_token(ring(new), claims(subject="u2"))).subject == "u2"
    assert jwks.fetches == 2
    stranger = tokens.generate_key()
    for _ in range(5):
        with pytest.raises(IdentityError):
            v.verify(tokens.issue_identity_token(ring(stranger), claims(subject="u3")))
    assert jwks.fetches == 2


def test_plain_headers_must_agree_with_the_token(key: tokens.SigningKey) -> None:
    token = tokens.issue_identity_token(ring(key), claims())
    v = verifier(Jwks(key))
    headers = {"x-tahoe-identity": token, "x-tahoe-tenant-id": "t1", "x-tahoe-subject": "u1"}
    assert v.verify_headers(headers).tenant_id == "t1"
    with pytest.raises(IdentityError, match="x-tahoe-tenant-id"):
        v.verify_headers({**headers, "x-tahoe-tenant-id": "t2"})
    with pytest.raises(IdentityError, match="no x-tahoe-identity"):
        v.verify_headers({"x-tahoe-tenant-id": "t1"})


def test_an_unreachable_jwks_is_an_identity_error() -> None:
    def down(url: str, timeout: float) -> bytes:
        raise OSError("connection refused")

    with pytest.raises(IdentityError, match="cannot fetch"):
        IdentityVerifier("http://auth/jwks", audience=AUDIENCE, fetch=down).verify("a.b.c")
