"""The import pipeline against real databases (SQLite file and PostgreSQL): effects, errors, idempotency, batches."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select, text
from sqlalchemy.orm import Session

from node.app import Node, open_node
from node.bootstrap import init_node
from node.domain import due_at, procedure_workdays
from node.ingest import Importer, ImportSummary, RecordOutcome
from node.store import (
    CATALOGUE_COUNTER,
    Base,
    Case,
    Completion,
    Evaluation,
    NodeCounter,
    Payment,
    SpecialProcedure,
    Step,
)

NOW = datetime(2026, 3, 2, 12, 0)

ITEMS = """\
实施编码,基本编码,事项名称,事项类型代码,行使层级代码,实施主体,实施主体代码,\
法定办结时限,承诺办结时限,是否收费,收费标准
I1,B0001,餐饮服务许可,01,4,番禺区市场监督管理局,11440113MB2C12345X,20,10,1,50.00
I2,B0002,户外广告设置,01,4,番禺区城市管理局,11440113MB2C12346X,5,3,0,
"""
ACCEPTANCES = """case_no,implementation_code,department,accepted_at,case_type_code,applicant_name
C1,I1,番禺区市场监督管理局,20260105T093000,2,张三
C2,I2,番禺区城市管理局,2026-01-06 10:00:00,1,李四
C3,I1,番禺区市场监督管理局,20260202090000,2,王五
"""
EVENT_RECORDS: list[dict[str, object]] = [
    {"kind": "step", "case_no": "C1", "step_name": "受理审查", "action": "补正", "started_at": "20260106T090000"},
    {
        "kind": "step",
        "case_no": "C1",
        "step_name": "复审",
        "action": "退回",
        "started_at": "20260107T090000",
        "opinion": "材料不全",
    },
    {
        "kind": "procedure_start",
        "办件编号": "C1",
        "特别程序种类代码": "2",
        "特别程序开始时间": "20260108T090000",
        "特别程序启动理由": "专家评审",
    },
    {"kind": "procedure_end", "办件编号": "C1", "特别程序结束时间": "20260112T170000", "特别程序结果": "通过"},
    {"kind": "completion", "case_no": "C1", "completed_at": "20260115T160000", "handler_name": "赵六"},
    {"kind": "payment", "case_no": "C1", "amount": "50", "paid_at": "20260115T150000"},
    {"kind": "evaluation", "case_no": "C1", "satisfaction_code": 5, "evaluated_at": "20260116T090000"},
    {"kind": "completion", "case_no": "C2", "completed_at": "20260106T110000"},
    {
        "kind": "complaint",
        "complaint_no": "T1",
        "title": "办理太慢",
        "respondent_unit": "番禺区城市管理局",
        "received_at": "20260120T100000",
    },
]
EVENTS = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in EVENT_RECORDS)


def write(path: Path, content: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(content.encode(encoding))
    return path


@pytest.fixture
def node(db_url: str, tmp_path: Path) -> Iterator[Node]:
    init_node(tmp_path / "node", "gd.gz.py", db_url=db_url)
    opened = open_node(tmp_path / "node", clock=lambda: NOW)
    yield opened
    opened.close()


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    return [
        write(tmp_path / "events.jsonl", EVENTS),
        write(tmp_path / "acceptances.csv", ACCEPTANCES),
        write(tmp_path / "items.csv", ITEMS),
    ]


def snapshot(node: Node) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every approval table, for before/after comparisons."""
    tables = ("items", "cases", "steps", "special_procedures", "completions", "payments", "evaluations", "complaints")
    with node.engine.connect() as conn:
        return {name: sorted(tuple(row) for row in conn.execute(select(Base.metadata.tables[name]))) for name in tables}


def errors_of(summary: ImportSummary) -> set[tuple[str, int, str | None, str]]:
    return {(Path(e.file).name, e.line, e.field, e.reason) for e in summary.errors}


def test_all_kinds_land_with_their_case_effects(node: Node, files: list[Path]) -> None:
    summary = Importer(node).import_files(files)
    assert (summary.accepted, summary.duplicates, summary.rejected) == (14, 0, 0), summary.errors
    calendar = node.calendar
    with Session(node.engine) as session:
        c1 = session.get(Case, "C1")
        c2 = session.get(Case, "C2")
        c3 = session.get(Case, "C3")
        assert c1 is not None and c2 is not None and c3 is not None
        # Item fields are copied onto the case; deadlines come from the working-day calendar.
        assert (c3.basic_code, c3.item_type_code, c3.promised_limit, c3.legal_limit) == ("B0001", "01", 10, 20)
        assert c3.accepted_at == datetime(2026, 2, 2, 9, 0)
        assert c3.promised_due_at == due_at(calendar, c3.accepted_at, 10)
        assert c3.legal_due_at == due_at(calendar, c3.accepted_at, 20)
        assert (c3.status, c3.recorded_at) == ("open", NOW)
        # Instant case: due at the end of the acceptance day.
        assert c2.promised_due_at == c2.legal_due_at == datetime.combine(c2.accepted_at.date(), time(23, 59, 59))
        assert (c2.status, c2.completed_at) == ("completed", datetime(2026, 1, 6, 11, 0))
        # Steps count supplements and returns; the procedure stopped the clock and moved both deadlines.
        stop = procedure_workdays(calendar, datetime(2026, 1, 8, 9), datetime(2026, 1, 12, 17))
        assert stop > 0
        assert (c1.supplement_count, c1.return_count, c1.clock_stop_workdays, c1.clock_stopped) == (1, 1, stop, False)
        assert c1.promised_due_at == due_at(calendar, c1.accepted_at, 10, "1", stop)
        assert c1.legal_due_at == due_at(calendar, c1.accepted_at, 20, "1", stop)
        assert (c1.status, c1.completed_at) == ("completed", datetime(2026, 1, 15, 16, 0))
        procedure = session.scalars(select(SpecialProcedure)).one()
        assert (procedure.workdays, procedure.result, procedure.reason) == (stop, "通过", "专家评审")
        steps = session.scalars(select(Step).order_by(Step.started_at)).all()
        assert [(s.action, s.entered_at) for s in steps] == [("supplement", NOW), ("return", NOW)]
        payment = session.scalars(select(Payment)).one()
        assert payment.amount == Decimal("50.00")
        evaluation = session.scalars(select(Evaluation)).one()
        assert (evaluation.satisfaction_code, evaluation.followup_status) == (5, "open")
        completion = session.get(Completion, "C1")
        assert completion is not None and completion.handler_name == "赵六"
        # Values written by the bulk path compare correctly in SQL against ORM-bound parameters.
        found = session.scalars(select(Case.case_no).where(Case.accepted_at == datetime(2026, 1, 5, 9, 30))).all()
        assert found == ["C1"]


def test_every_bad_record_is_named_and_good_ones_still_land(node: Node, tmp_path: Path) -> None:
    items = write(tmp_path / "items.csv", ITEMS)
    acceptances = write(
        tmp_path / "受理-2026.csv",
        "办件编号,实施编码,受理单位,受理时间\n"
        "G1,I1,市场局,20260105T093000\n"  # line 2: good
        "G2,I9,市场局,20260105T093000\n"  # line 3: unknown item code
        "G3,I1,,20260105T093000\n"  # line 4: missing field
        "G4,I1,市场局,20260230T093000\n"  # line 5: bad date
        "G5,I1,市场局,20031105T093000\n"  # line 6: no calendar for 2003 (the built-in one starts in 2004)
        f"{'G' * 51},I1,市场局,20260105T093000\n"  # line 7: too long
        "G7,I1,市场局\n",  # line 8: wrong column count
    )
    events = write(
        tmp_path / "events.jsonl",
        '{"kind": "payment", "case_no": "G1", "amount": "-1.00", "paid_at": "20260106T090000"}\n'  # negative fee
        '{"kind": "step", "case_no": "NOPE", "step_name": "审查", "action": "通过", "started_at": "20260106T090000"}\n'
        '{"kind": "completion", "case_no": "G1", "completed_at": "20260101T090000"}\n'  # before acceptance
        '{"kind": "procedure_end", "case_no": "G1", "ended_at": "20260107T090000"}\n'  # nothing running
        "{not json\n"
        '{"kind": "audit", "case_no": "G1"}\n'
        '{"kind": "step", "case_no": "G1", "step_name": "审查", "action": "批准", "started_at": "20260106T090000"}\n'
        "\n"
        '{"kind": "payment", "case_no": "G1", "amount": "12.5", "paid_at": "20260106T090000"}\n',  # line 9: good
    )
    summary = Importer(node).import_files([events, acceptances, items])
    assert errors_of(summary) == {
        ("受理-2026.csv", 3, "implementation_code", "unknown_item"),
        ("受理-2026.csv", 4, "department", "missing_field"),
        ("受理-2026.csv", 5, "accepted_at", "bad_datetime"),
        ("受理-2026.csv", 6, "accepted_at", "calendar"),
        ("受理-2026.csv", 7, "case_no", "too_long"),
        ("受理-2026.csv", 8, None, "bad_row"),
        ("events.jsonl", 1, "amount", "negative_fee"),
        ("events.jsonl", 2, "case_no", "unknown_case"),
        ("events.jsonl", 3, "completed_at", "before_acceptance"),
        ("events.jsonl", 4, "case_no", "invalid_state"),
        ("events.jsonl", 5, None, "bad_json"),
        ("events.jsonl", 6, "kind", "unknown_kind"),
        ("events.jsonl", 7, "action", "bad_code"),
    }
    assert (summary.accepted, summary.rejected) == (2 + 1 + 1, 13)
    assert summary.rejected_by_reason["unknown_item"] == 1
    by_line = {(Path(e.file).name, e.line): e for e in summary.errors}
    assert "unknown item code 'I9'" in by_line[("受理-2026.csv", 3)].message
    assert "no holiday data for 2003" in by_line[("受理-2026.csv", 6)].message
    assert by_line[("受理-2026.csv", 3)].key == "G2"
    assert str(by_line[("events.jsonl", 1)]).startswith(f"{events}:1: payment G1/")
    with Session(node.engine) as session:
        assert session.scalars(select(Case.case_no)).all() == ["G1"]
        assert session.scalars(select(Payment.amount)).all() == [Decimal("12.50")]


def test_importing_twice_changes_nothing(node: Node, files: list[Path], tmp_path: Path) -> None:
    bad = write(
        tmp_path / "acceptances-bad.csv",
        "case_no,implementation_code,department,accepted_at\nX1,NOPE,d,20260105T093000\n",
    )
    first = Importer(node).import_files([*files, bad])
    before = snapshot(node)
    second = Importer(node).import_files([*files, bad])
    assert (second.accepted, second.duplicates, second.rejected) == (0, first.accepted, first.rejected) == (0, 14, 1)
    assert snapshot(node) == before


def test_a_changed_record_is_a_conflict_and_never_overwrites(node: Node, files: list[Path], tmp_path: Path) -> None:
    Importer(node).import_files(files)
    changed = write(
        tmp_path / "acceptances.csv",
        "case_no,implementation_code,department,accepted_at,case_type_code,applicant_name\n"
        "C1,I1,番禺区民政局,20260105T093000,2,张三\n"
        "C3,I1,番禺区市场监督管理局,20260202090000,2,王五\n",
    )
    summary = Importer(node).import_files([changed])
    assert (summary.duplicates, summary.rejected) == (1, 1)
    error = summary.errors[0]
    assert (error.line, error.field, error.reason, error.key) == (2, "department", "conflict", "C1")
    assert "番禺区市场监督管理局" in error.message and "番禺区民政局" in error.message
    with Session(node.engine) as session:
        case = session.get(Case, "C1")
        assert case is not None and case.department == "番禺区市场监督管理局"
    payment = write(tmp_path / "payments.jsonl", '{"case_no": "C1", "amount": "60", "paid_at": "20260115T150000"}\n')
    summary = Importer(node).import_files([payment])
    assert (summary.errors[0].field, summary.errors[0].reason) == ("amount", "conflict")


def test_repeats_inside_one_file(node: Node, tmp_path: Path) -> None:
    items = write(tmp_path / "items.csv", ITEMS)
    acceptances = write(
        tmp_path / "cases.csv",
        "case_no,implementation_code,department,accepted_at\n"
        "R1,I1,d,20260105T093000\n"
        "R1,I1,d,20260105T093000\n"  # same record again: a duplicate
        "R1,I1,other,20260105T093000\n"  # same key, other content: a conflict
        "R2,I9,d,20260105T093000\n"  # rejected (unknown item) ...
        "R2,I1,d,20260105T093000\n",  # ... so this one is judged on its own and lands
    )
    summary = Importer(node).import_files([items, acceptances])
    assert errors_of(summary) == {
        ("cases.csv", 4, "department", "conflict"),
        ("cases.csv", 5, "implementation_code", "unknown_item"),
    }
    assert summary.by_kind["acceptance"] == {"accepted": 2, "duplicates": 1, "rejected": 2}


def test_files_are_taken_in_dependency_order(node: Node, tmp_path: Path) -> None:
    completions = write(tmp_path / "事项办结.csv", "办件编号,办结时间\nC1,20260115T160000\n")
    acceptances = write(tmp_path / "acceptances.csv", ACCEPTANCES)
    items = write(tmp_path / "items.csv", ITEMS)
    summary = Importer(node).import_files([completions, acceptances, items])
    assert summary.rejected == 0
    assert [f["kind"] for f in summary.files] == ["item", "acceptance", "completion"]


class RecordingListener:
    """Keeps what it is given and writes one counter row through the batch's connection."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls: list[tuple[str, list[dict[str, Any]]]] = []
        self.fail_on_call = fail_on_call

    def on_records(self, conn: Connection, kind: str, records: Sequence[Mapping[str, Any]], now: datetime) -> None:
        assert now == NOW
        self.calls.append((kind, [dict(r) for r in records]))
        if self.fail_on_call is not None and len(self.calls) >= self.fail_on_call:
            raise RuntimeError("listener failed")
        conn.execute(insert(NodeCounter).values(name=f"seen-{len(self.calls)}", value=len(records)))


def test_listeners_see_new_records_with_their_case_inside_the_transaction(node: Node, files: list[Path]) -> None:
    listener = RecordingListener()
    Importer(node, listeners=[listener]).import_files(files)
    kinds = [kind for kind, _ in listener.calls]
    assert kinds == [
        "item",
        "acceptance",
        "procedure_start",
        "procedure_end",
        "step",
        "payment",
        "completion",
        "evaluation",
        "complaint",
    ]
    calls = dict(listener.calls)
    assert [r["case_no"] for r in calls["acceptance"]] == ["C1", "C2", "C3"]
    steps = calls["step"]
    # The case as it is AFTER each record's effect.
    assert [(s["case"]["supplement_count"], s["case"]["return_count"]) for s in steps] == [(1, 0), (1, 1)]
    end = calls["procedure_end"][0]
    assert end["procedure"]["workdays"] == end["case"]["clock_stop_workdays"] > 0
    assert end["previous_case"]["clock_stop_workdays"] == 0
    assert end["case"]["promised_due_at"] > end["previous_case"]["promised_due_at"]
    completion = next(r for r in calls["completion"] if r["case_no"] == "C1")
    assert (completion["case"]["status"], completion["case"]["completed_at"]) == (
        "completed",
        completion["completed_at"],
    )
    assert set(completion["case"]) >= {
        "case_no",
        "implementation_code",
        "basic_code",
        "item_type_code",
        "department",
        "accepted_at",
        "promised_due_at",
        "legal_due_at",
        "status",
        "completed_at",
        "clock_stop_workdays",
        "supplement_count",
        "return_count",
    }
    with node.engine.connect() as conn:
        assert conn.execute(select(NodeCounter.name)).all()  # the listener's writes committed with the batch
    # Re-import: nothing new, so no listener call at all.
    again = RecordingListener()
    Importer(node, listeners=[again]).import_files(files)
    assert again.calls == []


def test_a_failing_batch_rolls_back_whole_and_earlier_batches_stay(node: Node, tmp_path: Path) -> None:
    items = write(tmp_path / "items.csv", ITEMS)
    Importer(node).import_files([items])
    rows = "".join(f"B{n},I1,d,20260105T093000\n" for n in range(5))
    acceptances = write(tmp_path / "acceptances.csv", "case_no,implementation_code,department,accepted_at\n" + rows)
    with pytest.raises(RuntimeError, match="listener failed"):
        Importer(node, listeners=[RecordingListener(fail_on_call=2)], batch_size=2).import_files([acceptances])
    with Session(node.engine) as session:
        assert session.scalars(select(Case.case_no).order_by(Case.case_no)).all() == ["B0", "B1"]
        # The listener's counters (the item import counted its register change as well).
        listed = select(NodeCounter.name).where(NodeCounter.name != CATALOGUE_COUNTER)
        assert session.scalars(listed).all() == ["seen-1"]


def test_python_api_takes_dicts_with_either_names_and_reports_each_record(node: Node) -> None:
    outcomes: list[RecordOutcome] = []
    importer = Importer(node)
    importer.import_files([write(node.data_dir / "items.csv", ITEMS)])
    records = [
        ("事项受理", 1, {"办件编号": "A1", "实施编码": "I2", "受理单位": "城管局", "受理时间": "20260105T093000"}),
        (
            "acceptance",
            2,
            {"case_no": "A1", "implementation_code": "I2", "department": "城管局", "accepted_at": "20260105T093000"},
        ),
        ("acceptance", 3, {"case_no": "A2", "implementation_code": "I2", "department": "城管局"}),
        ("nonsense", 4, {"case_no": "A3"}),
        ("completion", 5, {"case_no": "A1", "completed_at": "2026-01-06T10:00:00+08:00"}),
    ]
    summary = importer.import_records(records, source="grpc:test", on_outcome=outcomes.append)
    assert [(o.line, o.status) for o in outcomes] == [
        (1, "accepted"),
        (2, "duplicate"),
        (3, "rejected"),
        (4, "rejected"),
        (5, "accepted"),
    ]
    assert outcomes[2].error is not None and outcomes[2].error.field == "accepted_at"
    assert outcomes[3].error is not None and outcomes[3].error.reason == "unknown_kind"
    assert (summary.accepted, summary.duplicates, summary.rejected) == (2, 1, 2)
    assert all(e.file == "grpc:test" for e in summary.errors)


def test_gb18030_files_and_progress(node: Node, tmp_path: Path) -> None:
    items = write(tmp_path / "事项.csv", ITEMS, "gb18030")
    acceptances = write(tmp_path / "事项受理.csv", ACCEPTANCES, "gb18030")
    seen: list[tuple[int, int]] = []
    summary = Importer(node).import_files([items, acceptances], progress=lambda done, total: seen.append((done, total)))
    assert (summary.accepted, summary.rejected) == (5, 0)
    assert [f["encoding"] for f in summary.files] == ["gb18030", "gb18030"]
    assert seen[-1][0] == seen[-1][1] == items.stat().st_size + acceptances.stat().st_size
    with Session(node.engine) as session:
        case = session.get(Case, "C1")
        assert case is not None and (case.department, case.applicant_name) == ("番禺区市场监督管理局", "张三")


def test_sqlite_datetimes_use_sqlalchemy_storage_format(tmp_path: Path) -> None:
    init_node(tmp_path / "node", "gd.gz.py")
    node = open_node(tmp_path / "node", clock=lambda: NOW)
    try:
        Importer(node).import_files(
            [write(tmp_path / "items.csv", ITEMS), write(tmp_path / "acceptances.csv", ACCEPTANCES)]
        )
        with node.engine.connect() as conn:
            stored = conn.execute(text("SELECT accepted_at, promised_due_at FROM cases WHERE case_no = 'C1'")).one()
        assert stored == ("2026-01-05 09:30:00.000000", "2026-01-19 23:59:59.000000")
    finally:
        node.close()


def test_concurrent_imports_of_overlapping_files_store_each_record_once(node: Node, tmp_path: Path) -> None:
    import threading

    Importer(node).import_files([write(tmp_path / "items.csv", ITEMS)])
    header = "case_no,implementation_code,department,accepted_at\n"
    first = write(
        tmp_path / "a-acceptances.csv", header + "".join(f"K{n:03d},I1,d,20260105T093000\n" for n in range(200))
    )
    second = write(
        tmp_path / "b-acceptances.csv", header + "".join(f"K{n:03d},I1,d,20260105T093000\n" for n in range(100, 300))
    )
    summaries: list[ImportSummary] = []
    failures: list[BaseException] = []

    def run(path: Path) -> None:
        try:
            summaries.append(Importer(node, batch_size=25).import_files([path]))
        except BaseException as exc:  # surfaced below: a thread's exception would otherwise vanish
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(path,)) for path in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sum(s.accepted for s in summaries) == 300
    assert sum(s.duplicates for s in summaries) == 100
    assert sum(s.rejected for s in summaries) == 0
    with Session(node.engine) as session:
        assert len(session.scalars(select(Case.case_no)).all()) == 300


def test_special_procedure_rules(node: Node, tmp_path: Path) -> None:
    Importer(node).import_files(
        [write(tmp_path / "items.csv", ITEMS), write(tmp_path / "acceptances.csv", ACCEPTANCES)]
    )
    procedures = [
        {"kind": "procedure_start", "case_no": "C3", "kind_code": "1", "started_at": "20260203T090000"},
        {"kind": "procedure_start", "case_no": "C3", "kind_code": "1", "started_at": "20260204T090000"},  # running
        {"kind": "procedure_start", "case_no": "C3", "kind_code": "2", "started_at": "20260203T090000"},  # conflict
        {"kind": "procedure_start", "case_no": "C1", "kind_code": "1", "started_at": "20260101T090000"},  # too early
        {"kind": "procedure_end", "case_no": "C3", "ended_at": "20260202T090000"},  # ends before it started
        {"kind": "procedure_end", "case_no": "C3", "ended_at": "20260205T170000"},
        {"kind": "procedure_end", "case_no": "C3", "ended_at": "20260205T170000"},  # the same end again
        {"kind": "procedure_end", "case_no": "C3", "ended_at": "20260206T170000"},  # nothing running any more
        {"kind": "procedure_start", "case_no": "C3", "kind_code": "1", "started_at": "20260209T090000"},  # a second
        {"kind": "procedure_end", "case_no": "C3", "ended_at": "20260209T170000"},
    ]
    events = write(tmp_path / "events.jsonl", "".join(json.dumps(p) + "\n" for p in procedures))
    summary = Importer(node).import_files([events])
    assert errors_of(summary) == {
        ("events.jsonl", 2, "case_no", "invalid_state"),
        ("events.jsonl", 3, "kind_code", "conflict"),
        ("events.jsonl", 4, "started_at", "before_acceptance"),
        ("events.jsonl", 5, "ended_at", "inconsistent"),
        ("events.jsonl", 8, "case_no", "invalid_state"),
    }
    assert (summary.accepted, summary.duplicates) == (4, 1)
    calendar = node.calendar
    first = procedure_workdays(calendar, datetime(2026, 2, 3, 9), datetime(2026, 2, 5, 17))
    second = procedure_workdays(calendar, datetime(2026, 2, 9, 9), datetime(2026, 2, 9, 17))
    with Session(node.engine) as session:
        case = session.get(Case, "C3")
        assert case is not None
        assert (case.clock_stop_workdays, case.clock_stopped) == (first + second, False) == (3 + 1, False)
        assert case.promised_due_at == due_at(calendar, case.accepted_at, 10, "1", first + second)
        assert [
            p.workdays for p in session.scalars(select(SpecialProcedure).order_by(SpecialProcedure.started_at))
        ] == [
            first,
            second,
        ]


def test_a_completion_in_a_year_without_calendar_is_rejected_alone(node: Node, tmp_path: Path) -> None:
    from node.supervision import check_buckets, default_listeners

    covered = node.calendar.covered_years()
    missing = covered[-1] + 1
    last = covered[-1]
    items = write(tmp_path / "items.csv", ITEMS)
    acceptances = write(
        tmp_path / "acceptances.csv",
        "case_no,implementation_code,department,accepted_at\n"
        f"Y1,I1,番禺区市场监督管理局,{last}1102T090000\n"
        f"Y2,I1,番禺区市场监督管理局,{last}1102T090000\n",
    )
    completions = write(
        tmp_path / "completions.csv",
        f"case_no,completed_at\nY1,{missing}0105T100000\nY2,{last}1110T100000\n",
    )
    # The node's clock is in the year without a calendar, so that year's completion is no future one.
    later = open_node(node.data_dir, clock=lambda: datetime(missing, 1, 31, 12, 0))
    try:
        summary = Importer(later, listeners=default_listeners(later)).import_files([items, acceptances, completions])
    finally:
        later.close()
    assert (summary.accepted, summary.rejected) == (2 + 2 + 1, 1)
    (error,) = summary.errors
    assert (Path(error.file).name, error.line, error.field, error.reason, error.key) == (
        "completions.csv",
        2,
        "completed_at",
        "calendar",
        "Y1",
    )
    assert f"no working-day calendar for year {missing}; add it to the holiday file" in error.message
    with node.engine.connect() as conn:
        statuses = dict(conn.execute(select(Case.case_no, Case.status)).all())
        assert statuses == {"Y1": "open", "Y2": "completed"}
        assert conn.execute(select(Completion.case_no)).scalars().all() == ["Y2"]
    assert check_buckets(node) == []
