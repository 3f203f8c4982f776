"""The stored state the handlers check records against: known keys, cases and items, and where new rows go.

A RecordStore serves one importer for its lifetime: it holds the database back end, the tables, the item cache and
the generated case-row converters. Each check is one query per batch: existence of natural keys (a known key with
the same content is a duplicate, with other content a conflict; nothing is ever overwritten), the current cases of
a batch's records, and the limits of their items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, Table, select

from node.domain import FIELD_NAMES
from node.ingest.backends import Backend, backend_for
from node.ingest.listeners import CASE_FIELDS, IngestListener
from node.ingest.outcomes import BatchContext
from node.ingest.records import AnyRow, CaseState, CopiedItemCodes, ItemLimits, ItemTimeline, Pending, RowT, Tagged
from node.ingest.validate import KIND_TABLES, NATURAL_KEYS
from node.store import Base

# The case columns listeners get, and the fewer the import's own checks need when nobody listens.
CASE_READ_COLUMNS: tuple[str, ...] = (*CASE_FIELDS, "clock_stopped")
_CASE_CHECK_COLUMNS: tuple[str, ...] = (
    "case_no",
    "accepted_at",
    "status",
    "clock_stopped",
    "supplement_count",
    "return_count",
)
# An item's timeline: the copied codes from items, each version's limits from item_versions (oldest first).
_VERSION_COLUMNS = (
    "implementation_code",
    "effective_from",
    "promised_limit",
    "promised_limit_unit",
    "legal_limit",
    "legal_limit_unit",
)


class RecordStore:
    """Existence, conflict and case checks against stored rows, the item cache, inserts and listener calls."""

    def __init__(self, engine: Engine, listeners: Sequence[IngestListener]) -> None:
        self.backend: Backend = backend_for(engine)
        self.tables = _tables()
        self._listeners = tuple(listeners)
        self._case_columns = CASE_READ_COLUMNS if self._listeners else _CASE_CHECK_COLUMNS
        self._items: dict[str, ItemTimeline] | None = None
        self._case_converters: dict[tuple[str, ...], Callable[[Sequence[Any]], CaseState]] = {}

    def drop_known(
        self,
        context: BatchContext,
        kind: str,
        records: list[Pending[RowT]],
        skip_columns: Callable[[RowT], frozenset[str]] | None = None,
    ) -> list[Pending[RowT]]:
        """Records whose natural key is not stored yet; stored ones are counted duplicate or rejected as conflict."""
        if not records:
            return records
        table = self.tables[KIND_TABLES[kind]]
        key_columns = NATURAL_KEYS[kind]
        first_key = key_columns[0]
        if len(key_columns) == 1:
            found = self.backend.fetch_by_keys(
                context.conn, table.name, (first_key,), first_key, [row[first_key] for _, row in records]
            )
            if not found:
                return records
            known = {value for (value,) in found}
            candidates = [row[first_key] for _, row in records if row[first_key] in known]
        else:
            candidates = list({row[first_key] for _, row in records})
        compare = FIELD_NAMES[kind]
        stored: dict[Any, dict[str, Any]] = {}
        selected = [table.c[name] for name in dict.fromkeys((*key_columns, *compare))]
        for start in range(0, len(candidates), 5000):
            chunk = candidates[start : start + 5000]
            for found_row in context.conn.execute(select(*selected).where(table.c[first_key].in_(chunk))).mappings():
                key = found_row[first_key] if len(key_columns) == 1 else tuple(found_row[c] for c in key_columns)
                stored[key] = dict(found_row)
        if not stored:
            return records
        fresh: list[Pending[RowT]] = []
        for line, row in records:
            key = row[first_key] if len(key_columns) == 1 else tuple(row[c] for c in key_columns)
            old = stored.get(key)
            if old is None:
                fresh.append((line, row))
                continue
            skipped = skip_columns(row) if skip_columns is not None else frozenset()
            differing = differences(row, old, (c for c in compare if c not in skipped))
            if differing:
                context.reject_conflict(kind, line, row, old=old, differing=differing)
            else:
                context.duplicate(kind, line, row)
        return fresh

    def insert(self, context: BatchContext, table: str, rows: Sequence[AnyRow]) -> None:
        """Insert new rows into ``table`` (missing columns take their model default)."""
        self.backend.insert(context.conn, self.tables[table], rows)

    def notify(self, context: BatchContext, kind: str, rows: Sequence[AnyRow]) -> None:
        """Hand the batch's new rows of one kind to every listener, inside the batch's transaction."""
        if rows:
            for listener in self._listeners:
                listener.on_records(context.conn, kind, rows, context.now)

    def fetch_cases(
        self,
        context: BatchContext,
        case_nos: Iterable[str],
        columns: tuple[str, ...] | None = None,
        *,
        lock: bool = False,
    ) -> dict[str, CaseState]:
        """Current case rows for the given numbers, as Python values.

        The columns listeners get, or only those the import itself needs when nobody listens: reading and
        converting less is most of a completion's cost.
        """
        columns = columns or self._case_columns
        keys = list(dict.fromkeys(case_nos))
        rows = self.backend.fetch_by_keys(context.conn, "cases", columns, "case_no", keys, lock=lock)
        convert = self._case_converter(columns)
        cases: dict[str, CaseState] = {}
        for values in rows:
            case = convert(values)
            cases[case["case_no"]] = case
        return cases

    def _case_converter(self, columns: tuple[str, ...]) -> Callable[[Sequence[Any]], CaseState]:
        """A generated (values -> case dict) function for one column list: datetimes and the flag as Python values.

        Straight-line code, because the per-column loop cost more than the query on every completion.
        """
        convert = self._case_converters.get(columns)
        if convert is None:
            namespace: dict[str, Any] = {"DT": self.backend.dt_result}
            parts = []
            for index, name in enumerate(columns):
                value = f"v[{index}]"
                if name in ("accepted_at", "promised_due_at", "legal_due_at", "completed_at"):
                    value = f"DT({value})"
                elif name == "clock_stopped":
                    value = f"bool({value})"
                parts.append(f"{name!r}: {value}")
            source = f"def convert(v):\n    return {{{', '.join(parts)}}}\n"
            exec(source, namespace)  # noqa: S102 - generated from our own column names only
            convert = self._case_converters[columns] = namespace["convert"]
        return convert

    def items_for(self, context: BatchContext, codes: Iterable[str]) -> Mapping[str, ItemTimeline]:
        """Item timelines by implementation code: the cache, this batch's new items and versions, re-checked misses."""
        if self._items is None:
            self._items = self._timelines(context, None)
        known = self._items | context.new_items if context.new_items else self._items
        missing = [code for code in set(codes) if code not in known]
        if missing:
            # Another process (CLI import beside gRPC ingest) may have added items since the cache was filled.
            found = self._timelines(context, missing)
            self._items.update(found)
            known = {**known, **found} if known is not self._items else known
        return known

    def _timelines(self, context: BatchContext, codes: list[str] | None) -> dict[str, ItemTimeline]:
        """Stored timelines of the given items (all items with None)."""
        items, versions = self.tables["items"], self.tables["item_versions"]
        query = (
            select(items.c.basic_code, items.c.type_code, *(versions.c[c] for c in _VERSION_COLUMNS))
            .join(items, items.c.implementation_code == versions.c.implementation_code)
            .order_by(versions.c.implementation_code, versions.c.version)
        )
        found: dict[str, ItemTimeline] = {}
        chunks = [None] if codes is None else [codes[start : start + 5000] for start in range(0, len(codes), 5000)]
        for chunk in chunks:
            selected = query if chunk is None else query.where(versions.c.implementation_code.in_(chunk))
            for row in context.conn.execute(selected).mappings():
                code = row["implementation_code"]
                limits = item_limits(row)
                timeline = found.get(code)
                found[code] = (
                    ItemTimeline(((row["effective_from"], limits),))
                    if timeline is None
                    else timeline.then(row["effective_from"], limits)
                )
        return found

    def with_known_cases(
        self, context: BatchContext, kind: str, records: list[Pending[RowT]]
    ) -> tuple[list[Pending[RowT]], dict[str, CaseState]]:
        """The records whose case exists (others rejected 'unknown case'), and those cases."""
        cases = self.fetch_cases(context, (row["case_no"] for _, row in records))
        if len(cases) == len({row["case_no"] for _, row in records}):
            return records, cases
        kept: list[Pending[RowT]] = []
        for line, row in records:
            if row["case_no"] in cases:
                kept.append((line, row))
            else:
                context.reject_unknown_case(kind, line, row)
        return kept, cases

    def remember_items(self, items: Mapping[str, ItemTimeline]) -> None:
        """Add a committed batch's new items and versions to the cache (if it is filled yet)."""
        if items and self._items is not None:
            self._items.update(items)


def split_repeats(pending: list[Tagged[RowT]], kind: str) -> tuple[list[Pending[RowT]], list[Tagged[RowT]]]:
    """First occurrences of each key, and the repeats (stored in a later round, once the first has landed)."""
    key_columns = NATURAL_KEYS[kind]
    seen: set[Any] = set()
    firsts: list[Pending[RowT]] = []
    repeats: list[Tagged[RowT]] = []
    single = key_columns[0] if len(key_columns) == 1 else None
    for line, record_kind, row in pending:
        key = row[single] if single is not None else tuple(row[c] for c in key_columns)
        if key in seen:
            repeats.append((line, record_kind, row))
        else:
            seen.add(key)
            firsts.append((line, row))
    return firsts, repeats


def differences(new: AnyRow, old: Mapping[Any, Any], columns: Iterable[str]) -> list[str]:
    """Columns whose values differ (Decimal compares by value: 12.5 == 12.50)."""
    return [name for name in columns if new.get(name) != old.get(name)]


def item_limits(item: Mapping[Any, Any]) -> ItemLimits:
    """What a new case needs from one version of its item (a row with the limits and the item's codes)."""
    promised_limit, promised_unit = item["promised_limit"], item["promised_limit_unit"]
    legal_limit, legal_unit = item["legal_limit"], item["legal_limit_unit"]
    codes: CopiedItemCodes = {"basic_code": item["basic_code"], "item_type_code": item["type_code"]}
    limits_key = (promised_limit, promised_unit, legal_limit, legal_unit)
    return ItemLimits(promised_limit, promised_unit, legal_limit, legal_unit, codes, limits_key)


def _tables() -> dict[str, Table]:
    import node.store.all_models  # noqa: F401 - every table registered

    return dict(Base.metadata.tables)
