"""Reports over real gRPC leave audit entries at the parent: accepted ones with the stored report, refusals with
their error code and reason, whether the receiver or the caller check refused them, named after the caller's
verified certificate and once per cooldown for a child refused again and again; the chain verifies."""

from __future__ import annotations

import logging
import time

import grpc
import pytest
from sqlalchemy import func, select

from federation import (
    REPORT_BODY_TYPE,
    AuditEntry,
    generate_keypair,
    parse_body,
    received_reports,
    serialize,
    sign_envelope,
)
from federation.proto.v1.common_pb2 import Counters, SignedEnvelope
from federation.proto.v1.report_pb2 import Bucket, ReportBody, ReportKind
from node.audit_log import Action, AuditFilter, AuditLog
from node.reporting import build_reports, node_outbox
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

    # A report naming another node, sent over gd.a's connection: refused before it reaches the receiver, and
    # audited as gd.a's (its TLS certificate), the signer it claims in the detail.
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
        (Action.REPORT_REFUSED, "gd.a", "refused"),
        (Action.REPORT_ACCEPTED, "gd.a", "ok"),
    ]
    bad_signature, wrong_node, accepted = entries
    assert bad_signature.target == f"report:gd.a#{report.sequence}"
    assert bad_signature.detail()["code"] == "UNAUTHENTICATED"
    assert "signature" in bad_signature.detail()["reason"]
    assert wrong_node.detail()["code"] == "PERMISSION_DENIED"
    assert (wrong_node.target, wrong_node.detail()["signer"]) == ("report:gd.zz#1", "gd.zz")
    assert wrong_node.detail()["sequence"] == 1
    assert "signer" not in bad_signature.detail()  # signed as the caller it came from
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


def _refusals(tree: Tree) -> list[AuditEntry]:
    return list(reversed(AuditLog(tree["gd"].engine).entries(AuditFilter(action="report.refused"))))


def _retry(tree: Tree, node_id: str) -> tuple[bool, int]:
    """The child's sender tries again now (as it does once its backoff is over): (failed, acknowledged)."""
    with tree[node_id].engine.begin() as conn:
        node_outbox(tree[node_id]).retry_now(conn, tree.clock())
    result = tree.sender(node_id).send_pending()
    return result.failed, result.acked


def test_a_child_refused_again_and_again_is_audited_once_per_cooldown(
    tree: Tree, caplog: pytest.LogCaptureFixture
) -> None:
    # The parent forgets gd.a (an operator's mistake): every retry of gd.a's report is refused as an unknown child.
    port = tree.nodes["gd"].port
    tree.stop_server("gd")
    tree["gd"].config.notifications.operator_notice_cooldown_seconds = 1.5
    registered = tree["gd"].config.federation.children
    tree["gd"].config.federation.children = [child for child in registered if child.id != "gd.a"]
    tree.start_server("gd", port=port)
    tree.import_synthetic("gd.a", cases=10, seed=1)
    with caplog.at_level(logging.WARNING, logger="node.reporting.sender"):
        assert tree.sender("gd.a").report_now().failed
        for _ in range(3):
            assert _retry(tree, "gd.a")[0]
        [first] = _refusals(tree)
        assert (first.actor, first.detail()["code"], "repeated" in first.detail()) == (
            "gd.a",
            "PERMISSION_DENIED",
            False,
        )

        time.sleep(1.6)  # the cooldown is over: the next refusal is audited, with the three it stands for
        assert _retry(tree, "gd.a")[0]
        second = _refusals(tree)[-1]
        assert second.seq != first.seq and second.detail()["repeated"]["count"] == 3
        assert second.detail()["reason"] == first.detail()["reason"]
        for _ in range(2):
            assert _retry(tree, "gd.a")[0]
        assert len(_refusals(tree)) == 2

    # The child logged the refusal once at ERROR, its repeats at WARNING (it needs an operator, once).
    sent = [record for record in caplog.records if record.name == "node.reporting.sender"]
    assert [record.levelname for record in sent] == ["ERROR"] + ["WARNING"] * 6


def test_refusals_not_yet_in_the_log_are_counted_on_the_next_accepted_report(tree: Tree) -> None:
    tree.import_synthetic("gd.a", cases=20, seed=3)
    [report] = build_reports(tree["gd.a"])
    tampered = inflated_after_signing(report.envelope)
    for _ in range(3):  # a corrupt copy, re-sent: one entry, two repeats within the cooldown
        assert _refused(tree, tampered) is grpc.StatusCode.UNAUTHENTICATED
    assert len(_refusals(tree)) == 1
    assert _submit(tree, report.envelope).stored  # type: ignore[attr-defined]
    [accepted] = AuditLog(tree["gd"].engine).entries(AuditFilter(action="report.accepted"))
    assert accepted.actor == "gd.a"
    assert accepted.detail()["refusals_not_logged"]["count"] == 2
    assert accepted.detail()["refusals_not_logged"]["codes"] == ["UNAUTHENTICATED"]
    # Forgotten once told: the same corrupt copy refused again is audited at once.
    assert _refused(tree, tampered) is grpc.StatusCode.UNAUTHENTICATED
    assert len(_refusals(tree)) == 2
    assert AuditLog(tree["gd"].engine).verify().ok
