"""gRPC ingest stream against a real node server (mutual TLS, the node's ingest credential): per-record answers,
durability before the answer, broken streams."""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from federation.proto.v1.ingest_pb2 import IngestOutcome, IngestRecord, IngestResult
from federation.proto.v1.ingest_pb2_grpc import IngestServiceStub
from node.app import open_node
from node.bootstrap import init_node
from node.server import NodeServer
from tests.harness.ingest_records import ITEM, acceptance
from tests.harness.pki import ingest_client, provision

ACCEPTED = IngestOutcome.INGEST_OUTCOME_ACCEPTED
DUPLICATE = IngestOutcome.INGEST_OUTCOME_DUPLICATE
REJECTED = IngestOutcome.INGEST_OUTCOME_REJECTED


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    init_node(tmp_path / "gd.gz.py", "gd.gz.py", level="district")
    provision(tmp_path, ["gd.gz.py"])
    node = open_node(tmp_path / "gd.gz.py")
    server = NodeServer(node, address="127.0.0.1:0")
    server.start()
    try:
        yield server.bound_address, tmp_path / "gd.gz.py" / "node.db"
    finally:
        server.stop(1)
        node.close()


def _channel(database: Path, address: str) -> grpc.Channel:
    """The business system's channel: its ingest credential, issued by the node's own CA."""
    return ingest_client(database.parent, "gd.gz.py", address)


def _count(database: Path, table: str = "cases") -> int:
    with sqlite3.connect(database) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_each_record_gets_its_outcome_in_order(served: tuple[str, Path]) -> None:
    address, database = served
    records = [
        IngestRecord(seq=10, kind="事项", fields=ITEM),
        IngestRecord(seq=11, kind="acceptance", fields=acceptance(1)),
        IngestRecord(seq=12, kind="acceptance", fields=acceptance(2, accepted_at="2026-02-30 09:00")),
        IngestRecord(seq=13, kind="case", fields=acceptance(1)),
        IngestRecord(seq=14, kind="acceptance", fields=acceptance(3, implementation_code="NOSUCHITEM")),
        IngestRecord(seq=15, kind="acceptance", fields=acceptance(1, department="别的部门")),
        IngestRecord(seq=16, kind="bogus", fields={"a": "b"}),
    ]
    with _channel(database, address) as channel:
        results = list(IngestServiceStub(channel).Ingest(iter(records), timeout=10))
    assert [r.seq for r in results] == [10, 11, 12, 13, 14, 15, 16]
    assert [r.outcome for r in results] == [ACCEPTED, ACCEPTED, REJECTED, DUPLICATE, REJECTED, REJECTED, REJECTED]
    bad_date, unknown_item, conflict, bad_kind = results[2], results[4], results[5], results[6]
    assert bad_date.field == "accepted_at" and "PY-2026-000002" in bad_date.message
    assert unknown_item.reason == "UNKNOWN_ITEM" and "NOSUCHITEM" in unknown_item.message
    assert conflict.reason == "CONFLICT" and "department" in conflict.message
    assert "bogus" in bad_kind.message
    assert _count(database) == 1 and _count(database, "items") == 1


def test_answer_comes_after_commit_one_record_at_a_time(served: tuple[str, Path]) -> None:
    """A client that waits for each answer is served (no batching deadlock) and finds the record stored."""
    address, database = served
    outgoing: queue.Queue[IngestRecord | None] = queue.Queue()

    def requests() -> Iterator[IngestRecord]:
        while (record := outgoing.get()) is not None:
            yield record

    with _channel(database, address) as channel:
        replies = IngestServiceStub(channel).Ingest(requests(), timeout=20)
        outgoing.put(IngestRecord(seq=1, kind="item", fields=ITEM))
        assert next(replies).outcome == ACCEPTED
        for number in range(1, 6):
            outgoing.put(IngestRecord(seq=number + 1, kind="acceptance", fields=acceptance(number)))
            reply = next(replies)
            assert (reply.seq, reply.outcome) == (number + 1, ACCEPTED)
            # Durable before answered: another connection already sees it.
            assert _count(database) == number
        outgoing.put(None)
        assert list(replies) == []


def test_broken_stream_loses_nothing_that_was_answered(served: tuple[str, Path]) -> None:
    address, database = served
    total = 400
    records = [IngestRecord(seq=0, kind="item", fields=ITEM)] + [
        IngestRecord(seq=n, kind="acceptance", fields=acceptance(n)) for n in range(1, total + 1)
    ]
    release = threading.Event()

    def stalling() -> Iterator[IngestRecord]:
        yield from records
        release.wait(10)  # keep the stream open: the client breaks it, not a clean end

    answered: list[IngestResult] = []
    with _channel(database, address) as channel:
        call = IngestServiceStub(channel).Ingest(stalling(), timeout=20)
        for reply in call:
            answered.append(reply)
            if len(answered) == 150:
                call.cancel()
                break
    release.set()
    accepted = {r.seq for r in answered if r.outcome == ACCEPTED}
    assert len(accepted) == 150
    with sqlite3.connect(database) as conn:
        stored = {row[0] for row in conn.execute("SELECT case_no FROM cases")}
    assert {f"PY-2026-{n:06d}" for n in accepted if n} <= stored

    # The client re-sends everything: what was stored comes back DUPLICATE, the rest ACCEPTED, nothing twice.
    with _channel(database, address) as channel:
        again = list(IngestServiceStub(channel).Ingest(iter(records), timeout=20))
    outcomes = {r.seq: r.outcome for r in again}
    assert set(outcomes.values()) <= {ACCEPTED, DUPLICATE}
    assert all(outcomes[seq] == DUPLICATE for seq in accepted)
    assert _count(database) == total
