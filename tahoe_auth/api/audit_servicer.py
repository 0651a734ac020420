"""AuditService: validate, convert, call one use case, convert back."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from google.protobuf import struct_pb2

from tahoe_auth.api import convert
from tahoe_auth.api.interceptors import current_call
from tahoe_auth.domain import audit
from tahoe_auth.domain.audit import AuditFilter
from tahoe_auth.services.audit import AuditEvent, AuditReader, AuditVerifier, check_filters
from tahoe_auth.v1 import audit_pb2, audit_pb2_grpc

OUTCOMES = {
    audit.SUCCESS: audit_pb2.AUDIT_OUTCOME_SUCCESS,
    audit.FAILURE: audit_pb2.AUDIT_OUTCOME_FAILURE,
    audit.DENIED: audit_pb2.AUDIT_OUTCOME_DENIED,
}
OUTCOME_NAMES = {value: key for key, value in OUTCOMES.items()}


def audit_event(row: AuditEvent) -> audit_pb2.AuditEvent:
    details = struct_pb2.Struct()
    details.update(row.details)
    return audit_pb2.AuditEvent(
        tenant_id=row.tenant_id,
        sequence=row.sequence,
        time=convert.timestamp(row.occurred_at),
        actor=row.actor,
        actor_type=row.actor_type,
        action=row.action,
        target=row.target,
        outcome=OUTCOMES.get(row.outcome, audit_pb2.AUDIT_OUTCOME_UNSPECIFIED),
        client_address=row.client_address,
        request_id=row.request_id,
        traceparent=row.traceparent,
        details=details,
        previous_hash=row.previous_hash,
        hash=row.entry_hash,
    )


def _filters(request: audit_pb2.ListAuditEventsRequest | audit_pb2.ExportAuditEventsRequest) -> AuditFilter:
    outcome = OUTCOME_NAMES.get(request.outcome, "") if isinstance(request, audit_pb2.ListAuditEventsRequest) else ""
    start, end = convert.from_timestamp(request.start_time), convert.from_timestamp(request.end_time)
    check_filters(request.actor, request.action, outcome, start, end)
    return AuditFilter(actor=request.actor, action=request.action, outcome=outcome, start=start, end=end)


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, reader: AuditReader, verifier: AuditVerifier) -> None:
        self._reader = reader
        self._verifier = verifier

    def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ListAuditEventsResponse:
        rows, token = self._reader.list_events(
            current_call(), request.tenant_id, _filters(request), request.page_size, request.page_token
        )
        return audit_pb2.ListAuditEventsResponse(events=[audit_event(r) for r in rows], next_page_token=token)

    def ExportAuditEvents(
        self, request: audit_pb2.ExportAuditEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[audit_pb2.ExportAuditEventsResponse]:
        csv = request.format == audit_pb2.AUDIT_EXPORT_FORMAT_CSV
        content_type = "text/csv" if csv else "application/x-ndjson"
        chunks = self._reader.export(current_call(), request.tenant_id, _filters(request), "csv" if csv else "jsonl")
        for chunk in chunks:
            yield audit_pb2.ExportAuditEventsResponse(content_type=content_type, content=chunk)

    def VerifyAuditChain(
        self, request: audit_pb2.VerifyAuditChainRequest, context: grpc.ServicerContext
    ) -> audit_pb2.VerifyAuditChainResponse:
        chain, checked, problem = self._verifier.verify_for(current_call(), request.tenant_id)
        response = audit_pb2.VerifyAuditChainResponse(tenant_id=chain, intact=problem is None, entries_checked=checked)
        if problem is not None:
            response.first_problem.sequence = problem.sequence
            response.first_problem.problem = problem.problem
        return response
