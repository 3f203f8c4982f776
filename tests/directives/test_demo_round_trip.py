"""The demo's directive act on a tree of real ``supnet serve`` processes (what ``supnet demo`` runs after its
drill-down): a 督办 from the province to a street three hops down, acknowledged, answered and closed, each hop a
separate process whose own directive sender relays it; every signed step verified at the province."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from node.cli.demo_directive import show_directive_round_trip
from node.directives import directive_history, directives
from node.localtree import down, parse_topology, up
from tests.directives.conftest import open_data_dir


@pytest.mark.slow
def test_a_directive_round_trip_between_serving_processes(tmp_path: Path) -> None:
    topology = parse_topology(
        {
            "name": "t4",
            "generate": {"cases": 20, "seed": 3, "from": "2026-02-02", "to": "2026-03-31"},
            "nodes": [
                {"id": "gd", "level": "province", "cases": 0},
                {"id": "gd.gz", "level": "city", "cases": 0},
                {"id": "gd.gz.py", "level": "district", "cases": 0},
                {"id": "gd.gz.py.sq", "level": "street"},
            ],
        },
        "t4",
    )
    base = tmp_path / "tree"
    state = up(topology, base, workers=2, ready_timeout=90)
    try:
        output = StringIO()
        show_directive_round_trip(Console(file=output, width=200), state, "gd", "gd.gz.py.sq", "GD-1")
        text = output.getvalue()
        assert "gd → gd.gz → gd.gz.py → gd.gz.py.sq" in text
        assert "every signature verified" in text, text
    finally:
        down(base, timeout=10)
    with open_data_dir(base / "gd.gz.py") as relay:
        (held,) = directives(relay)
        assert (held.role, held.status) == ("relayed", "closed")
        history = directive_history(relay, held.id)
    assert history.verified
    assert [entry.kind for entry in history.entries] == ["issued", "delivered", "acknowledged", "responded", "closed"]
