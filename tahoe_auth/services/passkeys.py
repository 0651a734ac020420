"""WebAuthn ceremonies (passkeys) on top of py_webauthn.

The library does the verification (clientDataJSON, RP ID hash, flags, COSE signature,
sign counter); this module fixes our choices and turns every way a credential can be
wrong into one of two answers: InvalidArgument when the JSON is not a credential at
all, MfaCodeInvalid when it is one that does not verify. The real reason goes to the
log, never to the caller, and never the credential itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import parse_authentication_credential_json, parse_registration_credential_json
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import InvalidJSONStructure, WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from tahoe_auth.config import Settings
from tahoe_auth.domain.errors import InvalidArgument, MfaCodeInvalid

log = logging.getLogger(__name__)

# Attestation objects with certificate chains run to a few kilobytes; anything near
# this is not a credential, and json.loads need not see it.
MAX_CREDENTIAL_JSON = 64 * 1024
# WebAuthn Level 3, 7.1: longer credential ids are refused.
MAX_CREDENTIAL_ID = 1023
# The browser's prompt may stay open as long as the challenge behind it lives.
DEFAULT_TIMEOUT_MS = 5 * 60 * 1000

ALGORITHMS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_TRANSPORTS = {t.value: t for t in AuthenticatorTransport}


@dataclass(frozen=True)
class StoredPasskey:
    credential_id: str  # base64url, no padding
    public_key: bytes  # COSE key as returned at registration
    sign_count: int
    transports: tuple[str, ...] = ()


@dataclass(frozen=True)
class NewPasskey:
    credential_id: str
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]
    aaguid: str


@dataclass(frozen=True)
class Assertion:
    credential_id: str  # base64url of rawId
    user_handle: str  # decoded userHandle (our user id, utf-8), "" if absent


class Passkeys:
    def __init__(
        self, rp_id: str, rp_name: str, origins: Sequence[str], *, timeout_ms: int = DEFAULT_TIMEOUT_MS
    ) -> None:
        if not origins:
            raise ValueError("at least one origin is needed")
        self.rp_id = rp_id
        self.rp_name = rp_name
        self.origins = list(origins)
        self.timeout_ms = timeout_ms

    @classmethod
    def from_settings(cls, settings: Settings) -> Passkeys:
        return cls(settings.webauthn_rp_id, settings.webauthn_rp_name, settings.webauthn_origins)

    def new_challenge(self) -> str:
        return _b64encode(secrets.token_bytes(32))

    def creation_options(
        self,
        challenge: str,
        *,
        user_id: str,
        user_name: str,
        display_name: str,
        exclude: Sequence[StoredPasskey],
    ) -> str:
        if not 0 < len(user_id.encode()) <= 64:
            raise ValueError("a WebAuthn user handle is 1 to 64 bytes")  # browsers refuse others
        options = generate_registration_options(
            rp_id=self.rp_id,
            rp_name=self.rp_name,
            user_id=user_id.encode(),
            user_name=user_name,
            user_display_name=display_name or user_name,
            challenge=_b64decode(challenge),
            timeout=self.timeout_ms,
            attestation=AttestationConveyancePreference.NONE,
            # Discoverable credentials: the passwordless sign-in names no user, so the
            # authenticator must find the credential (and our user id) by itself.
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=[_descriptor(p) for p in exclude],
            supported_pub_key_algs=ALGORITHMS,
        )
        return options_to_json(options)

    def verify_registration(
        self, challenge: str, credential_json: str, *, field: str = "credential_json"
    ) -> NewPasskey:
        credential = _parse_registration(credential_json, field)
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=_b64decode(challenge),
                expected_rp_id=self.rp_id,
                expected_origin=self.origins,
                require_user_verification=False,  # "preferred" at registration
                supported_pub_key_algs=ALGORITHMS,
            )
            # The id the browser reports is the one later assertions will carry: it
            # must be the attested one, of the spec's size (the library checks neither).
            if verified.credential_id != credential.raw_id:
                raise ValueError("rawId is not the attested credential id")
            if len(verified.credential_id) > MAX_CREDENTIAL_ID:
                raise ValueError(f"credential id of {len(verified.credential_id)} bytes")
        except Exception as exc:
            # Broad on purpose: past parsing, whatever the library (or cryptography,
            # cbor2 beneath it) raises means "this credential does not verify".
            log.info("passkey registration refused (credential %s): %s", _short(credential.id), _reason(exc))
            raise MfaCodeInvalid() from None
        transports = tuple(t.value for t in credential.response.transports or ())
        return NewPasskey(
            credential_id=_b64encode(verified.credential_id),
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            transports=transports,
            aaguid=verified.aaguid,
        )

    def request_options(self, challenge: str, allow: Sequence[StoredPasskey], *, passwordless: bool) -> str:
        """Options for navigator.credentials.get(). Passwordless names no credential
        (the user is not known yet, and the list would say which accounts exist)."""
        options = generate_authentication_options(
            rp_id=self.rp_id,
            challenge=_b64decode(challenge),
            timeout=self.timeout_ms,
            allow_credentials=[] if passwordless else [_descriptor(p) for p in allow],
            user_verification=(
                UserVerificationRequirement.REQUIRED if passwordless else UserVerificationRequirement.PREFERRED
            ),
        )
        return options_to_json(options)

    def parse_assertion(self, credential_json: str, *, field: str = "passkey_credential_json") -> Assertion:
        """Which credential (and, for discoverable ones, which user) an assertion claims
        to be from, to look the stored passkey up before verify_assertion. Unverified."""
        credential = _parse_assertion(credential_json, field)
        return Assertion(_b64encode(credential.raw_id), _user_handle(credential, field))

    def verify_assertion(
        self,
        challenge: str,
        credential_json: str,
        stored: StoredPasskey,
        *,
        passwordless: bool,
        expected_user_id: str | None = None,
        field: str = "passkey_credential_json",
    ) -> int:
        """The new sign count, once the assertion verifies against `stored`.

        With `expected_user_id`, a userHandle in the assertion must name that user; a
        passwordless assertion must carry one (it is how the user was found)."""
        credential = _parse_assertion(credential_json, field)
        user_handle = _user_handle(credential, field)
        try:
            if _b64encode(credential.raw_id) != stored.credential_id:
                raise ValueError("rawId is not the stored credential's id")
            if expected_user_id is not None and (user_handle or passwordless) and user_handle != expected_user_id:
                raise ValueError("userHandle is not the expected user")
            # The library refuses a count that does not grow whenever either count is
            # non-zero (a possibly cloned authenticator); both zero means "no counter".
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=_b64decode(challenge),
                expected_rp_id=self.rp_id,
                expected_origin=self.origins,
                credential_public_key=stored.public_key,
                credential_current_sign_count=stored.sign_count,
                require_user_verification=passwordless,
            )
        except Exception as exc:
            log.info("passkey assertion refused (credential %s): %s", _short(credential.id), _reason(exc))
            raise MfaCodeInvalid() from None
        return verified.new_sign_count


def _parse_registration(credential_json: str, field: str) -> RegistrationCredential:
    value = _load(credential_json, field)
    with _malformed(field, "registration"):
        credential = parse_registration_credential_json(value)
    _check_id(credential.id, field, "registration")
    return credential


def _parse_assertion(credential_json: str, field: str) -> AuthenticationCredential:
    value = _load(credential_json, field)
    with _malformed(field, "assertion"):
        credential = parse_authentication_credential_json(value)
    _check_id(credential.id, field, "assertion")
    return credential


def _load(credential_json: str, field: str) -> Any:
    if not isinstance(credential_json, str) or not credential_json.strip():
        raise InvalidArgument(field, f"{field} is required")
    if len(credential_json) > MAX_CREDENTIAL_JSON:
        raise InvalidArgument(field, f"{field} is too long for a WebAuthn credential")
    try:
        return json.loads(credential_json)
    except (ValueError, RecursionError):
        raise InvalidArgument(field, f"{field} is not JSON") from None


@contextmanager
def _malformed(field: str, what: str) -> Iterator[None]:
    try:
        yield
    except InvalidJSONStructure as exc:
        raise InvalidArgument(field, f"{field} is not a WebAuthn {what} credential: {exc}") from None
    except (WebAuthnException, ValueError):
        # The library's one other parse failure: a field that is not base64url.
        raise InvalidArgument(field, f"{field} is not a WebAuthn {what} credential: bad base64url") from None


def _check_id(credential_id: str, field: str, what: str) -> None:
    # Also keeps the id (which the refusal log lines name) free of anything but base64url.
    if not credential_id or not _BASE64URL.fullmatch(credential_id):
        raise InvalidArgument(field, f"{field} is not a WebAuthn {what} credential: id is not base64url")


def _user_handle(credential: AuthenticationCredential, field: str) -> str:
    handle = credential.response.user_handle
    if not handle:
        return ""
    try:
        return handle.decode()
    except UnicodeDecodeError:
        raise InvalidArgument(field, f"{field} has a userHandle that is not one of ours") from None


def _descriptor(passkey: StoredPasskey) -> PublicKeyCredentialDescriptor:
    transports = [_TRANSPORTS[t] for t in passkey.transports if t in _TRANSPORTS]
    return PublicKeyCredentialDescriptor(id=_b64decode(passkey.credential_id), transports=transports or None)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None


def _short(credential_id: str) -> str:
    return credential_id[:16] + ("..." if len(credential_id) > 16 else "")


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
