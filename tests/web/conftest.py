"""Tests of node.web, the supervisor console: accounts and sessions on SQLite and PostgreSQL, the console served
by real servers over real HTTP (urllib with a cookie jar), and Playwright driving Debian's Chromium.

Fixtures here: ``console_tree`` (module scope), a running tree of real nodes (tests.harness.tree: gRPC servers,
PKI, mutual TLS, synthetic data, a rule scan, reports rolled up; every node delivering its directive outbox as
``supnet serve`` does, tests.directives' DirectiveTree) with the province's console served on a free loopback port
and three accounts (viewer, supervisor, admin); ``HttpSession``, a browser-like client that keeps cookies and does
not follow redirects, so a test sees every 303.
"""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from node.directives import get_directive
from node.errors import NotFoundError
from node.supervision import run_scan
from node.web import WebConsole, add_user
from tests.directives.conftest import DirectiveTree, wait_for
from tests.harness.tree import DRILLDOWN_FROM, DRILLDOWN_TO, Tree, TreeClock

PASSWORD = "correct horse 1"
DISTRICT = "gd.gz.py"
ACCOUNTS = {"li": "viewer", "zhang": "supervisor", "wang": "admin"}
# A province, two cities, and below one city two districts, below one district two streets: the drill-down path
# gd -> gd.gz -> gd.gz.py -> gd.gz.py.sq, with a sibling at every level to sort against.
TREE_CASES = {
    "gd": 40,
    "gd.gz": 40,
    "gd.sz": 60,
    "gd.gz.py": 40,
    "gd.gz.hz": 60,
    "gd.gz.py.sq": 160,
    "gd.gz.py.dl": 80,
}


@dataclass
class Response:
    status: int
    body: str
    headers: dict[str, str]

    @property
    def location(self) -> str:
        return self.headers.get("location", "")


def _headers(message: Message) -> dict[str, str]:
    """Header names in lower case; every Set-Cookie kept (one per line)."""
    headers = {key.lower(): value for key, value in message.items()}
    headers["set-cookie"] = "\n".join(message.get_all("Set-Cookie") or [])
    return headers


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


class HttpSession:
    """One browser's worth of cookies against one console; redirects are returned, not followed."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Response:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        try:
            with self._opener.open(request, timeout=30) as reply:
                return Response(reply.status, reply.read().decode(), _headers(reply.headers))
        except urllib.error.HTTPError as error:
            return Response(error.code, error.read().decode(), _headers(error.headers))

    def get_bytes(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """A GET whose body is not text (a workbook): status, headers, bytes."""
        with self._opener.open(urllib.request.Request(self.base + path), timeout=60) as reply:
            return reply.status, _headers(reply.headers), reply.read()

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str, form: dict[str, str]) -> Response:
        return self.request("POST", path, form)

    def csrf(self, path: str) -> str:
        """The CSRF token the page at ``path`` puts into its forms."""
        match = re.search(r'name="csrf_token" value="([^"]+)"', self.get(path).body)
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def login(self, name: str, password: str = PASSWORD) -> Response:
        token = self.csrf("/login")
        return self.post("/login", {"csrf_token": token, "name": name, "password": password, "next": "/overview"})

    def cookie(self, prefix: str) -> http.cookiejar.Cookie | None:
        return next((cookie for cookie in self.jar if cookie.name.startswith(prefix)), None)


@dataclass
class ConsoleTree:
    """The running tree and the province's console."""

    tree: Tree
    console: WebConsole

    @property
    def url(self) -> str:
        return self.console.url

    def session(self) -> HttpSession:
        return HttpSession(self.url)


def start_console(tree: Tree, node_id: str) -> WebConsole:
    """The console of one node of the tree, on a free loopback port, drilling down through the node's server."""
    console = WebConsole(tree[node_id], listen="127.0.0.1:0")
    console.start(tree.nodes[node_id].address)
    return console


def prepare_tree(tree: Tree) -> None:
    """Rule scans everywhere (cards on overdue cases), reports up, and the province's accounts."""
    for node_id in tree.ids:
        run_scan(tree[node_id])
    tree.report_up()
    add_accounts(tree, "gd")


def add_accounts(tree: Tree, node_id: str, accounts: dict[str, str] = ACCOUNTS) -> None:
    """The console accounts of one node (every one with PASSWORD)."""
    for name, role in accounts.items():
        add_user(tree[node_id].engine, name, role, PASSWORD, actor=f"test@{node_id}")


def console_directive_tree(
    base: Path, cases: dict[str, int], *, db_urls: dict[str, str] | None = None
) -> DirectiveTree:
    """The drill-down tree of ``cases`` whose every node serves and delivers directives, as ``supnet serve`` runs."""
    ids = sorted(cases, key=lambda node_id: (node_id.count("."), node_id))
    tree = DirectiveTree(base, ids, clock=TreeClock.real(), timing={}, db_urls=db_urls)
    try:
        for node_id in ids:
            if cases[node_id]:
                tree.import_synthetic(node_id, cases[node_id], 3, date_from=DRILLDOWN_FROM, date_to=DRILLDOWN_TO)
        tree.start_loops()
    except BaseException:
        tree.close()
        raise
    return tree


def directive_status(tree: Tree, node_id: str, directive_id: str) -> str:
    """The directive's status as ``node_id`` holds it ('' while it does not)."""
    try:
        return get_directive(tree[node_id], directive_id).status
    except NotFoundError:
        return ""


def wait_for_status(tree: Tree, node_id: str, directive_id: str, status: str) -> None:
    """Wait (up to 30 s) until ``node_id`` holds the directive in ``status``."""
    wait_for(
        lambda: directive_status(tree, node_id, directive_id) == status,
        timeout=30,
        what=f"{directive_id} {status} at {node_id}",
    )


@pytest.fixture(scope="module")
def district_console(console_tree: ConsoleTree) -> Iterator[WebConsole]:
    """The console of the district DISTRICT (gd.gz.py, two hops below the province), with the same accounts."""
    add_accounts(console_tree.tree, DISTRICT)
    console = start_console(console_tree.tree, DISTRICT)
    try:
        yield console
    finally:
        console.stop()


@pytest.fixture(scope="module")
def console_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleTree]:
    base: Path = tmp_path_factory.mktemp("console-tree")
    tree = console_directive_tree(base, TREE_CASES)
    try:
        tree.report_up()
        prepare_tree(tree)
        console = start_console(tree, "gd")
        try:
            yield ConsoleTree(tree, console)
        finally:
            console.stop()
    finally:
        tree.close()
