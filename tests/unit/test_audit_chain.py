from __future__ import annotations

import dataclasses
import datetime as dt

from tahoe_auth.domain.audit import GENESIS, AuditFields, StoredEntry, chain_hash, verify_chain

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def build(n: int) -> list[StoredEntry]:
    entries, previous = [], GENESIS
    for i in range(1, n + 1):
        fields = AuditFields("t1", i, T0 + dt.timedelta(seconds=i), "u1", "user", "login", "u1", "success")
        digest = chain_hash(previous, fields)
        entries.append(StoredEntry(fields, previous, digest))
        previous = digest
    return entries


def test_intact_chain_verifies() -> None:
    entries = build(5)
    assert verify_chain("t1", entries, 5, entries[-1].entry_hash) is None
    assert verify_chain("t1", [], 0, GENESIS) is None


def test_edited_entry_is_detected() -> None:
    entries = build(5)
    edited = dataclasses.replace(entries[2].fields, outcome="failure")
    entries[2] = dataclasses.replace(entries[2], fields=edited)
    problem = verify_chain("t1", entries, 5, entries[-1].entry_hash)
    assert problem is not None and problem.sequence == 3 and "modified" in problem.problem


def test_deleted_entry_is_detected() -> None:
    entries = build(5)
    del entries[1]
    problem = verify_chain("t1", entries, 5, entries[-1].entry_hash)
    assert problem is not None and problem.sequence == 2 and "missing" in problem.problem


def test_deleted_newest_entry_is_detected_against_the_head() -> None:
    entries = build(5)
    head = entries[-1].entry_hash
    problem = verify_chain("t1", entries[:-1], 5, head)
    assert problem is not None and "removed" in problem.problem


def test_rehashing_an_edit_still_breaks_the_next_link() -> None:
    entries = build(4)
    edited = dataclasses.replace(entries[1].fields, actor="someone-else")
    entries[1] = StoredEntry(edited, entries[1].previous_hash, chain_hash(entries[1].previous_hash, edited))
    problem = verify_chain("t1", entries, 4, entries[-1].entry_hash)
    assert problem is not None and problem.sequence == 3 and "link" in problem.problem
