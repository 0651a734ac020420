"""Verify `x-tahoe-identity` in a downstream Python service.

Behind Envoy, every allowed request carries the plain `x-tahoe-*` headers and a
short-lived ES256 JWT (`typ: tahoe-id+jwt`) signed by Tahoe Auth with the same facts,
its audience the upstream's name. A service that verifies the token need not trust
the network between Envoy and itself::

    from tahoe_auth.identity import IdentityVerifier, IdentityError

    verifier = IdentityVerifier("http://127.0.0.1:9201/.well-known/jwks.json", audience="transcription")
    try:
        identity = verifier.verify_headers(request.headers)
    except IdentityError:
        return 401
    jobs = store.list(tenant_id=identity.tenant_id)
    if not identity.allows("transcription:write"): ...

Keys come from the auth service's JWKS, cached for `jwks_ttl` seconds and refetched
(at most once per `min_refresh_interval`) when a token names an unknown key, so key
rotation needs no restart. Rotation is staged (a new key is published for the server's
TAHOE_SIGNING_KEY_PUBLISH_DELAY, 900 s, before it signs): keep `jwks_ttl` below that and
the new key is already cached when its first token arrives. Verified tokens are cached until they expire (the auth
service reuses one token per caller for a while), so most requests cost a dict lookup.
Checked: signature (ES256 only, keys only from the JWKS), `typ`, `iss`, `aud`, `exp`,
`iat`; and, when the plain headers are present, that they say the same thing.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from tahoe_auth.domain import tokens
from tahoe_auth.domain.permissions import PermissionSet

HEADER = "x-tahoe-identity"
PLAIN_HEADERS = {
    "x-tahoe-tenant-id": "tenant_id",
    "x-tahoe-subject": "subject",
    "x-tahoe-subject-type": "subject_type",
}

__all__ = ["HEADER", "Identity", "IdentityError", "IdentityVerifier"]


class IdentityError(Exception):
    """The request carries no valid identity token (answer 401)."""


@dataclass(frozen=True)
class Identity:
    tenant_id: str
    subject: str
    subject_type: str
    permissions: frozenset[str]
    expires_at: int
    token_id: str

    def allows(self, permission: str) -> bool:
        """Whether the granted permissions (wildcards included) cover `permission`."""
        return PermissionSet(self.permissions).allows(permission)


Fetch = Callable[[str, float], bytes]


def _http_get(url: str, timeout: float) -> bytes:
    if not url.startswith(("http://", "https://")):
        raise IdentityError(f"JWKS URL must be http(s): {url}")
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (scheme checked above)
        body: bytes = response.read()
    return body


class IdentityVerifier:
    def __init__(
        self,
        jwks_url: str,
        *,
        audience: str,
        issuer: str = "tahoe-auth",
        jwks_ttl: float = 300.0,
        min_refresh_interval: float = 1.0,
        timeout: float = 2.0,
        max_cached_tokens: int = 10_000,
        fetch: Fetch = _http_get,
    ) -> None:
        self._url = jwks_url
        self._audience = audience
        self._issuer = issuer
        self._jwks_ttl = jwks_ttl
        self._min_refresh = min_refresh_interval
        self._timeout = timeout
        self._max_cached = max_cached_tokens
        self._fetch = fetch
        self._lock = threading.Lock()
        self._ring: tokens.KeyRing | None = None
        self._fetched_at = float("-inf")
        self._verified: dict[str, Identity] = {}

    def verify_headers(self, headers: Mapping[str, str] | Any) -> Identity:
        """Verify the request's `x-tahoe-identity`; the plain headers must agree."""
        token = headers.get(HEADER) or ""
        identity = self.verify(token)
        for header, attribute in PLAIN_HEADERS.items():
            value = headers.get(header)
            if value is not None and value != getattr(identity, attribute):
                raise IdentityError(f"{header} does not match the identity token")
        return identity

    def verify(self, token: str) -> Identity:
        if not token:
            raise IdentityError(f"no {HEADER} header")
        cached = self._verified.get(token)
        if cached is not None and cached.expires_at > time.time():
            return cached
        claims = self._verify_claims(token)
        identity = Identity(
            tenant_id=claims.tenant_id,
            subject=claims.subject,
            subject_type=claims.subject_type,
            permissions=frozenset(claims.permissions),
            expires_at=claims.expires_at,
            token_id=claims.token_id,
        )
        with self._lock:
            if len(self._verified) >= self._max_cached:
                now = time.time()
                self._verified = {t: i for t, i in self._verified.items() if i.expires_at > now}
                if len(self._verified) >= self._max_cached:
                    self._verified.clear()
            self._verified[token] = identity
        return identity

    def _verify_claims(self, token: str) -> tokens.IdentityClaims:
        try:
            return tokens.verify_identity_token(token, self._keys(), issuer=self._issuer, audience=self._audience)
        except tokens.UnknownKey:
            ring = self._keys(refresh=True)
            try:
                return tokens.verify_identity_token(token, ring, issuer=self._issuer, audience=self._audience)
            except tokens.TokenRejected as exc:
                raise IdentityError(exc.detail) from None
        except tokens.TokenRejected as exc:
            raise IdentityError(exc.detail) from None

    def _keys(self, refresh: bool = False) -> tokens.KeyRing:
        with self._lock:
            age = time.monotonic() - self._fetched_at
            stale = self._ring is None or age >= self._jwks_ttl or (refresh and age >= self._min_refresh)
            if stale:
                try:
                    self._ring = parse_jwks(self._fetch(self._url, self._timeout))
                    self._fetched_at = time.monotonic()
                except (OSError, ValueError) as exc:
                    if self._ring is None:
                        raise IdentityError(f"cannot fetch the JWKS from {self._url}: {exc}") from None
            assert self._ring is not None
            return self._ring


def parse_jwks(body: bytes) -> tokens.KeyRing:
    """ES256 public keys of a JWKS document (other key types are ignored)."""
    keys = []
    for jwk in json.loads(body).get("keys", []):
        if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or not isinstance(jwk.get("kid"), str):
            continue
        public = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(jwk))
        if isinstance(public, ec.EllipticCurvePublicKey):
            keys.append(tokens.SigningKey(kid=jwk["kid"], public_key=public))
    return tokens.KeyRing.of(keys, None)
