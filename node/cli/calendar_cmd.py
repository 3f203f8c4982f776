"""`supnet calendar`: check a due date-time or a working day, e.g. when a deadline is disputed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich.table import Table

from node.cli.common import JsonFlag, console, handle_errors, print_json
from node.config import load_config
from node.domain import (
    UNIT_NATURAL_DAYS,
    UNIT_WORKING_DAYS,
    WorkCalendar,
    due_at,
    load_calendar,
    parse_date,
    parse_datetime,
    to_iso,
)
from node.errors import ExitCode, ValidationError

DEFAULT_TIMEZONE = "Asia/Shanghai"

HolidaysOption = Annotated[
    Path | None,
    typer.Option(
        "--holidays",
        help="Operator holiday TOML (format: config/holidays.example.toml); wins over the node's holidays_file.",
    ),
]
TimezoneOption = Annotated[
    str | None, typer.Option("--tz", help=f"Time zone of the node (default: the node's, else {DEFAULT_TIMEZONE}).")
]
NodeDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        "-d",
        help="Use this node's calendar settings (holiday file, time zone) from its supnet.toml.",
        envvar="SUPNET_DATA_DIR",
    ),
]


@dataclass(frozen=True)
class _CalendarSettings:
    """The calendar and zone a command works with, and where they came from."""

    calendar: WorkCalendar
    tz: ZoneInfo
    holidays_file: Path | None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"--tz '{name}': unknown time zone", field="tz", reason="unknown time zone") from None


def _settings(holidays: Path | None, tz_name: str | None, data_dir: Path | None) -> _CalendarSettings:
    """Explicit options win; otherwise the node's config (if a data dir is given); otherwise the defaults."""
    holidays_file = holidays
    zone_name = tz_name
    if data_dir is not None:
        config = load_config(data_dir)
        if holidays_file is None and config.calendar.holidays_file:
            holidays_file = data_dir / config.calendar.holidays_file
        if zone_name is None:
            zone_name = config.calendar.timezone
    return _CalendarSettings(load_calendar(holidays_file), _zone(zone_name or DEFAULT_TIMEZONE), holidays_file)


def _explain_table(calendar: WorkCalendar, accepted_day: date, due_day: date) -> Table:
    """Every day from the day after acceptance through the due day, with whether and why it counts."""
    table = Table(title=f"Days counted from {accepted_day.isoformat()}")
    for column in ("date", "weekday", "counts", "why", "working day #"):
        table.add_column(column)
    count = 0
    day = accepted_day + timedelta(days=1)
    while day <= due_day:
        info = calendar.day_info(day)
        count += info.is_workday
        table.add_row(day.isoformat(), info.weekday_name, "yes" if info.is_workday else "no", info.reason(), str(count))
        day += timedelta(days=1)
    return table


def register(app: typer.Typer) -> None:
    """Add the `calendar` command group."""
    calendar_app = typer.Typer(
        name="calendar", help="Working-day calendar: due date-times and working days.", no_args_is_help=True
    )
    app.add_typer(calendar_app, name="calendar")

    @calendar_app.command("due")
    @handle_errors
    def due(
        accepted: Annotated[
            str,
            typer.Argument(metavar="FROM", help="Acceptance time: YYYYMMDDThhmmss, YYYYMMDDhhmmss or ISO 8601."),
        ],
        workdays: Annotated[int, typer.Argument(metavar="WORKDAYS", min=0, help="Time limit (0 = instant case).")],
        *,
        holidays: HolidaysOption = None,
        tz: TimezoneOption = None,
        stop_days: Annotated[
            int, typer.Option("--stop-days", min=0, help="Working days of special procedures (clock stopped).")
        ] = 0,
        natural_days: Annotated[
            bool, typer.Option("--natural-days", help="The limit is in natural days (自然日), not working days.")
        ] = False,
        explain: Annotated[bool, typer.Option("--explain", help="Also list every day counted and why.")] = False,
        data_dir: NodeDirOption = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Print the due date-time (ISO 8601) of a case accepted at FROM with a limit of WORKDAYS."""
        settings = _settings(holidays, tz, data_dir)
        try:
            accepted_at = parse_datetime(accepted, settings.tz)
        except ValueError as exc:
            raise ValidationError(f"FROM '{accepted}': {exc}", field="FROM", reason=str(exc)) from None
        unit = UNIT_NATURAL_DAYS if natural_days else UNIT_WORKING_DAYS
        due_time = due_at(settings.calendar, accepted_at, workdays, unit, stop_days)
        if as_json:
            result: dict[str, Any] = {
                "accepted_at": to_iso(accepted_at, settings.tz),
                "limit": workdays,
                "unit": "natural_days" if natural_days else "working_days",
                "stop_workdays": stop_days,
                "due_at": to_iso(due_time, settings.tz),
                "timezone": settings.tz.key,
                "holidays_file": str(settings.holidays_file) if settings.holidays_file else None,
            }
            print_json(result)
            return
        if explain:
            console.print(_explain_table(settings.calendar, accepted_at.date(), due_time.date()))
        typer.echo(to_iso(due_time, settings.tz))

    @calendar_app.command("is-workday")
    @handle_errors
    def is_workday(
        day_text: Annotated[str, typer.Argument(metavar="DATE", help="The day: YYYY-MM-DD or YYYYMMDD.")],
        *,
        holidays: HolidaysOption = None,
        data_dir: NodeDirOption = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Say whether DATE is a working day and why; exit 0 for a working day, 1 otherwise."""
        settings = _settings(holidays, None, data_dir)
        try:
            day = parse_date(day_text, settings.tz)
        except ValueError as exc:
            raise ValidationError(f"DATE '{day_text}': {exc}", field="DATE", reason=str(exc)) from None
        info = settings.calendar.day_info(day)
        if as_json:
            print_json(
                {
                    "date": day.isoformat(),
                    "is_workday": info.is_workday,
                    "kind": info.kind,
                    "weekday": info.weekday_name,
                    "holiday_name": info.holiday_name,
                    "reason": info.reason(),
                    "source": info.source,
                }
            )
        else:
            typer.echo(f"{'yes' if info.is_workday else 'no'}: {day.isoformat()}, {info.describe()}")
        if not info.is_workday:
            raise typer.Exit(ExitCode.NO)
