"""The accountability register (node.supervision.accountability) on SQLite and PostgreSQL: a measure is recorded,
counted in the activity counts and audited in one transaction; a bad field is refused by name and leaves nothing."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from node.app import Node
from node.audit_log import AuditFilter, AuditLog
from node.errors import ValidationError
from node.store import AccountabilityMeasure, Alert, current_revision
from node.supervision import (
    ACTIVITY_METRICS,
    MEASURE_RECORDED,
    MEASURES,
    activity_totals,
    list_measures,
    measure_counts,
    record_measure,
)
from tests.harness.clocks import Clock
from tests.harness.rules import OTHER_UNIT, UNIT, acceptance, completion, items, load

PERSON = "张某某"


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2025, 3, 20, 10, 0))


@pytest.fixture
def loaded(node: Node) -> Node:
    """A refusal without a reason (an R08 alert) and a complaint against UNIT naming its person."""
    complaint = {
        "complaint_no": "TS-1",
        "title": "办理拖延",
        "respondent_unit": UNIT,
        "respondent_person": PERSON,
        "received_at": "20250304T090000",
    }
    load(
        node,
        [
            *items(),
            acceptance("AC-1"),
            completion("AC-1", "20250305T100000", result_code="2"),
            ("complaint", 0, complaint),
        ],
    )
    return node


def alert_id(node: Node) -> int:
    with node.engine.connect() as conn:
        return int(conn.execute(select(func.min(Alert.id))).scalar_one())


def audit_entries(node: Node) -> list[Any]:
    return AuditLog(node.engine).entries(AuditFilter(action=MEASURE_RECORDED), limit=None)


def test_a_measure_is_recorded_counted_and_audited(loaded: Node) -> None:
    with loaded.engine.connect() as conn:
        before = current_revision(conn)
    view = record_measure(
        loaded,
        measure="诫勉谈话",
        department=UNIT,
        post="窗口受理岗",
        person=PERSON,
        reason="投诉查实: 办理拖延",
        source_kind="complaint",
        source_ref="TS-1",
        decided_at=datetime(2025, 3, 18, 15, 0),
        recorded_by="纪检组",
    )
    assert (view.measure, view.department, view.person, view.source_kind, view.source_ref) == (
        "诫勉谈话",
        UNIT,
        PERSON,
        "complaint",
        "TS-1",
    )
    assert view.recorded_at == datetime(2025, 3, 20, 10, 0) and view.recorded_by == "纪检组"
    assert list_measures(loaded) == [view]
    with loaded.engine.connect() as conn:
        # Counted on the decision day under a new metric revision: the next report carries it upward.
        assert activity_totals(conn, date(2025, 3, 18), date(2025, 3, 18)) == {("measures_recorded", "诫勉谈话"): 1}
        assert current_revision(conn) > before
    [entry] = audit_entries(loaded)
    assert entry.target == f"accountability:{view.id}" and entry.actor.endswith("@gd.gz.hp")
    detail = json.loads(entry.detail_json)
    assert detail["measure"] == "诫勉谈话" and detail["source"] == "complaint:TS-1"
    assert PERSON not in entry.detail_json  # the person stays in the register only
    assert AuditLog(loaded.engine).verify().ok


def test_alert_and_directive_sources_and_the_filters(loaded: Node) -> None:
    alert = str(alert_id(loaded))
    record_measure(
        loaded, measure="警告", department=UNIT, reason="R08", source_kind="alert", source_ref=alert,
        decided_at=datetime(2025, 3, 6, 9, 0),
    )  # fmt: skip
    record_measure(
        loaded, measure="通报批评", department=OTHER_UNIT, reason="督办逾期", source_kind="directive",
        source_ref="gd.gz/2025/17", decided_at=datetime(2025, 3, 19, 9, 0),
    )  # fmt: skip
    record_measure(loaded, measure="警告", department=OTHER_UNIT, reason="屡次超期")
    assert [view.measure for view in list_measures(loaded)] == ["警告", "通报批评", "警告"]  # newest decision first
    assert [view.source_ref for view in list_measures(loaded, source_kind="alert")] == [alert]
    assert [view.department for view in list_measures(loaded, measure="警告")] == [OTHER_UNIT, UNIT]
    march_6_to_19 = list_measures(loaded, day_from=date(2025, 3, 6), day_to=date(2025, 3, 19))
    assert [view.measure for view in march_6_to_19] == ["通报批评", "警告"]
    assert measure_counts(loaded) == {("警告", UNIT): 1, ("警告", OTHER_UNIT): 1, ("通报批评", OTHER_UNIT): 1}
    assert measure_counts(loaded, department=OTHER_UNIT, day_to=date(2025, 3, 19)) == {("通报批评", OTHER_UNIT): 1}
    with loaded.engine.connect() as conn:
        assert activity_totals(conn) == {("measures_recorded", "警告"): 2, ("measures_recorded", "通报批评"): 1}


GOOD: dict[str, Any] = {"measure": "记过", "department": UNIT, "reason": "超期办理"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"measure": "批评"}, "measure"),
        ({"department": "  "}, "department"),
        ({"reason": ""}, "reason"),
        ({"source_kind": "case", "source_ref": "AC-1"}, "source_kind"),
        ({"source_kind": "complaint"}, "source_ref"),
        ({"source_kind": "complaint", "source_ref": "TS-404"}, "source_ref"),
        ({"source_kind": "alert", "source_ref": "R08"}, "source_ref"),
        ({"source_kind": "alert", "source_ref": "99999"}, "source_ref"),
        ({"decided_at": datetime(2025, 3, 21, 9, 0)}, "decided_at"),
        ({"person": "某" * 101}, "person"),
        ({"department": "局" * 201}, "department"),
    ],
)
def test_a_bad_field_is_named_and_nothing_is_kept(loaded: Node, change: dict[str, Any], field: str) -> None:
    with loaded.engine.connect() as conn:
        before = current_revision(conn)
    with pytest.raises(ValidationError, match=f"field '{field}'") as raised:
        record_measure(loaded, **{**GOOD, **change})
    assert raised.value.field == field
    with loaded.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AccountabilityMeasure)).scalar_one() == 0
        assert activity_totals(conn) == {}
        assert current_revision(conn) == before
    assert audit_entries(loaded) == []


def test_the_measures_and_activity_metrics_are_documented() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    domain, metrics = (docs / "domain.md").read_text(), (docs / "metrics.md").read_text()
    assert MEASURES == ("诫勉谈话", "通报批评", "警告", "记过", "降级", "撤职", "其他")
    assert ", ".join(MEASURES) in domain and ", ".join(MEASURES) in metrics
    for metric in ACTIVITY_METRICS:
        assert f"| {metric} " in metrics, metric
