"""Hostile input on every RPC, generated from the service descriptors.

For every method the server hosts (the Tahoe services, Envoy's Check and its rate-limit
service), hypothesis builds request messages with hostile values in every string,
number, repeated, map, enum and message field, and also sends raw bytes that do not
parse (garbage, truncated messages, invalid UTF-8 in a string field). Each is sent as
a tenant owner and anonymously, to a real server on PostgreSQL and Redis running as
`tahoe_app`. Whatever the answer, it is never INTERNAL or UNKNOWN, every error carries
an ErrorInfo (INVALID_ARGUMENT names its field), nothing is logged with a traceback or
at ERROR, and a call that fails leaves the database as it was (audit entries aside:
failed logins are audited on purpose).

TAHOE_FUZZ_EXAMPLES sets the examples per method and identity (default 10).
"""

from __future__ import annotations

import base64
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import redis
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, pool, text

from tahoe_auth import server as server_module
from tahoe_auth.store.models import Base
from tests import support

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

EXAMPLES = int(os.environ.get("TAHOE_FUZZ_EXAMPLES", "10"))
STREAM_TIMEOUT = 3.0
# Failed logins are audited in their own transaction on purpose; everything else a
# failed call might write is a bug.
UNCHECKED_TABLES = {"audit_events", "audit_heads"}


def _methods() -> list[MethodDescriptor]:
    pool_ = descriptor_pool.Default()
    return [method for name in server_module.SERVICE_NAMES for method in pool_.FindServiceByName(name).methods]


METHODS = _methods()


@dataclass
class World:
    """The server and the real values that let generated requests reach deep code."""

    server: support.RunningServer
    tenant: support.Tenant
    member_id: str
    redis_url: str
    pg_url: str
    owner_token: str = ""

    def owner_metadata(self) -> tuple[tuple[str, str], ...]:
        try:
            self.server.app.authenticator.authenticate(self.owner_token)
        except Exception:  # revoked by an earlier example (Logout, LogoutAll, ...): log in again
            self._forget_login_failures()
            self.owner_token = self.server.owner_token(self.tenant)
        return support.bearer(self.owner_token)

    def _forget_login_failures(self) -> None:
        # Generated Login calls fail by the hundred from one address; the throttle and the
        # limiter would rightly slow the owner's next login down.
        client = redis.Redis.from_url(self.redis_url)
        for pattern in ("thr:*", "rl:*"):
            keys = list(client.scan_iter(pattern))
            if keys:
                client.delete(*keys)


@pytest.fixture(scope="module")
def world(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    support.truncate_all(pg_url)
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        "TAHOE_DATABASE_URL": pg_url,
        "TAHOE_DATABASE_ROLE": "tahoe_app",
        "TAHOE_REDIS_URL": redis_url,
        "TAHOE_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "TAHOE_VAR_DIR": str(tmp_path_factory.mktemp("fuzz") / "var"),
        "TAHOE_WEBHOOK_WORKER": "false",
    }
    with support.running_server(env) as running:
        tenant = running.create_tenant()
        member_id, _ = running.add_user(tenant, ["member"])
        world = World(running, tenant, member_id, redis_url, pg_url)
        world.owner_token = running.owner_token(tenant)
        yield world


# --- hostile values -------------------------------------------------------------------

HOSTILE_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "users:read\n",
    "::::x",
    "*",
    "*:*",
    "x" * 9000,
    "é" * 300,
    "\u202eevil",
    "\U0001f600" * 70,
    "'; DROP TABLE users; --",
    "%s%s%n{0}",
    "../../etc/passwd",
    "\t\r\n",
    "a@" + "b" * 300 + ".test",
    "owner@" + "x" * 63 + ".test",
    "-1",
    "9" * 40,
    "2026-13",
    "eyJhbGciOiJub25lIn0.e30.",
    "tahoe_sk_" + "A" * 38,
    "Bearer x",
]
INT32 = [0, 1, -1, 7, 2**31 - 1, -(2**31), 10**9]
INT64 = [*INT32, 2**63 - 1, -(2**63), 10**15]
UINT32 = [0, 1, 2**32 - 1]
UINT64 = [0, 1, 2**64 - 1]
DOUBLES = [0.0, -0.0, 1.0, -1.0, 0.5, math.nan, math.inf, -math.inf, 1e308, 5e-324, 1e15 + 1]
TIMESTAMP_SECONDS = [0, -1, 1, 2**62, -(2**62), 253_402_300_800, -62_135_596_801]
NANOS = [0, -1, 999_999_999, 10**9]


def _now_seconds() -> list[int]:
    now = int(time.time())
    return [now, now + 3600, now - 86_400 * 400, now + 86_400 * 365 * 50]


def string_strategy(world: World, field: FieldDescriptor) -> st.SearchStrategy[str]:
    real = [world.tenant.id, world.tenant.slug, world.tenant.owner_id, world.member_id, "owner", "member"]
    real += [field.name, "transcription:read", "usage:write", "api.requests", "2026-12"]
    return st.one_of(st.sampled_from(HOSTILE_STRINGS), st.sampled_from(real), st.text(max_size=20))


def scalar_strategy(world: World, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return string_strategy(world, field)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=40), st.just(b"\xff" * 9000))
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.sampled_from(DOUBLES if kind == FieldDescriptor.TYPE_DOUBLE else DOUBLES[:8])
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([*field.enum_type.values_by_number, 99, -1])
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return message_strategy(world, field.message_type, depth + 1)
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.sampled_from(UINT32)
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.sampled_from(UINT64)
    if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return st.sampled_from(INT32)
    return st.sampled_from(INT64)


def message_strategy(world: World, descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name in {"google.protobuf.Timestamp", "google.protobuf.Duration"}:
        seconds = st.sampled_from(TIMESTAMP_SECONDS + _now_seconds() + [60, 3600, -60])
        return st.builds(cls, seconds=seconds, nanos=st.sampled_from(NANOS))
    if depth > 3:
        return st.just(cls())
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        fields[field.name] = field_strategy(world, field, depth)
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: build(cls, descriptor, values))


def field_strategy(world: World, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    entry = field.message_type
    if field.is_repeated and entry is not None and entry.GetOptions().map_entry:
        keys = scalar_strategy(world, entry.fields_by_name["key"], depth)
        values = scalar_strategy(world, entry.fields_by_name["value"], depth)
        return st.dictionaries(keys, values, max_size=3)
    if field.is_repeated:
        item = scalar_strategy(world, field, depth)
        return st.one_of(st.lists(item, max_size=3), small_item(field).map(lambda value: [value] * 201))
    return scalar_strategy(world, field, depth)


def small_item(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """One short value, for lists over their maximum length (not megabytes of them)."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return st.just(message_factory.GetMessageClass(field.message_type)())
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.sampled_from(["a", "users:read"])
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.just(b"a")
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.just(0)
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.just(1.0)
    return st.just(True) if field.type == FieldDescriptor.TYPE_BOOL else st.just(1)


def build(cls: type[Message], descriptor: Descriptor, values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        target = getattr(message, name)
        entry = field.message_type
        if field.is_repeated and entry is not None and entry.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(item, Message):
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in value:
                    target.add().CopyFrom(item)
            else:
                target.extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


# --- raw bytes that do not parse ------------------------------------------------------


def undecodable(method: MethodDescriptor) -> list[bytes]:
    """Garbage, a truncated message, and invalid UTF-8 in the first string field."""
    corrupt = [b"\xff\xff\xff\xff", b"\x0a\x7fabc", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"]
    for field in method.input_type.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            tag = bytes([(field.number << 3) | 2]) if field.number < 16 else None
            if tag is not None:
                corrupt.append(tag + b"\x02\xc3\x28")
            break
    return corrupt


# --- the observations -----------------------------------------------------------------


class DatabaseSnapshot:
    """A digest of every table's contents, taken past row-level security."""

    def __init__(self, pg_url: str) -> None:
        self._engine = create_engine(pg_url, poolclass=pool.NullPool)
        tables = [t.name for t in Base.metadata.sorted_tables if t.name not in UNCHECKED_TABLES]
        parts = [
            f"SELECT '{name}', md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{name}\" t"
            for name in tables
        ]
        self._query = text(" UNION ALL ".join(parts))

    def take(self) -> dict[str, str]:
        with self._engine.connect() as conn:
            return {name: digest for name, digest in conn.execute(self._query)}


@pytest.fixture(scope="module")
def snapshot(world: World) -> DatabaseSnapshot:
    return DatabaseSnapshot(world.pg_url)


def call(world: World, method: MethodDescriptor, payload: bytes, metadata: Any) -> tuple[grpc.StatusCode, Any]:
    path = f"/{method.containing_service.full_name}/{method.name}"
    channel = world.server.channel
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path)(payload, metadata=metadata, timeout=STREAM_TIMEOUT)
            try:
                next(iter(stream), None)
            finally:
                stream.cancel()
            return grpc.StatusCode.OK, None
        channel.unary_unary(path)(payload, metadata=metadata, timeout=30)
        return grpc.StatusCode.OK, None
    except grpc.RpcError as error:
        return error.code(), error


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def assert_sound(
    method: MethodDescriptor,
    send: Callable[[], tuple[grpc.StatusCode, Any]],
    snapshot: DatabaseSnapshot,
    caplog: pytest.LogCaptureFixture,
    what: str,
) -> None:
    caplog.clear()
    before = snapshot.take()
    code, error = send()
    label = f"{method.full_name} {what}"
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), f"{label}: {code} {error}"
    if error is not None and code not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        info = error_info(error)
        assert info is not None and info.reason, f"{label}: {code} without an ErrorInfo: {error}"
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert info.metadata.get("field"), f"{label}: INVALID_ARGUMENT names no field: {info}"
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, f"{label}: logged {[(r.levelname, r.getMessage()) for r in loud]}"
    # The store's last-resort translation of a refused value: the boundary must come first.
    late = [r.getMessage() for r in caplog.records if r.getMessage().startswith("database refused a value")]
    assert not late, f"{label}: reached the database with a value it refused: {late}"
    if code != grpc.StatusCode.OK:
        after = snapshot.take()
        changed = sorted(name for name in before if before[name] != after[name])
        assert not changed, f"{label}: failed with {code} but changed {changed}"


IDS = [m.full_name for m in METHODS]


@pytest.mark.parametrize("method", METHODS, ids=IDS)
@pytest.mark.parametrize("identity", ["owner", "anonymous"])
def test_generated_requests_never_break_the_server(
    world: World, snapshot: DatabaseSnapshot, caplog: pytest.LogCaptureFixture, method: MethodDescriptor, identity: str
) -> None:
    caplog.set_level(logging.WARNING)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=message_strategy(world, method.input_type))
    def check(request: Message) -> None:
        metadata = world.owner_metadata() if identity == "owner" else ()
        payload = request.SerializeToString()
        label = f"as {identity}: {request}"
        assert_sound(method, lambda: call(world, method, payload, metadata), snapshot, caplog, label)

    check()


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_bytes_that_do_not_parse_are_invalid_argument(
    world: World, snapshot: DatabaseSnapshot, caplog: pytest.LogCaptureFixture, method: MethodDescriptor
) -> None:
    caplog.set_level(logging.WARNING)
    for payload in undecodable(method):
        for metadata in ((), world.owner_metadata()):
            caplog.clear()
            code, error = call(world, method, payload, metadata)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{method.full_name} {payload!r}: {code} {error}"
            info = error_info(error)
            assert info is not None and info.metadata.get("field") == "request"
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and not warnings[0].exc_info, [r.getMessage() for r in caplog.records]
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert_sound(method, lambda: call(world, method, b"\xff", ()), snapshot, caplog, "garbage")


def test_the_fuzzer_covers_every_method_the_server_hosts(world: World) -> None:
    hosted = {f"{service.full_name}.{m.name}" for service in server_module.GOVERNED_SERVICES for m in service.methods}
    assert hosted <= set(IDS)
    assert f"{server_module.ext_authz.SERVICE_NAME}.Check" in IDS
