"""Mail against a real SMTP server the test runs (aiosmtpd: STARTTLS, AUTH), read from
what it received: invitations with their accept link, "forgot password" (same answer
for accounts that do not exist, single-use links that expire, every session ended),
email verification (at creation, on every change, the old address told), retries and
dead letters, and no link token in the database or the logs."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import logging
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import grpc
import pytest
from sqlalchemy import create_engine, pool, text

from tahoe_auth.v1 import account_pb2, account_pb2_grpc, auth_pb2, tenant_pb2
from tests import harness
from tests.integration.test_no_secrets_at_rest import dump_database
from tests.smtp_server import Received, SmtpServer, plain_smtp_server, smtp_server
from tests.support import OWNER_PASSWORD, RunningServer, Tenant, bearer, error_reason, running_server

PUBLIC_URL = "https://auth.example.test"
NEW_PASSWORD = "a brand new pass phrase"


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[SmtpServer]:
    with smtp_server(tmp_path) as running:
        yield running


@pytest.fixture
def mailing(pg_env: dict[str, str], mailbox: SmtpServer) -> Iterator[RunningServer]:
    env = {
        **pg_env,
        "TAHOE_SMTP_URL": mailbox.url,
        "TAHOE_PUBLIC_URL": PUBLIC_URL,
        "TAHOE_MAIL_FROM": "auth@example.test",
        # The tests speak for many clients (x-tahoe-client-address), as Envoy would.
        "TAHOE_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    with running_server(env) as running:
        yield running


def accounts(server: RunningServer) -> account_pb2_grpc.AccountServiceStub:
    return account_pb2_grpc.AccountServiceStub(server.channel)


def deliver(server: RunningServer) -> None:
    """One pass of the mail worker (serve runs it as a thread; the tests drive it)."""
    server.app.mail_worker.drain()


def token_in(received: Received, route: str) -> str:
    """The token of the mail's link to the console page `route`, from the plain text."""
    found = re.search(rf"{re.escape(PUBLIC_URL)}/console/#{re.escape(route)}\?token=(\S+)", received.part("plain"))
    assert found, received.part("plain")
    return unquote(found.group(1))


def only(messages: list[Received]) -> Received:
    assert len(messages) == 1, [m.subject for m in messages]
    return messages[0]


def sql(server: RunningServer, pg_env: dict[str, str], statement: str, **params: object) -> list[tuple[object, ...]]:
    engine = create_engine(pg_env["TAHOE_DATABASE_URL"], poolclass=pool.NullPool)
    with engine.begin() as conn:
        result = conn.execute(text(statement), params)
        rows = [tuple(r) for r in result] if result.returns_rows else []
    engine.dispose()
    return rows


def test_an_invitation_is_mailed_with_its_accept_link(mailing: RunningServer, mailbox: SmtpServer) -> None:
    tenant = mailing.create_tenant()
    owner = mailing.owner_token(tenant)
    mailing.tenants.UpdateTenant(
        tenant_pb2.UpdateTenantRequest(
            tenant=tenant_pb2.Tenant(
                id=tenant.id, settings=tenant_pb2.TenantSettings(mail=tenant_pb2.MailSettings(sender_name="Acme <Ops>"))
            ),
            update_mask={"paths": ["settings.mail"]},
        ),
        metadata=bearer(owner),
    )
    created = mailing.tenants.CreateInvitation(
        tenant_pb2.CreateInvitationRequest(email="new.hire@example.test", role="member"), metadata=bearer(owner)
    )
    deliver(mailing)
    mail = only(mailbox.to("new.hire@example.test"))
    assert mail.envelope_from == "auth@example.test"
    assert str(mail.message["From"]) == '"Acme <Ops>" <auth@example.test>'
    assert mail.subject == f"You are invited to {tenant.slug.title()}"
    assert "member" in mail.part("plain")
    # The HTML part escapes what it shows, and links to the same page.
    assert token_in(mail, "/accept") == created.token
    assert f'href="{PUBLIC_URL}/console/#/accept?token=' in mail.part("html")

    joined = mailing.tenants.AcceptInvitation(
        tenant_pb2.AcceptInvitationRequest(token=token_in(mail, "/accept"), password=NEW_PASSWORD)
    )
    user = mailing.tenants.GetUser(tenant_pb2.GetUserRequest(user_id=joined.user_id), metadata=bearer(owner)).user
    assert user.email_verified  # the link went to the address

    # A resend mails the new link; the first one no longer works.
    again = mailing.tenants.CreateInvitation(
        tenant_pb2.CreateInvitationRequest(email="second@example.test", role="member"), metadata=bearer(owner)
    )
    resent = mailing.tenants.ResendInvitation(
        tenant_pb2.ResendInvitationRequest(invitation_id=again.invitation.id), metadata=bearer(owner)
    )
    deliver(mailing)
    first, second = mailbox.to("second@example.test")
    assert token_in(first, "/accept") == again.token and token_in(second, "/accept") == resent.token


def test_forgot_password_mails_a_single_use_link_that_ends_every_session(
    mailing: RunningServer, mailbox: SmtpServer
) -> None:
    tenant = mailing.create_tenant()
    before = mailing.login(tenant).tokens
    assert (
        accounts(mailing).RequestPasswordReset(
            account_pb2.RequestPasswordResetRequest(tenant=tenant.slug, email=tenant.owner_email.upper())
        )
        == account_pb2.RequestPasswordResetResponse()
    )
    deliver(mailing)
    mail = only(mailbox.to(tenant.owner_email))
    assert mail.subject == f"Reset your {tenant.slug.title()} password"
    token = token_in(mail, "/reset-password")
    assert token.startswith("tahoe_pr_")

    with pytest.raises(grpc.RpcError) as weak:
        accounts(mailing).ResetPasswordWithToken(
            account_pb2.ResetPasswordWithTokenRequest(token=token, new_password="password1")
        )
    assert error_reason(weak.value) == "PASSWORD_REJECTED"  # the policy applies; the link is not spent
    done = accounts(mailing).ResetPasswordWithToken(
        account_pb2.ResetPasswordWithTokenRequest(token=token, new_password=NEW_PASSWORD)
    )
    assert done.user_id == tenant.owner_id and done.email == tenant.owner_email and done.sessions_ended >= 1

    with pytest.raises(grpc.RpcError) as refused:
        mailing.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=before.refresh_token))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as old:
        mailing.login(tenant)
    assert error_reason(old.value) == "INVALID_CREDENTIALS"
    changed = Tenant(tenant.id, tenant.slug, tenant.owner_id, tenant.owner_email, NEW_PASSWORD)
    assert mailing.login(changed).tokens.access_token

    with pytest.raises(grpc.RpcError) as reused:
        accounts(mailing).ResetPasswordWithToken(
            account_pb2.ResetPasswordWithTokenRequest(token=token, new_password="another new pass phrase")
        )
    assert reused.value.code() == grpc.StatusCode.UNAUTHENTICATED and error_reason(reused.value) == "LINK_INVALID"
    deliver(mailing)
    notice = [m for m in mailbox.to(tenant.owner_email) if "password was changed" in m.subject]
    assert len(notice) == 1 and token not in notice[0].part("plain")


def test_a_reset_link_expires_after_30_minutes_and_a_newer_one_replaces_it(
    mailing: RunningServer, mailbox: SmtpServer, pg_env: dict[str, str]
) -> None:
    tenant = mailing.create_tenant()
    for _ in range(2):
        accounts(mailing).RequestPasswordReset(
            account_pb2.RequestPasswordResetRequest(tenant=tenant.slug, email=tenant.owner_email)
        )
        deliver(mailing)
    first, second = (token_in(m, "/reset-password") for m in mailbox.to(tenant.owner_email))
    with pytest.raises(grpc.RpcError) as replaced:
        accounts(mailing).ResetPasswordWithToken(
            account_pb2.ResetPasswordWithTokenRequest(token=first, new_password=NEW_PASSWORD)
        )
    assert error_reason(replaced.value) == "LINK_INVALID"
    ((lifetime,),) = sql(
        mailing,
        pg_env,
        "SELECT expires_at - created_at FROM account_tokens WHERE purpose = 'password_reset' AND used_at IS NULL",
    )
    assert lifetime == dt.timedelta(minutes=30)
    sql(mailing, pg_env, "UPDATE account_tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL")
    with pytest.raises(grpc.RpcError) as expired:
        accounts(mailing).ResetPasswordWithToken(
            account_pb2.ResetPasswordWithTokenRequest(token=second, new_password=NEW_PASSWORD)
        )
    assert error_reason(expired.value) == "LINK_INVALID"
    for garbage in ("tahoe_pr_" + "A" * 43, "not-a-token", second + "x"):
        with pytest.raises(grpc.RpcError) as unknown:
            accounts(mailing).ResetPasswordWithToken(
                account_pb2.ResetPasswordWithTokenRequest(token=garbage, new_password=NEW_PASSWORD)
            )
        assert (unknown.value.code(), error_reason(unknown.value), unknown.value.details()) == (
            expired.value.code(),
            "LINK_INVALID",
            expired.value.details(),
        )


CLIENTS = iter(range(1, 60_000))


def answer_of(server: RunningServer, tenant: str, email: str) -> tuple[object, ...]:
    """The answer (status, reason, message, body) and its time, from a client address of
    its own (the per-address limit is not what is measured)."""
    n = next(CLIENTS)
    client = (("x-tahoe-client-address", f"10.9.{n // 250}.{n % 250 + 1}"),)
    started = time.perf_counter()
    try:
        response = accounts(server).RequestPasswordReset(
            account_pb2.RequestPasswordResetRequest(tenant=tenant, email=email), metadata=client
        )
        outcome: tuple[object, ...] = ("ok", response.SerializeToString())
    except grpc.RpcError as exc:
        outcome = ("error", exc.code(), error_reason(exc), exc.details())
    return (*outcome, time.perf_counter() - started)


def test_forgot_password_answers_alike_for_accounts_that_do_not_exist(
    mailing: RunningServer, mailbox: SmtpServer
) -> None:
    tenant = mailing.create_tenant()
    cases = {
        "account": (tenant.slug, tenant.owner_email),
        "no such user": (tenant.slug, f"nobody@{tenant.slug}.test"),
        "no such tenant": ("no-such-tenant", tenant.owner_email),
    }
    # Interleaved rounds, each account named once per round (the per-account limit is
    # 3 per 15 minutes, so each case gets fresh addresses after the first).
    answers: dict[str, list[tuple[object, ...]]] = {name: [] for name in cases}
    for round_ in range(3):
        for name, (slug, address) in cases.items():
            answers[name].append(answer_of(mailing, slug, address if round_ == 0 else f"r{round_}.{address}"))
    shapes = {name: {a[:-1] for a in got} for name, got in answers.items()}
    assert shapes["account"] == shapes["no such user"] == shapes["no such tenant"] == {("ok", b"")}
    deliver(mailing)
    assert [m.recipients for m in mailbox.messages] == [[tenant.owner_email]]  # only the real account's

    # The answer comes before anyone looks for the account: one insert either way. Its
    # time is the same within noise (bench/password_reset_timing.py measures it closely).
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(15):
        for name, (slug, address) in cases.items():
            samples[name].append(answer_of(mailing, slug, f"t{i}.{address}")[-1])
    medians = {name: statistics.median(values) for name, values in samples.items()}
    spread = max(medians.values()) / min(medians.values())
    assert spread < 2.0, medians

    # Over the per-account limit: refused, alike for an account that does not exist.
    refusals = []
    for slug, address in ((tenant.slug, tenant.owner_email), (tenant.slug, f"nobody@{tenant.slug}.test")):
        with pytest.raises(grpc.RpcError) as limited:
            for _ in range(4):
                accounts(mailing).RequestPasswordReset(
                    account_pb2.RequestPasswordResetRequest(tenant=slug, email=address)
                )
        refusals.append((limited.value.code(), error_reason(limited.value)))
    assert refusals == [(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")] * 2


def test_email_is_verified_at_creation_and_again_after_every_change(
    mailing: RunningServer, mailbox: SmtpServer
) -> None:
    tenant = mailing.create_tenant()
    owner = mailing.owner_token(tenant)
    created = mailing.tenants.CreateUser(
        tenant_pb2.CreateUserRequest(user=tenant_pb2.User(email="ada@example.test"), password=OWNER_PASSWORD),
        metadata=bearer(owner),
    ).user
    assert not created.email_verified
    deliver(mailing)
    first_link = token_in(only(mailbox.to("ada@example.test")), "/verify-email")
    verified = accounts(mailing).VerifyEmail(account_pb2.VerifyEmailRequest(token=first_link))
    assert verified.user_id == created.id and verified.email == "ada@example.test"
    got = mailing.tenants.GetUser(tenant_pb2.GetUserRequest(user_id=created.id), metadata=bearer(owner)).user
    assert got.email_verified and got.email_verify_time.seconds > 0
    with pytest.raises(grpc.RpcError) as twice:
        accounts(mailing).VerifyEmail(account_pb2.VerifyEmailRequest(token=first_link))
    assert error_reason(twice.value) == "LINK_INVALID"

    # A new address: unverified, a link to it, and a notice to the old one.
    mailing.tenants.UpdateUser(
        tenant_pb2.UpdateUserRequest(
            user=tenant_pb2.User(id=created.id, email="ada.new@example.test"), update_mask={"paths": ["email"]}
        ),
        metadata=bearer(owner),
    )
    got = mailing.tenants.GetUser(tenant_pb2.GetUserRequest(user_id=created.id), metadata=bearer(owner)).user
    assert not got.email_verified
    deliver(mailing)
    notice = [m for m in mailbox.to("ada@example.test") if "was changed" in m.subject]
    assert len(notice) == 1 and "ada.new@example.test" in notice[0].part("plain")
    assert "/verify-email" not in notice[0].part("plain")
    new_link = token_in(only(mailbox.to("ada.new@example.test")), "/verify-email")

    # The user asks for another link: the earlier one stops working.
    ada = mailing.auth.Login(
        auth_pb2.LoginRequest(tenant=tenant.slug, email="ada.new@example.test", password=OWNER_PASSWORD)
    ).tokens.access_token
    accounts(mailing).SendVerificationEmail(account_pb2.SendVerificationEmailRequest(), metadata=bearer(ada))
    deliver(mailing)
    newest = token_in(mailbox.to("ada.new@example.test")[-1], "/verify-email")
    with pytest.raises(grpc.RpcError) as stale:
        accounts(mailing).VerifyEmail(account_pb2.VerifyEmailRequest(token=new_link))
    assert error_reason(stale.value) == "LINK_INVALID"
    accounts(mailing).VerifyEmail(account_pb2.VerifyEmailRequest(token=newest))
    assert mailing.tenants.GetUser(
        tenant_pb2.GetUserRequest(user_id=created.id), metadata=bearer(owner)
    ).user.email_verified

    # Someone else's address: users:update, which a member lacks.
    _, member = mailing.add_user(tenant, ["member"])
    with pytest.raises(grpc.RpcError) as denied:
        accounts(mailing).SendVerificationEmail(
            account_pb2.SendVerificationEmailRequest(user_id=created.id), metadata=bearer(member)
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_refused_mail_is_retried_then_sent_and_a_rejected_one_is_dead_lettered(
    mailing: RunningServer, mailbox: SmtpServer, pg_env: dict[str, str]
) -> None:
    tenant = mailing.create_tenant()
    owner = mailing.owner_token(tenant)
    mailbox.refuse_next("451 4.3.0 try again later")
    mailing.tenants.CreateInvitation(
        tenant_pb2.CreateInvitationRequest(email="later@example.test", role="member"), metadata=bearer(owner)
    )
    deliver(mailing)
    assert not mailbox.messages
    ((status, attempts, error, due),) = sql(
        mailing, pg_env, "SELECT status, attempts, last_error, next_attempt_at > now() FROM mail_messages"
    )
    assert (status, attempts, due) == ("retrying", 1, True) and "451" in str(error)
    sql(mailing, pg_env, "UPDATE mail_messages SET next_attempt_at = now()")
    deliver(mailing)
    assert [m.recipients for m in mailbox.messages] == [["later@example.test"]]

    mailbox.refuse_next("550 5.1.1 no such mailbox")
    mailing.tenants.CreateInvitation(
        tenant_pb2.CreateInvitationRequest(email="gone@example.test", role="member"), metadata=bearer(owner)
    )
    deliver(mailing)
    rows = sql(mailing, pg_env, "SELECT to_address, status, variables_sealed FROM mail_messages ORDER BY created_at")
    assert [(r[0], r[1]) for r in rows] == [("later@example.test", "sent"), ("gone@example.test", "dead")]
    assert all(r[2] == "" for r in rows)  # sent or dead: the sealed link is not kept
    actions = [r[0] for r in sql(mailing, pg_env, "SELECT action FROM audit_events WHERE tenant_id = :t", t=tenant.id)]
    assert "mail.dead" in actions


def test_wrong_smtp_credentials_keep_the_mail_for_a_retry(pg_env: dict[str, str], mailbox: SmtpServer) -> None:
    url = mailbox.url.replace("s3cret-pass", "wrong")
    with running_server({**pg_env, "TAHOE_SMTP_URL": url}) as server:
        tenant = server.create_tenant()
        server.tenants.CreateInvitation(
            tenant_pb2.CreateInvitationRequest(email="x@example.test", role="member"),
            metadata=bearer(server.owner_token(tenant)),
        )
        deliver(server)
        with server.app.db.unit_of_work(tenant.id) as uow:
            (row,) = uow.mail.recent()
        # aiosmtpd answers a wrong password by letting the client time out (others say 535).
        assert row.status == "retrying" and row.last_error and "wrong" not in row.last_error
    assert not mailbox.messages


def test_no_link_token_in_the_database_or_the_logs(
    mailing: RunningServer,
    mailbox: SmtpServer,
    pg_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant = mailing.create_tenant()
    owner = mailing.owner_token(tenant)
    invitation = mailing.tenants.CreateInvitation(
        tenant_pb2.CreateInvitationRequest(email="invitee@example.test", role="member"), metadata=bearer(owner)
    )
    mailing.tenants.CreateUser(
        tenant_pb2.CreateUserRequest(user=tenant_pb2.User(email="verify@example.test")), metadata=bearer(owner)
    )
    accounts(mailing).RequestPasswordReset(
        account_pb2.RequestPasswordResetRequest(tenant=tenant.slug, email=tenant.owner_email)
    )
    # Queued, not yet sent: the links exist only sealed (and hashed) in the database.
    mailing.app.self_service.process_reset_requests()
    queued = dump_database(pg_env["TAHOE_DATABASE_URL"])
    deliver(mailing)
    tokens = [
        invitation.token,
        token_in(only(mailbox.to("verify@example.test")), "/verify-email"),
        token_in(only(mailbox.to(tenant.owner_email)), "/reset-password"),
    ]
    after = dump_database(pg_env["TAHOE_DATABASE_URL"])
    # Ours, not the test SMTP server's (aiosmtpd logs every DATA line it reads at DEBUG).
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]
    logs = "\n".join(r.getMessage() + str(r.__dict__) for r in ours)
    out, err = capfd.readouterr()
    for token in tokens:
        secret_part = re.sub(r"^(tahoe_[a-z]+|iv)_", "", token)
        assert len(secret_part) >= 40
        for where, content in (("queued", queued), ("after", after), ("logs", logs), ("stdout", out), ("stderr", err)):
            assert secret_part not in content, where


def test_the_embedded_default_writes_each_mail_to_var_mail(embedded_server: RunningServer, tmp_path: Path) -> None:
    tenant = embedded_server.create_tenant()
    embedded_server.tenants.CreateInvitation(
        tenant_pb2.CreateInvitationRequest(email="local@example.test", role="member"),
        metadata=bearer(embedded_server.owner_token(tenant)),
    )
    deliver(embedded_server)
    (written,) = (tmp_path / "var" / "mail").glob("*.eml")
    message = email.message_from_bytes(written.read_bytes(), policy=email.policy.default)
    assert message["To"] == "local@example.test" and str(message["Subject"]).startswith("You are invited to")
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and "http://localhost:8080/console/#/accept?token=iv_" in body.get_content()


def test_mail_waits_while_the_smtp_server_is_down_and_goes_once_it_is_back(
    pg_env: dict[str, str], tmp_path: Path
) -> None:
    port = harness.free_port()
    with running_server({**pg_env, "TAHOE_SMTP_URL": f"smtp+plain://127.0.0.1:{port}?timeout=2"}) as server:
        tenant = server.create_tenant()
        server.tenants.CreateInvitation(
            tenant_pb2.CreateInvitationRequest(email="patient@example.test", role="member"),
            metadata=bearer(server.owner_token(tenant)),
        )
        deliver(server)  # nothing listens on the port
        with server.app.db.unit_of_work(tenant.id) as uow:
            (row,) = uow.mail.recent()
        assert row.status == "retrying" and "Connection refused" in row.last_error
        with plain_smtp_server(port) as mailbox:
            sql(server, pg_env, "UPDATE mail_messages SET next_attempt_at = now()")
            deliver(server)
            assert [m.recipients for m in mailbox.messages] == [["patient@example.test"]]
