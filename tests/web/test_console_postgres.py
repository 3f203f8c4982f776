"""The console over PostgreSQL: a province and a city whose data live in PostgreSQL (a street below on SQLite),
every page served from them, an alert acknowledged and audited, a login locked out — what the SQLite tree of
test_console_http shows, on the other back end."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import select

from node.audit_log import AuditFilter, AuditLog
from node.store import Alert
from tests.harness.postgres import fresh_schema_url
from tests.harness.tree import DRILLDOWN_FROM, DRILLDOWN_TO, Tree, TreeClock
from tests.web.conftest import ConsoleTree, prepare_tree, start_console

pytestmark = pytest.mark.postgres
CASES = {"gd": 40, "gd.gz": 60, "gd.gz.py": 120}


@pytest.fixture(scope="module")
def pg_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleTree]:
    base: Path = tmp_path_factory.mktemp("console-pg")
    with ExitStack() as stack:
        urls = {node_id: stack.enter_context(fresh_schema_url()) for node_id in ("gd", "gd.gz")}
        tree = Tree(base, list(CASES), clock=TreeClock.real(), timing={}, db_urls=urls, serve_leaves=True)
        stack.callback(tree.close)
        for node_id, cases in CASES.items():
            tree.import_synthetic(node_id, cases, 5, date_from=DRILLDOWN_FROM, date_to=DRILLDOWN_TO)
        prepare_tree(tree)
        console = start_console(tree, "gd")
        stack.callback(console.stop)
        yield ConsoleTree(tree, console)


@pytest.mark.parametrize(
    "path",
    [
        "/overview",
        "/nodes/gd?sort=score",
        "/nodes/gd.gz",
        "/nodes/gd.gz.py/cases?filter=all",
        "/alerts",
        "/complaints",
        "/evaluations",
        "/scores?period=2026",
        "/items",
        "/health",
    ],
)
def test_pages_from_postgresql(pg_console: ConsoleTree, path: str) -> None:
    assert pg_console.tree["gd"].engine.dialect.name == "postgresql"
    browser = pg_console.session()
    browser.login("li")
    reply = browser.get(path)
    assert reply.status == 200, reply.body[-1500:]
    assert "总览" in reply.body


def test_figures_and_actions_on_postgresql(pg_console: ConsoleTree) -> None:
    browser = pg_console.session()
    browser.login("li")
    body = browser.get("/nodes/gd?sort=received").body
    with pg_console.tree.client("gd") as client:
        from federation.proto.v1 import drilldown_pb2 as dd

        summary = client.ask("gd", summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD)).body.summary
    city = next(row for row in summary.rows if row.key == "gd.gz")
    assert city.counters.received == sum(CASES[node] for node in ("gd.gz", "gd.gz.py"))
    assert re.search(
        rf'data-node="gd.gz".*?data-key="received">(?:<[^>]+></span>)?{city.counters.received}<', body, re.S
    )
    engine = pg_console.tree["gd"].engine
    with engine.connect() as conn:
        alert_id = conn.execute(select(Alert.id).where(Alert.status == "raised").order_by(Alert.id)).scalars().first()
    assert alert_id is not None
    supervisor = pg_console.session()
    supervisor.login("zhang")
    reply = supervisor.post(f"/alerts/{alert_id}/ack", {"csrf_token": supervisor.csrf("/alerts")})
    assert reply.status == 303
    with engine.connect() as conn:
        assert conn.execute(select(Alert.status, Alert.acknowledged_by).where(Alert.id == alert_id)).one() == (
            "acknowledged",
            "zhang",
        )
    [entry] = AuditLog(engine).entries(AuditFilter(action="alert.acknowledged", target=f"alert:{alert_id}"))
    assert entry.actor == "web:zhang@gd"
    assert AuditLog(engine).verify().ok
