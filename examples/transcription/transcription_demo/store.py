"""Transcription jobs, always read and written within one tenant."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Column, DateTime, Float, Index, MetaData, String, Table, Text, create_engine, insert, select
from sqlalchemy.engine import Engine

metadata = MetaData()
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(36), nullable=False),
    Column("created_by", String(64), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("audio_url", Text, nullable=False),
    Column("language", String(16), nullable=False),
    Column("audio_seconds", Float, nullable=False, default=0.0),
    Column("status", String(16), nullable=False),
    Column("transcript", Text, nullable=False, default=""),
    Index("ix_jobs_tenant_created", "tenant_id", "created_at"),
)


@dataclass(frozen=True)
class Job:
    id: str
    tenant_id: str
    created_by: str
    created_at: str
    audio_url: str
    language: str
    audio_seconds: float
    status: str
    transcript: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _job(row: Any) -> Job:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=dt.UTC)
    return Job(
        id=row.id,
        tenant_id=row.tenant_id,
        created_by=row.created_by,
        created_at=created.isoformat(),
        audio_url=row.audio_url,
        language=row.language,
        audio_seconds=row.audio_seconds,
        status=row.status,
        transcript=row.transcript,
    )


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    return create_engine(url, pool_pre_ping=True)


class JobStore:
    """Every method takes the tenant: there is no way to read across tenants."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, tenant_id: str, created_by: str, audio_url: str, language: str, audio_seconds: float) -> Job:
        # The demo "transcribes" at once; a real service would queue the work.
        values = {
            "id": str(uuid.uuid4()),
            "tenant_id": tenant_id,
            "created_by": created_by,
            "created_at": dt.datetime.now(dt.UTC),
            "audio_url": audio_url,
            "language": language,
            "audio_seconds": audio_seconds,
            "status": "done",
            "transcript": f"(demo transcript of {audio_seconds:g} s of {language} audio)",
        }
        with self._engine.begin() as conn:
            conn.execute(insert(jobs).values(**values))
        return _job(SimpleNamespace(**values))

    def get(self, tenant_id: str, job_id: str) -> Job | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.tenant_id == tenant_id, jobs.c.id == job_id)).first()
        return _job(row) if row is not None else None

    def list(self, tenant_id: str, limit: int = 100) -> list[Job]:
        query = select(jobs).where(jobs.c.tenant_id == tenant_id).order_by(jobs.c.created_at.desc()).limit(limit)
        with self._engine.connect() as conn:
            return [_job(row) for row in conn.execute(query)]
