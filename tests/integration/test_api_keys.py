"""API keys on AuthService: format and checksum, storage, scopes, expiry, revocation,
rotation with a grace period, and last use recorded off the request path."""

from __future__ import annotations

import time

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from tahoe_auth.domain import apikeys
from tahoe_auth.v1 import auth_pb2, tenant_pb2
from tests.integration.test_no_secrets_at_rest import dump_database
from tests.support import RunningServer, bearer, call_error, error_reason, request_sql, wait_until


def create_key(server: RunningServer, token: str, scopes: list[str], **fields: object) -> auth_pb2.CreateApiKeyResponse:
    return server.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(name="key", scopes=scopes, **fields),  # type: ignore[arg-type]
        metadata=bearer(token),
    )


def principal(server: RunningServer, credential: str) -> auth_pb2.ValidateTokenResponse:
    return server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=credential))


def works(server: RunningServer, credential: str) -> bool:
    try:
        principal(server, credential)
        return True
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        return False


def test_a_key_is_shown_once_recognisable_and_stored_only_as_an_hmac(
    server: RunningServer, pg_env: dict[str, str]
) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    created = create_key(server, owner, ["transcription:read", "usage:read"])
    secret, key = created.secret, created.api_key
    parsed = apikeys.parse(secret)
    assert parsed is not None and parsed.kind == "sk" and secret.startswith("tahoe_sk_")
    assert len(secret) - len("tahoe_sk_") - apikeys.CHECKSUM_LENGTH >= 27  # >= 160 bits of base62
    assert key.prefix == parsed.prefix and secret.startswith(key.prefix)
    assert key.user_id == tenant.owner_id and key.created_by == tenant.owner_id
    found = principal(server, secret).principal
    assert found.subject == key.id and found.subject_type == 2  # SUBJECT_TYPE_API_KEY
    assert set(found.permissions) == {"transcription:read", "usage:read"}

    listed = server.auth.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=bearer(owner)).api_keys
    assert [k.id for k in listed] == [key.id]
    assert listed[0].prefix == key.prefix and list(listed[0].scopes) == ["transcription:read", "usage:read"]
    stored = dump_database(pg_env["TAHOE_DATABASE_URL"])
    assert secret not in stored and secret.removeprefix("tahoe_sk_") not in stored
    assert key.prefix in stored


def test_a_typo_is_rejected_without_touching_the_database(server: RunningServer) -> None:
    tenant = server.create_tenant()
    secret = create_key(server, server.owner_token(tenant), ["usage:read"]).secret
    typo = secret[:12] + ("A" if secret[12] != "A" else "B") + secret[13:]
    with request_sql(server.app.db) as seen:
        error = call_error(principal, server, typo)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and seen == []
    # A well-formed unknown key does reach the database: the counter works.
    with request_sql(server.app.db) as seen:
        call_error(principal, server, apikeys.generate("sk"))
    assert seen


def test_a_warm_key_costs_no_sql_and_last_use_is_written_later(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    created = create_key(server, owner, ["usage:read"])
    principal(server, created.secret)  # cold: loads the key and its owner
    with request_sql(server.app.db) as seen:
        for _ in range(20):
            principal(server, created.secret)
    assert seen == []
    shown = server.auth.GetApiKey(auth_pb2.GetApiKeyRequest(api_key_id=created.api_key.id), metadata=bearer(owner))
    assert shown.api_key.HasField("last_used_time")  # from memory, before any write
    server.app.last_used.flush()
    with server.app.db.unit_of_work(tenant.id) as uow:
        assert uow.api_keys.get(created.api_key.id).last_used_at is not None


def test_scopes_must_lie_within_the_creators_and_the_owners_permissions(server: RunningServer) -> None:
    tenant = server.create_tenant()
    member_id, member = server.add_user(tenant, ["member"])
    _, viewer = server.add_user(tenant, ["viewer"])
    escalation = call_error(create_key, server, member, ["users:create"])
    assert error_reason(escalation) == "PRIVILEGE_ESCALATION"
    wildcard = call_error(create_key, server, member, ["transcription:*"])
    assert error_reason(wildcard) == "PRIVILEGE_ESCALATION"
    # The owner may create keys for others, but not beyond what they hold.
    owner = server.owner_token(tenant)
    for_member = call_error(create_key, server, owner, ["users:delete"], user_id=member_id)
    assert error_reason(for_member) == "PRIVILEGE_ESCALATION"
    assert create_key(server, owner, ["transcription:write"], user_id=member_id).api_key.user_id == member_id
    # A member may not create keys for someone else; a viewer none at all.
    other = call_error(create_key, server, member, ["usage:read"], user_id=tenant.owner_id)
    assert error_reason(other) == "PERMISSION_DENIED"
    assert error_reason(call_error(create_key, server, viewer, ["usage:read"])) == "PERMISSION_DENIED"
    # A key does not mint keys.
    key = create_key(server, member, ["apikeys:create", "usage:read"]).secret
    assert error_reason(call_error(create_key, server, key, ["usage:read"])) == "PERMISSION_DENIED"
    assert call_error(create_key, server, member, []).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_demoting_the_owner_shrinks_the_key(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = bearer(server.owner_token(tenant))
    user_id, token = server.add_user(tenant, ["admin"])
    secret = create_key(server, token, ["users:create", "transcription:read"]).secret
    assert set(principal(server, secret).principal.permissions) == {"users:create", "transcription:read"}
    server.tenants.AssignRole(tenant_pb2.AssignRoleRequest(user_id=user_id, role="viewer"), metadata=owner)
    server.tenants.RemoveRole(tenant_pb2.RemoveRoleRequest(user_id=user_id, role="admin"), metadata=owner)
    assert wait_until(lambda: set(principal(server, secret).principal.permissions) == {"transcription:read"}) < 1.0


def test_expired_keys_are_refused(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    past = timestamp_pb2.Timestamp(seconds=int(time.time()) - 10)
    assert call_error(create_key, server, owner, ["usage:read"], expire_time=past).code() == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    soon = timestamp_pb2.Timestamp(seconds=int(time.time()) + 2)
    created = create_key(server, owner, ["usage:read"], expire_time=soon)
    assert works(server, created.secret)
    wait_until(lambda: not works(server, created.secret), limit=4.0, step=0.1)
    listed = server.auth.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=bearer(owner)).api_keys
    assert created.api_key.id not in [k.id for k in listed]
    ended = server.auth.ListApiKeys(auth_pb2.ListApiKeysRequest(show_ended=True), metadata=bearer(owner)).api_keys
    assert created.api_key.id in [k.id for k in ended]


def test_rotation_with_a_grace_period_then_without(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = bearer(server.owner_token(tenant))
    first = create_key(server, server.owner_token(tenant), ["usage:read"])
    assert works(server, first.secret)
    rotated = server.auth.RotateApiKey(
        auth_pb2.RotateApiKeyRequest(api_key_id=first.api_key.id, grace_period=duration_pb2.Duration(seconds=2)),
        metadata=owner,
    )
    assert rotated.api_key.id == first.api_key.id and rotated.secret != first.secret
    assert rotated.api_key.HasField("previous_secret_expire_time")
    assert works(server, first.secret) and works(server, rotated.secret)
    wait_until(lambda: not works(server, first.secret), limit=4.0, step=0.1)
    assert works(server, rotated.secret)

    third = server.auth.RotateApiKey(auth_pb2.RotateApiKeyRequest(api_key_id=first.api_key.id), metadata=owner)
    assert not works(server, rotated.secret) and works(server, third.secret)
    too_long = call_error(
        server.auth.RotateApiKey,
        auth_pb2.RotateApiKeyRequest(api_key_id=first.api_key.id, grace_period=duration_pb2.Duration(seconds=10**7)),
        metadata=owner,
    )
    assert too_long.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_members_see_and_revoke_only_their_own_keys(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    _, member = server.add_user(tenant, ["member"])
    owners_key = create_key(server, owner, ["usage:read"]).api_key
    members_key = create_key(server, member, ["usage:read"]).api_key
    mine = server.auth.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=bearer(member)).api_keys
    assert [k.id for k in mine] == [members_key.id]
    everyone = server.auth.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=bearer(owner)).api_keys
    assert {k.id for k in everyone} == {owners_key.id, members_key.id}
    denied = call_error(
        server.auth.RevokeApiKey, auth_pb2.RevokeApiKeyRequest(api_key_id=owners_key.id), metadata=bearer(member)
    )
    assert error_reason(denied) == "PERMISSION_DENIED"
    revoked = server.auth.RevokeApiKey(
        auth_pb2.RevokeApiKeyRequest(api_key_id=members_key.id), metadata=bearer(member)
    ).api_key
    assert revoked.HasField("revoke_time")
    rotate = call_error(
        server.auth.RotateApiKey, auth_pb2.RotateApiKeyRequest(api_key_id=members_key.id), metadata=bearer(member)
    )
    assert rotate.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_revoked_key_is_refused_by_every_instance_within_a_second(
    pair: tuple[RunningServer, RunningServer],
) -> None:
    a, b = pair
    tenant = a.create_tenant()
    owner = a.owner_token(tenant)
    created = create_key(a, owner, ["usage:read"])
    assert works(b, created.secret) and works(b, created.secret)  # b has it cached
    assert len(b.app.api_key_resolver.keys) == 1
    a.auth.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(api_key_id=created.api_key.id), metadata=bearer(owner))
    assert wait_until(lambda: not works(b, created.secret)) < 1.0
