"""Tamper-evident audit entries: each tenant's entries form a hash chain.

entry_hash = SHA-256(previous entry_hash || canonical JSON of the entry's fields)

Editing an entry breaks its own hash; deleting one leaves a gap in the sequence
numbers and breaks the next link; deleting the newest is caught against the chain
head kept beside the entries. `verify_chain` reports the first problem it finds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditFields:
    """What is hashed. Never put a secret in `details`."""

    tenant_id: str
    sequence: int
    occurred_at: dt.datetime
    actor: str
    actor_type: str
    action: str
    target: str
    outcome: str
    client_address: str = ""
    request_id: str = ""
    traceparent: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def canonical(self) -> bytes:
        body = {
            "tenant_id": self.tenant_id,
            "sequence": self.sequence,
            "occurred_at": self.occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
            "actor": self.actor,
            "actor_type": self.actor_type,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "client_address": self.client_address,
            "request_id": self.request_id,
            "traceparent": self.traceparent,
            "details": dict(self.details),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def chain_hash(previous_hash: str, fields: AuditFields) -> str:
    return hashlib.sha256(previous_hash.encode() + fields.canonical()).hexdigest()


@dataclass(frozen=True)
class StoredEntry:
    fields: AuditFields
    previous_hash: str
    entry_hash: str


@dataclass(frozen=True)
class ChainProblem:
    tenant_id: str
    sequence: int
    problem: str


def verify_chain(
    tenant_id: str, entries: Iterable[StoredEntry], head_sequence: int, head_hash: str
) -> ChainProblem | None:
    """Entries in sequence order; the head is what the last append recorded."""
    expected_sequence, previous = 1, GENESIS
    for entry in entries:
        sequence = entry.fields.sequence
        if sequence != expected_sequence:
            return ChainProblem(tenant_id, expected_sequence, f"entry {expected_sequence} is missing")
        if entry.previous_hash != previous:
            return ChainProblem(tenant_id, sequence, "link to the previous entry is broken")
        if chain_hash(previous, entry.fields) != entry.entry_hash:
            return ChainProblem(tenant_id, sequence, "entry was modified")
        previous, expected_sequence = entry.entry_hash, sequence + 1
    if expected_sequence - 1 != head_sequence or previous != head_hash:
        return ChainProblem(tenant_id, head_sequence, "newest entries were removed")
    return None


# -- what is recorded ----------------------------------------------------------------------

SUCCESS = "success"
FAILURE = "failure"
DENIED = "denied"
OUTCOMES = (SUCCESS, FAILURE, DENIED)

PLATFORM_CHAIN = ""
"""The chain of platform-level entries (platform actions, logins to unknown tenants)."""

# Actor types beyond the principal's subject types (user, api_key, service, platform).
ANONYMOUS = "anonymous"
SYSTEM_ACTOR = "system"

SECRET_KEYS = ("password", "secret", "token", "refresh_token", "api_key", "private_key", "credential")


def scrub(details: Mapping[str, Any]) -> dict[str, Any]:
    """Details without anything that looks like a secret (defence in depth: callers
    must not pass secrets in the first place)."""
    clean: dict[str, Any] = {}
    for key, value in details.items():
        if any(marker in key.lower() for marker in SECRET_KEYS) and not key.lower().endswith(("_id", "_prefix")):
            clean[key] = "[redacted]"
        elif isinstance(value, Mapping):
            clean[key] = scrub(value)
        else:
            clean[key] = value
    return clean


@dataclass(frozen=True)
class AuditFilter:
    actor: str = ""
    action: str = ""  # exact, or a prefix ending in "*" ("auth.*")
    outcome: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None
