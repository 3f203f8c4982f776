"""The demo's offices work through their complaints (``supnet federation setup-node``): every complaint received is
decided by a real transition, so the demo's 受理率 and 办结率 are figures, and the buckets stay what the records say."""

from __future__ import annotations

from pathlib import Path

from node.app import open_node
from node.bootstrap import init_node
from node.cli.demo_complaints import work_through_complaints
from node.cli.federation_cmd import setup_node
from node.supervision import check_buckets, complaint_figures, list_complaints


def test_setup_node_decides_every_generated_complaint(tmp_path: Path) -> None:
    data_dir = tmp_path / "gd.gz.th"
    plan = {"id": "gd.gz.th", "level": "district", "data_dir": str(data_dir), "cases": 2500, "seed": 7}
    result = setup_node(plan)
    work = result["complaints"]
    node = open_node(data_dir)
    try:
        everything = list_complaints(node, limit=100_000)
        assert everything, "the generator wrote no complaint: nothing was tested"
        by_status = {view.status for view in everything}
        assert "received" not in by_status  # the data ends months ago: every one was decided
        assert work["accepted"] + work["declined"] == len(everything)
        assert work["concluded"] == sum(1 for view in everything if view.status == "concluded") > 0
        figures = complaint_figures(node)
        assert figures.acceptance_rate is not None and figures.closure_rate is not None
        assert check_buckets(node) == []
        # Seeded: a second pass finds nothing left to decide.
        assert work_through_complaints(node, 7).accepted == 0
    finally:
        node.close()


def test_a_node_without_data_has_no_complaint_work(tmp_path: Path) -> None:
    data_dir = tmp_path / "gd"
    init_node(data_dir, "gd", level="province")
    node = open_node(data_dir)
    try:
        work = work_through_complaints(node, 1)
        assert (work.accepted, work.declined, work.concluded) == (0, 0, 0)
    finally:
        node.close()
