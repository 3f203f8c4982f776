"""Fault: nodes whose clocks are up to ±10 minutes apart (tests.harness.tree per-node clock offsets).

Reports (dated by the child's clock, checked against the parent's) and drill-down queries (issued by the asking
node's clock, checked at every hop) still work within the tolerance and the figures converge; a clock beyond the
tolerance is refused with a message naming the skew, told to the operators on both sides, and the report goes
through once the clock is right again.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import grpc
import pytest

from federation import ClockSkewError, SupnetError, parse_body, serialize, supnet_error_from_rpc
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from node.notify import NoticeKind
from node.store import OperatorNotice
from node.trust import QUERY_BODY_TYPE
from tests.faults.invariants import check_tree_invariants
from tests.harness.tree import Tree, node_identity

IDS = ["gd", "gd.a", "gd.a.x", "gd.b"]
TEN_MINUTES = 600.0
# gd.a.x runs 10 min ahead of its parent gd.a (5 min behind the province); gd.b 10 min ahead of the province.
OFFSETS = {"gd": 0.0, "gd.a": -TEN_MINUTES / 2, "gd.a.x": TEN_MINUTES / 2, "gd.b": TEN_MINUTES}
BEYOND = 20 * 60.0


def _skewed_summary(tree: Tree, target: str, skew_seconds: float) -> dd.QueryAnswer:
    """The province's operator asks ``target`` for a summary with its query dated ``skew_seconds`` off."""
    body = parse_body(tree.query("gd", target, summary=dd.SummaryRequest()), dd.QueryBody)
    body.issued_at_ms = int((time.time() + skew_seconds) * 1000)
    envelope = node_identity(tree, "gd").sign(QUERY_BODY_TYPE, serialize(body))
    with tree.channel("gd", "gd") as channel:
        try:
            reply: SignedEnvelope = NodeServiceStub(channel).Query(envelope, timeout=10)
        except grpc.RpcError as error:
            raise supnet_error_from_rpc(error, "gd") from error
    return parse_body(reply, dd.QueryAnswer)


def _notices(tree: Tree, node_id: str, kind: NoticeKind) -> list[str]:
    with tree[node_id].engine.connect() as conn:
        return [row.about for row in conn.execute(OperatorNotice.__table__.select().where(OperatorNotice.kind == kind))]


def _one_skew(base: Path, run: int) -> None:
    tree = Tree(base, IDS, clock_offsets=OFFSETS, serve_leaves=True)
    try:
        operations, faults = 0, len(OFFSETS) - 1
        for number, leaf in enumerate(["gd.a.x", "gd.b"]):
            operations += tree.import_synthetic(leaf, 10, seed=20 * run + number)
        tree.report_up()
        operations += 3
        # Within the tolerance: reports flowed (above), and queries dated ±10 min reach the leaf through two hops.
        for skew in (TEN_MINUTES, -TEN_MINUTES):
            answer = _skewed_summary(tree, "gd.a.x", skew)
            assert answer.summary.total.received == tree.case_count(["gd.a.x"])
            operations += 1
        summary = check_tree_invariants(tree, operations=operations, faults=faults)
        print(summary.line(f"clock skew ±10 min, run {run}"))
        assert summary.ok, summary.line()

        # Beyond the tolerance: a query dated 20 min ahead is refused, the message naming the skew.
        with pytest.raises(SupnetError, match=r"issued 1200 s from now by gd.s clock; queries more than 900 s ahead"):
            _skewed_summary(tree, "gd.a.x", BEYOND)
        # A district whose clock runs 20 min ahead: its report is refused, naming the skew, on both sides.
        tree.clock_offsets["gd.b"] = BEYOND
        faults += 1
        operations += tree.import_synthetic("gd.b", 4, seed=20 * run + 7, date_from=date(2025, 3, 20))
        refused = tree.sender("gd.b").report_now()
        assert refused.failed and "clock skew of +20.0 min exceeds the tolerance of ±15 min" in refused.error
        assert ClockSkewError.code == "CLOCK_SKEW"
        assert _notices(tree, "gd.b", NoticeKind.REPORT_REFUSED) == ["gd"]
        assert _notices(tree, "gd", NoticeKind.CHILD_REPORT_REFUSED) == ["gd.b"]
        # The clock is set right. The retry the bad clock scheduled comes due once the corrected clock reaches it
        # (at most the skew later); by then the report dated by the bad clock is no longer ahead: it goes through.
        tree.clock_offsets["gd.b"] = 0.0
        tree.clock.advance(BEYOND + 60)
        tree.report_up()
        summary = check_tree_invariants(tree, operations=operations, faults=faults)
        print(summary.line(f"clock skew beyond the tolerance, corrected, run {run}"))
        assert summary.ok, summary.line()
    finally:
        tree.close()


def test_clock_skew_within_tolerance_works_and_beyond_is_refused_naming_it(tmp_path: Path, runs: int) -> None:
    for run in range(max(runs, 1)):  # --runs N by hand; once in CI
        _one_skew(tmp_path / f"run{run}", run)
