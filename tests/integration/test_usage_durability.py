"""Nothing recorded is lost when Redis or the server restarts; the embedded default
(SQLite, no Redis) meters too; the CLI exports."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tahoe_auth import cli
from tahoe_auth.domain.usage import UsageEvent
from tahoe_auth.services.context import CallContext
from tahoe_auth.v1 import usage_pb2, usage_pb2_grpc
from tests import support
from tests.servers import redis_server


def events(n: int, metric: str = "api.requests", quantity: float = 1.0) -> list[UsageEvent]:
    now = dt.datetime.now(dt.UTC)
    return [UsageEvent(metric, quantity, now) for _ in range(n)]


def test_redis_restart_loses_no_usage(
    clean_pg: str, master_key: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import base64

    with redis_server(tmp_path) as redis:
        env = {
            "TAHOE_DATABASE_URL": clean_pg,
            "TAHOE_REDIS_URL": redis.url,
            "TAHOE_MASTER_KEY": base64.urlsafe_b64encode(master_key).decode(),
            "TAHOE_VAR_DIR": str(tmp_path / "var"),
        }
        with support.running_server(env) as server:
            app = server.app
            tenant = server.create_tenant()
            totals = app.usage_totals  # the readers' view: live counters, rebuilt when missing
            app.usage_ledger.append({tenant.id: events(5)})
            assert totals.current([tenant.id])[tenant.id] == {"api.requests": 5.0}
            app.usage_ledger.append({tenant.id: events(2)})
            assert totals.current([tenant.id])[tenant.id] == {"api.requests": 7.0}  # incremented live

            redis.stop()
            failures_before = REGISTRY.get_sample_value(
                "tahoe_store_failures_total", {"site": "usage_live_add", "action": "fail_open"}
            )
            with caplog.at_level(logging.WARNING):
                result = app.usage_ledger.append({tenant.id: events(3)})  # durable in PostgreSQL anyway
                assert result.recorded == 3
                assert totals.current([tenant.id])[tenant.id] == {"api.requests": 10.0}  # from the database
            assert "rebuilt from the database" in caplog.text
            after = REGISTRY.get_sample_value(
                "tahoe_store_failures_total", {"site": "usage_live_add", "action": "fail_open"}
            )
            assert after == (failures_before or 0) + 1

            redis.start()  # empty: every live counter is gone
            app.usage_ledger.append({tenant.id: events(4)})  # increments a hash that was never rebuilt
            assert totals.current([tenant.id])[tenant.id] == {"api.requests": 14.0}  # rebuilt, not 4
            app.usage_pipeline.run_once()
            assert totals.current([tenant.id])[tenant.id] == {"api.requests": 14.0}
            summary = app.usage.summary(CallContext(principal=_platform()), tenant.id, "")
            assert [(line.metric, line.quantity) for line in summary.lines] == [("api.requests", 14.0)]


def _platform():  # type: ignore[no-untyped-def]
    from tahoe_auth.domain.principal import PLATFORM, Principal

    return Principal(tenant_id="", subject="ops", subject_type=PLATFORM, platform_admin=True)


def test_buffered_check_usage_survives_a_clean_restart(pg_env: dict[str, str]) -> None:
    with support.running_server(pg_env) as first:
        tenant = first.create_tenant()
        for _ in range(250):
            first.app.usage_recorder.record_request(tenant.id, "/v1/transcribe", "api_key")
        # No flush here: closing the app (SIGTERM -> serve() -> app.close()) flushes.
    with support.running_server(pg_env) as second:
        summary = second.app.usage.summary(CallContext(principal=_platform()), tenant.id, "")
        assert [(line.metric, line.quantity) for line in summary.lines] == [("api.requests", 250.0)]


def test_embedded_sqlite_meters_rolls_up_and_exports(embedded_server: support.RunningServer) -> None:
    server = embedded_server
    tenant = server.create_tenant()
    token = server.login(tenant).tokens.access_token
    stub = usage_pb2_grpc.UsageServiceStub(server.channel)
    metadata = support.bearer(token)
    batch = [usage_pb2.UsageEvent(metric="audio.seconds", quantity=1.5, idempotency_key=f"k{i % 7}") for i in range(20)]
    response = stub.RecordUsageBatch(usage_pb2.RecordUsageBatchRequest(events=batch), metadata=metadata)
    assert (response.recorded_count, response.duplicate_count) == (7, 13)
    server.app.usage_pipeline.run_once()
    stub.RecordUsage(
        usage_pb2.RecordUsageRequest(event=usage_pb2.UsageEvent(metric="audio.seconds", quantity=2)),
        metadata=metadata,
    )
    series = stub.GetUsage(
        usage_pb2.GetUsageRequest(metric="audio.seconds", granularity=usage_pb2.GRANULARITY_DAY), metadata=metadata
    )
    assert series.total == 12.5
    assert len(series.points) in (28, 29, 30, 31)
    exported = stub.ExportUsage(usage_pb2.ExportUsageRequest(format=usage_pb2.EXPORT_FORMAT_CSV), metadata=metadata)
    rows = list(csv.DictReader(io.StringIO(exported.content.decode())))
    assert [(r["tenant"], r["metric"], r["quantity"]) for r in rows] == [(tenant.slug, "audio.seconds", "12.5")]


def test_cli_exports_every_tenant(
    pg_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with support.running_server(pg_env) as server:
        a, b = server.create_tenant(), server.create_tenant()
        server.app.usage_ledger.append({a.id: events(3, "api.requests"), b.id: events(2, "audio.seconds", 4.0)})
    for key, value in pg_env.items():
        monkeypatch.setenv(key, value)
    period = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    out = tmp_path / "usage.json"
    assert cli.main(["usage", "export", "--period", period, "--output", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["period"] == period
    lines = {(t["tenant_id"], line["metric"], line["quantity"]) for t in document["tenants"] for line in t["lines"]}
    assert lines == {(a.id, "api.requests", 3.0), (b.id, "audio.seconds", 8.0)}
    assert cli.main(["usage", "export", "--tenant", b.id, "--format", "csv", "-o", "-"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["tenant_id"], r["metric"], r["quantity"]) for r in rows] == [(b.id, "audio.seconds", "8")]
    assert cli.main(["usage", "rollup"]) == 0
