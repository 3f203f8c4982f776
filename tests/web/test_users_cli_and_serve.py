"""``supnet users`` through the CLI, and the console as ``supnet serve`` runs it: a real process that writes the
console's address to serve.json, serves the pages of an account added with the CLI, and stops cleanly."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from node.bootstrap import init_node
from node.cli import users_cmd
from node.cli.common import console
from node.cli.federation_demo import _console_account
from node.config import load_config, save_config
from node.errors import ExitCode
from node.localtree import FederationState
from tests.harness.serve_process import start_serve, wait_for_state
from tests.web.conftest import HttpSession

PASSWORD = "correct horse 1"


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(console, "width", 200)
    cli = typer.Typer()
    users_cmd.register(cli)
    return cli


def _users(app: typer.Typer, data_dir: Path, *args: str, password: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["users", *args, "--data-dir", str(data_dir)], input=password)
    return result.exit_code, result.output


def test_users_add_list_disable_enable_passwd(app: typer.Typer, tmp_path: Path) -> None:
    init_node(tmp_path / "gd", "gd", level="province")
    code, output = _users(
        app, tmp_path / "gd", "add", "张伟", "--role", "supervisor", "--password-stdin", password=PASSWORD + "\n"
    )
    assert code == 0 and "张伟" in output and "监察员" in output
    code, output = _users(app, tmp_path / "gd", "add", "li", "--role", "boss", password=PASSWORD + "\n")
    assert code == 2 and "--role must be one of viewer, supervisor, admin" in output
    code, output = _users(app, tmp_path / "gd", "add", "li", password="short\n")
    assert code == 2 and "at least 8 characters" in output
    assert _users(app, tmp_path / "gd", "add", "li", password=PASSWORD + "\n")[0] == 0
    code, output = _users(app, tmp_path / "gd", "list", "--json")
    listed = json.loads(output)["users"]
    assert [(u["name"], u["role"], u["disabled"]) for u in listed] == [
        ("li", "viewer", False),
        ("张伟", "supervisor", False),
    ]
    assert _users(app, tmp_path / "gd", "disable", "li")[0] == 0
    code, output = _users(app, tmp_path / "gd")
    assert code == 0 and "停用" in output
    assert _users(app, tmp_path / "gd", "enable", "li")[0] == 0
    code, output = _users(app, tmp_path / "gd", "passwd", "li", "--password-stdin", password="another horse 2\n")
    assert code == 0 and "密码已更新" in output
    code, output = _users(app, tmp_path / "gd", "disable", "nobody")
    assert code == ExitCode.NOT_FOUND and "no user 'nobody'" in output


def test_serve_serves_the_console(app: typer.Typer, tmp_path: Path) -> None:
    data_dir = tmp_path / "gd"
    init_node(data_dir, "gd", level="province", name="广东省")
    config = load_config(data_dir)
    config.federation.insecure_plaintext = True
    save_config(data_dir, config)
    assert _users(app, data_dir, "add", "li", password=PASSWORD + "\n")[0] == 0
    process = start_serve(data_dir)
    try:
        state = wait_for_state(data_dir, process)
        url = str(state["web_url"])
        assert url.startswith("http://127.0.0.1:")
        browser = HttpSession(url)
        assert browser.get("/overview").status == 303
        assert browser.login("li").location == "/overview"
        overview = browser.get("/overview")
        assert overview.status == 200 and "广东省 · 监察总览" in overview.body
        assert browser.get("/health").status == 200
        # What `supnet demo` does once the tree serves: a supervisor account, and where to open the console.
        node = {"id": "gd", "level": "province", "name": "广东省", "data_dir": str(data_dir), "address": ""}
        (tmp_path / "federation.json").write_text(
            json.dumps({"topology": "t", "base_dir": str(tmp_path), "nodes": [node]})
        )
        state = FederationState.load(tmp_path)
        printed = Console(record=True, width=200)
        _console_account(printed, state, "gd", keep=True)
        shown = printed.export_text()
        password = re.search(r"account demo \(监察员 supervisor\), password (\S+)", shown)
        assert password and url in shown and f"supnet federation down --dir {tmp_path}" in shown
        demo = HttpSession(url)
        assert demo.login("demo", password.group(1)).location == "/overview"
        assert "监察员" in demo.get("/overview").body
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output.decode()
    text = output.decode()
    assert f"监察控制台 supervisor console: {url}" in text and "stopped cleanly" in text
