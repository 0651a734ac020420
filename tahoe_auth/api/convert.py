"""Domain values to protobuf messages and back."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import timestamp_pb2

from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.domain.principal import API_KEY, PLATFORM, SERVICE, USER, Principal
from tahoe_auth.v1 import auth_pb2, principal_pb2, usage_pb2

SUBJECT_TYPES = {
    USER: principal_pb2.SUBJECT_TYPE_USER,
    API_KEY: principal_pb2.SUBJECT_TYPE_API_KEY,
    SERVICE: principal_pb2.SUBJECT_TYPE_SERVICE,
    PLATFORM: principal_pb2.SUBJECT_TYPE_UNSPECIFIED,
}


def required(value: str, field: str) -> str:
    """A request field that must not be empty (proto3 has no required fields)."""
    if not value:
        raise InvalidArgument(field, f"{field} is required")
    return value


def timestamp(value: dt.datetime | float | int | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    if isinstance(value, dt.datetime):
        stamp.FromDatetime(value.astimezone(dt.UTC).replace(tzinfo=None))
    else:
        stamp.FromSeconds(int(value))
    return stamp


def from_timestamp(stamp: timestamp_pb2.Timestamp) -> dt.datetime | None:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.ToDatetime(tzinfo=dt.UTC)


def principal(p: Principal) -> principal_pb2.Principal:
    return principal_pb2.Principal(
        tenant_id=p.tenant_id,
        subject=p.subject,
        subject_type=SUBJECT_TYPES[p.subject_type],
        permissions=list(p.permissions),
        session_id=p.session_id,
        expire_time=timestamp(p.expires_at),
        platform_admin=p.platform_admin,
        amr=list(p.amr),
        mfa_verified=p.mfa.verified_at > 0,
        mfa_verify_time=timestamp(p.mfa.verified_at or None),
        restriction=p.restriction,
    )


def session(row: Any, current_session_id: str = "") -> auth_pb2.Session:
    return auth_pb2.Session(
        id=row.id,
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        create_time=timestamp(row.created_at),
        last_active_time=timestamp(row.last_active_at),
        idle_expire_time=timestamp(row.idle_expires_at),
        expire_time=timestamp(row.expires_at),
        revoke_time=timestamp(row.revoked_at),
        revoke_reason=row.revoke_reason,
        client_address=row.client_address,
        user_agent=row.user_agent,
        current=bool(current_session_id) and row.id == current_session_id,
    )


def token_pair(issued: Any, now: int) -> auth_pb2.TokenPair:
    return auth_pb2.TokenPair(
        access_token=issued.access_token,
        token_type="Bearer",
        expires_in=max(0, issued.access_expires_at - now),
        access_token_expire_time=timestamp(issued.access_expires_at),
        refresh_token=issued.refresh_token,
        session_id=issued.session_id,
    )


def limit_kind(limit: str) -> usage_pb2.LimitKind.ValueType:
    """A plan quota's limit ("hard", "soft", or "" for none) as the API's enum."""
    if limit == "hard":
        return usage_pb2.LIMIT_KIND_HARD
    if limit == "soft":
        return usage_pb2.LIMIT_KIND_SOFT
    return usage_pb2.LIMIT_KIND_UNSPECIFIED
