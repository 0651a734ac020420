"""The console's people pages in a real browser: invitations made and accepted in a
second browser, custom roles from the permission picker and assigned to a user,
disabling, enabling, deleting, searching users, resetting a password, and errors in
plain words. Each effect is checked through the gRPC API too."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from playwright.sync_api import expect

from tahoe_auth.v1 import auth_pb2, principal_pb2, tenant_pb2
from tests.e2e import stack as e2e
from tests.e2e.console.conftest import VIEWPORT, Console
from tests.support import Tenant, bearer

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser]

SLOW = 20_000  # ms: a loaded 2-core machine hashes passwords slowly


@pytest.fixture
def second(browser: Any, console: Console) -> Iterator[Console]:
    """Another browser (its own cookies), on the same console, watched for page errors."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    page = context.new_page()
    other = Console(page, console.base, console.shots)
    page.on("console", lambda m: m.type == "error" and "Refused to" in m.text and other.problems.append(m.text))
    page.on("pageerror", lambda error: other.problems.append(f"script error: {error}"))
    try:
        yield other
    finally:
        context.close()
    assert not other.problems, other.problems


def owner_md(live: e2e.Stack, tenant: Tenant) -> tuple[tuple[str, str], ...]:
    return bearer(live.auth.owner_token(tenant))


def row(console: Console, text: str) -> Any:
    return console.page.get_by_role("row").filter(has_text=text)


def test_invite_a_user_who_accepts_in_another_browser_and_signs_in(
    console: Console, second: Console, live: e2e.Stack, tenant: Tenant
) -> None:
    email = f"new{secrets.token_hex(3)}@{tenant.slug}.test"
    page = console.page
    console.sign_in(tenant)
    console.go("Invitations")
    page.get_by_role("button", name="Invite a user").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Email").fill(email)
    dialog.get_by_label("Role").select_option("viewer")
    dialog.get_by_role("button", name="Create invitation").click()
    expect(dialog.get_by_role("status")).to_contain_text(f"Invitation created for {email}")
    link = dialog.locator("[data-invitation-link] [data-secret]").inner_text()
    assert re.fullmatch(rf"{re.escape(console.url())}#/accept\?token=[^&\s]+", link), link
    dialog.get_by_role("button", name="Done").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    invitation = row(console, email)
    expect(invitation).to_contain_text("pending")
    expect(invitation).to_contain_text("viewer")
    console.screenshot("invitations")
    assert console.sideways_overflow_at_200_percent() <= 0

    # The invitee opens the link in their own browser, with no session.
    other = second.page
    other.goto(link)
    heading = other.get_by_role("heading", level=1)
    expect(heading).to_have_text("Accept an invitation")
    expect(heading).to_be_focused()
    expect(other.get_by_text("Loading the console")).to_have_count(0)
    second.screenshot("accept")
    assert second.sideways_overflow_at_200_percent() <= 0
    other.get_by_label("Name").fill("New Person")
    other.get_by_label("Password", exact=True).fill("a long new password")
    other.get_by_label("Password again").fill("a long new password")
    other.get_by_role("button", name="Accept the invitation").click()
    expect(other.get_by_role("heading", level=1)).to_have_text("Invitation accepted", timeout=SLOW)
    expect(other.get_by_text("You are signed in.")).to_be_visible()
    other.get_by_role("link", name="Open the console").click()
    expect(other.get_by_role("heading", level=1, name="Overview")).to_be_visible()
    expect(other.locator("[data-who]")).to_contain_text(email)

    users = live.auth.tenants.ListUsers(
        tenant_pb2.ListUsersRequest(tenant_id=tenant.id, page_size=100), metadata=owner_md(live, tenant)
    ).users
    (user,) = [u for u in users if u.email == email]
    assert list(user.roles) == ["viewer"] and user.display_name == "New Person" and user.has_password
    # One session for the new user: the console's (the accept call's own was ended).
    login = live.auth.auth.Login(auth_pb2.LoginRequest(tenant=tenant.slug, email=email, password="a long new password"))
    sessions = live.auth.auth.ListSessions(auth_pb2.ListSessionsRequest(), metadata=bearer(login.tokens.access_token))
    assert len(sessions.sessions) == 2, sessions  # the console's and this login's

    # The new user signs out and back in with the password they chose.
    other.get_by_role("button", name="Sign out").click()
    second.sign_in(tenant, email=email, password="a long new password")
    expect(other.locator("[data-who]")).to_contain_text(email)

    # The link was single-use: a second accept is refused in plain words.
    other.goto(link)
    other.reload()
    other.get_by_label("Password", exact=True).fill("a long new password")
    other.get_by_label("Password again").fill("a long new password")
    other.get_by_role("button", name="Accept the invitation").click()
    expect(other.get_by_role("alert")).to_contain_text("This invitation is not valid", timeout=SLOW)

    page.get_by_role("button", name="Refresh").click()
    expect(row(console, email)).to_contain_text("accepted")


def test_resend_and_revoke_an_invitation(console: Console, second: Console, live: e2e.Stack, tenant: Tenant) -> None:
    email = f"inv{secrets.token_hex(3)}@{tenant.slug}.test"
    live.auth.tenants.CreateInvitation(
        tenant_pb2.CreateInvitationRequest(tenant_id=tenant.id, email=email, role="member"),
        metadata=owner_md(live, tenant),
    )
    page = console.page
    console.sign_in(tenant)
    console.go("Invitations")
    row(console, email).get_by_role("button", name="Resend").click()
    link = page.locator("[data-invitation-link] [data-secret]").inner_text()
    assert "#/accept?token=" in link
    row(console, email).get_by_role("button", name="Revoke").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke the invitation").click()
    expect(row(console, email)).to_contain_text("revoked")
    (invitation,) = live.auth.tenants.ListInvitations(
        tenant_pb2.ListInvitationsRequest(tenant_id=tenant.id), metadata=owner_md(live, tenant)
    ).invitations
    assert invitation.state == tenant_pb2.INVITATION_STATE_REVOKED

    second.page.goto(link)
    second.page.get_by_label("Password", exact=True).fill("a long new password")
    second.page.get_by_label("Password again").fill("a long new password")
    second.page.get_by_role("button", name="Accept the invitation").click()
    expect(second.page.get_by_role("alert")).to_contain_text("INVITATION_INVALID", timeout=SLOW)


def test_a_custom_role_from_the_picker_assigned_to_a_user(console: Console, live: e2e.Stack, tenant: Tenant) -> None:
    user_id, _ = live.auth.add_user(tenant, ["viewer"])
    md = owner_md(live, tenant)
    email = live.auth.tenants.GetUser(
        tenant_pb2.GetUserRequest(tenant_id=tenant.id, user_id=user_id), metadata=md
    ).user.email
    page = console.page
    console.sign_in(tenant)
    console.go("Roles")
    expect(page.get_by_role("region", name="Built-in roles")).to_contain_text("viewer")
    page.get_by_role("button", name="Create a role").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name", exact=True).fill("auditor")
    dialog.get_by_label("Description").fill("Reads the audit log")
    dialog.get_by_label("audit:read").check()
    dialog.get_by_label("users:read").check()
    dialog.get_by_label("all: sessions:*").check()
    expect(dialog.get_by_label("sessions:revoke")).to_be_disabled()
    dialog.get_by_label("Other permissions").fill("transcription:read")
    console.screenshot("role-picker")
    dialog.get_by_role("button", name="Create role").click()
    expect(page.get_by_role("status").filter(has_text="The role auditor is created.")).to_be_visible()
    expect(row(console, "auditor")).to_contain_text("sessions:*")
    role = live.auth.tenants.GetRole(tenant_pb2.GetRoleRequest(tenant_id=tenant.id, name="auditor"), metadata=md).role
    assert sorted(role.permissions) == ["audit:read", "sessions:*", "transcription:read", "users:read"]
    assert role.description == "Reads the audit log"
    console.screenshot("roles")
    assert console.sideways_overflow_at_200_percent() <= 0

    # The same name again: refused, in plain words.
    page.get_by_role("button", name="Create a role").click()
    dialog.get_by_label("Name", exact=True).fill("auditor")
    dialog.get_by_label("usage:read").check()
    dialog.get_by_role("button", name="Create role").click()
    alert = dialog.get_by_role("alert")
    expect(alert).to_contain_text("Something with that name already exists.")
    expect(alert).to_contain_text("ALREADY_EXISTS")
    # A typed permission that is not resource:action is caught before the call.
    dialog.get_by_label("Other permissions").fill("not a permission")
    dialog.get_by_role("button", name="Create role").click()
    expect(dialog.get_by_role("alert").first).to_contain_text("not of the form resource:action")
    dialog.get_by_role("button", name="Cancel").click()

    # Edit: one more permission.
    row(console, "auditor").get_by_role("button", name="Edit").click()
    expect(dialog.get_by_label("audit:read")).to_be_checked()
    dialog.get_by_label("usage:read").check()
    dialog.get_by_role("button", name="Save role").click()
    expect(row(console, "auditor")).to_contain_text("usage:read")
    role = live.auth.tenants.GetRole(tenant_pb2.GetRoleRequest(tenant_id=tenant.id, name="auditor"), metadata=md).role
    assert "usage:read" in role.permissions and "audit:read" in role.permissions

    # Assign it on the Users page, and take viewer away.
    console.go("Users")
    row(console, email).get_by_role("button", name="Roles").click()
    roles = page.get_by_role("dialog")
    roles.get_by_label("Role to assign").select_option("auditor")
    roles.get_by_role("button", name="Assign").click()
    expect(roles.get_by_role("list", name="Held roles")).to_contain_text("auditor")
    roles.get_by_role("button", name="Remove the role viewer").click()
    expect(roles.get_by_role("list", name="Held roles")).not_to_contain_text("viewer")
    roles.get_by_role("button", name="Done").click()
    expect(row(console, email)).to_contain_text("auditor")
    effective = live.auth.tenants.GetEffectivePermissions(
        tenant_pb2.GetEffectivePermissionsRequest(
            tenant_id=tenant.id, subject_type=principal_pb2.SUBJECT_TYPE_USER, subject=user_id
        ),
        metadata=md,
    )
    assert list(effective.roles) == ["auditor"]
    assert {"audit:read", "sessions:*", "usage:read"} <= set(effective.permissions)
    assert "roles:read" not in effective.permissions

    # Deleting a role in use: said in plain words, then removed from its users and deleted.
    console.go("Roles")
    row(console, "auditor").get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete auditor").click()
    expect(page.get_by_role("alert")).to_contain_text("This role is still assigned to users")
    page.get_by_role("button", name="Remove auditor from its users and delete it").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove and delete").click()
    expect(page.get_by_role("status").filter(has_text="The role auditor is deleted; 1 user lost it.")).to_be_visible()
    names = [
        r.name for r in live.auth.tenants.ListRoles(tenant_pb2.ListRolesRequest(tenant_id=tenant.id), metadata=md).roles
    ]
    assert "auditor" not in names


def test_search_disable_enable_reset_and_delete_users(
    console: Console, second: Console, live: e2e.Stack, tenant: Tenant
) -> None:
    tag = secrets.token_hex(3)
    alice, bob = f"alice{tag}@{tenant.slug}.test", f"bob{tag}@{tenant.slug}.test"
    alice_id, _ = live.auth.add_user(tenant, ["member"], email=alice, password="alice's password")
    bob_id, _ = live.auth.add_user(tenant, ["viewer"], email=bob, password="bob's password")
    md = owner_md(live, tenant)
    page = console.page
    console.sign_in(tenant)
    console.go("Users")
    expect(row(console, bob)).to_contain_text("viewer")
    console.screenshot("users")
    assert console.sideways_overflow_at_200_percent() <= 0
    page.get_by_label("Search").fill("ALICE")
    expect(row(console, alice)).to_be_visible()
    expect(row(console, bob)).to_have_count(0)
    expect(row(console, tenant.owner_email)).to_have_count(0)

    # Disable: alice cannot sign in, in plain words; enable: she can again.
    row(console, alice).get_by_role("button", name="Disable").click()
    page.get_by_role("dialog").get_by_role("button", name=f"Disable {alice}").click()
    expect(row(console, alice)).to_contain_text("disabled")
    user = live.auth.tenants.GetUser(tenant_pb2.GetUserRequest(tenant_id=tenant.id, user_id=alice_id), metadata=md).user
    assert user.state == tenant_pb2.USER_STATE_DISABLED
    second.open()
    other = second.page
    other.get_by_label("Tenant").fill(tenant.slug)
    other.get_by_label("Email").fill(alice)
    other.get_by_label("Password").fill("alice's password")
    other.get_by_role("button", name="Sign in", exact=True).click()
    alert = other.get_by_role("alert")
    expect(alert).to_contain_text(
        re.compile(r"(The tenant, email or password is not right\.|This account is disabled\.)"), timeout=SLOW
    )
    expect(alert).to_contain_text(re.compile("INVALID_CREDENTIALS|USER_DISABLED"))
    row(console, alice).get_by_role("button", name="Enable").click()
    expect(row(console, alice)).to_contain_text("active")
    second.sign_in(tenant, email=alice, password="alice's password")

    # Reset: a generated password, shown once, that works.
    row(console, alice).get_by_role("button", name="Reset password").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Reset password").click()
    expect(dialog.get_by_role("status")).to_contain_text("The password is reset.", timeout=SLOW)
    generated = dialog.locator("[data-secret]").inner_text()
    assert len(generated) >= 8
    dialog.get_by_role("button", name="Done").click()
    live.auth.auth.Login(auth_pb2.LoginRequest(tenant=tenant.slug, email=alice, password=generated))
    with pytest.raises(grpc.RpcError):
        live.auth.auth.Login(auth_pb2.LoginRequest(tenant=tenant.slug, email=alice, password="alice's password"))

    # Delete bob.
    page.get_by_label("Search").fill(bob)
    row(console, bob).get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name=f"Delete {bob}").click()
    expect(page.get_by_role("status").filter(has_text=f"{bob} is deleted.")).to_be_visible()
    expect(row(console, bob)).to_have_count(0)
    with pytest.raises(grpc.RpcError) as gone:
        live.auth.tenants.GetUser(tenant_pb2.GetUserRequest(tenant_id=tenant.id, user_id=bob_id), metadata=md)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_create_a_user_with_a_password_and_errors_in_plain_words(
    console: Console, live: e2e.Stack, tenant: Tenant
) -> None:
    email = f"carol{secrets.token_hex(3)}@{tenant.slug}.test"
    page = console.page
    console.sign_in(tenant)
    console.go("Users")
    # By keyboard: the dialog opens on Enter, Escape closes it, and focus goes back.
    opener = page.get_by_role("button", name="Create a user")
    opener.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name="Create a user")).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(opener).to_be_focused()
    opener.click()
    dialog.get_by_label("Email").fill(email)
    dialog.get_by_label("Name").fill("Carol")
    dialog.get_by_label("Password").fill("carol's password")
    dialog.get_by_label("viewer").check()
    dialog.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("status").filter(has_text=f"{email} is created.")).to_be_visible(timeout=SLOW)
    expect(row(console, email)).to_contain_text("viewer")
    login = live.auth.auth.Login(auth_pb2.LoginRequest(tenant=tenant.slug, email=email, password="carol's password"))
    user = live.auth.tenants.GetUser(
        tenant_pb2.GetUserRequest(tenant_id=tenant.id, user_id=login.user_id), metadata=owner_md(live, tenant)
    ).user
    assert sorted(user.roles) == ["member", "viewer"] and user.display_name == "Carol"

    # The same email again: refused in plain words, with the reason.
    page.get_by_role("button", name="Create a user").click()
    dialog.get_by_label("Email").fill(email)
    dialog.get_by_role("button", name="Create user").click()
    alert = dialog.get_by_role("alert")
    expect(alert).to_contain_text("Something with that name already exists.")
    expect(alert).to_contain_text("ALREADY_EXISTS")


def test_granting_what_one_does_not_hold_is_refused_in_plain_words(
    console: Console, live: e2e.Stack, tenant: Tenant
) -> None:
    email = f"admin{secrets.token_hex(3)}@{tenant.slug}.test"
    live.auth.add_user(tenant, ["admin"], email=email, password="the admin's password")
    page = console.page
    console.sign_in(tenant, email=email, password="the admin's password")
    console.go("Roles")
    page.get_by_role("button", name="Create a role").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name", exact=True).fill("settings")
    dialog.get_by_label("tenant:write").check()  # admin does not hold it
    dialog.get_by_role("button", name="Create role").click()
    alert = dialog.get_by_role("alert")
    expect(alert).to_contain_text("You cannot grant permissions you do not have yourself.")
    expect(alert).to_contain_text("PRIVILEGE_ESCALATION")
    roles = live.auth.tenants.ListRoles(
        tenant_pb2.ListRolesRequest(tenant_id=tenant.id), metadata=owner_md(live, tenant)
    )
    assert "settings" not in [r.name for r in roles.roles]
