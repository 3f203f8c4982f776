"""The children's month roll-up equals the sum of their day buckets after reports arrive (SQLite and PostgreSQL).

Reports go through the node's real apply (apply_child_reports) on a migrated database: incremental reports that
add, replace and extend buckets across month ends, a FULL report that zeroes what it does not name in its window,
several reports of one child in one batch. After each, every roll-up row must be its day buckets' sum, and any
range of days (whole months, partial months, open ends, filters) must give the same sums as the day buckets alone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select, update

from federation import COUNTER_FIELDS, AcceptedReport
from federation.proto.v1.common_pb2 import Counters, SignedEnvelope
from federation.proto.v1.report_pb2 import Bucket, ReportBody, ReportKind
from node.reporting import apply_child_reports, child_sums, month_rollup_differences
from node.store import ChildBucket, ChildMonthBucket

START = date(2025, 12, 20)
CODES = ("0000000001", "0000000002", "0000000003")
TYPES = ("01", "07")
GROUPINGS: tuple[tuple[str, ...], ...] = (("child_id",), ("month",), ("basic_code",), ("child_id", "month"))


def _report(
    child_id: str,
    sequence: int,
    buckets: Sequence[tuple[date, str, str, int]],
    *,
    full_window: tuple[date, date] | None = None,
) -> AcceptedReport:
    body = ReportBody(
        node_id=child_id,
        sequence=sequence,
        kind=ReportKind.REPORT_KIND_FULL if full_window else ReportKind.REPORT_KIND_INCREMENTAL,
        buckets=[
            Bucket(
                day=day.isoformat(),
                basic_code=code,
                item_type_code=item_type,
                counters=Counters(received=value, completed=value // 2, red_cards=value % 3, records_reported=value),
            )
            for day, code, item_type, value in buckets
        ],
    )
    if full_window:
        body.window_start_day, body.window_end_day = (day.isoformat() for day in full_window)
    return AcceptedReport(child_id, body, SignedEnvelope(), b"", datetime(2026, 3, 1, 9, 0))


def _random_buckets(rng: random.Random, first: date, days: int, count: int) -> list[tuple[date, str, str, int]]:
    keys = {(first + timedelta(days=rng.randrange(days)), rng.choice(CODES), rng.choice(TYPES)) for _ in range(count)}
    return [(*key, rng.randint(1, 50)) for key in sorted(keys)]


def _from_days(
    engine: Engine, group: Sequence[str], day_from: date | None, day_to: date | None, basic_code: str = ""
) -> dict[tuple[str, ...], dict[str, int]]:
    """The same sums straight from child_buckets, the way the figures were read before the roll-up."""
    c = ChildBucket.__table__.c
    query = select(c.child_id, c.day, c.basic_code, *(func.sum(c[name]).label(name) for name in COUNTER_FIELDS))
    if day_from:
        query = query.where(c.day >= day_from)
    if day_to:
        query = query.where(c.day <= day_to)
    if basic_code:
        query = query.where(c.basic_code == basic_code)
    result: dict[tuple[str, ...], dict[str, int]] = {}
    with engine.connect() as conn:
        for row in conn.execute(query.group_by(c.child_id, c.day, c.basic_code)):
            fields: dict[str, Any] = {"child_id": row.child_id, "month": str(row.day)[:7], "basic_code": row.basic_code}
            total = result.setdefault(tuple(fields[name] for name in group), dict.fromkeys(COUNTER_FIELDS, 0))
            for name in COUNTER_FIELDS:
                total[name] += int(row._mapping[name])
    return result


def _assert_rollup_matches(engine: Engine, rng: random.Random) -> None:
    with engine.connect() as conn:
        assert month_rollup_differences(conn) == []
        ranges: list[tuple[date | None, date | None]] = [(None, None), (date(2026, 1, 1), date(2026, 1, 31))]
        for _ in range(12):
            first = START + timedelta(days=rng.randrange(-10, 110))
            last = first + timedelta(days=rng.randrange(0, 80))
            ranges.append((first, last))
            ranges.append((rng.choice([None, first]), rng.choice([None, last])))
        for day_from, day_to in ranges:
            for group in GROUPINGS:
                code = rng.choice(["", *CODES])
                got = child_sums(conn, group, day_from=day_from, day_to=day_to, basic_code=code)
                assert got == _from_days(engine, group, day_from, day_to, code), (group, day_from, day_to, code)


def _apply(engine: Engine, reports: Sequence[AcceptedReport]) -> None:
    with engine.begin() as conn:
        apply_child_reports(conn, reports)


def test_rollup_follows_reports_that_add_replace_extend_and_zero(migrated_engine: Engine) -> None:
    rng = random.Random(14)
    engine = migrated_engine
    # First reports of two children, across the end of December, January and February.
    _apply(engine, [_report("gd.a", 1, _random_buckets(rng, START, 70, 60))])
    _apply(engine, [_report("gd.b", 1, _random_buckets(rng, START, 70, 40))])
    _assert_rollup_matches(engine, rng)
    # gd.a again: some buckets replaced with new values, new days in March (a month it never had).
    with engine.connect() as conn:
        existing = conn.execute(
            select(ChildBucket.day, ChildBucket.basic_code, ChildBucket.item_type_code).where(
                ChildBucket.child_id == "gd.a"
            )
        ).all()
    replaced = [(row.day, row.basic_code, row.item_type_code, rng.randint(100, 200)) for row in existing[::3]]
    _apply(engine, [_report("gd.a", 2, replaced + _random_buckets(rng, date(2026, 3, 1), 31, 20))])
    _assert_rollup_matches(engine, rng)
    with engine.connect() as conn:
        march = child_sums(conn, ("child_id", "month"), day_from=date(2026, 3, 1))
    assert ("gd.a", "2026-03") in march and ("gd.b", "2026-03") not in march
    # A FULL report of gd.a over 5 January – 10 March names a few keys: the rest of its window is zeroed (kept).
    named = _random_buckets(rng, date(2026, 1, 5), 60, 8)
    _apply(engine, [_report("gd.a", 3, named, full_window=(date(2026, 1, 5), date(2026, 3, 10)))])
    _assert_rollup_matches(engine, rng)
    with engine.connect() as conn:
        january = child_sums(conn, ("child_id",), day_from=date(2026, 1, 1), day_to=date(2026, 1, 31))
    expected_january = sum(value for day, _code, _type, value in named if day.month == 1)
    outside = sum(
        value
        for report_day, _c, _t, value in _from_days_list(engine, "gd.a")
        if date(2026, 1, 1) <= report_day < date(2026, 1, 5)
    )
    assert january["gd.a",]["received"] == expected_january + outside
    # Several reports of one child in one batch (incremental, then FULL, then incremental), and gd.b alongside.
    batch = [
        _report("gd.b", 2, _random_buckets(rng, date(2026, 2, 1), 45, 15)),
        _report(
            "gd.b", 3, _random_buckets(rng, date(2026, 2, 10), 10, 5), full_window=(date(2026, 2, 1), date(2026, 2, 28))
        ),
        _report("gd.b", 4, _random_buckets(rng, date(2026, 2, 20), 20, 6)),
        _report("gd.a", 4, _random_buckets(rng, START, 100, 10)),
    ]
    _apply(engine, batch)
    _assert_rollup_matches(engine, rng)
    # An incremental report naming more keys of one month than are refreshed key by key: the whole month again.
    many = [(date(2026, 2, 1 + index % 28), f"{index:010d}", "01", index + 1) for index in range(250)]
    _apply(engine, [_report("gd.b", 5, many)])
    _assert_rollup_matches(engine, rng)


def _from_days_list(engine: Engine, child_id: str) -> list[tuple[date, str, str, int]]:
    c = ChildBucket.__table__.c
    with engine.connect() as conn:
        rows = conn.execute(select(c.day, c.basic_code, c.item_type_code, c.received).where(c.child_id == child_id))
        return [(row.day, row.basic_code, row.item_type_code, int(row.received)) for row in rows]


def test_a_day_bucket_changed_behind_the_rollup_is_named(migrated_engine: Engine) -> None:
    rng = random.Random(7)
    _apply(migrated_engine, [_report("gd.a", 1, _random_buckets(rng, START, 40, 20))])
    with migrated_engine.begin() as conn:
        some = conn.execute(select(ChildBucket.day, ChildBucket.basic_code, ChildBucket.item_type_code).limit(1)).one()
        month = some.day.replace(day=1)
        rolled = conn.execute(
            select(ChildMonthBucket.received).where(
                ChildMonthBucket.month == month,
                ChildMonthBucket.basic_code == some.basic_code,
                ChildMonthBucket.item_type_code == some.item_type_code,
            )
        ).scalar_one()
        conn.execute(
            update(ChildBucket)
            .where(
                ChildBucket.day == some.day,
                ChildBucket.basic_code == some.basic_code,
                ChildBucket.item_type_code == some.item_type_code,
            )
            .values(received=ChildBucket.received + 5)
        )
    with migrated_engine.connect() as conn:
        found = month_rollup_differences(conn)
    assert found == [
        f"child gd.a month {month.isoformat()[:7]} / item {some.basic_code} / type {some.item_type_code}: "
        f"received month roll-up {rolled}, day buckets sum {rolled + 5}"
    ]


@pytest.mark.parametrize(
    ("day_from", "day_to"),
    [
        (date(2026, 1, 15), date(2026, 1, 20)),
        (date(2026, 1, 15), date(2026, 2, 10)),
        (date(2026, 1, 1), date(2026, 3, 31)),
        (None, date(2026, 2, 27)),
        (date(2026, 2, 28), None),
    ],
)
def test_split_period_covers_each_day_once(day_from: date | None, day_to: date | None) -> None:
    from node.reporting import split_period

    split = split_period(day_from, day_to)
    day = date(2025, 11, 1)
    while day < date(2026, 6, 1):
        month = day.replace(day=1)
        in_months = (
            not split.no_months
            and (split.months_from is None or month >= split.months_from)
            and (split.months_to is None or month <= split.months_to)
        )
        in_edges = sum(1 for first, last in split.edges if first <= day <= last)
        wanted = (day_from is None or day >= day_from) and (day_to is None or day <= day_to)
        assert int(in_months) + in_edges == int(wanted), day
        day += timedelta(days=1)


def test_migration_0016_fills_the_rollup_from_the_day_buckets_held(db_url: str) -> None:
    from node.store import make_engine, migrate

    engine = make_engine(db_url)
    try:
        migrate(engine, "0015")
        rng = random.Random(16)
        rows: list[dict[str, Any]] = [
            {
                "child_id": child_id,
                "day": day,
                "basic_code": code,
                "item_type_code": item_type,
                "revision": 1,
                **dict.fromkeys(COUNTER_FIELDS, 0),
                "received": value,
                "completed": value // 2,
            }
            for child_id in ("gd.a", "gd.b")
            for day, code, item_type, value in _random_buckets(rng, START, 90, 50)
        ]
        with engine.begin() as conn:
            conn.execute(insert(ChildBucket), rows)
        migrate(engine)
        with engine.connect() as conn:
            assert month_rollup_differences(conn) == []
            stored = conn.execute(select(func.count()).select_from(ChildMonthBucket.__table__)).scalar_one()
            totals = child_sums(conn, ("child_id",))
        assert stored > 0
        for child_id in ("gd.a", "gd.b"):
            assert totals[child_id,]["received"] == sum(row["received"] for row in rows if row["child_id"] == child_id)
    finally:
        engine.dispose()
