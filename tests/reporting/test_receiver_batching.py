"""Group commit in the report receiver: batch-mates stored in one transaction, each refusal only its own.

The receiver runs on a real migrated database (SQLite file and PostgreSQL schema) with the node's real apply
(apply_child_reports) and audit hook (ReceiptAuditor). Batches are made deterministic by holding one report's
apply until the other deliveries have queued behind it (``ReportReceiver.queued``).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Engine, func, select

from federation import (
    REPORT_BODY_TYPE,
    AcceptedReport,
    IntegrityError,
    ReportReceiver,
    StaleError,
    StaticKeyResolver,
    generate_keypair,
    load_child_chains,
    received_reports,
    report_digest,
    serialize,
    sign_envelope,
)
from federation.proto.v1.common_pb2 import Counters, SignedEnvelope
from federation.proto.v1.report_pb2 import Bucket, ReportAck, ReportBody, ReportKind
from node.audit_log import Action, AuditFilter, AuditLog, ReceiptAuditor
from node.reporting import apply_child_reports
from node.store import ChildBucket

NOW = datetime(2025, 3, 24, 9, 0, 0)
Key = tuple[str, int]


@dataclass
class Child:
    """A child's key and the chain of reports it signed (received counts vary per report)."""

    child_id: str
    key: Ed25519PrivateKey = field(default_factory=lambda: generate_keypair()[0])
    reports: list[SignedEnvelope] = field(default_factory=list)

    def report(
        self, sequence: int, received: int = 1, previous: bytes | None = None, days: tuple[int, ...] = (3, 4)
    ) -> SignedEnvelope:
        """A signed report #sequence; ``previous`` defaults to the digest of the chain's #sequence-1."""
        if previous is None:
            previous = report_digest(self.reports[sequence - 2]) if sequence > 1 else b""
        body = ReportBody(
            node_id=self.child_id,
            sequence=sequence,
            previous_digest=previous,
            created_at_ms=1_742_800_000_000 + sequence,
            kind=ReportKind.REPORT_KIND_INCREMENTAL,
            buckets=[
                Bucket(
                    day=f"2025-03-{day:02d}",
                    basic_code="0000000001",
                    item_type_code="01",
                    counters=Counters(received=received + day),
                )
                for day in days
            ],
        )
        return sign_envelope(self.key, self.child_id, REPORT_BODY_TYPE, serialize(body))

    def extend(self, received: int = 1) -> SignedEnvelope:
        """The next report of this child's honest chain."""
        envelope = self.report(len(self.reports) + 1, received)
        self.reports.append(envelope)
        return envelope

    def extend_full(self, days: tuple[int, ...], window: tuple[int, int], received: int = 1) -> SignedEnvelope:
        """The next report of the chain as a FULL report of March ``window`` naming only ``days``."""
        sequence = len(self.reports) + 1
        body = ReportBody.FromString(self.report(sequence, received, days=days).body)
        body.kind = ReportKind.REPORT_KIND_FULL
        body.window_start_day, body.window_end_day = (f"2025-03-{day:02d}" for day in window)
        envelope = sign_envelope(self.key, self.child_id, REPORT_BODY_TYPE, serialize(body))
        self.reports.append(envelope)
        return envelope


class HeldApply:
    """The real apply_child_reports, except that chosen reports wait at a gate or fail (a broken apply)."""

    def __init__(self) -> None:
        self.gates: dict[Key, tuple[threading.Event, threading.Event]] = {}
        self.failing: set[Key] = set()
        self.calls: list[list[Key]] = []

    def hold(self, key: Key) -> tuple[threading.Event, threading.Event]:
        """Hold ``key``'s apply: returns (entered, release)."""
        self.gates[key] = (threading.Event(), threading.Event())
        return self.gates[key]

    def __call__(self, conn: Connection, reports: Sequence[AcceptedReport]) -> None:
        keys = [(report.child_id, report.body.sequence) for report in reports]
        self.calls.append(keys)
        for key in keys:
            if key in self.gates:
                entered, release = self.gates[key]
                entered.set()
                assert release.wait(30), "test never released the held apply"
            if key in self.failing:
                raise RuntimeError(f"apply of {key} failed")
        apply_child_reports(conn, reports)


@pytest.fixture
def children() -> dict[str, Child]:
    return {child_id: Child(child_id) for child_id in ("gd.a", "gd.b", "gd.c", "gd.d", "gd.e", "gd.f", "gd.x")}


def _receiver(
    engine: Engine, children: dict[str, Child], apply: Callable[[Connection, Sequence[AcceptedReport]], None]
) -> ReportReceiver:
    return ReportReceiver(
        engine,
        children=set(children),
        key_resolver=StaticKeyResolver({child.child_id: child.key.public_key() for child in children.values()}),
        apply=apply,
        clock=lambda: NOW,
        node_id="gd",
        audit=ReceiptAuditor(engine),
    )


class Deliveries:
    """Each receive on a thread of its own, started one by one so the queue holds them in this order."""

    def __init__(self, receiver: ReportReceiver) -> None:
        self.receiver = receiver
        self.threads: list[threading.Thread] = []
        self.outcomes: dict[int, ReportAck | BaseException] = {}

    def start(self, envelope: SignedEnvelope, *, queued: int | None = None) -> int:
        """Deliver on a new thread; with ``queued``, wait until that many deliveries are queued."""
        index = len(self.threads)

        def run() -> None:
            try:
                self.outcomes[index] = self.receiver.receive(envelope)
            except Exception as error:
                self.outcomes[index] = error

        thread = threading.Thread(target=run, daemon=True)
        self.threads.append(thread)
        thread.start()
        if queued is not None:
            _wait_for(lambda: self.receiver.queued >= queued)
        return index

    def finish(self) -> list[ReportAck | BaseException]:
        for thread in self.threads:
            thread.join(30)
            assert not thread.is_alive()
        return [self.outcomes[index] for index in range(len(self.threads))]


def _wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def _stored_keys(engine: Engine) -> set[Key]:
    with engine.connect() as conn:
        rows = conn.execute(select(received_reports.c.child_id, received_reports.c.sequence)).all()
    return {(row.child_id, int(row.sequence)) for row in rows}


def _received_totals(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(ChildBucket.child_id, func.sum(ChildBucket.received)).group_by(ChildBucket.child_id)
        ).all()
    return {child_id: int(total) for child_id, total in rows}


def _expected_totals(envelopes: list[SignedEnvelope]) -> dict[str, int]:
    """A child's bucket state is that of its latest report (buckets are state, not deltas)."""
    latest: dict[str, ReportBody] = {}
    for envelope in envelopes:
        body = ReportBody.FromString(envelope.body)
        if body.node_id not in latest or latest[body.node_id].sequence < body.sequence:
            latest[body.node_id] = body
    return {child: sum(b.counters.received for b in body.buckets) for child, body in latest.items()}


def _audited(engine: Engine, action: str) -> list[str]:
    return sorted(entry.target for entry in AuditLog(engine).entries(AuditFilter(action=action), limit=None))


def test_a_refused_report_rolls_back_only_itself(migrated_engine: Engine, children: dict[str, Child]) -> None:
    apply = HeldApply()
    receiver = _receiver(migrated_engine, children, apply)
    a, b, c, d, x = (children[name] for name in ("gd.a", "gd.b", "gd.c", "gd.d", "gd.x"))
    entered, release = apply.hold(("gd.x", 1))
    deliveries = Deliveries(receiver)
    deliveries.start(x.extend())  # leads the first batch and holds it, so the rest queue as one batch
    assert entered.wait(30)
    a1, a2 = a.extend(received=10), a.extend(received=20)
    broken_a3 = a.report(3, received=99, previous=b"\x01" * 32)
    b.extend()  # never delivered: b's #2 below leaves a gap
    batch = [
        a1,
        a2,  # extends a batch-mate's chain head
        b.extend(),  # gap: b has no #1 here
        c.extend(received=5),  # its apply fails
        broken_a3,  # wrong previous digest
        a.extend(received=30),  # the right #3 after the refused one
        d.extend(received=7),
    ]
    apply.failing.add(("gd.c", 1))
    for number, envelope in enumerate(batch, start=1):
        deliveries.start(envelope, queued=number)
    time.sleep(0.05)
    assert all(thread.is_alive() for thread in deliveries.threads)  # nobody has an answer while the batch waits
    release.set()
    x1, *outcomes = deliveries.finish()

    assert isinstance(x1, ReportAck) and x1.stored
    ok_a1, ok_a2, gap, failed_apply, broken, ok_a3, ok_d1 = outcomes
    for ack, envelope in ((ok_a1, a1), (ok_a2, a2), (ok_a3, a.reports[2]), (ok_d1, batch[-1])):
        assert isinstance(ack, ReportAck) and ack.stored and ack.digest == report_digest(envelope)
    assert isinstance(gap, IntegrityError) and "gap" in gap.message
    assert isinstance(failed_apply, RuntimeError)
    assert isinstance(broken, IntegrityError) and "hash chain" in broken.message
    # The batch was applied together first (the reports that extend their chains, in order); the failed apply
    # undid that attempt, and the batch was stored again report by report.
    together = [("gd.a", 1), ("gd.a", 2), ("gd.c", 1), ("gd.a", 3), ("gd.d", 1)]
    assert apply.calls[1] == together
    assert apply.calls[2:] == [[key] for key in together]

    engine = migrated_engine
    assert _stored_keys(engine) == {("gd.x", 1), ("gd.a", 1), ("gd.a", 2), ("gd.a", 3), ("gd.d", 1)}
    with engine.connect() as conn:
        chains = load_child_chains(conn)
    assert set(chains) == {"gd.x", "gd.a", "gd.d"}
    assert (chains["gd.a"].last_sequence, chains["gd.a"].last_digest) == (3, report_digest(a.reports[2]))
    assert _received_totals(engine) == _expected_totals([x.reports[0], a1, a2, a.reports[2], batch[-1]])
    assert _audited(engine, Action.REPORT_ACCEPTED) == sorted(
        ["report:gd.x#1", "report:gd.a#1", "report:gd.a#2", "report:gd.a#3", "report:gd.d#1"]
    )
    # Refusals are audited after the batch (the failed apply is no refusal: an internal error, as before).
    assert _audited(engine, Action.REPORT_REFUSED) == ["report:gd.a#3", "report:gd.b#2"]
    assert AuditLog(engine).verify().ok


def test_duplicates_within_a_batch_are_stored_once(migrated_engine: Engine, children: dict[str, Child]) -> None:
    apply = HeldApply()
    receiver = _receiver(migrated_engine, children, apply)
    a, b, x = children["gd.a"], children["gd.b"], children["gd.x"]
    x1 = x.extend()
    assert receiver.receive(x1).stored
    entered, release = apply.hold(("gd.x", 2))
    deliveries = Deliveries(receiver)
    deliveries.start(x.extend())
    assert entered.wait(30)
    a1 = a.extend(received=10)
    rewritten_a1 = a.report(1, received=11)  # same (child, sequence), other content: a rewritten history
    b1 = b.extend(received=3)
    batch = [a1, a1, rewritten_a1, b1, x1, b1]
    for number, envelope in enumerate(batch, start=1):
        deliveries.start(envelope, queued=number)
    release.set()
    _x2, *outcomes = deliveries.finish()

    first_a1, again_a1, rewritten, first_b1, old_x1, again_b1 = outcomes
    assert isinstance(first_a1, ReportAck) and first_a1.stored
    assert isinstance(again_a1, ReportAck) and not again_a1.stored
    assert (again_a1.sequence, again_a1.digest, again_a1.last_accepted_sequence) == (1, report_digest(a1), 1)
    assert isinstance(rewritten, StaleError)
    assert isinstance(first_b1, ReportAck) and first_b1.stored
    assert isinstance(again_b1, ReportAck) and not again_b1.stored and again_b1.digest == report_digest(b1)
    # A re-delivery of a report stored by an earlier batch: acknowledged again, chain head is x's #2 now.
    assert isinstance(old_x1, ReportAck) and not old_x1.stored and old_x1.last_accepted_sequence == 2

    engine = migrated_engine
    assert _stored_keys(engine) == {("gd.x", 1), ("gd.x", 2), ("gd.a", 1), ("gd.b", 1)}
    assert _received_totals(engine) == _expected_totals([*x.reports, a1, b1])
    assert _audited(engine, Action.REPORT_ACCEPTED) == [
        "report:gd.a#1",
        "report:gd.b#1",
        "report:gd.x#1",
        "report:gd.x#2",
    ]
    assert _audited(engine, Action.REPORT_REFUSED) == ["report:gd.a#1"]  # the rewritten one only
    assert AuditLog(engine).verify().ok
    # Nothing failed: the batch's new reports were applied in one call, re-deliveries not at all.
    assert apply.calls[-1] == [("gd.a", 1), ("gd.b", 1)]


def test_a_full_report_after_a_batch_mate_zeroes_what_it_does_not_name(
    migrated_engine: Engine, children: dict[str, Child]
) -> None:
    apply = HeldApply()
    receiver = _receiver(migrated_engine, children, apply)
    a, b, x = children["gd.a"], children["gd.b"], children["gd.x"]
    entered, release = apply.hold(("gd.x", 1))
    deliveries = Deliveries(receiver)
    deliveries.start(x.extend())
    assert entered.wait(30)
    batch = [
        a.extend(received=10),  # days 3 and 4
        a.extend_full(days=(3,), window=(1, 31), received=20),  # a batch-mate named day 4: zero now
        b.extend_full(days=(3,), window=(1, 31), received=5),
        b.extend(received=40),  # days 3 and 4, after the full report of the same batch
    ]
    for number, envelope in enumerate(batch, start=1):
        deliveries.start(envelope, queued=number)
    release.set()
    outcomes = deliveries.finish()
    assert all(isinstance(ack, ReportAck) and ack.stored for ack in outcomes)
    assert apply.calls[-1] == [("gd.a", 1), ("gd.a", 2), ("gd.b", 1), ("gd.b", 2)]

    with migrated_engine.connect() as conn:
        rows = conn.execute(select(ChildBucket.child_id, ChildBucket.day, ChildBucket.received)).all()
    state = {(row.child_id, row.day.day): row.received for row in rows}
    assert state == {("gd.x", 3): 4, ("gd.x", 4): 5, ("gd.a", 3): 23, ("gd.a", 4): 0, ("gd.b", 3): 43, ("gd.b", 4): 44}


def test_batch_mates_are_acknowledged_only_after_the_commit(
    migrated_engine: Engine, children: dict[str, Child]
) -> None:
    apply = HeldApply()
    receiver = _receiver(migrated_engine, children, apply)
    a, b, x = children["gd.a"], children["gd.b"], children["gd.x"]
    first_entered, first_release = apply.hold(("gd.x", 1))
    last_entered, last_release = apply.hold(("gd.b", 1))
    deliveries = Deliveries(receiver)
    deliveries.start(x.extend())
    assert first_entered.wait(30)
    deliveries.start(a.extend(), queued=1)
    deliveries.start(b.extend(), queued=2)
    first_release.set()
    # a's #1 is stored in the batch's transaction and b's #1 is being applied: a's caller still waits, and
    # another connection does not see a's report yet.
    assert last_entered.wait(30)
    time.sleep(0.05)
    assert deliveries.threads[1].is_alive()
    assert _stored_keys(migrated_engine) == {("gd.x", 1)}
    last_release.set()
    outcomes = deliveries.finish()
    assert all(isinstance(ack, ReportAck) and ack.stored for ack in outcomes)
    assert _stored_keys(migrated_engine) == {("gd.x", 1), ("gd.a", 1), ("gd.b", 1)}


def test_many_threads_from_several_children_keep_every_chain(
    migrated_engine: Engine, children: dict[str, Child]
) -> None:
    senders = [children[name] for name in ("gd.a", "gd.b", "gd.c", "gd.d", "gd.e", "gd.f")]
    per_child = 12
    for child in senders:
        for sequence in range(1, per_child + 1):
            child.extend(received=sequence)
    receiver = _receiver(migrated_engine, children, apply_child_reports)
    acks: dict[Key, list[ReportAck]] = defaultdict(list)
    errors: list[BaseException] = []
    guard = threading.Lock()

    def send(child: Child) -> None:
        # Two senders per child, each sending the chain in order: every report arrives twice, concurrently.
        try:
            for envelope in child.reports:
                ack = receiver.receive(envelope)
                with guard:
                    acks[(ack.child_id, ack.sequence)].append(ack)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=send, args=(child,)) for child in senders for _copy in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive()

    assert errors == []
    expected = {(child.child_id, sequence) for child in senders for sequence in range(1, per_child + 1)}
    assert set(acks) == expected
    for key, answers in acks.items():
        child = children[key[0]]
        assert len(answers) == 2
        assert sorted(ack.stored for ack in answers) == [False, True], key  # stored once, acknowledged twice
        assert {ack.digest for ack in answers} == {report_digest(child.reports[key[1] - 1])}
    engine = migrated_engine
    assert _stored_keys(engine) == expected
    with engine.connect() as conn:
        chains = load_child_chains(conn)
        stored = conn.execute(select(func.count()).select_from(received_reports)).scalar_one()
    assert stored == len(senders) * per_child
    for child in senders:
        assert (chains[child.child_id].last_sequence, chains[child.child_id].last_digest) == (
            per_child,
            report_digest(child.reports[-1]),
        )
    assert _received_totals(engine) == _expected_totals([r for child in senders for r in child.reports])
    assert len(_audited(engine, Action.REPORT_ACCEPTED)) == len(expected)
    assert _audited(engine, Action.REPORT_REFUSED) == []
    assert AuditLog(engine).verify().ok
