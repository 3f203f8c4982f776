"""Records between the ingest stages, typed: what readers yield, what validation returns, what listeners receive.

* readers -> importer: a RawRecord ``(kind, line, fields)``, the fields as read (text or JSON values by English
  field name), or the RecordError of a line that could not be read;
* validation -> handlers: one TypedDict per kind (ItemRow ... ComplaintRow), keyed by model column names, values
  typed, an absent optional field holding its model default;
* handlers -> listeners: the same row objects, extended in place when stored (never copied on the hot path): the
  keys a handler adds are the NotRequired ones, e.g. ``"case"``, the CaseState after the record's effect.

TypedDicts are plain dicts at run time, so a row costs nothing more than before and stays a Mapping[str, Any] for
the IngestListener protocol. ItemLimits, built once per item and read by every new case, is a dataclass.
"""

# No ``from __future__ import annotations`` here: TypedDict reads NotRequired from evaluated annotations only, and
# __required_keys__ / __optional_keys__ must be right at run time (tests/ingest/test_records.py checks them).
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NotRequired, TypeAlias, TypedDict, TypeVar

if TYPE_CHECKING:
    from node.ingest.validate import RecordError

RawFields: TypeAlias = dict[str, Any]
RawRecord: TypeAlias = tuple[str, int, "RawFields | RecordError"]  # (kind, line, fields or why unreadable)


class CaseState(TypedDict):
    """A stored case as the checks read it and listeners get it in ``record["case"]`` (CASE_FIELDS + clock_stopped).

    Without listeners, steps, payments, evaluations and completions read only the required keys (less to convert).
    """

    case_no: str
    accepted_at: datetime
    status: str
    clock_stopped: bool
    supplement_count: int
    return_count: int
    implementation_code: NotRequired[str]
    basic_code: NotRequired[str]
    item_type_code: NotRequired[str]
    department: NotRequired[str]
    promised_due_at: NotRequired[datetime]
    legal_due_at: NotRequired[datetime]
    completed_at: NotRequired[datetime | None]
    clock_stop_workdays: NotRequired[int]


class ItemRow(TypedDict):
    """A validated item (事项)."""

    implementation_code: str
    basic_code: str
    name: str
    type_code: str
    level_code: str
    body_name: str
    body_code: str
    department: str  # the implementing body when absent
    legal_limit: int
    legal_limit_unit: str
    promised_limit: int
    promised_limit_unit: str
    fee_flag: bool
    fee_standard: Decimal | None
    channel_code: str
    effective_from: datetime | None  # 生效时间 of this version (None: see node.ingest.item_versions)


class AcceptanceRow(TypedDict):
    """A validated acceptance (事项受理); when stored it becomes the whole new cases row (the NotRequired keys)."""

    case_no: str
    implementation_code: str
    department: str
    department_code: str
    acceptor: str
    accepted_at: datetime
    declared_promised_at: datetime | None
    case_type_code: str
    area_code: str
    applicant_name: str
    applicant_id_type: str
    applicant_id_no: str
    apply_source_code: str
    applied_at: datetime | None
    basic_code: NotRequired[str]
    item_type_code: NotRequired[str]
    promised_limit: NotRequired[int]
    legal_limit: NotRequired[int]
    promised_due_at: NotRequired[datetime]
    legal_due_at: NotRequired[datetime]
    clock_stop_workdays: NotRequired[int]
    clock_stopped: NotRequired[bool]
    status: NotRequired[str]
    completed_at: NotRequired[datetime | None]
    supplement_count: NotRequired[int]
    return_count: NotRequired[int]
    recorded_at: NotRequired[datetime]


class StepRow(TypedDict):
    """A validated processing step (事项办理); stored with its own due (from 环节时限) and its case."""

    case_no: str
    step_name: str
    action: str  # pass / return / supplement / other
    handler: str
    post: str
    opinion: str
    started_at: datetime
    ended_at: datetime | None
    status_code: str
    step_limit: int | None
    entered_at: datetime | None  # the import time when absent, set when stored
    step_due_at: NotRequired[datetime | None]
    case: NotRequired[CaseState]


class ProcedureStartRow(TypedDict):
    """A validated special procedure start (特别程序开始); stored with its case (clock stopped)."""

    case_no: str
    kind_code: str
    started_at: datetime
    reason: str
    case: NotRequired[CaseState]


class SpecialProcedureRow(TypedDict):
    """A stored special procedure, as a procedure_end record's ``"procedure"`` (closed, with its working days)."""

    id: int
    case_no: str
    kind_code: str
    started_at: datetime
    ended_at: datetime | None
    reason: str
    result: str
    workdays: int


class PreviousDeadlines(TypedDict):
    """A case's due dates and clock-stop days before a procedure end recomputed them."""

    promised_due_at: datetime
    legal_due_at: datetime
    clock_stop_workdays: int


class ProcedureEndRow(TypedDict):
    """A validated special procedure end (特别程序结束); stored with its case, the closed procedure and the old dues."""

    case_no: str
    ended_at: datetime
    result: str
    case: NotRequired[CaseState]
    procedure: NotRequired[SpecialProcedureRow]
    previous_case: NotRequired[PreviousDeadlines]


class CompletionRow(TypedDict):
    """A validated completion (事项办结); stored with the working days used and its case (now completed)."""

    case_no: str
    handler_name: str
    completed_at: datetime
    result_code: str
    reason: str
    certificate_name: str
    certificate_no: str
    fee_flag: bool
    workdays_used: NotRequired[int]
    case: NotRequired[CaseState]


class PaymentRow(TypedDict):
    """A validated payment (支付信息); stored with its case."""

    case_no: str
    amount: Decimal
    paid_at: datetime
    case: NotRequired[CaseState]


class EvaluationRow(TypedDict):
    """A validated evaluation (绩效评价); stored with its follow-up status and its case."""

    case_no: str
    channel: str
    evaluated_at: datetime
    satisfaction_code: int
    comment: str
    followup_status: NotRequired[str]
    case: NotRequired[CaseState]


class ComplaintRow(TypedDict):
    """A validated complaint (投诉)."""

    complaint_no: str
    title: str
    complainant: str
    respondent_unit: str
    respondent_person: str
    content: str
    source_code: str
    received_at: datetime
    handling_unit: str
    handler: str
    feedback: str
    promised_limit: int | None
    extension_workdays: int
    overdue_days: int
    area_code: str
    case_no: str | None


ValidatedRow: TypeAlias = (
    ItemRow
    | AcceptanceRow
    | StepRow
    | ProcedureStartRow
    | ProcedureEndRow
    | CompletionRow
    | PaymentRow
    | EvaluationRow
    | ComplaintRow
)

# A row of any kind, read by column name: what the steps shared by all kinds see (keys, conflicts, inserts, messages).
AnyRow: TypeAlias = Mapping[str, Any]
# A batch's records of one kind on their way through a handler: (line, row), and (line, kind, row) while grouped.
RowT = TypeVar("RowT", bound=AnyRow)
Pending: TypeAlias = tuple[int, RowT]
Tagged: TypeAlias = tuple[int, str, RowT]


class CopiedItemCodes(TypedDict):
    """The item codes a new case keeps a copy of."""

    basic_code: str
    item_type_code: str


@dataclass(frozen=True, slots=True)
class ItemLimits:
    """What a new case takes from its item: the limits its deadlines count from, and the codes copied onto it."""

    promised_limit: int
    promised_limit_unit: str
    legal_limit: int
    legal_limit_unit: str
    case_fields: CopiedItemCodes
    # The four limits: items with equal limits share their deadline memos.
    limits_key: tuple[int, str, int, str]


@dataclass(frozen=True, slots=True)
class ItemTimeline:
    """An item's versions, oldest first: (effective from, or None for "from the beginning"; its limits)."""

    versions: tuple[tuple[datetime | None, ItemLimits], ...]

    def in_force(self, at: datetime) -> ItemLimits | None:
        """The limits of the version in force at ``at`` (the latest one effective by then), or None before any."""
        found: ItemLimits | None = None
        for effective_from, limits in self.versions:
            if effective_from is not None and effective_from > at:
                break
            found = limits
        return found

    def first_effective(self) -> datetime | None:
        """When the first version takes effect (None: from the beginning)."""
        return self.versions[0][0]

    def then(self, effective_from: datetime | None, limits: ItemLimits) -> "ItemTimeline":
        """The timeline with one more (later) version."""
        return ItemTimeline((*self.versions, (effective_from, limits)))


class CaseDeadlines(TypedDict):
    """The limits (0 for an instant case) and due dates a new case starts with."""

    promised_limit: int
    legal_limit: int
    promised_due_at: datetime
    legal_due_at: datetime
