"""Sends usage events to Tahoe Auth's UsageService as the transcription service itself:
a platform-wide service account (`tahoe-auth service-account create --name transcription
--permission usage:write`) whose client credentials buy short-lived service tokens
(AuthService.IssueServiceToken), renewed before they expire or when refused."""

from __future__ import annotations

import threading
import time

import grpc

from tahoe_auth.v1 import auth_pb2, auth_pb2_grpc, usage_pb2, usage_pb2_grpc
from transcription_demo.usage import UsageEvent

RENEW_BEFORE = 60.0
TIMEOUT = 5.0


class GrpcUsageSender:
    def __init__(self, target: str, client_id: str, client_secret: str) -> None:
        self._channel = grpc.insecure_channel(target)
        self._auth = auth_pb2_grpc.AuthServiceStub(self._channel)
        self._usage = usage_pb2_grpc.UsageServiceStub(self._channel)
        self._client_id = client_id
        self._client_secret = client_secret
        self._lock = threading.Lock()
        self._token = ""
        self._renew_at = 0.0

    def _bearer(self, renew: bool = False) -> tuple[tuple[str, str], ...]:
        with self._lock:
            if renew or not self._token or time.time() >= self._renew_at:
                issued = self._auth.IssueServiceToken(
                    auth_pb2.IssueServiceTokenRequest(client_id=self._client_id, client_secret=self._client_secret),
                    timeout=TIMEOUT,
                )
                self._token = issued.access_token
                self._renew_at = time.time() + max(1.0, issued.expires_in - RENEW_BEFORE)
            return (("authorization", f"Bearer {self._token}"),)

    def __call__(self, event: UsageEvent) -> None:
        request = usage_pb2.RecordUsageRequest(
            tenant_id=event.tenant_id,
            event=usage_pb2.UsageEvent(
                metric=event.metric, quantity=event.quantity, idempotency_key=event.idempotency_key
            ),
        )
        metadata = self._bearer()
        if event.request_id:
            metadata += (("x-request-id", event.request_id),)
        try:
            self._usage.RecordUsage(request, metadata=metadata, timeout=TIMEOUT)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise
            self._usage.RecordUsage(request, metadata=self._bearer(renew=True), timeout=TIMEOUT)

    def close(self) -> None:
        self._channel.close()
