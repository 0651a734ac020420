"""`tahoe-auth` (also `python -m tahoe_auth`): serve, migrate, bootstrap, keys, service-account,
usage, worker, audit."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tahoe_auth.config import ConfigError, Settings
from tahoe_auth.domain.errors import TahoeError
from tahoe_auth.kernel import logs

if TYPE_CHECKING:
    from tahoe_auth.app import App

Command = Callable[[argparse.Namespace, Settings], int]


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from tahoe_auth.app import build_app
    from tahoe_auth.migrate import pending_revisions
    from tahoe_auth.server import serve

    if args.migrate:
        cmd_migrate(argparse.Namespace(revision="head", downgrade=None), settings)
    elif pending := pending_revisions(settings.database_url):
        print(
            f"tahoe-auth: database is not migrated ({len(pending)} pending): run `tahoe-auth migrate`", file=sys.stderr
        )
        return 2
    serve(build_app(settings))
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from tahoe_auth import migrate

    if args.downgrade:
        migrate.downgrade(settings.database_url, args.downgrade)
    else:
        migrate.upgrade(settings.database_url, args.revision)
    return 0


def cmd_bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    from tahoe_auth.app import build_app
    from tahoe_auth.domain import password_policy
    from tahoe_auth.store.db import SYSTEM

    app = build_app(settings)
    try:
        with app.db.unit_of_work(SYSTEM) as uow:
            exists = uow.tenants.find(args.tenant) is not None
        if exists and args.if_missing:
            print(f"tenant {args.tenant!r} exists; nothing to do")
            return 0
        generated = not args.password_stdin
        if generated:
            names = (args.tenant, args.display_name or args.tenant)
            password = password_policy.generate(password_policy.context_for({}, names, args.owner_email))
        else:
            password = sys.stdin.readline().rstrip("\n")
        tenant, owner = app.tenants.create_tenant_with_owner(args.tenant, args.display_name, args.owner_email, password)
        platform_key = app.platform.create("bootstrap")
        app.keys.ensure_active_key()
        result = {
            "tenant_id": tenant.id,
            "tenant": tenant.slug,
            "owner_user_id": owner.id,
            "owner_email": owner.email,
            "platform_admin_key": platform_key,
        }
        if generated:
            result["owner_password"] = password
        print(json.dumps(result, indent=2))
        print("These secrets are shown once; store them now.", file=sys.stderr)
        return 0
    finally:
        app.close()


def _key_listing(app: App) -> dict[str, object]:
    schedule = app.keys.schedule()

    def when(moment: dt.datetime | None) -> str | None:
        return moment.isoformat() if moment is not None else None

    return {
        "active_kid": schedule.active_kid,
        "published_kids": list(schedule.published_kids),
        "keys": [
            {
                "kid": k.kid,
                "state": k.state.value,
                "published": k.published,
                "created_at": when(k.created_at),
                "activates_at": when(k.activates_at),
                "retired_at": when(k.retired_at),
                "revoked_at": when(k.revoked_at),
                "unpublish_at": when(k.unpublish_at),
            }
            for k in schedule.keys
        ],
    }


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    """Stage a new key; running instances pick it up from the database by themselves."""
    from tahoe_auth.app import build_app

    app = build_app(settings)
    try:
        staged = app.keys.rotate()
        print(
            json.dumps({"next_kid": staged.kid, "activates_at": staged.activates_at.isoformat(), **_key_listing(app)})
        )
        return 0
    finally:
        app.close()


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from tahoe_auth.app import build_app

    app = build_app(settings)
    try:
        app.keys.revoke(args.kid)
        print(json.dumps({"revoked_kid": args.kid, **_key_listing(app)}))
        return 0
    finally:
        app.close()


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from tahoe_auth.app import build_app

    app = build_app(settings)
    try:
        print(json.dumps(_key_listing(app), indent=2))
        return 0
    finally:
        app.close()


def cmd_service_account_create(args: argparse.Namespace, settings: Settings) -> int:
    """Register an internal service (e.g. the transcription service) and print its
    client credentials once; platform-wide unless --tenant is given."""
    from tahoe_auth.app import build_app
    from tahoe_auth.domain.errors import NotFound
    from tahoe_auth.domain.principal import PLATFORM, Principal
    from tahoe_auth.services.context import CallContext
    from tahoe_auth.store.db import SYSTEM

    app = build_app(settings)
    try:
        tenant_id = ""
        if args.tenant:
            with app.db.unit_of_work(SYSTEM) as uow:
                tenant = uow.tenants.find(args.tenant)
            if tenant is None:
                raise NotFound("tenant", f"no tenant {args.tenant!r}")
            tenant_id = tenant.id
        operator = Principal("", "cli", PLATFORM, platform_admin=True, credential="tahoe-auth cli")
        account, secret = app.service_accounts.create(
            CallContext(principal=operator), tenant_id, args.name, args.description, args.permission
        )
        result = {
            "client_id": account.id,
            "client_secret": secret,
            "tenant_id": tenant_id,
            "name": account.name,
            "permissions": account.permissions,
        }
        print(json.dumps(result, indent=2))
        print("The client secret is shown once; store it now.", file=sys.stderr)
        return 0
    finally:
        app.close()


def cmd_mfa_reset(args: argparse.Namespace, settings: Settings) -> int:
    """Remove every second factor (and the recovery codes) of one user, who signs in with
    their password alone afterwards (or must enroll again, if the tenant requires it): for
    someone who lost their factors and codes. Audited, with the CLI as the actor."""
    from tahoe_auth.app import build_app
    from tahoe_auth.domain.errors import NotFound
    from tahoe_auth.domain.principal import PLATFORM, Principal
    from tahoe_auth.services.context import CallContext
    from tahoe_auth.services.mfa import Answer
    from tahoe_auth.services.sessions import normalize_email
    from tahoe_auth.store.db import SYSTEM

    app = build_app(settings)
    try:
        with app.db.unit_of_work(SYSTEM) as uow:
            tenant, user = uow.users.login_subject(args.tenant.strip().lower(), normalize_email(args.email))
        if tenant is None or user is None:
            raise NotFound("user", f"no user {args.email!r} in tenant {args.tenant!r}")
        ctx = CallContext(principal=Principal("", "cli", PLATFORM, platform_admin=True, credential="tahoe-auth cli"))
        factors = app.second_factors.list_factors(ctx, tenant.id, user.id).factors
        for factor in factors:
            app.second_factors.delete_factor(ctx, factor.id, tenant.id, user.id, Answer())
        print(json.dumps({"tenant_id": tenant.id, "user_id": user.id, "removed_factors": len(factors)}, indent=2))
        return 0
    finally:
        app.close()


def cmd_usage_export(args: argparse.Namespace, settings: Settings) -> int:
    from tahoe_auth.app import build_app

    app = build_app(settings)
    try:
        export = app.usage.export(None, args.tenant or "", args.period or "", args.format)
    finally:
        app.close()
    if args.output == "-":
        sys.stdout.write(export.content.decode())
    else:
        path = args.output or export.filename
        with open(path, "wb") as handle:
            handle.write(export.content)
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_usage_rollup(args: argparse.Namespace, settings: Settings) -> int:
    from tahoe_auth.app import build_app

    app = build_app(settings)
    try:
        print(json.dumps({"rolled_up_events": app.usage_pipeline.run_once()}))
    finally:
        app.close()
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """The webhook delivery and mail workers alone (several may run against PostgreSQL)."""
    import signal
    import threading

    from prometheus_client import start_http_server

    from tahoe_auth.app import build_app

    app = build_app(settings)
    try:
        worker = app.webhook_worker
        if args.once:
            worker.drain(limit=args.limit)
            app.mail_worker.drain(limit=args.limit)
            return 0
        if args.http_addr:
            host, _, port = args.http_addr.rpartition(":")
            start_http_server(int(port), host)
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        signal.signal(signal.SIGINT, lambda *_: stopped.set())
        worker.start()
        app.mail_worker.start()
        stopped.wait()
        return 0
    finally:
        app.close()


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from tahoe_auth.app import build_app

    app = build_app(settings)
    try:
        checked, problems = app.audit_verifier.verify(args.tenant)
    finally:
        app.close()
    report = {
        "entries_checked": checked,
        "ok": not problems,
        "problems": [{"tenant_id": p.tenant_id, "sequence": p.sequence, "problem": p.problem} for p in problems],
    }
    print(json.dumps(report, indent=2))
    return 0 if not problems else 1


def _add_mfa_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mfa = sub.add_parser("mfa", help="users' second factors")
    mfa_sub = mfa.add_subparsers(dest="mfa_command", required=True)
    reset = mfa_sub.add_parser("reset", help="remove every second factor of a user who lost theirs (audited)")
    reset.add_argument("--tenant", required=True, help="tenant slug or id")
    reset.add_argument("--email", required=True)
    reset.set_defaults(run=cmd_mfa_reset)


def _add_keys_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="token signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_sub.add_parser(
        "rotate", help="publish a next signing key; it signs after TAHOE_SIGNING_KEY_PUBLISH_DELAY (no restart)"
    )
    rotate.set_defaults(run=cmd_keys_rotate)
    revoke = keys_sub.add_parser(
        "revoke", help="emergency: unpublish a compromised key and refuse its tokens now; signing moves on at once"
    )
    revoke.add_argument("kid", help="the key id (see `keys list`)")
    revoke.set_defaults(run=cmd_keys_revoke)
    listing = keys_sub.add_parser("list", help="every signing key with its state and times")
    listing.set_defaults(run=cmd_keys_list)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="tahoe-auth", description="Tahoe Auth: authentication and authorization service"
    )
    sub = root.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the gRPC server and the HTTP side port",
        description="Run the gRPC server and the HTTP side port. SIGTERM or Ctrl-C: NOT_SERVING on health and"
        " /readyz while still answering for TAHOE_DRAIN_SECONDS (default 5; a second signal ends it), then up to"
        " 10 s for in-flight calls.",
    )
    serve.add_argument("--migrate", action="store_true", help="apply pending migrations first")
    serve.set_defaults(run=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("--revision", default="head", help="upgrade to this revision (default: head)")
    migrate.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION instead (e.g. base)")
    migrate.set_defaults(run=cmd_migrate)

    boot = sub.add_parser("bootstrap", help="create the first tenant, its owner and a platform-admin key")
    boot.add_argument("--tenant", required=True, help="tenant slug")
    boot.add_argument("--owner-email", required=True)
    boot.add_argument("--display-name", default="")
    boot.add_argument("--password-stdin", action="store_true", help="read the owner password from stdin")
    boot.add_argument("--if-missing", action="store_true", help="do nothing if the tenant exists")
    boot.set_defaults(run=cmd_bootstrap)

    _add_keys_commands(sub)

    accounts = sub.add_parser("service-account", help="internal services' client credentials")
    accounts_sub = accounts.add_subparsers(dest="service_account_command", required=True)
    create = accounts_sub.add_parser("create", help="register a service; prints its client id and secret")
    create.add_argument("--name", required=True, help="e.g. transcription")
    create.add_argument("--permission", action="append", default=[], help="repeat for each permission")
    create.add_argument("--description", default="")
    create.add_argument("--tenant", default="", help="tenant slug or id (default: platform-wide)")
    create.set_defaults(run=cmd_service_account_create)

    _add_mfa_commands(sub)
    usage = sub.add_parser("usage", help="usage metering: invoice exports, rollups")
    usage_sub = usage.add_subparsers(dest="usage_command", required=True)
    export = usage_sub.add_parser("export", help="invoice-ready usage of a billing period (JSON or CSV)")
    export.add_argument("--period", help="billing period YYYY-MM (default: the current one)")
    export.add_argument("--tenant", help="tenant id (default: every tenant)")
    export.add_argument("--format", choices=("json", "csv"), default="json")
    export.add_argument("--output", "-o", help="file, or - for stdout (default: usage-<period>-<scope>.<format>)")
    export.set_defaults(run=cmd_usage_export)
    rollup = usage_sub.add_parser("rollup", help="roll up pending raw usage events now (serve does it every 2 s)")
    rollup.set_defaults(run=cmd_usage_rollup)

    worker = sub.add_parser(
        "worker",
        help="deliver webhooks and mail from their queues (serve runs both: TAHOE_WEBHOOK_WORKER, TAHOE_MAIL_WORKER)",
    )
    worker.add_argument("--once", action="store_true", help="deliver what is due now, then exit")
    worker.add_argument("--limit", type=float, default=60.0, help="with --once: stop after this many seconds")
    worker.add_argument("--http-addr", help="serve /metrics on host:port")
    worker.set_defaults(run=cmd_worker)

    audit = sub.add_parser("audit", help="the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify", help="check every tenant's hash chain; exit 1 on an edited or missing entry"
    )
    verify.add_argument("--tenant", help="one tenant id ('' for the platform chain)")
    verify.set_defaults(run=cmd_audit_verify)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"tahoe-auth: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, settings.log_level)
    command: Command = args.run
    try:
        return command(args, settings)
    except TahoeError as exc:
        print(f"tahoe-auth: {exc.message}", file=sys.stderr)
        return 1
