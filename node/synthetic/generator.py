"""Synthetic approval data for one node: files in GB/T 39046 fields that ``supnet import`` accepts.

What a node's data looks like here, and why:

* Items come from the national catalogue (``catalogue.py``): basic codes are shared by every node so roll-ups line up;
  implementation codes are the basic code plus a suffix derived from the node id; each node implements a subset
  suited to its level (a street far fewer than a district), through its own departments.
* Cases are drawn one by one and streamed to the writers (nothing large is held in memory). Each case first draws its
  outcome (completed early / on the promised due day / past promised / past legal, or still open at ``--to``, some of
  those already overdue), then the acceptance day and the working day it completes on, counted on the real
  working-day calendar, so the deadlines the importer computes put it exactly where it was meant to land.
* Rates follow the source reports: about 79% of completed cases early (Guangzhou 2007: 78.8%), ~10% open at ``--to``,
  ~3% with a special procedure (clock stop), ~8% with a supplement request and ~1% with a second one (breaking the
  one-time notification rule), ~4% returned, a few refusals, some without a reason, fees on fee items (~2% above the
  standard, ~0.5% of cases on free items charged anyway), evaluations on ~60% of completed cases, complaints on ~0.2%.
* Deterministic: chunks of cases each seeded from (node id, seed, chunk); same arguments give byte-identical files.
* Case and complaint numbers carry the node id and the day, so they are unique in the whole network; several runs
  for ONE node (other seeds) must cover disjoint periods, or their numbers meet with other content (conflicts).
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import os
import shutil
from bisect import bisect_right
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from random import Random
from typing import IO, Any, Literal

from node.config import NODE_ID_PATTERN
from node.domain import WorkCalendar, due_at, load_calendar
from node.errors import CalendarError, ValidationError
from node.ingest import KIND_ORDER, RECORD_FIELDS
from node.synthetic import names
from node.synthetic.catalogue import TYPE_CONFIRMATION, TYPE_LICENCE, CatalogueItem, national_catalogue

log = logging.getLogger(__name__)

DEFAULT_FROM = date(2026, 1, 5)
DEFAULT_TO = date(2026, 10, 30)
FileFormat = Literal["csv", "jsonl"]
FILE_NAMES: dict[str, str] = {
    "item": "items.csv",
    "acceptance": "acceptances.csv",
    "step": "steps.csv",
    "procedure_start": "procedure_starts.csv",
    "procedure_end": "procedure_ends.csv",
    "payment": "payments.csv",
    "completion": "completions.csv",
    "evaluation": "evaluations.csv",
    "complaint": "complaints.csv",
}
JSONL_FILE_NAME = "records.jsonl"

# --- distribution targets (shares of all cases unless said otherwise) ------------------------------------------------
OPEN_SHARE = 0.09  # drawn open at --to; cases whose planned completion falls after --to add ~1% more
OPEN_SPLIT = (("open_pending", 0.68), ("open_overdue_promised", 0.20), ("open_overdue_legal", 0.12))
EARLY_TARGET = 0.79  # of completed cases (Guangzhou 2007: 78.8%)
ON_TIME_SHARE, LATE_PROMISED_SHARE, LATE_LEGAL_SHARE = 0.155, 0.04, 0.015  # the rest, in these proportions
INSTANT_LATE_SHARE = 0.03  # instant cases completed on a later day than accepted
PROCEDURE_SHARE = 0.03
RUNNING_PROCEDURE_SHARE = 0.10  # of open pending cases: a clock stop still running at --to
SUPPLEMENT_SHARE = 0.10  # of non-instant cases; with the second ones ~8% end with one request, ~1% with two
SECOND_SUPPLEMENT_SHARE = 0.11  # of cases with a supplement request: ~1% of all cases
RETURN_SHARE = 0.045  # some returned cases are still open before their return step at --to
RETURN_ENDS_CASE_SHARE = 0.5  # of returned cases: returned to the applicant and concluded (不予受理)
REFUSAL_SHARE = 0.02
NO_REASON_SHARE = 0.08  # of refusals and returns: no reason given (the refusal-without-reason rule)
FEE_ABOVE_STANDARD_SHARE = 0.02  # of payments on fee items
FEE_ON_FREE_ITEM_SHARE = 0.005  # of completed cases on items that charge nothing
EVALUATION_SHARE = 0.60  # of completed cases
COMPLAINT_SHARE_LATE, COMPLAINT_SHARE_OTHER = 0.02, 0.0008  # with the unlinked ones: ~0.2% of cases
UNLINKED_COMPLAINT_SHARE = 0.0006  # complaints about service in general, not about one case
LATE_ENTRY_SHARE = 0.01  # of finished steps of walk-in cases: entered days after they ended
STEP_OVERRUN_SHARE = 0.02  # of cases: one step takes longer than its own limit, even when the case is on time
ONLINE_SHARE = 0.25
WEEKEND_SHARE = 0.03  # online applications accepted on a weekend or holiday
ITEM_SUBSET_SHARE = 0.85  # of the catalogue items eligible at the node's level
ENTERPRISE_SHARE_LICENCE, ENTERPRISE_SHARE_OTHER = 0.65, 0.15
SATISFACTION_WEIGHTS = (0.72, 0.18, 0.06, 0.03, 0.01)  # codes 1..5 (1 very satisfied)
SATISFACTION_WEIGHTS_LATE = (0.35, 0.25, 0.15, 0.15, 0.10)
CHUNK_CASES = 20_000  # cases per independently seeded chunk (the unit of parallel generation)
MAX_STOP_WORKDAYS = 12  # longest special procedure (clock stop) drawn, in working days

_LEVEL_CODES = {1: "2", 2: "3", 3: "4"}  # A.2 by node depth; 4 and deeper: street (5)
_LEVEL_NAMES = {"2": "province", "3": "city", "4": "district", "5": "street"}
_OFFICE_OPEN, _OFFICE_CLOSE = 9 * 60, 17 * 60 + 30  # minutes after midnight
_ID_TYPE_RESIDENT = "111"  # 居民身份证 (GA/T 517 code, as the national government-service platform uses)
_ID_TYPE_CREDIT_CODE = "001"  # 统一社会信用代码 (convention of provincial platforms; check the partner's code table)

_COMPLETED_CLASSES = ("early", "on_time", "late_promised", "late_legal")
_LATE_CLASSES = frozenset({"late_promised", "late_legal", "open_overdue_promised", "open_overdue_legal"})


# --- what a node implements -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StepTemplate:
    """One step (环节) of an item's workflow: name, responsible post, own limit in working days."""

    name: str
    post: str
    limit: int


@dataclass(frozen=True, slots=True)
class NodeItem:
    """A catalogue item as one node implements it."""

    implementation_code: str
    item: CatalogueItem
    body_name: str
    body_code: str
    channel_code: str
    weight: float
    steps: tuple[StepTemplate, ...]

    def record(self, level_code: str) -> dict[str, str]:
        """The item record (English field names, text values) as written to items.csv."""
        item = self.item
        return {
            "implementation_code": self.implementation_code,
            "basic_code": item.basic_code,
            "name": item.name,
            "type_code": item.type_code,
            "level_code": level_code,
            "body_name": self.body_name,
            "body_code": self.body_code,
            "department": self.body_name,
            "legal_limit": str(item.legal_limit),
            "legal_limit_unit": "1",
            "promised_limit": str(item.promised_limit),
            "promised_limit_unit": "1",
            "fee_flag": "1" if item.charges_fee else "0",
            "fee_standard": f"{item.fee_standard:.2f}" if item.fee_standard is not None else "",
            "channel_code": self.channel_code,
        }


@dataclass(frozen=True, slots=True)
class NodeProfile:
    """Everything about a node that does not depend on the seed: place, codes, items, departments, staff."""

    node_id: str
    level_code: str
    place: str
    area_code: str
    case_prefix: str
    code_suffix: str
    supervision_unit: str
    items: tuple[NodeItem, ...]
    staff: dict[str, dict[str, tuple[str, ...]]] = field(repr=False)

    @property
    def level(self) -> str:
        """The node's level name (province, city, district, street)."""
        return _LEVEL_NAMES[self.level_code]

    @property
    def departments(self) -> tuple[str, ...]:
        """The node's departments (implementing bodies), in item order."""
        return tuple(dict.fromkeys(item.body_name for item in self.items))


def _check_node_id(node_id: str) -> None:
    if not NODE_ID_PATTERN.match(node_id):
        raise ValidationError(
            f"node id {node_id!r}: expected dotted lowercase segments, e.g. gd.gz.py", field="id", reason="bad_code"
        )


def area_code_of(node_id: str) -> str:
    """The 9-digit administrative division code (行政区划) of a node, derived from its id (real codes for the demo)."""
    segments = node_id.split(".")
    parts = [names.area_code_part(".".join(segments[: depth + 1])) for depth in range(min(len(segments), 4))]
    code = "".join(parts)
    if len(segments) > 4:
        # Below street level the 9 digits are used up: keep the district and derive the last three from the id.
        code = code[:6] + f"{names.stable_int('area', node_id) % 1000:03d}"
    return code.ljust(9, "0")


def _display_place(node_id: str) -> str:
    """How bodies of a node are named: 广州市 / 广州市番禺区 / 番禺区市桥街道."""
    segments = node_id.split(".")
    own = names.place_name(node_id)
    if len(segments) <= 2:
        return own
    return names.place_name(".".join(segments[:-1])) + own


def case_prefix_of(node_id: str) -> str:
    """Prefix of the node's case and complaint numbers: the node id itself, unique in the network."""
    prefix = node_id.upper()
    if len(prefix) > 24:
        # Keep numbers within 办件编号 an..50: a long id is replaced by a stable digest of it.
        prefix = f"N{names.stable_int('prefix', node_id) % 10**15:015d}"
    return prefix


def _department_name(department: str, level_code: str, node_id: str) -> str:
    """The name a catalogue department goes by at the node's level (厅 in a province, street offices in a street)."""
    if level_code == "2":
        return names.PROVINCE_DEPARTMENT_NAMES.get(department, department)
    if level_code == "3":
        return names.CITY_DEPARTMENT_NAMES.get(department, department)
    if level_code == "5":
        office = names.STREET_OFFICES.get(department, names.DEFAULT_STREET_OFFICE)
        if office == names.GUANGZHOU_MIGRANT_OFFICE and not node_id.startswith("gd.gz."):
            office = names.MIGRANT_OFFICE  # 来穗 ("come to Guangzhou") names the office in Guangzhou only
        return office
    return department


def _split_limit(total: int, weights: tuple[float, ...]) -> list[int]:
    """Split a promised limit over steps by weight; the remainder goes to the heaviest step; sums to ``total``."""
    limits = [int(total * weight) for weight in weights]
    limits[weights.index(max(weights))] += total - sum(limits)
    return limits


def _step_templates(item: CatalogueItem) -> tuple[StepTemplate, ...]:
    """The workflow of an item: acceptance, review, (check, approval), conclusion, with per-post limits."""
    if item.instant:
        plan: tuple[tuple[str, str, float], ...] = (("受理", names.POST_WINDOW, 0.0), ("办结", names.POST_ISSUE, 1.0))
    elif item.type_code in (TYPE_LICENCE, TYPE_CONFIRMATION) and item.promised_limit >= 3:
        plan = (
            ("受理", names.POST_WINDOW, 0.0),
            ("审查", names.POST_REVIEW, 0.5),
            ("审核", names.POST_CHECK, 0.2),
            ("审批", names.POST_APPROVE, 0.15),
            ("办结", names.POST_ISSUE, 0.15),
        )
    else:
        plan = (("受理", names.POST_WINDOW, 0.0), ("审核", names.POST_CHECK, 0.7), ("办结", names.POST_ISSUE, 0.3))
    limits = _split_limit(item.promised_limit, tuple(weight for _, _, weight in plan))
    return tuple(StepTemplate(name, post, limit) for (name, post, _), limit in zip(plan, limits, strict=True))


def _staff_of(node_id: str, body_name: str) -> dict[str, tuple[str, ...]]:
    """The post holders of one department (stable per node, independent of the seed)."""
    rng = Random(names.stable_int("staff", node_id, body_name))
    sizes = {
        names.POST_WINDOW: 5,
        names.POST_REVIEW: 3,
        names.POST_CHECK: 2,
        names.POST_APPROVE: 1,
        names.POST_ISSUE: 2,
    }
    return {post: tuple(names.person_name(rng) for _ in range(size)) for post, size in sizes.items()}


@cache
def node_profile(node_id: str) -> NodeProfile:
    """The node's place, codes, items and staff: deterministic from the id alone (any seed gives the same items)."""
    _check_node_id(node_id)
    depth = node_id.count(".") + 1
    level_code = _LEVEL_CODES.get(depth, "5")
    area_code = area_code_of(node_id)
    place = _display_place(node_id)
    code_suffix = f"{names.stable_int('implementation', node_id) % 10**14:014d}"
    items: list[NodeItem] = []
    for item in national_catalogue():
        if level_code not in item.levels:
            continue
        if names.stable_fraction("subset", node_id, item.basic_code) >= ITEM_SUBSET_SHARE:
            continue
        body_name = place + _department_name(item.department, level_code, node_id)
        body_code = names.unified_credit_code("1", "1", area_code[:6], names.stable_int("body", node_id, body_name))
        online = names.stable_fraction("channel", node_id, item.basic_code) < 0.3
        weight = item.popularity * (0.5 + names.stable_fraction("weight", node_id, item.basic_code))
        items.append(
            NodeItem(
                # 实施编码 an..24: the shared basic code (10) + 14 digits derived from the node id.
                implementation_code=item.basic_code + code_suffix,
                item=item,
                body_name=body_name,
                body_code=body_code,
                channel_code="2" if online else "1",
                weight=weight,
                steps=_step_templates(item),
            )
        )
    staff = {body: _staff_of(node_id, body) for body in dict.fromkeys(i.body_name for i in items)}
    return NodeProfile(
        node_id=node_id,
        level_code=level_code,
        place=place,
        area_code=area_code,
        case_prefix=case_prefix_of(node_id),
        code_suffix=code_suffix,
        supervision_unit=f"{place}纪委监委",
        items=tuple(items),
        staff=staff,
    )


def derive_seed(node_id: str, seed: int, chunk: int = 0) -> int:
    """The random seed of one chunk of a node's generation: stable across processes and Python versions."""
    return names.stable_int("generate", node_id, seed, chunk)


# --- output ---------------------------------------------------------------------------------------------------------
# The columns written per kind, in file order. The importer maps columns by header name, so these need not follow
# RECORD_FIELDS' order; fields the generator never fills (complaint 处理人, 反馈意见) are left out.
# fmt: off
COLUMNS: dict[str, tuple[str, ...]] = {
    "item": tuple(spec.name for spec in RECORD_FIELDS["item"]),
    "acceptance": (
        "case_no", "implementation_code", "department", "department_code", "acceptor", "accepted_at",
        "declared_promised_at", "case_type_code", "area_code", "applicant_name", "applicant_id_type",
        "applicant_id_no", "apply_source_code", "applied_at",
    ),
    "step": (
        "case_no", "step_name", "action", "handler", "post", "opinion", "started_at", "ended_at", "status_code",
        "step_limit", "entered_at",
    ),
    "procedure_start": ("case_no", "kind_code", "started_at", "reason"),
    "procedure_end": ("case_no", "ended_at", "result"),
    "payment": ("case_no", "amount", "paid_at"),
    "completion": (
        "case_no", "handler_name", "completed_at", "result_code", "reason", "certificate_name", "certificate_no",
        "fee_flag",
    ),
    "evaluation": ("case_no", "channel", "evaluated_at", "satisfaction_code", "comment"),
    "complaint": (
        "complaint_no", "title", "complainant", "respondent_unit", "respondent_person", "content", "source_code",
        "received_at", "handling_unit", "promised_limit", "extension_workdays", "overdue_days", "area_code", "case_no",
    ),
}

# fmt: on


def _check_columns() -> None:
    """Fail at import, not in a user's import, if the shared field contract and these columns drift apart."""
    for kind, columns in COLUMNS.items():
        specs = {spec.name: spec for spec in RECORD_FIELDS[kind]}
        unknown = [name for name in columns if name not in specs]
        missing = [name for name, spec in specs.items() if spec.required and name not in columns]
        if unknown or missing:
            raise RuntimeError(f"generator columns of {kind!r} out of date: unknown {unknown}, required {missing}")


_check_columns()
_HEADERS: dict[str, list[str]] = {
    kind: [next(spec.cn for spec in RECORD_FIELDS[kind] if spec.name == name) for name in columns]
    for kind, columns in COLUMNS.items()
}
Row = tuple[str, ...]
_Sink = Callable[[Row], None]
_PARTS_DIR = ".supnet-generate-parts"


class _PartWriter:
    """Rows of one chunk, one part file per kind: CSV rows without header, or JSON lines with their kind."""

    def __init__(self, parts_dir: Path, chunk: str, file_format: FileFormat) -> None:
        self.counts: dict[str, int] = dict.fromkeys(KIND_ORDER, 0)
        self.write: dict[str, Callable[[Row], None]] = {}
        self._handles: list[IO[str]] = []
        for kind in KIND_ORDER:
            handle = part_path(parts_dir, chunk, kind).open("w", encoding="utf-8", newline="")
            self._handles.append(handle)
            self.write[kind] = self._csv_sink(kind, handle) if file_format == "csv" else self._jsonl_sink(kind, handle)

    def _csv_sink(self, kind: str, handle: IO[str]) -> Callable[[Row], None]:
        writerow = csv.writer(handle).writerow  # the hot path: ~700,000 rows per 100,000 cases
        counts = self.counts

        def write(row: Row) -> None:
            writerow(row)
            counts[kind] += 1

        return write

    def _jsonl_sink(self, kind: str, handle: IO[str]) -> Callable[[Row], None]:
        columns = COLUMNS[kind]
        counts = self.counts

        def write(row: Row) -> None:
            record = {"kind": kind}
            record.update((name, value) for name, value in zip(columns, row, strict=True) if value != "")
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            counts[kind] += 1

        return write

    def close(self) -> None:
        """Close every part file."""
        for handle in self._handles:
            handle.close()


def part_path(parts_dir: Path, chunk: str, kind: str) -> Path:
    """The part file of one chunk and kind."""
    return parts_dir / f"{chunk}.{kind}.part"


def _assemble(out_dir: Path, parts_dir: Path, chunks: list[str], file_format: FileFormat) -> None:
    """Join the parts, chunk after chunk, into the final files: deterministic whatever ran the chunks."""
    if file_format == "csv":
        for kind in KIND_ORDER:
            with (out_dir / FILE_NAMES[kind]).open("w", encoding="utf-8", newline="") as target:
                csv.writer(target).writerow(_HEADERS[kind])
                for chunk in chunks:
                    with part_path(parts_dir, chunk, kind).open(encoding="utf-8", newline="") as source:
                        shutil.copyfileobj(source, target, 1 << 20)
        return
    with (out_dir / JSONL_FILE_NAME).open("w", encoding="utf-8", newline="") as target:
        for kind in KIND_ORDER:  # dependency order: items before cases before their steps ...
            for chunk in chunks:
                with part_path(parts_dir, chunk, kind).open(encoding="utf-8", newline="") as source:
                    shutil.copyfileobj(source, target, 1 << 20)


@dataclass(frozen=True, slots=True)
class GenerateSummary:
    """What ``generate`` wrote: rows per file and per record kind."""

    node_id: str
    seed: int
    cases: int
    date_from: date
    date_to: date
    file_format: FileFormat
    out_dir: Path
    files: dict[str, int]
    records: dict[str, int]

    @property
    def paths(self) -> list[Path]:
        """The written files, in the order an import should read them."""
        return [self.out_dir / name for name in self.files]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "node_id": self.node_id,
            "seed": self.seed,
            "cases": self.cases,
            "from": self.date_from.isoformat(),
            "to": self.date_to.isoformat(),
            "format": self.file_format,
            "out": str(self.out_dir),
            "files": dict(self.files),
            "records": dict(self.records),
        }


# --- the working days of the generation window ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Window:
    """Working days (as date ordinals) from --from to well past --to, and the closed days inside [--from, --to]."""

    workdays: tuple[int, ...]
    last_index: int  # index of the last working day <= --to
    closed_days: tuple[int, ...]
    date_to: date
    cutoff: int  # end of --to as a stamp (see _DAY)


def _uncovered(year: int, why: str) -> CalendarError:
    return CalendarError(
        f"{why}, in {year}, which the working-day calendar does not cover: pass --holidays FILE with a [{year}] "
        f"table (format in config/holidays.example.toml) or choose other dates"
    )


def _build_window(cal: WorkCalendar, date_from: date, date_to: date, margin: int) -> _Window:
    """The window's working days; ``margin`` working days past --to must be on the calendar (the last due dates)."""
    workdays: list[int] = []
    closed: list[int] = []
    day = date_from
    try:
        while day <= date_to:
            (workdays if cal.is_workday(day) else closed).append(day.toordinal())
            day += timedelta(days=1)
    except CalendarError as exc:
        raise _uncovered(day.year, f"--from {date_from} --to {date_to} includes {day}") from exc
    if not workdays:
        raise ValidationError(
            f"no working day between --from {date_from} and --to {date_to}: cases are accepted on working days",
            field="from",
            reason="empty_range",
        )
    last_index = len(workdays) - 1
    try:
        while len(workdays) - last_index <= margin:
            if cal.is_workday(day):
                workdays.append(day.toordinal())
            day += timedelta(days=1)
    except CalendarError as exc:
        why = f"cases accepted up to --to {date_to} fall due up to {margin} working days later"
        raise _uncovered(day.year, why) from exc
    cutoff = (date_to.toordinal() + 1) * _DAY - 1
    return _Window(tuple(workdays), last_index, tuple(closed), date_to, cutoff)


# --- the case generator ---------------------------------------------------------------------------------------------
# A time stamp is an int: the day's proleptic ordinal * 86400 + seconds after midnight. Cheap to compare, shift and
# format, which matters at ~20 stamps per case and 100,000 cases in a few seconds.
_DAY = 86_400
_OPEN_SECOND, _CLOSE_SECOND = _OFFICE_OPEN * 60, _OFFICE_CLOSE * 60


@cache
def _time_texts() -> tuple[str, ...]:
    """'hhmmss' for every second of a day (built once, on first use)."""
    return tuple(f"{second // 3600:02d}{second // 60 % 60:02d}{second % 60:02d}" for second in range(_DAY))


def _to_datetime(stamp: int) -> datetime:
    day, second = divmod(stamp, _DAY)
    return datetime.combine(date.fromordinal(day), datetime.min.time()) + timedelta(seconds=second)


@dataclass(slots=True)
class _StepPlan:
    name: str
    post: str
    limit: int
    action: str = "通过"
    opinion: str = ""
    host: bool = False  # the step during which a special procedure runs


# Step actions are written with the standard's Chinese values (通过 / 退回 / 补正 / 其他).
_PASS, _RETURN, _SUPPLEMENT, _OTHER = "通过", "退回", "补正", "其他"
_PASS_OPINIONS = {
    "受理": ("材料齐全，符合法定形式，予以受理", "同意受理", "申请材料齐全，当场受理"),
    "审查": ("经审查，申请材料真实有效，符合条件，拟同意", "经审查符合规定，建议准予", "审查通过"),
    "审核": ("同意承办意见", "审核通过", "经审核，符合条件"),
    "审批": ("同意", "同意，准予许可", "批准"),
    "办结": ("已制证，送达申请人", "办结，结果已送达", "已办结"),
}
# fmt: off
_MISSING_MATERIALS = (
    "营业场所使用证明", "法定代表人身份证明", "经营场所平面图", "卫生管理制度", "从业人员健康证明", "申请书签字页",
    "房屋权属证明", "授权委托书", "设备清单", "消防安全检查合格证明", "近期免冠照片", "户口簿复印件",
)


_RETURN_REASONS = (
    "申请材料与实际情况不符，退回申请人", "申请事项不属于本机关职权范围，退回并告知向有关机关申请",
    "申请人未在规定期限内补正材料，退回申请", "申请材料存在涂改，退回重新提交", "经现场核查不符合要求，退回申请人",
)


_REFUSAL_REASONS = (
    "经审查，不符合法定条件，不予许可", "选址不符合规划要求，不予批准", "现场核查场所布局不符合规范要求",
    "申请人提供的资质证明不符合规定", "经听证，申请事项涉及重大公共利益，不予许可",
)

# fmt: on
_REFUSAL_PREFIX = "不予许可："
_PROCEDURES = (
    ("2", "组织专家评审", "专家评审通过"),
    ("2", "需要现场勘验", "现场勘验符合要求"),
    ("2", "依法举行听证", "听证结束"),
    ("2", "需要检验检测", "检验检测合格"),
    ("2", "依法进行公示", "公示期满无异议"),
)
_EXTENSION = ("1", "情况复杂，经本机关负责人批准延长十个工作日", "延期届满")
_EVALUATION_CHANNELS_WALK_IN = ("窗口评价器", "窗口评价器", "短信评价", "二维码评价")
_EVALUATION_CHANNELS_ONLINE = ("网上办事大厅", "政务服务移动端", "短信评价")
_COMMENTS = {
    1: ("办事效率高", "服务态度好，一次办成", "流程清晰，非常满意", ""),
    2: ("比较满意", "办理较快", ""),
    3: ("一般", "等候时间较长", ""),
    4: ("办理时间太长", "多次要求补充材料", "窗口解释不清楚"),
    5: ("超期未办结，非常不满意", "工作人员态度差", "来回跑了多次"),
}
_COMPLAINT_TOPICS = (
    ("办理{item}超过承诺时限", "本人于{accepted}申请办理{item}，至今超过承诺时限仍未办结，要求尽快办理并说明原因。"),
    ("办理{item}多次要求补正材料", "办理{item}时，窗口工作人员未一次性告知所需材料，要求多次补正，来回奔波。"),
    ("窗口工作人员服务态度差", "在办理{item}过程中，窗口工作人员态度生硬，不耐心解答问题。"),
    ("办理{item}收费有疑问", "办理{item}时被收取费用，对收费依据有疑问，请求核查。"),
)
_GENERAL_COMPLAINTS = (
    ("政务服务中心排队时间过长", "到政务服务中心办事，取号后等候超过两小时，窗口开放不足。"),
    ("办事指南与实际要求不一致", "网上公布的办事指南所列材料与窗口实际要求不一致，导致多跑一趟。"),
    ("咨询电话长期无人接听", "多次拨打办事咨询电话均无人接听，无法了解办理进度。"),
)
_COMPLAINT_SOURCES = ("1", "2", "3", "4")  # 1 12345 热线, 2 网上投诉, 3 来信, 4 来访 (local convention)


@dataclass(slots=True)
class _Case:
    """What was drawn for one case before its records are written."""

    seq: int
    node_item: NodeItem
    outcome: str
    online: bool
    accepted: int
    applicant: str
    plans: list[_StepPlan]
    procedure: tuple[str, str, str] | None
    supplements: int
    refused: bool
    return_ends_case: bool
    case_no: str = ""


class _CaseGenerator:
    """Draws cases one at a time and writes their records; holds only per-node state."""

    def __init__(
        self, profile: NodeProfile, rng: Random, cal: WorkCalendar, window: _Window, write: dict[str, _Sink]
    ) -> None:
        self.profile = profile
        self.rng = rng
        self.cal = cal
        self.window = window
        self.write = write
        self.items = profile.items
        self._item_cum_weights: list[float] = []
        running = 0.0
        for node_item in profile.items:
            running += node_item.weight
            self._item_cum_weights.append(running)
        self._day_text: dict[int, str] = {}
        self._time_text = _time_texts()
        self._local_area = profile.area_code[:6]
        self._early_share = self._calibrated_early_share()
        self._open_weights = tuple(share for _, share in OPEN_SPLIT)
        self._late_weights = (ON_TIME_SHARE, LATE_PROMISED_SHARE, LATE_LEGAL_SHARE)

    # -- helpers ------------------------------------------------------------------------------------------------------
    def _calibrated_early_share(self) -> float:
        """Share of early completions among non-instant completed cases that makes ~79% of ALL completed early.

        Instant cases can never be early (they are due the day they are accepted), so the other cases make up for them.
        """
        total = self._item_cum_weights[-1] if self._item_cum_weights else 1.0
        instant = sum(item.weight for item in self.items if item.item.instant) / total
        completed_non_instant = (1 - instant) * (1 - OPEN_SHARE)
        if completed_non_instant <= 0:
            return 0.0
        return min(0.97, EARLY_TARGET * (instant + completed_non_instant) / completed_non_instant)

    def _text(self, stamp: int) -> str:
        """'YYYYMMDDThhmmss' of a stamp."""
        day, second = divmod(stamp, _DAY)
        prefix = self._day_text.get(day)
        if prefix is None:
            prefix = self._day_text[day] = f"{date.fromordinal(day):%Y%m%d}T"
        return prefix + self._time_text[second]

    def _pick(self, weights: tuple[float, ...]) -> int:
        """Index drawn with the given weights."""
        u = self.rng.random() * sum(weights)
        for index, weight in enumerate(weights):
            u -= weight
            if u < 0:
                return index
        return len(weights) - 1

    def _choice(self, options: tuple[str, ...]) -> str:
        return options[int(self.rng.random() * len(options))]

    def _office_seconds(self, count: int, after: int) -> list[int]:
        """``count`` increasing seconds of a day after ``after``, in office hours unless the day is already full."""
        random = self.rng.random
        low = max(after + 60, _OPEN_SECOND)
        span = max(_CLOSE_SECOND, low + 180 * count + 600) - low
        if count == 1:
            return [low + int(random() * span)]
        seconds = sorted(low + int(random() * span) for _ in range(count))
        for index in range(1, count):
            if seconds[index] <= seconds[index - 1]:
                seconds[index] = seconds[index - 1] + 1 + int(random() * 300)
        return seconds

    # -- one case -----------------------------------------------------------------------------------------------------
    def case(self, seq: int) -> None:
        """Draw one case and write all its records that exist by the end of --to."""
        rng = self.rng
        window = self.window
        node_item = self.items[bisect_right(self._item_cum_weights, rng.random() * self._item_cum_weights[-1])]
        item = node_item.item
        promised, legal = item.promised_limit, item.legal_limit
        instant = item.instant

        # 1. Outcome class and features.
        if not instant and rng.random() < OPEN_SHARE:
            outcome = OPEN_SPLIT[self._pick(self._open_weights)][0]
        elif instant:
            outcome = "late_legal" if rng.random() < INSTANT_LATE_SHARE else "on_time"
        elif rng.random() < self._early_share:
            outcome = "early"
        else:
            outcome = _COMPLETED_CLASSES[1 + self._pick(self._late_weights)]
        is_open = outcome.startswith("open")
        stop = 0
        procedure: tuple[str, str, str] | None = None
        running_procedure = outcome == "open_pending" and promised >= 2 and rng.random() < RUNNING_PROCEDURE_SHARE
        if running_procedure or (not is_open and promised >= 2 and rng.random() < PROCEDURE_SHARE):
            procedure = _EXTENSION if rng.random() < 0.2 else _PROCEDURES[int(rng.random() * len(_PROCEDURES))]
            stop = 10 if procedure[0] == "1" else 2 + int(rng.random() * (MAX_STOP_WORKDAYS - 1))
        supplements = 0
        if not instant and rng.random() < SUPPLEMENT_SHARE:
            supplements = 2 if rng.random() < SECOND_SUPPLEMENT_SHARE else 1
        returned = not instant and rng.random() < RETURN_SHARE
        return_ends_case = returned and rng.random() < RETURN_ENDS_CASE_SHARE
        refused = not instant and not return_ends_case and rng.random() < REFUSAL_SHARE
        no_reason = (returned or refused) and rng.random() < NO_REASON_SHARE

        # 2. Acceptance day and the working-day offset of the (planned) completion. Offsets count working days after
        #    the acceptance day: offset n falls on workdays[base + n], exactly as the importer's due_at counts them.
        online = rng.random() < ONLINE_SHARE
        accept_workday = True
        if is_open:
            # Open at --to: accepted so recently that it is still in time, or long enough ago to be overdue.
            if outcome == "open_pending":
                back = int(rng.random() * promised)
            elif outcome == "open_overdue_promised":
                back = promised + 1 + int(rng.random() * max(1, legal - promised))
            else:
                back = legal + 1 + int(rng.random() * 12)
            base = max(0, window.last_index - back)
            back = window.last_index - base
            accept_day = window.workdays[base]
            low = max(back + 1, stop + 1 if procedure else 0)
            planned = low + int(rng.random() * max(1, promised + stop - low + 1))
        else:
            if not instant and window.closed_days and rng.random() < WEEKEND_SHARE:
                online, accept_workday = True, False
                accept_day = window.closed_days[int(rng.random() * len(window.closed_days))]
                base = bisect_right(window.workdays, accept_day) - 1  # offset 1 is the next working day
            else:
                base = int(rng.random() * (window.last_index + 1))
                accept_day = window.workdays[base]
            first = stop + 1 if procedure else 0  # a clock stop starts after the acceptance day
            if outcome == "early" and promised + stop - 1 >= first:
                planned = first + int((promised + stop - first) * rng.random() ** 1.4)
            elif outcome == "late_promised" and legal > promised:
                planned = promised + stop + 1 + int(rng.random() * (legal - promised))
            elif outcome in ("late_promised", "late_legal"):
                outcome = "late_legal"
                planned = legal + stop + 1 + int(rng.random() * 6)
            else:
                outcome = "on_time"
                planned = promised + stop

        # 3. The steps, with supplement requests, returns and refusals woven in.
        plans = self._plans(
            node_item,
            supplements=supplements,
            returned=returned,
            ends_case=return_ends_case,
            refused=refused,
            no_reason=no_reason,
        )
        host = next((index for index, plan in enumerate(plans) if plan.host), len(plans) - 1)

        # 4. Working-day durations: own days split by step limits; the clock stop sits inside the host step.
        own_days = planned - stop
        limits = [plan.limit for plan in plans]
        limit_total = sum(limits)
        durations: list[int] = []
        previous_end = cumulative = 0
        for limit in limits:
            cumulative += limit
            end = own_days * cumulative // limit_total if limit_total else 0
            durations.append(end - previous_end)
            previous_end = end
        durations[-1] += own_days - previous_end
        if own_days > 0 and len(plans) > 1 and rng.random() < STEP_OVERRUN_SHARE:
            self._overrun(durations, limits)
        durations[host] += stop

        # 5. Events in time order as (offset, tag, step index); a clock stop lies inside its host step.
        events: list[tuple[int, str, int]] = []
        offset = 0
        for index, duration in enumerate(durations):
            start_offset, offset = offset, offset + duration
            if index == host and procedure is not None:
                own = duration - stop
                procedure_start = min(max(1, start_offset + int(rng.random() * (own + 2))), offset - stop + 1)
                events.append((procedure_start, "procedure_start", index))
                events.append((procedure_start + stop - 1, "procedure_end", index))
            if index == len(durations) - 1:
                events.append((offset, "payment", index))
            events.append((offset, "step", index))
        accepted, stamps = self._times(events, accept_day, base, accept_workday)

        # 6. The records that exist at the end of --to.
        drawn = _Case(
            seq=seq,
            node_item=node_item,
            outcome=outcome,
            online=online,
            accepted=accepted,
            applicant="",
            plans=plans,
            procedure=procedure,
            supplements=supplements,
            refused=refused,
            return_ends_case=return_ends_case,
        )
        self._write_acceptance(drawn)
        self._write_progress(drawn, events, stamps, window.last_index - base)

    def _plans(
        self, node_item: NodeItem, *, supplements: int, returned: bool, ends_case: bool, refused: bool, no_reason: bool
    ) -> list[_StepPlan]:
        """The case's steps: the item's workflow plus supplement requests, a return and a refusal where drawn."""
        plans = [_StepPlan(template.name, template.post, template.limit) for template in node_item.steps]
        review = 1 if len(plans) > 2 else len(plans) - 1
        plans[review].host = True
        reviewer = plans[review]
        inserted: list[_StepPlan] = []
        for _ in range(supplements):
            missing = "、".join(self.rng.sample(_MISSING_MATERIALS, 2))
            opinion = f"申请材料不齐全，请一次性补正：{missing}"
            inserted.append(_StepPlan(reviewer.name, reviewer.post, reviewer.limit, _SUPPLEMENT, opinion))
        if returned:
            opinion = "" if no_reason else self._choice(_RETURN_REASONS)
            inserted.append(_StepPlan(reviewer.name, reviewer.post, reviewer.limit, _RETURN, opinion))
            if ends_case:
                plans = plans[:review]  # returned to the applicant and concluded there
            else:
                inserted.append(_StepPlan(plans[0].name, plans[0].post, 0))  # re-accepted after correction
        plans[review:review] = inserted
        if refused:
            decision = next((plan for plan in reversed(plans) if plan.name in ("审批", "审核")), plans[-1])
            decision.action = _OTHER
            decision.opinion = "" if no_reason else _REFUSAL_PREFIX + self._choice(_REFUSAL_REASONS)
        for plan in plans:
            if plan.action == _PASS:
                plan.opinion = self._choice(_PASS_OPINIONS.get(plan.name, ("同意",)))
        return plans

    def _overrun(self, durations: list[int], limits: list[int]) -> None:
        """Make one step take longer than its own limit by moving working days from the other steps to it."""
        index = 1 + int(self.rng.random() * (len(durations) - 1))
        need = limits[index] + 1 - durations[index]
        for other in reversed(range(len(durations))):
            if other == index or need <= 0:
                continue
            take = min(durations[other], need)
            durations[other] -= take
            durations[index] += take
            need -= take

    def _times(
        self, events: list[tuple[int, str, int]], accept_day: int, base: int, accept_workday: bool
    ) -> tuple[int, list[int]]:
        """The acceptance stamp and one stamp per event, strictly increasing, in office hours where possible."""
        random = self.rng.random
        workdays = self.window.workdays
        if accept_workday:
            accept_second = _OPEN_SECOND + int(random() * (_CLOSE_SECOND - _OPEN_SECOND - 1800))
        else:
            accept_second = 8 * 3600 + int(random() * 14 * 3600)  # online on a weekend or holiday, any time
        stamps: list[int] = []
        position = 0
        while position < len(events):
            offset = events[position][0]
            group_end = position + 1
            while group_end < len(events) and events[group_end][0] == offset:
                group_end += 1
            count = group_end - position
            if offset == 0:
                day_start = accept_day * _DAY
                seconds = self._office_seconds(count, accept_second)
            elif base + offset < len(workdays):
                day_start = workdays[base + offset] * _DAY
                seconds = self._office_seconds(count, -1)
            else:
                # Far past --to: never written; any increasing stamps keep the order.
                day_start = (workdays[-1] + offset) * _DAY
                seconds = list(range(_OPEN_SECOND, _OPEN_SECOND + count))
            stamps.extend(day_start + second for second in seconds)
            position = group_end
        return accept_day * _DAY + accept_second, stamps

    def _write_acceptance(self, drawn: _Case) -> None:
        rng = self.rng
        profile = self.profile
        node_item = drawn.node_item
        item = node_item.item
        accepted = drawn.accepted
        accepted_text = self._text(accepted)
        drawn.case_no = f"{profile.case_prefix}-{accepted_text[:8]}-{drawn.seq:07d}"
        enterprise_share = ENTERPRISE_SHARE_LICENCE if item.type_code == TYPE_LICENCE else ENTERPRISE_SHARE_OTHER
        if rng.random() < enterprise_share:
            drawn.applicant = names.enterprise_name(rng, profile.place)
            id_type = _ID_TYPE_CREDIT_CODE
            id_no = names.unified_credit_code("9", "1", self._local_area, int(rng.random() * 10**8))
        else:
            drawn.applicant, id_no, _ = names.random_resident(rng, self._local_area, self.window.date_to)
            id_type = _ID_TYPE_RESIDENT
        if drawn.online:
            applied = accepted - 600 - int(rng.random() * 2 * _DAY)  # submitted online up to two days earlier
            source = "2" if rng.random() < 0.6 else "3"
        else:
            applied = accepted - 180 - int(rng.random() * 2400)  # took a ticket and waited at the window
            source = "1"
        declared = due_at(self.cal, _to_datetime(accepted), item.promised_limit)  # the calendar the importer uses
        self.write["acceptance"](
            (
                drawn.case_no,
                node_item.implementation_code,
                node_item.body_name,
                node_item.body_code,
                self._choice(profile.staff[node_item.body_name][names.POST_WINDOW]),
                accepted_text,
                self._text(declared.toordinal() * _DAY + declared.hour * 3600 + declared.minute * 60 + declared.second),
                "1" if item.instant else "2",
                profile.area_code,
                drawn.applicant,
                id_type,
                id_no,
                source,
                self._text(applied),
            )
        )

    def _write_progress(
        self, drawn: _Case, events: list[tuple[int, str, int]], stamps: list[int], visible: int
    ) -> None:
        """Steps, clock stop, payment, completion, evaluation and complaint: whatever happened by the end of --to."""
        rng = self.rng
        write = self.write
        case_no = drawn.case_no
        plans = drawn.plans
        procedure = drawn.procedure
        staff = self.profile.staff[drawn.node_item.body_name]
        cutoff = self.window.cutoff
        step_start = drawn.accepted
        started = self._text(step_start)  # a step starts when the one before it ended: formatted once
        handler = ""
        paid = procedure_started = False
        completed: int | None = None
        for (offset, tag, index), stamp in zip(events, stamps, strict=True):
            seen = offset <= visible
            if tag == "procedure_start":
                if seen and procedure is not None:
                    procedure_started = True
                    write["procedure_start"]((case_no, procedure[0], self._text(stamp), procedure[1]))
                continue
            if tag == "procedure_end":
                if seen and procedure is not None and procedure_started:
                    write["procedure_end"]((case_no, self._text(stamp), procedure[2]))
                continue
            if tag == "payment":
                if seen and not drawn.refused and not drawn.return_ends_case:
                    paid = self._payment(case_no, drawn.node_item, stamp)
                continue
            plan = plans[index]
            handler = self._choice(staff[plan.post])
            if not seen:
                # In progress at --to: the step is pending and nothing after it has happened yet.
                entered = self._text(step_start + 60 + int(rng.random() * 600))
                limit = str(plan.limit)
                pending = (case_no, plan.name, plan.action, handler, plan.post, "", started, "", "1", limit, entered)
                write["step"](pending)
                break
            entered = self._text(self._entered(stamp, drawn.online, cutoff))
            ended = self._text(stamp)
            limit = str(plan.limit)
            write["step"](
                (case_no, plan.name, plan.action, handler, plan.post, plan.opinion, started, ended, "2", limit, entered)
            )
            step_start, started = stamp, ended
            if index == len(plans) - 1:
                completed = stamp
        if completed is not None:
            self._completion(drawn, completed, handler, paid)
            if rng.random() < EVALUATION_SHARE:
                self._evaluation(case_no, completed, drawn.online, drawn.outcome in _LATE_CLASSES, cutoff)
        complaint_share = COMPLAINT_SHARE_LATE if drawn.outcome in _LATE_CLASSES else COMPLAINT_SHARE_OTHER
        if rng.random() < complaint_share:
            self._complaint(drawn, completed, cutoff)

    # -- pieces of a case ---------------------------------------------------------------------------------------------
    def _entered(self, ended: int, online: bool, cutoff: int) -> int:
        """When a finished step was entered: minutes later, or for a few walk-in steps days later (late entry)."""
        rng = self.rng
        if not online and rng.random() < LATE_ENTRY_SHARE:
            late = (ended // _DAY + 4 + int(rng.random() * 7)) * _DAY + _OPEN_SECOND + int(rng.random() * 8 * 3600)
            if late <= cutoff:
                return late
        return ended + int(rng.random() * 900)

    def _payment(self, case_no: str, node_item: NodeItem, paid: int) -> bool:
        """Write the case's payment if it has one: the standard fee, a few above it, a few on free items."""
        rng = self.rng
        standard = node_item.item.fee_standard
        if standard is not None:
            amount = standard
            if rng.random() < FEE_ABOVE_STANDARD_SHARE:
                amount = (standard * Decimal(self._choice(("1.5", "2", "3")))).quantize(Decimal("0.01"))
        elif rng.random() < FEE_ON_FREE_ITEM_SHARE:
            amount = Decimal(self._choice(("20.00", "50.00", "100.00", "200.00")))  # a "材料费" the item may not charge
        else:
            return False
        self.write["payment"]((case_no, f"{amount:.2f}", self._text(paid)))
        return True

    def _completion(self, drawn: _Case, completed: int, handler: str, paid: bool) -> None:
        item = drawn.node_item.item
        certificate = certificate_no = reason = ""
        if drawn.return_ends_case:
            result = "3"  # 不予受理: returned to the applicant
            reason = drawn.plans[-1].opinion
        elif drawn.refused:
            result = "2"  # 不予批准
            decision = next(plan for plan in drawn.plans if plan.action == _OTHER)
            reason = decision.opinion.removeprefix(_REFUSAL_PREFIX)
        else:
            result = "1"
            if item.certificate:
                year = date.fromordinal(completed // _DAY).year
                certificate = item.certificate
                certificate_no = f"{item.basic_code[:3]}{self.profile.area_code[:6]}{year}{drawn.seq:07d}"
        self.write["completion"](
            (
                drawn.case_no,
                handler,
                self._text(completed),
                result,
                reason,
                certificate,
                certificate_no,
                "1" if paid else "0",
            )
        )

    def _evaluation(self, case_no: str, completed: int, online: bool, late: bool, cutoff: int) -> None:
        rng = self.rng
        if rng.random() < 0.7:
            evaluated = completed + 60 + int(rng.random() * 1800)  # at the window's rating pad, right away
        else:
            evaluated = completed + 12 * 3600 + int(rng.random() * 3 * _DAY)  # by text message, days later
        if evaluated > cutoff:
            return
        code = 1 + self._pick(SATISFACTION_WEIGHTS_LATE if late else SATISFACTION_WEIGHTS)
        channels = _EVALUATION_CHANNELS_ONLINE if online else _EVALUATION_CHANNELS_WALK_IN
        self.write["evaluation"](
            (case_no, self._choice(channels), self._text(evaluated), str(code), self._choice(_COMMENTS[code]))
        )

    def _complaint(self, drawn: _Case, completed: int | None, cutoff: int) -> None:
        rng = self.rng
        received = (completed if completed is not None else drawn.accepted) + 20 * 3600 + int(rng.random() * 10 * _DAY)
        if received > cutoff:
            return
        topic = 1 if drawn.supplements > 1 else 0 if rng.random() < 0.6 else 2 + int(rng.random() * 2)
        title, content = _COMPLAINT_TOPICS[topic]
        item_name = drawn.node_item.item.name
        accepted_day = date.fromordinal(drawn.accepted // _DAY)
        # An enterprise complains through a person; a resident applicant complains in their own name.
        complainant = drawn.applicant if len(drawn.applicant) <= 4 else names.person_name(rng)
        self._write_complaint(
            # At most one complaint per case; the day keeps runs of one node over other periods apart.
            number=f"{self.profile.case_prefix}-TS-{self._text(received)[:8]}-{drawn.seq:07d}",
            title=title.format(item=item_name),
            content=content.format(item=item_name, accepted=f"{accepted_day:%Y年%m月%d日}"),
            complainant=complainant,
            unit=drawn.node_item.body_name,
            person=self._choice(self.profile.staff[drawn.node_item.body_name][names.POST_WINDOW]),
            received=received,
            case_no=drawn.case_no,
        )

    def _write_complaint(
        self,
        *,
        number: str,
        title: str,
        content: str,
        complainant: str,
        unit: str,
        person: str,
        received: int,
        case_no: str,
    ) -> None:
        profile = self.profile
        source = self._choice(_COMPLAINT_SOURCES)
        self.write["complaint"](
            (
                number,
                title,
                complainant,
                unit,
                person,
                content,
                source,
                self._text(received),
                profile.supervision_unit,
                "15",
                "0",
                "0",
                profile.area_code,
                case_no,
            )
        )

    def general_complaints(self, count: int) -> None:
        """Complaints about service in general (no case), on random working days of the window."""
        rng = self.rng
        window = self.window
        for number in range(1, count + 1):
            day = window.workdays[int(rng.random() * (window.last_index + 1))]
            received = day * _DAY + _OPEN_SECOND + int(rng.random() * 8 * 3600)
            title, content = _GENERAL_COMPLAINTS[int(rng.random() * len(_GENERAL_COMPLAINTS))]
            self._write_complaint(
                number=f"{self.profile.case_prefix}-TS-{self._text(received)[:8]}-G{number:06d}",
                title=title,
                content=content,
                complainant=names.person_name(rng),
                unit=self.items[int(rng.random() * len(self.items))].body_name,
                person="",
                received=received,
                case_no="",
            )


def _check_arguments(cases: int, date_from: date, date_to: date) -> None:
    if cases < 0:
        raise ValidationError(f"--cases must be >= 0, got {cases}", field="cases", reason="bad_number")
    if date_to < date_from:
        raise ValidationError(f"--to {date_to} is before --from {date_from}", field="to", reason="inconsistent")


def _calendar_margin(profile: NodeProfile) -> int:
    """Working days past --to the calendar must cover: the importer computes every case's legal due date."""
    return max((node_item.item.legal_limit for node_item in profile.items), default=0) + MAX_STOP_WORKDAYS + 1


@dataclass(frozen=True, slots=True)
class _ChunkTask:
    """One chunk of cases, generated alone (possibly in another process) into its own part files."""

    node_id: str
    seed: int
    chunk: int
    first_seq: int
    last_seq: int
    date_from: date
    date_to: date
    holidays_file: Path | None
    file_format: FileFormat
    parts_dir: Path

    @property
    def name(self) -> str:
        """The chunk's part-file prefix; names sort in generation order."""
        return f"{self.chunk:05d}"


def _run_chunk(task: _ChunkTask) -> dict[str, int]:
    """Generate the cases of one chunk; returns rows written per kind."""
    profile = node_profile(task.node_id)
    cal = load_calendar(task.holidays_file)
    window = _build_window(cal, task.date_from, task.date_to, _calendar_margin(profile))
    writer = _PartWriter(task.parts_dir, task.name, task.file_format)
    try:
        generator = _CaseGenerator(
            profile, Random(derive_seed(task.node_id, task.seed, task.chunk)), cal, window, writer.write
        )
        for seq in range(task.first_seq, task.last_seq + 1):
            generator.case(seq)
    finally:
        writer.close()
    return writer.counts


def generate(
    node_id: str,
    cases: int,
    seed: int,
    out_dir: Path,
    *,
    date_from: date = DEFAULT_FROM,
    date_to: date = DEFAULT_TO,
    file_format: FileFormat = "csv",
    holidays_file: Path | None = None,
    workers: int | None = None,
    chunk_cases: int = CHUNK_CASES,
) -> GenerateSummary:
    """Write a node's synthetic data to ``out_dir`` (one CSV per kind, or one JSONL file); deterministic per seed.

    Cases are drawn in chunks of ``chunk_cases``, each from its own seed, so the files are byte-identical whether the
    chunks run in one process or in ``workers`` processes (default: one per CPU, only when there are several chunks).
    """
    _check_arguments(cases, date_from, date_to)
    if chunk_cases < 1:
        raise ValidationError(f"chunk size must be >= 1, got {chunk_cases}", field="chunk_cases", reason="bad_number")
    profile = node_profile(node_id)
    cal = load_calendar(holidays_file)
    window = _build_window(cal, date_from, date_to, _calendar_margin(profile))  # calendar errors before any work
    out_dir.mkdir(parents=True, exist_ok=True)
    parts_dir = out_dir / _PARTS_DIR
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir()
    tasks = [
        _ChunkTask(
            node_id,
            seed,
            chunk,
            first,
            min(first + chunk_cases - 1, cases),
            date_from,
            date_to,
            holidays_file,
            file_format,
            parts_dir,
        )
        for chunk, first in enumerate(range(1, cases + 1, chunk_cases))
    ]
    records = dict.fromkeys(KIND_ORDER, 0)
    try:
        items = _PartWriter(parts_dir, "items", file_format)
        for node_item in profile.items:
            record = node_item.record(profile.level_code)
            items.write["item"](tuple(record.get(name, "") for name in COLUMNS["item"]))
        items.close()
        pool_size = min(workers or os.cpu_count() or 1, len(tasks))
        if pool_size > 1:
            # Spawned, not forked: the caller may run threads (a server, a launcher) that fork would copy mid-lock.
            with ProcessPoolExecutor(max_workers=pool_size, mp_context=multiprocessing.get_context("spawn")) as pool:
                chunk_counts = list(pool.map(_run_chunk, tasks))
        else:
            chunk_counts = [_run_chunk(task) for task in tasks]
        general = _PartWriter(parts_dir, "general", file_format)
        try:
            rng = Random(derive_seed(node_id, seed, -1))
            _CaseGenerator(profile, rng, cal, window, general.write).general_complaints(
                round(cases * UNLINKED_COMPLAINT_SHARE)
            )
        finally:
            general.close()
        for counts in [items.counts, *chunk_counts, general.counts]:
            for kind, count in counts.items():
                records[kind] += count
        _assemble(out_dir, parts_dir, ["items", *(task.name for task in tasks), "general"], file_format)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    if file_format == "csv":
        files = {FILE_NAMES[kind]: records[kind] for kind in KIND_ORDER}
    else:
        files = {JSONL_FILE_NAME: sum(records.values())}
    log.info("generated %s cases for node %s (seed %s) into %s", cases, node_id, seed, out_dir)
    return GenerateSummary(
        node_id=node_id,
        seed=seed,
        cases=cases,
        date_from=date_from,
        date_to=date_to,
        file_format=file_format,
        out_dir=out_dir,
        files=files,
        records=records,
    )


def iter_item_records(node_id: str) -> Iterator[dict[str, str]]:
    """The item records a node implements (English field names), e.g. to seed a node without any cases."""
    profile = node_profile(node_id)
    for node_item in profile.items:
        yield node_item.record(profile.level_code)
