"""Writing domain events: to the outbox, in the caller's unit of work (so an event
exists exactly when its change committed). The request id and traceparent of the call
are attached by the outbox row's defaults (store/models.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tahoe_auth.domain import events
from tahoe_auth.store import models as m
from tahoe_auth.store.db import UnitOfWork


def emit(uow: UnitOfWork, tenant_id: str, event_type: str, data: Mapping[str, Any]) -> m.OutboxEvent:
    if event_type not in events.CATALOG:
        raise ValueError(f"event type {event_type!r} is not in domain.events.CATALOG")
    return uow.outbox.add(tenant_id, event_type, dict(data))
