"""Domain events: the catalog of types, endpoint filters, and the webhook message body.

Events are written to the outbox in the transaction of the change that caused them and
delivered to tenants' webhook endpoints (webhooks/worker.py) as Standard Webhooks
messages whose `webhook-id` is the event id, stable across retries and replays.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tahoe_auth.domain.errors import InvalidArgument

USER_CREATED = "user.created"
USER_UPDATED = "user.updated"
USER_DELETED = "user.deleted"
USER_INVITED = "user.invited"
USER_MFA_FACTOR_ADDED = "user.mfa_factor_added"
USER_MFA_FACTOR_REMOVED = "user.mfa_factor_removed"
INVITATION_ACCEPTED = "invitation.accepted"
APIKEY_CREATED = "apikey.created"
APIKEY_ROTATED = "apikey.rotated"
APIKEY_REVOKED = "apikey.revoked"
SESSION_REVOKED = "session.revoked"
ROLE_CHANGED = "role.changed"
SERVICE_ACCOUNT_CHANGED = "service_account.changed"
USAGE_THRESHOLD_REACHED = "usage.threshold_reached"
TENANT_UPDATED = "tenant.updated"
WEBHOOK_TEST = "webhook.test"

CATALOG: dict[str, str] = {
    USER_CREATED: "a user was added to the tenant",
    USER_UPDATED: "a user's profile, status or roles changed",
    USER_DELETED: "a user was removed",
    USER_INVITED: "an invitation to join the tenant was sent",
    USER_MFA_FACTOR_ADDED: "a user added a second factor (authenticator app or passkey)",
    USER_MFA_FACTOR_REMOVED: "a second factor was removed, by its user or an administrator",
    INVITATION_ACCEPTED: "an invitation was accepted",
    APIKEY_CREATED: "an API key was created",
    APIKEY_ROTATED: "an API key was rotated",
    APIKEY_REVOKED: "an API key was revoked",
    SESSION_REVOKED: "a session ended by logout, revocation or refresh-token reuse",
    ROLE_CHANGED: "a role was created, changed or deleted",
    SERVICE_ACCOUNT_CHANGED: "a service account or its credentials changed",
    USAGE_THRESHOLD_REACHED: "usage crossed a threshold of the plan's quota",
    TENANT_UPDATED: "the tenant's settings, plan or status changed",
    WEBHOOK_TEST: "sent on request by SendTestWebhookEvent (only to the chosen endpoint)",
}

PENDING = "pending"
RETRYING = "retrying"
SUCCEEDED = "succeeded"
DEAD = "dead"
DUE_STATUSES = (PENDING, RETRYING)

_FILTER = re.compile(r"^(\*|[a-z][a-z0-9_]*(\.([a-z][a-z0-9_]*|\*))*)\Z")


def validate_filters(event_types: Iterable[str]) -> list[str]:
    """Exact types (`user.created`) or prefixes (`user.*`); empty means every event."""
    unique = sorted({t.strip() for t in event_types if t.strip()})
    for event_type in unique:
        if not _FILTER.match(event_type) or len(event_type) > 100:
            raise InvalidArgument("event_types", f"{event_type!r} is not an event type or a prefix like user.*")
    return unique


def matches(filters: Iterable[str], event_type: str) -> bool:
    wanted = list(filters)
    if not wanted:
        return event_type != WEBHOOK_TEST
    for candidate in wanted:
        if candidate in ("*", event_type):
            return True
        if candidate.endswith(".*") and event_type.startswith(candidate[:-1]):
            return True
    return False


@dataclass(frozen=True)
class Event:
    id: str
    tenant_id: str
    type: str
    created_at: dt.datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    request_id: str = ""
    traceparent: str = ""


def webhook_body(event: Event) -> bytes:
    """The message (Standard Webhooks' recommended shape: type, timestamp, data), the
    same bytes on every attempt."""
    metadata = {"tenant_id": event.tenant_id, "request_id": event.request_id, "traceparent": event.traceparent}
    body = {
        "id": event.id,
        "type": event.type,
        "timestamp": event.created_at.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "data": dict(event.data),
        "metadata": {k: v for k, v in metadata.items() if v},
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True, default=str).encode()
