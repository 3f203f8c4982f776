"""Hash-chained audit entries: drill-downs served or forwarded, reports accepted or refused, admin actions.

Each entry's hash is SHA-256 over its canonical bytes: the JSON object of its fields (seq, at, actor, action,
target, detail_json, result, prev_hash) with sorted keys, no whitespace, UTF-8 (non-ASCII kept as is), where
``at`` is UTC ISO 8601 with microseconds and ``detail_json`` is the detail object's canonical JSON *string*
(hashed exactly as stored: keep it in a text column, never a JSON type that may reorder it). Entry 1 names
``GENESIS_HASH`` as its predecessor. Editing an entry breaks its hash; deleting or reordering entries breaks
the sequence or the ``prev_hash`` links; cutting the tail off is found by comparing with a head remembered
elsewhere (a parent, a printout, the operator's notes).

Appending is the caller's unit of work: read the head and insert the new entry in one transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from federation.errors import InvalidArgumentError

__all__ = [
    "GENESIS_HASH",
    "AuditAction",
    "AuditEntry",
    "AuditHead",
    "AuditProblem",
    "AuditResult",
    "append",
    "canonical_detail",
    "canonical_entry_bytes",
    "entry_hash",
    "find_problems",
    "head_of",
    "verify_entries",
]

GENESIS_HASH = "0" * 64


class AuditAction:
    """The action names the node writes (free text is allowed; these keep the common ones uniform)."""

    DRILLDOWN_SERVED = "drilldown.served"
    DRILLDOWN_FORWARDED = "drilldown.forwarded"
    DRILLDOWN_REFUSED = "drilldown.refused"
    REPORT_ACCEPTED = "report.accepted"
    REPORT_REFUSED = "report.refused"
    PKI_INIT_ROOT = "pki.init_root"
    PKI_TOKEN_ISSUED = "pki.token_issued"  # noqa: S105 - an action name, not a secret
    PKI_ENROLLED = "pki.enrolled"
    PKI_REVOKED = "pki.revoked"
    KEYS_ROTATED = "keys.rotated"


class AuditResult:
    """Result words: done, refused by a rule or a check, or failed on an error."""

    OK = "ok"
    REFUSED = "refused"
    ERROR = "error"


class AuditHead(NamedTuple):
    """The last entry of a log: its sequence number and hash (what to remember to detect truncation)."""

    seq: int
    hash: str


@dataclass(frozen=True)
class AuditEntry:
    """One audit log entry; ``hash`` covers every other field, ``prev_hash`` links it to the one before."""

    seq: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    detail_json: str
    result: str
    prev_hash: str
    hash: str

    @property
    def head(self) -> AuditHead:
        """The entry as a head (seq, hash)."""
        return AuditHead(self.seq, self.hash)

    def detail(self) -> Any:
        """The detail object parsed from detail_json."""
        return json.loads(self.detail_json)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``at`` as the canonical UTC string."""
        data = asdict(self)
        data["at"] = _canonical_time(self.at)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEntry:
        """Parse the form written by to_dict (no verification: use verify_entries)."""
        try:
            return cls(
                seq=int(data["seq"]),
                at=dt.datetime.fromisoformat(str(data["at"])),
                actor=str(data["actor"]),
                action=str(data["action"]),
                target=str(data["target"]),
                detail_json=str(data["detail_json"]),
                result=str(data["result"]),
                prev_hash=str(data["prev_hash"]),
                hash=str(data["hash"]),
            )
        except KeyError as error:
            raise InvalidArgumentError(f"audit entry lacks field {error.args[0]}") from error
        except (TypeError, ValueError) as error:
            raise InvalidArgumentError(f"audit entry has a bad field: {error}") from error


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_detail(detail: Mapping[str, Any] | None) -> str:
    """The canonical JSON string of a detail object (sorted keys, no whitespace); ``{}`` for None."""
    try:
        return _canonical_json(dict(detail or {}))
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(f"audit detail is not plain JSON data: {error}") from error


def _canonical_time(at: dt.datetime) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidArgumentError(f"audit time must be timezone-aware, got naive {at.isoformat()}")
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds")


def canonical_entry_bytes(
    *, seq: int, at: dt.datetime, actor: str, action: str, target: str, detail_json: str, result: str, prev_hash: str
) -> bytes:
    """The bytes an entry's hash is taken over: canonical JSON of its fields and prev_hash, UTF-8."""
    fields = {
        "seq": seq,
        "at": _canonical_time(at),
        "actor": actor,
        "action": action,
        "target": target,
        "detail_json": detail_json,
        "result": result,
        "prev_hash": prev_hash,
    }
    return _canonical_json(fields).encode("utf-8")


def entry_hash(entry: AuditEntry) -> str:
    """Hex SHA-256 recomputed from an entry's fields (compare with entry.hash)."""
    return hashlib.sha256(
        canonical_entry_bytes(
            seq=entry.seq,
            at=entry.at,
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
            detail_json=entry.detail_json,
            result=entry.result,
            prev_hash=entry.prev_hash,
        )
    ).hexdigest()


def append(
    prev: AuditEntry | AuditHead | None,
    *,
    at: dt.datetime,
    actor: str,
    action: str,
    target: str = "",
    result: str = AuditResult.OK,
    detail: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """The entry that follows ``prev`` (None: the first entry of a log); the caller stores it."""
    if not actor:
        raise InvalidArgumentError("audit entry needs an actor (who did it)")
    if not action:
        raise InvalidArgumentError("audit entry needs an action (what was done)")
    seq, prev_hash = (1, GENESIS_HASH) if prev is None else (prev.seq + 1, prev.hash)
    detail_json = canonical_detail(detail)
    digest = hashlib.sha256(
        canonical_entry_bytes(
            seq=seq,
            at=at,
            actor=actor,
            action=action,
            target=target,
            detail_json=detail_json,
            result=result,
            prev_hash=prev_hash,
        )
    ).hexdigest()
    return AuditEntry(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        target=target,
        detail_json=detail_json,
        result=result,
        prev_hash=prev_hash,
        hash=digest,
    )


def head_of(entries: Iterable[AuditEntry]) -> AuditHead | None:
    """The head of a log: its last entry as (seq, hash), None if empty."""
    last = None
    for entry in entries:
        last = entry
    return None if last is None else last.head


class AuditProblem(NamedTuple):
    """One problem found in a log: the entry where it shows, its kind, and a sentence saying what is wrong.

    Kinds: ``edited`` (hash does not match content), ``deleted`` (a gap in seq), ``out_of_order`` (seq not
    increasing), ``broken_link`` (prev_hash is not the hash of the entry before), ``truncated`` and
    ``rewritten`` (compared with a remembered head).
    """

    seq: int
    kind: str
    message: str


def verify_entries(
    entries: Iterable[AuditEntry],
    *,
    remembered_head: AuditHead | None = None,
    start: AuditHead | None = None,
) -> list[str]:
    """Every problem found in a log read in storage order; an empty list means it verifies.

    Finds edited entries (hash does not match content), deleted ones (gaps in seq, broken links), reordered
    ones (seq not increasing, broken links), and, given ``remembered_head`` (a head recorded earlier), a
    truncated tail or a rewritten remembered entry. ``start`` is the head before the first entry when only
    a suffix of the log is checked (None: the log must begin at entry 1). The structured form is
    ``find_problems``.
    """
    return [problem.message for problem in find_problems(entries, remembered_head=remembered_head, start=start)]


def find_problems(
    entries: Iterable[AuditEntry],
    *,
    remembered_head: AuditHead | None = None,
    start: AuditHead | None = None,
) -> list[AuditProblem]:
    """verify_entries with each problem's entry and kind (see AuditProblem), in the order found."""
    problems: list[AuditProblem] = []
    expected_seq, expected_prev = (1, GENESIS_HASH) if start is None else (start.seq + 1, start.hash)
    seen_remembered = False
    if remembered_head is not None and start is not None and remembered_head.seq <= start.seq:
        # The remembered head lies before the checked suffix: only the start itself can be compared with it.
        if remembered_head.seq == start.seq and remembered_head.hash != start.hash:
            problems.append(
                AuditProblem(start.seq, "rewritten", f"start #{start.seq} differs from the remembered head (rewritten)")
            )
        seen_remembered = True
    last: AuditEntry | None = None
    for entry in entries:
        recomputed = _safe_hash(entry)
        if recomputed != entry.hash:
            problems.append(
                AuditProblem(entry.seq, "edited", f"entry #{entry.seq}: hash does not match its content (edited)")
            )
        if entry.seq != expected_seq:
            if entry.seq > expected_seq:
                problems.append(
                    AuditProblem(
                        expected_seq,
                        "deleted",
                        f"entry #{entry.seq} follows #{expected_seq - 1}: entries #{expected_seq}.."
                        f"#{entry.seq - 1} are missing (deleted)",
                    )
                )
            else:
                problems.append(
                    AuditProblem(
                        entry.seq,
                        "out_of_order",
                        f"entry #{entry.seq} follows #{expected_seq - 1}: out of order (reordered or repeated)",
                    )
                )
        if entry.prev_hash != expected_prev:
            problems.append(
                AuditProblem(
                    entry.seq,
                    "broken_link",
                    f"entry #{entry.seq}: prev_hash {entry.prev_hash[:12]} does not match the hash "
                    f"{expected_prev[:12]} of the entry before it (deleted, inserted or reordered)",
                )
            )
        if remembered_head is not None and entry.seq == remembered_head.seq:
            seen_remembered = True
            if entry.hash != remembered_head.hash:
                problems.append(
                    AuditProblem(
                        entry.seq,
                        "rewritten",
                        f"entry #{entry.seq}: hash {entry.hash[:12]} differs from the remembered head "
                        f"{remembered_head.hash[:12]} (rewritten)",
                    )
                )
        # Continue from what the entry claims, so one problem is reported once, not at every later entry.
        expected_seq, expected_prev = entry.seq + 1, entry.hash
        last = entry
    if remembered_head is not None and not seen_remembered:
        last_seq = last.seq if last is not None else (start.seq if start else 0)
        if last_seq < remembered_head.seq:
            problems.append(
                AuditProblem(
                    last_seq + 1,
                    "truncated",
                    f"log ends at #{last_seq} but #{remembered_head.seq} was remembered as its head (truncated)",
                )
            )
        else:
            problems.append(
                AuditProblem(
                    remembered_head.seq,
                    "deleted",
                    f"remembered head #{remembered_head.seq} is not in the log (deleted)",
                )
            )
    return problems


def _safe_hash(entry: AuditEntry) -> str:
    """entry_hash, or a marker that never matches when a field cannot even be encoded (e.g. a naive time)."""
    try:
        return entry_hash(entry)
    except InvalidArgumentError:
        return "unencodable"
