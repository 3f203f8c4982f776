"""``supnet init``, ``supnet import`` and ``supnet stats`` through the real CLI on real databases."""

from __future__ import annotations

import json
import stat
import tomllib
from datetime import datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from federation import load_private_key, load_public_key, raw_public_key
from node.app import open_node
from node.cli import import_cmd, init_cmd, stats_cmd
from node.errors import ExitCode
from node.store import has_schema, make_engine
from node.supervision import node_stats

ITEMS = """实施编码,基本编码,事项名称,事项类型代码,行使层级代码,实施主体,实施主体代码,法定办结时限,承诺办结时限,是否收费
I1,B0001,餐饮服务许可,01,4,番禺区市场监督管理局,11440113MB2C12345X,20,10,0
"""
# C1 completed early, C2 completed on its promised day (on time, not early), C3 late, C4 open and returned.
ACCEPTANCES = """case_no,implementation_code,department,accepted_at
C1,I1,市场局,20260105T093000
C2,I1,市场局,20260105T093000
C3,I1,市场局,20260105T093000
C4,I1,市场局,20260105T093000
"""
EVENTS = """\
{"kind": "completion", "case_no": "C1", "completed_at": "20260107T100000"}
{"kind": "completion", "case_no": "C2", "completed_at": "20260119T170000"}
{"kind": "completion", "case_no": "C3", "completed_at": "20260210T090000"}
{"kind": "step", "case_no": "C4", "step_name": "审查", "action": "退回", "started_at": "20260106T090000"}
{"kind": "evaluation", "case_no": "C1", "satisfaction_code": 1, "evaluated_at": "20260108T090000"}
{"kind": "evaluation", "case_no": "C3", "satisfaction_code": 5, "evaluated_at": "20260211T090000"}
{"kind": "payment", "case_no": "C1", "amount": "12.50", "paid_at": "20260107T090000"}
"""


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    # Only the commands under test, so another command module cannot break these tests.
    cli = typer.Typer()
    for module in (init_cmd, import_cmd, stats_cmd):
        module.register(cli)
    return cli


def run(app: typer.Typer, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def write(path: Path, content: str) -> Path:
    path.write_text(content, encoding="utf-8")
    return path


def test_init_creates_config_database_and_signing_key(app: typer.Typer, tmp_path: Path) -> None:
    data_dir = tmp_path / "gz" / "py"
    code, out, err = run(app, "init", "--data-dir", data_dir, "--id", "gd.gz.py", "--level", "district", "--json")
    assert code == 0, err
    shown = json.loads(out)
    config = tomllib.loads((data_dir / "supnet.toml").read_text(encoding="utf-8"))
    assert (config["id"], config["level"]) == ("gd.gz.py", "district")
    engine = make_engine(f"sqlite:///{data_dir / 'node.db'}")
    assert has_schema(engine)
    engine.dispose()
    private = data_dir / "keys" / "report_signing.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    public = load_public_key(data_dir / "keys" / "report_signing.pub")
    assert raw_public_key(load_private_key(private).public_key()) == raw_public_key(public)
    assert shown["key_created"] is True

    # A second init refuses; --force rewrites the config but keeps the key already used for signing.
    code, _, err = run(app, "init", "--data-dir", data_dir, "--id", "gd.gz.py")
    assert code == ExitCode.CONFIG and "already exists" in err
    key_before = private.read_bytes()
    code, out, _ = run(app, "init", "--data-dir", data_dir, "--id", "gd.gz.py", "--level", "city", "--force", "--json")
    assert code == 0 and json.loads(out)["key_created"] is False
    assert private.read_bytes() == key_before
    assert tomllib.loads((data_dir / "supnet.toml").read_text(encoding="utf-8"))["level"] == "city"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--id", "GD!"], "node id"),
        (["--id", "gd", "--level", "county"], "--level"),
    ],
)
def test_init_rejects_bad_values(app: typer.Typer, tmp_path: Path, args: list[str], message: str) -> None:
    code, _, err = run(app, "init", "--data-dir", tmp_path / "n", *args)
    assert code == ExitCode.CONFIG and message in err  # a value for the config it would write
    assert not (tmp_path / "n" / "supnet.toml").exists()


def test_init_with_postgresql_url(app: typer.Typer, tmp_path: Path, pg_url: str) -> None:
    code, _, err = run(app, "init", "--data-dir", tmp_path / "n", "--id", "gd.gz", "--level", "city", "--db", pg_url)
    assert code == 0, err
    node = open_node(tmp_path / "n")
    try:
        assert node.config.store.url == pg_url
        assert node.engine.dialect.name == "postgresql" and has_schema(node.engine)
    finally:
        node.close()


def test_import_and_stats_commands(app: typer.Typer, tmp_path: Path, db_url: str) -> None:
    data_dir = tmp_path / "node"
    assert run(app, "init", "--data-dir", data_dir, "--id", "gd.gz.py", "--db", db_url)[0] == 0
    files = [
        write(tmp_path / "events.jsonl", EVENTS),
        write(tmp_path / "items.csv", ITEMS),
        write(tmp_path / "acceptances.csv", ACCEPTANCES),
    ]
    code, out, err = run(app, "import", "--data-dir", data_dir, *files)
    assert code == 0, err
    assert "import summary" in out and "completion" in out

    bad = write(tmp_path / "payments.jsonl", '{"case_no": "C2", "amount": "-3", "paid_at": "20260120T090000"}\n')
    code, out, _ = run(app, "import", "--data-dir", data_dir, "--json", bad, *files)
    assert code == 1  # something was rejected
    summary = json.loads(out)
    assert (summary["accepted"], summary["duplicates"], summary["rejected"]) == (0, 12, 1)
    assert summary["errors"][0]["reason"] == "negative_fee" and summary["errors"][0]["line"] == 1

    code, out, err = run(app, "import", "--data-dir", data_dir, bad)
    assert code == 1 and "negative_fee" in out and "payments.jsonl:1" in err

    node = open_node(data_dir, clock=lambda: datetime(2026, 3, 2, 12, 0))
    try:
        stats = node_stats(node)
    finally:
        node.close()
    counts, rates = stats["counts"], stats["rates"]
    assert {
        k: counts[k]
        for k in (
            "items",
            "cases_received",
            "cases_open",
            "cases_completed",
            "completed_early",
            "completed_on_time",
            "cases_returned",
            "steps",
            "payments",
            "evaluations",
        )
    } == {
        "items": 1,
        "cases_received": 4,
        "cases_open": 1,
        "cases_completed": 3,
        "completed_early": 1,
        "completed_on_time": 2,
        "cases_returned": 1,
        "steps": 1,
        "payments": 1,
        "evaluations": 2,
    }
    assert counts["open_overdue_promised"] == counts["open_overdue_legal"] == 1  # C4, accepted in January
    assert rates["early_completion_rate"] == pytest.approx(1 / 3)
    assert rates["on_time_rate"] == pytest.approx(2 / 3)
    assert rates["return_rate"] == pytest.approx(1 / 4)
    assert rates["satisfaction_rate"] == pytest.approx(1 / 2)
    assert rates["complaint_closure_rate"] is None
    assert stats["fees_yuan"] in {"12.50", "12.5"}

    code, out, _ = run(app, "stats", "--data-dir", data_dir, "--json")
    assert code == 0 and json.loads(out)["counts"]["cases_received"] == 4
    code, out, _ = run(app, "stats", "--data-dir", data_dir)
    assert code == 0 and "early-completion rate" in out and "33.3%" in out


def test_import_refuses_unknown_encoding_and_missing_node(app: typer.Typer, tmp_path: Path) -> None:
    file = write(tmp_path / "items.csv", ITEMS)
    code, _, err = run(app, "import", "--data-dir", tmp_path / "none", file)
    assert code == ExitCode.CONFIG and "supnet init" in err
    assert run(app, "init", "--data-dir", tmp_path / "n", "--id", "gd")[0] == 0
    code, _, err = run(app, "import", "--data-dir", tmp_path / "n", "--encoding", "latin-1", file)
    assert code != 0 and "latin-1" in err
