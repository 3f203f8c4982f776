"""`supnet calendar due` and `supnet calendar is-workday`, run through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import chinese_calendar
import pytest
import typer
from typer.testing import CliRunner, Result

from node.cli import calendar_cmd
from node.domain import clear_calendar_cache, library_calendar_years
from node.errors import ExitCode

NO_DATA_YEAR = library_calendar_years()[-1] + 1
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app() -> typer.Typer:
    clear_calendar_cache()
    application = typer.Typer()
    calendar_cmd.register(application)
    return application


def _run(app: typer.Typer, *args: str) -> Result:
    # Wide columns so rich does not wrap error messages in the middle of what the tests look for.
    return CliRunner(env={"COLUMNS": "400", "SUPNET_DATA_DIR": None}).invoke(app, ["calendar", *args])


def _holiday_file(tmp_path: Path) -> Path:
    path = tmp_path / "holidays.toml"
    # Operator data for the tests (not an official notice): 1 Jan and the first Monday are holidays.
    path.write_text(
        f'[{NO_DATA_YEAR}]\nholidays = ["{NO_DATA_YEAR}-01-01", "{NO_DATA_YEAR}-01-04"]\n', encoding="utf-8"
    )
    return path


def test_due_prints_the_iso_due_date_time(app: typer.Typer) -> None:
    result = _run(app, "due", "20250124T183000", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "2025-02-05T23:59:59+08:00\n"


def test_due_accepts_every_input_form_and_converts_offsets(app: typer.Typer) -> None:
    for accepted in ("20260306T183000", "20260306183000", "2026-03-06 18:30", "2026-03-06T10:30:00Z"):
        result = _run(app, "due", accepted, "1")
        assert result.stdout == "2026-03-09T23:59:59+08:00\n", accepted
    # In another zone, 01:00 Saturday in Shanghai is still Friday evening in UTC.
    result = _run(app, "due", "2026-03-07T01:00:00+08:00", "1", "--tz", "UTC")
    assert result.stdout == "2026-03-09T23:59:59+00:00\n"


def test_due_json_instant_stop_days_and_natural_days(app: typer.Typer) -> None:
    result = _run(app, "due", "2026-09-30T17:00:00", "1", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "accepted_at": "2026-09-30T17:00:00+08:00",
        "limit": 1,
        "unit": "working_days",
        "stop_workdays": 0,
        "due_at": "2026-10-08T23:59:59+08:00",
        "timezone": "Asia/Shanghai",
        "holidays_file": None,
    }
    assert _run(app, "due", "2026-03-07T11:00", "0").stdout == "2026-03-07T23:59:59+08:00\n"
    assert _run(app, "due", "2026-09-30T17:00", "1", "--stop-days", "2").stdout == "2026-10-10T23:59:59+08:00\n"
    assert _run(app, "due", "2026-09-30T17:00", "3", "--natural-days").stdout == "2026-10-03T23:59:59+08:00\n"


def test_due_explain_lists_the_days_counted(app: typer.Typer) -> None:
    result = _run(app, "due", "2025-01-24T18:00", "3", "--explain")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[-1] == "2025-02-05T23:59:59+08:00"
    table = "\n".join(lines[:-1])
    assert "2025-01-26" in table
    assert "adjusted working day for Spring Festival (春节)" in table
    assert "public holiday: Spring Festival (春节)" in table
    assert "2025-02-06" not in table


def test_due_in_a_year_with_no_data_fails_until_a_holiday_file_is_given(app: typer.Typer, tmp_path: Path) -> None:
    accepted = f"{NO_DATA_YEAR - 1}-12-31T10:00:00"
    result = _run(app, "due", accepted, "1")
    assert result.exit_code == ExitCode.CONFIG  # the fix is a holiday file: configuration
    assert result.stdout == ""
    assert f"[CALENDAR_NO_DATA] no holiday data for {NO_DATA_YEAR}" in result.stderr
    assert f"add a [{NO_DATA_YEAR}] table" in result.stderr
    assert "calendar.holidays_file" in result.stderr

    holidays = _holiday_file(tmp_path)
    result = _run(app, "due", accepted, "1", "--holidays", str(holidays))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{NO_DATA_YEAR}-01-05T23:59:59+08:00\n"


def test_due_uses_the_node_config_of_a_data_dir(app: typer.Typer, tmp_path: Path) -> None:
    _holiday_file(tmp_path)
    (tmp_path / "supnet.toml").write_text(
        'id = "gd.gz.py"\n[calendar]\ntimezone = "Asia/Urumqi"\nholidays_file = "holidays.toml"\n', encoding="utf-8"
    )
    result = _run(app, "due", f"{NO_DATA_YEAR - 1}-12-31T10:00:00", "1", "--data-dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["due_at"] == f"{NO_DATA_YEAR}-01-05T23:59:59+06:00"
    assert payload["timezone"] == "Asia/Urumqi"
    assert payload["holidays_file"] == str(tmp_path / "holidays.toml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("due", "2026-13-02", "5"), "[INVALID_RECORD] FROM '2026-13-02': month 13 out of range"),
        (("due", "soon", "5"), "FROM 'soon': not a date-time: expected YYYYMMDDThhmmss, YYYYMMDDhhmmss or ISO 8601"),
        (("due", "2026-03-02", "5", "--tz", "Mars/Olympus"), "--tz 'Mars/Olympus': unknown time zone"),
        (("due", "2026-03-02", "5", "--holidays", "/nonexistent/h.toml"), "holiday file /nonexistent/h.toml not found"),
        (("is-workday", "2026-02-30"), "DATE '2026-02-30': day 30 out of range for 2026-02"),
    ],
)
def test_bad_input_is_a_clear_error_with_its_exit_code(app: typer.Typer, args: tuple[str, ...], message: str) -> None:
    result = _run(app, *args)
    # A file the operator named that is not there is configuration; a value that cannot be read is usage.
    assert result.exit_code == (ExitCode.CONFIG if "holiday file" in message else ExitCode.USAGE)
    assert message in result.stderr


def test_a_negative_limit_is_refused(app: typer.Typer) -> None:
    result = _run(app, "due", "2026-03-02", "--", "-1")
    assert result.exit_code == 2
    assert "WORKDAYS" in result.stderr


@pytest.mark.parametrize(
    ("day", "exit_code", "line"),
    [
        ("2026-03-09", 0, "yes: 2026-03-09, Monday, working day"),
        ("20260307", 1, "no: 2026-03-07, Saturday, weekend"),
        ("2026-02-17", 1, "no: 2026-02-17, Tuesday, public holiday: Spring Festival (春节)"),
        (
            "2026-02-14",
            0,
            "yes: 2026-02-14, Saturday, adjusted working day for Spring Festival (春节)"
            " (weekend day made a working day)",
        ),
    ],
)
def test_is_workday_answers_and_exits_0_or_1(app: typer.Typer, day: str, exit_code: int, line: str) -> None:
    result = _run(app, "is-workday", day)
    assert result.exit_code == exit_code
    assert result.stdout == line + "\n"


def test_is_workday_json_and_holiday_file(app: typer.Typer, tmp_path: Path) -> None:
    result = _run(app, "is-workday", "2025-10-06", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "date": "2025-10-06",
        "is_workday": False,
        "kind": "holiday",
        "weekday": "Monday",
        "holiday_name": "Mid-autumn Festival (中秋)",
        "reason": "public holiday: Mid-autumn Festival (中秋)",
        "source": f"chinesecalendar {chinese_calendar.__version__}",
    }
    no_data = _run(app, "is-workday", f"{NO_DATA_YEAR}-01-04")
    assert no_data.exit_code == ExitCode.CONFIG
    assert f"no holiday data for {NO_DATA_YEAR}" in no_data.stderr
    holidays = _holiday_file(tmp_path)
    with_file = _run(app, "is-workday", f"{NO_DATA_YEAR}-01-04", "--holidays", str(holidays), "--json")
    assert with_file.exit_code == ExitCode.NO
    assert json.loads(with_file.stdout)["source"] == f"holiday file {holidays}"
    assert _run(app, "is-workday", f"{NO_DATA_YEAR}-01-05", "--holidays", str(holidays)).exit_code == 0


def test_the_installed_entry_point_runs_the_calendar_commands() -> None:
    env = {**os.environ, "COLUMNS": "400"}
    env.pop("SUPNET_DATA_DIR", None)
    command = [sys.executable, "-m", "node.cli.main", "calendar"]
    due = subprocess.run(
        [*command, "due", "20260213T160000", "2"], capture_output=True, text=True, env=env, check=False
    )
    assert due.returncode == 0, due.stderr
    assert due.stdout.strip() == "2026-02-24T23:59:59+08:00"
    holiday = subprocess.run(
        [*command, "is-workday", "2026-10-01", "--holidays", str(REPO_ROOT / "config" / "holidays.example.toml")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert holiday.returncode == 1
    assert holiday.stdout.strip() == "no: 2026-10-01, Thursday, public holiday"
