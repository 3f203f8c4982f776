"""Tests of node.spotcheck: a real district store (the real importer and report builder), honest and dishonest.

``district`` builds one district node on a real SQLite file (or PostgreSQL): one item, 200 cases accepted on
2026-03-02 with consecutive numbers (most still open and overdue at the node's clock), 200 cases accepted in
February and all completed on 2026-03-10 (some on time, some late). ``LocalAsker`` reaches the node in-process
through the same functions the drill-down answer uses, so hundreds of seeded checks stay fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from federation import outbox_table, parse_body
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import ReportBody
from federation.proto.v1.spotcheck_pb2 import SpotCheckAnswer, SpotCheckRequest
from node.app import Node, open_node
from node.bootstrap import init_node
from node.config import load_config, save_config
from node.drilldown import answer_spot_check
from node.ingest import Importer
from node.supervision import default_listeners
from tests.harness.ingest_records import ITEM

NOW = datetime(2026, 4, 1, 12, 0)
ACCEPT_DAY = date(2026, 3, 2)
COMPLETE_DAY = date(2026, 3, 10)
NODE_ID = "gd.gz.py"


def _records() -> list[tuple[str, int, dict[str, str]]]:
    item = {**ITEM, "承诺办结时限": "5", "法定办结时限": "20"}
    records: list[tuple[str, int, dict[str, str]]] = [("item", 1, item)]
    line = 2
    for number in range(1, 201):
        fields = {
            "case_no": f"PY-20260302-{number:05d}",
            "implementation_code": ITEM["实施编码"],
            "department": "番禺区市场监督管理局",
            "accepted_at": f"20260302T{9 + number % 8:02d}{number % 60:02d}00",
            "applicant_name": "张三丰",
        }
        records.append(("acceptance", line, fields))
        line += 1
        if number % 10 == 0:  # a few completed (on various days); the rest stay open, overdue by NOW
            completed = datetime(2026, 3, 3, 10) + timedelta(days=number // 10)
            records.append(
                ("completion", line, {"case_no": fields["case_no"], "completed_at": f"{completed:%Y%m%dT%H%M%S}"})
            )
            line += 1
    per_day: dict[date, int] = {}
    for number in range(1, 201):
        accepted = datetime(2026, 2, 20, 9) + timedelta(days=number % 8)
        per_day[accepted.date()] = per_day.get(accepted.date(), 0) + 1  # numbered in sequence per day
        case_no = f"PY-{accepted:%Y%m%d}-F{per_day[accepted.date()]:04d}"
        records.append(
            (
                "acceptance",
                line,
                {
                    "case_no": case_no,
                    "implementation_code": ITEM["实施编码"],
                    "department": "番禺区市场监督管理局",
                    "accepted_at": f"{accepted:%Y%m%dT%H%M%S}",
                    "applicant_name": "李四",
                },
            )
        )
        result = "2" if number % 17 == 0 else "1"
        records.append(
            ("completion", line + 1, {"case_no": case_no, "completed_at": "20260310T150000", "result_code": result})
        )
        line += 2
    return records


def make_district(base: Path, db_url: str = "") -> Node:
    """The district node, filled and with a parent configured (its reports queue in the outbox, none is sent)."""
    init_node(base, NODE_ID, level="district", db_url=db_url)
    config = load_config(base)
    config.federation.parent_id = "gd.gz"
    config.federation.parent_address = "127.0.0.1:9"
    save_config(base, config)
    node = open_node(base, clock=lambda: NOW)
    summary = Importer(node, listeners=default_listeners(node)).import_records(_records())
    assert summary.rejected == 0, summary.errors[:3]
    return node


@pytest.fixture
def district(tmp_path: Path, db_url: str) -> Iterator[Node]:
    node = make_district(tmp_path / "district", db_url)
    try:
        yield node
    finally:
        node.close()


@pytest.fixture
def sqlite_district(tmp_path: Path) -> Iterator[Node]:
    """The district on SQLite only: for the hundreds of seeded checks (the store contract is tested with both)."""
    node = make_district(tmp_path / "district")
    try:
        yield node
    finally:
        node.close()


class LocalAsker:
    """The target reached in-process: its own stored reports and its real spot-check answer."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def reports(self, target: str) -> Iterator[ReportBody]:
        assert target == self.node.config.id
        with self.node.engine.connect() as conn:
            rows = list(conn.execute(select(outbox_table.c.envelope).order_by(outbox_table.c.sequence.desc())))
        for row in rows:
            envelope = SignedEnvelope()
            envelope.ParseFromString(bytes(row.envelope))
            yield parse_body(envelope, ReportBody)

    def open(self, target: str, request: SpotCheckRequest) -> SpotCheckAnswer:
        return answer_spot_check(self.node, request)[0]
