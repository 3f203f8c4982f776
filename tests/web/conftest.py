"""Tests of node.web, the supervisor console: accounts and sessions on SQLite and PostgreSQL, the console served
by real servers over real HTTP (urllib with a cookie jar), and Playwright driving Debian's Chromium.

Fixtures here: ``console_tree`` (module scope), a running tree of real nodes (tests.harness.tree: gRPC servers,
PKI, mutual TLS, synthetic data, a rule scan, reports rolled up) with the province's console served on a free
loopback port and three accounts (viewer, supervisor, admin); ``HttpSession``, a browser-like client that keeps
cookies and does not follow redirects, so a test sees every 303.
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

from node.supervision import run_scan
from node.web import WebConsole, add_user
from tests.harness.tree import Tree, running_tree

PASSWORD = "correct horse 1"
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
    for name, role in ACCOUNTS.items():
        add_user(tree["gd"].engine, name, role, PASSWORD, actor="test@gd")


@pytest.fixture(scope="module")
def console_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleTree]:
    base: Path = tmp_path_factory.mktemp("console-tree")
    for tree in running_tree(base, TREE_CASES):
        prepare_tree(tree)
        console = start_console(tree, "gd")
        try:
            yield ConsoleTree(tree, console)
        finally:
            console.stop()
