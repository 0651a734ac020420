"""The boundary rule: what every request message must satisfy before any use case runs.

One walk over the fields a caller set, for every RPC of the API:
- a string holds no NUL character (PostgreSQL cannot store one) and is at most its
  field's maximum length; bytes likewise;
- a repeated field or map holds at most its field's maximum number of items;
- a double is finite; an enum is one of its declared values;
- a Timestamp or Duration is within the range protobuf defines;
- messages nest no deeper than MAX_DEPTH (a Struct can nest without end).

Invalid UTF-8 never reaches this walk: protobuf refuses it while parsing, and the
chain answers that as INVALID_ARGUMENT too (api/interceptors.py). Each maximum is
declared once, in MAX_LENGTH / MAX_ITEMS below, by field name (`Message.field` for a
name that means different things in different messages); the names and figures are
listed in docs/api-limits.md, which a test keeps in step with this table. Formats
(emails, permissions, slugs, page tokens, field masks) are the domain's to check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from tahoe_auth.domain import password_policy, passwords, usage
from tahoe_auth.domain.errors import InvalidArgument, PasswordRejected
from tahoe_auth.services import paging
from tahoe_auth.services.passkeys import MAX_CREDENTIAL_JSON
from tahoe_auth.services.usage import MAX_BATCH

DEFAULT_MAX_LENGTH = 256
DEFAULT_MAX_ITEMS = 100
MAX_DEPTH = 8
ID_LENGTH = 64
PERMISSION_LENGTH = 127  # two segments of at most 63 characters and the colon
TOKEN_LENGTH = 8192

MAX_LENGTH: Mapping[str, int] = {
    # Identifiers: ours are 36-character UUIDs; a tenant may be named by id or slug.
    "id": ID_LENGTH,
    "tenant_id": ID_LENGTH,
    "resource_tenant_id": ID_LENGTH,
    "tenant": ID_LENGTH,
    "user_id": ID_LENGTH,
    "subject": ID_LENGTH,
    "session_id": ID_LENGTH,
    "api_key_id": ID_LENGTH,
    "service_account_id": ID_LENGTH,
    "invitation_id": ID_LENGTH,
    "endpoint_id": ID_LENGTH,
    "delivery_id": ID_LENGTH,
    "event_id": ID_LENGTH,
    "client_id": ID_LENGTH,
    "kid": ID_LENGTH,
    # People and names.
    "email": 320,
    "owner_email": 320,
    "actor": 320,  # an email or an id
    "display_name": 200,
    "description": 500,
    "reason": 500,
    "suspend_reason": 500,
    "disabled_reason": 300,
    "name": 63,  # roles, service accounts, plans
    "CreateApiKeyRequest.name": 200,
    "slug": 63,
    "plan": 63,
    "role": 63,
    "roles": 63,
    "secret_prefix": 32,
    # Secrets and credentials.
    "password": passwords.MAX_LENGTH,
    "new_password": passwords.MAX_LENGTH,
    "current_password": passwords.MAX_LENGTH,
    "client_secret": 256,
    "token": TOKEN_LENGTH,
    "refresh_token": 256,
    "credential": TOKEN_LENGTH,
    # Second factors.
    "factor_id": ID_LENGTH,
    "challenge": 100,
    "registration_id": 100,
    "code": 16,
    "totp_code": 16,
    "recovery_code": 32,
    "credential_json": MAX_CREDENTIAL_JSON,
    "passkey_credential_json": MAX_CREDENTIAL_JSON,
    # Authorization vocabulary.
    "permissions": PERMISSION_LENGTH,
    "scopes": PERMISSION_LENGTH,
    "required_permission": PERMISSION_LENGTH,
    "upstream": 200,
    "action": 100,
    "event_types": 100,
    # Usage.
    "metric": usage.MAX_METRIC_LENGTH,
    "metrics": usage.MAX_METRIC_LENGTH,
    "idempotency_key": usage.MAX_IDEMPOTENCY_KEY,
    "DimensionsEntry.key": 63,
    "DimensionsEntry.value": usage.MAX_DIMENSION_VALUE,
    "period": 32,
    # Paging, field masks and other structure.
    "page_token": paging.MAX_PAGE_TOKEN_LENGTH,
    "paths": 100,
    "url": 2048,
}

# The fields that set a password: too long there is the password policy's `max_length`
# rule, answered as the policy answers (PASSWORD_REJECTED naming it).
NEW_PASSWORD_FIELDS = frozenset(
    {
        "CreateUserRequest.password",
        "ChangePasswordRequest.new_password",
        "ResetPasswordRequest.new_password",
        "AcceptInvitationRequest.password",
    }
)

MAX_ITEMS: Mapping[str, int] = {
    "events": MAX_BATCH,
    "dimensions": usage.MAX_DIMENSIONS,
    "permissions": 200,
    "scopes": 200,
}

# The range protobuf defines for Timestamp (0001-01-01 .. 9999-12-31) and Duration.
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
_DURATION_SECONDS = 315_576_000_000
_NANOS = 999_999_999


def check_request(message: Message) -> None:
    """Raise InvalidArgument naming the first field that breaks the boundary rule."""
    _check_message(message, "", 0)


def _limit(table: Mapping[str, int], field: FieldDescriptor, default: int) -> int:
    owner = field.containing_type.name if field.containing_type is not None else ""
    specific = table.get(f"{owner}.{field.name}")
    return specific if specific is not None else table.get(field.name, default)


def _check_message(message: Message, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidArgument(path.rstrip("."), f"messages nest at most {MAX_DEPTH} levels deep")
    if isinstance(message, timestamp_pb2.Timestamp):
        _check_timestamp(message, path.rstrip("."))
    elif isinstance(message, duration_pb2.Duration):
        _check_duration(message, path.rstrip("."))
    for field, value in message.ListFields():
        name = f"{path}{field.name}"
        entry = _map_entry(field)
        if entry is not None:
            _check_count(field, name, len(value))
            key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
            for key, item in value.items():
                _check_scalar(key_field, key, name, depth)
                _check_scalar(value_field, item, f"{name}[{key!r:.40}]", depth)
        elif field.is_repeated:
            _check_count(field, name, len(value))
            for index, item in enumerate(value):
                _check_scalar(field, item, f"{name}[{index}]", depth)
        else:
            _check_scalar(field, value, name, depth)


def _map_entry(field: FieldDescriptor) -> Descriptor | None:
    entry: Descriptor | None = field.message_type
    if field.is_repeated and entry is not None and entry.GetOptions().map_entry:
        return entry
    return None


def _check_count(field: FieldDescriptor, name: str, count: int) -> None:
    most = _limit(MAX_ITEMS, field, DEFAULT_MAX_ITEMS)
    if count > most:
        raise InvalidArgument(name, f"{name} holds at most {most} items")


def _check_scalar(field: FieldDescriptor, value: object, name: str, depth: int) -> None:
    if isinstance(value, Message):
        _check_message(value, f"{name}.", depth + 1)
    elif isinstance(value, str):
        if "\x00" in value:
            raise InvalidArgument(name, f"{name} must not contain NUL characters")
        _check_length(field, name, len(value))
    elif isinstance(value, bytes):
        _check_length(field, name, len(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(name, f"{name} must be a finite number")
    elif field.enum_type is not None and value not in field.enum_type.values_by_number:
        raise InvalidArgument(name, f"{value} is not a value of {field.enum_type.name}")


def _check_length(field: FieldDescriptor, name: str, length: int) -> None:
    most = _limit(MAX_LENGTH, field, DEFAULT_MAX_LENGTH)
    if length > most:
        message = f"{name} must be at most {most} characters"
        owner = field.containing_type.name if field.containing_type is not None else ""
        if f"{owner}.{field.name}" in NEW_PASSWORD_FIELDS:
            raise PasswordRejected(name, password_policy.MAX_LENGTH_RULE, message)
        raise InvalidArgument(name, message)


def _check_timestamp(stamp: timestamp_pb2.Timestamp, name: str) -> None:
    seconds, nanos = stamp.seconds, stamp.nanos
    low, high = _TIMESTAMP_SECONDS
    if not (low <= seconds <= high and 0 <= nanos <= _NANOS):
        raise InvalidArgument(name, f"{name} is not a time between the years 1 and 9999")


def _check_duration(duration: duration_pb2.Duration, name: str) -> None:
    seconds, nanos = duration.seconds, duration.nanos
    same_sign = seconds == 0 or nanos == 0 or (seconds > 0) == (nanos > 0)
    if not (abs(seconds) <= _DURATION_SECONDS and abs(nanos) <= _NANOS and same_sign):
        raise InvalidArgument(name, f"{name} is not a valid duration")
