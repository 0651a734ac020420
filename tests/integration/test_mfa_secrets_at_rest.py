"""An authenticator app's secret and the recovery codes are shown once and kept nowhere
in clear: not in any table (the secret is sealed, codes are HMACs), not in Redis, not in
the logs; and enrolling, regenerating the codes and removing the factor are audited."""

from __future__ import annotations

import base64
import logging

import pyotp
import pytest
import redis
from sqlalchemy import create_engine, inspect, pool, text

from tahoe_auth.v1 import audit_pb2, audit_pb2_grpc, auth_pb2, mfa_pb2
from tests.integration.test_mfa_authenticator_app import code, settle
from tests.integration.test_mfa_core import mfa_stub
from tests.integration.test_no_secrets_at_rest import dump_database
from tests.support import RunningServer, bearer, call_error, error_reason

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def dump_bytes(url: str) -> bytes:
    """Every value of every table as bytes: binary columns as they are (dump_database
    shows them as Python reprs, where raw bytes would not be found)."""
    engine = create_engine(url, poolclass=pool.NullPool)
    chunks: list[bytes] = []
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for value in row:
                    if isinstance(value, bytes | bytearray | memoryview):
                        chunks.append(bytes(value))
                    else:
                        chunks.append(str(value).encode())
    engine.dispose()
    return b"\n".join(chunks)


def dump_redis(url: str) -> bytes:
    client = redis.Redis.from_url(url)
    chunks = [key + b"=" + (client.dump(key) or b"") for key in client.scan_iter()]
    client.close()
    return b"\n".join(chunks)


def secret_forms(base32: str) -> tuple[list[str], bytes]:
    """The ways the secret could be written down: base32 (any case, padded or not), the
    raw bytes in hex and base64; and the raw bytes themselves."""
    raw = base64.b32decode(base32 + "=" * (-len(base32) % 8))
    assert len(raw) == 20
    b64, url64 = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    forms = [base32, base32.lower(), base64.b32encode(raw).decode(), raw.hex(), raw.hex().upper()]
    forms += [b64, b64.rstrip("="), url64, url64.rstrip("=")]
    return forms, raw


def code_forms(codes: list[str]) -> list[str]:
    forms = []
    for c in codes:
        bare = c.replace("-", "")
        forms += [c, c.upper(), bare, bare.upper()]
    return forms


def assert_nowhere(forms: list[str], raw: bytes, *, rows: str, row_bytes: bytes, kv: bytes, logs: str) -> None:
    for form in forms:
        assert form not in rows, f"{form!r} is in the database"
        assert form.encode() not in row_bytes, f"{form!r} is in the database"
        assert form.encode() not in kv, f"{form!r} is in Redis"
        assert form not in logs, f"{form!r} is in the logs"
    assert raw not in row_bytes and raw not in kv


def test_the_secret_and_the_recovery_codes_are_stored_and_logged_nowhere(
    server: RunningServer, pg_env: dict[str, str], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    database, kv = pg_env["TAHOE_DATABASE_URL"], pg_env["TAHOE_REDIS_URL"]
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    mfa = mfa_stub(server)

    settle()
    started = mfa.BeginTotpEnrollment(mfa_pb2.BeginTotpEnrollmentRequest(name="Phone"), metadata=bearer(owner))
    app = pyotp.parse_uri(started.otpauth_uri)
    assert isinstance(app, pyotp.TOTP) and app.secret == started.secret
    first_codes = list(
        mfa.ConfirmTotpEnrollment(
            mfa_pb2.ConfirmTotpEnrollmentRequest(factor_id=started.factor_id, code=app.now()), metadata=bearer(owner)
        ).recovery_codes
    )
    # The secret and the codes do their work: a recovery code signs in, once; the
    # app's code replaces the codes.
    answered = server.login(tenant).mfa_challenge.challenge
    server.auth.VerifyMfa(auth_pb2.VerifyMfaRequest(challenge=answered, recovery_code=first_codes[0]))
    refused = call_error(
        server.auth.VerifyMfa,
        auth_pb2.VerifyMfaRequest(challenge=server.login(tenant).mfa_challenge.challenge, recovery_code=first_codes[0]),
    )
    assert error_reason(refused) == "MFA_CODE_INVALID"
    second_codes = list(
        mfa.RegenerateRecoveryCodes(
            mfa_pb2.RegenerateRecoveryCodesRequest(totp_code=code(app, 1)), metadata=bearer(owner)
        ).recovery_codes
    )
    assert len(second_codes) == 10 and not set(second_codes) & set(first_codes)

    forms, raw = secret_forms(started.secret)
    forms += [started.otpauth_uri, *code_forms(first_codes + second_codes)]

    rows = dump_database(database)
    assert started.factor_id in rows and "mfa.recovery_codes_generated" in rows  # the dump did read them
    with create_engine(database, poolclass=pool.NullPool).connect() as conn:
        sealed = conn.execute(
            text("SELECT secret_sealed FROM mfa_factors WHERE id = :id"), {"id": started.factor_id}
        ).scalar_one()
        hashes = conn.execute(text("SELECT count(*) FROM mfa_recovery_codes WHERE used_at IS NULL")).scalar_one()
    assert sealed and hashes == 10
    captured = capfd.readouterr()
    logs = "\n".join([caplog.text, *(repr(r.__dict__) for r in caplog.records), captured.out, captured.err])
    row_bytes, kv_bytes = dump_bytes(database), dump_redis(kv)
    # (What is searched is not empty: the calls were logged, Redis holds the limiters' keys.)
    assert "MfaService/ConfirmTotpEnrollment" in logs and "AuthService/VerifyMfa" in logs
    assert started.factor_id.encode() in row_bytes and b"rl:" in kv_bytes
    assert_nowhere(forms, raw, rows=rows, row_bytes=row_bytes, kv=kv_bytes, logs=logs)

    # Removing the factor (with a recovery code) leaves nothing behind either.
    mfa.DeleteMfaFactor(
        mfa_pb2.DeleteMfaFactorRequest(factor_id=started.factor_id, recovery_code=second_codes[0]),
        metadata=bearer(owner),
    )
    captured = capfd.readouterr()
    logs = "\n".join([caplog.text, *(repr(r.__dict__) for r in caplog.records), captured.out, captured.err])
    rows = dump_database(database)
    assert "mfa.factor_removed" in rows
    assert_nowhere(forms, raw, rows=rows, row_bytes=dump_bytes(database), kv=dump_redis(kv), logs=logs)


def test_enrolling_regenerating_and_removing_are_audited(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    mfa = mfa_stub(server)
    settle()
    started = mfa.BeginTotpEnrollment(mfa_pb2.BeginTotpEnrollmentRequest(name="Phone"), metadata=bearer(owner))
    app = pyotp.parse_uri(started.otpauth_uri)
    mfa.ConfirmTotpEnrollment(
        mfa_pb2.ConfirmTotpEnrollmentRequest(factor_id=started.factor_id, code=app.now()), metadata=bearer(owner)
    )
    codes = list(
        mfa.RegenerateRecoveryCodes(
            mfa_pb2.RegenerateRecoveryCodesRequest(totp_code=code(app, 1)), metadata=bearer(owner)
        ).recovery_codes
    )
    mfa.DeleteMfaFactor(
        mfa_pb2.DeleteMfaFactorRequest(factor_id=started.factor_id, recovery_code=codes[0]), metadata=bearer(owner)
    )

    listed = audit_pb2_grpc.AuditServiceStub(server.channel).ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(action="mfa.*", page_size=100), metadata=bearer(owner)
    )
    events = sorted(listed.events, key=lambda e: e.sequence)
    by_action = {e.action: e for e in events}
    assert [e.action for e in events] == ["mfa.factor_added", "mfa.recovery_codes_generated", "mfa.factor_removed"]
    target = f"user:{tenant.owner_id}"
    for event in events:
        assert (event.actor, event.actor_type, event.target) == (tenant.owner_id, "user", target)
        assert event.outcome == audit_pb2.AUDIT_OUTCOME_SUCCESS and event.tenant_id == tenant.id
    added = dict(by_action["mfa.factor_added"].details)
    assert added["factor_id"] == started.factor_id and added["type"] == "totp" and added["name"] == "Phone"
    assert added["recovery_codes_issued"] is True
    removed = dict(by_action["mfa.factor_removed"].details)
    assert removed["factor_id"] == started.factor_id and removed["type"] == "totp"
    assert removed["by_admin"] is False and removed["last_factor"] is True
    # The chain still verifies with them in it.
    verified = audit_pb2_grpc.AuditServiceStub(server.channel).VerifyAuditChain(
        audit_pb2.VerifyAuditChainRequest(), metadata=bearer(owner)
    )
    assert verified.intact and verified.entries_checked >= len(events)
