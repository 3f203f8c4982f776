"""Backfill (issue 12, docs/domain.md §5): a year of generated history (Sep 2025 – Aug 2026) imported and scanned on
2026-12-05 at a district gives cards in every month they happened — not all in December 2026 — identical in the
district's ``stats --by month`` (grouped_stats), in its alerts' breach months, and at the province after roll-up
over real gRPC reports (province ← city ← district), with the district on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from federation import COUNTER_FIELDS
from node.store import Alert
from node.supervision import check_buckets, grouped_stats, run_scan
from tests.harness.reports import Totals, subtree_of
from tests.harness.tree import Tree, TreeClock

IMPORT_DAY = datetime(2026, 12, 5, 9, 0)
# (The library calendar ends with 2026: the cases' dues must fall inside it.)
HISTORY_FROM, HISTORY_TO = date(2025, 9, 1), date(2026, 8, 31)
HISTORY_MONTHS = [f"2025-{month:02d}" for month in range(9, 13)] + [f"2026-{month:02d}" for month in range(1, 9)]
CARDS = ("reminders", "yellow_cards", "red_cards")
SEVERITY_CARD = {"reminder": "reminders", "yellow": "yellow_cards", "red": "red_cards"}
DISTRICT = "gd.gz.py"

MonthCards = dict[str, tuple[int, int, int]]


@pytest.fixture
def tree(tmp_path: Path, db_url: str) -> Iterator[Tree]:
    db_urls = {DISTRICT: db_url} if db_url.startswith("postgresql") else {}
    built = Tree(tmp_path, ["gd", "gd.gz", DISTRICT], clock=TreeClock(IMPORT_DAY), db_urls=db_urls)
    yield built
    built.close()


def months_of_totals(totals: Totals) -> MonthCards:
    """Card counters of report totals (keyed by day) summed per month."""
    index = [COUNTER_FIELDS.index(name) for name in CARDS]
    months: dict[str, list[int]] = {}
    for (day, _, _), values in totals.items():
        into = months.setdefault(day.isoformat()[:7], [0, 0, 0])
        for position, field in enumerate(index):
            into[position] += values[field]
    return {month: (r, y, red) for month, (r, y, red) in sorted(months.items()) if r or y or red}


def test_history_imported_late_lands_in_the_months_it_happened(tree: Tree) -> None:
    district = tree[DISTRICT]
    tree.import_synthetic(DISTRICT, cases=2000, seed=12, date_from=HISTORY_FROM, date_to=HISTORY_TO)
    scan = run_scan(district)
    assert scan.raised, "the open history past its limits is found by the scan"
    tree.report_up()

    with district.engine.connect() as conn:
        alerts = conn.execute(select(Alert.severity, Alert.breached_at, Alert.raised_at)).all()
        node_months: MonthCards = {
            row.key: (row.counters["reminders"], row.counters["yellow_cards"], row.counters["red_cards"])
            for row in grouped_stats(conn, "month")
            if any(row.counters[name] for name in CARDS)
        }
    # Every card was noticed at the import or the scan, on 2026-12-05: detection alone would put all in 2026-12.
    assert {raised_at.date() for _, _, raised_at in alerts} == {IMPORT_DAY.date()}
    by_breach: Counter[tuple[str, str]] = Counter(
        (breached_at.date().isoformat()[:7], SEVERITY_CARD[severity]) for severity, breached_at, _ in alerts
    )
    from_alerts: MonthCards = {
        month: (by_breach[(month, "reminders")], by_breach[(month, "yellow_cards")], by_breach[(month, "red_cards")])
        for month in sorted({month for month, _ in by_breach})
    }
    assert node_months == from_alerts
    # Yellow or red cards in every month of the history, and the month of the import holds few of them.
    for month in HISTORY_MONTHS:
        assert node_months[month][1] + node_months[month][2] > 0, month
    total_cards = sum(y + r for _, y, r in node_months.values())
    late = node_months.get("2026-12", (0, 0, 0))
    assert late[1] + late[2] < total_cards / 10
    assert check_buckets(district) == []

    # The same months at the city and the province after the roll-up.
    assert months_of_totals(subtree_of(tree["gd.gz"])) == node_months
    assert months_of_totals(subtree_of(tree["gd"])) == node_months
