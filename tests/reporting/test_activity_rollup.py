"""Supervision activity counts upward (issue 13 figures): a real tree over mutual TLS, the city on SQLite and on
PostgreSQL. What streets record (accountability measures, directive counts) is what the province shows per city for
a period; INCREMENTAL reports carry the changed keys, FULL ones replace the window; the integrity check names an
edited child_activity_counts row; no person and no department leaves a node."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from federation import InvalidArgumentError, outbox_table, parse_body, validate_report_body
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import ActivityCount, ReportBody, ReportKind
from node.app import Node
from node.reporting import child_figures_differences
from node.store import ActivityCount as ActivityRow
from node.store import ChildActivityCount
from node.supervision import activity_totals, record_activity, record_measure
from tests.harness.tree import Tree

IDS = ["gd", "gd.a", "gd.a.x", "gd.a.y", "gd.b", "gd.b.z"]
CITIES = {"gd.a": ["gd.a", "gd.a.x", "gd.a.y"], "gd.b": ["gd.b", "gd.b.z"]}
PERSON = "王某某"
DEPARTMENT = "某区行政审批局"
PERIOD = (date(2025, 3, 1), date(2025, 3, 20))


def measure(node: Node, kind: str, day: date) -> None:
    decided_at = datetime(day.year, day.month, day.day, 15)
    record_measure(node, measure=kind, department=DEPARTMENT, person=PERSON, reason="督办逾期", decided_at=decided_at)


def directives(node: Node, day: date, metric: str, kind: str, count: int) -> None:
    """Directive counts as the directive lifecycle will record them (node.supervision.record_activity)."""
    with node.engine.begin() as conn:
        record_activity(conn, day, metric, kind, count)


@pytest.fixture
def tree(tmp_path: Path, db_url: str) -> Iterator[Tree]:
    built = Tree(tmp_path / "tree", IDS, db_urls={"gd.a": db_url}, serve_leaves=True)
    try:
        measure(built["gd.a.x"], "诫勉谈话", date(2025, 3, 3))
        measure(built["gd.a.x"], "诫勉谈话", date(2025, 3, 3))
        measure(built["gd.a.x"], "警告", date(2025, 2, 20))  # before the period
        measure(built["gd.a.y"], "通报批评", date(2025, 3, 10))
        measure(built["gd.a"], "记过", date(2025, 3, 17))  # the city's own
        measure(built["gd.b.z"], "诫勉谈话", date(2025, 3, 18))
        directives(built["gd.a.x"], date(2025, 3, 4), "directives_received", "supervise", 3)
        directives(built["gd.a.x"], date(2025, 3, 12), "directives_overdue", "supervise", 1)
        directives(built["gd.a.y"], date(2025, 3, 5), "directives_received", "rectify", 2)
        directives(built["gd.b.z"], date(2025, 3, 6), "directives_closed", "warning", 1)
        built.report_up()
        yield built
    finally:
        built.close()


def expected(tree: Tree, node_ids: list[str]) -> dict[tuple[str, str], int]:
    """The nodes' own counts over the period, read from each node's own table (never from the roll-up)."""
    total: dict[tuple[str, str], int] = {}
    for node_id in node_ids:
        with tree[node_id].engine.connect() as conn:
            for key, count in activity_totals(conn, *PERIOD).items():
                total[key] = total.get(key, 0) + count
    return total


def province_rows(tree: Tree) -> tuple[dict[str, dict[tuple[str, str], int]], dict[tuple[str, str], int]]:
    request = dd.SummaryRequest(
        group_by=dd.SUMMARY_GROUP_BY_CHILD, day_from=PERIOD[0].isoformat(), day_to=PERIOD[1].isoformat()
    )
    with tree.client("gd") as client:
        answer = client.ask("gd", summary=request).body.summary
    rows = {row.key: {(a.metric, a.kind): a.count for a in row.activity} for row in answer.rows}
    return rows, {(a.metric, a.kind): a.count for a in answer.activity}


def sent(tree: Tree, node_id: str) -> list[ReportBody]:
    with tree[node_id].engine.connect() as conn:
        raw = conn.execute(select(outbox_table.c.envelope).order_by(outbox_table.c.sequence)).scalars().all()
    return [parse_body(SignedEnvelope.FromString(envelope), ReportBody) for envelope in raw]


def test_the_province_shows_what_each_citys_nodes_recorded(tree: Tree) -> None:
    rows, total = province_rows(tree)
    assert (
        rows["gd.a"]
        == expected(tree, CITIES["gd.a"])
        == {
            ("directives_overdue", "supervise"): 1,
            ("directives_received", "rectify"): 2,
            ("directives_received", "supervise"): 3,
            ("measures_recorded", "记过"): 1,
            ("measures_recorded", "诫勉谈话"): 2,
            ("measures_recorded", "通报批评"): 1,
        }
    )
    assert rows["gd.b"] == expected(tree, CITIES["gd.b"]) and rows["gd.b"]
    assert rows["gd"] == {}  # the province recorded nothing of its own
    assert total == expected(tree, IDS)
    # The street's 警告 of February is outside the period; without one it is there.
    everything = dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD)
    with tree.client("gd") as client:
        row = {r.key: r for r in client.ask("gd", summary=everything).body.summary.rows}["gd.a"]
    assert {(a.metric, a.kind): a.count for a in row.activity}[("measures_recorded", "警告")] == 1


def test_incremental_reports_carry_the_changed_keys_and_full_ones_replace_the_window(tree: Tree) -> None:
    measure(tree["gd.a.x"], "诫勉谈话", date(2025, 3, 3))
    tree.report_up()
    [latest] = sent(tree, "gd.a.x")[-1:]
    assert latest.kind == ReportKind.REPORT_KIND_INCREMENTAL
    assert [(a.day, a.metric, a.kind, a.count) for a in latest.activity] == [
        ("2025-03-03", "measures_recorded", "诫勉谈话", 3)  # state, not delta: the key's whole count
    ]
    assert province_rows(tree)[0]["gd.a"][("measures_recorded", "诫勉谈话")] == 3
    # A count that vanishes without a new revision (a repaired table) is carried only by a FULL report.
    with tree["gd.a.y"].engine.begin() as conn:
        conn.execute(delete(ActivityRow).where(ActivityRow.metric == "directives_received"))
    tree.report_up()
    assert ("directives_received", "rectify") in province_rows(tree)[0]["gd.a"]
    tree.report_up("full")
    rows, _ = province_rows(tree)
    assert ("directives_received", "rectify") not in rows["gd.a"]
    assert rows["gd.a"] == expected(tree, CITIES["gd.a"])
    # Zeroed at the city, not deleted, so the city's next report carried the drop upward.
    with tree["gd.a"].engine.connect() as conn:
        [zeroed] = conn.execute(
            select(ChildActivityCount.count).where(
                ChildActivityCount.child_id == "gd.a.y", ChildActivityCount.metric == "directives_received"
            )
        ).all()
    assert zeroed.count == 0
    full = sent(tree, "gd.a")[-1]
    assert full.kind == ReportKind.REPORT_KIND_FULL
    assert all(full.window_start_day <= a.day <= full.window_end_day and a.count for a in full.activity)
    for node_id in IDS:
        assert child_figures_differences(tree[node_id]).consistent, node_id


def test_the_integrity_check_names_an_edited_child_activity_row(tree: Tree) -> None:
    city = tree["gd.a"]
    assert child_figures_differences(city).consistent
    with city.engine.begin() as conn:
        conn.execute(
            update(ChildActivityCount)
            .where(ChildActivityCount.child_id == "gd.a.x", ChildActivityCount.kind == "诫勉谈话")
            .values(count=ChildActivityCount.count + 5)
        )
    differences = child_figures_differences(city).differences
    assert (
        "child gd.a.x activity 2025-03-03 / measures_recorded / 诫勉谈话: count stored 7, its signed reports say 2"
        in differences
    ), differences
    # A row no signed report ever named is found too.
    with city.engine.begin() as conn:
        conn.execute(
            ChildActivityCount.__table__.insert().values(
                child_id="gd.a.y", day=date(2025, 3, 9), metric="measures_recorded", kind="撤职", count=1, revision=0
            )
        )
    differences = child_figures_differences(city).differences
    assert any("child gd.a.y activity 2025-03-09 / measures_recorded / 撤职: count stored 1" in d for d in differences)


def test_no_person_and_no_department_leaves_a_node(tree: Tree) -> None:
    for node_id in ("gd.a.x", "gd.a"):
        with tree[node_id].engine.connect() as conn:
            envelopes = conn.execute(select(outbox_table.c.envelope)).scalars().all()
        assert envelopes
        for envelope in envelopes:
            assert PERSON.encode() not in envelope and DEPARTMENT.encode() not in envelope


def body_with(*entries: tuple[str, str, str, int], full: bool = False) -> ReportBody:
    body = ReportBody(node_id="gd.a", sequence=1)
    if full:
        body.kind = ReportKind.REPORT_KIND_FULL
        body.window_start_day, body.window_end_day = "2025-03-01", "2025-03-31"
    else:
        body.kind = ReportKind.REPORT_KIND_INCREMENTAL
    body.activity.extend(ActivityCount(day=d, metric=m, kind=k, count=c) for d, m, k, c in entries)
    return body


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (body_with(("2025-02-30", "measures_recorded", "警告", 1)), "is not YYYY-MM-DD"),
        (body_with(("2025-02-28", "measures_recorded", "警告", 1), full=True), "outside the FULL window"),
        (body_with(("2025-03-02", "", "警告", 1)), "must be named"),
        (body_with(("2025-03-02", "measures_recorded", "警" * 41, 1)), "at most 40"),
        (body_with(("2025-03-02", "measures_recorded", "警告", -1)), "negative"),
        (
            body_with(("2025-03-02", "measures_recorded", "警告", 1), ("2025-03-02", "measures_recorded", "撤职", 1)),
            "out of order",
        ),
    ],
)
def test_a_parent_refuses_malformed_activity(body: ReportBody, problem: str) -> None:
    with pytest.raises(InvalidArgumentError, match=problem):
        validate_report_body(body)


def test_kinds_sort_by_code_point() -> None:
    validate_report_body(
        body_with(("2025-03-02", "measures_recorded", "撤职", 1), ("2025-03-02", "measures_recorded", "警告", 1))
    )
