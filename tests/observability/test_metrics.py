"""``/metrics`` of a real node after real traffic: every figure checked against what happened and what its tables hold.

A tree gd ← gd.gz ← gd.gz.py (mutual TLS): the street reports up, re-delivers a report and sends a tampered one;
the province and gd.gz's own operator drill down (one query refused further down); a business system streams
records into gd.gz (one rejected); gd.gz scans, dispatches notifications and counts a directive; then the
province goes away and gd.gz's next report waits in its outbox. gd.gz's metrics are scraped over HTTP and read
with prometheus_client's own parser; the Grafana dashboard may only chart names that scrape holds.
"""

from __future__ import annotations

import json
import re
import sqlite3
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from federation import error_code_of
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.ingest_pb2 import IngestOutcome, IngestRecord
from federation.proto.v1.ingest_pb2_grpc import IngestServiceStub
from node.config import save_config
from node.errors import SupnetError
from node.notify import NotificationDispatcher
from node.observability import MetricsServer
from node.reporting import node_outbox
from node.supervision import record_activity, run_scan
from tests.harness.ingest_records import ITEM, acceptance
from tests.harness.pki import ingest_client
from tests.harness.reports import inflated_after_signing
from tests.harness.tree import Tree

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "config" / "grafana" / "supnet.json"
MIDDLE = "gd.gz"
STREET = "gd.gz.py"
SKIPPED_SECONDS = 120.0


@dataclass
class Happened:
    """What the traffic did, as the clients saw it."""

    refused_report_code: str = ""
    refused_query_code: str = ""
    rejected_reason: str = ""
    ingest_outcomes: list[int] = field(default_factory=list)


@dataclass
class Scrape:
    tree: Tree
    text: str
    happened: Happened

    def samples(self) -> list[Sample]:
        return [sample for family in text_string_to_metric_families(self.text) for sample in family.samples]

    def value(self, name: str, **labels: str) -> float:
        matching = [s.value for s in self.samples() if s.name == name and s.labels == labels]
        assert len(matching) == 1, f"{name}{labels}: {len(matching)} samples"
        return matching[0]

    def labelled(self, name: str, *keys: str) -> dict[tuple[str, ...], float]:
        """Samples of ``name`` by the values of the labels ``keys``, in that order."""
        samples = [s for s in self.samples() if s.name == name]
        assert all(set(s.labels) == set(keys) for s in samples), name
        return {tuple(s.labels[key] for key in keys): s.value for s in samples}


def _traffic(tree: Tree) -> Happened:
    happened = Happened()
    middle = tree.nodes[MIDDLE]
    config = middle.node.config
    # A webhook nobody answers: its notifications fail after one attempt (the log channel's are delivered).
    config.notifications.channels = ["log", "webhook"]
    config.notifications.webhook_url = "http://127.0.0.1:9/hook"
    config.notifications.max_attempts = 1
    config.notifications.timeout_seconds = 0.5
    save_config(middle.data_dir, config)
    tree.import_synthetic(STREET, cases=30, seed=1)
    tree.import_synthetic(MIDDLE, cases=20, seed=2, date_to=date(2025, 3, 14))
    tree.report_up()

    # The street's first report again (a re-delivery), then a copy tampered with after signing.
    with tree[STREET].engine.connect() as conn:
        [first] = node_outbox(tree[STREET]).entries(conn)
    envelope = SignedEnvelope.FromString(first.envelope)
    stub, channel = tree.stub(MIDDLE, STREET)
    with channel:
        assert stub.SubmitReport(envelope, timeout=5).stored is False
        with pytest.raises(grpc.RpcError) as refused:
            stub.SubmitReport(inflated_after_signing(envelope), timeout=5)
    happened.refused_report_code = error_code_of(refused.value)

    # Drill-downs: two summaries from the province, one alerts query of gd.gz's own operator, one cases query
    # for the street, which does not serve: refused at gd.gz.
    with tree.client("gd") as client:
        for _ in range(2):
            client.ask(MIDDLE, summary=dd.SummaryRequest())
    with tree.client(MIDDLE) as client:
        client.ask(MIDDLE, alerts=dd.AlertsRequest())
        with pytest.raises(SupnetError) as unreachable:
            client.ask(STREET, cases=dd.CasesRequest())
    happened.refused_query_code = unreachable.value.code

    # A business system: an item, an acceptance, and an acceptance on a day that does not exist.
    records = [
        IngestRecord(seq=1, kind="item", fields=ITEM),
        IngestRecord(seq=2, kind="acceptance", fields=acceptance(1, accepted_at="20250310T093000")),
        IngestRecord(seq=3, kind="acceptance", fields=acceptance(2, accepted_at="2025-02-30 09:00")),
    ]
    with ingest_client(middle.data_dir, MIDDLE, middle.address) as ingest:
        results = list(IngestServiceStub(ingest).Ingest(iter(records), timeout=10))
    happened.ingest_outcomes = [result.outcome for result in results]
    happened.rejected_reason = results[2].reason.lower()

    run_scan(tree[MIDDLE])
    NotificationDispatcher(tree[MIDDLE]).run_once()
    with tree[MIDDLE].engine.begin() as conn:
        record_activity(conn, date(2025, 3, 24), "directives_received", "supervise", 2)

    # The province goes away: gd.gz's next report waits, and time passes.
    tree.stop_server("gd")
    tree.import_synthetic(MIDDLE, cases=5, seed=3, date_from=date(2025, 3, 17))
    assert tree.sender(MIDDLE).report_now().failed
    tree.clock.advance(SKIPPED_SECONDS)
    return happened


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    tree = Tree(tmp_path_factory.mktemp("metrics"), ["gd", MIDDLE, STREET])
    try:
        happened = _traffic(tree)
        server = tree.nodes[MIDDLE].server
        assert server is not None
        endpoint = MetricsServer(server.metrics.registry, "127.0.0.1:0", node_id=MIDDLE)
        endpoint.start()
        try:
            with urllib.request.urlopen(f"http://{endpoint.bound_address}/metrics", timeout=10) as reply:
                assert reply.status == 200
                assert reply.headers["Content-Type"].startswith("text/plain")
                text = reply.read().decode()
        finally:
            endpoint.stop()
        yield Scrape(tree, text, happened)
    finally:
        tree.close()


def _db(scrape: Scrape) -> sqlite3.Connection:
    return scrape.tree.nodes[MIDDLE].db()


def _epoch(text: str) -> float:
    """A naive node-local time as SQLite stores it, as Unix seconds (the nodes' default zone)."""
    from datetime import datetime

    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()


def test_reports_received_and_refused(scrape: Scrape) -> None:
    assert scrape.value("supnet_reports_received_total", outcome="stored") == 1
    assert scrape.value("supnet_reports_received_total", outcome="duplicate") == 1
    assert scrape.happened.refused_report_code
    refused = scrape.labelled("supnet_reports_refused_total", "reason")
    assert refused == {(scrape.happened.refused_report_code,): 1.0}


def test_drilldowns_served_and_refused_with_latencies(scrape: Scrape) -> None:
    assert scrape.value("supnet_drilldowns_served_total", kind="summary", route="answered") == 2
    assert scrape.value("supnet_drilldowns_served_total", kind="alerts", route="answered") == 1
    assert scrape.value("supnet_drilldowns_served_total", kind="cases", route="answered") == 0
    code = scrape.happened.refused_query_code
    assert scrape.labelled("supnet_drilldowns_refused_total", "kind", "code") == {("cases", code): 1.0}
    assert scrape.value("supnet_drilldown_duration_seconds_count", kind="summary", outcome="served") == 2
    assert scrape.value("supnet_drilldown_duration_seconds_count", kind="cases", outcome="refused") == 1
    assert 0 < scrape.value("supnet_drilldown_duration_seconds_sum", kind="summary", outcome="served") < 10
    assert scrape.value("supnet_drilldown_duration_seconds_bucket", kind="summary", outcome="served", le="+Inf") == 2


def test_records_ingested_and_rejected(scrape: Scrape) -> None:
    accepted, rejected = IngestOutcome.INGEST_OUTCOME_ACCEPTED, IngestOutcome.INGEST_OUTCOME_REJECTED
    assert scrape.happened.ingest_outcomes == [accepted, accepted, rejected]
    assert scrape.value("supnet_ingest_records_total", kind="item", outcome="accepted") == 1
    assert scrape.value("supnet_ingest_records_total", kind="acceptance", outcome="accepted") == 1
    assert scrape.value("supnet_ingest_records_total", kind="acceptance", outcome="rejected") == 1
    assert scrape.labelled("supnet_ingest_rejected_records_total", "kind", "reason") == {
        ("acceptance", scrape.happened.rejected_reason): 1.0
    }


def test_outbox_and_last_reports_match_the_outbox_table(scrape: Scrape) -> None:
    with _db(scrape) as conn:
        pending, oldest, attempts = conn.execute(
            "SELECT count(*), min(created_at), sum(attempts) FROM federation_outbox WHERE status = 'pending'"
        ).fetchone()
        sequence, built, acked = conn.execute(
            "SELECT max(sequence), max(created_at), max(acked_at) FROM federation_outbox"
        ).fetchone()
    assert pending == 1 and attempts >= 1
    assert scrape.value("supnet_report_outbox_pending") == 1
    assert scrape.value("supnet_report_outbox_limit") == 1000
    assert scrape.value("supnet_report_outbox_failed_attempts") == attempts
    # Its age on the node's clock: at least the time skipped since it was built.
    assert SKIPPED_SECONDS <= scrape.value("supnet_report_outbox_oldest_pending_age_seconds") < SKIPPED_SECONDS + 120
    assert scrape.value("supnet_report_last_sequence") == sequence == 2
    assert scrape.value("supnet_report_last_built_timestamp_seconds") == pytest.approx(_epoch(built))
    assert scrape.value("supnet_report_last_acknowledged_timestamp_seconds") == pytest.approx(_epoch(acked))
    assert _epoch(oldest) == _epoch(built)
    assert scrape.value("supnet_report_outbox_overflows_total") == 0


def test_child_staleness(scrape: Scrape) -> None:
    age = scrape.value("supnet_child_last_report_age_seconds", child=STREET)
    assert SKIPPED_SECONDS <= age < SKIPPED_SECONDS + 120
    assert scrape.value("supnet_child_last_report_sequence", child=STREET) == 1
    assert scrape.value("supnet_child_stale_after_seconds") == 180  # 3 intervals of 60 s (the tree's timing)
    assert scrape.labelled("supnet_child_state", "child", "state") == {
        (STREET, "fresh"): 1.0,
        (STREET, "stale"): 0.0,
        (STREET, "missing"): 0.0,
    }


def test_alerts_notifications_and_activity_match_the_tables(scrape: Scrape) -> None:
    with _db(scrape) as conn:
        alerts = {
            (rule, severity): float(count)
            for rule, severity, count in conn.execute(
                "SELECT rule_id, severity, count(*) FROM alerts GROUP BY rule_id, severity"
            )
        }
        still_open = {
            (rule, severity): float(count)
            for rule, severity, count in conn.execute(
                "SELECT rule_id, severity, sum(status IN ('raised', 'notified', 'acknowledged')) FROM alerts "
                "GROUP BY rule_id, severity"
            )
        }
        notifications = dict(conn.execute("SELECT status, count(*) FROM notifications GROUP BY status").fetchall())
    assert sum(alerts.values()) > 0
    assert scrape.labelled("supnet_alerts_raised_total", "rule", "severity") == alerts
    assert scrape.labelled("supnet_alerts_open", "rule", "severity") == still_open
    assert notifications.get("failed", 0) > 0 and notifications.get("delivered", 0) > 0
    assert scrape.labelled("supnet_notifications", "status") == {
        (status,): float(notifications.get(status, 0)) for status in ("pending", "delivered", "failed")
    }
    assert scrape.value("supnet_supervision_activity", metric="directives_received", kind="supervise") == 2


def test_node_health_and_build(scrape: Scrape) -> None:
    from node.observability import software_version

    assert scrape.value("supnet_database_up") == 1
    assert scrape.value("supnet_build_info", version=software_version(), node=MIDDLE) == 1
    assert scrape.value("supnet_health_serving", service="overall") == 1
    assert scrape.value("supnet_health_serving", service="supnet.reports") == 1  # 1 of 1000: room left
    with _db(scrape) as conn:
        revision = conn.execute("SELECT value FROM node_counters WHERE name = 'metric_revision'").fetchone()
    assert revision is not None and scrape.value("supnet_metric_revision") == revision[0]


def _expressions(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "expr" and isinstance(item, str):
                yield item
            else:
                yield from _expressions(item)
    elif isinstance(value, list):
        for item in value:
            yield from _expressions(item)


def test_the_grafana_dashboard_charts_only_names_a_real_scrape_holds(scrape: Scrape) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    expressions = list(_expressions(dashboard))
    assert len(expressions) >= 10
    used = {name for expr in expressions for name in re.findall(r"\bsupnet_[a-z0-9_]+", expr)}
    scraped = {sample.name for sample in scrape.samples()}
    assert used, "the dashboard charts no supnet metric"
    assert used <= scraped, f"charted but never scraped: {sorted(used - scraped)}"
    # Every family the node exposes has a panel, so nothing is measured that nobody looks at.
    families = {family.name for family in text_string_to_metric_families(scrape.text)}
    charted = {family for family in families if any(name.startswith(family) for name in used)}
    assert families - charted == set(), f"no panel for {sorted(families - charted)}"
