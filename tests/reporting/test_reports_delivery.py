"""Report delivery between real nodes: re-delivery, order, parent outages, overflow, tampering, broken chains."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from federation import (
    REPORT_BODY_TYPE,
    child_chains,
    generate_keypair,
    outbox_table,
    received_reports,
    report_digest,
    serialize,
    sign_envelope,
)
from federation.proto.v1.common_pb2 import Counters, SignedEnvelope
from federation.proto.v1.report_pb2 import Bucket, ReportBody, ReportKind
from node.app import open_node
from node.reporting import ReportSender, build_reports, node_outbox, outbox_overflow_count
from node.server import NodeScheduler
from node.store import ChildBucket
from node.trust import signing_identity
from tests.harness.reports import inflated_after_signing, nonzero, own_totals, subtree_of
from tests.harness.tree import Tree


def _count(tree: Tree, node_id: str, table: object) -> int:
    with tree[node_id].engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def _pending(tree: Tree, node_id: str) -> int:
    with tree[node_id].engine.connect() as conn:
        return node_outbox(tree[node_id]).pending_count(conn)


def _attempts(tree: Tree, node_id: str) -> int:
    with tree[node_id].engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(outbox_table.c.attempts), 0))).scalar_one())


def _submit(tree: Tree, parent_id: str, envelope: SignedEnvelope, as_node: str | None = None) -> object:
    """SubmitReport over mutual TLS as ``as_node`` (default: the envelope's signer, as a real child sends)."""
    caller = as_node or (envelope.signer_id if envelope.signer_id in tree.nodes else None)
    stub, channel = tree.stub(parent_id, caller)
    try:
        return stub.SubmitReport(envelope, timeout=5)
    finally:
        channel.close()


def _refusal(tree: Tree, parent_id: str, envelope: SignedEnvelope, as_node: str | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        _submit(tree, parent_id, envelope, as_node)
    return raised.value


def _report(node_id: str, sequence: int, previous: bytes, received: int = 1) -> ReportBody:
    return ReportBody(
        node_id=node_id,
        sequence=sequence,
        previous_digest=previous,
        created_at_ms=1_742_778_000_000,  # the tree clock's start: within the skew tolerance
        kind=ReportKind.REPORT_KIND_INCREMENTAL,
        buckets=[
            Bucket(day="2025-03-03", basic_code="0000000001", item_type_code="01", counters=Counters(received=received))
        ],
    )


def _wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_redelivery_is_acknowledged_again_and_applied_once(tree: Tree) -> None:
    tree.import_synthetic("gd.a", cases=60, seed=1)
    [report] = build_reports(tree["gd.a"])
    first = _submit(tree, "gd", report.envelope)
    again = _submit(tree, "gd", report.envelope)
    assert first.stored and not again.stored  # type: ignore[attr-defined]
    assert (again.sequence, again.digest) == (first.sequence, first.digest) == (1, report.digest)  # type: ignore[attr-defined]
    assert _count(tree, "gd", received_reports) == 1
    # The sender's own delivery of the same report is a third copy: acknowledged, still applied once.
    result = tree.sender("gd.a").send_pending()
    assert result.acked == 1 and _pending(tree, "gd.a") == 0
    assert nonzero(subtree_of(tree["gd"])) == nonzero(own_totals(tree["gd.a"]))


def test_out_of_order_report_is_refused_until_the_gap_is_filled(tree: Tree) -> None:
    tree.import_synthetic("gd.a", cases=40, seed=1, date_to=date(2025, 3, 7))
    build_reports(tree["gd.a"])
    tree.import_synthetic("gd.a", cases=40, seed=2, date_from=date(2025, 3, 10), date_to=date(2025, 3, 14))
    build_reports(tree["gd.a"])
    tree.import_synthetic("gd.a", cases=40, seed=3, date_from=date(2025, 3, 17), date_to=date(2025, 3, 21))
    [third] = build_reports(tree["gd.a"])
    refusal = _refusal(tree, "gd", third.envelope)
    assert refusal.code() is grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert "gap" in refusal.details() and "expected #1" in refusal.details()  # type: ignore[attr-defined]
    assert _count(tree, "gd", received_reports) == 0
    result = tree.sender("gd.a").send_pending()  # oldest first
    assert (result.acked, result.failed) == (3, False)
    assert nonzero(subtree_of(tree["gd"])) == nonzero(own_totals(tree["gd.a"]))


def test_parent_down_then_back_outbox_survives_restart_and_drains(tree: Tree) -> None:
    parent_port = tree.nodes["gd"].port
    tree.stop_server("gd")
    tree.import_synthetic("gd.a", cases=50, seed=1, date_to=date(2025, 3, 7))
    first = tree.sender("gd.a").report_now()
    assert first.failed and first.pending == 1
    tree.import_synthetic("gd.a", cases=50, seed=2, date_from=date(2025, 3, 10))
    build_reports(tree["gd.a"])
    with tree["gd.a"].engine.connect() as conn:
        rows = conn.execute(select(outbox_table.c.sequence, outbox_table.c.attempts, outbox_table.c.last_error)).all()
    assert [(row.sequence, row.attempts) for row in rows] == [(1, 1), (2, 0)]
    assert "UNAVAILABLE" in rows[0].last_error

    # The child restarts: its pending reports are still there.
    entry = tree.nodes["gd.a"]
    assert entry.sender is not None
    entry.sender.stop()
    entry.node.close()
    entry.node = open_node(entry.data_dir, clock=tree.clock)
    entry.sender = ReportSender(entry.node)
    assert _pending(tree, "gd.a") == 2

    tree.start_server("gd", port=parent_port)
    entry.sender.start()  # the background loop retries by itself once the backoff expires
    try:
        _wait_for(lambda: _pending(tree, "gd.a") == 0)
    finally:
        entry.sender.stop()
    assert _count(tree, "gd", received_reports) == 2
    assert nonzero(subtree_of(tree["gd"])) == nonzero(own_totals(tree["gd.a"]))  # nothing lost, nothing twice


def test_a_failed_delivery_is_retried_by_the_one_delivery_timer(tree: Tree) -> None:
    # No outbox job in the scheduler: the sender's loop is the one timer that delivers and retries.
    jobs = [spec.job_id for spec in NodeScheduler(tree["gd.a"], sender=tree.sender("gd.a")).job_specs()]
    assert jobs[:2] == ["scheduled_report", "full_report"] and not [job for job in jobs if "outbox" in job]
    parent_port = tree.nodes["gd"].port
    tree.stop_server("gd")
    tree.import_synthetic("gd.a", cases=40, seed=1)
    sender = tree.sender("gd.a")
    sender.start()
    try:
        sender.scheduled_report()  # the job only builds; the loop delivers it, and fails: the parent is down
        _wait_for(lambda: _attempts(tree, "gd.a") >= 1)
        tree.start_server("gd", port=parent_port)
        _wait_for(lambda: _pending(tree, "gd.a") == 0)  # retried by the loop alone, at the outbox's backoff
    finally:
        sender.stop()
    assert _count(tree, "gd", received_reports) == 1
    assert nonzero(subtree_of(tree["gd"])) == nonzero(own_totals(tree["gd.a"]))


def test_full_outbox_pushes_back_counts_and_loses_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    small = Tree(tmp_path, ["gd", "gd.a"], federation={"outbox_max_reports": 2})
    try:
        port = small.nodes["gd"].port
        small.stop_server("gd")
        small.import_synthetic("gd.a", cases=30, seed=1, date_to=date(2025, 3, 7))
        assert small.sender("gd.a").report_now().failed
        small.import_synthetic("gd.a", cases=30, seed=2, date_from=date(2025, 3, 10), date_to=date(2025, 3, 14))
        assert small.sender("gd.a").report_now().pending == 2
        before = REGISTRY.get_sample_value("supnet_report_outbox_overflows_total") or 0.0
        small.import_synthetic("gd.a", cases=30, seed=3, date_from=date(2025, 3, 17))
        with caplog.at_level(logging.ERROR):
            result = small.sender("gd.a").report_now()
        assert result.pending == 2  # refused, not queued, nothing evicted
        assert outbox_overflow_count(small["gd.a"]) == 1
        assert REGISTRY.get_sample_value("supnet_report_outbox_overflows_total") == before + 1
        assert any("outbox" in record.getMessage() and "full" in record.getMessage() for record in caplog.records)

        small.start_server("gd", port=port)
        with small["gd.a"].engine.begin() as conn:
            node_outbox(small["gd.a"]).retry_now(conn, small.clock())
        assert small.sender("gd.a").send_pending().acked == 2
        small.report_up()  # the refused data goes out with the next report
        assert nonzero(subtree_of(small["gd"])) == nonzero(own_totals(small["gd.a"]))
    finally:
        small.close()


def test_tampered_or_foreign_reports_are_rejected_with_precise_statuses(tree: Tree) -> None:
    tree.import_synthetic("gd.a", cases=30, seed=1)
    [report] = build_reports(tree["gd.a"])
    tampered = inflated_after_signing(report.envelope)
    refusal = _refusal(tree, "gd", tampered)
    assert refusal.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert "bad signature on report from gd.a" in refusal.details()  # type: ignore[attr-defined]

    stranger_key, _ = generate_keypair()
    forged = sign_envelope(stranger_key, "gd.a", REPORT_BODY_TYPE, report.envelope.body)
    refusal = _refusal(tree, "gd", forged)
    assert refusal.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert "no certificate chain" in refusal.details()  # type: ignore[attr-defined]
    # A stranger's key under gd.a's real certificate chain: the chain binds another key.
    forged.certificate_chain.extend(report.envelope.certificate_chain)
    refusal = _refusal(tree, "gd", forged)
    assert refusal.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert "its certificate binds key" in refusal.details()  # type: ignore[attr-defined]

    # gd.a's connection carrying a report signed as gd.zz (or as its sibling): a child speaks only for itself.
    unknown = sign_envelope(stranger_key, "gd.zz", REPORT_BODY_TYPE, serialize(_report("gd.zz", 1, b"")))
    refusal = _refusal(tree, "gd", unknown, as_node="gd.a")
    assert refusal.code() is grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "signed as gd.zz arrived over the connection of gd.a" in refusal.details()  # type: ignore[attr-defined]

    # gd.b signs a report claiming to come from gd.a: a registered child may only speak for itself.
    impostor_body = serialize(_report("gd.a", 1, b""))
    impostor = signing_identity(tree["gd.b"]).sign(REPORT_BODY_TYPE, impostor_body)
    refusal = _refusal(tree, "gd", impostor)
    assert refusal.code() is grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "claims to come from gd.a" in refusal.details()  # type: ignore[attr-defined]
    assert _count(tree, "gd", received_reports) == 0 and _count(tree, "gd", ChildBucket.__table__) == 0

    assert _submit(tree, "gd", report.envelope).stored  # type: ignore[attr-defined]


def test_broken_chain_and_stale_sequence_are_refused(tree: Tree) -> None:
    identity = signing_identity(tree["gd.b"])

    def sign(body: ReportBody) -> SignedEnvelope:
        return identity.sign(REPORT_BODY_TYPE, serialize(body))

    first = sign(_report("gd.b", 1, b"", received=5))
    assert _submit(tree, "gd", first).stored  # type: ignore[attr-defined]

    broken = sign(_report("gd.b", 2, b"\x01" * 32, received=6))
    refusal = _refusal(tree, "gd", broken)
    assert refusal.code() is grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert "breaks the hash chain" in refusal.details()  # type: ignore[attr-defined]

    rewritten = sign(_report("gd.b", 1, b"", received=500))
    refusal = _refusal(tree, "gd", rewritten)
    assert refusal.code() is grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]
    assert "already received" in refusal.details()  # type: ignore[attr-defined]

    good = sign(_report("gd.b", 2, report_digest(first), received=6))
    assert _submit(tree, "gd", good).stored  # type: ignore[attr-defined]
    with tree["gd"].engine.connect() as conn:
        assert conn.execute(select(child_chains.c.last_sequence)).scalar_one() == 2
        assert conn.execute(select(ChildBucket.__table__.c.received)).scalar_one() == 6


def test_no_acknowledgement_without_a_durable_store(tree: Tree) -> None:
    tree.import_synthetic("gd.a", cases=30, seed=1)
    build_reports(tree["gd.a"])
    child_buckets = ChildBucket.__table__
    child_buckets.drop(tree["gd"].engine)  # the parent's store breaks under the report
    result = tree.sender("gd.a").send_pending()
    assert result.failed and "internal error" in result.error
    assert _pending(tree, "gd.a") == 1
    assert _count(tree, "gd", received_reports) == 0 and _count(tree, "gd", child_chains) == 0

    child_buckets.create(tree["gd"].engine)
    with tree["gd.a"].engine.begin() as conn:
        node_outbox(tree["gd.a"]).retry_now(conn, tree.clock())
    assert tree.sender("gd.a").send_pending().acked == 1
    assert nonzero(subtree_of(tree["gd"])) == nonzero(own_totals(tree["gd.a"]))


def test_report_on_change_is_debounced_and_flows_to_the_root(tmp_path: Path) -> None:
    chain = Tree(
        tmp_path, ["gd", "gd.gz", "gd.gz.py"], federation={"report_on_change": True, "report_debounce_seconds": 0.3}
    )
    try:
        for node_id in ["gd.gz", "gd.gz.py"]:
            chain.sender(node_id).start()
        chain.import_synthetic("gd.gz.py", cases=40, seed=1)
        for _ in range(3):  # a burst of changes makes one report
            chain.sender("gd.gz.py").notify_change()
        expected = nonzero(own_totals(chain["gd.gz.py"]))
        _wait_for(lambda: nonzero(subtree_of(chain["gd"])) == expected)
        with chain["gd.gz.py"].engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(outbox_table)).scalar_one() == 1
    finally:
        chain.close()


def test_concurrent_copies_of_one_report_store_it_once(tree: Tree) -> None:
    from concurrent.futures import ThreadPoolExecutor

    tree.import_synthetic("gd.a", cases=30, seed=1)
    [report] = build_reports(tree["gd.a"])
    with ThreadPoolExecutor(max_workers=6) as pool:
        acks = list(pool.map(lambda _: _submit(tree, "gd", report.envelope), range(6)))
    assert sorted(ack.stored for ack in acks) == [False] * 5 + [True]  # type: ignore[attr-defined]
    assert {(ack.sequence, ack.digest) for ack in acks} == {(1, report.digest)}  # type: ignore[attr-defined]
    assert _count(tree, "gd", received_reports) == 1
    assert nonzero(subtree_of(tree["gd"])) == nonzero(own_totals(tree["gd.a"]))


def test_unusable_own_credentials_are_one_error_then_backed_off_retries(
    tree: Tree, caplog: pytest.LogCaptureFixture
) -> None:
    # gd.a's TLS certificate file is corrupt: no report can go out until an operator fixes it. The sender says
    # so once at ERROR and retries at its backoff (WARNING), instead of spinning on the report that is due.
    tree.import_synthetic("gd.a", cases=20, seed=1)
    build_reports(tree["gd.a"])
    tls_pem = tree.nodes["gd.a"].data_dir / "pki" / "tls.pem"
    good = tls_pem.read_bytes()
    tls_pem.write_bytes(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    sender = tree.sender("gd.a")
    with caplog.at_level(logging.DEBUG, logger="node.reporting.sender"):
        sender.start()
        try:
            time.sleep(3.0)
            tries = [record for record in caplog.records if "cannot open a channel" in record.getMessage()]
            assert [record.levelname for record in tries[:1]] == ["ERROR"]
            assert {record.levelname for record in tries[1:]} == {"WARNING"}
            # Backoff 0.2 s doubling up to 1 s (QUICK_REPORTS), jittered: a handful of tries in 3 s, not a spin.
            assert 2 <= len(tries) <= 12, len(tries)
            assert _pending(tree, "gd.a") == 1 and _attempts(tree, "gd.a") == 0  # nothing was sent
            tls_pem.write_bytes(good)  # fixed: new credential files end the wait
            _wait_for(lambda: _pending(tree, "gd.a") == 0, seconds=10)
        finally:
            sender.stop()
    assert any("usable again" in record.getMessage() for record in caplog.records)
    assert _count(tree, "gd", received_reports) == 1
