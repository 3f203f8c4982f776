"""Supervision hooks of the import: listeners see each batch's NEW records inside the batch's transaction.

Contract (metrics and rules are written against it):

* ``on_records(conn, kind, records, now)`` is called inside the batch's transaction, after that batch's new records
  of one kind are written; never for duplicates or rejected records. Whatever a listener writes through ``conn``
  commits or rolls back with the records themselves.
* Each record is the validated row (model column names), typed by its kind's TypedDict in node.ingest.records
  (ItemRow, AcceptanceRow ... ComplaintRow: plain dicts, so the protocol's Mapping[str, Any]). For case-linked kinds
  (step, procedure_start, procedure_end, completion, payment, evaluation) it also has key ``"case"``: the case row
  AFTER the record's effect (CaseState), with the keys of CASE_FIELDS. A procedure_end record also has
  ``"procedure"`` (the closed special_procedures row, with its ``workdays``) and ``"previous_case"`` (the case's due
  dates and clock-stop days before recomputation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection

# The case columns a listener can rely on in record["case"].
CASE_FIELDS: tuple[str, ...] = (
    "case_no",
    "implementation_code",
    "basic_code",
    "item_type_code",
    "department",
    "accepted_at",
    "promised_due_at",
    "legal_due_at",
    "status",
    "completed_at",
    "clock_stop_workdays",
    "supplement_count",
    "return_count",
)

# Kinds whose records carry the "case" they belong to.
CASE_LINKED_KINDS = frozenset({"step", "procedure_start", "procedure_end", "completion", "payment", "evaluation"})


class IngestListener(Protocol):
    """Something that reacts to newly stored records in the same transaction (metrics, rules)."""

    def on_records(self, conn: Connection, kind: str, records: Sequence[Mapping[str, Any]], now: datetime) -> None:
        """Handle one batch's new records of one kind; raising aborts (rolls back) the whole batch."""
        ...
