"""The approval domain: date-times, the working-day calendar, deadlines (no database or gRPC code here)."""

from node.domain.calendar import (
    WorkCalendar,
    clear_calendar_cache,
    library_calendar_years,
    load_calendar,
    parse_holiday_file,
)
from node.domain.datetimes import format_compact, parse_date, parse_datetime, to_iso, to_local_naive
from node.domain.deadlines import (
    END_OF_DAY,
    UNIT_NATURAL_DAYS,
    UNIT_WORKING_DAYS,
    due_at,
    is_early,
    procedure_workdays,
    stop_workdays,
    workdays_used,
)
from node.domain.standard import (
    FIELD_NAMES,
    FREE_TEXT_MAX_LENGTH,
    KIND_ALIASES,
    KIND_ORDER,
    RECORD_FIELDS,
    STEP_ACTIONS,
    FieldSpec,
    header_map,
)

__all__ = [
    "END_OF_DAY",
    "FIELD_NAMES",
    "FREE_TEXT_MAX_LENGTH",
    "KIND_ALIASES",
    "KIND_ORDER",
    "RECORD_FIELDS",
    "STEP_ACTIONS",
    "UNIT_NATURAL_DAYS",
    "UNIT_WORKING_DAYS",
    "FieldSpec",
    "WorkCalendar",
    "clear_calendar_cache",
    "due_at",
    "format_compact",
    "header_map",
    "is_early",
    "library_calendar_years",
    "load_calendar",
    "parse_date",
    "parse_datetime",
    "parse_holiday_file",
    "procedure_workdays",
    "stop_workdays",
    "to_iso",
    "to_local_naive",
    "workdays_used",
]
