"""Shared set-up of the supervision tests: a real node on a real database, fed through the real importer.

No tests here: the helpers are imported by test_rules_*.py, test_metrics_*.py and test_alerts_cli.py.
Dates are in March 2025 (no public holidays): accepted Mon 03-03, a 5-working-day promise is due at the end of
Mon 03-10, a 10-working-day legal limit at the end of Mon 03-17.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from node.app import Node, open_node
from node.config import NodeConfig, StoreConfig, SupervisionConfig, save_config
from node.ingest import Importer, ImportSummary
from node.store import Alert
from node.supervision import check_buckets, default_listeners
from tests.harness.clocks import Clock

UNIT = "黄埔区市场监督管理局"
OTHER_UNIT = "黄埔区住房和城乡建设局"
ITEM_CODE = "440112001"
FEE_ITEM_CODE = "440112002"
OTHER_TYPE_ITEM_CODE = "440112010"

ITEM = {
    "implementation_code": ITEM_CODE,
    "basic_code": "000101001",
    "name": "食品经营许可",
    "type_code": "01",
    "level_code": "4",
    "body_name": UNIT,
    "body_code": "11440112MB2C12345X",
    "legal_limit": "10",
    "promised_limit": "5",
    "fee_flag": "0",
}
FEE_ITEM = {
    **ITEM,
    "implementation_code": FEE_ITEM_CODE,
    "basic_code": "000101002",
    "name": "特种设备检验",
    "fee_flag": "1",
    "fee_standard": "50.00",
}
OTHER_TYPE_ITEM = {
    **ITEM,
    "implementation_code": OTHER_TYPE_ITEM_CODE,
    "basic_code": "000110001",
    "name": "其他事项",
    "type_code": "10",
}

Record = tuple[str, int, dict[str, Any]]


def make_node(data_dir: Path, db_url: str, clock: Clock, supervision: dict[str, Any] | None = None) -> Node:
    """Write supnet.toml (optionally with a [supervision] section) and open the node with the test clock."""
    config = NodeConfig(
        id="gd.gz.hp",
        store=StoreConfig(url=db_url),
        supervision=SupervisionConfig.model_validate(supervision or {}),
    )
    save_config(data_dir, config)
    return open_node(data_dir, clock=clock)


_importers: dict[int, tuple[Node, Importer]] = {}


def importer(node: Node) -> Importer:
    """The real importer with the node's default listeners (complaint deadlines, metrics, rules), one per node."""
    known = _importers.get(id(node))
    if known is None or known[0] is not node:
        known = (node, Importer(node, listeners=default_listeners(node)))
        _importers[id(node)] = known
    return known[1]


def load(node: Node, records: list[Record], *, allow_rejects: bool = False) -> ImportSummary:
    """Import records through the real importer; by default every record must be accepted or a duplicate."""
    numbered = [(kind, line, fields) for line, (kind, _, fields) in enumerate(records, start=1)]
    summary = importer(node).import_records(numbered)
    if not allow_rejects:
        assert summary.rejected == 0, [str(e) for e in summary.errors]
    return summary


def items() -> list[Record]:
    return [("item", 0, ITEM), ("item", 0, FEE_ITEM), ("item", 0, OTHER_TYPE_ITEM)]


def acceptance(case_no: str, accepted_at: str = "20250303T100000", **extra: Any) -> Record:
    fields = {
        "case_no": case_no,
        "implementation_code": ITEM_CODE,
        "department": UNIT,
        "accepted_at": accepted_at,
        **extra,
    }
    return ("acceptance", 0, fields)


def step(case_no: str, name: str, action: str, started_at: str, **extra: Any) -> Record:
    return ("step", 0, {"case_no": case_no, "step_name": name, "action": action, "started_at": started_at, **extra})


def completion(case_no: str, completed_at: str, **extra: Any) -> Record:
    return ("completion", 0, {"case_no": case_no, "completed_at": completed_at, **extra})


def alert_keys(node: Node) -> list[tuple[str, str]]:
    """(rule id, subject) of every alert, sorted: duplicates would show up twice."""
    with node.engine.connect() as conn:
        rows = conn.execute(select(Alert.rule_id, Alert.subject).order_by(Alert.rule_id, Alert.subject)).all()
    return [(row.rule_id, row.subject) for row in rows]


def assert_metrics_consistent(node: Node) -> None:
    """Maintained buckets equal the buckets recomputed from the raw records."""
    differences = check_buckets(node)
    assert differences == [], "\n".join(differences[:20])
