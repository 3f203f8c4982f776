"""Item records into the versioned register (docs/domain.md §9): new items, new versions, duplicates, conflicts.

* A new item is stored with version 1, effective from its 生效时间 (absent: from the beginning).
* A stored item sent again with the same identity (codes, level, body, department) and the terms of one of its
  versions is a duplicate. With changed terms (name, limits and units, fee, channel) it is a new version, effective
  from its 生效时间 (absent: the import time). It must take effect after the latest version, and no stored case of
  the item may have been accepted at or after that time (those cases used the older version; nothing is
  rewritten). The items row then holds the latest version's terms.
* A changed identity is refused as a conflict, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from node.domain import FIELD_NAMES
from node.ingest.outcomes import BatchContext, shown
from node.ingest.records import ItemRow, ItemTimeline, Pending
from node.ingest.storage import RecordStore, differences, item_limits
from node.ingest.validate import CONFLICT
from node.store import next_catalogue_revision

__all__ = ["IDENTITY_FIELDS", "VERSION_FIELDS", "ItemRegister"]

# The terms a version carries; everything else of an item (but its 生效时间) is its identity.
VERSION_FIELDS: tuple[str, ...] = (
    "name",
    "legal_limit",
    "legal_limit_unit",
    "promised_limit",
    "promised_limit_unit",
    "fee_flag",
    "fee_standard",
    "channel_code",
)
IDENTITY_FIELDS: tuple[str, ...] = tuple(
    name for name in FIELD_NAMES["item"] if name not in VERSION_FIELDS and name != "effective_from"
)


class ItemRegister:
    """Stores one batch's item records as new items or new versions (one instance per importer)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store

    def handle(self, context: BatchContext, records: list[Pending[ItemRow]]) -> list[Pending[ItemRow]]:
        """Store new items and versions; duplicates counted, conflicts rejected. Returns the records stored."""
        if not records:
            return records
        items, versions = self.store.tables["items"], self.store.tables["item_versions"]
        codes = [row["implementation_code"] for _, row in records]
        stored: dict[str, dict[str, Any]] = {}
        stored_versions: dict[str, list[dict[str, Any]]] = {}
        for start in range(0, len(codes), 5000):
            chunk = codes[start : start + 5000]
            for found in context.conn.execute(select(items).where(items.c.implementation_code.in_(chunk))).mappings():
                stored[found["implementation_code"]] = dict(found)
            if stored:
                query = (
                    select(versions)
                    .where(versions.c.implementation_code.in_([c for c in chunk if c in stored]))
                    .order_by(versions.c.version)
                )
                for found in context.conn.execute(query).mappings():
                    stored_versions.setdefault(found["implementation_code"], []).append(dict(found))
        fresh: list[Pending[ItemRow]] = []
        changed: list[tuple[int, ItemRow, dict[str, Any]]] = []
        for line, row in records:
            old = stored.get(row["implementation_code"])
            if old is None:
                fresh.append((line, row))
                continue
            differing = differences(row, old, IDENTITY_FIELDS)
            if differing:
                context.reject_conflict("item", line, row, old=old, differing=differing)
            elif any(
                not differences(row, v, VERSION_FIELDS) for v in stored_versions.get(row["implementation_code"], [])
            ):
                context.duplicate("item", line, row)
            else:
                changed.append((line, row, old))
        if fresh or changed:
            # Before the first items row is written (lock order: node.store.next_catalogue_revision).
            next_catalogue_revision(context.conn)
        self._insert_new(context, fresh)
        versioned = self._add_versions(context, changed)
        return fresh + versioned

    def _insert_new(self, context: BatchContext, fresh: list[Pending[ItemRow]]) -> None:
        rows = [row for _, row in fresh]
        self.store.insert(context, "items", [{**row, "version": 1, "status": "in_force"} for row in rows])
        self.store.insert(context, "item_versions", [_version_row(row, 1, context.now) for row in rows])
        for row in rows:
            limits = item_limits(row)
            context.new_items[row["implementation_code"]] = ItemTimeline(((row["effective_from"], limits),))

    def _add_versions(
        self, context: BatchContext, changed: list[tuple[int, ItemRow, dict[str, Any]]]
    ) -> list[Pending[ItemRow]]:
        """New versions of stored items, each checked against the latest version and the item's stored cases."""
        if not changed:
            return []
        cases = self.store.tables["cases"]
        latest_case: dict[str, datetime] = {
            code: latest
            for code, latest in context.conn.execute(
                select(cases.c.implementation_code, func.max(cases.c.accepted_at))
                .where(cases.c.implementation_code.in_(sorted({row["implementation_code"] for _, row, _ in changed})))
                .group_by(cases.c.implementation_code)
            )
        }
        items = self.store.tables["items"]
        timelines = self.store.items_for(context, (row["implementation_code"] for _, row, _ in changed))
        stored: list[Pending[ItemRow]] = []
        for line, row, old in changed:
            code = row["implementation_code"]
            effective = row["effective_from"] or context.now
            row["effective_from"] = effective
            previous: datetime | None = old["effective_from"]
            last_case: datetime | None = latest_case.get(code)
            if previous is not None and effective <= previous:
                detail = (
                    f"a new version of item {code!r} must take effect after version {old['version']} "
                    f"(effective {shown(previous)}), got {shown(effective)}"
                )
            elif last_case is not None and last_case >= effective:
                detail = (
                    f"item {code!r} has a case accepted {shown(last_case)}, under version {old['version']}: a new "
                    f"version cannot take effect before it ({shown(effective)})"
                )
            else:
                detail = ""
            if detail:
                context.reject("item", line, row, field_name="effective_from", reason=CONFLICT, detail=detail)
                continue
            version = int(old["version"]) + 1
            self.store.insert(context, "item_versions", [_version_row(row, version, context.now)])
            context.conn.execute(
                update(items)
                .where(items.c.implementation_code == code)
                .values({**_terms(row), "version": version, "effective_from": effective})
            )
            timeline = context.new_items.get(code) or timelines[code]
            context.new_items[code] = timeline.then(effective, item_limits(row))
            stored.append((line, row))
        return stored


def _version_row(row: ItemRow, version: int, now: datetime) -> dict[str, Any]:
    return {
        "implementation_code": row["implementation_code"],
        "version": version,
        "effective_from": row["effective_from"],
        **_terms(row),
        "explanation": "",
        "explained_at": None,
        "recorded_at": now,
    }


def _terms(row: ItemRow) -> dict[str, Any]:
    """The version fields of an item record."""
    values: Mapping[str, Any] = row
    return {name: values[name] for name in VERSION_FIELDS}
