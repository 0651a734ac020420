"""Invitations: single-use hashed tokens, expiry, resend, revoke, joining as an
existing user, and the `user.invited` outbox event."""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf import duration_pb2

from tahoe_auth.domain import crypto
from tahoe_auth.v1 import auth_pb2, tenant_pb2
from tests.support import OWNER_PASSWORD, RunningServer, bearer, call_error, error_reason


def invite(
    server: RunningServer, token: str, email: str, role: str = "member", **fields: object
) -> tenant_pb2.CreateInvitationResponse:
    return server.tenants.CreateInvitation(
        tenant_pb2.CreateInvitationRequest(email=email, role=role, **fields),  # type: ignore[arg-type]
        metadata=bearer(token),
    )


def accept(
    server: RunningServer, token: str, password: str = "new user password"
) -> tenant_pb2.AcceptInvitationResponse:
    return server.tenants.AcceptInvitation(
        tenant_pb2.AcceptInvitationRequest(token=token, password=password, display_name="New User")
    )


def test_invite_accept_and_log_in(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    created = invite(server, owner, "New@Example.test")
    invitation = created.invitation
    assert invitation.state == tenant_pb2.INVITATION_STATE_PENDING and invitation.email == "new@example.test"
    assert invitation.invited_by == tenant.owner_id
    expiry = invitation.expire_time.ToDatetime(dt.UTC) - invitation.create_time.ToDatetime(dt.UTC)
    assert expiry == dt.timedelta(hours=72)
    with server.app.db.unit_of_work(tenant.id) as uow:
        row = uow.invitations.get(invitation.id)
        assert row.token_hash == crypto.sha256_hex(created.token) and created.token not in row.token_hash
        events = uow.outbox.of_type("user.invited")
    assert [e.payload["invitation_id"] for e in events] == [invitation.id]
    assert created.token not in str(events[0].payload)

    joined = accept(server, created.token)
    assert joined.tenant_id == tenant.id and joined.invitation.state == tenant_pb2.INVITATION_STATE_ACCEPTED
    me = server.auth.ValidateToken(auth_pb2.ValidateTokenRequest(token=joined.tokens.access_token)).principal
    assert me.subject == joined.user_id and "transcription:write" in me.permissions
    login = auth_pb2.LoginRequest(tenant=tenant.slug, email="new@example.test", password="new user password")
    assert server.auth.Login(login).user_id == joined.user_id

    listed = server.tenants.ListInvitations(
        tenant_pb2.ListInvitationsRequest(state=tenant_pb2.INVITATION_STATE_ACCEPTED), metadata=bearer(owner)
    ).invitations
    assert [i.user_id for i in listed] == [joined.user_id]


def test_a_token_works_once(server: RunningServer) -> None:
    tenant = server.create_tenant()
    token = invite(server, server.owner_token(tenant), "once@x.test").token
    accept(server, token)
    reuse = call_error(accept, server, token)
    assert reuse.code() == grpc.StatusCode.UNAUTHENTICATED and error_reason(reuse) == "INVITATION_INVALID"
    for bogus in ("iv_nope", "garbage"):
        assert error_reason(call_error(accept, server, bogus)) == "INVITATION_INVALID"


def test_expired_and_revoked_invitations_are_refused(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    expiring = invite(server, owner, "late@x.test", ttl=duration_pb2.Duration(seconds=3600))
    with server.app.db.unit_of_work(tenant.id) as uow:
        uow.invitations.get(expiring.invitation.id).expires_at = server.app.clock.now() - dt.timedelta(seconds=1)
        uow.commit()
    assert error_reason(call_error(accept, server, expiring.token)) == "INVITATION_INVALID"
    expired = server.tenants.ListInvitations(
        tenant_pb2.ListInvitationsRequest(state=tenant_pb2.INVITATION_STATE_EXPIRED), metadata=bearer(owner)
    ).invitations
    assert [i.id for i in expired] == [expiring.invitation.id]

    revoked = invite(server, owner, "gone@x.test")
    server.tenants.RevokeInvitation(
        tenant_pb2.RevokeInvitationRequest(invitation_id=revoked.invitation.id), metadata=bearer(owner)
    )
    assert error_reason(call_error(accept, server, revoked.token)) == "INVITATION_INVALID"
    too_long = call_error(invite, server, owner, "x@x.test", ttl=duration_pb2.Duration(seconds=90 * 86400))
    assert too_long.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_resend_replaces_the_token(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    first = invite(server, owner, "again@x.test")
    resent = server.tenants.ResendInvitation(
        tenant_pb2.ResendInvitationRequest(invitation_id=first.invitation.id), metadata=bearer(owner)
    )
    assert resent.token != first.token and resent.invitation.id == first.invitation.id
    assert error_reason(call_error(accept, server, first.token)) == "INVITATION_INVALID"
    accept(server, resent.token)
    after = call_error(
        server.tenants.ResendInvitation,
        tenant_pb2.ResendInvitationRequest(invitation_id=first.invitation.id),
        metadata=bearer(owner),
    )
    assert after.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_an_existing_user_joins_with_their_own_password(server: RunningServer) -> None:
    tenant = server.create_tenant()
    owner = server.owner_token(tenant)
    user_id, _ = server.add_user(tenant, ["viewer"], email="known@x.test")
    token = invite(server, owner, "known@x.test", role="member").token
    # Holding the token is not enough to log in as someone who already has a password.
    wrong = call_error(accept, server, token, "not their password")
    assert error_reason(wrong) == "INVALID_CREDENTIALS"
    joined = accept(server, token, OWNER_PASSWORD)
    assert joined.user_id == user_id
    user = server.tenants.GetUser(tenant_pb2.GetUserRequest(user_id=user_id), metadata=bearer(owner)).user
    assert list(user.roles) == ["member", "viewer"]
