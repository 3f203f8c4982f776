"""``supnet simulate province`` on a small shape: the whole run, asserting correctness (not speed).

Real processes hosting whole subtrees over mutual TLS, PKI through the real enrolment flow, synthetic data at
every street, a new day ingested at every street; the figures' JSON line says the totals are equal, every node
answered and the deep verify passed, and the test recounts the leaves' cases from their files itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from node.cli import app
from node.cli.main import _register_commands
from node.localtree import FederationState, status
from node.simulate import Shape, missed_targets, province_topology, stored_cases


def test_simulate_a_small_province_end_to_end(tmp_path: Path) -> None:
    _register_commands()
    base = tmp_path / "province"
    results = tmp_path / "figures.json"
    outcome = CliRunner().invoke(
        app,
        [
            "simulate",
            "province",
            *("--cities", "2", "--districts", "1", "--streets", "2", "--cases-per-street", "12"),
            *("--dir", str(base), "--new-day-cases", "3", "--idle-seconds", "1", "--results", str(results)),
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    figures = json.loads(outcome.output.strip().splitlines()[-1])
    assert figures == json.loads(results.read_text(encoding="utf-8"))
    assert (figures["shape"], figures["nodes"], figures["streets"]) == ("1+2+2+4", 9, 4)
    assert figures["processes"] == 3  # the province alone, each city hosting its district and streets
    # The set-up's phases: the PKI is made while the data is set up, then the start; both within the set-up.
    assert 0 <= figures["pki_seconds"] <= figures["data_seconds"] and figures["start_seconds"] > 0
    assert figures["data_seconds"] + figures["start_seconds"] <= figures["setup_seconds"] + 0.2  # rounding
    # Correctness: the province's signed totals equal the leaves' cases, before and after the new day.
    state = FederationState.load(base)
    leaves = sum(stored_cases(Path(node.data_dir)) for node in state.nodes if node.level == "street")
    assert leaves == 4 * 12 + figures["new_day_records"] and figures["new_day_records"] == 4 * 3
    assert figures["leaves_cases"] == 4 * 12 and figures["province_received"] == 4 * 12
    assert figures["fresh_totals_equal"] is True
    # Every node reachable from the province, the deep verify clean, the tree taken down afterwards.
    assert (figures["reachable"], figures["unreachable"]) == (9, [])
    assert figures["verify_ok"] is True and figures["verify_nodes_checked"] >= 8
    assert figures["memory_rss_gb"] > 0 and figures["idle_cpu_percent_of_one_core"] >= 0
    assert figures["province_summary_bytes"] > 0 and figures["city_report_bytes_max"] > 0
    # The province-wide red-card search: complete over all 9 nodes; with the last city's host process killed,
    # partial within the deadline + 1 s, naming that city (its district and streets went with it).
    assert (figures["search_complete"], figures["search_nodes_answered"], figures["search_missing"]) == (True, 9, [])
    assert figures["killed_city"] == "gd.c02"
    assert (figures["search_killed_complete"], figures["search_killed_missing"]) == (False, ["gd.c02"])
    assert figures["search_killed_nodes_answered"] == 5  # the province, gd.c01, its district and two streets
    assert figures["search_killed_seconds"] < 6.0
    assert [row.health for row in status(base)] == ["STOPPED"] * 9
    assert isinstance(figures["missed"], list)


def test_shape_ids_and_missed_targets() -> None:
    shape = Shape()
    assert (shape.node_count, shape.street_count, shape.label()) == (1786, 1638, "1+21+126+1638")
    topology = province_topology(Shape(cities=2, districts=2, streets=3, cases_per_street=7), {})
    assert [len(tier) for tier in topology.tiers()] == [1, 2, 4, 12]
    assert topology.nodes[-1].id == "gd.c02.d2.s03" and topology.nodes[-1].cases == 7
    assert all(node.cases == 0 for node in topology.nodes if node.level != "street")
    assert missed_targets({"fresh_seconds": 31.0, "verify_seconds": 12.0}) == ["fresh_seconds: 31.0 > 30.0"]
