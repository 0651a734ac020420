"""SQLAlchemy models. Tables that belong to a tenant use the TenantScoped mixin, which
the unit of work filters on automatically (see store/db.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from tahoe_auth.kernel import logs

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def current_request_id() -> str:
    return logs.request_id_var.get()[:128]


def current_traceparent() -> str:
    return logs.traceparent_var.get()[:64]


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON}


Id = String(36)


class TenantScoped:
    """Rows that belong to one tenant; queried only through a tenant-bound session."""

    tenant_id: Mapped[str] = mapped_column(Id, ForeignKey("tenants.id", ondelete="CASCADE"), index=True)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="active")
    plan: Mapped[str] = mapped_column(String(63), default="free")
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    suspended_at: Mapped[dt.datetime | None]
    suspend_reason: Mapped[str] = mapped_column(String(500), default="")


class User(TenantScoped, Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "email", name="uq_users_tenant_email"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    password_changed_at: Mapped[dt.datetime | None]
    # When the user proved the address receives mail (a verification link, or an
    # invitation accepted); None until then and again after the address changes.
    email_verified_at: Mapped[dt.datetime | None]


class RoleBinding(TenantScoped, Base):
    """A user holds a role (built-in or custom) in their tenant."""

    __tablename__ = "role_bindings"
    __table_args__ = (UniqueConstraint("tenant_id", "user_id", "role", name="uq_role_bindings_member"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Role(TenantScoped, Base):
    """A tenant's own role. Built-in roles are not stored (domain/permissions.py)."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_roles_tenant_name"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(String(500), default="")
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Session(TenantScoped, Base):
    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_user", "tenant_id", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_active_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    idle_expires_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]
    revoke_reason: Mapped[str] = mapped_column(String(63), default="")
    client_address: Mapped[str] = mapped_column(String(255), default="")
    user_agent: Mapped[str] = mapped_column(String(512), default="")
    # How the user signed in (space-separated RFC 8176 `amr` values) and when the
    # session last passed a second factor (login or step-up).
    amr: Mapped[str] = mapped_column(String(64), default="pwd", server_default="pwd")
    mfa_verified_at: Mapped[dt.datetime | None]


class MfaFactor(TenantScoped, Base):
    """A user's second factor: an authenticator app (`totp`) or a passkey (`passkey`).
    Unconfirmed rows (`confirmed_at` None) are enrollments in progress. The TOTP secret
    is sealed under the master key; `last_step` refuses a code's replay."""

    __tablename__ = "mfa_factors"
    __table_args__ = (Index("ix_mfa_factors_user", "tenant_id", "user_id"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]
    secret_sealed: Mapped[str] = mapped_column(Text, default="")
    last_step: Mapped[int] = mapped_column(BigInteger, default=0)
    # Passkeys: the credential id (base64url, unique across tenants, as authenticators
    # make it), its COSE public key, the signature counter and what the browser said.
    credential_id: Mapped[str | None] = mapped_column(String(1400), unique=True)
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    transports: Mapped[list[str]] = mapped_column(JSON, default=list)
    aaguid: Mapped[str] = mapped_column(String(36), default="")


class RecoveryCode(TenantScoped, Base):
    """Single-use recovery codes; only an HMAC of each (keyed from the master key)."""

    __tablename__ = "mfa_recovery_codes"
    __table_args__ = (Index("ix_mfa_recovery_codes_user", "tenant_id", "user_id"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    used_at: Mapped[dt.datetime | None]


class MfaChallenge(TenantScoped, Base):
    """A pending second step: a login waiting for its factor (`login`), a passwordless
    sign-in (`passkey_sign_in`, user unknown until the assertion), a step-up of a
    session (`step_up`) or a passkey registration (`passkey_registration`). Only the
    SHA-256 of its token is stored."""

    __tablename__ = "mfa_challenges"

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"))
    session_id: Mapped[str | None] = mapped_column(Id, ForeignKey("sessions.id", ondelete="CASCADE"))
    # The WebAuthn challenge (base64url) when a passkey may answer.
    webauthn_challenge: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Set when enrolling a first factor answered the challenge (enrollment at login).
    satisfied_at: Mapped[dt.datetime | None]
    satisfied_amr: Mapped[str] = mapped_column(String(32), default="")
    consumed_at: Mapped[dt.datetime | None]
    client_address: Mapped[str] = mapped_column(String(255), default="")
    user_agent: Mapped[str] = mapped_column(String(512), default="")


class RefreshToken(TenantScoped, Base):
    """Only the SHA-256 of the token is stored; `used_at` makes each token single-use."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(Id, ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    used_at: Mapped[dt.datetime | None]


class SigningKey(Base):
    """Token signing keys; the private half sealed under TAHOE_MASTER_KEY.

    A key signs from `activates_at` until the next key's `activates_at`
    (domain/key_schedule.py computes states from these rows and the clock);
    `revoked_at` removes it from the JWKS and refuses its tokens at once."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]]
    private_key_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    activates_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]


class PlatformCredential(Base):
    """Platform-administrator API keys (not tenant-scoped): create tenants, act across them."""

    __tablename__ = "platform_credentials"

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]


class ApiKey(TenantScoped, Base):
    """A user's API key. Only HMAC-SHA256 digests of secrets are stored; after a
    rotation the previous digest stays valid until `previous_expires_at`."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_user", "tenant_id", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"))
    created_by: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    previous_secret_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    previous_expires_at: Mapped[dt.datetime | None]
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None]
    rotated_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]


class Invitation(TenantScoped, Base):
    """An invitation to join a tenant with a role; the token is stored as SHA-256."""

    __tablename__ = "invitations"
    __table_args__ = (Index("ix_invitations_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(63))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    accepted_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
    user_id: Mapped[str | None] = mapped_column(Id, ForeignKey("users.id", ondelete="SET NULL"))


class ServiceAccountFields:
    """Columns shared by tenant and platform-wide service accounts. The client secret
    is stored as an HMAC-SHA256 digest; after a rotation the previous digest stays
    valid until `previous_expires_at`. Tokens issued before `secret_revoked_at` are refused."""

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(String(500), default="")
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret_prefix: Mapped[str] = mapped_column(String(32), default="")
    secret_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    previous_secret_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    previous_expires_at: Mapped[dt.datetime | None]
    secret_rotated_at: Mapped[dt.datetime | None]
    secret_revoked_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ServiceAccount(ServiceAccountFields, TenantScoped, Base):
    """An internal service acting within one tenant."""

    __tablename__ = "service_accounts"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_service_accounts_tenant_name"),)


class PlatformServiceAccount(ServiceAccountFields, Base):
    """An internal service acting across tenants (e.g. the transcription service
    reporting usage). Not tenant-scoped: managed by platform administrators only."""

    __tablename__ = "platform_service_accounts"
    __table_args__ = (UniqueConstraint("name", name="uq_platform_service_accounts_name"),)


# --- usage metering -----------------------------------------------------------------------

BigId = BigInteger().with_variant(Integer(), "sqlite")


class ChangeRecord(Base):
    """One committed change that caches elsewhere must hear of, written in the change's
    own transaction: the durable copy of what pub/sub carries (services/change_feed.py
    polls it). Not tenant-scoped: every instance reads every tenant's changes."""

    __tablename__ = "change_log"
    # SQLite would otherwise reuse the ids of pruned rows, below pollers' high-water marks.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class UsageEvent(TenantScoped, Base):
    """Raw usage, written before anything else knows about it (the write-ahead record).

    A repeated (tenant, idempotency_key) is not inserted again; rows without a key are
    never deduplicated. `rolled_up` turns true when the event is folded into
    usage_rollups and usage_period_totals (in the same transaction)."""

    __tablename__ = "usage_events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_usage_events_idempotency"),
        Index(
            "ix_usage_events_unrolled",
            "id",
            postgresql_where=text("NOT rolled_up"),
            sqlite_where=text("NOT rolled_up"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No index of its own: the idempotency constraint leads with tenant_id.
    tenant_id: Mapped[str] = mapped_column(Id, ForeignKey("tenants.id", ondelete="CASCADE"))
    metric: Mapped[str] = mapped_column(String(100))
    quantity: Mapped[float] = mapped_column(Double())
    occurred_at: Mapped[dt.datetime]
    dimensions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    rolled_up: Mapped[bool] = mapped_column(default=False, server_default=false())


class UsageRollup(TenantScoped, Base):
    """Per-minute sums of rolled-up events."""

    __tablename__ = "usage_rollups"

    tenant_id: Mapped[str] = mapped_column(Id, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    metric: Mapped[str] = mapped_column(String(100), primary_key=True)
    bucket_start: Mapped[dt.datetime] = mapped_column(primary_key=True)
    quantity: Mapped[float] = mapped_column(Double())


class UsagePeriodTotal(TenantScoped, Base):
    """Per-billing-period (calendar month, UTC) sums of rolled-up events."""

    __tablename__ = "usage_period_totals"

    tenant_id: Mapped[str] = mapped_column(Id, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    metric: Mapped[str] = mapped_column(String(100), primary_key=True)
    period_start: Mapped[dt.datetime] = mapped_column(primary_key=True)
    quantity: Mapped[float] = mapped_column(Double())


class UsageDimensionRollup(TenantScoped, Base):
    """Hourly sums of rolled-up events by one dimension's value (route, subject_type,
    credential): what usage breakdowns read, folded in by the same rollup transaction."""

    __tablename__ = "usage_dimension_rollups"

    tenant_id: Mapped[str] = mapped_column(Id, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    metric: Mapped[str] = mapped_column(String(100), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(32), primary_key=True)
    bucket_start: Mapped[dt.datetime] = mapped_column(primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)
    quantity: Mapped[float] = mapped_column(Double())


class LoginRollup(TenantScoped, Base):
    """Logins per tenant, hour and outcome (success, failure, throttled), counted in the
    login's own transaction (throttles: aggregated in memory, services/login_stats.py)."""

    __tablename__ = "login_rollups"

    tenant_id: Mapped[str] = mapped_column(Id, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    bucket_start: Mapped[dt.datetime] = mapped_column(primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class LoginActiveUser(TenantScoped, Base):
    """A user who logged in successfully on a day (UTC): active users per day."""

    __tablename__ = "login_active_users"

    tenant_id: Mapped[str] = mapped_column(Id, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[dt.datetime] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(Id, primary_key=True)


class UsagePlan(Base):
    """A plan: included units per metric per billing period, hard or soft (domain.usage)."""

    __tablename__ = "usage_plans"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    quotas: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class UsageThresholdMark(TenantScoped, Base):
    """A threshold already announced for a tenant, metric and period: at most one event each."""

    __tablename__ = "usage_threshold_marks"

    tenant_id: Mapped[str] = mapped_column(Id, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    metric: Mapped[str] = mapped_column(String(100), primary_key=True)
    period_start: Mapped[dt.datetime] = mapped_column(primary_key=True)
    threshold: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class OutboxEvent(TenantScoped, Base):
    """Events for other parts of the system (webhooks), written in the transaction that
    caused them. Minimal on purpose: (id, tenant_id, type, payload, created_at)."""

    __tablename__ = "outbox_events"

    __table_args__ = (
        Index(
            "ix_outbox_events_undispatched",
            "created_at",
            postgresql_where=text("dispatched_at IS NULL"),
            sqlite_where=text("dispatched_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    # Correlation of the call that caused the event (filled from the logging context
    # when the writer does not say, so that every writer carries it).
    request_id: Mapped[str] = mapped_column(String(128), default=current_request_id, server_default="")
    traceparent: Mapped[str] = mapped_column(String(64), default=current_traceparent, server_default="")
    # Set once the webhook dispatcher has fanned the event out to its endpoints.
    dispatched_at: Mapped[dt.datetime | None]


class MailMessage(TenantScoped, Base):
    """One mail to send, queued in the transaction of the change it is about (the mail
    channel's outbox). Its variables, which may hold a link with a token, are sealed
    under a key derived from the master key and wiped once it is sent or dead.

    Due when status is pending or retrying and next_attempt_at has passed; a worker
    claims it by pushing next_attempt_at out by its lease (at least once, as webhooks)."""

    __tablename__ = "mail_messages"
    __table_args__ = (
        Index("ix_mail_messages_due", "status", "next_attempt_at"),
        Index("ix_mail_messages_tenant", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    template: Mapped[str] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(16), default="en")
    to_address: Mapped[str] = mapped_column(String(320))
    sender_name: Mapped[str] = mapped_column(String(100), default="")
    variables_sealed: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[dt.datetime]
    last_attempt_at: Mapped[dt.datetime | None]
    last_error: Mapped[str] = mapped_column(String(500), default="")
    sent_at: Mapped[dt.datetime | None]
    request_id: Mapped[str] = mapped_column(String(128), default=current_request_id, server_default="")


class AccountToken(TenantScoped, Base):
    """A mailed link's token: a password reset or an email verification. Only its
    SHA-256 is stored; single use (used_at), short-lived (expires_at). `email` is the
    address the link was sent to: a verification counts only while it is still the
    user's address, a reset only while the account's email is the one it went to."""

    __tablename__ = "account_tokens"

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class PasswordResetRequest(Base):
    """A "forgot password" request, kept until the mail worker has looked at it. Written
    alike whether or not the account exists (one insert either way, in the same time);
    the worker finds out, mails a link if there is an account, and deletes the row.
    Not tenant-scoped: the tenant may not exist."""

    __tablename__ = "password_reset_requests"

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    tenant_key: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(320))
    client_address: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    request_id: Mapped[str] = mapped_column(String(128), default=current_request_id, server_default="")


# --- audit log and webhooks ----------------------------------------------------------------


class AuditEvent(Base):
    """One append-only audit entry, hash-chained per tenant (domain/audit.py).

    Not TenantScoped on purpose: no foreign key to tenants (the record outlives a
    deleted tenant, and a cascade would have to delete audit rows). `tenant_id` is ""
    for the platform chain (platform actions, logins to unknown tenants). Tenant
    filtering is explicit in the audit repository."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_time", "tenant_id", "occurred_at"),
        Index("ix_audit_events_actor", "tenant_id", "actor"),
    )

    tenant_id: Mapped[str] = mapped_column(Id, primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(320))
    actor_type: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(400))
    outcome: Mapped[str] = mapped_column(String(16))
    client_address: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(128))
    traceparent: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]
    previous_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The newest entry of each tenant's chain, locked by every append (and the anchor
    that reveals removed newest entries)."""

    __tablename__ = "audit_heads"

    tenant_id: Mapped[str] = mapped_column(Id, primary_key=True)
    last_sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WebhookEndpoint(TenantScoped, Base):
    """Where a tenant's events go. Secrets are sealed under a key derived from the
    master key: [{"sealed": ..., "created_at": iso, "expires_at": iso | null}], newest first."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(500), default="")
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="active")
    disabled_reason: Mapped[str] = mapped_column(String(300), default="")
    secrets: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookDelivery(TenantScoped, Base):
    """One event to one endpoint: the unit of retry and of the delivery log.

    Due when status is pending or retrying and next_attempt_at has passed; a worker
    claims it by pushing next_attempt_at out by its lease, so that a crashed worker's
    claim lapses and the delivery is sent again (same webhook-id: at least once)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "tenant_id", "endpoint_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True, default=new_id)
    event_id: Mapped[str] = mapped_column(Id, ForeignKey("outbox_events.id", ondelete="CASCADE"), index=True)
    endpoint_id: Mapped[str] = mapped_column(Id, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Start of the current retry window (creation, or the last manual replay).
    window_start: Mapped[dt.datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[dt.datetime]
    last_attempt_at: Mapped[dt.datetime | None]
    last_status_code: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str] = mapped_column(String(500), default="")
    last_duration_ms: Mapped[float] = mapped_column(Double(), default=0.0)
    finished_at: Mapped[dt.datetime | None]
