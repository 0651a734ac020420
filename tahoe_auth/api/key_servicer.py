"""KeyService: signing-key rotation for platform administrators."""

from __future__ import annotations

import grpc

from tahoe_auth.api import convert
from tahoe_auth.api.interceptors import current_call
from tahoe_auth.clock import Clock
from tahoe_auth.services.keys import KeyManager
from tahoe_auth.services.usage import require_platform
from tahoe_auth.v1 import keys_pb2, keys_pb2_grpc


class KeyServicer(keys_pb2_grpc.KeyServiceServicer):
    def __init__(self, keys: KeyManager, clock: Clock) -> None:
        self._keys = keys
        self._clock = clock

    def _published(self) -> list[keys_pb2.SigningKey]:
        ring = self._keys.ring()
        kids = sorted(ring.keys, key=lambda kid: kid != ring.active_kid)
        return [keys_pb2.SigningKey(kid=kid, algorithm="ES256", active=kid == ring.active_kid) for kid in kids]

    def RotateSigningKey(
        self, request: keys_pb2.RotateSigningKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.RotateSigningKeyResponse:
        ctx = current_call()
        require_platform(ctx.require_principal(), "signing keys are managed by platform administrators")
        kid = self._keys.rotate(ctx)
        return keys_pb2.RotateSigningKeyResponse(
            active_kid=kid, keys=self._published(), rotate_time=convert.timestamp(self._clock.now())
        )

    def ListSigningKeys(
        self, request: keys_pb2.ListSigningKeysRequest, context: grpc.ServicerContext
    ) -> keys_pb2.ListSigningKeysResponse:
        require_platform(current_call().require_principal(), "signing keys are managed by platform administrators")
        return keys_pb2.ListSigningKeysResponse(keys=self._published())
