"""The console in a real browser: Playwright drives Debian's Chromium (/usr/bin/chromium, never a downloaded one) on
the running tree of ``console_tree``.

Logs in, sees the overview, sorts the subordinates, drills down province → city → district → street → overdue
case → timeline by clicking, expands a row in place (htmx), acknowledges an alert; issues a 督办 from a case page
two hops down, which arrives in the district console's inbox, is acknowledged and answered there, and shows its
response in the province's outbox; a viewer is refused the actions and a request without the CSRF token is
refused. Every page is screenshotted (into the test's temporary folder, and into ``SUPNET_SCREENSHOT_DIR`` when
set: the README's pictures) and checked for drawn charts (pixels read back from each ECharts canvas) and for
Chinese text drawn with real glyphs (each character of the page rendered alone must differ from a missing-glyph
box and from the others). Without Chromium the module skips,
except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.audit_log import AuditFilter, AuditLog
from node.web import WebConsole
from tests.web.conftest import DISTRICT, PASSWORD, ConsoleTree, wait_for_status

CHROMIUM = Path("/usr/bin/chromium")

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - the dev extras install it
    sync_playwright = None  # type: ignore[assignment]


def _require_browser() -> None:
    missing = "playwright is not installed" if sync_playwright is None else ""
    if not missing and not CHROMIUM.exists():
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium fonts-noto-cjk; .ci/run does)"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing}: required under CI")
        pytest.skip(missing)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    _require_browser()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def _page(browser: Browser, console_tree: ConsoleTree, name: str, *, url: str = "") -> Page:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
    page = context.new_page()
    page.goto((url or console_tree.url) + "overview")
    assert "/login" in page.url
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(re.compile(r"/overview$"))
    return page


# Counts the painted pixels of every chart canvas (an ECharts chart draws on one canvas per chart).
_CHART_PIXELS = """() => Array.from(document.querySelectorAll('[data-chart] canvas')).map(canvas => {
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) { if (data[i] > 0) painted++; }
  return painted;
})"""

# Draws each distinct Chinese character of the page alone, in the page's font, and compares the bitmaps: a
# missing glyph is drawn as the same box for every character, so real glyphs differ from each other and from
# the box of an unassigned code point (U+0378, which no font has).
_GLYPHS = """() => {
  const text = document.body.innerText;
  const chars = Array.from(new Set(Array.from(text).filter(ch => /[\\u4e00-\\u9fff]/.test(ch)))).slice(0, 24);
  const canvas = document.createElement('canvas');
  canvas.width = 48; canvas.height = 48;
  const g = canvas.getContext('2d', {willReadFrequently: true});
  const font = getComputedStyle(document.body).fontFamily;
  const bitmap = ch => {
    g.clearRect(0, 0, 48, 48); g.font = '32px ' + font; g.fillStyle = '#000'; g.textBaseline = 'top';
    g.fillText(ch, 4, 4);
    return Array.from(g.getImageData(0, 0, 48, 48).data).join('');
  };
  const box = bitmap('\\u0378');
  const drawn = chars.map(bitmap);
  return {chars: chars.join(''), distinct: new Set(drawn).size, boxes: drawn.filter(b => b === box).length};
}"""


def _wait_for_charts(page: Page, expected: int, timeout: float = 15.0) -> None:
    # Polled from here: the page's CSP (no eval) rules out Playwright's in-page wait_for_function.
    deadline = time.monotonic() + timeout
    while page.evaluate("() => window.supnetCharts || 0") < expected:
        assert time.monotonic() < deadline, f"only {page.evaluate('() => window.supnetCharts')} of {expected} charts"
        time.sleep(0.05)


def _check_and_shoot(page: Page, shots: Path, name: str, *, charts: int = 0) -> None:
    """Wait for the page's charts, check they are painted and that its Chinese renders, save a screenshot."""
    expected = page.locator("[data-chart]").count()
    assert expected >= charts, f"{name}: {expected} charts, expected at least {charts}"
    if expected:
        _wait_for_charts(page, expected)
        painted = page.evaluate(_CHART_PIXELS)
        assert len(painted) >= expected and all(count > 500 for count in painted), f"{name}: empty chart {painted}"
    glyphs: dict[str, Any] = page.evaluate(_GLYPHS)
    assert len(glyphs["chars"]) >= 4, f"{name}: hardly any Chinese text"
    assert glyphs["boxes"] == 0 and glyphs["distinct"] == len(glyphs["chars"]), f"{name}: missing glyphs {glyphs}"
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    keep = os.environ.get("SUPNET_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(keep) / path.name)


def test_log_in_and_see_the_overview(browser: Browser, console_tree: ConsoleTree, shots: Path) -> None:
    page = _page(browser, console_tree, "li")
    assert "监察总览" in page.inner_text("h1")
    assert page.locator("#overview-figures").inner_text().count("提前办结率") == 1
    _check_and_shoot(page, shots, "overview", charts=3)
    page.context.close()


def test_sort_the_subordinates(browser: Browser, console_tree: ConsoleTree, shots: Path) -> None:
    page = _page(browser, console_tree, "li")
    page.click("nav.menu >> text=下级单位")
    page.click("a.sort[data-sort=score]")
    page.wait_for_url(re.compile(r"sort=score&dir=desc"))

    def scores() -> list[float]:
        cells = page.locator("tr.child td[data-key=score]").all_inner_texts()
        return [float(text) for text in cells if text.strip() not in ("", "—")]

    descending = scores()
    assert len(descending) == 2 and descending == sorted(descending, reverse=True)
    _check_and_shoot(page, shots, "subordinates", charts=1)
    page.click("a.sort[data-sort=score]")
    page.wait_for_url(re.compile(r"sort=score&dir=asc"))
    assert scores() == sorted(descending)
    page.context.close()


def test_drill_down_to_a_case_timeline_by_clicking(browser: Browser, console_tree: ConsoleTree, shots: Path) -> None:
    page = _page(browser, console_tree, "li")
    page.goto(console_tree.url + "nodes/gd")
    for child in ("gd.gz", "gd.gz.py", "gd.gz.py.sq"):
        page.click(f'tr[data-node="{child}"] a.drill')
        page.wait_for_url(re.compile(rf"/nodes/{re.escape(child)}(\?|$)"))
        assert child in page.inner_text("h1")
        assert "已在本节点核验" in page.inner_text("p.verified")
        if child == "gd.gz":
            _check_and_shoot(page, shots, "city", charts=1)
    page.click("#own-cases")
    page.wait_for_url(re.compile(r"/nodes/gd\.gz\.py\.sq/cases\?filter=overdue"))
    assert page.locator("#cases tbody tr").count() > 0, "the street has no overdue case"
    _check_and_shoot(page, shots, "cases")
    case_no = page.locator("#cases a.case").first.inner_text()
    page.locator("#cases a.case").first.click()
    page.wait_for_url(re.compile(r"/cases/.+"))
    assert case_no in page.inner_text("h1")
    assert page.locator("#timeline li").count() >= 1
    assert "*" in page.inner_text("#applicant")  # masked by the street before it signed the answer
    _check_and_shoot(page, shots, "case")
    page.context.close()


def test_expand_a_row_in_place(browser: Browser, console_tree: ConsoleTree) -> None:
    page = _page(browser, console_tree, "li")
    page.goto(console_tree.url + "nodes/gd")
    page.click('tr[data-node="gd.gz"] button.expand')
    page.wait_for_selector('tr[data-node="gd.gz.py"]')
    assert page.locator('tr[data-node="gd.gz.hz"]').count() == 1
    page.context.close()


def test_acknowledge_an_alert(browser: Browser, console_tree: ConsoleTree, shots: Path) -> None:
    page = _page(browser, console_tree, "zhang")
    page.click("nav.menu >> text=预警")
    row = page.locator("#alerts tbody tr", has=page.locator("button.ack")).first
    alert_id = row.get_attribute("data-alert")
    _check_and_shoot(page, shots, "alerts")
    row.locator("button.ack").click()
    page.wait_for_selector("#done")
    assert f"预警 {alert_id} 已签收" in page.inner_text("#done")
    status = page.locator(f'#alerts tr[data-alert="{alert_id}"] td.status').inner_text()
    assert "已签收" in status and "zhang" in status
    page.context.close()


def _post_from_page(page: Page, path: str, token: str | None) -> int:
    body = "" if token is None else f"csrf_token={token}"
    script = """async ([path, body]) => (await fetch(path, {method: 'POST', body: body,
        headers: {'Content-Type': 'application/x-www-form-urlencoded'}, redirect: 'manual'})).status"""
    return int(page.evaluate(script, [path, body]))


def test_a_viewer_is_refused_and_a_request_without_csrf_too(browser: Browser, console_tree: ConsoleTree) -> None:
    viewer = _page(browser, console_tree, "li")
    viewer.goto(console_tree.url + "alerts")
    assert viewer.locator("button.ack").count() == 0
    alert_id = viewer.locator("#alerts tbody tr[data-alert]").first.get_attribute("data-alert")
    token = viewer.locator("form[action='/logout'] input[name=csrf_token]").get_attribute("value")
    assert _post_from_page(viewer, f"/alerts/{alert_id}/ack", token) == 403
    viewer.context.close()
    supervisor = _page(browser, console_tree, "zhang")
    assert _post_from_page(supervisor, f"/alerts/{alert_id}/ack", None) == 403
    supervisor.context.close()


def test_issue_a_directive_from_a_drill_down_page_and_answer_it_below(
    browser: Browser, console_tree: ConsoleTree, district_console: WebConsole, shots: Path
) -> None:
    tree = console_tree.tree
    page = _page(browser, console_tree, "zhang")
    page.goto(console_tree.url + "nodes/gd")
    for child in ("gd.gz", DISTRICT):
        page.click(f'tr[data-node="{child}"] a.drill')
        page.wait_for_url(re.compile(rf"/nodes/{re.escape(child)}(\?|$)"))
    page.click("#own-cases")
    page.click("a[data-filter=all]")
    page.wait_for_url(re.compile(r"filter=all"))
    case_no = page.locator("#cases a.case").first.inner_text()
    page.locator("#cases a.case").first.click()
    page.wait_for_url(re.compile(r"/cases/.+"))
    form = page.locator("#issue-directive")
    assert DISTRICT in form.locator("h2").inner_text()
    assert form.locator("input[name=case]").input_value() == case_no
    form.locator("select[name=kind]").select_option("supervise")
    form.locator("input[name=within]").fill("3")
    form.locator("textarea[name=text]").fill("该件已超承诺时限，请于三个工作日内办结并报告。")
    form.locator("#issue-submit").click()
    page.wait_for_url(re.compile(r"/directives/gd/[^?]+\?done=issued$"))
    directive_id = page.url.split("/directives/", 1)[1].split("?")[0]
    assert f"已发出 {directive_id}" in page.inner_text("#done")
    assert case_no in page.inner_text("#directive") and "督办" in page.inner_text("h1")
    _check_and_shoot(page, shots, "directive-issued")
    wait_for_status(tree, DISTRICT, directive_id, "delivered")

    below = _page(browser, console_tree, "zhang", url=district_console.url)
    below.click("nav.menu >> text=督办")
    row = below.locator(f'#directives tr[data-directive="{directive_id}"]')
    assert "已送达" in row.locator("td.status").inner_text() and "gd" in row.inner_text()
    _check_and_shoot(below, shots, "directives-inbox")
    row.locator("a.directive").click()
    below.click("#acknowledge")
    below.wait_for_selector("#done")
    assert "已签收" in below.inner_text("#done") and "已签收" in below.inner_text("#status")
    below.fill("#respond textarea[name=text]", "已督促窗口办结，并已告知申请人。")
    below.click("#respond-submit")
    below.wait_for_url(re.compile(r"done=responded$"))
    assert "已答复" in below.inner_text("#status")
    assert "已督促窗口办结" in below.inner_text("#history")
    _check_and_shoot(below, shots, "directive-answered")
    below.context.close()

    wait_for_status(tree, "gd", directive_id, "responded")
    page.click("nav.menu >> text=督办")
    page.click("a[data-box=outbox]")
    sent = page.locator(f'#directives tr[data-directive="{directive_id}"]')
    assert "已督促窗口办结" in sent.locator("td.response").inner_text()
    assert "已答复" in sent.locator("td.status").inner_text()
    _check_and_shoot(page, shots, "directives-outbox")
    page.context.close()
    issued = AuditLog(tree["gd"].engine).entries(
        AuditFilter(action="directive.issued", target=f"directive:{directive_id}")
    )
    assert [entry.actor for entry in issued] == ["web:zhang@gd"]


def test_a_viewer_may_not_issue_and_a_post_without_csrf_is_refused(browser: Browser, console_tree: ConsoleTree) -> None:
    viewer = _page(browser, console_tree, "li")
    viewer.goto(console_tree.url + f"nodes/{DISTRICT}/cases?filter=all")
    viewer.locator("#cases a.case").first.click()
    viewer.wait_for_url(re.compile(r"/cases/.+"))
    assert viewer.locator("#issue-directive").count() == 0 and viewer.locator("a.direct").count() == 0
    token = viewer.locator("form[action='/logout'] input[name=csrf_token]").get_attribute("value")
    assert _post_from_page(viewer, "/directives/issue", token) == 403
    viewer.context.close()
    refused = AuditLog(console_tree.tree["gd"].engine).entries(
        AuditFilter(action="web.refused", target="/directives/issue")
    )
    assert "web:li@gd" in [entry.actor for entry in refused]
    supervisor = _page(browser, console_tree, "zhang")
    assert _post_from_page(supervisor, "/directives/issue", None) == 403
    supervisor.context.close()


@pytest.mark.parametrize(
    ("name", "path", "charts"),
    [
        ("complaints", "complaints", 1),
        ("evaluations", "evaluations", 1),
        ("scores", "scores?period=2026", 1),
        ("items", "items", 0),
        ("directives", "directives", 0),
        ("report", "report", 0),
        ("health", "health", 0),
        ("overview-en", "overview?lang=en", 3),
    ],
)
def test_every_page_draws(
    browser: Browser, console_tree: ConsoleTree, shots: Path, name: str, path: str, charts: int
) -> None:
    page = _page(browser, console_tree, "li")
    page.goto(console_tree.url + path)
    if name.endswith("-en"):
        assert "Overview" in page.inner_text("nav.menu")
        page.goto(console_tree.url + "overview?lang=zh")  # the English page still names places in Chinese
    _check_and_shoot(page, shots, name, charts=charts)
    page.context.close()
