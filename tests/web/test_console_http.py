"""The province's console on a running tree, over real HTTP: login and sessions, every page in Chinese (English on
request), figures equal to the signed drill-down answers, actions by role, CSRF, audit entries naming the person.
"""

from __future__ import annotations

import html
import io
import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta

import openpyxl
import pytest

from federation.proto.v1 import drilldown_pb2 as dd
from node.audit_log import AuditFilter, AuditLog
from node.web import WebConsole
from tests.web.conftest import DISTRICT, PASSWORD, ConsoleTree, HttpSession, wait_for_status

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
    "/directives?box=outbox",
    "/directives?box=relayed&open=1",
    "/report",
    "/report?period=2026-Q1&level=subtree",
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


def _issue_form(target: str = "gd.gz.py", **fields: str) -> dict[str, str]:
    return {"kind": "supervise", "target": target, "case": "", "text": "请限期办结并报告。", "within": "3", **fields}


def test_only_a_supervisor_may_issue_directives(console_tree: ConsoleTree) -> None:
    for name in ("li", "wang"):  # a viewer, and an admin: neither directs
        browser = console_tree.session()
        browser.login(name)
        assert browser.get("/directives/new?target=gd.gz").status == 403
        assert 'class="direct"' not in browser.get("/nodes/gd").body  # no issue links for them
        reply = browser.post("/directives/issue", {**_issue_form(), "csrf_token": browser.csrf("/directives")})
        assert reply.status == 403 and "无权" in reply.body, (name, reply.body[-500:])
        assert (f"web:{name}@gd", "/directives/issue", "refused") in _audit(console_tree, "web.refused")
    supervisor = console_tree.session()
    supervisor.login("zhang")
    reply = supervisor.post("/directives/issue", _issue_form())  # no CSRF token
    assert reply.status == 403 and "CSRF" in reply.body


def test_a_refused_issue_form_comes_back_filled_saying_why(console_tree: ConsoleTree) -> None:
    browser = console_tree.session()
    browser.login("zhang")
    token = browser.csrf("/directives/new?target=gd.gz")
    issued_before = len(_audit(console_tree, "directive.issued"))
    cases = [
        (_issue_form(text=" "), "field 'text'"),
        (_issue_form(kind="order"), "field 'kind'"),
        (_issue_form(case="C-1", department="窗口"), "at most one"),
        (_issue_form(within="三"), "field 'within'"),
        (_issue_form(kind="rectify"), "field 'findings'"),
        (_issue_form(target="gd"), "not below gd"),
        (_issue_form(target="hn.cs"), "not below gd"),
    ]
    for form, why in cases:
        reply = browser.post("/directives/issue", {**form, "csrf_token": token})
        assert reply.status == 400 and why in html.unescape(reply.body), (form, reply.body[-800:])
        assert 'id="error-message"' in reply.body
    refused = browser.post("/directives/issue", {**_issue_form(text="保留这段文字", within="x"), "csrf_token": token})
    assert "保留这段文字" in refused.body  # what was typed is not lost
    assert len(_audit(console_tree, "directive.issued")) == issued_before


def test_issue_links_on_unit_case_and_department_pages(console_tree: ConsoleTree) -> None:
    browser = console_tree.session()
    browser.login("zhang")
    units = browser.get("/nodes/gd").body
    assert 'href="/directives/new?target=gd.gz"' in units and 'href="/directives/new?target=gd"' not in units
    assert 'id="issue-to-unit"' not in units  # the province's own page: nothing to direct there
    assert 'href="/directives/new?target=gd.gz" id="issue-to-unit"' in browser.get("/nodes/gd.gz").body
    assert 'class="direct" href="/directives/new?target=gd.gz"' in browser.get("/scores?period=2026").body
    cases = browser.get("/nodes/gd.gz.py/cases?filter=all").body
    department = re.search(r'<a class="department" href="([^"]+)">([^<]+)</a>', cases)
    assert department, "no department link on the cases page"
    page = browser.get(department.group(1).replace("&amp;", "&")).body
    assert 'id="department"' in page and department.group(2) in page
    link = re.search(r'href="(/directives/new\?target=gd.gz.py&amp;department=[^"]+)" id="issue-to-department"', page)
    assert link, page[-1500:]
    form = browser.get(link.group(1).replace("&amp;", "&")).body
    assert 'name="target" value="gd.gz.py"' in form
    assert f'name="department" value="{department.group(2)}"' in form
    case_no = re.search(r'<a class="case" href="/nodes/gd.gz.py/cases/([^"]+)">', cases)
    assert case_no
    case = browser.get(f"/nodes/gd.gz.py/cases/{case_no.group(1)}").body
    assert 'id="issue-directive"' in case and f'name="case" value="{case_no.group(1)}"' in case
    own_case = re.search(
        r'<a class="case" href="(/nodes/gd/cases/[^"]+)">', browser.get("/nodes/gd/cases?filter=all").body
    )
    assert own_case and 'id="issue-directive"' not in browser.get(own_case.group(1)).body
    viewer = console_tree.session()
    viewer.login("li")
    assert 'id="issue-directive"' not in viewer.get(f"/nodes/gd.gz.py/cases/{case_no.group(1)}").body


def _audit_at(console_tree: ConsoleTree, node_id: str, action: str, target: str) -> list[str]:
    entries = AuditLog(console_tree.tree[node_id].engine).entries(AuditFilter(action=action, target=target))
    return [entry.actor for entry in entries]


def test_a_directive_goes_down_is_answered_and_closed_through_the_consoles(
    console_tree: ConsoleTree, district_console: WebConsole
) -> None:
    tree = console_tree.tree
    with sqlite3.connect(tree.nodes[DISTRICT].data_dir / "node.db") as conn:
        (case_no,) = conn.execute("SELECT case_no FROM cases ORDER BY case_no LIMIT 1").fetchone()
    province = console_tree.session()
    province.login("zhang")
    token = province.csrf(f"/directives/new?target={DISTRICT}&case={case_no}")
    reply = province.post(
        "/directives/issue", {**_issue_form(case=case_no, text="该件请于三个工作日内办结。"), "csrf_token": token}
    )
    assert reply.status == 303 and reply.location.startswith("/directives/gd/"), reply.body[-800:]
    assert reply.location.endswith("?done=issued")
    directive_id = reply.location.removeprefix("/directives/").split("?")[0]
    issued = province.get(reply.location).body
    assert f"已发出 {directive_id}" in issued and case_no in issued
    assert _audit_at(console_tree, "gd", "directive.issued", f"directive:{directive_id}") == ["web:zhang@gd"]
    wait_for_status(tree, DISTRICT, directive_id, "delivered")

    district = HttpSession(district_console.url)
    district.login("zhang")
    inbox = district.get("/directives").body
    assert f'data-directive="{directive_id}"' in inbox and "督办" in inbox
    assert f'data-directive="{directive_id}"' not in district.get("/directives?box=outbox").body
    page = district.get(f"/directives/{directive_id}").body
    assert 'id="acknowledge"' in page and 'id="close"' not in page  # the target answers; only the issuer closes
    token = district.csrf(f"/directives/{directive_id}")
    assert district.post(f"/directives/{directive_id}/close", {"csrf_token": token}).status == 400
    viewer = HttpSession(district_console.url)
    viewer.login("li")
    viewer_token = viewer.csrf(f"/directives/{directive_id}")
    assert 'id="acknowledge"' not in viewer.get(f"/directives/{directive_id}").body
    refused = viewer.post(f"/directives/{directive_id}/ack", {"csrf_token": viewer_token})
    assert refused.status == 403
    assert district.post(f"/directives/{directive_id}/ack", {}).status == 403  # no CSRF token
    reply = district.post(f"/directives/{directive_id}/ack", {"csrf_token": token})
    assert reply.status == 303 and reply.location.endswith("?done=acknowledged")
    assert district.post(f"/directives/{directive_id}/respond", {"csrf_token": token, "text": " "}).status == 400
    reply = district.post(f"/directives/{directive_id}/respond", {"csrf_token": token, "text": "已督促窗口办结。"})
    assert reply.status == 303 and reply.location.endswith("?done=responded")
    target = f"directive:{directive_id}"
    assert _audit_at(console_tree, DISTRICT, "directive.acknowledged", target) == [f"web:zhang@{DISTRICT}"]
    assert _audit_at(console_tree, DISTRICT, "directive.responded", target) == [f"web:zhang@{DISTRICT}"]
    refusals = _audit_at(console_tree, DISTRICT, "web.refused", f"/directives/{directive_id}/ack")
    assert sorted(refusals) == [f"web:li@{DISTRICT}", f"web:zhang@{DISTRICT}"]  # the role, the missing token

    english = viewer.get(f"/directives/{directive_id}?lang=en").body
    assert "Signed history" in english and "responded" in english and "supervise (督办)" in english

    wait_for_status(tree, "gd", directive_id, "responded")
    outbox = province.get("/directives?box=outbox").body
    row = re.search(rf'data-directive="{re.escape(directive_id)}".*?</tr>', outbox, re.S)
    assert row and "已督促窗口办结。" in row.group(0) and "已答复" in row.group(0)
    history = province.get(f"/directives/{directive_id}").body
    assert 'id="history-verified"' in history and "zhang" in history
    token = province.csrf(f"/directives/{directive_id}")
    reply = province.post(f"/directives/{directive_id}/close", {"csrf_token": token, "text": "同意办结"})
    assert reply.status == 303 and reply.location.endswith("?done=closed")
    assert _audit_at(console_tree, "gd", "directive.closed", target) == ["web:zhang@gd"]
    wait_for_status(tree, DISTRICT, directive_id, "closed")
    assert "已办结" in district.get(f"/directives/{directive_id}").body


def test_the_bulletin_is_served_for_a_chosen_period(console_tree: ConsoleTree) -> None:
    browser = console_tree.session()
    browser.login("li")
    form = browser.get("/report?period=2026-02").body
    assert "电子监察通报" in form and 'data-format="html"' in form
    link = re.search(r'href="(/report/file\?[^"]*format=html[^"]*)"', form)
    assert link and "period=2026-02" in link.group(1)
    page = browser.get(link.group(1).replace("&amp;", "&"))
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert "2026年2月电子监察通报" in page.body and "@page" in page.body  # print-ready: A4 page rules
    assert "GD.GZ" in page.body or "gd.gz" in page.body  # a row per child
    subtree = browser.get("/report/file?from=2026-02-01&to=2026-03-31&level=subtree&format=html")
    assert subtree.status == 200 and "gd.gz.py.sq" in subtree.body
    status, headers, content = browser.get_bytes("/report/file?period=2026-Q1&format=xlsx")
    assert status == 200 and "attachment" in headers["content-disposition"]
    workbook = openpyxl.load_workbook(io.BytesIO(content))
    assert len(workbook.sheetnames) >= 3
    csv = browser.get("/report/file?period=2026&format=csv")
    assert csv.status == 200 and "attachment" in csv.headers["content-disposition"]
    for query, why in (
        ("period=2026-13", "2026-13"),
        ("from=2026-03-01&to=2026-02-01", "before"),
        ("format=pdf", "format"),
    ):
        reply = browser.get(f"/report/file?{query}")
        assert reply.status == 400 and why in html.unescape(reply.body), (query, reply.body[-600:])


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
