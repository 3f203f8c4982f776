"""Exit codes, the version and hints of the real CLI: every error code has its documented exit code (README's
table is ExitCode), commands exit by what went wrong, ``supnet --version`` and ``federation status`` name the
version, and a hint offers only options the command it is printed by takes."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

import node.localtree  # noqa: F401  (its LaunchError is one of the error codes)
from node.bootstrap import init_node
from node.cli.main import _register_commands, app, command_module
from node.errors import EXIT_CODES, ExitCode, SupnetError, exit_code_for
from node.observability import software_version
from tests.harness.ingest_records import ITEM
from tests.harness.pki import provision

REPO = Path(__file__).resolve().parents[2]


def _error_classes(base: type[SupnetError]) -> Iterator[type[SupnetError]]:
    for subclass in base.__subclasses__():
        yield subclass
        yield from _error_classes(subclass)


def test_every_error_code_has_its_exit_code() -> None:
    ours = [cls for cls in _error_classes(SupnetError) if cls.__module__.startswith(("node.", "federation."))]
    unmapped = sorted(cls.code for cls in ours if cls.code not in EXIT_CODES)
    assert not unmapped, f"error codes without an exit code: {unmapped}"
    assert exit_code_for(SupnetError("no code of its own")) == ExitCode.INTERNAL


def test_the_readme_documents_every_exit_code() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", section, flags=re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}
    for error_code in EXIT_CODES:
        assert error_code in section, f"README's exit code table does not name {error_code}"


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    _register_commands([])  # every command, as `supnet` with no arguments loads them
    return app


def test_each_command_loads_alone_from_the_module_its_name_leads_to(cli: typer.Typer) -> None:
    # `supnet NAME ...` loads only command_module(NAME): a command registered elsewhere would be unknown there.
    names = sorted(typer.main.get_command(cli).commands)  # type: ignore[attr-defined]
    assert {"restore", "serve", "spotcheck-directive"} <= set(names)
    for name in names:
        alone = typer.Typer()
        alone.callback()(lambda: None)  # a group, even with one command
        importlib.import_module(f"node.cli.{command_module(name)}").register(alone)
        assert name in typer.main.get_command(alone).commands, name  # type: ignore[attr-defined]


def _run(cli: typer.Typer, *args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def test_commands_exit_by_what_went_wrong(cli: typer.Typer, tmp_path: Path) -> None:
    data_dir = tmp_path / "gd"
    init_node(data_dir, "gd", level="province")
    provision(tmp_path, ["gd"])
    assert _run(cli, "stats", "-d", data_dir, "--by", "colour").exit_code == ExitCode.USAGE
    assert _run(cli, "stats", "-d", tmp_path / "nowhere").exit_code == ExitCode.CONFIG
    missing = _run(cli, "alerts", "ack", "999", "-d", data_dir)
    assert missing.exit_code == ExitCode.NOT_FOUND, missing.output
    nobody = _run(cli, "query", "gd", "summary", "-d", data_dir, "--address", "127.0.0.1:9")
    assert nobody.exit_code == ExitCode.UNAVAILABLE, nobody.output
    not_started = _run(cli, "query", "gd", "summary", "-d", data_dir)
    assert not_started.exit_code == ExitCode.UNAVAILABLE and "no running server" in not_started.output
    bad_item = {**ITEM, "是否收费": "maybe"}
    (tmp_path / "items.csv").write_text(
        ",".join(bad_item) + "\n" + ",".join(bad_item.values()) + "\n", encoding="utf-8"
    )
    rejected = _run(cli, "import", "-d", data_dir, tmp_path / "items.csv")
    assert rejected.exit_code == ExitCode.RECORDS_REJECTED, rejected.output


def test_version_of_the_program_and_in_federation_status(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "node", "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == f"supnet {software_version()}\n"
    assert software_version() not in ("", "unknown")
    node = {"id": "gd", "level": "province", "name": "", "data_dir": str(tmp_path / "gd"), "address": "x:1"}
    state = {"topology": "t.toml", "base_dir": str(tmp_path), "nodes": [node]}
    (tmp_path / "federation.json").write_text(json.dumps(state), encoding="utf-8")  # a tree launched, now stopped
    status = CliRunner().invoke(app, ["federation", "status", "--dir", str(tmp_path)])
    assert status.exit_code == 0, status.output
    assert f"supnet {software_version()}" in status.output and "STOPPED" in status.output


def test_hints_offer_only_options_the_command_takes(cli: typer.Typer, tmp_path: Path) -> None:
    data_dir = tmp_path / "gd"
    init_node(data_dir, "gd", level="province")  # no pki/: neither TLS nor the plaintext switch
    env = {"COLUMNS": "400"}
    nowhere = ["--address", "127.0.0.1:9"]
    for command in (["query", "gd", "summary", *nowhere], ["verify", "gd", *nowhere], ["serve"]):
        result = CliRunner(env=env).invoke(cli, [*command, "--data-dir", str(data_dir)])
        assert result.exit_code == ExitCode.CONFIG, (command, result.output)
        hint = " ".join(result.stderr.split())
        assert "no TLS credentials" in hint
        assert "pass --insecure-plaintext" not in hint
        assert "federation.insecure_plaintext = true" in hint
        assert "supnet serve also takes --insecure-plaintext" in hint
    takes = {
        name: "--insecure-plaintext" in CliRunner(env=env).invoke(cli, [*words, "--help"]).output
        for name, words in (("serve", ["serve"]), ("query", ["query"]), ("verify", ["verify"]))
    }
    assert takes == {"serve": True, "query": False, "verify": False}


def test_a_database_that_cannot_be_opened_exits_unavailable_without_a_traceback(tmp_path: Path) -> None:
    data_dir = tmp_path / "gd"
    init_node(data_dir, "gd", level="province")
    (data_dir / "node.db").write_bytes(b"this is not a database" * 100)
    done = subprocess.run(
        [sys.executable, "-m", "node", "stats", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SUPNET_LOG_LEVEL": "WARNING"},
    )
    assert "Traceback" not in done.stderr
    assert done.returncode == ExitCode.UNAVAILABLE, done.stderr
    assert done.stderr.startswith("error [STORE]")
