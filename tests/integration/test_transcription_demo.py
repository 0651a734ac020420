"""The demo transcription service's own pieces: the tenancy migration that backfills
legacy rows into a designated tenant, tenant-scoped storage, usage reporting."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.exc import IntegrityError
from transcription_demo import migrate
from transcription_demo.store import JobStore, make_engine
from transcription_demo.usage import METRIC, UsageEvent, UsageReporter

LEGACY = "00000000-0000-0000-0000-00000000cafe"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'transcription.db'}"


def legacy_rows(url: str, count: int) -> None:
    """The service as it was before tenancy, with jobs that belong to nobody."""
    migrate.upgrade(url, "0001")
    engine = make_engine(url)
    with engine.begin() as conn:
        for i in range(count):
            conn.execute(
                sa.text(
                    "INSERT INTO jobs (id, created_at, audio_url, language, audio_seconds, status, transcript) "
                    "VALUES (:id, :at, :url, 'en', 1.0, 'done', 'old')"
                ),
                {"id": f"legacy-{i}", "at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC), "url": f"s3://old/{i}.wav"},
            )
    engine.dispose()


def test_legacy_rows_are_backfilled_into_the_designated_tenant(url: str) -> None:
    legacy_rows(url, 3)
    migrate.upgrade(url, legacy_tenant_id=LEGACY)
    assert migrate.current(url) == migrate.head()
    store = JobStore(make_engine(url))
    assert sorted(j.id for j in store.list(LEGACY)) == ["legacy-0", "legacy-1", "legacy-2"]
    assert store.list("someone-else") == []
    with pytest.raises(IntegrityError), make_engine(url).begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO jobs (id, created_at, audio_url, language, audio_seconds, status, transcript) "
                "VALUES ('x', '2025-01-01', 'u', 'en', 1, 'done', '')"
            )
        )


def test_without_a_designated_tenant_legacy_rows_stop_the_migration(url: str) -> None:
    legacy_rows(url, 2)
    with pytest.raises(RuntimeError, match="TRANSCRIPTION_LEGACY_TENANT_ID"):
        migrate.upgrade(url)
    assert migrate.current(url) == "0001"
    engine = make_engine(url)
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("jobs")}
        assert "tenant_id" not in columns
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar() == 2


def test_a_fresh_database_needs_no_designated_tenant_and_downgrades(url: str) -> None:
    migrate.upgrade(url)
    store = JobStore(make_engine(url))
    job = store.create("t1", "user:u1", "s3://a.wav", "en", 2.5)
    assert store.get("t1", job.id) == job
    assert store.get("t2", job.id) is None
    command.downgrade(migrate.alembic_config(url), "0001")
    assert migrate.current(url) == "0001"


def test_usage_is_reported_once_per_job_with_retries() -> None:
    sent: list[UsageEvent] = []
    failures = [2]
    done = threading.Event()

    def send(event: UsageEvent) -> None:
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("usage service unavailable")
        sent.append(event)
        done.set()

    reporter = UsageReporter(send)
    reporter.job_done("t1", "job-1", 12.5, "req-1")
    assert done.wait(5) and reporter.flush()
    assert sent == [UsageEvent("t1", METRIC, 12.5, "job-1", "req-1")]


def test_a_full_usage_queue_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    blocker = threading.Event()
    reporter = UsageReporter(lambda event: blocker.wait(5), max_queue=1)
    with caplog.at_level(logging.ERROR):
        for i in range(4):
            reporter.job_done("t1", f"job-{i}", 1.0, "")
    blocker.set()
    assert "usage queue full" in caplog.text
