"""The register figures a report carries are reused between reports (node.reporting.catalogues) but never stale: a
real tree (province ← city ← street, the city on SQLite and on PostgreSQL), and after each change to the city's own
register (a new item, a new version, an explanation, a retirement), to its child's figures, or of the month, the
city's next report carries the figures computed afresh from its tables."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from federation import outbox_table, parse_body
from federation.proto.v1.common_pb2 import CatalogueFigures as CatalogueMessage
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import ReportBody
from node.app import Node
from node.reporting import build_reports, catalogue_message, children_catalogues
from node.store import CATALOGUE_COUNTER, catalogue_revision, set_counter
from node.supervision import catalogue_figures, explain_item, list_items, retire_item
from tests.harness.rules import ITEM, load
from tests.harness.tree import Tree

IDS = ["gd", "gd.a", "gd.a.x"]


@pytest.fixture
def tree(tmp_path: Path, db_url: str) -> Iterator[Tree]:
    built = Tree(tmp_path / "tree", IDS, db_urls={"gd.a": db_url})
    try:
        built.import_synthetic("gd.a", cases=20, seed=5)
        built.import_synthetic("gd.a.x", cases=20, seed=6)
        built.report_up()
        yield built
    finally:
        built.close()


def afresh(node: Node) -> CatalogueMessage:
    """The subtree's figures computed from the node's tables now: own register + each child's latest."""
    with node.engine.connect() as conn:
        total = catalogue_figures(conn, node.now())
        for figures in children_catalogues(conn).values():
            total.add(figures)
    return catalogue_message(total)


def next_report(node: Node) -> CatalogueMessage:
    """Build the node's next report and return the figures it carries."""
    assert build_reports(node)
    with node.engine.connect() as conn:
        raw = conn.execute(select(outbox_table.c.envelope).order_by(outbox_table.c.sequence.desc()).limit(1)).one()
    return parse_body(SignedEnvelope.FromString(raw[0]), ReportBody).catalogue


def assert_carries_the_change(node: Node, before: CatalogueMessage) -> CatalogueMessage:
    carried = next_report(node)
    assert carried == afresh(node)
    assert carried != before  # the change shows: the figures were not those kept from before it
    return carried


def test_every_change_to_the_register_shows_in_the_next_report(tree: Tree) -> None:
    city, street = tree["gd.a"], tree["gd.a.x"]
    carried = next_report(city)
    assert carried == afresh(city) and carried.items > 0
    assert next_report(city) == carried  # nothing changed: the same figures (reused)

    # A new item, then a new version of it that needs an explanation (R14), then the explanation: the ingest path
    # and explain_item.
    code = "440112999"
    load(city, [("item", 0, {**ITEM, "implementation_code": code, "promised_limit": "5", "legal_limit": "20"})])
    carried = assert_carries_the_change(city, carried)
    load(city, [("item", 0, {**ITEM, "implementation_code": code, "promised_limit": "15", "legal_limit": "20"})])
    carried = assert_carries_the_change(city, carried)
    assert carried.items_flagged >= 1
    explain_item(city, code, "窗口人手不足")
    carried = assert_carries_the_change(city, carried)

    # A retirement of the city's own, then one at the street, which reaches the city in the street's report.
    retire_item(city, code, "事项取消", at=city.now() - timedelta(days=1))
    carried = assert_carries_the_change(city, carried)
    retire_item(street, list_items(street)[0].implementation_code, "事项取消", at=street.now() - timedelta(days=1))
    assert tree.sender("gd.a.x").report_now().acked == 1
    carried = assert_carries_the_change(city, carried)

    # A retirement taking effect next month is counted by month only once that month has come: the month is part
    # of what the reused figures are kept under.
    now = city.now()
    next_month = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, 9, 0)
    retire_item(city, list_items(city, status="in_force")[0].implementation_code, "事项取消", at=next_month)
    carried = assert_carries_the_change(city, carried)
    assert f"{next_month:%Y-%m}" not in {entry.month for entry in carried.retired_by_month}
    revision = _revision(city)
    tree.clock.advance((next_month - now).total_seconds() + 3600)
    carried = assert_carries_the_change(city, carried)
    assert {entry.month: entry.count for entry in carried.retired_by_month}[f"{next_month:%Y-%m}"] == 1
    assert _revision(city) == revision  # only the month moved


def test_nodes_in_one_process_keep_their_own_figures(tree: Tree) -> None:
    # Every node of the tree runs in this process: the street's figures must not stand in for the city's.
    city, street = tree["gd.a"], tree["gd.a.x"]
    for node in (street, city):  # the same catalogue revision at both (as hosted nodes may well have)
        with node.engine.begin() as conn:
            set_counter(conn, CATALOGUE_COUNTER, 1000)
    for node in (street, city, street, city):
        assert next_report(node) == afresh(node)
    assert afresh(city) != afresh(street)


def _revision(node: Node) -> int:
    with node.engine.connect() as conn:
        return catalogue_revision(conn)
