"""Hash-chained audit log: canonical encoding, and detection of edits, deletions, reorderings and truncation."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest

from federation import (
    GENESIS_HASH,
    AuditAction,
    AuditEntry,
    AuditHead,
    AuditResult,
    InvalidArgumentError,
    append,
    canonical_detail,
    canonical_entry_bytes,
    entry_hash,
    head_of,
    verify_entries,
)

START = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def _log(count: int = 6) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    actions: list[tuple[str, str, str, dict[str, Any] | None]] = [
        (AuditAction.DRILLDOWN_SERVED, "gd", "cases?item=440100", {"rows": 120}),
        (AuditAction.DRILLDOWN_FORWARDED, "gd.gz", "gd.gz.py", {"rows": 12}),
        (AuditAction.REPORT_ACCEPTED, "gd.gz.py", "report #7", {"digest": "ab12"}),
        (AuditAction.REPORT_REFUSED, "gd.gz.hp", "report #3", {"reason": "签名无效"}),
        (AuditAction.PKI_REVOKED, "admin", "gd.gz.hp", {"serials": ["1f", "2e"]}),
        (AuditAction.KEYS_ROTATED, "admin", "report key", None),
    ]
    for index in range(count):
        action, actor, target, detail = actions[index % len(actions)]
        result = AuditResult.REFUSED if action == AuditAction.REPORT_REFUSED else AuditResult.OK
        entries.append(
            append(
                entries[-1] if entries else None,
                at=START + dt.timedelta(minutes=index),
                actor=actor,
                action=action,
                target=target,
                detail=detail,
                result=result,
            )
        )
    return entries


def test_canonical_encoding_is_explicit_and_stable() -> None:
    first = append(None, at=START, actor="gd", action="drilldown.served", target="t", detail={"b": 1, "a": "乙"})
    assert first.seq == 1
    assert first.prev_hash == GENESIS_HASH
    assert first.detail_json == '{"a":"乙","b":1}'
    expected = (
        '{"action":"drilldown.served","actor":"gd","at":"2026-03-02T09:30:00.000000+00:00",'
        '"detail_json":"{\\"a\\":\\"乙\\",\\"b\\":1}","prev_hash":"' + GENESIS_HASH + '","result":"ok",'
        '"seq":1,"target":"t"}'
    ).encode()
    assert (
        canonical_entry_bytes(
            seq=1,
            at=START,
            actor="gd",
            action="drilldown.served",
            target="t",
            detail_json=first.detail_json,
            result="ok",
            prev_hash=GENESIS_HASH,
        )
        == expected
    )
    assert first.hash == hashlib.sha256(expected).hexdigest()
    # The same instant written in another zone hashes the same; the detail's key order does not matter.
    again = append(
        None,
        at=START.astimezone(SHANGHAI),
        actor="gd",
        action="drilldown.served",
        target="t",
        detail={"a": "乙", "b": 1},
    )
    assert again.hash == first.hash
    assert first.detail() == {"a": "乙", "b": 1}


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="timezone-aware"):
        append(None, at=START.replace(tzinfo=None), actor="gd", action="x")
    with pytest.raises(InvalidArgumentError, match="actor"):
        append(None, at=START, actor="", action="x")
    with pytest.raises(InvalidArgumentError, match="action"):
        append(None, at=START, actor="gd", action="")
    with pytest.raises(InvalidArgumentError, match="plain JSON"):
        canonical_detail({"when": START})
    with pytest.raises(InvalidArgumentError, match="plain JSON"):
        canonical_detail({"ratio": float("nan")})


def test_intact_log_verifies_and_round_trips_through_json() -> None:
    entries = _log()
    assert verify_entries(entries) == []
    assert head_of(entries) == AuditHead(6, entries[-1].hash)
    assert head_of([]) is None
    stored = [json.loads(json.dumps(entry.to_dict())) for entry in entries]
    restored = [AuditEntry.from_dict(item) for item in stored]
    assert restored == entries
    assert verify_entries(restored, remembered_head=head_of(entries)) == []
    # A log that keeps growing still matches an older remembered head.
    assert verify_entries(entries, remembered_head=entries[2].head) == []
    with pytest.raises(InvalidArgumentError, match="lacks field hash"):
        AuditEntry.from_dict({key: value for key, value in stored[0].items() if key != "hash"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("actor", "someone else"),
        ("target", "gd.gz.sz"),
        ("result", "ok"),
        ("detail_json", '{"rows":1}'),
        ("at", START + dt.timedelta(days=1)),
        ("action", AuditAction.REPORT_ACCEPTED),
    ],
)
def test_an_edited_field_is_found(field: str, value: Any) -> None:
    entries = _log()
    entries[3] = replace(entries[3], **{field: value})
    assert verify_entries(entries) == ["entry #4: hash does not match its content (edited)"]


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    entries = _log()
    edited = replace(entries[2], detail_json='{"digest":"ffff"}')
    entries[2] = replace(edited, hash=entry_hash(edited))
    problems = verify_entries(entries)
    assert len(problems) == 1
    assert problems[0].startswith("entry #4: prev_hash")


def test_a_deleted_entry_is_found() -> None:
    entries = _log()
    del entries[2]
    problems = verify_entries(entries)
    assert any("entries #3..#3 are missing (deleted)" in problem for problem in problems)
    assert any(problem.startswith("entry #4: prev_hash") for problem in problems)
    # Deleting the first entry is found too.
    assert any("missing" in problem for problem in verify_entries(_log()[1:]))


def test_reordered_entries_are_found() -> None:
    entries = _log()
    entries[2], entries[3] = entries[3], entries[2]
    problems = verify_entries(entries)
    assert any("out of order" in problem for problem in problems)
    assert any("prev_hash" in problem for problem in problems)
    # Renumbering and rehashing the swapped pair still cannot hide it: the links break.
    renumbered = []
    for seq, entry in enumerate(entries, start=1):
        moved = replace(entry, seq=seq)
        renumbered.append(replace(moved, hash=entry_hash(moved)))
    assert any("prev_hash" in problem for problem in verify_entries(renumbered))


def test_a_truncated_tail_is_found_given_a_remembered_head() -> None:
    entries = _log()
    remembered = head_of(entries)
    assert remembered is not None
    truncated = entries[:4]
    assert verify_entries(truncated) == []  # without a remembered head a clean cut looks like a shorter log
    assert verify_entries(truncated, remembered_head=remembered) == [
        "log ends at #4 but #6 was remembered as its head (truncated)"
    ]
    assert verify_entries([], remembered_head=remembered) == [
        "log ends at #0 but #6 was remembered as its head (truncated)"
    ]


def test_a_rewritten_tail_is_found_given_a_remembered_head() -> None:
    entries = _log()
    remembered = head_of(entries)
    # Cut back to #4 and write a different #5 and #6: a consistent chain, but not the one remembered.
    rewritten = entries[:4]
    for minute in (10, 11):
        rewritten.append(append(rewritten[-1], at=START + dt.timedelta(minutes=minute), actor="admin", action="noop"))
    assert verify_entries(rewritten) == []
    problems = verify_entries(rewritten, remembered_head=remembered)
    assert len(problems) == 1
    assert "differs from the remembered head" in problems[0]


def test_a_suffix_verifies_from_a_start_head() -> None:
    entries = _log()
    assert verify_entries(entries[3:], start=entries[2].head) == []
    assert verify_entries(entries[3:], start=entries[2].head, remembered_head=entries[1].head) == []
    assert verify_entries(entries[3:], start=entries[2].head, remembered_head=entries[-1].head) == []
    problems = verify_entries(entries[3:], start=entries[1].head)
    assert any("missing" in problem for problem in problems)
    wrong_start = AuditHead(3, "f" * 64)
    assert verify_entries(entries[3:], start=entries[2].head, remembered_head=wrong_start) == [
        "start #3 differs from the remembered head (rewritten)"
    ]
