"""The periodic scan on a real node (SQLite and PostgreSQL): R01/R02/R03 fire exactly when due and never twice,
clock stops suppress false overdue warnings, late-imported cases and config changes are still caught, yellow cards
escalate (R04), overdue complaints (R10/R11) — with the metric buckets consistent after every step."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from node.app import Node
from node.ingest import Importer
from node.store import Alert
from node.supervision import (
    accept_complaint,
    acknowledge_alert,
    correct_alert,
    default_listeners,
    get_alert,
    list_alerts,
    maintained_buckets,
    run_scan,
)
from tests.harness.clocks import Clock
from tests.harness.rules import (
    OTHER_TYPE_ITEM_CODE,
    UNIT,
    Record,
    acceptance,
    alert_keys,
    assert_metrics_consistent,
    completion,
    items,
    load,
    make_node,
    step,
)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2025, 3, 3, 12, 0))


def scan_at(node: Node, when: datetime) -> dict[str, int]:
    return run_scan(node, when).by_rule


def test_case_rules_fire_exactly_when_due_and_never_twice(node: Node, clock: Clock) -> None:
    load(
        node,
        [*items(), acceptance("OPEN-1"), acceptance("OPEN-2", department="另一个窗口"), acceptance("DONE-EARLY")],
    )
    clock.now = datetime(2025, 3, 5, 16)  # an import refuses a completion dated ahead of the node clock
    load(node, [completion("DONE-EARLY", "20250305T150000", reason="")])
    # Thu 03-06: the promise (end of Mon 03-10) is 2 working days away: no reminder yet.
    assert scan_at(node, datetime(2025, 3, 6, 12)) == {}
    # Fri 03-07: 1 working day left (reminder_workdays = 1): a reminder per open case, once.
    assert scan_at(node, datetime(2025, 3, 7, 12)) == {"R01": 2}
    assert scan_at(node, datetime(2025, 3, 7, 12, 5)) == {}
    # One second before the promise ends: not broken yet.
    assert scan_at(node, datetime(2025, 3, 10, 23, 59, 58)) == {}
    # Just past it: a yellow card (R02) per open case; the legal limit still holds.
    assert scan_at(node, datetime(2025, 3, 11, 0, 0, 1)) == {"R02": 2}
    assert scan_at(node, datetime(2025, 3, 11, 0, 0, 2)) == {}
    # Past the legal limit (end of Mon 03-17): red card (R03).
    assert scan_at(node, datetime(2025, 3, 18, 0, 0, 1))["R03"] == 2
    assert scan_at(node, datetime(2025, 3, 18, 9)) == {}
    # A full re-examination finds nothing new either.
    assert run_scan(node, datetime(2025, 3, 18, 10), full=True).by_rule == {}

    keys = alert_keys(node)
    assert len(keys) == len(set(keys))
    assert [k for k in keys if k[0] in ("R01", "R02", "R03")] == [
        ("R01", "case:OPEN-1"),
        ("R01", "case:OPEN-2"),
        ("R02", "case:OPEN-1"),
        ("R02", "case:OPEN-2"),
        ("R03", "case:OPEN-1"),
        ("R03", "case:OPEN-2"),
    ]
    with node.engine.connect() as conn:
        red = list_alerts(conn, rule_id="R03", case_no="OPEN-2")[0]
    assert (red.severity, red.department, red.implementation_code) == ("red", "另一个窗口", "440112001")
    assert_metrics_consistent(node)


def test_overdue_gauges_follow_alerts_and_completion(node: Node, clock: Clock) -> None:
    load(node, [*items(), acceptance("G-1"), acceptance("G-2")])
    run_scan(node, datetime(2025, 3, 18, 1))
    with node.engine.connect() as conn:
        bucket = maintained_buckets(conn)[(datetime(2025, 3, 3).date(), UNIT, "440112001")]
    assert bucket["open_cases"] == 2
    assert bucket["open_overdue_promised"] == 2
    assert bucket["open_overdue_legal"] == 2
    clock.now = datetime(2025, 3, 18, 9, 30)
    load(node, [completion("G-1", "20250318T090000", reason="ok")])
    with node.engine.connect() as conn:
        bucket = maintained_buckets(conn)[(datetime(2025, 3, 3).date(), UNIT, "440112001")]
    assert (bucket["open_cases"], bucket["open_overdue_promised"], bucket["open_overdue_legal"]) == (1, 1, 1)
    assert_metrics_consistent(node)


def test_clock_stop_suppresses_false_overdue(node: Node) -> None:
    load(
        node,
        [
            *items(),
            acceptance("STOPPED"),
            acceptance("RUNNING"),
            (
                "procedure_start",
                0,
                {"case_no": "STOPPED", "kind_code": "2", "started_at": "20250305T090000", "reason": "专家评审"},
            ),
        ],
    )
    # Past the original promise: only the running case is overdue; the stopped one is not warned at all.
    assert scan_at(node, datetime(2025, 3, 11, 9)) == {"R02": 1}
    assert ("R02", "case:STOPPED") not in alert_keys(node)
    # The procedure ends Wed 03-12: 6 working days (03-05..03-12) are added; the promise moves to end of Tue 03-18.
    load(node, [("procedure_end", 0, {"case_no": "STOPPED", "ended_at": "20250312T170000", "result": "通过"})])
    assert scan_at(node, datetime(2025, 3, 13, 9)) == {}
    # Tue 03-18: a reminder for STOPPED; RUNNING is past its legal limit and its yellow card went uncorrected.
    assert scan_at(node, datetime(2025, 3, 18, 9)) == {"R01": 1, "R03": 1, "R04": 1}
    assert ("R01", "case:STOPPED") in alert_keys(node)
    assert scan_at(node, datetime(2025, 3, 19, 0, 0, 1)) == {"R02": 1}
    assert ("R02", "case:STOPPED") in alert_keys(node)
    assert_metrics_consistent(node)


def test_incremental_scan_still_catches_cases_imported_late(node: Node) -> None:
    load(node, items())
    first = run_scan(node, datetime(2025, 3, 20, 9))
    assert first.full and first.raised == []
    # A historical case arrives after that scan, its deadlines long past: the next (incremental) scan must see it.
    load(node, [acceptance("LATE", "20250303T100000")])
    second = run_scan(node, datetime(2025, 3, 20, 9, 5))
    assert not second.full
    assert second.by_rule == {"R02": 1, "R03": 1}
    assert run_scan(node, datetime(2025, 3, 20, 9, 10)).by_rule == {}
    assert_metrics_consistent(node)


def pending_step(case_no: str, name: str, started_at: str, limit: str) -> Record:
    return step(case_no, name, "pass", started_at, status_code="1", step_limit=limit)


def test_scan_finds_pending_steps_past_their_limit_once(tmp_path: Path, db_url: str, clock: Clock) -> None:
    # Type 10 items have R05 disabled; the clock (the import time) is Mon 03-03 12:00.
    node = make_node(tmp_path, db_url, clock, {"item_types": {"10": {"R05": {"enabled": False}}}})
    load(
        node,
        [*items(), acceptance("S-A"), acceptance("S-B"), acceptance("S-T10", implementation_code=OTHER_TYPE_ITEM_CODE)],
    )
    assert run_scan(node, datetime(2025, 3, 5, 9)).full
    # Imported after that scan: pending since Mon 03-03 with a 1-day limit (due end of Tue 03-04, before the
    # last scan time); with a 5-day limit (due end of Mon 03-10), its case completed on Fri 03-07; and one of a
    # type with R05 disabled.
    load(
        node,
        [
            pending_step("S-A", "初审", "20250303T100000", "1"),
            pending_step("S-B", "初审", "20250303T100000", "5"),
            pending_step("S-T10", "初审", "20250303T100000", "1"),
        ],
    )
    assert alert_keys(node) == []  # none was overdue at import time
    second = run_scan(node, datetime(2025, 3, 5, 9, 5))
    assert not second.full and second.by_rule == {"R05": 1}
    clock.now = datetime(2025, 3, 7, 10, 30)
    load(node, [completion("S-B", "20250307T100000")])
    assert run_scan(node, datetime(2025, 3, 11, 9)).by_rule.get("R05") is None
    assert run_scan(node, datetime(2025, 3, 11, 9, 5), full=True).by_rule.get("R05") is None
    reminders = [subject for rule, subject in alert_keys(node) if rule == "R05"]
    assert len(reminders) == 1 and reminders[0].startswith("case:S-A:step:")
    assert_metrics_consistent(node)
    node.close()


def test_changed_config_rescans_everything(tmp_path: Path, db_url: str, clock: Clock) -> None:
    disabled = make_node(tmp_path, db_url, clock, {"rules": {"R02": {"enabled": False}}})
    load(disabled, [*items(), acceptance("C-1")])
    assert run_scan(disabled, datetime(2025, 3, 12, 9)).by_rule == {}
    disabled.close()
    enabled = make_node(tmp_path, db_url, clock)
    result = run_scan(enabled, datetime(2025, 3, 12, 9, 5))
    assert result.full
    assert result.by_rule == {"R02": 1}
    enabled.close()


def test_item_type_overrides(tmp_path: Path, db_url: str, clock: Clock) -> None:
    supervision = {"item_types": {"10": {"R02": {"enabled": False}}, "01": {"R01": {"reminder_workdays": 3}}}}
    node = make_node(tmp_path, db_url, clock, supervision)
    load(node, [*items(), acceptance("T01"), acceptance("T10", implementation_code=OTHER_TYPE_ITEM_CODE)])
    # Wed 03-05: type 01 is reminded 3 working days ahead; type 10 keeps the default of 1.
    assert scan_at(node, datetime(2025, 3, 5, 9)) == {"R01": 1}
    assert ("R01", "case:T01") in alert_keys(node)
    assert scan_at(node, datetime(2025, 3, 7, 9)) == {"R01": 1}
    # Past the promise: type 10 has R02 disabled.
    assert scan_at(node, datetime(2025, 3, 11, 9)) == {"R02": 1}
    assert ("R02", "case:T10") not in alert_keys(node)
    assert_metrics_consistent(node)
    node.close()


def test_yellow_card_escalates_to_red_after_supervision_period(node: Node) -> None:
    load(node, [*items(), acceptance("E-1"), acceptance("E-2"), acceptance("E-3")])
    run_scan(node, datetime(2025, 3, 11, 9))  # R02 on all three; correct by end of Fri 03-14 (3 working days)
    with node.engine.connect() as conn:
        yellows = {a.case_no: a for a in list_alerts(conn, rule_id="R02")}
    assert {a.correct_by for a in yellows.values()} == {datetime(2025, 3, 14, 23, 59, 59)}
    correct_alert(node, yellows["E-2"].id, "材料已补齐，已办结", now=datetime(2025, 3, 12, 9))
    acknowledge_alert(node, yellows["E-3"].id, by="张三", now=datetime(2025, 3, 12, 9))
    assert scan_at(node, datetime(2025, 3, 14, 23)) == {}
    assert scan_at(node, datetime(2025, 3, 15, 0, 0, 1)) == {"R04": 2}
    assert scan_at(node, datetime(2025, 3, 15, 1)) == {}
    with node.engine.connect() as conn:
        escalated = get_alert(conn, yellows["E-1"].id)
        assert escalated.status == "escalated"
        assert escalated.escalated_at == datetime(2025, 3, 15, 0, 0, 1)
        red = get_alert(conn, escalated.escalated_alert_id or 0)
        assert (red.rule_id, red.severity, red.case_no) == ("R04", "red", "E-1")
        assert get_alert(conn, yellows["E-2"].id).status == "corrected"
        assert get_alert(conn, yellows["E-3"].id).status == "escalated"
    assert_metrics_consistent(node)


def test_new_yellow_with_an_earlier_deadline_escalates_on_time(tmp_path: Path, db_url: str, clock: Clock) -> None:
    node = make_node(tmp_path, db_url, clock, {"rules": {"R08": {"supervision_workdays": 1}}})
    load(node, [*items(), acceptance("A-1"), acceptance("A-2")])
    run_scan(node, datetime(2025, 3, 11, 9))  # R02 yellow on, due for correction end of Fri 03-14
    # A refusal without reason at Tue 03-11 10:00: an R08 yellow due for correction at the end of Wed 03-12.
    clock.now = datetime(2025, 3, 11, 10)
    load(node, [completion("A-2", "20250311T095000", result_code="2")])
    assert ("R08", "case:A-2") in alert_keys(node)
    assert scan_at(node, datetime(2025, 3, 13, 9)) == {"R04": 1}
    assert ("R04", f"case:A-2:alert:{_alert_id(node, 'R08', 'case:A-2')}") in alert_keys(node)
    assert_metrics_consistent(node)
    node.close()


def _alert_id(node: Node, rule_id: str, subject: str) -> int:
    with node.engine.connect() as conn:
        query = select(Alert.id).where(Alert.rule_id == rule_id, Alert.subject == subject)
        return int(conn.execute(query).scalar_one())


def test_overdue_complaints(node: Node) -> None:
    load(
        node,
        [
            *items(),
            acceptance("C-1"),
            (
                "complaint",
                0,
                {
                    "complaint_no": "TS-1",
                    "title": "拖延",
                    "respondent_unit": UNIT,
                    "received_at": "20250303T090000",
                    "case_no": "C-1",
                },
            ),
            (
                "complaint",
                0,
                {
                    "complaint_no": "TS-2",
                    "title": "态度",
                    "respondent_unit": UNIT,
                    "received_at": "20250303T090000",
                    "handling_unit": "区纪委监委",
                },
            ),
        ],
    )
    accept_complaint(node, "TS-2", by="李四", now=datetime(2025, 3, 4, 9))
    # Decision due end of Mon 03-10 (5 working days); TS-2 was decided in time.
    assert "R10" not in scan_at(node, datetime(2025, 3, 10, 23))
    assert scan_at(node, datetime(2025, 3, 11, 8))["R10"] == 1
    with node.engine.connect() as conn:
        decision = list_alerts(conn, rule_id="R10")[0]
    assert (decision.subject, decision.department) == ("complaint:TS-1", UNIT)
    assert decision.implementation_code == "440112001"
    # Handling due 15 working days after the decision (Tue 03-04) = end of Tue 03-25.
    assert "R11" not in scan_at(node, datetime(2025, 3, 25, 23))
    assert scan_at(node, datetime(2025, 3, 26, 8))["R11"] == 1
    with node.engine.connect() as conn:
        handling = list_alerts(conn, rule_id="R11")[0]
    assert (handling.subject, handling.department) == ("complaint:TS-2", "区纪委监委")
    assert alert_keys(node).count(("R10", "complaint:TS-1")) == 1
    assert_metrics_consistent(node)


def test_concurrent_scans_raise_each_alert_once(node: Node) -> None:
    load(node, [*items(), *(acceptance(f"P-{i}") for i in range(30))])
    results: list[int] = []
    errors: list[BaseException] = []

    def scan() -> None:
        try:
            results.append(len(run_scan(node, datetime(2025, 3, 18, 9), full=True).raised))
        except BaseException as exc:  # reported below; a thread must not die silently
            errors.append(exc)

    threads = [threading.Thread(target=scan) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(results) == 60  # 30 × (R02 + R03) in total, whichever scan got them
    keys = alert_keys(node)
    assert len(keys) == len(set(keys)) == 60
    assert_metrics_consistent(node)


class _PauseOnCompletion:
    """A real listener placed first: holds the import's transaction open after the completions are written."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def on_records(self, conn: object, kind: str, records: object, now: datetime) -> None:
        if kind == "completion":
            self.started.set()
            self.release.wait(20)


def test_scan_racing_an_import_of_completions_keeps_the_gauges_exact(node: Node, clock: Clock) -> None:
    load(node, [*items(), *(acceptance(f"R-{i}") for i in range(5))])
    clock.now = datetime(2025, 3, 12, 10)
    pause = _PauseOnCompletion()
    importer = Importer(node, listeners=[pause, *default_listeners(node)])
    errors: list[BaseException] = []

    def run(action: Callable[[], object]) -> None:
        try:
            action()
        except BaseException as exc:  # reported below; a thread must not die silently
            errors.append(exc)

    records = [("completion", i, {"case_no": f"R-{i}", "completed_at": "20250312T090000"}) for i in range(5)]
    importing = threading.Thread(target=run, args=(lambda: importer.import_records(records),))
    importing.start()
    assert pause.started.wait(20)
    # PostgreSQL: the scan sees the cases still open and cards them; SQLite: it waits for the import's write lock.
    scanning = threading.Thread(target=run, args=(lambda: run_scan(node, datetime(2025, 3, 18, 9)),))
    scanning.start()
    time.sleep(0.5)
    pause.release.set()
    importing.join(30)
    scanning.join(30)
    assert errors == []
    with node.engine.connect() as conn:
        bucket = maintained_buckets(conn)[(datetime(2025, 3, 3).date(), UNIT, "440112001")]
    assert bucket.get("open_cases", 0) == 0
    assert bucket.get("open_overdue_promised", 0) == bucket.get("open_overdue_legal", 0) == 0
    assert_metrics_consistent(node)
