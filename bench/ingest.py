"""Import benchmark: N generated cases (acceptance + completion records) into SQLite and PostgreSQL.

In the same run it measures the raw baseline on the same rows: stdlib ``sqlite3`` executemany into bare tables of
the same columns (same pragmas, same batch size), and psycopg COPY for PostgreSQL. Each measurement runs in its own
child process so its peak RSS is its own. Prints records/s, the ratio to the baseline and peak RSS, the import's
profile (wall and CPU time in database driver calls vs Python, CPU per statement, bench._db_time), then ONE JSON
line of the figures; its ``ratios`` are the issue's two targets: supnet SQLite vs raw sqlite3 on the node's own
schema, supnet PostgreSQL vs COPY. ``sqlite.cpu_ratio_to_schema_baseline`` is the first of them in CPU time, which
other people's load on a shared machine does not skew.

    .venv/bin/python -m bench.ingest                 # 1,000,000 cases
    .venv/bin/python -m bench.ingest --cases 100000  # quick check
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import random
import resource
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

# Run as a script, bench/ comes first on sys.path, where bench/federation.py would shadow the federation package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._db_time import print_profile, profile_of
from bench._ingest_pg_schema import postgres_schema_baseline
from node.synthetic import GOVERNMENT_DEPARTMENTS

DEFAULT_PG = os.environ.get("SUPNET_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SEED = 20260101
ITEM_COUNT = 200
COMPLETED_SHARE = 0.85
FIRST_ACCEPTANCE = datetime(2025, 1, 2, 8, 30)
# Last acceptance early enough that every legal deadline stays inside the calendar's covered years (to 2026).
LAST_ACCEPTANCE = datetime(2026, 10, 30, 17, 30)
# Ten district departments, named as the synthetic generator names them.
DEPARTMENTS = [f"番禺区{name}" for name in GOVERNMENT_DEPARTMENTS[:10]]

ITEM_HEADER = [
    "实施编码",
    "基本编码",
    "事项名称",
    "事项类型代码",
    "行使层级代码",
    "实施主体",
    "实施主体代码",
    "法定办结时限",
    "承诺办结时限",
    "是否收费",
    "收费标准",
]
ACCEPTANCE_HEADER = [
    "办件编号",
    "实施编码",
    "受理单位",
    "受理单位代码",
    "受理人员",
    "受理时间",
    "办件类型代码",
    "行政区划代码",
    "申请者名称",
    "申请者证件类型代码",
    "申请者证件号码",
    "申报来源代码",
    "申请时间",
]
COMPLETION_HEADER = ["办件编号", "办理人姓名", "办结时间", "办理结果", "结果证照名称", "结果证照编号", "是否收费"]
CASE_COLUMNS = [
    "case_no",
    "implementation_code",
    "basic_code",
    "item_type_code",
    "department",
    "department_code",
    "acceptor",
    "accepted_at",
    "declared_promised_at",
    "case_type_code",
    "area_code",
    "applicant_name",
    "applicant_id_type",
    "applicant_id_no",
    "apply_source_code",
    "applied_at",
    "promised_limit",
    "legal_limit",
    "promised_due_at",
    "legal_due_at",
    "clock_stop_workdays",
    "clock_stopped",
    "status",
    "completed_at",
    "supplement_count",
    "return_count",
    "recorded_at",
]
COMPLETION_COLUMNS = [
    "case_no",
    "handler_name",
    "completed_at",
    "result_code",
    "reason",
    "certificate_name",
    "certificate_no",
    "fee_flag",
]


# -- deterministic data ------------------------------------------------------------------------------------------
def _items(rng: random.Random) -> list[dict[str, Any]]:
    items = []
    for number in range(ITEM_COUNT):
        legal = rng.choice((5, 10, 15, 20, 20, 30))
        department = DEPARTMENTS[number % len(DEPARTMENTS)]
        fee = rng.random() < 0.2
        items.append(
            {
                "code": f"1144011300{number:06d}",
                "basic": f"{number:06d}",
                "name": f"行政许可事项{number}",
                "type": rng.choice(("01", "01", "01", "07", "10", "20")),
                "department": department,
                "body_code": f"11440113MB2C{number:05d}X",
                "legal": legal,
                "promised": max(1, legal // 2),
                "fee": fee,
            }
        )
    return items


def _compact(moment: datetime) -> str:
    return (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}T{moment.hour:02d}{moment.minute:02d}{moment.second:02d}"
    )


def _clamp_to_day(moment: datetime) -> datetime:
    # Keep times inside office hours so the data looks like a service centre's.
    if moment.hour < 8:
        return moment.replace(hour=8)
    if moment.hour >= 18:
        return moment.replace(hour=17)
    return moment


def case_rows(cases: int) -> Iterator[tuple[list[str], list[str] | None]]:
    """(acceptance CSV row, completion CSV row or None) per case, deterministic for a given count."""
    rng = random.Random(SEED)
    items = _items(rng)
    span = (LAST_ACCEPTANCE - FIRST_ACCEPTANCE).total_seconds()
    step = span / cases
    for index in range(cases):
        item = items[rng.randrange(ITEM_COUNT)]
        accepted = _clamp_to_day(FIRST_ACCEPTANCE + timedelta(seconds=index * step + rng.random() * step))
        applied = accepted - timedelta(minutes=rng.randrange(5, 600))
        instant = rng.random() < 0.05
        case_no = f"4401132025{index:010d}"
        acceptance = [
            case_no,
            item["code"],
            item["department"],
            item["body_code"],
            f"受理员{rng.randrange(60)}",
            _compact(accepted),
            "1" if instant else "2",
            "440113",
            f"申请人{index}",
            "111",
            f"44011319{rng.randrange(10**9, 10**10)}",
            "1",
            _compact(applied),
        ]
        completion = None
        if rng.random() < COMPLETED_SHARE:
            days = 0 if instant else rng.randrange(0, int(item["promised"] * 1.6) + 1)
            completed = min(
                _clamp_to_day(accepted + timedelta(days=days, hours=rng.randrange(0, 6))), datetime(2026, 12, 31, 17, 0)
            )
            completion = [
                case_no,
                f"审批员{rng.randrange(40)}",
                _compact(completed),
                "1",
                f"{item['name']}许可证",
                f"XK{index:010d}",
                "1" if item["fee"] else "0",
            ]
        yield acceptance, completion


def write_files(directory: Path, cases: int) -> tuple[Path, Path, Path, int, int]:
    """Write items.csv, acceptances.csv and completions.csv; return their paths and the record counts."""
    rng = random.Random(SEED)
    items_path = directory / "items.csv"
    with items_path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(ITEM_HEADER)
        for item in _items(rng):
            writer.writerow(
                [
                    item["code"],
                    item["basic"],
                    item["name"],
                    item["type"],
                    "4",
                    item["department"],
                    item["body_code"],
                    item["legal"],
                    item["promised"],
                    "1" if item["fee"] else "0",
                    "50.00" if item["fee"] else "",
                ]
            )
    acceptances_path = directory / "acceptances.csv"
    completions_path = directory / "completions.csv"
    completed = 0
    with (
        acceptances_path.open("w", encoding="utf-8", newline="") as acc,
        completions_path.open("w", encoding="utf-8", newline="") as com,
    ):
        acc_writer, com_writer = csv.writer(acc), csv.writer(com)
        acc_writer.writerow(ACCEPTANCE_HEADER)
        com_writer.writerow(COMPLETION_HEADER)
        for acceptance, completion in case_rows(cases):
            acc_writer.writerow(acceptance)
            if completion is not None:
                com_writer.writerow(completion)
                completed += 1
    return items_path, acceptances_path, completions_path, cases, completed


# -- baseline rows: the same rows, full table width, already in storage form --------------------------------------
def _storage(compact: str) -> str:
    return f"{compact[0:4]}-{compact[4:6]}-{compact[6:8]} {compact[9:11]}:{compact[11:13]}:{compact[13:15]}.000000"


def baseline_batches(acceptances: Path, completions: Path, batch: int) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """("cases" | "completions", rows) batches of the rows the import stores, built from the same files."""
    with acceptances.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        rows: list[tuple[Any, ...]] = []
        for r in reader:
            accepted = _storage(r[5])
            rows.append(
                (
                    r[0],
                    r[1],
                    r[1][10:],
                    "01",
                    r[2],
                    r[3],
                    r[4],
                    accepted,
                    None,
                    r[6],
                    r[7],
                    r[8],
                    r[9],
                    r[10],
                    r[11],
                    _storage(r[12]),
                    10,
                    20,
                    accepted,
                    accepted,
                    0,
                    0,
                    "open",
                    None,
                    0,
                    0,
                    accepted,
                )
            )
            if len(rows) == batch:
                yield "cases", rows
                rows = []
        if rows:
            yield "cases", rows
    with completions.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        rows = []
        for r in reader:
            rows.append((r[0], r[1], _storage(r[2]), r[3], "", r[4], r[5], int(r[6])))
            if len(rows) == batch:
                yield "completions", rows
                rows = []
        if rows:
            yield "completions", rows


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sqlite_baseline(workdir: str, acceptances: str, completions: str, batch: int) -> dict[str, float]:
    """Raw sqlite3 executemany of the same rows into bare tables (WAL, synchronous=NORMAL, one commit per batch)."""
    path = Path(workdir) / "baseline.db"
    conn = sqlite3.connect(path)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536"):
        conn.execute(f"PRAGMA {pragma}")
    conn.execute(f"CREATE TABLE cases ({', '.join(CASE_COLUMNS)})")
    conn.execute(f"CREATE TABLE completions ({', '.join(COMPLETION_COLUMNS)})")
    conn.commit()
    statements = {
        "cases": f"INSERT INTO cases VALUES ({','.join('?' * len(CASE_COLUMNS))})",
        "completions": f"INSERT INTO completions VALUES ({','.join('?' * len(COMPLETION_COLUMNS))})",
    }
    rows_written, seconds, cpu = 0, 0.0, 0.0
    for table, rows in baseline_batches(Path(acceptances), Path(completions), batch):
        started, cpu_started = time.perf_counter(), time.process_time()
        conn.executemany(statements[table], rows)
        conn.commit()
        seconds += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        rows_written += len(rows)
    conn.close()
    return {
        "rows": rows_written,
        "seconds": seconds,
        "rows_per_s": rows_written / seconds,
        "rows_per_cpu_s": rows_written / cpu,
        "peak_rss_mb": _peak_rss_mb(),
    }


def sqlite_schema_baseline(
    workdir: str, items: str, acceptances: str, completions: str, batch: int
) -> dict[str, float]:
    """Raw sqlite3 on the node's real schema: the same inserts plus the completions' case UPDATE, indexes and all.

    Not the target's baseline (that is the bare table above); it shows how much of the gap is the schema's indexes
    and the completion's case update rather than supnet's Python.
    """
    from node.bootstrap import init_node

    data_dir = Path(workdir) / "schema-baseline"
    init_node(data_dir, "bench.baseline")
    conn = sqlite3.connect(data_dir / "node.db")
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536", "foreign_keys=ON"):
        conn.execute(f"PRAGMA {pragma}")
    with Path(items).open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        conn.executemany(
            "INSERT INTO items (implementation_code, basic_code, name, type_code, level_code, body_name, body_code,"
            " department, legal_limit, legal_limit_unit, promised_limit, promised_limit_unit, fee_flag, fee_standard,"
            " channel_code) VALUES (?,?,?,?,?,?,?,?,?,'1',?,'1',?,?,'1')",
            [
                (r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[5], int(r[7]), int(r[8]), int(r[9]), r[10] or None)
                for r in reader
            ],
        )
    conn.commit()
    case_insert = f"INSERT INTO cases ({','.join(CASE_COLUMNS)}) VALUES ({','.join('?' * len(CASE_COLUMNS))})"
    completion_insert = (
        f"INSERT INTO completions ({','.join(COMPLETION_COLUMNS)}) VALUES ({','.join('?' * len(COMPLETION_COLUMNS))})"
    )
    case_update = "UPDATE cases SET status = 'completed', completed_at = ? WHERE case_no = ?"
    rows_written, seconds, cpu = 0, 0.0, 0.0
    for table, rows in baseline_batches(Path(acceptances), Path(completions), batch):
        updates = [(row[2], row[0]) for row in rows] if table == "completions" else []
        started, cpu_started = time.perf_counter(), time.process_time()
        conn.executemany(case_insert if table == "cases" else completion_insert, rows)
        if updates:
            conn.executemany(case_update, updates)
        conn.commit()
        seconds += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        rows_written += len(rows)
    conn.close()
    return {
        "rows": rows_written,
        "seconds": seconds,
        "rows_per_s": rows_written / seconds,
        "rows_per_cpu_s": rows_written / cpu,
    }


def _pg_type(column: str) -> str:
    if column.endswith("_at"):
        return "timestamp"
    if column.endswith(("limit", "count", "workdays")):
        return "integer"
    return "boolean" if column == "clock_stopped" else "text"


def postgres_baseline(pg_url: str, acceptances: str, completions: str, batch: int) -> dict[str, float]:
    """Psycopg COPY of the same rows into bare tables of a fresh schema, one commit per batch."""
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    conninfo = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path TO "{schema}"')
        case_types = ", ".join(f"{column} {_pg_type(column)}" for column in CASE_COLUMNS)
        conn.execute(f"CREATE TABLE cases ({case_types})")
        conn.execute(
            "CREATE TABLE completions (case_no text, handler_name text, completed_at timestamp, "
            "result_code text, reason text, certificate_name text, certificate_no text, fee_flag boolean)"
        )
        conn.commit()
        rows_written, seconds = 0, 0.0
        try:
            for table, rows in baseline_batches(Path(acceptances), Path(completions), batch):
                converted = [
                    tuple(
                        datetime.fromisoformat(v) if isinstance(v, str) and v[4:5] == "-" and v[10:11] == " " else v
                        for v in row
                    )
                    for row in rows
                ]
                if table == "cases":
                    converted = [(*row[:21], bool(row[21]), *row[22:]) for row in converted]
                else:
                    converted = [(*row[:7], bool(row[7])) for row in converted]
                started = time.perf_counter()
                with conn.cursor() as cursor, cursor.copy(f"COPY {table} FROM STDIN") as copy:
                    for row in converted:
                        copy.write_row(row)
                conn.commit()
                seconds += time.perf_counter() - started
                rows_written += len(rows)
        finally:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            conn.commit()
    return {
        "rows": rows_written,
        "seconds": seconds,
        "rows_per_s": rows_written / seconds,
        "peak_rss_mb": _peak_rss_mb(),
    }


def supnet_import(workdir: str, db_url: str, files: list[str], batch: int) -> dict[str, Any]:
    """Supnet's own import of the files into a freshly initialised node (SQLite file or given PostgreSQL URL)."""
    from bench._db_time import time_database
    from node.app import open_node
    from node.bootstrap import init_node
    from node.ingest import Importer
    from node.supervision import default_listeners

    data_dir = Path(workdir) / f"node-{uuid.uuid4().hex[:6]}"
    init_node(data_dir, "bench.node", db_url=db_url)
    node = open_node(data_dir)
    clock = time_database(node.engine)
    try:
        importer = Importer(node, listeners=default_listeners(node), batch_size=batch)
        started, cpu_started = time.perf_counter(), time.process_time()
        summary = importer.import_files([Path(f) for f in files])
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    finally:
        node.close()
    case_records = summary.by_kind["acceptance"]["accepted"] + summary.by_kind["completion"]["accepted"]
    return {
        "records": case_records,
        "rejected": summary.rejected,
        "seconds": seconds,
        "records_per_s": case_records / seconds,
        "records_per_cpu_s": case_records / cpu,
        "peak_rss_mb": _peak_rss_mb(),
        "cpu_seconds": cpu,
        "database_seconds": clock.seconds,
        "database_cpu_seconds": clock.cpu_seconds,
        "database_cpu_by_statement": dict(clock.cpu_by_statement),
        "database_calls": clock.calls,
    }


def _child(target: Any, args: tuple[Any, ...], queue: Any) -> None:
    try:
        queue.put(("ok", target(*args)))
    except BaseException as exc:  # report any failure to the parent instead of hanging it
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def in_child(target: Any, *args: Any) -> dict[str, Any]:
    """Run a measurement in a fresh child process (its own peak RSS) and return its figures."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(target, args, queue))
    process.start()
    status, value = queue.get()
    process.join()
    if status != "ok":
        raise RuntimeError(value)
    return value  # type: ignore[no-any-return]


def _pg_schema_url(pg_url: str) -> tuple[str, str] | None:
    """A fresh schema on the PostgreSQL server and a URL pinned to it, or None when the server is down."""
    try:
        import psycopg

        with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3) as conn:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            conn.execute(f'CREATE SCHEMA "{schema}"')
            conn.commit()
    except Exception as exc:  # any connection failure means: skip PostgreSQL, say so
        print(f"postgresql: skipped ({exc})")
        return None
    separator = "&" if "?" in pg_url else "?"
    return schema, f"{pg_url}{separator}options=-csearch_path%3D{schema}"


def _drop_schema(pg_url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--skip-postgres", action="store_true")
    options = parser.parse_args()
    figures: dict[str, Any] = {"cases": options.cases, "batch_size": options.batch_size}
    with tempfile.TemporaryDirectory(prefix="supnet-bench-") as workdir:
        started = time.perf_counter()
        items, acceptances, completions, accepted_count, completed_count = write_files(Path(workdir), options.cases)
        print(
            f"generated {accepted_count:,} acceptances + {completed_count:,} completions "
            f"in {time.perf_counter() - started:.1f} s"
        )
        figures["records"] = accepted_count + completed_count
        files = [str(items), str(acceptances), str(completions)]

        base = in_child(sqlite_baseline, workdir, str(acceptances), str(completions), options.batch_size)
        schema_base = in_child(
            sqlite_schema_baseline, workdir, str(items), str(acceptances), str(completions), options.batch_size
        )
        ours = in_child(supnet_import, workdir, "", files, options.batch_size)
        ratio = ours["records_per_s"] / base["rows_per_s"]
        schema_ratio = ours["records_per_s"] / schema_base["rows_per_s"]
        # The same ratio in CPU time: this machine is shared, and wall time also counts other people's load.
        cpu_ratio = ours["records_per_cpu_s"] / base["rows_per_cpu_s"]
        schema_cpu_ratio = ours["records_per_cpu_s"] / schema_base["rows_per_cpu_s"]
        print(
            f"sqlite   baseline executemany: {base['rows_per_s']:>10,.0f} rows/s  (bare tables: the target's baseline)"
        )
        print(
            f"sqlite   same on node schema:  {schema_base['rows_per_s']:>10,.0f} rows/s  (indexes, FKs, completion "
            f"UPDATE; supnet reaches {schema_ratio:.2f} of it)"
        )
        print(
            f"sqlite   supnet import:        {ours['records_per_s']:>10,.0f} records/s  ratio {ratio:.2f}  "
            f"peak RSS {ours['peak_rss_mb']:.0f} MB  ({ours['records']:,} records, {ours['rejected']} rejected, "
            f"{ours['seconds']:.1f} s)"
        )
        print(
            f"sqlite   in CPU time:          {ours['records_per_cpu_s']:>10,.0f} records/cpu-s vs "
            f"{base['rows_per_cpu_s']:,.0f} rows/cpu-s  ratio {cpu_ratio:.2f}; vs node schema "
            f"{schema_base['rows_per_cpu_s']:,.0f} rows/cpu-s  ratio {schema_cpu_ratio:.2f}"
        )
        print_profile("sqlite  ", profile := profile_of(ours))
        figures["sqlite"] = {
            "records_per_s": round(ours["records_per_s"]),
            "baseline_rows_per_s": round(base["rows_per_s"]),
            "ratio": round(ratio, 3),
            "cpu_ratio": round(cpu_ratio, 3),
            "schema_baseline_rows_per_s": round(schema_base["rows_per_s"]),
            "ratio_to_schema_baseline": round(schema_ratio, 3),
            "cpu_ratio_to_schema_baseline": round(schema_cpu_ratio, 3),
            "peak_rss_mb": round(ours["peak_rss_mb"], 1),
            "rejected": ours["rejected"],
            "profile": profile,
        }
        figures["ratios"] = {"sqlite_to_schema_baseline": round(schema_ratio, 3), "postgresql_to_copy": None}

        pg = None if options.skip_postgres else _pg_schema_url(options.pg_url)
        if pg is not None:
            schema, url = pg
            try:
                base = in_child(
                    postgres_baseline, options.pg_url, str(acceptances), str(completions), options.batch_size
                )
                schema_base = in_child(
                    postgres_schema_baseline,
                    workdir,
                    options.pg_url,
                    str(items),
                    str(acceptances),
                    str(completions),
                    options.batch_size,
                )
                ours = in_child(supnet_import, workdir, url, files, options.batch_size)
            finally:
                _drop_schema(options.pg_url, schema)
            ratio = ours["records_per_s"] / base["rows_per_s"]
            schema_ratio = ours["records_per_s"] / schema_base["rows_per_s"]
            print(
                f"postgres baseline COPY:        {base['rows_per_s']:>10,.0f} rows/s  (bare tables: the target's "
                "baseline)"
            )
            print(
                f"postgres COPY on node schema:  {schema_base['rows_per_s']:>10,.0f} rows/s  (indexes, FKs, completion "
                f"UPDATE; supnet reaches {schema_ratio:.2f} of it)"
            )
            print(
                f"postgres supnet import:        {ours['records_per_s']:>10,.0f} records/s  ratio {ratio:.2f}  "
                f"peak RSS {ours['peak_rss_mb']:.0f} MB  ({ours['records']:,} records, {ours['rejected']} "
                f"rejected, {ours['seconds']:.1f} s)"
            )
            print_profile("postgres", profile := profile_of(ours))
            figures["postgresql"] = {
                "records_per_s": round(ours["records_per_s"]),
                "baseline_rows_per_s": round(base["rows_per_s"]),
                "ratio": round(ratio, 3),
                "schema_baseline_rows_per_s": round(schema_base["rows_per_s"]),
                "ratio_to_schema_baseline": round(schema_ratio, 3),
                "peak_rss_mb": round(ours["peak_rss_mb"], 1),
                "rejected": ours["rejected"],
                "profile": profile,
            }
            figures["ratios"]["postgresql_to_copy"] = round(ratio, 3)
        else:
            figures["postgresql"] = None
    sys.stdout.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
