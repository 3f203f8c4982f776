"""The drill-down case listing (read through the driver's cursor) against the ORM view of the same rows, on SQLite
and PostgreSQL: every field, the filters and keyset paging."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from federation.proto.v1 import drilldown_pb2 as dd
from node.app import Node, open_node
from node.bootstrap import init_node
from node.drilldown import answer_alerts, answer_case_detail, answer_cases, mask_name, to_ms
from node.ingest import Importer
from node.store import Alert, Case, Item
from node.supervision import default_listeners
from node.synthetic import generate

NOW = datetime(2026, 4, 1, 12, 0)  # after the generated window: no record lies ahead of the node clock


@pytest.fixture
def node(tmp_path: Path, db_url: str) -> Iterator[Node]:
    init_node(tmp_path / "n", "gd.gz.py", level="district", db_url=db_url)
    opened = open_node(tmp_path / "n", clock=lambda: NOW)
    try:
        generated = generate(
            "gd.gz.py", 120, 5, tmp_path / "gen", date_from=date(2026, 1, 5), date_to=date(2026, 3, 31)
        )
        summary = Importer(opened, listeners=default_listeners(opened)).import_files(generated.paths)
        assert summary.rejected == 0, summary.errors[:3]
        yield opened
    finally:
        opened.close()


def _exact_ms(value: datetime, tz: ZoneInfo) -> int:
    return (value.replace(tzinfo=tz) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _expected_row(node: Node, session: Session, case: Case) -> dd.CaseRow:
    """The row as the ORM sees the case: an independent computation of every field."""
    tz = node.tz
    item_name = session.scalar(select(Item.name).where(Item.implementation_code == case.implementation_code))
    severities = list(session.scalars(select(Alert.severity).where(Alert.case_no == case.case_no)))
    is_open = case.status == "open"
    reference = NOW if is_open else (case.completed_at or NOW)
    running = not (is_open and case.clock_stopped)
    row = dd.CaseRow(
        case_no=case.case_no,
        implementation_code=case.implementation_code,
        basic_code=case.basic_code,
        item_name=item_name or "",
        item_type_code=case.item_type_code,
        department=case.department,
        applicant_masked=mask_name(case.applicant_name or ""),
        status=case.status,
        accepted_at_ms=_exact_ms(case.accepted_at, tz),
        promised_due_at_ms=_exact_ms(case.promised_due_at, tz),
        legal_due_at_ms=_exact_ms(case.legal_due_at, tz),
        overdue_promised=running and reference > case.promised_due_at,
        overdue_legal=running and reference > case.legal_due_at,
        clock_stopped=bool(case.clock_stopped),
        clock_stop_workdays=case.clock_stop_workdays or 0,
        supplement_count=case.supplement_count or 0,
        return_count=case.return_count or 0,
        reminders=severities.count("reminder"),
        yellow_cards=severities.count("yellow"),
        red_cards=severities.count("red"),
    )
    if case.completed_at is not None:
        row.completed_at_ms = _exact_ms(case.completed_at, tz)
    return row


def _all_pages(node: Node, request: dd.CasesRequest, page_size: int) -> list[dd.CaseRow]:
    rows: list[dd.CaseRow] = []
    token = ""
    for _ in range(100):
        answer, token = answer_cases(node, request, page_size, token)
        rows.extend(answer.cases)
        if not token:
            return rows
    raise AssertionError("paging did not end")


def test_every_field_of_every_page_matches_the_orm(node: Node) -> None:
    rows = _all_pages(node, dd.CasesRequest(), 7)
    with Session(node.engine) as session:
        cases = list(session.scalars(select(Case).order_by(Case.accepted_at, Case.case_no)))
        expected = [_expected_row(node, session, case) for case in cases]
    assert len(cases) == 120
    assert [row.case_no for row in rows] == [row.case_no for row in expected]  # no gap, no repeat, in order
    assert rows == expected
    # The generated data exercises what the conversions must get right.
    assert any(row.HasField("completed_at_ms") for row in rows) and any(row.status == "open" for row in rows)
    assert any(row.reminders + row.yellow_cards + row.red_cards for row in rows)
    assert any(row.overdue_promised for row in rows) and not all(row.overdue_promised for row in rows)


def test_filters_select_the_same_cases_as_the_orm(node: Node) -> None:
    with Session(node.engine) as session:
        department = session.scalar(select(Case.department).group_by(Case.department).order_by(func.count().desc()))
        red = set(session.scalars(select(Alert.case_no).where(Alert.severity == "red")))
        completed = set(session.scalars(select(Case.case_no).where(Case.status == "completed")))
        in_department = set(session.scalars(select(Case.case_no).where(Case.department == department)))
        in_february = set(
            session.scalars(
                select(Case.case_no).where(
                    Case.accepted_at >= datetime(2026, 2, 1), Case.accepted_at < datetime(2026, 3, 1)
                )
            )
        )
    assert department and red and completed
    status = dd.CASE_STATUS_FILTER_COMPLETED

    def listed(request: dd.CasesRequest) -> set[str]:
        return {row.case_no for row in _all_pages(node, request, 10)}

    assert listed(dd.CasesRequest(status=status)) == completed
    assert listed(dd.CasesRequest(red_card_only=True)) == red
    assert listed(dd.CasesRequest(department=department or "")) == in_department
    assert listed(dd.CasesRequest(day_from="2026-02-01", day_to="2026-02-28")) == in_february
    overdue = listed(dd.CasesRequest(overdue_only=True))
    assert overdue == {row.case_no for row in _all_pages(node, dd.CasesRequest(), 50) if row.overdue_promised}


def test_case_detail_row_equals_the_listed_row(node: Node) -> None:
    listed = _all_pages(node, dd.CasesRequest(red_card_only=True), 50)[0]
    detail, _token = answer_case_detail(node, dd.CaseDetailRequest(case_no=listed.case_no))
    assert detail.case == listed


def test_to_ms_is_exact_and_uses_the_zone_of_the_day() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    # 1990 had daylight saving time in China (UTC+9 in summer): the offset comes from the date, not a constant.
    for value in (
        datetime(2026, 3, 4, 10, 11, 12, 999999),
        datetime(1990, 7, 1, 12, 0),
        datetime(1990, 1, 1, 12, 0),
        datetime(2026, 1, 1, 0, 0, 0, 1000),
    ):
        assert to_ms(value, shanghai) == _exact_ms(value, shanghai)
    assert (
        to_ms(datetime(1990, 7, 1, 12, 0), shanghai) - to_ms(datetime(1990, 7, 1, 12, 0), ZoneInfo("UTC"))
        == -9 * 3600_000
    )
    # A zone carried by the value is ignored: the wall time is the node's local time.
    assert to_ms(datetime(2026, 3, 4, 10, 0, tzinfo=UTC), shanghai) == to_ms(datetime(2026, 3, 4, 10, 0), shanghai)


def test_alert_rows_carry_when_the_rule_was_broken_and_when_it_was_noticed(node: Node) -> None:
    answer, _ = answer_alerts(node, dd.AlertsRequest(), 500, "")
    assert answer.alerts
    with Session(node.engine) as session:
        stored = {alert.id: alert for alert in session.scalars(select(Alert))}
    late = 0
    for row in answer.alerts:
        alert = stored[row.id]
        assert row.breached_at_ms == _exact_ms(alert.breached_at, node.tz)
        assert row.raised_at_ms == _exact_ms(alert.raised_at, node.tz)
        late += row.breached_at_ms < row.raised_at_ms
    assert late > 0  # history imported after the fact: breached before it was noticed


def test_an_alert_day_range_selects_cards_by_breach_day_as_the_counters_do(node: Node) -> None:
    with Session(node.engine) as session:
        alerts = list(session.scalars(select(Alert)))
    february = {a.id for a in alerts if a.breached_at.strftime("%Y-%m") == "2026-02"}
    assert february and any(a.raised_at.strftime("%Y-%m") != "2026-02" for a in alerts if a.id in february)
    seen: list[int] = []
    token = ""
    while True:
        request = dd.AlertsRequest(day_from="2026-02-01", day_to="2026-02-28")
        answer, token = answer_alerts(node, request, 7, token)
        seen.extend(row.id for row in answer.alerts)
        if not token:
            break
    assert sorted(seen) == sorted(february) and len(seen) == len(set(seen))  # paged by breach time, none twice
