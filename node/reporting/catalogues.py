"""Item-register figures upward: this node's own, each child's latest (as reported), and the subtree's sum.

A report carries its subtree's figures as state (docs/domain.md §9): the parent keeps each child's latest in
``child_catalogues`` and adds them to its own when it builds its next report, so the province holds every city's.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Engine, Table, select

from federation import AcceptedReport
from federation.proto.v1.common_pb2 import CatalogueFigures as CatalogueMessage
from federation.proto.v1.common_pb2 import MonthCount
from node.store import ChildCatalogue, catalogue_revision, dialect_insert
from node.supervision import CatalogueFigures, catalogue_figures

__all__ = [
    "catalogue_from_message",
    "catalogue_message",
    "children_catalogues",
    "store_child_catalogues",
    "subtree_catalogue",
]

_child_catalogues = cast(Table, ChildCatalogue.__table__)
_COUNTS = (
    "items",
    "items_in_force",
    "items_retired",
    "items_flagged",
    "items_compared",
    "sum_promised",
    "sum_legal",
    "departments",
)


def catalogue_message(figures: CatalogueFigures) -> CatalogueMessage:
    """The wire form: counts, and retirements per month sorted by month (deterministic bytes)."""
    message = CatalogueMessage(**{name: getattr(figures, name) for name in _COUNTS})
    message.retired_by_month.extend(
        MonthCount(month=month, count=count) for month, count in sorted(figures.retired_by_month.items())
    )
    return message


def catalogue_from_message(message: CatalogueMessage) -> CatalogueFigures:
    """A reported message back to figures that add up."""
    figures = CatalogueFigures()
    for name in _COUNTS:
        setattr(figures, name, int(getattr(message, name)))
    for entry in message.retired_by_month:
        figures.retired_by_month[entry.month] = figures.retired_by_month.get(entry.month, 0) + int(entry.count)
    return figures


def children_catalogues(conn: Connection) -> dict[str, CatalogueFigures]:
    """Each child's latest reported subtree figures, by child id (children that never sent any are absent)."""
    found: dict[str, CatalogueFigures] = {}
    for child_id, raw in conn.execute(select(_child_catalogues.c.child_id, _child_catalogues.c.figures)):
        found[child_id] = catalogue_from_message(CatalogueMessage.FromString(raw))
    return found


@dataclass(frozen=True, slots=True)
class _Computed:
    """Subtree figures as computed under a catalogue revision, for the month they were computed in."""

    revision: int
    month: str
    figures: CatalogueFigures


# By engine: nodes hosted in one process each have their own, and an entry goes with its engine (a restore needs the
# node stopped, so a restored database is read by a new engine).
_computed: weakref.WeakKeyDictionary[Engine, _Computed] = weakref.WeakKeyDictionary()
_computed_lock = threading.Lock()


def subtree_catalogue(conn: Connection, now: datetime) -> CatalogueFigures:
    """Own register figures plus every child's latest: what the next report carries upward.

    Every report carries them, and they rarely change: they are computed again only when the catalogue revision
    moved (every writer of items, item versions and child catalogues counts its change) or the month did (the
    retirements counted are those of the last 12 months). The revision is read BEFORE the figures: a change
    committed in between is then in figures kept under the older value, and the next call sees the newer one (the
    report builder reads the latest committed state: it holds the metric revision row's write lock).
    """
    revision = catalogue_revision(conn)
    month = now.strftime("%Y-%m")
    engine = conn.engine
    with _computed_lock:
        computed = _computed.get(engine)
    if computed is None or computed.revision != revision or computed.month != month:
        total = catalogue_figures(conn, now)
        for figures in children_catalogues(conn).values():
            total.add(figures)
        computed = _Computed(revision, month, total)
        with _computed_lock:
            _computed[engine] = computed
    # A copy: the caller may add to it.
    figures = computed.figures
    return replace(figures, retired_by_month=dict(figures.retired_by_month))


def store_child_catalogues(conn: Connection, reports: Sequence[AcceptedReport]) -> bool:
    """Keep each child's latest figures (the reports are in order; one that carries none leaves them as they were).

    True if any child's figures differ from those stored before (every report carries them, mostly unchanged); the
    caller then counts the change (node.store.next_catalogue_revision) in the same transaction, after taking the
    metric revision row (the lock order of the two counters), or ``subtree_catalogue`` keeps the figures it had.
    """
    latest: dict[str, AcceptedReport] = {}
    for report in reports:
        if report.body.HasField("catalogue"):
            latest[report.child_id] = report
    if not latest:
        return False
    stored: dict[str, bytes] = dict(
        conn.execute(
            select(_child_catalogues.c.child_id, _child_catalogues.c.figures).where(
                _child_catalogues.c.child_id.in_(sorted(latest))
            )
        ).all()
    )
    changed = False
    for child_id, report in sorted(latest.items()):
        figures = report.body.catalogue.SerializeToString(deterministic=True)
        changed = changed or stored.get(child_id) is None or bytes(stored[child_id]) != figures
        values = {
            "child_id": child_id,
            "sequence": report.body.sequence,
            "figures": figures,
            "updated_at": report.received_at,
        }
        statement = dialect_insert(conn, _child_catalogues).values(values)
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[_child_catalogues.c.child_id],
                set_={name: statement.excluded[name] for name in ("sequence", "figures", "updated_at")},
            )
        )
    return changed
