"""The console over PostgreSQL: a province and a city whose data live in PostgreSQL (a street below on SQLite),
every page served from them, an alert acknowledged and audited, a directive issued at the province's console and
answered at the city's (both on PostgreSQL), the bulletin served — what the SQLite tree of test_console_http
shows, on the other back end."""

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
from tests.web.conftest import (
    ConsoleTree,
    HttpSession,
    add_accounts,
    console_directive_tree,
    prepare_tree,
    start_console,
    wait_for_status,
)

pytestmark = pytest.mark.postgres
CASES = {"gd": 40, "gd.gz": 60, "gd.gz.py": 120}


@pytest.fixture(scope="module")
def pg_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleTree]:
    base: Path = tmp_path_factory.mktemp("console-pg")
    with ExitStack() as stack:
        urls = {node_id: stack.enter_context(fresh_schema_url()) for node_id in ("gd", "gd.gz")}
        tree = console_directive_tree(base, CASES, db_urls=urls)
        stack.callback(tree.close)
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
        "/directives",
        "/directives?box=outbox",
        "/report?period=2026-Q1",
        "/report/file?period=2026-Q1&level=subtree&format=html",
    ],
)
def test_pages_from_postgresql(pg_console: ConsoleTree, path: str) -> None:
    assert pg_console.tree["gd"].engine.dialect.name == "postgresql"
    browser = pg_console.session()
    browser.login("li")
    reply = browser.get(path)
    assert reply.status == 200, reply.body[-1500:]
    assert ("总览" if "/file" not in path else "电子监察通报") in reply.body


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


def test_a_directive_between_two_postgresql_consoles(pg_console: ConsoleTree) -> None:
    tree = pg_console.tree
    assert tree["gd.gz"].engine.dialect.name == "postgresql"
    add_accounts(tree, "gd.gz")
    city_console = start_console(tree, "gd.gz")
    try:
        province = pg_console.session()
        province.login("zhang")
        form = {"kind": "warning", "target": "gd.gz", "department": "窗口", "text": "请整改窗口作风。", "within": "5"}
        reply = province.post("/directives/issue", {**form, "csrf_token": province.csrf("/directives/new")})
        assert reply.status == 303, reply.body[-800:]
        directive_id = reply.location.removeprefix("/directives/").split("?")[0]
        wait_for_status(tree, "gd.gz", directive_id, "delivered")
        city = HttpSession(city_console.url)
        city.login("zhang")
        assert f'data-directive="{directive_id}"' in city.get("/directives?box=inbox&open=1").body
        token = city.csrf(f"/directives/{directive_id}")
        assert city.post(f"/directives/{directive_id}/ack", {"csrf_token": token}).status == 303
        reply = city.post(f"/directives/{directive_id}/respond", {"csrf_token": token, "text": "已约谈窗口负责人。"})
        assert reply.status == 303
        wait_for_status(tree, "gd", directive_id, "responded")
        assert "已约谈窗口负责人。" in province.get("/directives?box=outbox").body
        for node_id, action in (("gd", "directive.issued"), ("gd.gz", "directive.responded")):
            [entry] = AuditLog(tree[node_id].engine).entries(
                AuditFilter(action=action, target=f"directive:{directive_id}")
            )
            assert entry.actor == f"web:zhang@{node_id}"
            assert AuditLog(tree[node_id].engine).verify().ok
    finally:
        city_console.stop()
