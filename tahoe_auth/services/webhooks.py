"""Webhook endpoints of a tenant: CRUD, secret rotation, delivery log, replay, test events.

Secrets are `whsec_` Standard Webhooks secrets, shown once (on create and rotate) and
stored sealed under a key derived from the master key (AES-GCM, the endpoint id as
associated data). During a rotation the previous secret keeps signing alongside the new
one until it expires, so receivers can switch without losing messages.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tahoe_auth.domain import crypto, events
from tahoe_auth.domain import webhooks as standard
from tahoe_auth.domain.errors import FailedPrecondition, InvalidArgument
from tahoe_auth.domain.fields import check_description
from tahoe_auth.domain.webhooks import DeliveryFilter
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services import access
from tahoe_auth.services.audit import AuditLog
from tahoe_auth.services.context import CallContext
from tahoe_auth.services.events import emit
from tahoe_auth.services.paging import decode_page_token, encode_page_token, page_size_or_default
from tahoe_auth.store import models as m
from tahoe_auth.store.db import Database, UnitOfWork
from tahoe_auth.webhooks.sender import DeliveryRefused, EgressPolicy, check_url

# The rows the use cases return, for converters that must not reach into the store.
WebhookEndpoint = m.WebhookEndpoint
WebhookDelivery = m.WebhookDelivery

SEAL_PURPOSE = "webhook-secrets"
DEFAULT_OVERLAP = dt.timedelta(hours=24)
MAX_OVERLAP = dt.timedelta(days=7)
MAX_ENDPOINTS = 50
MAX_REPLAY = 10_000
UPDATABLE = ("url", "description", "event_types", "enabled")


@dataclass(frozen=True)
class EndpointSpec:
    url: str
    description: str = ""
    event_types: tuple[str, ...] = ()
    enabled: bool = True


def tenant_of(ctx: CallContext, tenant_id: str) -> str:
    """The caller's tenant, or the one named by a caller not bound to a tenant
    (platform administrators); another tenant's is NOT_FOUND (services/access.py)."""
    return access.target_tenant(ctx.require_principal(), tenant_id)


class SecretBox:
    def __init__(self, master_key: bytes) -> None:
        self._key = crypto.derive_key(master_key, SEAL_PURPOSE)

    def seal(self, endpoint_id: str, secret: str) -> str:
        return crypto.seal(self._key, secret.encode(), endpoint_id)

    def unseal(self, endpoint_id: str, sealed: str) -> str:
        return crypto.unseal(self._key, sealed, endpoint_id).decode()

    def signing_secrets(self, endpoint: m.WebhookEndpoint, now: dt.datetime) -> list[str]:
        """Every secret still in force, newest first."""
        return [
            self.unseal(endpoint.id, entry["sealed"])
            for entry in endpoint.secrets
            if not entry.get("expires_at") or dt.datetime.fromisoformat(entry["expires_at"]) > now
        ]


def check_endpoint_url(url: str, policy: EgressPolicy) -> str:
    """Scheme, credentials and literal addresses now; host names again at each send
    (their addresses may change, see webhooks/sender.py)."""
    url = url.strip()
    if len(url) > 2048:
        raise InvalidArgument("endpoint.url", "url is longer than 2048 characters")
    try:
        parts = check_url(url, policy)
        host = parts.hostname or ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None and not policy.permits(address):
            raise DeliveryRefused(f"{host} is not a public address")
    except DeliveryRefused as exc:
        raise InvalidArgument("endpoint.url", str(exc)) from None
    except ValueError:
        raise InvalidArgument("endpoint.url", "url is malformed") from None
    if urllib.parse.urlsplit(url).fragment:
        raise InvalidArgument("endpoint.url", "url must not carry a fragment")
    return url


class WebhookAdmin:
    def __init__(
        self, db: Database, master_key: bytes, policy: EgressPolicy, audit_log: AuditLog, clock: Clock
    ) -> None:
        self._db = db
        self.box = SecretBox(master_key)
        self._policy = policy
        self._audit = audit_log
        self._clock = clock

    # -- endpoints ---------------------------------------------------------------------------

    def create(self, ctx: CallContext, tenant_id: str, spec: EndpointSpec) -> tuple[m.WebhookEndpoint, str]:
        tenant_id = tenant_of(ctx, tenant_id)
        url = check_endpoint_url(spec.url, self._policy)
        filters = events.validate_filters(spec.event_types)
        secret = standard.generate_secret()
        now = self._clock.now()
        with self._db.unit_of_work(tenant_id) as uow:
            if len(uow.webhooks.endpoints(None, MAX_ENDPOINTS)) >= MAX_ENDPOINTS:
                raise FailedPrecondition(f"a tenant has at most {MAX_ENDPOINTS} webhook endpoints")
            endpoint = m.WebhookEndpoint(
                id=m.new_id(),
                tenant_id=tenant_id,
                url=url,
                description=check_description(spec.description),
                event_types=filters,
                status="active" if spec.enabled else "disabled",
                disabled_reason="" if spec.enabled else "disabled on creation",
                created_at=now,
                updated_at=now,
            )
            endpoint.secrets = [{"sealed": self.box.seal(endpoint.id, secret), "created_at": now.isoformat()}]
            uow.webhooks.add_endpoint(endpoint)
            self._audit.record(
                uow,
                ctx,
                tenant_id,
                "webhook.endpoint_create",
                f"webhook_endpoint:{endpoint.id}",
                details=_view(endpoint),
            )
            uow.commit()
        return endpoint, secret

    def get(self, ctx: CallContext, tenant_id: str, endpoint_id: str) -> m.WebhookEndpoint:
        tenant_id = tenant_of(ctx, tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            return uow.webhooks.endpoint(endpoint_id)

    def list_endpoints(
        self, ctx: CallContext, tenant_id: str, page_size: int, page_token: str
    ) -> tuple[Sequence[m.WebhookEndpoint], str]:
        tenant_id = tenant_of(ctx, tenant_id)
        limit = page_size_or_default(page_size)
        with self._db.unit_of_work(tenant_id) as uow:
            rows = list(uow.webhooks.endpoints(decode_page_token(page_token), limit + 1))
        token = encode_page_token(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else ""
        return rows[:limit], token

    def update(
        self, ctx: CallContext, tenant_id: str, endpoint_id: str, spec: EndpointSpec, paths: Sequence[str]
    ) -> m.WebhookEndpoint:
        tenant_id = tenant_of(ctx, tenant_id)
        if not paths:
            raise InvalidArgument("update_mask", f"update_mask must name fields to change: {', '.join(UPDATABLE)}")
        unknown = sorted(set(paths) - set(UPDATABLE))
        if unknown:
            raise InvalidArgument("update_mask", f"cannot update {', '.join(unknown)}")
        with self._db.unit_of_work(tenant_id) as uow:
            endpoint = uow.webhooks.endpoint(endpoint_id)
            before = _view(endpoint)
            if "url" in paths:
                endpoint.url = check_endpoint_url(spec.url, self._policy)
            if "description" in paths:
                endpoint.description = check_description(spec.description)
            if "event_types" in paths:
                endpoint.event_types = events.validate_filters(spec.event_types)
            if "enabled" in paths:
                endpoint.status = "active" if spec.enabled else "disabled"
                endpoint.disabled_reason = "" if spec.enabled else "disabled by an administrator"
            endpoint.updated_at = self._clock.now()
            uow.session.flush()
            after = _view(endpoint)
            changed = {k: after[k] for k in after if after[k] != before[k]}
            self._audit.record(
                uow, ctx, tenant_id, "webhook.endpoint_update", f"webhook_endpoint:{endpoint.id}", details=changed
            )
            uow.commit()
        return endpoint

    def delete(self, ctx: CallContext, tenant_id: str, endpoint_id: str) -> None:
        tenant_id = tenant_of(ctx, tenant_id)
        with self._db.unit_of_work(tenant_id) as uow:
            endpoint = uow.webhooks.endpoint(endpoint_id)
            uow.webhooks.delete_endpoint(endpoint)
            self._audit.record(uow, ctx, tenant_id, "webhook.endpoint_delete", f"webhook_endpoint:{endpoint_id}")
            uow.commit()

    def rotate_secret(
        self, ctx: CallContext, tenant_id: str, endpoint_id: str, overlap: dt.timedelta | None
    ) -> tuple[m.WebhookEndpoint, str]:
        """A new secret signs from now on; the previous ones keep signing for `overlap`
        (default 24 h, at most 7 days, 0 = stop at once)."""
        tenant_id = tenant_of(ctx, tenant_id)
        overlap = DEFAULT_OVERLAP if overlap is None else overlap
        if not dt.timedelta(0) <= overlap <= MAX_OVERLAP:
            raise InvalidArgument("previous_secret_ttl", "previous_secret_ttl must be between 0 and 7 days")
        secret, now = standard.generate_secret(), self._clock.now()
        with self._db.unit_of_work(tenant_id) as uow:
            endpoint = uow.webhooks.endpoint(endpoint_id)
            expires = (now + overlap).isoformat()
            kept = [
                {**entry, "expires_at": min(entry.get("expires_at") or expires, expires)}
                for entry in endpoint.secrets
                if not entry.get("expires_at") or dt.datetime.fromisoformat(entry["expires_at"]) > now
            ]
            if overlap == dt.timedelta(0):
                kept = []
            endpoint.secrets = [{"sealed": self.box.seal(endpoint.id, secret), "created_at": now.isoformat()}, *kept]
            endpoint.updated_at = now
            self._audit.record(
                uow,
                ctx,
                tenant_id,
                "webhook.secret_rotate",
                f"webhook_endpoint:{endpoint.id}",
                details={
                    "previous_secret_ttl_seconds": int(overlap.total_seconds()),
                    "secrets_in_force": len(kept) + 1,
                },
            )
            uow.commit()
        return endpoint, secret

    # -- deliveries --------------------------------------------------------------------------

    def deliveries(
        self, ctx: CallContext, tenant_id: str, filters: DeliveryFilter, page_size: int, page_token: str
    ) -> tuple[Sequence[m.WebhookDelivery], str]:
        tenant_id = tenant_of(ctx, tenant_id)
        if filters.status and filters.status not in (events.PENDING, events.RETRYING, events.SUCCEEDED, events.DEAD):
            raise InvalidArgument("status", "unknown delivery status")
        limit = page_size_or_default(page_size)
        with self._db.unit_of_work(tenant_id) as uow:
            rows = list(uow.webhooks.deliveries(filters, decode_page_token(page_token), limit + 1))
        token = encode_page_token(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else ""
        return rows[:limit], token

    def replay(
        self, ctx: CallContext, tenant_id: str, delivery_id: str, endpoint_id: str, since: dt.datetime | None
    ) -> list[m.WebhookDelivery]:
        """Send again, with the same webhook-id: one delivery (any finished state), or
        every dead delivery of an endpoint (since a time). Attempts start over."""
        tenant_id = tenant_of(ctx, tenant_id)
        if bool(delivery_id) == bool(endpoint_id):
            raise InvalidArgument("delivery_id", "name either delivery_id or endpoint_id")
        now = self._clock.now()
        with self._db.unit_of_work(tenant_id) as uow:
            if delivery_id:
                rows = [uow.webhooks.delivery(delivery_id)]
                if rows[0].status in events.DUE_STATUSES:
                    raise FailedPrecondition("the delivery is still being retried; wait for it or for its outcome")
            else:
                uow.webhooks.endpoint(endpoint_id)
                rows = list(uow.webhooks.dead_for_endpoint(endpoint_id, since, MAX_REPLAY))
            for row in rows:
                row.status, row.attempts, row.window_start, row.next_attempt_at = events.PENDING, 0, now, now
                row.finished_at = None
            target = f"webhook_delivery:{delivery_id}" if delivery_id else f"webhook_endpoint:{endpoint_id}"
            self._audit.record(uow, ctx, tenant_id, "webhook.replay", target, details={"deliveries": len(rows)})
            uow.commit()
        return rows

    def send_test(self, ctx: CallContext, tenant_id: str, endpoint_id: str) -> tuple[m.OutboxEvent, m.WebhookDelivery]:
        """A `webhook.test` event for this endpoint only, delivered like any other."""
        tenant_id = tenant_of(ctx, tenant_id)
        now = self._clock.now()
        with self._db.unit_of_work(tenant_id) as uow:
            endpoint = uow.webhooks.endpoint(endpoint_id)
            if endpoint.status != "active":
                raise FailedPrecondition("the endpoint is disabled; enable it first")
            event = emit(uow, tenant_id, events.WEBHOOK_TEST, {"endpoint_id": endpoint.id, "message": "test event"})
            event.dispatched_at = now  # not fanned out: it goes to this endpoint only
            delivery = m.WebhookDelivery(
                tenant_id=tenant_id,
                event_id=event.id,
                endpoint_id=endpoint.id,
                event_type=event.type,
                created_at=event.created_at,
                window_start=now,
                next_attempt_at=now,
            )
            uow.session.add(delivery)
            uow.session.flush()
            uow.commit()
        return event, delivery


def _view(endpoint: m.WebhookEndpoint) -> dict[str, Any]:
    """What the audit log may show of an endpoint (never its secrets)."""
    return {
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": list(endpoint.event_types),
        "status": endpoint.status,
    }


def add_deliveries_for(uow: UnitOfWork, claimed: list[tuple[str, str, str, dt.datetime]], now: dt.datetime) -> int:
    """Fan claimed outbox events out to the matching active endpoints of their tenants."""
    if not claimed:
        return 0
    by_tenant: dict[str, list[m.WebhookEndpoint]] = {}
    for endpoint in uow.webhooks.active_endpoints(tenant for _, tenant, _, _ in claimed):
        by_tenant.setdefault(endpoint.tenant_id, []).append(endpoint)
    rows = []
    for event_id, tenant_id, event_type, created in claimed:
        for endpoint in by_tenant.get(tenant_id, []):
            if events.matches(endpoint.event_types, event_type):
                rows.append(
                    {
                        "id": m.new_id(),
                        "tenant_id": tenant_id,
                        "event_id": event_id,
                        "endpoint_id": endpoint.id,
                        "event_type": event_type,
                        "status": events.PENDING,
                        "attempts": 0,
                        "created_at": created,
                        "window_start": now,
                        "next_attempt_at": now,
                        "last_status_code": 0,
                        "last_error": "",
                        "last_duration_ms": 0.0,
                    }
                )
    uow.webhooks.add_deliveries(rows)
    return len(rows)
