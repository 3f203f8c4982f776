"""What report-exchange tests read and forge: a node's own totals straight from its database (never from the
roll-up under test), the roll-up under test, and a report changed after it was signed."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlalchemy import func, select

from federation import COUNTER_FIELDS, parse_body, serialize
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import ReportBody
from node.app import Node
from node.reporting import subtree_buckets
from node.store import Case, Item, MetricBucket

Key = tuple[date, str, str]
Totals = dict[Key, tuple[int, ...]]


def own_totals(node: Node) -> Totals:
    """A node's own metric buckets summed per upward key, read directly from its database."""
    table = MetricBucket.__table__
    keys = [table.c.day, table.c.basic_code, table.c.item_type_code]
    query = select(*keys, *(func.sum(table.c[name]) for name in COUNTER_FIELDS)).group_by(*keys)
    with node.engine.connect() as conn:
        return {(row[0], row[1], row[2]): tuple(int(v) for v in row[3:]) for row in conn.execute(query)}


def received_by_key(node: Node) -> dict[Key, int]:
    """Cases accepted per upward key, counted from the raw cases table (independent of any bucket)."""
    cases, items = Case.__table__, Item.__table__
    with node.engine.connect() as conn:
        rows = conn.execute(
            select(cases.c.accepted_at, items.c.basic_code, items.c.type_code).join(
                items, items.c.implementation_code == cases.c.implementation_code
            )
        ).all()
    counts: dict[Key, int] = defaultdict(int)
    for accepted_at, basic_code, type_code in rows:
        counts[(accepted_at.date(), basic_code, type_code)] += 1
    return dict(counts)


def add_totals(*parts: Totals) -> Totals:
    """Key-wise sum of several totals."""
    result: dict[Key, list[int]] = {}
    for part in parts:
        for key, values in part.items():
            into = result.setdefault(key, [0] * len(COUNTER_FIELDS))
            for index, value in enumerate(values):
                into[index] += value
    return {key: tuple(values) for key, values in result.items()}


def nonzero(totals: Totals) -> Totals:
    """Drop all-zero keys (a zeroed key and an absent key mean the same)."""
    return {key: values for key, values in totals.items() if any(values)}


def subtree_of(node: Node) -> Totals:
    """The node's roll-up under test: own + children's latest, per key."""
    with node.engine.connect() as conn:
        return {(b.day, b.basic_code, b.item_type_code): b.counters for b in subtree_buckets(conn)}


def inflated_after_signing(envelope: SignedEnvelope, received: int = 1000) -> SignedEnvelope:
    """A copy of a report whose first bucket received ``received`` more cases after it was signed."""
    tampered = SignedEnvelope()
    tampered.CopyFrom(envelope)
    body = parse_body(tampered, ReportBody)
    body.buckets[0].counters.received += received
    tampered.body = serialize(body)
    return tampered
