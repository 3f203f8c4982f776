"""The records behind a bucket, as its commitment's leaves: read from the store, salted, and re-judged.

One leaf per case accepted on the bucket's day ("received": counts received and, if returned, cases_returned) and
one per case completed on it ("completed": counts completed and the early / on-time / within-legal / refused flags),
the same records and flags node.supervision's metrics count. Leaves are ordered by (role, case number), so adjacent
"received" leaves are neighbouring case numbers. Salts come from a key derived from the node's report signing key:
without it nobody can test a guessed record against a leaf digest.

``rejudge`` is the ancestor's half: recompute the deadlines with its own calendar and the committed item version,
then the flags from the dates, and name every field that differs.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from sqlalchemy import Connection, bindparam, func, select

from federation import serialize
from federation.proto.v1.spotcheck_pb2 import CommittedRecord
from node.domain import WorkCalendar, due_at, is_early
from node.spotcheck.tree import leaf_digest
from node.store import Case, Completion, ItemVersion, Step
from node.supervision import REFUSED_RESULT_CODES
from node.trust import SigningIdentity

__all__ = [
    "BucketKey",
    "Leaf",
    "Mismatch",
    "bucket_leaf_digests",
    "bucket_leaves",
    "leaf_sums",
    "rejudge",
    "salt_key",
]

BucketKey = tuple[date, str, str]  # (day, basic_code, item_type_code): the upward bucket's key
ROLE_RECEIVED = "received"
ROLE_COMPLETED = "completed"
_ROLE_ORDER = {ROLE_RECEIVED: 0, ROLE_COMPLETED: 1}
SALT_BYTES = 16


def salt_key(identity: SigningIdentity) -> bytes:
    """The node's secret for leaf salts, derived from its report signing key (never leaves the node)."""
    raw = identity.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return hashlib.sha256(b"supnet spot-check salt key\x00" + raw).digest()


def _salt(key: bytes, day: date, role: str, case_no: str) -> bytes:
    # Keyed BLAKE2b is a MAC in one C call (an HMAC costs several Python-level steps per leaf).
    message = f"{day.isoformat()}\x00{role}\x00{case_no}".encode()
    return hashlib.blake2b(message, key=key, digest_size=SALT_BYTES).digest()


def _mask(name: str) -> str:
    text = name.strip()
    return text[:1] + "*" * (len(text) - 1) if text else ""


@dataclass(frozen=True, slots=True)
class Leaf:
    """One committed record with its salt, plus what is shown but not committed (department, masked applicant)."""

    record: CommittedRecord
    salt: bytes
    department: str = ""
    applicant_masked: str = ""

    @property
    def record_bytes(self) -> bytes:
        """The record's canonical bytes (what the leaf digest covers with the salt)."""
        return serialize(self.record)


def leaf_sums(record: CommittedRecord) -> tuple[int, ...]:
    """The leaf's counts in SUM_FIELDS order: one leaf, then the flags the node counted for it."""
    return (
        1,
        int(record.counted_received),
        int(record.counted_completed),
        int(record.counted_early),
        int(record.counted_on_time),
        int(record.counted_within_legal),
        int(record.counted_refused),
        int(record.counted_returned),
    )


def _as_datetime(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _text(value: datetime | None) -> str:
    # "YYYY-MM-DDTHH:MM:SS" (seconds truncated): isoformat is several times faster than strftime.
    return value.isoformat(timespec="seconds") if value is not None else ""


# An item version as the leaves need it: (effective_from or None, version, promised unit, legal unit).
_Version = tuple[datetime | None, int, str, str]


def _versions(conn: Connection, codes: Iterable[str]) -> dict[str, list[_Version]]:
    """Each item's versions, oldest first: the one in force at acceptance gives a case's units."""
    versions: dict[str, list[_Version]] = defaultdict(list)
    wanted = sorted(set(codes))
    for start in range(0, len(wanted), 500):
        rows = conn.execute(
            select(
                ItemVersion.implementation_code,
                ItemVersion.version,
                ItemVersion.effective_from,
                ItemVersion.promised_limit_unit,
                ItemVersion.legal_limit_unit,
            )
            .where(ItemVersion.implementation_code.in_(wanted[start : start + 500]))
            .order_by(ItemVersion.implementation_code, ItemVersion.version)
        )
        for code, version, effective_from, promised_unit, legal_unit in rows:
            effective = _as_datetime(effective_from) if effective_from is not None else None
            versions[code].append((effective, int(version), promised_unit, legal_unit))
    return versions


def _version_at(versions: list[_Version], accepted_at: datetime) -> _Version | None:
    chosen = versions[0] if versions else None
    for version in versions:
        if version[0] is None or version[0] <= accepted_at:
            chosen = version
    return chosen


def _day_runs(days: Iterable[date]) -> list[tuple[datetime, datetime]]:
    """[start, end) of each run of consecutive days: an incremental report's days are few but may lie far apart."""
    runs: list[tuple[date, date]] = []
    for day in sorted(days):
        if runs and runs[-1][1] == day:
            runs[-1] = (runs[-1][0], day + timedelta(days=1))
        else:
            runs.append((day, day + timedelta(days=1)))
    midnight = datetime.min.time()
    return [(datetime.combine(first, midnight), datetime.combine(end, midnight)) for first, end in runs]


def _case_reads() -> dict[tuple[str, bool], Any]:
    """The reads of ``_rows``, built once: each on its own time column, with or without a filter on basic codes."""
    returns = (
        select(func.count())
        .where(Step.case_no == Case.case_no, Step.action == "return")
        .correlate(Case)
        .scalar_subquery()
        .label("return_steps")
    )
    columns = (
        Case.case_no,
        Case.implementation_code,
        Case.basic_code,
        Case.item_type_code,
        Case.department,
        Case.applicant_name,
        Case.accepted_at,
        Case.promised_limit,
        Case.legal_limit,
        Case.promised_due_at,
        Case.legal_due_at,
        Case.clock_stop_workdays,
        Completion.completed_at,
        Completion.result_code,
        returns,
    )
    joined = select(*columns).select_from(Case).outerjoin(Completion, Completion.case_no == Case.case_no)
    among = Case.basic_code.in_(bindparam("b_codes", expanding=True))
    reads: dict[tuple[str, bool], Any] = {}
    for name, column in (("accepted", Case.accepted_at), ("completed", Completion.completed_at)):
        # Bound values without a type of their own take the column's (its storage format on SQLite).
        by_time = joined.where(column >= bindparam("b_start"), column < bindparam("b_end"))
        reads[(name, False)] = by_time
        reads[(name, True)] = by_time.where(among)
    return reads


# Built at import: building these SQLAlchemy expressions cost more than running them, once per report.
_CASE_READS = _case_reads()
# A filter on the item codes only when few: a report of every item reads the days' rows whole.
_AMONG_AT_MOST = 200


def _rows(conn: Connection, wanted: set[BucketKey]) -> Iterable[tuple[Any, ...]]:
    """The cases accepted or completed on the keys' days (each once), unpacked by position."""
    basic_codes = sorted({basic for _day, basic, _type in wanted})
    among = len(basic_codes) <= _AMONG_AT_MOST
    # Two reads, each on its own time column (one OR across both would scan every case).
    return {
        row[0]: row
        for start, end in _day_runs({day for day, _basic, _type in wanted})
        for column in ("accepted", "completed")
        for row in conn.execute(
            _CASE_READS[(column, among)],
            {"b_start": start, "b_end": end, **({"b_codes": basic_codes} if among else {})},
        )
    }.values()


# One committed record as read: its bucket, its place in the bucket's order (role, case number), the record, its
# salt, its sums (SUM_FIELDS order), and what is shown but not committed (department, applicant name unmasked).
_Committed = tuple[BucketKey, tuple[int, str], CommittedRecord, bytes, tuple[int, ...], str, str]


def _committed(conn: Connection, keys: Iterable[BucketKey], key: bytes) -> Iterator[_Committed]:
    """Every committed record of the bucket keys, in no particular order (one read for all keys, plain rows)."""
    wanted = set(keys)
    if not wanted:
        return
    rows = _rows(conn, wanted)
    versions = _versions(conn, {row[1] for row in rows})
    received_role, completed_role = _ROLE_ORDER[ROLE_RECEIVED], _ROLE_ORDER[ROLE_COMPLETED]
    for (
        case_no,
        code,
        basic_code,
        item_type_code,
        department,
        applicant_name,
        accepted,
        promised_limit,
        legal_limit,
        promised_due_at,
        legal_due_at,
        clock_stop_workdays,
        completed,
        result_code,
        return_steps,
    ) in rows:
        accepted_at = _as_datetime(accepted)
        received_key = (accepted_at.date(), basic_code, item_type_code)
        received = received_key in wanted
        completed_at = completed_key = None
        if completed is not None:
            completed_at = _as_datetime(completed)
            completed_key = (completed_at.date(), basic_code, item_type_code)
            if completed_key not in wanted:
                completed_key = None
        if not received and completed_key is None:
            continue  # a case of these days, but of a bucket not asked for
        version = _version_at(versions.get(code, []), accepted_at)
        promised_due, legal_due = _as_datetime(promised_due_at), _as_datetime(legal_due_at)
        result = result_code or ""
        returns = int(return_steps or 0)
        base: dict[str, Any] = dict(
            case_no=case_no,
            implementation_code=code,
            basic_code=basic_code,
            item_type_code=item_type_code,
            item_version=version[1] if version is not None else 0,
            promised_limit=int(promised_limit),
            promised_limit_unit=version[2] if version is not None else "1",
            legal_limit=int(legal_limit),
            legal_limit_unit=version[3] if version is not None else "1",
            accepted_at=_text(accepted_at),
            completed_at=_text(completed_at),
            clock_stop_workdays=int(clock_stop_workdays or 0),
            promised_due_at=_text(promised_due),
            legal_due_at=_text(legal_due),
            result_code=result,
            return_steps=returns,
        )
        if received:
            returned = returns > 0
            record = CommittedRecord(role=ROLE_RECEIVED, counted_received=True, counted_returned=returned, **base)
            sums = (1, 1, 0, 0, 0, 0, 0, int(returned))
            salt = _salt(key, received_key[0], ROLE_RECEIVED, case_no)
            yield received_key, (received_role, case_no), record, salt, sums, department, applicant_name
        if completed_key is not None and completed_at is not None:
            early = is_early(completed_at, promised_due)
            on_time = completed_at <= promised_due
            within_legal = completed_at <= legal_due
            refused = result in REFUSED_RESULT_CODES
            record = CommittedRecord(
                role=ROLE_COMPLETED,
                counted_completed=True,
                counted_early=early,
                counted_on_time=on_time,
                counted_within_legal=within_legal,
                counted_refused=refused,
                **base,
            )
            sums = (1, 0, 1, int(early), int(on_time), int(within_legal), int(refused), 0)
            salt = _salt(key, completed_key[0], ROLE_COMPLETED, case_no)
            yield completed_key, (completed_role, case_no), record, salt, sums, department, applicant_name


def bucket_leaves(conn: Connection, keys: Iterable[BucketKey], key: bytes) -> dict[BucketKey, list[Leaf]]:
    """The committed leaves of each bucket key with own records, ordered by (role, case number)."""
    found: dict[BucketKey, list[tuple[tuple[int, str], Leaf]]] = defaultdict(list)
    for bucket, order, record, salt, _sums, department, applicant_name in _committed(conn, keys, key):
        found[bucket].append((order, Leaf(record, salt, department, _mask(applicant_name or ""))))
    return {bucket: [leaf for _order, leaf in sorted(items, key=_first)] for bucket, items in found.items()}


def bucket_leaf_digests(
    conn: Connection, keys: Iterable[BucketKey], key: bytes
) -> dict[BucketKey, list[tuple[bytes, tuple[int, ...]]]]:
    """Each bucket's (leaf digest, leaf sums) in leaf order: what its tree is built from, without the Leaf objects.

    The same leaves as ``bucket_leaves`` (the commitment a report carries must be the tree a spot check opens).
    """
    found: dict[BucketKey, list[tuple[tuple[int, str], bytes, tuple[int, ...]]]] = defaultdict(list)
    for bucket, order, record, salt, sums, _department, _applicant in _committed(conn, keys, key):
        found[bucket].append((order, leaf_digest(salt, serialize(record)), sums))
    return {
        bucket: [(digest, sums) for _order, digest, sums in sorted(items, key=_first)]
        for bucket, items in found.items()
    }


def _first(item: tuple[Any, ...]) -> Any:
    return item[0]


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One field of an opened record that the dates (or the bucket) contradict."""

    field: str
    reported: str
    rejudged: str


def _parse(value: str) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)  # strict enough: the format is checked by the round trip below
    if _text(parsed) != value:
        raise ValueError(f"date-time {value!r} is not YYYY-MM-DDTHH:MM:SS")
    return parsed


def rejudge(record: CommittedRecord, key: BucketKey, cal: WorkCalendar) -> list[Mismatch]:
    """Re-judge one opened record with this node's calendar: deadlines, flags, and that it belongs to the bucket."""
    found: list[Mismatch] = []

    def differs(field: str, reported: object, rejudged: object) -> None:
        if reported != rejudged:
            found.append(Mismatch(field, str(reported), str(rejudged)))

    day, basic_code, item_type_code = key
    differs("basic_code", record.basic_code, basic_code)
    differs("item_type_code", record.item_type_code, item_type_code)
    accepted_at = _parse(record.accepted_at)
    completed_at = _parse(record.completed_at)
    if accepted_at is None:
        return [*found, Mismatch("accepted_at", "", "a committed record needs its acceptance time")]
    stops = int(record.clock_stop_workdays)
    promised_due = due_at(cal, accepted_at, int(record.promised_limit), record.promised_limit_unit, stops)
    legal_due = due_at(cal, accepted_at, int(record.legal_limit), record.legal_limit_unit, stops)
    differs("promised_due_at", record.promised_due_at, _text(promised_due))
    differs("legal_due_at", record.legal_due_at, _text(legal_due))
    if record.role == ROLE_RECEIVED:
        differs("accepted_day", accepted_at.date().isoformat(), day.isoformat())
        differs("received", record.counted_received, True)
        differs("cases_returned", record.counted_returned, record.return_steps > 0)
        for name in ("counted_completed", "counted_early", "counted_on_time", "counted_within_legal"):
            differs(name.removeprefix("counted_"), getattr(record, name), False)
    elif record.role == ROLE_COMPLETED:
        if completed_at is None:
            return [*found, Mismatch("completed_at", "", "a completed record needs its completion time")]
        differs("completed_day", completed_at.date().isoformat(), day.isoformat())
        differs("completed", record.counted_completed, True)
        differs("completed_early", record.counted_early, is_early(completed_at, promised_due))
        differs("completed_on_time", record.counted_on_time, completed_at <= promised_due)
        differs("completed_within_legal", record.counted_within_legal, completed_at <= legal_due)
        differs("refused", record.counted_refused, record.result_code in REFUSED_RESULT_CODES)
        differs("received", record.counted_received, False)
        differs("cases_returned", record.counted_returned, False)
    else:
        found.append(Mismatch("role", record.role, "received | completed"))
    return found
