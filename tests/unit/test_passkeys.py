"""WebAuthn ceremonies against a software authenticator (tests/soft_authenticator.py)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from tahoe_auth.config import Settings
from tahoe_auth.domain.errors import InvalidArgument, MfaCodeInvalid
from tahoe_auth.services.passkeys import Assertion, NewPasskey, Passkeys, StoredPasskey
from tests.soft_authenticator import EDDSA, ES256, RS256, CeremonyRefused, SoftAuthenticator, b64url, unb64url

RP_ID = "localhost"
ORIGIN = "http://localhost:8080"
USER = "usr_7f3a9c"


@pytest.fixture
def passkeys() -> Passkeys:
    return Passkeys(RP_ID, "Tahoe Auth", [ORIGIN, "http://localhost:5173"])


def register(
    passkeys: Passkeys, auth: SoftAuthenticator, user: str = USER, exclude: tuple[StoredPasskey, ...] = ()
) -> StoredPasskey:
    challenge = passkeys.new_challenge()
    options = passkeys.creation_options(
        challenge, user_id=user, user_name="ada@example.com", display_name="Ada", exclude=exclude
    )
    new = passkeys.verify_registration(challenge, auth.register(options))
    return StoredPasskey(new.credential_id, new.public_key, new.sign_count, new.transports)


def sign_in(
    passkeys: Passkeys, auth: SoftAuthenticator, stored: StoredPasskey, *, passwordless: bool = False, **kwargs: Any
) -> int:
    challenge = passkeys.new_challenge()
    options = passkeys.request_options(challenge, [stored], passwordless=passwordless)
    return passkeys.verify_assertion(challenge, auth.assert_(options, **kwargs), stored, passwordless=passwordless)


def edit(credential_json: str, change: Callable[[dict[str, Any]], None]) -> str:
    value = json.loads(credential_json)
    change(value)
    return json.dumps(value)


def flip_last_byte(text: str) -> str:
    raw = bytearray(unb64url(text))
    raw[-1] ^= 0x01
    return b64url(bytes(raw))


def flip_uv(authenticator_data: str) -> str:
    raw = bytearray(unb64url(authenticator_data))
    raw[32] ^= 0x04
    return b64url(bytes(raw))


# Registration ----------------------------------------------------------------------


@pytest.mark.parametrize("alg", [ES256, EDDSA, RS256])
def test_registration_then_sign_in(passkeys: Passkeys, alg: int) -> None:
    auth = SoftAuthenticator(RP_ID, ORIGIN, alg=alg)
    challenge = passkeys.new_challenge()
    options = passkeys.creation_options(
        challenge, user_id=USER, user_name="ada@example.com", display_name="Ada", exclude=()
    )
    new = passkeys.verify_registration(challenge, auth.register(options))
    assert isinstance(new, NewPasskey)
    [held] = auth.credentials.values()
    assert new.credential_id == b64url(held.credential_id) and "=" not in new.credential_id
    assert new.public_key == held.cose_public_key()
    assert new.sign_count == 0 and new.transports == ("internal",)
    assert new.aaguid == "7a1e0000-0000-0000-0000-000000000001"
    stored = StoredPasskey(new.credential_id, new.public_key, new.sign_count, new.transports)
    assert sign_in(passkeys, auth, stored) == 1
    assert sign_in(passkeys, auth, StoredPasskey(new.credential_id, new.public_key, 1), passwordless=True) == 2


def test_challenges_are_32_random_bytes_in_base64url(passkeys: Passkeys) -> None:
    challenges = {passkeys.new_challenge() for _ in range(50)}
    assert len(challenges) == 50
    for challenge in challenges:
        assert len(challenge) == 43 and "=" not in challenge and len(unb64url(challenge)) == 32


def test_creation_options(passkeys: Passkeys) -> None:
    challenge = passkeys.new_challenge()
    excluded = StoredPasskey(b64url(b"old-credential"), b"", 3, ("usb", "nfc", "smoke-signal"))
    options = json.loads(
        passkeys.creation_options(
            challenge, user_id=USER, user_name="ada@example.com", display_name="Ada L.", exclude=[excluded]
        )
    )
    assert options["rp"] == {"id": RP_ID, "name": "Tahoe Auth"}
    assert options["user"] == {"id": b64url(USER.encode()), "name": "ada@example.com", "displayName": "Ada L."}
    assert options["challenge"] == challenge
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["requireResidentKey"] is True
    assert options["authenticatorSelection"]["userVerification"] == "preferred"
    assert options["attestation"] == "none"
    assert [p["alg"] for p in options["pubKeyCredParams"]] == [ES256, EDDSA, RS256]
    # Unknown transports are dropped: browsers reject a descriptor naming one they do not know.
    assert options["excludeCredentials"] == [
        {"id": excluded.credential_id, "type": "public-key", "transports": ["usb", "nfc"]}
    ]


def test_credential_ids_longer_than_the_spec_allows_are_refused(passkeys: Passkeys) -> None:
    for length, accepted in ((1023, True), (1024, False)):
        challenge = passkeys.new_challenge()
        options = passkeys.creation_options(challenge, user_id=USER, user_name="a", display_name="", exclude=())
        credential = SoftAuthenticator(RP_ID, ORIGIN).register(options, credential_id=b"i" * length)
        if accepted:
            assert passkeys.verify_registration(challenge, credential).credential_id == b64url(b"i" * length)
        else:
            with pytest.raises(MfaCodeInvalid):
                passkeys.verify_registration(challenge, credential)


def test_user_ids_are_user_handles_of_at_most_64_bytes(passkeys: Passkeys) -> None:
    uuid_like = "0b7c3f4e-5d6a-4f1b-9c2d-8e7f6a5b4c3d"
    options = passkeys.creation_options(
        passkeys.new_challenge(), user_id=uuid_like, user_name="a", display_name="", exclude=()
    )
    assert unb64url(json.loads(options)["user"]["id"]) == uuid_like.encode()
    for bad in ("", "x" * 65):
        with pytest.raises(ValueError, match="1 to 64 bytes"):
            passkeys.creation_options(passkeys.new_challenge(), user_id=bad, user_name="a", display_name="", exclude=())


def test_excluded_credentials_stop_a_second_registration(passkeys: Passkeys) -> None:
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    stored = register(passkeys, auth)
    with pytest.raises(CeremonyRefused, match="InvalidStateError"):
        register(passkeys, auth, exclude=(stored,))
    # Another authenticator of the same user may still register.
    assert register(passkeys, SoftAuthenticator(RP_ID, ORIGIN), exclude=(stored,)).credential_id


def test_every_configured_origin_is_accepted(passkeys: Passkeys) -> None:
    stored = register(passkeys, SoftAuthenticator(RP_ID, "http://localhost:5173"))
    assert stored.credential_id


@pytest.mark.parametrize(
    ("auth", "why"),
    [
        (SoftAuthenticator(RP_ID, "http://localhost:8081"), "origin"),
        (SoftAuthenticator(RP_ID, "https://evil.example"), "origin"),
        (SoftAuthenticator("evil.example", ORIGIN), "RP ID hash"),
    ],
)
def test_registration_from_elsewhere_is_refused(
    passkeys: Passkeys, auth: SoftAuthenticator, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    challenge = passkeys.new_challenge()
    options = passkeys.creation_options(challenge, user_id=USER, user_name="a", display_name="", exclude=())
    credential = auth.register(options)
    with caplog.at_level(logging.INFO, logger="tahoe_auth.services.passkeys"), pytest.raises(MfaCodeInvalid):
        passkeys.verify_registration(challenge, credential)
    assert why in caplog.text
    # The log names the reason, not the credential.
    assert json.loads(credential)["response"]["attestationObject"] not in caplog.text


def test_registration_answering_another_challenge_is_refused(passkeys: Passkeys) -> None:
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    challenge = passkeys.new_challenge()
    options = passkeys.creation_options(challenge, user_id=USER, user_name="a", display_name="", exclude=())
    credential = auth.register(options, challenge=passkeys.new_challenge())
    with pytest.raises(MfaCodeInvalid):
        passkeys.verify_registration(challenge, credential)


def test_registration_without_user_verification_is_accepted(passkeys: Passkeys) -> None:
    # "preferred" at registration: a security key without a PIN still makes a second factor.
    challenge = passkeys.new_challenge()
    options = passkeys.creation_options(challenge, user_id=USER, user_name="a", display_name="", exclude=())
    new = passkeys.verify_registration(
        challenge, SoftAuthenticator(RP_ID, ORIGIN).register(options, user_verified=False)
    )
    assert new.credential_id


@pytest.mark.parametrize(
    "tamper",
    [
        # A different credential id than the attested one.
        lambda c: c.update(id=b64url(b"other"), rawId=b64url(b"other")),
        # Attested data cut short: the COSE key no longer parses.
        lambda c: c["response"].update(attestationObject=b64url(unb64url(c["response"]["attestationObject"])[:-20])),
        # A create() response's clientData relabelled: it must say webauthn.create.
        lambda c: c["response"].update(
            clientDataJSON=b64url(unb64url(c["response"]["clientDataJSON"]).replace(b".create", b".get"))
        ),
        # clientDataJSON that is not JSON.
        lambda c: c["response"].update(clientDataJSON=b64url(b"{not json")),
    ],
)
def test_tampered_registration_is_refused(passkeys: Passkeys, tamper: Callable[[dict[str, Any]], None]) -> None:
    challenge = passkeys.new_challenge()
    options = passkeys.creation_options(challenge, user_id=USER, user_name="a", display_name="", exclude=())
    credential = edit(SoftAuthenticator(RP_ID, ORIGIN).register(options), tamper)
    with pytest.raises(MfaCodeInvalid):
        passkeys.verify_registration(challenge, credential)


@pytest.mark.parametrize(
    ("credential_json", "message"),
    [
        ("", "is required"),
        ("{", "is not JSON"),
        ("[" * 100_000, "too long"),
        ("[" * 50_000, "is not JSON"),
        ("[]", "not a JSON object"),
        ('{"id": "abc"}', "missing required rawId"),
        ('{"id": "abc", "rawId": "abc", "type": "public-key"}', "missing required response"),
        (
            '{"id": "abc", "rawId": "abc", "type": "public-key", "response": {"clientDataJSON": "e30"}}',
            "missing required attestationObject",
        ),
        (
            '{"id": "abc", "rawId": "abc", "type": "password", "response": {"clientDataJSON": "e30",'
            ' "attestationObject": "oA"}}',
            "unexpected type",
        ),
        (
            '{"id": "a b", "rawId": "abc", "type": "public-key", "response": {"clientDataJSON": "e30",'
            ' "attestationObject": "oA"}}',
            "id is not base64url",
        ),
    ],
)
def test_malformed_registration_is_invalid_argument(passkeys: Passkeys, credential_json: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as info:
        passkeys.verify_registration(passkeys.new_challenge(), credential_json)
    assert info.value.field == "credential_json"
    assert "\n" not in info.value.message


# Authentication --------------------------------------------------------------------


def test_request_options(passkeys: Passkeys) -> None:
    stored = [
        StoredPasskey(b64url(b"one"), b"k", 0, ("internal", "hybrid")),
        StoredPasskey(b64url(b"two"), b"k", 4),
    ]
    challenge = passkeys.new_challenge()
    second_factor = json.loads(passkeys.request_options(challenge, stored, passwordless=False))
    assert second_factor["rpId"] == RP_ID and second_factor["challenge"] == challenge
    assert second_factor["userVerification"] == "preferred"
    assert second_factor["allowCredentials"] == [
        {"id": b64url(b"one"), "type": "public-key", "transports": ["internal", "hybrid"]},
        {"id": b64url(b"two"), "type": "public-key"},
    ]
    passwordless = json.loads(passkeys.request_options(challenge, stored, passwordless=True))
    assert passwordless["userVerification"] == "required"
    assert passwordless["allowCredentials"] == []


def test_passwordless_sign_in_finds_the_user(passkeys: Passkeys) -> None:
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    ada = register(passkeys, auth, user="usr_ada")
    register(passkeys, auth, user="usr_bob")
    challenge = passkeys.new_challenge()
    credential = auth.assert_(passkeys.request_options(challenge, [], passwordless=True), user_handle="usr_ada")
    assertion = passkeys.parse_assertion(credential)
    assert assertion == Assertion(ada.credential_id, "usr_ada")
    count = passkeys.verify_assertion(challenge, credential, ada, passwordless=True, expected_user_id="usr_ada")
    assert count == 1


def test_assertion_without_user_handle_parses_to_empty(passkeys: Passkeys) -> None:
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    stored = register(passkeys, auth)
    credential = auth.assert_(
        passkeys.request_options(passkeys.new_challenge(), [stored], passwordless=False), send_user_handle=False
    )
    assert passkeys.parse_assertion(credential) == Assertion(stored.credential_id, "")


def test_a_counter_that_stays_zero_is_accepted(passkeys: Passkeys) -> None:
    auth = SoftAuthenticator(RP_ID, ORIGIN, counter=False)
    stored = register(passkeys, auth)
    assert sign_in(passkeys, auth, stored) == 0
    assert sign_in(passkeys, auth, stored) == 0


@pytest.mark.parametrize(
    ("stored_count", "signed_count"),
    [(5, 5), (5, 4), (5, 0), (0, 0)],
)
def test_sign_counter_must_grow(passkeys: Passkeys, stored_count: int, signed_count: int) -> None:
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    new = register(passkeys, auth)
    stored = StoredPasskey(new.credential_id, new.public_key, stored_count)
    if stored_count == signed_count == 0:  # no counter at all: nothing to compare
        assert sign_in(passkeys, auth, stored, sign_count=0) == 0
        return
    with pytest.raises(MfaCodeInvalid):
        sign_in(passkeys, auth, stored, sign_count=signed_count)
    assert sign_in(passkeys, auth, stored, sign_count=stored_count + 1) == stored_count + 1


def test_passwordless_needs_user_verification(passkeys: Passkeys, caplog: pytest.LogCaptureFixture) -> None:
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    stored = register(passkeys, auth)
    with caplog.at_level(logging.INFO, logger="tahoe_auth.services.passkeys"), pytest.raises(MfaCodeInvalid):
        sign_in(passkeys, auth, stored, passwordless=True, user_verified=False)
    assert "User verification is required" in caplog.text
    # As a second factor (after the password) presence is enough.
    assert sign_in(passkeys, auth, stored, user_verified=False) > 0


@pytest.mark.parametrize(
    ("auth_origin", "auth_rp_id"),
    [("http://localhost:9999", RP_ID), ("https://evil.example", RP_ID), (ORIGIN, "evil.example")],
)
def test_assertion_from_elsewhere_is_refused(passkeys: Passkeys, auth_origin: str, auth_rp_id: str) -> None:
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    stored = register(passkeys, auth)
    auth.origin, auth.rp_id = auth_origin, auth_rp_id
    with pytest.raises(MfaCodeInvalid):
        sign_in(passkeys, auth, stored)


def test_assertion_answering_another_challenge_is_refused(passkeys: Passkeys) -> None:
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    stored = register(passkeys, auth)
    challenge = passkeys.new_challenge()
    options = passkeys.request_options(challenge, [stored], passwordless=False)
    with pytest.raises(MfaCodeInvalid):
        passkeys.verify_assertion(
            challenge, auth.assert_(options, challenge=passkeys.new_challenge()), stored, passwordless=False
        )
    # A replay of a verified assertion (same challenge is spent by the caller; the count is not).
    credential = auth.assert_(options)
    count = passkeys.verify_assertion(challenge, credential, stored, passwordless=False)
    with pytest.raises(MfaCodeInvalid):
        passkeys.verify_assertion(
            challenge, credential, StoredPasskey(stored.credential_id, stored.public_key, count), passwordless=False
        )


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: r.update(signature=flip_last_byte(r["signature"])),
        lambda r: r.update(signature=b64url(b"\x30\x03\x02\x01\x01")),  # DER, but not a signature
        lambda r: r.update(signature=""),
        # The flags byte edited after signing (user verification claimed or denied).
        lambda r: r.update(authenticatorData=flip_uv(r["authenticatorData"])),
        lambda r: r.update(authenticatorData=flip_last_byte(r["authenticatorData"])),  # the counter
        lambda r: r.update(authenticatorData=b64url(unb64url(r["authenticatorData"])[:20])),
        lambda r: r.update(clientDataJSON=b64url(unb64url(r["clientDataJSON"]) + b" ")),
        lambda r: r.update(clientDataJSON=b64url(unb64url(r["clientDataJSON"]).replace(b".get", b".create"))),
    ],
)
def test_tampered_assertion_is_refused(passkeys: Passkeys, tamper: Callable[[dict[str, Any]], None]) -> None:
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    stored = register(passkeys, auth)
    challenge = passkeys.new_challenge()
    credential = auth.assert_(passkeys.request_options(challenge, [stored], passwordless=False))
    with pytest.raises(MfaCodeInvalid):
        passkeys.verify_assertion(
            challenge, edit(credential, lambda c: tamper(c["response"])), stored, passwordless=False
        )
    assert passkeys.verify_assertion(challenge, credential, stored, passwordless=False) == 1


def test_assertion_by_another_credential_is_refused(passkeys: Passkeys) -> None:
    auth, other = SoftAuthenticator(RP_ID, ORIGIN), SoftAuthenticator(RP_ID, ORIGIN)
    stored = register(passkeys, auth)
    register(passkeys, other)
    challenge = passkeys.new_challenge()
    credential = other.assert_(passkeys.request_options(challenge, [], passwordless=True))
    # Verified against the key of a credential it is not: the ids differ.
    with pytest.raises(MfaCodeInvalid):
        passkeys.verify_assertion(challenge, credential, stored, passwordless=True)
    # Same id claimed, the other credential's signature: the key does not match.
    forged = edit(credential, lambda c: c.update(id=stored.credential_id, rawId=stored.credential_id))
    with pytest.raises(MfaCodeInvalid):
        passkeys.verify_assertion(challenge, forged, stored, passwordless=True)
    # The right key filed under another credential's id: the assertion is not of that one.
    mine = auth.assert_(passkeys.request_options(challenge, [stored], passwordless=False))
    misfiled = StoredPasskey(b64url(b"someone else"), stored.public_key, stored.sign_count)
    with pytest.raises(MfaCodeInvalid):
        passkeys.verify_assertion(challenge, mine, misfiled, passwordless=False)
    assert passkeys.verify_assertion(challenge, mine, stored, passwordless=False) == 1


def test_user_handle_must_be_the_expected_user(passkeys: Passkeys) -> None:
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    stored = register(passkeys, auth, user="usr_ada")
    challenge = passkeys.new_challenge()
    options = passkeys.request_options(challenge, [], passwordless=True)
    edited = auth.assert_(options, claimed_user_handle="usr_bob")
    assert passkeys.parse_assertion(edited).user_handle == "usr_bob"
    with pytest.raises(MfaCodeInvalid):
        passkeys.verify_assertion(challenge, edited, stored, passwordless=True, expected_user_id="usr_ada")
    missing = auth.assert_(options, send_user_handle=False)
    with pytest.raises(MfaCodeInvalid):
        passkeys.verify_assertion(challenge, missing, stored, passwordless=True, expected_user_id="usr_ada")
    # As a second factor the user is known already; an absent handle is fine.
    missing = auth.assert_(options, send_user_handle=False)
    assert passkeys.verify_assertion(challenge, missing, stored, passwordless=False, expected_user_id="usr_ada")


@pytest.mark.parametrize(
    ("credential_json", "message"),
    [
        ("", "is required"),
        ("null", "not a JSON object"),
        ("{'id': 1}", "is not JSON"),
        ('{"id": "abc", "rawId": "abc"}', "missing required response"),
        (
            '{"id": "abc", "rawId": "abc", "type": "public-key", "response": {"clientDataJSON": "e30",'
            ' "authenticatorData": "AA"}}',
            "missing required signature",
        ),
        (
            '{"id": "abc", "rawId": "abc", "type": "public-key", "response": {"clientDataJSON": "e30",'
            ' "authenticatorData": "AA", "signature": "AA", "userHandle": 7}}',
            "unexpected userHandle",
        ),
        (
            '{"id": "abc", "rawId": "abc", "type": "public-key", "response": {"clientDataJSON": "e30",'
            ' "authenticatorData": "AA", "signature": "AA", "userHandle": "_w"}}',
            "userHandle",
        ),
        (
            '{"id": "", "rawId": "", "type": "public-key", "response": {"clientDataJSON": "e30",'
            ' "authenticatorData": "AA", "signature": "AA"}}',
            "id is not base64url",
        ),
    ],
)
def test_malformed_assertion_is_invalid_argument(passkeys: Passkeys, credential_json: str, message: str) -> None:
    stored = StoredPasskey(b64url(b"abc"), b"", 0)
    with pytest.raises(InvalidArgument, match=message) as info:
        passkeys.parse_assertion(credential_json)
    assert info.value.field == "passkey_credential_json"
    with pytest.raises(InvalidArgument, match=message):
        passkeys.verify_assertion(passkeys.new_challenge(), credential_json, stored, passwordless=True)


def test_a_stored_key_that_is_not_a_cose_key_is_refused_not_an_internal_error(passkeys: Passkeys) -> None:
    auth = SoftAuthenticator(RP_ID, ORIGIN)
    stored = register(passkeys, auth)
    for bad_key in (b"", b"\xa0", b"not cbor at all"):
        with pytest.raises(MfaCodeInvalid):
            sign_in(passkeys, auth, StoredPasskey(stored.credential_id, bad_key, stored.sign_count))


def test_from_settings(tmp_path: Any) -> None:
    settings = Settings.from_env(
        {
            "TAHOE_VAR_DIR": str(tmp_path),
            "TAHOE_WEBAUTHN_RP_ID": "example.com",
            "TAHOE_WEBAUTHN_RP_NAME": "Example",
            "TAHOE_WEBAUTHN_ORIGINS": "https://auth.example.com,https://example.com",
        }
    )
    passkeys = Passkeys.from_settings(settings)
    auth = SoftAuthenticator("example.com", "https://auth.example.com")
    challenge = passkeys.new_challenge()
    options = passkeys.creation_options(challenge, user_id=USER, user_name="a", display_name="", exclude=())
    assert json.loads(options)["rp"] == {"id": "example.com", "name": "Example"}
    assert passkeys.verify_registration(challenge, auth.register(options)).credential_id
    # The default deployment's origin is not among this one's.
    with pytest.raises(MfaCodeInvalid):
        passkeys.verify_registration(challenge, SoftAuthenticator("example.com", ORIGIN).register(options))
    assert base64.urlsafe_b64decode(challenge + "=")
