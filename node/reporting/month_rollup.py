"""Children's month roll-up: ``child_month_buckets`` kept equal to Σ ``child_buckets`` per month, and read back.

Applying a child report rewrites the child's months that the report touched (its buckets' days; a FULL report's
whole window) from its day buckets, in the receiver's transaction: the roll-up is derived, never trusted on its own.
A figure over a range of days reads the months wholly inside the range from the roll-up and only the partial months
at its ends from the day buckets, so month and period figures cost a few rows per child (docs/architecture.md).
``month_rollup_differences`` names every roll-up row that is not the sum of its day buckets (``metrics check``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, cast

from sqlalchemy import BindParameter, Connection, Table, bindparam, delete, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from federation import COUNTER_FIELDS, DriverStatement
from node.store import ChildBucket, ChildMonthBucket, month_start_sql

_days = cast(Table, ChildBucket.__table__)
_months = cast(Table, ChildMonthBucket.__table__)
# What a child sum may be grouped by: the child, its month ('YYYY-MM'), the item's basic code or type.
GROUPS = ("child_id", "month", "basic_code", "item_type_code")

CounterDict = dict[str, int]


def month_start(day: date) -> date:
    """The first day of ``day``'s month."""
    return day.replace(day=1)


def next_month(day: date) -> date:
    """The first day of the month after ``day``'s."""
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _month_runs(months: Iterable[date]) -> list[tuple[date, date]]:
    """Sorted month starts as contiguous runs [first month's first day, day after the last month)."""
    runs: list[tuple[date, date]] = []
    for month in sorted(set(months)):
        if runs and runs[-1][1] == month:
            runs[-1] = (runs[-1][0], next_month(month))
        else:
            runs.append((month, next_month(month)))
    return runs


def months_touched(days: Iterable[date], windows: Iterable[tuple[date, date]] = ()) -> set[date]:
    """The months (first days) of the given days and of every day of the inclusive windows."""
    months = {month_start(day) for day in days}
    for first, last in windows:
        month = month_start(first)
        while month <= last:
            months.add(month)
            month = next_month(month)
    return months


ItemKey = tuple[str, str]


@dataclass(slots=True)
class RollupScope:
    """What of one child's roll-up a batch of its reports may have changed: whole months, or keys of a month."""

    months: set[date] = field(default_factory=set)
    keys: dict[date, set[ItemKey]] = field(default_factory=dict)

    def add_keys(self, day: date, keys: Iterable[ItemKey]) -> None:
        """The (basic code, item type) keys an incremental report named on one day."""
        self.keys.setdefault(month_start(day), set()).update(keys)

    def add_window(self, first: date, last: date) -> None:
        """Every month of a FULL report's window (it may zero any key there)."""
        self.months |= months_touched((), [(first, last)])


# Above this many keys of one month, the whole month is summed again (one range read instead of a long key list).
_KEYED_REFRESH_MAX = 200
# A keyed refresh names its keys in binds; the key list is padded (last key repeated, harmless in IN) to one of
# these sizes, so a handful of statements per dialect serve every report.
_KEY_LIST_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, _KEYED_REFRESH_MAX)


def _source(dialect: str, child_id: Any, first: Any, end: Any) -> Any:
    c = _days.c
    month = month_start_sql(dialect, c.day)
    return (
        select(c.child_id, month, c.basic_code, c.item_type_code, *(func.sum(c[name]) for name in COUNTER_FIELDS))
        .where(c.child_id == child_id, c.day >= first, c.day < end)
        .group_by(c.child_id, month, c.basic_code, c.item_type_code)
    )


_ROLLUP_COLUMNS = ["child_id", "month", "basic_code", "item_type_code", *COUNTER_FIELDS]
_CHILD: BindParameter[str] = bindparam("r_child")
_FIRST: BindParameter[date] = bindparam("r_first")
_END: BindParameter[date] = bindparam("r_end")


# Applying a child report refreshes its months on every report: the statements are built and compiled once per
# dialect (and key-list size) and run on the driver (DriverStatement); building them per report cost more than
# running them.
@functools.cache
def _whole_months_statements(dialect: str) -> tuple[DriverStatement, DriverStatement]:
    """DELETE + INSERT .. SELECT of a child's roll-up rows of months [r_first, r_end) from its day buckets."""
    m = _months.c
    return (
        DriverStatement(delete(_months).where(m.child_id == _CHILD, m.month >= _FIRST, m.month < _END)),
        DriverStatement(_months.insert().from_select(_ROLLUP_COLUMNS, _source(dialect, _CHILD, _FIRST, _END))),
    )


@functools.cache
def _keyed_month_statement(dialect: str, size: int) -> DriverStatement:
    """Upsert of ``size`` keys (binds k_basic_N, k_type_N) of the month starting r_first (ending r_end).

    An upsert rather than DELETE + INSERT: it writes only the counters of rows that exist, not their index entries.
    It rewrites exactly what the pair would, as every key named has day buckets: the keys come from the report's
    own buckets, upserted just before, and day buckets are zeroed, never deleted.
    """
    keys = [tuple_(bindparam(f"k_basic_{n}"), bindparam(f"k_type_{n}")) for n in range(size)]
    d = _days.c
    source = _source(dialect, _CHILD, _FIRST, _END).where(tuple_(d.basic_code, d.item_type_code).in_(keys))
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(_months).from_select(_ROLLUP_COLUMNS, source)
    return DriverStatement(
        insert.on_conflict_do_update(
            index_elements=[_months.c[name] for name in ("child_id", "month", "basic_code", "item_type_code")],
            set_={name: insert.excluded[name] for name in COUNTER_FIELDS},
        )
    )


def refresh_child_months(conn: Connection, child_id: str, months: Iterable[date] | RollupScope) -> None:
    """Rewrite the child's roll-up rows of these months (first days), or of a scope's keys, from its day buckets.

    A scope's keys are those of a report's buckets, already in the day buckets (see ``_keyed_month_statement``).
    """
    scope = months if isinstance(months, RollupScope) else RollupScope(months=set(months))
    whole = set(scope.months)
    keyed = {month: keys for month, keys in scope.keys.items() if month not in whole}
    whole |= {month for month, keys in keyed.items() if len(keys) > _KEYED_REFRESH_MAX}
    dialect = conn.dialect.name
    # The driver gets dates as ISO text on SQLite (how SQLAlchemy stores Date there), as dates elsewhere.
    as_bind: Callable[[date], object] = date.isoformat if dialect == "sqlite" else _same_date
    remove, rewrite = _whole_months_statements(dialect)
    for first, end in _month_runs(whole):
        params = {"r_child": child_id, "r_first": as_bind(first), "r_end": as_bind(end)}
        remove.execute(conn, params)
        rewrite.execute(conn, params)
    for month, keys in sorted(keyed.items()):
        if month in whole:
            continue
        # Only the named keys of the month: an incremental report's few changed buckets.
        pairs = sorted(keys)
        size = next(size for size in _KEY_LIST_SIZES if size >= len(pairs))
        pairs += [pairs[-1]] * (size - len(pairs))
        params = {"r_child": child_id, "r_first": as_bind(month), "r_end": as_bind(next_month(month))}
        for number, (basic_code, item_type_code) in enumerate(pairs):
            params[f"k_basic_{number}"] = basic_code
            params[f"k_type_{number}"] = item_type_code
        _keyed_month_statement(dialect, size).execute(conn, params)


def _same_date(day: date) -> object:
    return day


@dataclass(frozen=True, slots=True)
class PeriodSplit:
    """A range of days as whole months (read from the roll-up) and partial months (read from the day buckets)."""

    # Whole months: month starts within [months_from, months_to] (None: unbounded); empty when ``no_months``.
    months_from: date | None
    months_to: date | None
    no_months: bool
    # Inclusive day ranges, each inside one month.
    edges: tuple[tuple[date, date], ...]


def _last_day(day: date) -> date:
    return next_month(day) - timedelta(days=1)


def split_period(day_from: date | None, day_to: date | None) -> PeriodSplit:
    """Split [day_from, day_to] (either end open) into whole months and the partial months at its ends."""
    if day_from is not None and day_to is not None and day_from > day_to:
        return PeriodSplit(None, None, True, ())
    # The first and last whole month inside the range (None: the range is open at that end).
    first_whole = None if day_from is None else (day_from if day_from.day == 1 else next_month(day_from))
    last_whole = None
    if day_to is not None:
        last_whole = (
            month_start(day_to) if _last_day(day_to) == day_to else month_start(month_start(day_to) - timedelta(days=1))
        )
    bounded = day_from is not None and day_to is not None and first_whole is not None and last_whole is not None
    if bounded and first_whole > last_whole:  # type: ignore[operator]
        # No whole month inside: one partial month, or two adjacent ones.
        assert day_from is not None and day_to is not None
        if month_start(day_from) == month_start(day_to):
            return PeriodSplit(None, None, True, ((day_from, day_to),))
        return PeriodSplit(None, None, True, ((day_from, _last_day(day_from)), (month_start(day_to), day_to)))
    edges: list[tuple[date, date]] = []
    if day_from is not None and day_from.day != 1:
        edges.append((day_from, _last_day(day_from)))
    if day_to is not None and _last_day(day_to) != day_to:
        edges.append((month_start(day_to), day_to))
    return PeriodSplit(first_whole, last_whole, False, tuple(edges))


def _group_key(row: Any, group: Sequence[str], month: str | None) -> tuple[str, ...]:
    key = []
    for name in group:
        if name == "month" and month is not None:
            key.append(month)
        elif name == "month":
            value = row["month"]
            key.append((value.isoformat() if isinstance(value, date) else str(value))[:7])
        else:
            key.append(str(row[name]))
    return tuple(key)


def child_sums(
    conn: Connection,
    group: Sequence[str],
    *,
    day_from: date | None = None,
    day_to: date | None = None,
    basic_code: str = "",
    item_type_code: str = "",
) -> dict[tuple[str, ...], CounterDict]:
    """Σ of every child's day buckets in [day_from, day_to] (filters applied), grouped by ``group`` (of GROUPS).

    Equal to summing ``child_buckets`` directly, key for key (a key is present when some day bucket of it is in
    range), but whole months are read from ``child_month_buckets``.
    """
    unknown = [name for name in group if name not in GROUPS]
    if unknown:
        raise ValueError(f"cannot group child sums by {', '.join(unknown)}")
    split = split_period(day_from, day_to)
    result: dict[tuple[str, ...], CounterDict] = {}

    def fold(rows: Iterable[Any], month: str | None) -> None:
        for row in rows:
            mapping = row._mapping
            if not mapping["bucket_rows"]:
                continue  # without grouping columns, SUM over no rows still yields one row
            key = _group_key(mapping, group, month)
            total = result.get(key)
            if total is None:
                result[key] = {name: int(mapping[name] or 0) for name in COUNTER_FIELDS}
            else:
                for name in COUNTER_FIELDS:
                    total[name] += int(mapping[name] or 0)

    def sums(table: Table, conditions: list[ColumnElement[bool]], columns: Sequence[str]) -> Any:
        if basic_code:
            conditions.append(table.c.basic_code == basic_code)
        if item_type_code:
            conditions.append(table.c.item_type_code == item_type_code)
        keys = [table.c[name] for name in columns]
        counters = [func.sum(table.c[name]).label(name) for name in COUNTER_FIELDS]
        statement = select(*keys, *counters, func.count().label("bucket_rows")).where(*conditions)
        return conn.execute(statement.group_by(*keys) if keys else statement)

    if not split.no_months:
        conditions: list[ColumnElement[bool]] = []
        if split.months_from is not None:
            conditions.append(_months.c.month >= split.months_from)
        if split.months_to is not None:
            conditions.append(_months.c.month <= split.months_to)
        fold(sums(_months, conditions, group), None)
    day_group = [name for name in group if name != "month"]
    for first, last in split.edges:
        # Each edge lies inside one month: its rows are that month's.
        fold(sums(_days, [_days.c.day >= first, _days.c.day <= last], day_group), first.isoformat()[:7])
    return result


def month_rollup_differences(conn: Connection, limit: int = 20) -> list[str]:
    """Every roll-up row that differs from the sum of its day buckets (or is missing, or has no day bucket)."""
    summed = child_sums_from_days(conn)
    c = _months.c
    stored: dict[tuple[str, ...], CounterDict] = {}
    for row in conn.execute(
        select(c.child_id, c.month, c.basic_code, c.item_type_code, *(c[n] for n in COUNTER_FIELDS))
    ):
        mapping = row._mapping
        key = _group_key(mapping, ("child_id", "month", "basic_code", "item_type_code"), None)
        stored[key] = {name: int(mapping[name] or 0) for name in COUNTER_FIELDS}
    found: list[str] = []
    for key in sorted(set(stored) | set(summed)):
        child_id, month, basic, item_type = key
        where = f"child {child_id} month {month} / item {basic or '-'} / type {item_type or '-'}"
        if key not in stored:
            found.append(f"{where}: no month roll-up row, its day buckets hold figures")
        elif key not in summed:
            found.append(f"{where}: month roll-up row without any day bucket")
        else:
            for name in COUNTER_FIELDS:
                if stored[key][name] != summed[key][name]:
                    found.append(
                        f"{where}: {name} month roll-up {stored[key][name]}, day buckets sum {summed[key][name]}"
                    )
        if len(found) >= limit:
            break
    return found[:limit]


def child_sums_from_days(conn: Connection) -> dict[tuple[str, ...], CounterDict]:
    """Σ ``child_buckets`` per (child, month 'YYYY-MM', basic code, item type), straight from the day buckets."""
    c = _days.c
    month = month_start_sql(conn, c.day).label("month")
    keys = [c.child_id, month, c.basic_code, c.item_type_code]
    rows = conn.execute(
        select(*keys, *(func.sum(c[name]).label(name) for name in COUNTER_FIELDS)).group_by(
            c.child_id, month, c.basic_code, c.item_type_code
        )
    )
    result: dict[tuple[str, ...], CounterDict] = {}
    for row in rows:
        mapping = row._mapping
        key = _group_key(mapping, ("child_id", "month", "basic_code", "item_type_code"), None)
        result[key] = {name: int(mapping[name] or 0) for name in COUNTER_FIELDS}
    return result


__all__ = [
    "GROUPS",
    "PeriodSplit",
    "RollupScope",
    "child_sums",
    "child_sums_from_days",
    "month_rollup_differences",
    "months_touched",
    "refresh_child_months",
    "split_period",
]
