"""One definition per rate (docs/domain.md §6) on SQLite and PostgreSQL: 退件率 = cases returned at least once ÷
received, 受理率 = complaints accepted ÷ received, 办结率 = concluded ÷ accepted — the same figures from ``supnet
stats``, grouped stats, the drill-down summary and ranking of a parent the report rolled up to; and an upgrade from
revision 0007 that rebuilds the buckets with the new counters."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from alembic import command
from sqlalchemy import func, select
from typer.testing import CliRunner

from federation import counters_to_dict
from federation.proto.v1 import drilldown_pb2 as dd
from node.app import Node, open_node
from node.cli import db_cmd, metrics_cmd, stats_cmd
from node.store import REVISION_COUNTER, MetricBucket, alembic_config, counter_value
from node.supervision import (
    accept_complaint,
    check_buckets,
    conclude_complaint,
    decline_complaint,
    derived_rates,
    grouped_stats,
    handle_complaint,
    node_stats,
    rebuild_buckets_if_needed,
)
from tests.harness.rules import UNIT, Record, acceptance, assert_metrics_consistent, items, load, step
from tests.harness.tree import Tree


def complaint(no: str, received_at: str, case_no: str = "") -> Record:
    fields = {"complaint_no": no, "title": "办理拖延", "respondent_unit": UNIT, "received_at": received_at}
    return ("complaint", 0, {**fields, **({"case_no": case_no} if case_no else {})})


# Four cases accepted on Mon 03-03: A returned five times (on three days), B once, C only asked for a supplement,
# D never. Return steps 6 > cases received 4: the old step-based figure would read 150%.
HISTORY: list[Record] = [
    *items(),
    *(acceptance(case_no) for case_no in ("A", "B", "C", "D")),
    step("A", "受理", "退回", "20250304T090000"),
    step("A", "审查", "退回", "20250305T090000"),
    step("A", "复核", "退回", "20250305T100000"),
    step("A", "决定", "退回", "20250306T090000"),
    step("A", "送达", "退回", "20250306T100000"),
    step("B", "审查", "退回", "20250304T110000"),
    step("C", "审查", "补正", "20250304T090000"),
    complaint("TS-1", "20250304T090000", "A"),
    complaint("TS-2", "20250304T100000"),
    complaint("TS-3", "20250305T090000"),
]


def work_complaints(node: Node) -> None:
    """TS-1 accepted and concluded, TS-2 accepted and still open, TS-3 declined."""
    accept_complaint(node, "TS-1", now=datetime(2025, 3, 5, 9))
    handle_complaint(node, "TS-1", "已答复", now=datetime(2025, 3, 6, 9))
    conclude_complaint(node, "TS-1", "substantiated", now=datetime(2025, 3, 7, 9))
    accept_complaint(node, "TS-2", now=datetime(2025, 3, 5, 10))
    decline_complaint(node, "TS-3", "不属于效能投诉受理范围", now=datetime(2025, 3, 6, 10))


EXPECTED_RATES = {"return_rate": 2 / 4, "complaint_acceptance_rate": 2 / 3, "complaint_closure_rate": 1 / 2}


def assert_expected(rates: dict[str, Any]) -> None:
    for name, value in EXPECTED_RATES.items():
        assert rates[name] == pytest.approx(value), name


def run(app: typer.Typer, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    stats_cmd.register(app)
    metrics_cmd.register(app)
    db_cmd.register(app)
    return app


def test_the_same_rates_from_stats_grouped_stats_and_a_parent(tmp_path: Path, db_url: str, app: typer.Typer) -> None:
    tree = Tree(tmp_path / "tree", ["gd", "gd.gz"], db_urls={"gd.gz": db_url}, plaintext=True)
    try:
        child = tree["gd.gz"]
        load(child, HISTORY)
        work_complaints(child)
        assert_metrics_consistent(child)

        # supnet stats (raw tables) and its --json
        stats = node_stats(child)
        assert (stats["counts"]["cases_returned"], stats["counts"]["return_steps"]) == (2, 6)
        assert (stats["counts"]["complaints"], stats["counts"]["complaints_accepted"]) == (3, 2)
        assert_expected(stats["rates"])
        shown = run(app, "stats", "-d", str(child.data_dir), "--json")
        assert_expected(shown["rates"])

        # grouped stats (the buckets): one month, the same rates; return steps counted under their own name
        with child.engine.connect() as conn:
            [march] = grouped_stats(conn, "month")
        assert (march.counters["cases_returned"], march.counters["return_steps"]) == (2, 6)
        assert march.counters["complaints_accepted"] == 2
        assert_expected(march.rates)
        [by_month] = run(app, "stats", "-d", str(child.data_dir), "--by", "month", "--json")["groups"]
        assert_expected(by_month)

        # rolled up to the parent: its summary and rankings derive the same rates from the reported counters
        tree.report_up()
        with tree.client("gd") as client:
            summary = client.ask("gd", summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD)).body.summary
            row = next(r for r in summary.rows if r.key == "gd.gz")
            assert_expected(derived_rates(counters_to_dict(row.counters)))
            assert_expected(derived_rates(counters_to_dict(summary.total)))
            for metric, fraction in (
                (dd.RANKING_METRIC_RETURN_RATE, (2, 4)),
                (dd.RANKING_METRIC_COMPLAINT_ACCEPTANCE_RATE, (2, 3)),
                (dd.RANKING_METRIC_COMPLAINT_CLOSURE_RATE, (1, 2)),
            ):
                ranking = client.ask("gd", ranking=dd.RankingRequest(metric=metric)).body.ranking
                ranked = next(r for r in ranking.rows if r.node_id == "gd.gz")
                assert (ranked.numerator, ranked.denominator) == fraction
                assert ranked.value == pytest.approx(fraction[0] / fraction[1])
    finally:
        tree.close()


def test_an_upgrade_from_0007_rebuilds_the_buckets(tmp_path: Path, db_url: str, app: typer.Typer) -> None:
    tree = Tree(tmp_path / "tree", ["gd.gz"], db_urls={"gd.gz": db_url}, plaintext=True)
    try:
        node = tree["gd.gz"]
        load(node, HISTORY)
        work_complaints(node)
        with node.engine.connect() as conn:
            kept = {
                (row.day, row.department, row.implementation_code): (row.cases_returned, row.complaints_accepted)
                for row in conn.execute(select(MetricBucket))
                if row.cases_returned or row.complaints_accepted
            }
        assert sum(returned for returned, _ in kept.values()) == 2
        assert sum(accepted for _, accepted in kept.values()) == 2
        data_dir = node.data_dir
    finally:
        tree.close()

    # Back to 0007: the buckets lose the new counters (and return_steps is `returned` again) but keep the rest.
    old = open_node(data_dir, migrate_schema=False)
    command.downgrade(alembic_config(old.engine), "0007")
    with old.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT sum(returned) FROM metric_buckets").scalar_one() == 6
    old.close()

    # Opened at head: migration 0008 flags the rebuild; until it runs the new counters are zero and the check says so.
    upgraded = open_node(data_dir)
    try:
        with upgraded.engine.connect() as conn:
            assert counter_value(conn, "metrics_rebuild_needed") == 1
            assert conn.execute(select(func.sum(MetricBucket.cases_returned))).scalar_one() == 0
            revision_before = counter_value(conn, REVISION_COUNTER) or 0
        assert any("cases_returned" in line for line in check_buckets(upgraded))
    finally:
        upgraded.close()

    # `supnet metrics check` only reads: it names `supnet db upgrade`, which runs the rebuild once; then it is clean.
    refused = CliRunner().invoke(app, ["metrics", "check", "-d", str(data_dir), "--json"])
    assert refused.exit_code != 0 and "supnet db upgrade" in refused.output
    upgraded = run(app, "db", "upgrade", "-d", str(data_dir), "--json")
    assert upgraded["upgraded"] is False and upgraded["figures_rebuilt"] is True
    assert run(app, "metrics", "check", "-d", str(data_dir), "--json") == {"consistent": True, "differences": []}
    node = open_node(data_dir)
    try:
        with node.engine.connect() as conn:
            rebuilt = {
                (row.day, row.department, row.implementation_code): (row.cases_returned, row.complaints_accepted)
                for row in conn.execute(select(MetricBucket))
                if row.cases_returned or row.complaints_accepted
            }
            assert counter_value(conn, "metrics_rebuild_needed") == 0
            revision = counter_value(conn, REVISION_COUNTER) or 0
            changed = conn.execute(select(func.count()).where(MetricBucket.revision == revision)).scalar_one()
            # The buckets the downgrade stripped of a counter (0012's records_reported among them).
            stripped = conn.execute(
                select(func.count()).where(
                    (MetricBucket.cases_returned + MetricBucket.complaints_accepted + MetricBucket.records_reported) > 0
                )
            ).scalar_one()
        assert rebuilt == kept
        # One new revision, stamped on the rebuilt buckets: the next incremental report carries them upward.
        assert revision == revision_before + 1 and changed == stripped
        assert rebuild_buckets_if_needed(node) is False  # done once
        assert_expected(node_stats(node)["rates"])
    finally:
        node.close()
