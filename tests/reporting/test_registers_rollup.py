"""Records reported (上报数据) and item registers roll up (issue 12 point 9): a real tree of gRPC nodes, the root
on SQLite and on PostgreSQL; what the province shows per city equals what the nodes below hold."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import func, select

from federation import outbox_table, parse_body, received_reports
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import ReportBody
from node.app import Node
from node.cli.render import registers_table
from node.store import Case, Completion, Evaluation, Payment, SpecialProcedure, Step, current_revision
from node.supervision import CatalogueFigures, catalogue_figures, check_buckets, list_items, retire_item
from tests.harness.tree import Tree

IDS = ["gd", "gd.a", "gd.a.x", "gd.a.y", "gd.b"]
CITY_A = ["gd.a", "gd.a.x", "gd.a.y"]


@pytest.fixture
def tree(tmp_path: Path, db_url: str) -> Iterator[Tree]:
    built = Tree(tmp_path / "tree", IDS, db_urls={"gd": db_url})
    try:
        for seed, node_id in enumerate(["gd.a", "gd.a.x", "gd.a.y", "gd.b"], start=11):
            built.import_synthetic(node_id, cases=30, seed=seed)
        built.report_up()
        yield built
    finally:
        built.close()


def records_stored(node: Node) -> int:
    """The case records a node holds, counted from its tables: what its 上报数据 must add up to."""
    with node.engine.connect() as conn:
        rows = sum(
            int(conn.execute(select(func.count()).select_from(model)).scalar_one())
            for model in (Case, Step, SpecialProcedure, Payment, Completion, Evaluation)
        )
        ended = conn.execute(
            select(func.count()).select_from(SpecialProcedure).where(SpecialProcedure.ended_at.is_not(None))
        ).scalar_one()
    return rows + int(ended)  # a special procedure is two records: its start and its end


def registers(*nodes: Node) -> CatalogueFigures:
    total = CatalogueFigures()
    for node in nodes:
        with node.engine.connect() as conn:
            total.add(catalogue_figures(conn, node.now()))
    return total


def province_by_child(tree: Tree) -> dd.SummaryAnswer:
    with tree.client("gd") as client:
        return client.ask("gd", summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD)).body.summary


def assert_rows_match(row: dd.SummaryRow, expected: CatalogueFigures) -> None:
    got = row.catalogue
    assert (got.items, got.items_in_force, got.items_retired, got.items_flagged) == (
        expected.items,
        expected.items_in_force,
        expected.items_retired,
        expected.items_flagged,
    )
    assert (got.sum_promised, got.sum_legal, got.departments) == (
        expected.sum_promised,
        expected.sum_legal,
        expected.departments,
    )
    assert {entry.month: entry.count for entry in got.retired_by_month} == expected.retired_by_month


def test_the_province_shows_each_citys_records_and_registers(tree: Tree) -> None:
    answer = province_by_child(tree)
    rows = {row.key: row for row in answer.rows}
    city_a = [tree[node_id] for node_id in CITY_A]
    assert rows["gd.a"].counters.records_reported == sum(records_stored(node) for node in city_a) > 0
    assert rows["gd.b"].counters.records_reported == records_stored(tree["gd.b"]) > 0
    assert rows["gd"].counters.records_reported == 0  # the province imported nothing of its own
    assert_rows_match(rows["gd.a"], registers(*city_a))
    assert_rows_match(rows["gd.b"], registers(tree["gd.b"]))
    everything = registers(*(tree[node_id] for node_id in IDS))
    assert answer.catalogue.items_in_force == everything.items_in_force > 0
    assert answer.catalogue.departments == everything.departments > 0
    assert answer.total.records_reported == sum(records_stored(tree[node_id]) for node_id in IDS)
    for node_id in IDS:
        assert check_buckets(tree[node_id]) == [], node_id


def test_a_retired_item_reaches_the_province_with_its_month(tree: Tree) -> None:
    before = {row.key: row for row in province_by_child(tree).rows}["gd.a"].catalogue
    street = tree["gd.a.x"]
    code = list_items(street)[0].implementation_code
    retired_at = street.now() - timedelta(days=3)
    retire_item(street, code, "事项取消", at=retired_at)
    tree.report_up()
    after = {row.key: row for row in province_by_child(tree).rows}["gd.a"].catalogue
    assert after.items_in_force == before.items_in_force - 1
    assert after.items_retired == before.items_retired + 1
    assert {entry.month: entry.count for entry in after.retired_by_month}.get(f"{retired_at:%Y-%m}") == 1
    assert_rows_match(
        {row.key: row for row in province_by_child(tree).rows}["gd.a"], registers(*(tree[n] for n in CITY_A))
    )


def test_the_registers_table_names_each_city(tree: Tree) -> None:
    console = Console(width=200, record=True)
    answer = province_by_child(tree)
    console.print(registers_table(answer, "gd: registers"))
    text = console.export_text()
    assert "上报数据" in text and "gd.a" in text and f"{answer.total.records_reported:,}" in text
    assert f"{answer.catalogue.items_in_force:,}" in text


def test_no_person_leaves_the_node_in_a_report(tree: Tree) -> None:
    """Per-handler figures are personal data (docs/domain.md §6): no handler's name is in any report sent up."""
    street = tree["gd.a.x"]
    with street.engine.connect() as conn:
        handlers = {row[0] for row in conn.execute(select(Step.handler).distinct()) if row[0]}
        envelopes = [row[0] for row in conn.execute(select(outbox_table.c.envelope))]
    assert handlers and envelopes
    for envelope in envelopes:
        assert not [name for name in handlers if name.encode() in envelope]


def sent_bodies(node: Node) -> list[ReportBody]:
    with node.engine.connect() as conn:
        envelopes = conn.execute(select(outbox_table.c.envelope).order_by(outbox_table.c.sequence)).scalars().all()
    return [parse_body(SignedEnvelope.FromString(raw), ReportBody) for raw in envelopes]


def test_a_heartbeat_moves_no_revision_upward_a_register_change_does(tree: Tree) -> None:
    # The revision moving is what makes a node report upward (report_on_change): a child's heartbeat must not, or
    # every street's heartbeat becomes a report at each level up to the province.
    city, street = tree["gd.a"], tree["gd.a.x"]

    def revision_and_stored() -> tuple[int, int]:
        with city.engine.connect() as conn:
            stored = conn.execute(
                select(func.count()).select_from(received_reports).where(received_reports.c.child_id == "gd.a.x")
            ).scalar_one()
            return current_revision(conn), int(stored)

    revision, stored = revision_and_stored()
    heartbeat = tree.sender("gd.a.x").report_now()
    assert heartbeat.acked == 1
    assert [len(body.buckets) for body in sent_bodies(street)[-1:]] == [0]
    assert revision_and_stored() == (revision, stored + 1)  # stored, nothing changed
    retire_item(street, list_items(street)[0].implementation_code, "事项取消", at=street.now() - timedelta(days=1))
    assert tree.sender("gd.a.x").report_now().acked == 1
    assert len(sent_bodies(street)[-1].buckets) == 0  # only the register figures changed
    assert revision_and_stored() == (revision + 1, stored + 2)
