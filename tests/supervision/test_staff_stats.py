"""Per-post and per-handler figures (``supnet stats --by post|handler``) from the raw steps of a real node, on SQLite
and PostgreSQL: cases and steps handled, overdue steps (finished late or pending past the step limit), return steps
and the handler return rate (cases returned at least once by that handler ÷ cases whose steps it handled)."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from node.cli import stats_cmd
from node.supervision import staff_stats
from tests.harness.clocks import Clock
from tests.harness.rules import acceptance, items, load, make_node, step


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2025, 3, 3, 12, 0))


def test_stats_by_post_and_handler(tmp_path: Path, db_url: str, clock: Clock) -> None:
    node = make_node(tmp_path, db_url, clock)
    try:
        load(
            node,
            [
                *items(),
                *(acceptance(f"C-{n}") for n in range(1, 4)),
                # 受理岗 (张三): three cases, 1-workday limit; C-2's step ended late (due end of Tue 03-04).
                step(
                    "C-1",
                    "受理",
                    "pass",
                    "20250303T100000",
                    ended_at="20250303T110000",
                    handler="张三",
                    post="受理岗",
                    step_limit="1",
                ),
                step(
                    "C-2",
                    "受理",
                    "pass",
                    "20250303T100000",
                    ended_at="20250305T090000",
                    handler="张三",
                    post="受理岗",
                    step_limit="1",
                ),
                step(
                    "C-3",
                    "受理",
                    "pass",
                    "20250303T100000",
                    ended_at="20250303T120000",
                    handler="张三",
                    post="受理岗",
                    step_limit="1",
                ),
                # 审查岗: 李四 returns C-1 twice (one case, two return steps); 王五 handles C-2 and C-3, C-3 pending.
                step(
                    "C-1",
                    "审查",
                    "return",
                    "20250304T090000",
                    ended_at="20250304T100000",
                    handler="李四",
                    post="审查岗",
                    opinion="材料不全",
                    step_limit="2",
                ),
                step(
                    "C-1",
                    "审查",
                    "return",
                    "20250305T090000",
                    ended_at="20250305T100000",
                    handler="李四",
                    post="审查岗",
                    opinion="仍缺材料",
                    step_limit="2",
                ),
                step(
                    "C-2",
                    "审查",
                    "pass",
                    "20250305T090000",
                    ended_at="20250305T100000",
                    handler="王五",
                    post="审查岗",
                    step_limit="2",
                ),
                step(
                    "C-3",
                    "审查",
                    "pass",
                    "20250303T130000",
                    status_code="1",
                    handler="王五",
                    post="审查岗",
                    step_limit="2",
                ),
            ],
        )
        now = datetime(2025, 3, 10, 12)  # C-3's pending 审查 step was due at the end of Wed 03-05
        with node.engine.connect() as conn:
            posts = {row.key: row for row in staff_stats(conn, "post", now)}
            handlers = {row.key: row for row in staff_stats(conn, "handler", now)}
            march_4 = {row.key: row for row in staff_stats(conn, "handler", now, date(2025, 3, 4), date(2025, 3, 4))}
        intake, review = posts["受理岗"], posts["审查岗"]
        assert (intake.cases, intake.steps, intake.overdue_steps, intake.return_steps) == (3, 3, 1, 0)
        assert (review.cases, review.steps, review.steps_pending, review.overdue_steps) == (3, 4, 1, 1)
        assert (review.return_steps, review.cases_returned) == (2, 1)
        assert review.return_rate == pytest.approx(1 / 3)
        assert (handlers["李四"].cases, handlers["李四"].return_steps, handlers["李四"].return_rate) == (1, 2, 1.0)
        assert (handlers["王五"].cases, handlers["王五"].return_rate) == (2, 0.0)
        assert handlers["张三"].return_rate == 0.0
        assert set(march_4) == {"李四"} and march_4["李四"].steps == 1
    finally:
        node.close()

    app = typer.Typer()
    stats_cmd.register(app)
    clock.now = datetime(2025, 3, 10, 12)
    runner = CliRunner()
    result = runner.invoke(app, ["--data-dir", str(tmp_path), "--by", "handler", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["by"] == "handler"
    assert document["as_of"].endswith("+08:00")
    rows = {row["key"]: row for row in document["groups"]}
    assert rows["李四"]["return_rate"] == 1.0 and rows["李四"]["cases"] == 1
    table = runner.invoke(app, ["--data-dir", str(tmp_path), "--by", "post"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "审查岗" in table.stdout and "33.3%" in table.stdout
    refused = runner.invoke(app, ["--data-dir", str(tmp_path), "--by", "handler", "--subtree"])
    assert refused.exit_code == 2
