"""Supervision benchmark: the periodic rule scan and ``metrics check`` on a node with 1,000,000 cases (100,000 open).

The node is built through the real importer with the metrics and rules listeners (so the buckets are the maintained
ones), then, in the same run:

* baseline: ONE bare SQL query counting open cases past their promised due date (median of several runs);
* the first scan (a full pass over every open case; raises the backlog of reminders and cards);
* the periodic scan the scheduler runs every 5 minutes (incremental; the target: within 5x of the bare query);
* a periodic scan just after midnight, when a day's deadlines pass and its cards are raised;
* a forced full scan in steady state (every alert already exists), for comparison;
* ``metrics check`` (every bucket recomputed from the raw records and compared), beside a bare GROUP BY baseline.

Prints the figures and ratios, then ONE JSON line.

    .venv/bin/python -m bench.supervision                   # 1,000,000 cases, SQLite
    .venv/bin/python -m bench.supervision --cases 100000    # quick check
    .venv/bin/python -m bench.supervision --postgres URL    # on PostgreSQL (a fresh schema, dropped afterwards)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, bindparam, create_engine, text

# Run as a script, bench/ comes first on sys.path, where bench/federation.py would shadow the federation package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.app import Node, open_node
from node.config import NodeConfig, StoreConfig, save_config
from node.ingest import Importer
from node.supervision import MetricsListener, RulesListener, check_buckets, run_scan
from node.synthetic import GOVERNMENT_DEPARTMENTS

SEED = 20251201
ITEM_COUNT = 200
# Ten district departments, named as the synthetic generator names them.
DEPARTMENTS = [f"番禺区{name}" for name in GOVERNMENT_DEPARTMENTS[:10]]
NOW = datetime(2025, 12, 1, 9, 0)  # a Monday morning
FIRST_COMPLETED_ACCEPTANCE = datetime(2025, 1, 2, 8, 30)
LAST_COMPLETED_ACCEPTANCE = datetime(2025, 10, 31, 17, 30)
FIRST_OPEN_ACCEPTANCE = datetime(2025, 10, 13, 8, 30)
LAST_OPEN_ACCEPTANCE = datetime(2025, 11, 28, 17, 30)
SCAN_INTERVAL = timedelta(minutes=5)
BARE_QUERY = "SELECT count(*) FROM cases WHERE status = 'open' AND promised_due_at < :now"
BARE_GROUP_BY = (
    "SELECT substr(CAST(accepted_at AS TEXT), 1, 10), department, implementation_code, count(*) FROM cases "
    "GROUP BY 1, 2, 3"
)


def _compact(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S")


def _items(rng: random.Random) -> list[dict[str, str]]:
    items = []
    for index in range(ITEM_COUNT):
        legal = rng.choice((5, 10, 15, 20, 30))
        items.append(
            {
                "implementation_code": f"4401130{index:05d}",
                "basic_code": f"00010{index:05d}",
                "name": f"事项{index}",
                "type_code": rng.choice(("01", "01", "01", "07", "10", "20")),
                "level_code": "4",
                "body_name": DEPARTMENTS[index % len(DEPARTMENTS)],
                "body_code": "11440113MB2C12345X",
                "legal_limit": str(legal),
                "promised_limit": str(max(1, legal // 2)),
                "fee_flag": "0",
            }
        )
    return items


def _records(cases: int, open_cases: int) -> Iterator[tuple[str, int, dict[str, str]]]:
    """Items, then acceptances (completed ones first, oldest first), then completions."""
    rng = random.Random(SEED)
    items = _items(rng)
    line = 0
    for item in items:
        line += 1
        yield "item", line, item
    completed = cases - open_cases
    spans = (
        (completed, FIRST_COMPLETED_ACCEPTANCE, LAST_COMPLETED_ACCEPTANCE),
        (open_cases, FIRST_OPEN_ACCEPTANCE, LAST_OPEN_ACCEPTANCE),
    )
    accepted: list[tuple[str, datetime, int]] = []
    number = 0
    for count, first, last in spans:
        seconds = (last - first).total_seconds()
        for offset in sorted(rng.random() * seconds for _ in range(count)):
            number += 1
            item = items[rng.randrange(ITEM_COUNT)]
            moment = first + timedelta(seconds=int(offset))
            moment = moment.replace(hour=8 + moment.hour % 9)
            case_no = f"PY{number:09d}"
            line += 1
            yield (
                "acceptance",
                line,
                {
                    "case_no": case_no,
                    "implementation_code": item["implementation_code"],
                    "department": item["body_name"],
                    "accepted_at": _compact(moment),
                },
            )
            if count == completed:
                accepted.append((case_no, moment, int(item["promised_limit"])))
    for case_no, moment, promised in accepted:
        line += 1
        # Calendar days: mostly early (the sources report ~79% early), some on the promise, a few late (their cards
        # are raised on import).
        days = max(0, int(rng.triangular(0, promised * 1.9, promised * 0.3)))
        yield "completion", line, {"case_no": case_no, "completed_at": _compact(moment + timedelta(days=days, hours=1))}


def _median_seconds(action: Callable[[], Any], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def _bare_count(node: Node, now: datetime) -> int:
    with node.engine.connect() as conn:
        query = text(BARE_QUERY).bindparams(bindparam("now", type_=DateTime()))
        return int(conn.execute(query, {"now": now}).scalar_one())


def _bare_group_by(node: Node) -> int:
    with node.engine.connect() as conn:
        return len(conn.execute(text(BARE_GROUP_BY)).all())


def _build(data_dir: Path, url: str, cases: int, open_cases: int) -> tuple[Node, float]:
    save_config(data_dir, NodeConfig(id="gd.gz.py", store=StoreConfig(url=url, batch_size=10_000)))
    clock_value = [NOW - timedelta(hours=1)]
    node = open_node(data_dir, clock=lambda: clock_value[0])
    importer = Importer(node, listeners=[MetricsListener(node), RulesListener(node)])
    started = time.perf_counter()
    summary = importer.import_records(_records(cases, open_cases), source="bench")
    seconds = time.perf_counter() - started
    if summary.rejected:
        raise SystemExit(f"benchmark data rejected: {[str(e) for e in summary.errors[:5]]}")
    print(
        f"built node: {summary.accepted:,} records imported in {seconds:.1f} s "
        f"({summary.accepted / seconds:,.0f} records/s, with the metrics and rules listeners)"
    )
    return node, seconds


def run(url: str, data_dir: Path, cases: int, open_cases: int, repeats: int) -> dict[str, Any]:
    """Build the node, time every measurement and return the figures."""
    node, import_seconds = _build(data_dir, url, cases, open_cases)
    figures: dict[str, Any] = {
        "database": node.engine.dialect.name,
        "cases": cases,
        "open_cases": open_cases,
        "import_seconds": round(import_seconds, 2),
    }
    overdue = _bare_count(node, NOW)
    bare = _median_seconds(lambda: _bare_count(node, NOW), repeats)
    print(f"baseline: bare count of open cases past due ({overdue:,}): {bare * 1000:.2f} ms")

    started = time.perf_counter()
    first = run_scan(node, NOW)
    first_seconds = time.perf_counter() - started
    print(
        f"first scan (full): {len(first.raised):,} alerts {first.by_rule} in {first_seconds:.2f} s "
        f"({first_seconds / bare:,.0f}x the bare query)"
    )

    moments = iter(NOW + SCAN_INTERVAL * k for k in range(1, 10_000))
    raised: list[int] = []

    def periodic() -> None:
        raised.append(len(run_scan(node, next(moments)).raised))

    periodic_seconds = _median_seconds(periodic, repeats)
    ratio = periodic_seconds / bare
    print(
        f"periodic scan (every {SCAN_INTERVAL.seconds // 60} min, incremental): {periodic_seconds * 1000:.2f} ms "
        f"= {ratio:.2f}x the bare query (target <= 5x); alerts raised {raised}"
    )

    midnight = datetime.combine((NOW + timedelta(days=1)).date(), datetime.min.time()) + timedelta(seconds=30)
    run_scan(node, midnight - timedelta(minutes=5))
    started = time.perf_counter()
    boundary = run_scan(node, midnight)
    boundary_seconds = time.perf_counter() - started
    print(
        f"periodic scan just after midnight: {len(boundary.raised):,} alerts {boundary.by_rule} "
        f"in {boundary_seconds * 1000:.1f} ms ({boundary_seconds / bare:,.1f}x)"
    )

    started = time.perf_counter()
    steady_full = run_scan(node, midnight + SCAN_INTERVAL, full=True)
    full_seconds = time.perf_counter() - started
    print(
        f"forced full scan, steady state: {len(steady_full.raised)} alerts in {full_seconds * 1000:.0f} ms "
        f"({full_seconds / bare:,.0f}x the bare query)"
    )

    group_by = _median_seconds(lambda: _bare_group_by(node), max(1, repeats // 3))
    started = time.perf_counter()
    differences = check_buckets(node)
    check_seconds = time.perf_counter() - started
    print(
        f"metrics check: {len(differences)} differences in {check_seconds:.2f} s; baseline bare GROUP BY of cases "
        f"by day, department, item: {group_by:.2f} s ({check_seconds / group_by:.1f}x)"
    )
    node.close()
    figures.update(
        {
            "open_overdue_at_now": overdue,
            "bare_query_ms": round(bare * 1000, 3),
            "first_scan_s": round(first_seconds, 3),
            "first_scan_alerts": len(first.raised),
            "periodic_scan_ms": round(periodic_seconds * 1000, 3),
            "periodic_scan_ratio": round(ratio, 3),
            "periodic_target_met": ratio <= 5.0,
            "midnight_scan_ms": round(boundary_seconds * 1000, 2),
            "midnight_scan_alerts": len(boundary.raised),
            "midnight_scan_ratio": round(boundary_seconds / bare, 2),
            "full_scan_steady_ms": round(full_seconds * 1000, 1),
            "full_scan_steady_ratio": round(full_seconds / bare, 1),
            "metrics_check_s": round(check_seconds, 3),
            "metrics_check_differences": len(differences),
            "bare_group_by_s": round(group_by, 3),
            "metrics_check_ratio": round(check_seconds / group_by, 2),
        }
    )
    return figures


def main() -> None:
    """Parse the options, run on SQLite or a fresh PostgreSQL schema, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--open-share", type=float, default=0.10, help="share of open cases (default 0.10)")
    parser.add_argument("--repeats", type=int, default=9, help="runs per timed query (median)")
    parser.add_argument("--postgres", metavar="URL", help="run on PostgreSQL at URL (a fresh schema) instead of SQLite")
    parser.add_argument("--keep", metavar="DIR", help="build the node in DIR and keep it (default: a temp dir)")
    args = parser.parse_args()
    open_cases = int(args.cases * args.open_share)
    with tempfile.TemporaryDirectory(prefix="supnet-bench-") as temp:
        data_dir = Path(args.keep) if args.keep else Path(temp)
        data_dir.mkdir(parents=True, exist_ok=True)
        if args.postgres:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            try:
                figures = run(
                    f"{args.postgres}?options=-csearch_path%3D{schema}", data_dir, args.cases, open_cases, args.repeats
                )
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
        else:
            figures = run("", data_dir, args.cases, open_cases, args.repeats)
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
