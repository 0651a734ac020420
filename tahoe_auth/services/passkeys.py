"""WebAuthn ceremonies (placeholder until the py_webauthn implementation lands)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tahoe_auth.config import Settings
from tahoe_auth.domain import crypto
from tahoe_auth.domain.errors import InvalidArgument, MfaCodeInvalid


@dataclass(frozen=True)
class StoredPasskey:
    credential_id: str
    public_key: bytes
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
    credential_id: str
    user_handle: str


class Passkeys:
    def __init__(self, rp_id: str, rp_name: str, origins: Sequence[str]) -> None:
        self.rp_id, self.rp_name, self.origins = rp_id, rp_name, tuple(origins)

    @classmethod
    def from_settings(cls, settings: Settings) -> Passkeys:
        return cls("localhost", "Tahoe Auth", ("http://localhost:8080",))

    def new_challenge(self) -> str:
        return crypto.random_token(32)

    def creation_options(
        self, challenge: str, *, user_id: str, user_name: str, display_name: str, exclude: Sequence[StoredPasskey]
    ) -> str:
        return "{}"

    def verify_registration(self, challenge: str, credential_json: str) -> NewPasskey:
        raise MfaCodeInvalid()

    def request_options(self, challenge: str, allow: Sequence[StoredPasskey], *, passwordless: bool) -> str:
        return "{}"

    def parse_assertion(self, credential_json: str) -> Assertion:
        raise InvalidArgument("passkey_credential_json", "passkeys are not available yet")

    def verify_assertion(
        self, challenge: str, credential_json: str, stored: StoredPasskey, *, passwordless: bool
    ) -> int:
        raise MfaCodeInvalid()
