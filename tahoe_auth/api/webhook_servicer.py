"""WebhookService: validate, convert, call one use case, convert back."""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf import duration_pb2

from tahoe_auth.api import convert
from tahoe_auth.api.convert import required
from tahoe_auth.api.interceptors import current_call
from tahoe_auth.domain import events
from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.domain.webhooks import DeliveryFilter
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services.webhooks import EndpointSpec, WebhookAdmin, WebhookDelivery, WebhookEndpoint
from tahoe_auth.v1 import webhooks_pb2 as pb
from tahoe_auth.v1 import webhooks_pb2_grpc

STATUSES = {
    events.PENDING: pb.WEBHOOK_DELIVERY_STATUS_PENDING,
    events.RETRYING: pb.WEBHOOK_DELIVERY_STATUS_RETRYING,
    events.SUCCEEDED: pb.WEBHOOK_DELIVERY_STATUS_SUCCEEDED,
    events.DEAD: pb.WEBHOOK_DELIVERY_STATUS_DEAD,
}
STATUS_NAMES = {value: key for key, value in STATUSES.items()}


def endpoint(row: WebhookEndpoint, now: dt.datetime) -> pb.WebhookEndpoint:
    in_force = sum(
        1 for s in row.secrets if not s.get("expires_at") or dt.datetime.fromisoformat(s["expires_at"]) > now
    )
    return pb.WebhookEndpoint(
        id=row.id,
        tenant_id=row.tenant_id,
        url=row.url,
        description=row.description,
        event_types=list(row.event_types),
        enabled=row.status == "active",
        disabled_reason=row.disabled_reason,
        secrets_in_force=in_force,
        create_time=convert.timestamp(row.created_at),
        update_time=convert.timestamp(row.updated_at),
    )


def delivery(row: WebhookDelivery) -> pb.WebhookDelivery:
    due = row.status in events.DUE_STATUSES
    return pb.WebhookDelivery(
        id=row.id,
        tenant_id=row.tenant_id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event_type=row.event_type,
        status=STATUSES.get(row.status, pb.WEBHOOK_DELIVERY_STATUS_UNSPECIFIED),
        attempts=row.attempts,
        create_time=convert.timestamp(row.created_at),
        next_attempt_time=convert.timestamp(row.next_attempt_at) if due else None,
        last_attempt_time=convert.timestamp(row.last_attempt_at),
        last_response_code=row.last_status_code,
        last_error=row.last_error,
        last_duration=_duration(row.last_duration_ms),
        finish_time=convert.timestamp(row.finished_at),
    )


def _duration(milliseconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMicroseconds(round(milliseconds * 1000))
    return duration


def _spec(message: pb.WebhookEndpoint) -> EndpointSpec:
    return EndpointSpec(message.url, message.description, tuple(message.event_types), message.enabled)


class WebhookServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    def __init__(self, admin: WebhookAdmin, clock: Clock) -> None:
        self._admin = admin
        self._now = clock.now

    def CreateWebhookEndpoint(
        self, request: pb.CreateWebhookEndpointRequest, context: grpc.ServicerContext
    ) -> pb.CreateWebhookEndpointResponse:
        if not request.HasField("endpoint") or not request.endpoint.url:
            raise InvalidArgument("endpoint.url", "endpoint.url is required")
        # New endpoints start enabled (proto3 cannot tell an unset `enabled` from false).
        spec = EndpointSpec(request.endpoint.url, request.endpoint.description, tuple(request.endpoint.event_types))
        row, secret = self._admin.create(current_call(), request.tenant_id, spec)
        return pb.CreateWebhookEndpointResponse(endpoint=endpoint(row, self._now()), secret=secret)

    def GetWebhookEndpoint(
        self, request: pb.GetWebhookEndpointRequest, context: grpc.ServicerContext
    ) -> pb.GetWebhookEndpointResponse:
        row = self._admin.get(current_call(), request.tenant_id, required(request.endpoint_id, "endpoint_id"))
        return pb.GetWebhookEndpointResponse(endpoint=endpoint(row, self._now()))

    def ListWebhookEndpoints(
        self, request: pb.ListWebhookEndpointsRequest, context: grpc.ServicerContext
    ) -> pb.ListWebhookEndpointsResponse:
        rows, token = self._admin.list_endpoints(
            current_call(), request.tenant_id, request.page_size, request.page_token
        )
        now = self._now()
        return pb.ListWebhookEndpointsResponse(endpoints=[endpoint(r, now) for r in rows], next_page_token=token)

    def UpdateWebhookEndpoint(
        self, request: pb.UpdateWebhookEndpointRequest, context: grpc.ServicerContext
    ) -> pb.UpdateWebhookEndpointResponse:
        endpoint_id = required(request.endpoint.id, "endpoint.id")
        row = self._admin.update(
            current_call(), request.tenant_id, endpoint_id, _spec(request.endpoint), list(request.update_mask.paths)
        )
        return pb.UpdateWebhookEndpointResponse(endpoint=endpoint(row, self._now()))

    def DeleteWebhookEndpoint(
        self, request: pb.DeleteWebhookEndpointRequest, context: grpc.ServicerContext
    ) -> pb.DeleteWebhookEndpointResponse:
        self._admin.delete(current_call(), request.tenant_id, required(request.endpoint_id, "endpoint_id"))
        return pb.DeleteWebhookEndpointResponse()

    def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: grpc.ServicerContext
    ) -> pb.RotateWebhookSecretResponse:
        overlap = request.previous_secret_ttl.ToTimedelta() if request.HasField("previous_secret_ttl") else None
        row, secret = self._admin.rotate_secret(
            current_call(), request.tenant_id, required(request.endpoint_id, "endpoint_id"), overlap
        )
        return pb.RotateWebhookSecretResponse(endpoint=endpoint(row, self._now()), secret=secret)

    def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: grpc.ServicerContext
    ) -> pb.ListWebhookDeliveriesResponse:
        filters = DeliveryFilter(request.endpoint_id, request.event_id, STATUS_NAMES.get(request.status, ""))
        rows, token = self._admin.deliveries(
            current_call(), request.tenant_id, filters, request.page_size, request.page_token
        )
        return pb.ListWebhookDeliveriesResponse(deliveries=[delivery(r) for r in rows], next_page_token=token)

    def ReplayWebhookDeliveries(
        self, request: pb.ReplayWebhookDeliveriesRequest, context: grpc.ServicerContext
    ) -> pb.ReplayWebhookDeliveriesResponse:
        since = convert.from_timestamp(request.start_time)
        rows = self._admin.replay(current_call(), request.tenant_id, request.delivery_id, request.endpoint_id, since)
        return pb.ReplayWebhookDeliveriesResponse(deliveries=[delivery(r) for r in rows])

    def SendTestWebhookEvent(
        self, request: pb.SendTestWebhookEventRequest, context: grpc.ServicerContext
    ) -> pb.SendTestWebhookEventResponse:
        event, row = self._admin.send_test(
            current_call(), request.tenant_id, required(request.endpoint_id, "endpoint_id")
        )
        return pb.SendTestWebhookEventResponse(event_id=event.id, delivery=delivery(row))

    def ListWebhookEventTypes(
        self, request: pb.ListWebhookEventTypesRequest, context: grpc.ServicerContext
    ) -> pb.ListWebhookEventTypesResponse:
        return pb.ListWebhookEventTypesResponse(event_types=events.CATALOG)
