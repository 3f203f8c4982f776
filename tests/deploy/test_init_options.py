"""``supnet init`` for a node on its own machine: fixed listen addresses, its parent and its children, in one command.

docs/deploy.md relies on these options (test_guide.py runs them); here, what they write and how a wrong one is
refused: one line naming the option, or the config key, and why — and no node directory left half-made.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from node.cli import init_cmd


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    cli = typer.Typer()
    init_cmd.register(cli)
    cli.command("unused")(lambda: None)  # two commands, so `init` is a subcommand as in supnet
    return cli


def test_init_writes_fixed_addresses_parent_and_children(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "init", "--data-dir", str(tmp_path / "gz"), "--id", "gd.gz", "--level", "city",
            "--listen", "0.0.0.0:7100", "--enrol-listen", "0.0.0.0:7101", "--parent", "gd@10.0.0.1:7100",
            "--child", "gd.gz.py@10.0.0.3:7100", "--child", "gd.gz.th",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    federation = tomllib.loads((tmp_path / "gz" / "supnet.toml").read_text(encoding="utf-8"))["federation"]
    assert federation["listen"] == "0.0.0.0:7100"
    assert federation["enrol_listen"] == "0.0.0.0:7101"
    assert (federation["parent_id"], federation["parent_address"]) == ("gd", "10.0.0.1:7100")
    children = [(child["id"], child["address"]) for child in federation["children"]]
    assert children == [("gd.gz.py", "10.0.0.3:7100"), ("gd.gz.th", "")]


def test_init_without_the_options_keeps_the_loopback_defaults(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["init", "--data-dir", str(tmp_path / "py"), "--id", "gd.gz.py"])
    assert result.exit_code == 0, result.output
    federation = tomllib.loads((tmp_path / "py" / "supnet.toml").read_text(encoding="utf-8"))["federation"]
    assert (federation["listen"], federation["enrol_listen"], federation["parent_id"]) == (
        "127.0.0.1:0",
        "127.0.0.1:0",
        "",
    )


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--parent", "gd"], "--parent: 'gd' is not ID@HOST:PORT"),
        (["--parent", "gd@"], "--parent: 'gd@' is not ID@HOST:PORT"),
        (["--child", "@10.0.0.3:7100"], "--child: '@10.0.0.3:7100' is not ID or ID@HOST:PORT"),
        (["--listen", "0.0.0.0:99999"], "key 'federation.listen'"),
        (["--enrol-listen", "nowhere"], "key 'federation.enrol_listen'"),
        (["--parent", "GD@10.0.0.1:7100"], "key 'federation.parent_id'"),
        (["--child", "gd.gz@10.0.0.3"], "key 'federation.children"),
    ],
)
def test_a_wrong_option_is_one_line_naming_it(app: typer.Typer, tmp_path: Path, options: list[str], said: str) -> None:
    result = CliRunner().invoke(app, ["init", "--data-dir", str(tmp_path / "n"), "--id", "gd.gz", *options])
    assert result.exit_code != 0
    assert said in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "n" / "supnet.toml").exists()
