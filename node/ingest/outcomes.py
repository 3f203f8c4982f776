"""What became of the records: each record's outcome, one batch's bookkeeping, and the summary of an import.

A batch's counts, errors and outcomes are gathered in a BatchContext and merged into the ImportSummary only after
the batch commits, so the summary never counts a record that a rolled-back attempt wrote.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NotRequired, TypedDict

from sqlalchemy import Connection

from node.ingest.records import AnyRow, ItemTimeline, Pending
from node.ingest.validate import (
    BEFORE_ACCEPTANCE,
    CONFLICT,
    IN_FUTURE,
    INVALID_STATE,
    UNKNOWN_CASE,
    RecordError,
    field_label,
    problem_message,
    record_key,
)

Status = Literal["accepted", "duplicate", "rejected"]


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """What became of one record: accepted, duplicate (already stored, no change) or rejected (with the error)."""

    source: str
    line: int
    kind: str
    key: str | None
    status: Status
    error: RecordError | None = None


OutcomeCallback = Callable[[RecordOutcome], None]


class ImportedFile(TypedDict):
    """One imported file as the summary lists it: how it was read, its size and SHA-256 (as it was when opened)."""

    path: str
    format: str
    encoding: str
    kind: str | None
    bytes: int
    sha256: str
    sheet: NotRequired[str]  # a workbook's sheet (each sheet with data is listed on its own)


@dataclass
class ImportSummary:
    """Totals of one import: accepted, duplicates, rejected (by reason and kind), the errors and any warnings."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    errors: list[RecordError] = field(default_factory=list)
    errors_omitted: int = 0
    warnings: list[str] = field(default_factory=list)
    files: list[ImportedFile] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def records(self) -> int:
        """Records seen in total."""
        return self.accepted + self.duplicates + self.rejected

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: accepted, duplicates, rejected, errors, plus breakdowns."""
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "errors": [error.to_dict() for error in self.errors],
            "errors_omitted": self.errors_omitted,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "by_kind": {kind: dict(counts) for kind, counts in self.by_kind.items()},
            "warnings": list(self.warnings),
            "files": list(self.files),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class BatchContext:
    """Everything one attempt at one batch produces; merged into the summary only after the commit."""

    conn: Connection
    source: str
    now: datetime
    want_outcomes: bool
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    errors: list[RecordError] = field(default_factory=list)
    outcomes: list[RecordOutcome] = field(default_factory=list)
    new_items: dict[str, ItemTimeline] = field(default_factory=dict)
    # How far ahead of ``now`` an acceptance or completion may lie (config ingest.clock_skew_seconds).
    clock_skew: timedelta = timedelta(0)

    @property
    def latest(self) -> datetime:
        """The latest plausible event time: the node's clock plus the allowed skew."""
        return self.now + self.clock_skew

    def _count(self, kind: str, status: str, amount: int = 1) -> None:
        counter = self.counts.get(kind)
        if counter is None:
            counter = self.counts[kind] = Counter()
        counter[status] += amount

    def accept(self, kind: str, accepted: Sequence[Pending[AnyRow]]) -> None:
        self._count(kind, "accepted", len(accepted))
        if self.want_outcomes:
            for line, row in accepted:
                self.outcomes.append(RecordOutcome(self.source, line, kind, record_key(kind, row), "accepted"))

    def duplicate(self, kind: str, line: int, row: AnyRow) -> None:
        self._count(kind, "duplicates")
        if self.want_outcomes:
            self.outcomes.append(RecordOutcome(self.source, line, kind, record_key(kind, row), "duplicate"))

    def reject(
        self,
        kind: str,
        line: int,
        row: AnyRow,
        *,
        field_name: str | None,
        reason: str,
        detail: str,
        whole_message: bool = False,
    ) -> None:
        message = detail if whole_message else problem_message(field_name, detail, kind)
        self.reject_error(RecordError(self.source, line, kind, field_name, reason, message, record_key(kind, row)))

    def reject_unknown_case(self, kind: str, line: int, row: AnyRow) -> None:
        """Reject a record whose case is not stored."""
        self.reject(
            kind, line, row, field_name="case_no", reason=UNKNOWN_CASE, detail=f"unknown case {row['case_no']!r}"
        )

    def reject_case_state(self, kind: str, line: int, row: AnyRow, detail: str) -> None:
        """Reject a record its case's state does not allow (closed, a special procedure running or not)."""
        self.reject(kind, line, row, field_name="case_no", reason=INVALID_STATE, detail=detail)

    def reject_before_acceptance(
        self, kind: str, line: int, row: AnyRow, *, field_name: str, event: str, accepted_at: datetime
    ) -> None:
        """Reject a record dated (``row[field_name]``, e.g. 'completed <time>') before its case was accepted."""
        self.reject(
            kind,
            line,
            row,
            field_name=field_name,
            reason=BEFORE_ACCEPTANCE,
            detail=f"{event} {shown(row[field_name])} before the case was accepted ({shown(accepted_at)})",
        )

    def reject_in_future(self, kind: str, line: int, row: AnyRow, *, field_name: str) -> None:
        """Reject a record dated (``row[field_name]``) later than the node's clock plus the allowed skew."""
        self.reject(
            kind,
            line,
            row,
            field_name=field_name,
            reason=IN_FUTURE,
            detail=f"{shown(row[field_name])} is in the future (node time {shown(self.now)}, "
            f"{int(self.clock_skew.total_seconds())} s of clock skew allowed)",
        )

    def reject_conflict(
        self, kind: str, line: int, row: AnyRow, *, old: Mapping[Any, Any], differing: list[str]
    ) -> None:
        """Reject a record whose natural key is stored with other content, naming (up to three) differing fields."""
        shown_fields = "; ".join(
            f"{field_label(c, kind)}: stored {shown(old.get(c))}, got {shown(row.get(c))}" for c in differing[:3]
        )
        more = f" (and {len(differing) - 3} more)" if len(differing) > 3 else ""
        self.reject(
            kind,
            line,
            row,
            field_name=",".join(differing),
            reason=CONFLICT,
            detail=f"conflict: {kind} {record_key(kind, row)} is already stored with different content: "
            f"{shown_fields}{more}",
            whole_message=True,
        )

    def reject_error(self, error: RecordError) -> None:
        self._count(error.kind, "rejected")
        self.errors.append(error)
        if self.want_outcomes:
            self.outcomes.append(RecordOutcome(self.source, error.line, error.kind, error.key, "rejected", error))


def shown(value: Any) -> str:
    """A stored or received value as a message shows it (date-times as ISO text)."""
    if isinstance(value, datetime):
        return value.isoformat(" ")
    return repr(value)
