"""Access tokens: ES256 JWTs with a `kid`, verified against an allowlist.

Verification never reads `jku`, `x5u` or `jwk` headers: keys come only from the key
ring, which the server loads from its own database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from tahoe_auth.domain.errors import Unauthenticated

ALGORITHM = "ES256"
ACCESS_TOKEN_TYPE = "at+jwt"
IDENTITY_TOKEN_TYPE = "tahoe-id+jwt"
CLOCK_SKEW_SECONDS = 5


class TokenRejected(Unauthenticated):
    """A token failed verification. `detail` says why, for logs; callers see one message."""

    def __init__(self, detail: str) -> None:
        super().__init__("access token is invalid or expired")
        self.detail = detail


class UnknownKey(TokenRejected):
    def __init__(self, kid: str) -> None:
        super().__init__(f"unknown key id {kid!r}")
        self.kid = kid


@dataclass(frozen=True)
class SigningKey:
    kid: str
    public_key: ec.EllipticCurvePublicKey
    private_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)

    @property
    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.public_key))
        jwk.update(kid=self.kid, use="sig", alg=ALGORITHM)
        return jwk


def generate_key() -> SigningKey:
    private = ec.generate_private_key(ec.SECP256R1())
    return SigningKey(kid=uuid.uuid4().hex[:16], public_key=private.public_key(), private_key=private)


@dataclass(frozen=True)
class KeyRing:
    """Verification keys by kid, and the one key that signs. Immutable: swap whole rings."""

    keys: Mapping[str, SigningKey]
    active_kid: str | None

    @classmethod
    def of(cls, keys: Iterable[SigningKey], active_kid: str | None) -> KeyRing:
        return cls(keys={k.kid: k for k in keys}, active_kid=active_kid)

    @property
    def signing_key(self) -> SigningKey:
        if self.active_kid is None or self.keys[self.active_kid].private_key is None:
            raise RuntimeError("no active signing key (`tahoe-auth serve` makes one at start)")
        return self.keys[self.active_kid]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk for k in self.keys.values()]}


@dataclass(frozen=True)
class AccessClaims:
    issuer: str
    audience: str
    subject: str
    tenant_id: str
    subject_type: str
    session_id: str
    token_id: str
    issued_at: int
    expires_at: int
    key_id: str = ""
    """The `kid` it was verified with (not a claim): a cached verification holds only
    while that key is still published."""
    # How the user signed in (RFC 8176 values) and when the session last passed a
    # second factor (Unix time, 0 for never): what step-up reads.
    amr: tuple[str, ...] = ()
    mfa_at: int = 0
    # A restricted token (`rst`) may do only what its restriction names; an enrollment
    # token also names the login challenge (`chl`) that enrolling answers.
    restriction: str = ""
    challenge_id: str = ""

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": self.subject,
            "tid": self.tenant_id,
            "sty": self.subject_type,
            "jti": self.token_id,
            "iat": self.issued_at,
            "exp": self.expires_at,
        }
        if self.session_id:
            payload["sid"] = self.session_id
        if self.amr:
            payload["amr"] = list(self.amr)
        if self.mfa_at:
            payload["mfa_at"] = self.mfa_at
        if self.restriction:
            payload["rst"] = self.restriction
        if self.challenge_id:
            payload["chl"] = self.challenge_id
        return payload


def sign(payload: Mapping[str, Any], key: SigningKey, token_type: str) -> str:
    if key.private_key is None:
        raise RuntimeError(f"key {key.kid} cannot sign")
    return jwt.encode(dict(payload), key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": token_type})


def issue_access_token(
    ring: KeyRing,
    *,
    issuer: str,
    audience: str,
    subject: str,
    tenant_id: str,
    subject_type: str,
    session_id: str,
    now: int,
    ttl: int,
    amr: tuple[str, ...] = (),
    mfa_at: int = 0,
    restriction: str = "",
    challenge_id: str = "",
) -> tuple[str, AccessClaims]:
    claims = AccessClaims(
        issuer=issuer,
        audience=audience,
        subject=subject,
        tenant_id=tenant_id,
        subject_type=subject_type,
        session_id=session_id,
        token_id=uuid.uuid4().hex,
        issued_at=now,
        expires_at=now + ttl,
        key_id=ring.signing_key.kid,
        amr=amr,
        mfa_at=mfa_at,
        restriction=restriction,
        challenge_id=challenge_id,
    )
    return sign(claims.to_payload(), ring.signing_key, ACCESS_TOKEN_TYPE), claims


def decode_verified(token: str, ring: KeyRing, *, token_type: str, issuer: str, audience: str) -> dict[str, Any]:
    """Verify signature, type, issuer, audience and times (against the wall clock)."""
    return _verified(token, ring, token_type=token_type, issuer=issuer, audience=audience)[1]


def _verified(token: str, ring: KeyRing, *, token_type: str, issuer: str, audience: str) -> tuple[str, dict[str, Any]]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenRejected(f"malformed token: {exc}") from None
    if header.get("alg") != ALGORITHM:
        raise TokenRejected(f"algorithm {header.get('alg')!r} is not allowed")
    if header.get("typ") != token_type:
        raise TokenRejected(f"token type {header.get('typ')!r} is not {token_type!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in ring.keys:
        raise UnknownKey(str(kid))
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            ring.keys[kid].public_key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": ["iss", "aud", "sub", "iat", "exp", "jti"], "verify_iat": True},
        )
    except jwt.PyJWTError as exc:
        raise TokenRejected(f"{type(exc).__name__}: {exc}") from None
    return kid, payload


def verify_access_token(token: str, ring: KeyRing, *, issuer: str, audience: str) -> AccessClaims:
    kid, payload = _verified(token, ring, token_type=ACCESS_TOKEN_TYPE, issuer=issuer, audience=audience)
    tenant_id, subject_type = payload.get("tid"), payload.get("sty")
    if not isinstance(tenant_id, str) or subject_type not in ("user", "service"):
        raise TokenRejected("missing tenant or subject type claim")
    amr, mfa_at = payload.get("amr", []), payload.get("mfa_at", 0)
    if not isinstance(amr, list) or not all(isinstance(a, str) for a in amr) or not isinstance(mfa_at, int):
        raise TokenRejected("malformed amr or mfa_at claim")
    return AccessClaims(
        issuer=payload["iss"],
        audience=audience,
        subject=str(payload["sub"]),
        tenant_id=tenant_id,
        subject_type=subject_type,
        session_id=str(payload.get("sid", "")),
        token_id=str(payload["jti"]),
        issued_at=int(payload["iat"]),
        expires_at=int(payload["exp"]),
        key_id=kid,
        amr=tuple(amr),
        mfa_at=mfa_at,
        restriction=str(payload.get("rst", "")),
        challenge_id=str(payload.get("chl", "")),
    )


@dataclass(frozen=True)
class IdentityClaims:
    """The verified facts ext_authz hands an upstream, signed (`x-tahoe-identity`)."""

    issuer: str
    audience: str
    tenant_id: str
    subject: str
    subject_type: str
    permissions: tuple[str, ...]
    issued_at: int
    expires_at: int
    token_id: str = ""

    def to_payload(self) -> dict[str, Any]:
        return {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": self.subject,
            "tid": self.tenant_id,
            "sty": self.subject_type,
            "perms": list(self.permissions),
            "jti": self.token_id or uuid.uuid4().hex,
            "iat": self.issued_at,
            "exp": self.expires_at,
        }


def issue_identity_token(ring: KeyRing, claims: IdentityClaims) -> str:
    return sign(claims.to_payload(), ring.signing_key, IDENTITY_TOKEN_TYPE)


def verify_identity_token(token: str, ring: KeyRing, *, issuer: str, audience: str) -> IdentityClaims:
    payload = decode_verified(token, ring, token_type=IDENTITY_TOKEN_TYPE, issuer=issuer, audience=audience)
    tenant_id, subject_type, perms = payload.get("tid"), payload.get("sty"), payload.get("perms", [])
    if not isinstance(tenant_id, str) or not isinstance(subject_type, str):
        raise TokenRejected("missing tenant or subject type claim")
    if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
        raise TokenRejected("perms claim is not a list of strings")
    return IdentityClaims(
        issuer=payload["iss"],
        audience=audience,
        tenant_id=tenant_id,
        subject=str(payload["sub"]),
        subject_type=subject_type,
        permissions=tuple(perms),
        issued_at=int(payload["iat"]),
        expires_at=int(payload["exp"]),
        token_id=str(payload["jti"]),
    )
