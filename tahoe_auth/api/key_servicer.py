"""KeyService: staged signing-key rotation and emergency revocation, for platform
administrators."""

from __future__ import annotations

import grpc

from tahoe_auth.api import convert
from tahoe_auth.api.interceptors import current_call
from tahoe_auth.domain.errors import InvalidArgument
from tahoe_auth.domain.key_schedule import KeyState, KeyStatus
from tahoe_auth.kernel.clock import Clock
from tahoe_auth.services.keys import KeyManager
from tahoe_auth.services.usage import require_platform
from tahoe_auth.v1 import keys_pb2, keys_pb2_grpc

STATES = {
    KeyState.NEXT: keys_pb2.SIGNING_KEY_STATE_NEXT,
    KeyState.ACTIVE: keys_pb2.SIGNING_KEY_STATE_ACTIVE,
    KeyState.RETIRED: keys_pb2.SIGNING_KEY_STATE_RETIRED,
    KeyState.REVOKED: keys_pb2.SIGNING_KEY_STATE_REVOKED,
}
MAX_KID_LENGTH = 64
ONLY_PLATFORM = "signing keys are managed by platform administrators"


def signing_key(status: KeyStatus) -> keys_pb2.SigningKey:
    return keys_pb2.SigningKey(
        kid=status.kid,
        algorithm="ES256",
        active=status.state is KeyState.ACTIVE,
        state=STATES[status.state],
        published=status.published,
        create_time=convert.timestamp(status.created_at),
        activate_time=convert.timestamp(status.activates_at),
        retire_time=convert.timestamp(status.retired_at),
        revoke_time=convert.timestamp(status.revoked_at),
        unpublish_time=convert.timestamp(status.unpublish_at),
    )


class KeyServicer(keys_pb2_grpc.KeyServiceServicer):
    def __init__(self, keys: KeyManager, clock: Clock) -> None:
        self._keys = keys
        self._clock = clock

    def _listing(self) -> tuple[str, list[keys_pb2.SigningKey]]:
        schedule = self._keys.schedule()
        return schedule.active_kid or "", [signing_key(k) for k in schedule.keys]

    def RotateSigningKey(
        self, request: keys_pb2.RotateSigningKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.RotateSigningKeyResponse:
        ctx = current_call()
        require_platform(ctx.require_principal(), ONLY_PLATFORM)
        staged = self._keys.rotate(ctx)
        active_kid, keys = self._listing()
        return keys_pb2.RotateSigningKeyResponse(
            active_kid=active_kid,
            keys=keys,
            rotate_time=convert.timestamp(staged.created_at),
            next_kid=staged.kid,
            activate_time=convert.timestamp(staged.activates_at),
        )

    def ListSigningKeys(
        self, request: keys_pb2.ListSigningKeysRequest, context: grpc.ServicerContext
    ) -> keys_pb2.ListSigningKeysResponse:
        require_platform(current_call().require_principal(), ONLY_PLATFORM)
        active_kid, keys = self._listing()
        return keys_pb2.ListSigningKeysResponse(keys=keys, active_kid=active_kid)

    def RevokeSigningKey(
        self, request: keys_pb2.RevokeSigningKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.RevokeSigningKeyResponse:
        ctx = current_call()
        require_platform(ctx.require_principal(), ONLY_PLATFORM)
        if not request.kid or len(request.kid) > MAX_KID_LENGTH:
            raise InvalidArgument("kid", "kid is required (ListSigningKeys shows them)")
        self._keys.revoke(request.kid, ctx)
        active_kid, keys = self._listing()
        revoked = next(k for k in keys if k.kid == request.kid)
        return keys_pb2.RevokeSigningKeyResponse(active_kid=active_kid, keys=keys, revoke_time=revoked.revoke_time)
