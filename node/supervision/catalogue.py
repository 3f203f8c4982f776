"""The item catalogue as a versioned register (docs/domain.md §9): views, history, retire, explain, R14, figures.

Views and history of items, retiring and re-activating, the written explanation of Panyu's rule (R14), and the
catalogue's additive figures for reports.

* Versions come from the import (node.ingest.item_versions); here they are read, never changed, except for the
  explanation an operator records on the latest one (``supnet items explain``).
* Retiring and re-activating an item is an administrative action (audit log) kept in item_status_changes.
* R14: an item in force whose latest version promises more than half its legal limit (same unit) needs a written
  explanation; ``flag_items`` raises one reminder per such version until it has one, and closes the flags of
  versions that were explained, superseded or retired.
* ``catalogue_figures``: counts and sums only (never an average), so a parent adds its children's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, RowMapping, Table, and_, func, select, update

from node.audit_log import operator_actor, record_audit
from node.errors import InvalidStateError, NotFoundError, ValidationError
from node.store import (
    Alert,
    Item,
    ItemStatusChange,
    ItemVersion,
    next_catalogue_revision,
)
from node.supervision.alerts import OPEN_STATUSES, AlertDraft, RaisedAlert, raise_alerts
from node.supervision.rulebook import R14, Thresholds, item_subject

if TYPE_CHECKING:
    from node.app import Node

__all__ = [
    "EXPLANATION_SHARE",
    "ITEM_EXPLAINED",
    "ITEM_REACTIVATED",
    "ITEM_RETIRED",
    "ITEM_STATUS_LABELS",
    "CatalogueFigures",
    "CatalogueListener",
    "ItemHistory",
    "ItemStatusChangeView",
    "ItemVersionView",
    "ItemView",
    "catalogue_figures",
    "explain_item",
    "flag_items",
    "get_item",
    "item_history",
    "list_items",
    "reactivate_item",
    "retire_item",
]

log = logging.getLogger(__name__)

# Panyu's rule: a promised limit above this share of the legal one needs a written explanation.
EXPLANATION_SHARE = 0.5
ITEM_RETIRED = "item.retired"
ITEM_REACTIVATED = "item.reactivated"
ITEM_EXPLAINED = "item.explained"
ITEM_STATUS_LABELS = {"in_force": "在用 in force", "retired": "已取消 retired"}

_items: Table = Item.__table__  # type: ignore[assignment]
_versions: Table = ItemVersion.__table__  # type: ignore[assignment]
_changes: Table = ItemStatusChange.__table__  # type: ignore[assignment]
_alerts: Table = Alert.__table__  # type: ignore[assignment]


def needs_explanation(promised: int, promised_unit: str, legal: int, legal_unit: str) -> bool:
    """Panyu's rule: the promised limit is more than half the legal one (judged only in the same unit)."""
    return promised_unit == legal_unit and legal > 0 and promised > EXPLANATION_SHARE * legal


@dataclass(frozen=True, slots=True)
class ItemView:
    """An item as the register shows it: identity, status and its latest version's terms."""

    implementation_code: str
    basic_code: str
    name: str
    type_code: str
    department: str
    status: str
    version: int
    effective_from: datetime | None
    promised_limit: int
    promised_limit_unit: str
    legal_limit: int
    legal_limit_unit: str
    needs_explanation: bool
    explanation: str
    retired_at: datetime | None
    retire_reason: str

    @property
    def flagged(self) -> bool:
        """R14: in force, needs an explanation and has none."""
        return self.status == "in_force" and self.needs_explanation and not self.explanation

    @property
    def compression(self) -> float | None:
        """Promised ÷ legal (same unit only), for display; reports carry the sums instead."""
        if self.promised_limit_unit != self.legal_limit_unit or self.legal_limit <= 0:
            return None
        return self.promised_limit / self.legal_limit


@dataclass(frozen=True, slots=True)
class ItemVersionView:
    """One version of an item."""

    version: int
    effective_from: datetime | None
    name: str
    promised_limit: int
    promised_limit_unit: str
    legal_limit: int
    legal_limit_unit: str
    fee_flag: bool
    explanation: str
    explained_at: datetime | None
    recorded_at: datetime | None


@dataclass(frozen=True, slots=True)
class ItemStatusChangeView:
    """One retirement (取消) or re-activation (恢复)."""

    action: str
    at: datetime
    reason: str
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class ItemHistory:
    """An item's versions (oldest first) and its status changes (oldest first)."""

    item: ItemView
    versions: list[ItemVersionView]
    changes: list[ItemStatusChangeView]


def _item_query() -> Any:
    latest = and_(
        _versions.c.implementation_code == _items.c.implementation_code, _versions.c.version == _items.c.version
    )
    return select(
        _items.c.implementation_code,
        _items.c.basic_code,
        _items.c.name,
        _items.c.type_code,
        _items.c.department,
        _items.c.status,
        _items.c.version,
        _items.c.effective_from,
        _items.c.promised_limit,
        _items.c.promised_limit_unit,
        _items.c.legal_limit,
        _items.c.legal_limit_unit,
        func.coalesce(_versions.c.explanation, "").label("explanation"),
        _items.c.retired_at,
        _items.c.retire_reason,
    ).select_from(_items.outerjoin(_versions, latest))


def _item_view(row: RowMapping) -> ItemView:
    values = dict(row)
    values["needs_explanation"] = needs_explanation(
        row["promised_limit"], row["promised_limit_unit"], row["legal_limit"], row["legal_limit_unit"]
    )
    return ItemView(**values)


def list_items(node: Node, *, status: str | None = None, flagged_only: bool = False) -> list[ItemView]:
    """The register's items by code, optionally only those in force / retired, or only those flagged (R14)."""
    query = _item_query().order_by(_items.c.implementation_code)
    if status is not None:
        query = query.where(_items.c.status == status)
    with node.engine.connect() as conn:
        views = [_item_view(row) for row in conn.execute(query).mappings()]
    return [v for v in views if v.flagged] if flagged_only else views


def _get(conn: Connection, code: str) -> ItemView:
    row = conn.execute(_item_query().where(_items.c.implementation_code == code)).mappings().first()
    if row is None:
        raise NotFoundError(f"item {code!r} not found")
    return _item_view(row)


def get_item(node: Node, code: str) -> ItemView:
    """One item (NotFoundError when the code is unknown)."""
    with node.engine.connect() as conn:
        return _get(conn, code)


def item_history(node: Node, code: str) -> ItemHistory:
    """An item with every version and status change."""
    with node.engine.connect() as conn:
        item = _get(conn, code)
        v = _versions.c
        versions = [
            ItemVersionView(
                row.version,
                row.effective_from,
                row.name,
                row.promised_limit,
                row.promised_limit_unit,
                row.legal_limit,
                row.legal_limit_unit,
                bool(row.fee_flag),
                row.explanation,
                row.explained_at,
                row.recorded_at,
            )
            for row in conn.execute(select(_versions).where(v.implementation_code == code).order_by(v.version))
        ]
        c = _changes.c
        changes = [
            ItemStatusChangeView(row.action, row.at, row.reason, row.recorded_at)
            for row in conn.execute(select(_changes).where(c.implementation_code == code).order_by(c.at, c.id))
        ]
    return ItemHistory(item, versions, changes)


def _required(value: str, what: str, code: str) -> str:
    text = value.strip()
    if not text:
        raise ValidationError(f"item {code}: field '{what}': required", field=what, reason="missing")
    return text


def _close_flags(conn: Connection, codes_subjects: list[tuple[int, str]], note: str, now: datetime) -> None:
    for alert_id, _ in codes_subjects:
        conn.execute(
            update(_alerts)
            .where(_alerts.c.id == alert_id, _alerts.c.status.in_(OPEN_STATUSES))
            .values(status="corrected", corrected_at=now, correction_note=note)
        )


def _open_flags(conn: Connection, code: str | None = None) -> list[tuple[int, str]]:
    query = select(_alerts.c.id, _alerts.c.subject).where(_alerts.c.rule_id == R14, _alerts.c.status.in_(OPEN_STATUSES))
    if code is not None:
        query = query.where(_alerts.c.implementation_code == code)
    return [(int(row.id), str(row.subject)) for row in conn.execute(query)]


def retire_item(
    node: Node, code: str, reason: str, *, at: datetime | None = None, now: datetime | None = None
) -> ItemView:
    """Retire an item in force (取消) from ``at`` (default now), with a reason; its R14 flag closes."""
    text = _required(reason, "reason", code)
    when = now or node.now()
    effective = at or when
    with node.engine.begin() as conn:
        next_catalogue_revision(conn)  # first: before any items row (node.store.next_catalogue_revision)
        item = _get(conn, code)
        if item.status != "in_force":
            raise InvalidStateError(f"item {code} is already retired (since {item.retired_at}); reactivate it first")
        conn.execute(
            update(_items)
            .where(_items.c.implementation_code == code)
            .values(status="retired", retired_at=effective, retire_reason=text)
        )
        conn.execute(
            _changes.insert().values(
                implementation_code=code, action="retire", at=effective, reason=text, recorded_at=when
            )
        )
        _close_flags(conn, _open_flags(conn, code), "事项已取消 item retired", when)
        record_audit(
            conn,
            actor=operator_actor(node.config.id),
            action=ITEM_RETIRED,
            target=f"item:{code}",
            detail={"reason": text, "at": effective.isoformat()},
        )
        view = _get(conn, code)
    log.info("item %s retired: %s", code, text)
    return view


def reactivate_item(node: Node, code: str, reason: str = "", *, now: datetime | None = None) -> ItemView:
    """Put a retired item back in force (恢复) from now; R14 judges it again at the next scan."""
    when = now or node.now()
    with node.engine.begin() as conn:
        next_catalogue_revision(conn)  # first: before any items row (node.store.next_catalogue_revision)
        item = _get(conn, code)
        if item.status != "retired":
            raise InvalidStateError(f"item {code} is in force; only a retired item can be reactivated")
        conn.execute(
            update(_items)
            .where(_items.c.implementation_code == code)
            .values(status="in_force", retired_at=None, retire_reason="")
        )
        conn.execute(
            _changes.insert().values(
                implementation_code=code, action="reactivate", at=when, reason=reason.strip(), recorded_at=when
            )
        )
        record_audit(
            conn,
            actor=operator_actor(node.config.id),
            action=ITEM_REACTIVATED,
            target=f"item:{code}",
            detail={"reason": reason.strip()},
        )
        view = _get(conn, code)
    log.info("item %s reactivated", code)
    return view


def explain_item(node: Node, code: str, text: str, *, now: datetime | None = None) -> ItemView:
    """Record the written explanation of the latest version's promised limit; its R14 flag closes."""
    explanation = _required(text, "text", code)
    when = now or node.now()
    with node.engine.begin() as conn:
        next_catalogue_revision(conn)  # first: before any items row (node.store.next_catalogue_revision)
        item = _get(conn, code)
        conn.execute(
            update(_versions)
            .where(_versions.c.implementation_code == code, _versions.c.version == item.version)
            .values(explanation=explanation, explained_at=when)
        )
        subject = item_subject(code, item.version)
        _close_flags(
            conn, [f for f in _open_flags(conn, code) if f[1] == subject], f"说明 explained: {explanation}", when
        )
        record_audit(
            conn,
            actor=operator_actor(node.config.id),
            action=ITEM_EXPLAINED,
            target=f"item:{code}",
            detail={"version": item.version, "text": explanation},
        )
        view = _get(conn, code)
    return view


def flag_items(conn: Connection, thresholds: Thresholds, now: datetime) -> list[RaisedAlert]:
    """R14 in the caller's transaction: flag in-force items whose latest version needs an explanation.

    One reminder per such version without an explanation; the open flags of versions explained, superseded or
    retired since are closed.
    """
    rows = conn.execute(_item_query().where(_items.c.status == "in_force")).mappings().all()
    flagged = [row for row in rows if _item_view(row).flagged and thresholds.enabled(R14, row["type_code"])]
    wanted = {item_subject(row["implementation_code"], row["version"]) for row in flagged}
    stale = [f for f in _open_flags(conn) if f[1] not in wanted]
    if stale:
        _close_flags(conn, stale, "已说明、已更新或已取消 explained, superseded or retired", now)
    if not flagged:
        return []
    recorded: dict[str, datetime | None] = {
        code: at
        for code, at in conn.execute(
            select(_versions.c.implementation_code, _versions.c.recorded_at).where(
                _versions.c.implementation_code.in_([row["implementation_code"] for row in flagged]),
                _versions.c.version
                == select(_items.c.version)
                .where(_items.c.implementation_code == _versions.c.implementation_code)
                .scalar_subquery(),
            )
        )
    }
    drafts = [
        AlertDraft(
            rule_id=R14,
            subject=item_subject(row["implementation_code"], row["version"]),
            department=row["department"],
            implementation_code=row["implementation_code"],
            message=(
                f"事项 {row['implementation_code']} 承诺时限 {row['promised_limit']} 超过法定时限 {row['legal_limit']} "
                f"的一半，需书面说明 (promised limit above half the legal one: explanation required)"
            ),
            raised_at=now,
            basic_code=row["basic_code"],
            item_type_code=row["type_code"],
            # Broken when the version took effect (or, in force from the beginning, when it was stored).
            breached_at=row["effective_from"] or recorded.get(row["implementation_code"]) or now,
        )
        for row in flagged
    ]
    return raise_alerts(conn, drafts)


@dataclass
class CatalogueFigures:
    """Additive catalogue counts of a node (or, summed, of a subtree) as of a day (docs/domain.md §9).

    Average compression is derived where shown: sum_promised ÷ sum_legal over the ``items_compared`` items in force
    whose two limits share a unit. ``retired_by_month`` counts retirements by month "YYYY-MM" (last 12 months).
    """

    items: int = 0
    items_in_force: int = 0
    items_retired: int = 0
    items_flagged: int = 0
    items_compared: int = 0
    sum_promised: int = 0
    sum_legal: int = 0
    departments: int = 0
    retired_by_month: dict[str, int] = field(default_factory=dict)

    @property
    def compression(self) -> float | None:
        """Average compression 承诺压缩比: Σ promised ÷ Σ legal (None without any)."""
        return self.sum_promised / self.sum_legal if self.sum_legal else None

    def add(self, other: CatalogueFigures) -> None:
        """Add another node's figures (roll-up)."""
        for name in (
            "items",
            "items_in_force",
            "items_retired",
            "items_flagged",
            "items_compared",
            "sum_promised",
            "sum_legal",
            "departments",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for month, count in other.retired_by_month.items():
            self.retired_by_month[month] = self.retired_by_month.get(month, 0) + count


def _month_back(now: datetime, months: int) -> str:
    index = now.year * 12 + now.month - 1 - months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def catalogue_figures(conn: Connection, now: datetime) -> CatalogueFigures:
    """The node's own catalogue figures as of ``now``."""
    figures = CatalogueFigures()
    for row in conn.execute(_item_query()).mappings():
        view = _item_view(row)
        figures.items += 1
        if view.status != "in_force":
            figures.items_retired += 1
            continue
        figures.items_in_force += 1
        figures.items_flagged += int(view.flagged)
        if view.compression is not None:
            figures.items_compared += 1
            figures.sum_promised += view.promised_limit
            figures.sum_legal += view.legal_limit
    figures.departments = int(
        conn.execute(
            select(func.count(func.distinct(_items.c.department))).where(_items.c.status == "in_force")
        ).scalar_one()
    )
    oldest = _month_back(now, 11)
    for retired in conn.execute(
        select(_items.c.retired_at).where(_items.c.status == "retired", _items.c.retired_at.is_not(None))
    ):
        month = retired.retired_at.strftime("%Y-%m")
        if oldest <= month <= now.strftime("%Y-%m"):
            figures.retired_by_month[month] = figures.retired_by_month.get(month, 0) + 1
    return figures


class CatalogueListener:
    """Ingest listener: R14 judged again whenever items (new ones or new versions) are stored."""

    def __init__(self, node: Node) -> None:
        self.thresholds = Thresholds(node.config.supervision)

    def on_records(self, conn: Connection, kind: str, records: Any, now: datetime) -> None:
        """Flag (or unflag) items after an item batch, in its transaction."""
        if kind == "item" and records:
            flag_items(conn, self.thresholds, now)
