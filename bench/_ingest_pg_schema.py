"""The import benchmark's second PostgreSQL baseline: psycopg COPY into the node's own schema, raw.

The same rows as the bare-table COPY (bench.ingest), into a freshly initialised node's tables with their indexes,
keys and foreign keys, plus the completions' case UPDATE (COPY into a staging table, one UPDATE ... FROM per batch).
Not the target's baseline (that is COPY into bare tables); it shows how much of the gap is the schema's own work
rather than supnet's Python, like the SQLite schema baseline.
"""

from __future__ import annotations

import csv
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any


def postgres_schema_baseline(
    workdir: str, pg_url: str, items: str, acceptances: str, completions: str, batch: int
) -> dict[str, float]:
    """COPY of the bench rows into a fresh node's PostgreSQL schema (one commit per batch); rows/s."""
    import psycopg

    from node.bootstrap import init_node

    conninfo = pg_url.replace("postgresql+psycopg://", "postgresql://")
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(conninfo) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.commit()
        try:
            separator = "&" if "?" in pg_url else "?"
            init_node(
                Path(workdir) / f"pg-schema-{schema}",
                "bench.baseline",
                db_url=f"{pg_url}{separator}options=-csearch_path%3D{schema}",
            )
            conn.execute(f'SET search_path TO "{schema}"')
            return _load(conn, items, acceptances, completions, batch)
        finally:
            conn.rollback()
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            conn.commit()


def _load(conn: Any, items: str, acceptances: str, completions: str, batch: int) -> dict[str, float]:
    from bench.ingest import CASE_COLUMNS, COMPLETION_COLUMNS, baseline_batches

    with Path(items).open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        conn.cursor().executemany(
            "INSERT INTO items (implementation_code, basic_code, name, type_code, level_code, body_name, body_code,"
            " department, legal_limit, legal_limit_unit, promised_limit, promised_limit_unit, fee_flag, fee_standard,"
            " channel_code) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,'1',%s,'1',%s,%s,'1')",
            [
                (r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[5], int(r[7]), int(r[8]), r[9] == "1", r[10] or None)
                for r in reader
            ],
        )
    conn.execute("CREATE TEMP TABLE case_updates (case_no text, completed_at timestamp)")
    conn.commit()
    rows_written, seconds = 0, 0.0
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
            columns = CASE_COLUMNS
        else:
            converted = [(*row[:7], bool(row[7])) for row in converted]
            columns = COMPLETION_COLUMNS
        started = time.perf_counter()
        with conn.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({','.join(columns)}) FROM STDIN") as copy:
                for row in converted:
                    copy.write_row(row)
            if table == "completions":
                cursor.execute("TRUNCATE case_updates")
                with cursor.copy("COPY case_updates FROM STDIN") as copy:
                    for row in converted:
                        copy.write_row((row[0], row[2]))
                cursor.execute(
                    "UPDATE cases SET status = 'completed', completed_at = u.completed_at "
                    "FROM case_updates u WHERE cases.case_no = u.case_no"
                )
        conn.commit()
        seconds += time.perf_counter() - started
        rows_written += len(rows)
    return {"rows": rows_written, "seconds": seconds, "rows_per_s": rows_written / seconds}
