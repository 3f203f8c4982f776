"""The province's console on a running tree, over real HTTP: login and sessions, every page in Chinese (English on
request), figures equal to the signed drill-down answers, actions by role, CSRF, audit entries naming the person.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from federation.proto.v1 import drilldown_pb2 as dd
from tests.web.conftest import PASSWORD, ConsoleTree, HttpSession

PAGES = (
    "/overview",
    "/overview?period=custom&from=2026-02-01&to=2026-02-28",
    "/nodes/gd",
    "/nodes/gd?sort=score&dir=asc",
    "/nodes/gd.gz",
    "/nodes/gd.gz/rows",
    "/nodes/gd.gz.py.sq/cases?filter=all",
    "/alerts",
    "/alerts?severity=red&show=all",
    "/complaints",
    "/evaluations",
    "/scores?period=2026",
    "/items",
    "/directives",
    "/health",
)


def _open_alert(console_tree: ConsoleTree, status: str = "raised") -> int:
    with sqlite3.connect(console_tree.tree.nodes["gd"].data_dir / "node.db") as conn:
        row = conn.execute("SELECT id FROM alerts WHERE status = ? ORDER BY id LIMIT 1", (status,)).fetchone()
    assert row, f"the province has no {status} alert"
    return int(row[0])


def _alert(console_tree: ConsoleTree, alert_id: int) -> tuple[str, str]:
    with sqlite3.connect(console_tree.tree.nodes["gd"].data_dir / "node.db") as conn:
        status, by = conn.execute("SELECT status, acknowledged_by FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    return str(status), str(by)


def _audit(console_tree: ConsoleTree, action: str) -> list[tuple[str, str, str]]:
    with sqlite3.connect(console_tree.tree.nodes["gd"].data_dir / "node.db") as conn:
        rows = conn.execute(
            "SELECT actor, target, result FROM audit_log WHERE action = ? ORDER BY seq", (action,)
        ).fetchall()
    return [(str(a), str(t), str(r)) for a, t, r in rows]


def test_pages_need_a_login(console_tree: ConsoleTree) -> None:
    reply = console_tree.session().get("/nodes/gd?sort=score")
    assert reply.status == 303
    assert reply.location == "/login?next=%2Fnodes%2Fgd%3Fsort%3Dscore"


def test_login_cookie_is_http_only_and_same_site(console_tree: ConsoleTree) -> None:
    browser = console_tree.session()
    reply = browser.login("li")
    assert reply.status == 303 and reply.location == "/overview"
    cookie_header = reply.headers["set-cookie"]
    assert "supnet_session_gd=" in cookie_header
    assert "HttpOnly" in cookie_header and "SameSite=lax" in cookie_header
    cookie = browser.cookie("supnet_session_")
    assert cookie is not None and len(cookie.value) >= 40


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_in_chinese_and_english(console_tree: ConsoleTree, path: str) -> None:
    browser = console_tree.session()
    browser.login("li")
    reply = browser.get(path)
    assert reply.status == 200, reply.body[-2000:]
    assert "default-src 'self'" in reply.headers["content-security-policy"]
    for option in re.findall(r'<script type="application/json" id="[^"]+">(.*?)</script>', reply.body, re.S):
        assert isinstance(json.loads(option), dict)  # each chart's ECharts option
    if not path.endswith("/rows"):
        assert '<html lang="zh-CN">' in reply.body
        assert "总览" in reply.body and "退出" in reply.body
        joiner = "&" if "?" in path else "?"
        english = browser.get(path + joiner + "lang=en")
        assert '<html lang="en">' in english.body and "Overview" in english.body
        assert browser.get(path).body.count('<html lang="en">') == 1  # the choice is kept in a cookie
        browser.get(path + joiner + "lang=zh")


def test_subordinates_show_the_signed_figures(console_tree: ConsoleTree) -> None:
    browser = console_tree.session()
    browser.login("li")
    body = browser.get("/nodes/gd?sort=received&dir=desc").body
    with console_tree.tree.client("gd") as client:
        summary = client.ask("gd", summary=dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD)).body.summary
    rows = {row.key: row.counters.received for row in summary.rows}
    assert set(rows) == {"gd", "gd.gz", "gd.sz"}
    for node_id, received in rows.items():
        match = re.search(
            rf'data-node="{re.escape(node_id)}".*?data-key="received">(?:<[^>]+></span>)?([\d,]+)<', body, re.S
        )
        assert match, node_id
        assert int(match.group(1).replace(",", "")) == received
    # sorted by received, descending: the city with more cases first (the province's own row stays on top)
    order = re.findall(r'<tr class="child depth-0" data-node="([^"]+)"', body)
    assert order == sorted(order, key=lambda node_id: -rows[node_id])
    assert "已在本节点核验" in body


def test_case_timeline_masks_personal_data(console_tree: ConsoleTree) -> None:
    street = console_tree.tree.nodes["gd.gz.py.sq"]
    with sqlite3.connect(street.data_dir / "node.db") as conn:
        case_no, applicant, id_number = conn.execute(
            "SELECT case_no, applicant_name, applicant_id_no FROM cases WHERE length(applicant_name) > 1 LIMIT 1"
        ).fetchone()
    browser = console_tree.session()
    browser.login("li")
    body = browser.get(f"/nodes/gd.gz.py.sq/cases/{case_no}").body
    assert case_no in body and "办理过程" in body and "受理" in body
    assert applicant not in body
    if id_number:
        assert id_number not in body
    assert applicant[0] + "*" in body


def test_a_viewer_cannot_act(console_tree: ConsoleTree) -> None:
    alert_id = _open_alert(console_tree)
    browser = console_tree.session()
    browser.login("li")
    assert 'class="ack"' not in browser.get("/alerts").body  # no buttons for a viewer
    token = browser.csrf("/alerts")
    reply = browser.post(f"/alerts/{alert_id}/ack", {"csrf_token": token})
    assert reply.status == 403 and "无权" in reply.body
    assert _alert(console_tree, alert_id)[0] == "raised"
    assert ("web:li@gd", f"/alerts/{alert_id}/ack", "refused") in _audit(console_tree, "web.refused")


def test_a_post_without_the_csrf_token_is_refused(console_tree: ConsoleTree) -> None:
    alert_id = _open_alert(console_tree)
    browser = console_tree.session()
    browser.login("zhang")
    for form in ({}, {"csrf_token": "forged"}):
        reply = browser.post(f"/alerts/{alert_id}/ack", form)
        assert reply.status == 403 and "CSRF" in reply.body
    assert _alert(console_tree, alert_id)[0] == "raised"
    assert ("web:zhang@gd", f"/alerts/{alert_id}/ack", "refused") in _audit(console_tree, "web.refused")


def test_a_supervisor_acknowledges_and_corrects(console_tree: ConsoleTree) -> None:
    alert_id = _open_alert(console_tree)
    browser = console_tree.session()
    browser.login("zhang")
    token = browser.csrf("/alerts")
    reply = browser.post(f"/alerts/{alert_id}/ack", {"csrf_token": token, "back": "/alerts?severity=red"})
    assert reply.status == 303 and reply.location == f"/alerts?severity=red&done=ack:{alert_id}"
    assert _alert(console_tree, alert_id) == ("acknowledged", "zhang")
    assert ("web:zhang@gd", f"alert:{alert_id}", "ok") in _audit(console_tree, "alert.acknowledged")
    missing_note = browser.post(f"/alerts/{alert_id}/correct", {"csrf_token": token, "note": " "})
    assert missing_note.status == 400 and "note" in missing_note.body
    done = browser.post(f"/alerts/{alert_id}/correct", {"csrf_token": token, "note": "已督促办结"})
    assert done.status == 303
    assert _alert(console_tree, alert_id)[0] == "corrected"
    assert ("web:zhang@gd", f"alert:{alert_id}", "ok") in _audit(console_tree, "alert.corrected")


def test_only_a_supervisor_may_issue_directives(console_tree: ConsoleTree) -> None:
    form = {"kind": "supervise", "target": "gd.gz", "subject": "case:X", "text": "请限期办结", "due": "2026-12-31"}
    for name, status in (("li", 403), ("wang", 403), ("zhang", 502)):
        browser = console_tree.session()
        browser.login(name)
        assert 'id="directives-unavailable"' in browser.get("/directives").body
        reply = browser.post("/directives/issue", {**form, "csrf_token": browser.csrf("/directives")})
        assert reply.status == status, (name, reply.body[-500:])


def test_repeated_failures_lock_the_account(console_tree: ConsoleTree) -> None:
    from node.web import add_user

    add_user(console_tree.tree["gd"].engine, "locky", "viewer", PASSWORD, actor="test@gd")
    browser = console_tree.session()
    for _ in range(console_tree.tree["gd"].config.web.max_failed_logins):
        reply = browser.login("locky", "wrong password")
        assert reply.status == 401
    assert "已锁定" in reply.body
    locked = browser.login("locky")  # the right password, but locked
    assert locked.status == 401 and "已锁定" in locked.body
    assert browser.cookie("supnet_session_") is None
    assert ("web:locky@gd", "user:locky", "ok") in _audit(console_tree, "web.locked_out")


def test_an_idle_session_ends(console_tree: ConsoleTree) -> None:
    browser = console_tree.session()
    browser.login("li")
    assert browser.get("/health").status == 200
    idle = console_tree.tree["gd"].config.web.session_idle_minutes
    past = (datetime.now(UTC) - timedelta(minutes=idle + 1)).replace(tzinfo=None).isoformat(sep=" ")
    with sqlite3.connect(console_tree.tree.nodes["gd"].data_dir / "node.db") as conn:
        conn.execute("UPDATE user_sessions SET last_seen_at = ?", (past,))
    assert browser.get("/health").status == 303


def test_login_goes_only_to_pages_of_this_console(console_tree: ConsoleTree) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "/alerts?severity=red"):
        browser = console_tree.session()
        token = browser.csrf("/login")
        reply = browser.post("/login", {"csrf_token": token, "name": "li", "password": PASSWORD, "next": target})
        assert reply.location == (target if target.startswith("/alerts") else "/overview"), target


def test_login_without_its_csrf_token_is_refused(console_tree: ConsoleTree) -> None:
    browser = HttpSession(console_tree.url)
    reply = browser.post("/login", {"name": "li", "password": PASSWORD})
    assert reply.status == 403 and browser.cookie("supnet_session_") is None


def test_logout_ends_the_session(console_tree: ConsoleTree) -> None:
    browser = console_tree.session()
    browser.login("li")
    token = browser.csrf("/overview")
    assert browser.post("/logout", {}).status == 403  # logging out is a form like any other
    assert browser.post("/logout", {"csrf_token": token}).location == "/login"
    assert browser.get("/overview").status == 303


def test_the_static_files_are_served_from_the_package(console_tree: ConsoleTree) -> None:
    browser = console_tree.session()
    script = browser.get("/static/vendor/echarts/echarts.min.js")
    assert script.status == 200 and "Apache" in script.body[:2000]
    assert browser.get("/static/vendor/echarts/LICENSE").status == 200
    assert browser.get("/static/vendor/htmx/htmx.min.js").status == 200
