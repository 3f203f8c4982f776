"""Ingest listeners of supervision: metric buckets and rules, run inside each import batch's transaction.

Both follow node.ingest.IngestListener. Each call handles one batch of one kind and writes its metric
deltas with ONE executemany upsert (metrics.add_record_deltas), so they stay cheap on the import hot path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ARRAY, ColumnElement, Connection, String, Table, TextClause, any_, bindparam, select, text

from node.ingest import IngestListener
from node.store import Case, Complaint
from node.supervision.catalogue import CatalogueListener
from node.supervision.complaint_listeners import complaint_listeners
from node.supervision.metrics import add_record_deltas, add_to_buckets, complaint_relink_deltas
from node.supervision.rules import RuleEngine

if TYPE_CHECKING:
    from node.app import Node

__all__ = ["MetricsListener", "RulesListener"]

log = logging.getLogger(__name__)

_cases: Table = Case.__table__  # type: ignore[assignment]
_complaints: Table = Complaint.__table__  # type: ignore[assignment]
_IN_CHUNK = 2000


class MetricsListener:
    """Keeps the additive metric buckets up to date as records are stored (definitions: node.supervision.metrics)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def on_records(self, conn: Connection, kind: str, records: Sequence[Mapping[str, Any]], now: datetime) -> None:
        """Add one batch's counter deltas to the buckets."""
        del now  # metrics are attributed to the records' own dates, never to the import time
        if not records:
            return
        linked = _complaint_cases(conn, records) if kind == "complaint" else None
        buckets, revision = add_record_deltas(conn, kind, records, self.node.calendar, linked)
        log.debug("metrics: %s %s records -> %s buckets, revision %s", len(records), kind, buckets, revision)
        if kind == "acceptance":
            _relink_waiting_complaints(conn, records)


def _relink_waiting_complaints(conn: Connection, acceptances: Sequence[Mapping[str, Any]]) -> None:
    """Complaints stored before these cases counted under item ""; their counters now move to the cases' items."""
    cases = {str(record["case_no"]): record for record in acceptances}
    p = _complaints.c
    # The batch's case numbers as ONE bound value (a JSON array on SQLite, an array on PostgreSQL): thousands of IN
    # (...) marks cost more to compile and bind than the index probes themselves, and almost every batch finds none.
    among: ColumnElement[bool] | TextClause
    if conn.dialect.name == "sqlite":
        among = text("complaints.case_no IN (SELECT value FROM json_each(:numbers))").bindparams(
            numbers=json.dumps(sorted(cases), ensure_ascii=False)
        )
    else:
        among = p.case_no == any_(bindparam("numbers", sorted(cases), type_=ARRAY(String)))
    rows = conn.execute(
        select(p.case_no, p.respondent_unit, p.status, p.received_at, p.decided_at, p.concluded_at, p.finding).where(
            among
        )
    )
    waiting: list[Mapping[str, Any]] = [dict(row._mapping) for row in rows]
    if waiting:
        add_to_buckets(conn, complaint_relink_deltas(waiting, cases))


def _complaint_cases(conn: Connection, records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The cases complaints refer to, for the item the complaint counters are attributed to."""
    numbers = sorted({str(r["case_no"]) for r in records if r.get("case_no")})
    found: dict[str, dict[str, Any]] = {}
    c = _cases.c
    for start in range(0, len(numbers), _IN_CHUNK):
        rows = conn.execute(
            select(c.case_no, c.implementation_code, c.basic_code, c.item_type_code).where(
                c.case_no.in_(numbers[start : start + _IN_CHUNK])
            )
        )
        found.update({row.case_no: dict(row._mapping) for row in rows})
    return found


class RulesListener:
    """Evaluates the event-driven rules on newly stored records (see node.supervision.rules.engine)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.engine = RuleEngine(node.config.supervision, node.calendar)

    def on_records(self, conn: Connection, kind: str, records: Sequence[Mapping[str, Any]], now: datetime) -> None:
        """Raise the alerts these records trigger (and hand new deadlines to the next scan)."""
        raised = self.engine.on_records(conn, kind, records, now)
        if raised:
            log.info("rules: %s %s records raised %s alerts", len(records), kind, len(raised))


def default_listeners(node: Node) -> list[IngestListener]:
    """The listeners every import uses: complaint/evaluation deadlines, then metric buckets, then the rules.

    Deadlines come first so the rules see them; metrics before rules so an alert's own bucket update
    lands on top of the record's.
    """
    return [*complaint_listeners(node), MetricsListener(node), RulesListener(node), CatalogueListener(node)]
