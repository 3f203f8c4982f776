"""Schema upgrades as operators meet them: read-only commands never migrate, ``supnet db current|upgrade [--sql]``,
``store.auto_migrate``, and the plain ``alembic`` command on a node — on real nodes taken down to an older revision
with Alembic, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from node.cli import (
    alerts_cmd,
    audit_cmd,
    complaints_cmd,
    db_cmd,
    import_cmd,
    init_cmd,
    items_cmd,
    metrics_cmd,
    notifications_cmd,
    scan_cmd,
    scores_cmd,
    stats_cmd,
    subtree_cmd,
)
from node.config import load_config, save_config
from node.store import downgrade, head_revision, make_engine, schema_state

REPO = Path(__file__).resolve().parents[2]
OLD = "0012"  # an older revision every later head still upgrades from; 0013 adds accountability_measures

ITEMS = """实施编码,基本编码,事项名称,事项类型代码,行使层级代码,实施主体,实施主体代码,法定办结时限,承诺办结时限,是否收费
I1,B0001,餐饮服务许可,01,4,番禺区市场监督管理局,11440113MB2C12345X,20,10,0
"""
ACCEPTANCES = """case_no,implementation_code,department,accepted_at
C1,I1,市场局,20260105T093000
C2,I1,市场局,20260106T093000
"""

# Read-only commands and the arguments they need besides --data-dir.
READ_ONLY: list[tuple[str, ...]] = [
    ("stats",),
    ("stats", "--by", "month"),
    ("alerts",),
    ("complaints",),
    ("evaluations",),
    ("notifications",),
    ("items", "list"),
    ("audit",),
    ("audit", "--verify"),
    ("metrics", "check"),
    ("scores", "--month", "2026-01"),
    ("subtree",),
]


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    from node.cli import evaluations_cmd

    app = typer.Typer()
    for module in (
        init_cmd,
        import_cmd,
        stats_cmd,
        alerts_cmd,
        complaints_cmd,
        evaluations_cmd,
        notifications_cmd,
        items_cmd,
        audit_cmd,
        metrics_cmd,
        scores_cmd,
        subtree_cmd,
        scan_cmd,
        db_cmd,
    ):
        module.register(app)
    return app


def run(cli: typer.Typer, *args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    return result.exit_code, result.stdout, result.stderr


def _old_node(cli: typer.Typer, tmp_path: Path, db_url: str, revision: str = OLD) -> tuple[Path, str]:
    """A real node with records, then taken down to ``revision`` by Alembic (what an older supnet left)."""
    data_dir = tmp_path / "py"
    assert run(cli, "init", "--data-dir", data_dir, "--id", "gd.gz.py", "--db", db_url)[0] == 0
    (tmp_path / "items.csv").write_text(ITEMS, encoding="utf-8")
    (tmp_path / "acceptances.csv").write_text(ACCEPTANCES, encoding="utf-8")
    code, _, err = run(cli, "import", "--data-dir", data_dir, tmp_path / "items.csv", tmp_path / "acceptances.csv")
    assert code == 0, err
    engine = make_engine(db_url)
    try:
        downgrade(engine, revision)
        assert schema_state(engine).current == revision
    finally:
        engine.dispose()
    return data_dir, db_url


def _fingerprint(db_url: str) -> tuple[str | None, list[str], list[tuple[object, ...]], int]:
    """What must not change: revision, tables, audit rows, cases."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            tables = sorted(inspect(conn).get_table_names())
            audit = [tuple(row) for row in conn.execute(text("SELECT seq, action, hash FROM audit_log ORDER BY seq"))]
            cases = int(conn.execute(text("SELECT count(*) FROM cases")).scalar_one())
        return schema_state(engine).current, tables, audit, cases
    finally:
        engine.dispose()


def test_read_only_commands_refuse_an_old_schema_naming_the_command_and_change_nothing(
    cli: typer.Typer, tmp_path: Path, db_url: str
) -> None:
    data_dir, url = _old_node(cli, tmp_path, db_url)
    before = _fingerprint(url)
    assert "accountability_measures" not in before[1]
    for command in READ_ONLY:
        code, out, err = run(cli, *command, "--data-dir", data_dir)
        assert code != 0, f"{command} ran on an old schema: {out}"
        assert "SCHEMA_OUTDATED" in err and f"supnet db upgrade --data-dir {data_dir}" in err, (command, err)
        assert "Traceback" not in err
    assert _fingerprint(url) == before


def test_db_current_and_upgrade_bring_the_node_to_head_and_audit_it(
    cli: typer.Typer, tmp_path: Path, db_url: str
) -> None:
    data_dir, url = _old_node(cli, tmp_path, db_url)
    code, out, _ = run(cli, "db", "current", "--data-dir", data_dir)
    assert code == 1 and OLD in out and head_revision() in out and "supnet db upgrade" in out
    code, out, err = run(cli, "db", "upgrade", "--data-dir", data_dir)
    assert code == 0, err
    assert f"{OLD} → {head_revision()}" in out
    code, out, _ = run(cli, "db", "current", "--data-dir", data_dir)
    assert code == 0 and f"{head_revision()} (head)" in out
    revision, tables, audit, cases = _fingerprint(url)
    assert revision == head_revision() and "accountability_measures" in tables and cases == 2
    assert audit[-1][1] == "db.upgraded"
    # Now the read-only commands run, on the figures the upgrade rebuilt.
    code, out, err = run(cli, "stats", "--data-dir", data_dir, "--json")
    assert code == 0, err
    code, _, err = run(cli, "metrics", "check", "--data-dir", data_dir)
    assert code == 0, err


def test_writing_commands_migrate_unless_auto_migrate_is_off(cli: typer.Typer, tmp_path: Path) -> None:
    data_dir, url = _old_node(cli, tmp_path, f"sqlite:///{tmp_path}/node.db")
    config = load_config(data_dir)
    save_config(data_dir, config.model_copy(update={"store": config.store.model_copy(update={"auto_migrate": False})}))
    code, _, err = run(cli, "scan", "--data-dir", data_dir)
    assert code != 0 and "SCHEMA_OUTDATED" in err and "supnet db upgrade" in err
    assert _fingerprint(url)[0] == OLD
    save_config(data_dir, config)  # auto_migrate back on (the default)
    code, _, err = run(cli, "scan", "--data-dir", data_dir)
    assert code == 0, err
    assert _fingerprint(url)[0] == head_revision()


def test_with_auto_migrate_off_db_upgrade_is_the_way(cli: typer.Typer, tmp_path: Path) -> None:
    data_dir, _ = _old_node(cli, tmp_path, f"sqlite:///{tmp_path}/node.db", "0011")
    config = load_config(data_dir)
    save_config(data_dir, config.model_copy(update={"store": config.store.model_copy(update={"auto_migrate": False})}))
    code, out, err = run(cli, "db", "upgrade", "--data-dir", data_dir, "--json")
    assert code == 0, err
    assert json.loads(out) == {"from": "0011", "to": head_revision(), "upgraded": True, "figures_rebuilt": True}
    assert run(cli, "scan", "--data-dir", data_dir)[0] == 0


def test_read_only_commands_wait_for_the_figures_an_upgrade_asked_to_rebuild(cli: typer.Typer, tmp_path: Path) -> None:
    """`alembic upgrade head` alone leaves the rebuild flag of 0012 set: readers send the operator to db upgrade."""
    data_dir, url = _old_node(cli, tmp_path, f"sqlite:///{tmp_path}/node.db", "0011")
    env = {**os.environ, "SUPNET_DATA_DIR": str(data_dir)}
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, env=env, check=True)
    assert _fingerprint(url)[0] == head_revision()
    code, _, err = run(cli, "stats", "--data-dir", data_dir)
    assert code != 0 and "rebuild" in err and f"supnet db upgrade --data-dir {data_dir}" in err
    assert run(cli, "db", "upgrade", "--data-dir", data_dir)[0] == 0
    assert run(cli, "stats", "--data-dir", data_dir)[0] == 0


@pytest.mark.postgres
def test_db_upgrade_sql_prints_the_ddl_a_dba_applies_with_psql(cli: typer.Typer, tmp_path: Path, pg_url: str) -> None:
    data_dir, url = _old_node(cli, tmp_path, pg_url)
    code, sql, err = run(cli, "db", "upgrade", "--sql", "--data-dir", data_dir)
    assert code == 0, err
    assert "CREATE TABLE accountability_measures" in sql  # 0013's DDL
    assert "CREATE TABLE child_catalogues" not in sql  # 0012's: already there
    assert f"UPDATE alembic_version SET version_num='{head_revision()}'" in sql
    assert "BEGIN;" in sql and "COMMIT;" in sql
    schema = make_url(url).query["options"]
    assert f'SET search_path TO "{str(schema).split("=", 1)[1]}";' in sql
    assert _fingerprint(url)[0] == OLD  # printing ran nothing
    # The DBA reviews it and applies it with psql; the node is then at head.
    parsed = make_url(url)
    dsn = f"postgresql://{parsed.username}@{parsed.host}:{parsed.port}/{parsed.database}"
    subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "-q", dsn], input=sql, text=True, check=True, capture_output=True)
    assert _fingerprint(url)[0] == head_revision()
    code, out, _ = run(cli, "db", "current", "--data-dir", data_dir)
    assert code == 0 and "(head)" in out


def test_db_upgrade_sql_on_sqlite_renders_what_it_can_and_says_when_it_cannot(cli: typer.Typer, tmp_path: Path) -> None:
    data_dir, url = _old_node(cli, tmp_path, f"sqlite:///{tmp_path}/node.db")
    code, sql, err = run(cli, "db", "upgrade", "--sql", "--data-dir", data_dir)
    assert code == 0, err
    assert "CREATE TABLE accountability_measures" in sql
    engine = make_engine(url)
    try:
        downgrade(engine, "0006")  # 0007 alters a column: SQLite rebuilds the table, which needs the live file
    finally:
        engine.dispose()
    code, _, err = run(cli, "db", "upgrade", "--sql", "--data-dir", data_dir)
    assert code != 0 and "cannot be written out as SQL for SQLite" in err and "supnet backup" in err
    assert _fingerprint(url)[0] == "0006"


def test_the_alembic_command_works_on_a_node(cli: typer.Typer, tmp_path: Path) -> None:
    data_dir, _ = _old_node(cli, tmp_path, f"sqlite:///{tmp_path}/node.db")
    alembic = [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini")]
    current = subprocess.run([*alembic, "-x", f"data_dir={data_dir}", "current"], capture_output=True, text=True)
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == OLD
    upgraded = subprocess.run(
        [*alembic, "upgrade", "head"], env={**os.environ, "SUPNET_DATA_DIR": str(data_dir)}, capture_output=True
    )
    assert upgraded.returncode == 0, upgraded.stderr
    current = subprocess.run([*alembic, "-x", f"data_dir={data_dir}", "current"], capture_output=True, text=True)
    assert current.stdout.strip() == f"{head_revision()} (head)"
    env = {key: value for key, value in os.environ.items() if not key.startswith("SUPNET_")}
    lost = subprocess.run([*alembic, "current"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert lost.returncode != 0 and "-x data_dir=DATA_DIR" in lost.stderr
