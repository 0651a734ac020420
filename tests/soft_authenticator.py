"""A software WebAuthn authenticator plus the browser's part of the ceremonies.

It reads the JSON options the server sends (PublicKeyCredentialCreationOptionsJSON /
RequestOptionsJSON), builds clientDataJSON, authenticatorData, a "none" attestation
object and assertion signatures itself, and returns the JSON a browser's
`credential.toJSON()` would. Written from the WebAuthn spec, not from py_webauthn,
so that a test passing means two independent readings of it agree.

    auth = SoftAuthenticator("localhost", "http://localhost:8080")
    credential_json = auth.register(creation_options_json)
    assertion_json = auth.assert_(request_options_json)

Keyword arguments produce the wrong answers a test needs (no user verification, a
counter that goes back, another user handle); `origin` and `rp_id` set at
construction stand for a phishing page or a mismatched deployment.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

UP, UV, AT = 0x01, 0x04, 0x40
ES256, EDDSA, RS256 = -7, -8, -257
# An AAGUID the tests can recognise (authenticators with "none" attestation may send
# zeros; this one names itself).
AAGUID = bytes.fromhex("7a1e0000000000000000000000000001")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CeremonyRefused(Exception):
    """What a browser would reject with a DOMException (InvalidStateError, NotAllowedError)."""


@dataclass
class SoftCredential:
    credential_id: bytes
    alg: int
    private_key: Any
    user_handle: bytes
    sign_count: int = 0
    transports: list[str] = field(default_factory=lambda: ["internal"])

    def cose_public_key(self) -> bytes:
        public = self.private_key.public_key()
        if self.alg == ES256:
            numbers = public.public_numbers()
            return cbor2.dumps(
                {1: 2, 3: ES256, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}
            )
        if self.alg == EDDSA:
            from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

            return cbor2.dumps({1: 1, 3: EDDSA, -1: 6, -2: public.public_bytes(Encoding.Raw, PublicFormat.Raw)})
        numbers = public.public_numbers()
        return cbor2.dumps(
            {1: 3, 3: RS256, -1: numbers.n.to_bytes(256, "big"), -2: numbers.e.to_bytes(3, "big").lstrip(b"\0")}
        )

    def sign(self, data: bytes) -> bytes:
        if self.alg == ES256:
            return bytes(self.private_key.sign(data, ec.ECDSA(hashes.SHA256())))
        if self.alg == EDDSA:
            return bytes(self.private_key.sign(data))
        return bytes(self.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256()))


def _new_key(alg: int) -> Any:
    if alg == ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if alg == EDDSA:
        return ed25519.Ed25519PrivateKey.generate()
    if alg == RS256:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unsupported COSE algorithm {alg}")


class SoftAuthenticator:
    """One authenticator (it may hold several credentials) used from one origin."""

    def __init__(self, rp_id: str, origin: str, *, alg: int = ES256, counter: bool = True) -> None:
        self.rp_id = rp_id
        self.origin = origin
        self.alg = alg
        # Passkeys synced between devices report 0 forever; security keys count up.
        self.counter = counter
        self.credentials: dict[str, SoftCredential] = {}

    # The ceremonies --------------------------------------------------------------

    def register(
        self,
        creation_options_json: str,
        *,
        user_verified: bool = True,
        challenge: str | None = None,
        credential_id: bytes | None = None,
    ) -> str:
        """navigator.credentials.create(): a new discoverable credential for options' user."""
        options = json.loads(creation_options_json)
        algs = [p["alg"] for p in options.get("pubKeyCredParams", []) if p.get("type") == "public-key"]
        if self.alg not in algs:
            raise CeremonyRefused(f"the server does not accept COSE algorithm {self.alg} (offers {algs})")
        for excluded in options.get("excludeCredentials", []):
            if excluded["id"] in self.credentials:
                raise CeremonyRefused("InvalidStateError: this authenticator already holds an excluded credential")
        credential = SoftCredential(
            credential_id=secrets.token_bytes(16) if credential_id is None else credential_id,
            alg=self.alg,
            private_key=_new_key(self.alg),
            user_handle=unb64url(options["user"]["id"]),
        )
        client_data = self._client_data("webauthn.create", challenge or options["challenge"])
        auth_data = (
            self._auth_data_head(UP | AT | (UV if user_verified else 0), credential.sign_count)
            + AAGUID
            + struct.pack(">H", len(credential.credential_id))
            + credential.credential_id
            + credential.cose_public_key()
        )
        attestation_object = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        self.credentials[b64url(credential.credential_id)] = credential
        return json.dumps(
            {
                "id": b64url(credential.credential_id),
                "rawId": b64url(credential.credential_id),
                "type": "public-key",
                "authenticatorAttachment": "platform",
                "response": {
                    "clientDataJSON": b64url(client_data),
                    "attestationObject": b64url(attestation_object),
                    "transports": list(credential.transports),
                },
                "clientExtensionResults": {"credProps": {"rk": True}},
            }
        )

    def assert_(
        self,
        request_options_json: str,
        *,
        user_handle: str | None = None,
        user_verified: bool = True,
        sign_count: int | None = None,
        send_user_handle: bool = True,
        claimed_user_handle: str | None = None,
        challenge: str | None = None,
    ) -> str:
        """navigator.credentials.get(). The credential is the first of allowCredentials
        this authenticator holds; with none listed (discoverable), the one of
        `user_handle` (our user id) or else the last registered.

        `sign_count` forces the counter signed; `claimed_user_handle` puts another user's
        id in the response (an attacker's edit: the signature does not cover it)."""
        options = json.loads(request_options_json)
        credential = self._choose(options.get("allowCredentials", []), user_handle)
        if self.counter:
            credential.sign_count += 1
        count = credential.sign_count if sign_count is None else sign_count
        client_data = self._client_data("webauthn.get", challenge or options["challenge"])
        auth_data = self._auth_data_head(UP | (UV if user_verified else 0), count)
        signature = credential.sign(auth_data + hashlib.sha256(client_data).digest())
        response: dict[str, Any] = {
            "clientDataJSON": b64url(client_data),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(signature),
        }
        if send_user_handle:
            handle = credential.user_handle if claimed_user_handle is None else claimed_user_handle.encode()
            response["userHandle"] = b64url(handle)
        return json.dumps(
            {
                "id": b64url(credential.credential_id),
                "rawId": b64url(credential.credential_id),
                "type": "public-key",
                "authenticatorAttachment": "platform",
                "response": response,
                "clientExtensionResults": {},
            }
        )

    # Parts -----------------------------------------------------------------------

    def _choose(self, allow: list[dict[str, Any]], user_handle: str | None) -> SoftCredential:
        if allow:
            for descriptor in allow:
                if descriptor["id"] in self.credentials:
                    return self.credentials[descriptor["id"]]
            raise CeremonyRefused("NotAllowedError: none of allowCredentials is on this authenticator")
        held = list(self.credentials.values())
        if user_handle is not None:
            held = [c for c in held if c.user_handle == user_handle.encode()]
        if not held:
            raise CeremonyRefused("NotAllowedError: no discoverable credential for this request")
        return held[-1]

    def _client_data(self, kind: str, challenge: str) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": False},
            separators=(",", ":"),
        ).encode()

    def _auth_data_head(self, flags: int, sign_count: int) -> bytes:
        return hashlib.sha256(self.rp_id.encode()).digest() + bytes([flags]) + struct.pack(">I", sign_count)
