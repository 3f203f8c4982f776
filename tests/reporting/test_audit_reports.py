"""Reports over real gRPC leave audit entries at the parent: accepted ones with the stored report, refusals with
their error code and reason, whether the receiver or the caller check refused them; the chain verifies."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import func, select

from federation import REPORT_BODY_TYPE, generate_keypair, parse_body, received_reports, serialize, sign_envelope
from federation.proto.v1.common_pb2 import Counters, SignedEnvelope
from federation.proto.v1.report_pb2 import Bucket, ReportBody, ReportKind
from node.audit_log import Action, AuditFilter, AuditLog
from node.reporting import build_reports
from node.store import AuditLogEntry
from tests.harness.reports import inflated_after_signing
from tests.harness.tree import Tree


def _submit(tree: Tree, envelope: SignedEnvelope, as_node: str = "gd.a") -> object:
    stub, channel = tree.stub("gd", as_node)
    try:
        return stub.SubmitReport(envelope, timeout=5)
    finally:
        channel.close()


def _refused(tree: Tree, envelope: SignedEnvelope, as_node: str = "gd.a") -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        _submit(tree, envelope, as_node)
    return raised.value.code()  # type: ignore[attr-defined,no-any-return]


def test_accepted_and_refused_reports_are_audited(tree: Tree) -> None:
    tree.import_synthetic("gd.a", cases=30, seed=1)
    [report] = build_reports(tree["gd.a"])

    # A report whose totals were changed after signing: refused by the receiver's signature check.
    tampered = inflated_after_signing(report.envelope)
    assert _refused(tree, tampered) is grpc.StatusCode.UNAUTHENTICATED

    # A report naming another node, sent over gd.a's connection: refused before it reaches the receiver.
    stranger, _ = generate_keypair()
    foreign_body = ReportBody(
        node_id="gd.zz",
        sequence=1,
        created_at_ms=1_742_800_000_000,
        kind=ReportKind.REPORT_KIND_INCREMENTAL,
        buckets=[Bucket(day="2025-03-03", basic_code="0000000001", item_type_code="01", counters=Counters(received=1))],
    )
    foreign = sign_envelope(stranger, "gd.zz", REPORT_BODY_TYPE, serialize(foreign_body))
    assert _refused(tree, foreign) is grpc.StatusCode.PERMISSION_DENIED

    assert _submit(tree, report.envelope).stored  # type: ignore[attr-defined]
    assert not _submit(tree, report.envelope).stored  # type: ignore[attr-defined]  # re-delivery: no new entry

    audit = AuditLog(tree["gd"].engine)
    assert audit.entries()[-1].action == Action.NODE_INITIALISED  # supnet init is entry #1
    entries = list(reversed(audit.entries(AuditFilter(action="report.*"))))
    assert [(e.action, e.actor, e.result) for e in entries] == [
        (Action.REPORT_REFUSED, "gd.a", "refused"),
        (Action.REPORT_REFUSED, "gd.zz", "refused"),
        (Action.REPORT_ACCEPTED, "gd.a", "ok"),
    ]
    bad_signature, wrong_node, accepted = entries
    assert bad_signature.target == f"report:gd.a#{report.sequence}"
    assert bad_signature.detail()["code"] == "UNAUTHENTICATED"
    assert "signature" in bad_signature.detail()["reason"]
    assert wrong_node.detail()["code"] == "PERMISSION_DENIED"
    assert wrong_node.detail()["sequence"] == 1
    assert accepted.target == f"report:gd.a#{report.sequence}"
    assert accepted.detail() == {
        "sequence": report.sequence,
        "kind": "incremental",
        "buckets": len(parse_body(report.envelope, ReportBody).buckets),
        "digest": report.digest.hex(),
    }
    assert audit.verify().ok
    assert [e.seq for e in audit.entries(AuditFilter(action="report.refused"))] == [3, 2]


def test_the_accepted_entry_commits_with_the_report_or_not_at_all(tree: Tree) -> None:
    tree.import_synthetic("gd.a", cases=20, seed=2)
    [report] = build_reports(tree["gd.a"])
    AuditLogEntry.__table__.drop(tree["gd"].engine)  # the audit store breaks under the report
    assert _refused(tree, report.envelope) is grpc.StatusCode.INTERNAL
    with tree["gd"].engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(received_reports)).scalar_one() == 0  # not stored

    AuditLogEntry.__table__.create(tree["gd"].engine)
    assert _submit(tree, report.envelope).stored  # type: ignore[attr-defined]
    [entry] = AuditLog(tree["gd"].engine).entries()  # the table was recreated empty
    assert (entry.action, entry.seq) == (Action.REPORT_ACCEPTED, 1)
