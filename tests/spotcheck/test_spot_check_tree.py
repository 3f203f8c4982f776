"""Spot checks over a real tree (mutual TLS, hop-by-hop drill-down, synthetic data): the province checks a district
two hops down, a replayed request is refused, both ends audit it, and a finding becomes a directive."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import grpc
import pytest

from federation import StaleError, supnet_error_from_rpc
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from node.audit_log import AuditFilter, AuditLog, operator_actor
from node.drilldown import DrilldownAsker
from node.spotcheck import AUDIT_ACTION, Finding, record_result, recorded_check, run_spot_check
from tests.harness.tree import Tree, running_tree

CASES = {"gd": 0, "gd.gz": 10, "gd.gz.py": 150}
TARGET = "gd.gz.py"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    yield from running_tree(tmp_path_factory.mktemp("spotcheck"), CASES)


def _send(tree: Tree, as_node: str, to_node: str, envelope: SignedEnvelope) -> SignedEnvelope:
    with tree.channel(as_node, to_node) as channel:
        try:
            reply: SignedEnvelope = NodeServiceStub(channel).Query(envelope, timeout=10)
        except grpc.RpcError as error:
            raise supnet_error_from_rpc(error, to_node) from error
    return reply


def test_province_checks_a_district_two_hops_down_clean_and_audited_at_both_ends(tree: Tree) -> None:
    province = tree["gd"]
    for seed in range(20):
        with tree.client("gd") as client:
            asker = DrilldownAsker(client)
            result = run_spot_check(asker, TARGET, province.calendar, random.Random(seed), samples=30)
        assert result is not None and result.plan.target == TARGET
        assert result.findings == [], result.findings[:3]
        assert result.opened == min(30, result.leaf_count) > 0
        assert asker.answers and asker.answers[-1].target_id == TARGET
    seq = record_result(province, result, operator_actor("gd"))
    assert recorded_check(province, seq)["findings"] == []
    here = AuditLog(province.engine).entries(AuditFilter(action=AUDIT_ACTION), limit=None)
    assert [entry.target for entry in here if entry.seq == seq] == [TARGET]
    served = [
        entry
        for entry in AuditLog(tree[TARGET].engine).entries(AuditFilter(action="drilldown.served"), limit=None)
        if '"spot_check"' in entry.detail_json
    ]
    assert len(served) >= 20 and all(json.loads(entry.detail_json)["requester"] == "gd" for entry in served)


def test_a_replayed_spot_check_request_is_refused(tree: Tree) -> None:
    with tree.client("gd") as client:
        report = next(DrilldownAsker(client).reports(TARGET))
    commitment = report.commitments[0]
    from federation.proto.v1.spotcheck_pb2 import SpotCheckRequest

    request = SpotCheckRequest(
        report_sequence=report.sequence,
        day=commitment.day,
        basic_code=commitment.basic_code,
        item_type_code=commitment.item_type_code,
        root=commitment.root,
        leaf_indices=[0],
    )
    query = tree.query("gd", TARGET, spot_check=request)
    assert _send(tree, "gd", "gd", query).signer_id == TARGET
    with pytest.raises(StaleError, match="replay"):
        _send(tree, "gd", "gd", query)


def test_a_finding_alerts_and_its_audit_entry_names_record_field_and_values(tree: Tree) -> None:
    province = tree["gd"]
    with tree.client("gd") as client:
        result = run_spot_check(DrilldownAsker(client), TARGET, province.calendar, random.Random(5), samples=5)
    assert result is not None
    result.findings.append(Finding("record", "completed_on_time", "True", "False", "X-1", 0))
    seq = record_result(province, result, operator_actor("gd"))
    detail = recorded_check(province, seq)
    assert detail["findings"] == [
        {
            "kind": "record",
            "case_no": "X-1",
            "leaf_index": 0,
            "field": "completed_on_time",
            "reported": "True",
            "rejudged": "False",
        }
    ]
    with province.engine.connect() as conn:
        from sqlalchemy import text

        notices = conn.execute(text("SELECT about FROM operator_notices WHERE kind = 'spot_check_finding'")).all()
    assert [row.about.split(":")[0] for row in notices] == [TARGET]


def test_spotcheck_command_clean_then_a_finding_turned_into_a_rectification(tree: Tree) -> None:
    from typer.testing import CliRunner

    from node.cli import app
    from node.cli.main import _register_commands
    from node.directives import directives
    from node.errors import ExitCode

    _register_commands()
    runner = CliRunner()
    base = ["--data-dir", str(tree["gd"].data_dir), "--address", tree.nodes["gd"].address, "--json"]
    clean = runner.invoke(app, ["spotcheck", TARGET, "--samples", "20", *base])
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.output)["clean"] is True
    with tree.nodes[TARGET].db() as conn:
        day, department, code = conn.execute(
            "SELECT day, department, implementation_code FROM metric_buckets WHERE received > 0 ORDER BY day LIMIT 1"
        ).fetchone()
    bump = (
        "UPDATE metric_buckets SET received = received + ?, revision = revision + 1000 "
        "WHERE day = ? AND department = ? AND implementation_code = ?"
    )
    with tree.nodes[TARGET].db() as conn:  # the district reports more received cases than it committed to
        conn.execute(bump, (5, day, department, code))
    try:
        tree.report_up()
        found = runner.invoke(app, ["spotcheck", TARGET, "--day", day, *base])
    finally:
        with tree.nodes[TARGET].db() as conn:
            conn.execute(bump, (-5, day, department, code))
        tree.report_up()
    assert found.exit_code == ExitCode.VERIFICATION_FAILED, found.output
    result = json.loads(found.output)
    assert [(f["kind"], f["field"]) for f in result["findings"]] == [("count", "received")]
    issued = runner.invoke(
        app, ["spotcheck-directive", str(result["audit_seq"]), "--kind", "rectify", *base[:2], "--json"]
    )
    assert issued.exit_code == 0, issued.output
    directive_id = json.loads(issued.output)["directive_id"]
    [view] = [view for view in directives(tree["gd"]) if view.id == directive_id]
    assert view.target_id == TARGET and view.kind == "rectify" and "抽查" in view.text


def test_the_scheduled_job_checks_a_child_and_audits_it_as_the_system(tree: Tree) -> None:
    import os

    from node.run_state import serve_state_path, write_state_file
    from node.server import NodeScheduler

    province = tree["gd"]
    settings = province.config.spotcheck
    before = (settings.interval_seconds, settings.days)
    state = serve_state_path(province.data_dir)
    write_state_file(state, {"pid": os.getpid(), "address": tree.nodes["gd"].address})
    settings.interval_seconds, settings.days = 3600.0, 366
    try:
        scheduler = NodeScheduler(province)
        assert "spot_check" in [spec.job_id for spec in scheduler.job_specs()]
        scheduler._spot_check()
    finally:
        settings.interval_seconds, settings.days = before
        state.unlink()
    [entry] = [
        entry
        for entry in AuditLog(province.engine).entries(AuditFilter(action=AUDIT_ACTION), limit=None)
        if entry.actor == "system@gd"
    ]
    detail = json.loads(entry.detail_json)
    assert entry.target == "gd.gz" and detail["clean"] is True and detail["opened"] > 0
