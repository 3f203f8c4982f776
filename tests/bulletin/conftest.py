"""Tests of node.bulletin and ``supnet report``: the periodic 电子监察通报 as xlsx (sheets, figures equal to --json,
native charts), csv (UTF-8 with BOM, GB18030) and print-ready html, on a real node with synthetic data, and the
by-child sections on a real tree of gRPC nodes (SQLite and PostgreSQL).

Fixture: ``district`` — one real district node (番禺区) with synthetic March–May 2026 data, scanned, on SQLite.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest

from node.app import open_node
from node.bootstrap import init_node
from node.cli.demo_complaints import work_through_complaints
from node.ingest import Importer
from node.supervision import default_listeners, run_scan
from node.synthetic import generate

DATA_FROM = date(2026, 3, 2)
DATA_TO = date(2026, 5, 29)


def synthetic_node(base: Path, node_id: str = "gd.gz.py", name: str = "番禺区", cases: int = 500) -> Path:
    """A real node with synthetic data, its complaints worked through and a full scan run in mid-June 2026."""
    init_node(base, node_id, level="district", name=name)
    node = open_node(base)
    try:
        generated = generate(node_id, cases, 7, base / "generated", date_from=DATA_FROM, date_to=DATA_TO)
        imported = Importer(node, listeners=default_listeners(node)).import_files(generated.paths)
        assert imported.rejected == 0, imported.errors[:3]
        work_through_complaints(node, 7)
        run_scan(node, datetime(2026, 6, 15, 10), full=True)
    finally:
        node.close()
    return base


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_node(tmp_path_factory.mktemp("district") / "py")
