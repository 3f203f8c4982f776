"""A middle node's stored child figures are provably its children's signed reports (issue 16 point 1).

A real tree over mutual TLS (``gd`` ← ``gd.a`` ← ``gd.a.x``), the middle node on SQLite and on PostgreSQL: an edit at
rest of ``child_buckets`` older than the full-report window (so no report ever carries it), with its month roll-up
rewritten to match, is served upward by the drill-down, but ``supnet metrics check`` at the city and ``supnet verify``
at the province now find and name it. An edit of the day buckets alone is named by the roll-up check as well.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from federation import received_reports
from node.cli import metrics_cmd
from node.drilldown import verify_target
from node.errors import ExitCode
from node.reporting import child_figures_differences, refresh_child_months
from node.store import ChildBucket, ChildCatalogue
from tests.harness.tree import Tree

IDS = ["gd", "gd.a", "gd.a.x"]


@pytest.fixture
def tree(tmp_path: Path, db_url: str) -> Iterator[Tree]:
    built = Tree(tmp_path / "tree", IDS, db_urls={"gd.a": db_url}, serve_leaves=True)
    try:
        built.import_synthetic("gd.a.x", cases=40, seed=3)
        built.import_synthetic("gd.a", cases=10, seed=4)
        built.report_up()
        built.report_up("full")
        yield built
    finally:
        built.close()


def inflate_oldest_bucket(tree: Tree, by: int = 500) -> str:
    """At the city, add ``by`` to the street's oldest received bucket (no report will ever carry it); its day."""
    city = tree["gd.a"]
    with city.engine.begin() as conn:
        oldest = conn.execute(
            select(func.min(ChildBucket.day)).where(ChildBucket.child_id == "gd.a.x", ChildBucket.received > 0)
        ).scalar_one()
        conn.execute(
            update(ChildBucket)
            .where(ChildBucket.child_id == "gd.a.x", ChildBucket.day == oldest)
            .values(received=ChildBucket.received + by)
        )
        # The served month figures follow, as if the roll-up had been rewritten from the edited day buckets.
        refresh_child_months(conn, "gd.a.x", [oldest.replace(day=1)])
    return str(oldest)


def metrics_check(tree: Tree, node_id: str) -> tuple[int, dict[str, object]]:
    app = typer.Typer()
    metrics_cmd.register(app)
    result = CliRunner().invoke(app, ["metrics", "check", "-d", str(tree[node_id].data_dir), "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_honest_child_figures_replay_exactly(tree: Tree) -> None:
    check = child_figures_differences(tree["gd.a"])
    assert check.consistent, check.differences
    assert check.children == 1 and check.reports >= 2
    assert metrics_check(tree, "gd.a") == (0, {"consistent": True, "differences": []})
    assert verify_target(tree["gd"], "gd", tree.nodes["gd"].address).ok


def test_an_edit_at_rest_is_named_by_metrics_check_and_verify(tree: Tree) -> None:
    day = inflate_oldest_bucket(tree)
    check = child_figures_differences(tree["gd.a"])
    assert not check.consistent
    assert any(
        f"child gd.a.x bucket {day}" in line and "received stored" in line and "its signed reports say" in line
        for line in check.differences
    ), check.differences
    code, answer = metrics_check(tree, "gd.a")
    assert code == ExitCode.VERIFICATION_FAILED and answer["consistent"] is False
    # The province asks the city what it serves for the street and compares with the street's signed reports.
    result = verify_target(tree["gd"], "gd", tree.nodes["gd"].address)
    failed = [f for f in result.findings if not f.ok and not f.warning]
    assert not result.ok
    assert any(f.node_id == "gd.a" and f.check == "served" and "gd.a.x received" in f.detail for f in failed), failed


def test_an_edit_of_the_provinces_own_child_figures_is_named_too(tree: Tree) -> None:
    with tree["gd"].engine.begin() as conn:
        conn.execute(
            update(ChildBucket).where(ChildBucket.child_id == "gd.a").values(red_cards=ChildBucket.red_cards + 1)
        )
        months = conn.execute(select(ChildBucket.day).where(ChildBucket.child_id == "gd.a")).scalars()
        refresh_child_months(conn, "gd.a", {day.replace(day=1) for day in months})
    result = verify_target(tree["gd"], "gd", tree.nodes["gd"].address)
    failed = [f for f in result.findings if not f.ok and not f.warning]
    assert any(f.node_id == "gd" and f.check == "served" and "gd.a red_cards" in f.detail for f in failed), failed
    assert not child_figures_differences(tree["gd"]).consistent


def test_an_edit_of_the_day_buckets_alone_is_named_by_the_rollup_check(tree: Tree) -> None:
    city = tree["gd.a"]
    with city.engine.begin() as conn:
        newest = conn.execute(select(func.max(ChildBucket.day)).where(ChildBucket.child_id == "gd.a.x")).scalar_one()
        conn.execute(
            update(ChildBucket)
            .where(ChildBucket.child_id == "gd.a.x", ChildBucket.day == newest)
            .values(yellow_cards=ChildBucket.yellow_cards + 2)
        )
    differences = child_figures_differences(city).differences
    assert any(
        f"child gd.a.x month {newest.isoformat()[:7]}" in line and "yellow_cards month roll-up" in line
        for line in differences
    ), differences


def test_edited_registers_and_rewritten_envelopes_are_named(tree: Tree) -> None:
    city = tree["gd.a"]
    with city.engine.begin() as conn:
        conn.execute(update(ChildCatalogue).values(figures=b"\x08\x63"))  # items = 99
    assert any("item registers" in line for line in child_figures_differences(city).differences)
    with city.engine.begin() as conn:
        first = conn.execute(select(func.min(received_reports.c.sequence))).scalar_one()
        raw = conn.execute(select(received_reports.c.envelope).where(received_reports.c.sequence == first)).scalar_one()
        conn.execute(
            update(received_reports)
            .where(received_reports.c.sequence == first)
            .values(envelope=bytes(raw).replace(b"gd.a.x", b"gd.a.y", 1))
        )
    differences = child_figures_differences(city).differences
    assert any(f"report #{first}" in line for line in differences), differences
