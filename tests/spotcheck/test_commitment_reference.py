"""The commitments a report carries equal a straightforward reference computation over the same real store.

``bucket_commitments`` reads every bucket of a report in one set-based pass and builds no Leaf objects. The
reference here reads each bucket on its own (the cases of its basic code and item type, then each case's
completion, return steps and item version one query at a time), builds each leaf from the rules in
node.spotcheck.records' docstring and folds the padded tree recursively with hashlib: every root and leaf count
must be byte-identical, on SQLite and on PostgreSQL. The opening path (``bucket_leaves`` + ``leaf_tree``) must
give the same roots too, or a signed root could not be opened.
"""

from __future__ import annotations

import hashlib
import struct
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from federation import serialize
from federation.proto.v1.report_pb2 import ReportBody
from federation.proto.v1.spotcheck_pb2 import BucketCommitment, CommittedRecord
from node.app import Node
from node.reporting import build_reports
from node.spotcheck import bucket_commitments, bucket_leaves, leaf_tree, salt_key
from node.store import Case, Completion, ItemVersion, MetricBucket, Step
from node.supervision import REFUSED_RESULT_CODES
from node.trust import signing_identity

Sums = tuple[int, ...]
EMPTY = (bytes(32), (0,) * 8)


def _text(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S") if value is not None else ""


def _version(conn: Connection, code: str, accepted_at: datetime) -> Any:
    versions = conn.execute(
        select(ItemVersion.__table__).where(ItemVersion.implementation_code == code).order_by(ItemVersion.version)
    ).all()
    in_force = [v for v in versions if v.effective_from is None or v.effective_from <= accepted_at]
    return in_force[-1] if in_force else (versions[0] if versions else None)


def _leaf(conn: Connection, key: bytes, day: date, case: Any, role: str) -> tuple[tuple[int, str], bytes, Sums]:
    completion = conn.execute(select(Completion.__table__).where(Completion.case_no == case.case_no)).first()
    returns = conn.execute(
        select(func.count()).where(Step.case_no == case.case_no, Step.action == "return")
    ).scalar_one()
    version = _version(conn, case.implementation_code, case.accepted_at)
    completed_at = completion.completed_at if completion is not None else None
    result = (completion.result_code or "") if completion is not None else ""
    record = CommittedRecord(
        role=role,
        case_no=case.case_no,
        implementation_code=case.implementation_code,
        basic_code=case.basic_code,
        item_type_code=case.item_type_code,
        item_version=version.version if version is not None else 0,
        promised_limit=case.promised_limit,
        promised_limit_unit=version.promised_limit_unit if version is not None else "1",
        legal_limit=case.legal_limit,
        legal_limit_unit=version.legal_limit_unit if version is not None else "1",
        accepted_at=_text(case.accepted_at),
        completed_at=_text(completed_at),
        clock_stop_workdays=case.clock_stop_workdays or 0,
        promised_due_at=_text(case.promised_due_at),
        legal_due_at=_text(case.legal_due_at),
        result_code=result,
        return_steps=returns,
    )
    if role == "received":
        record.counted_received = True
        record.counted_returned = returns > 0
    else:
        assert completed_at is not None
        record.counted_completed = True
        record.counted_early = completed_at.date() < case.promised_due_at.date()
        record.counted_on_time = completed_at <= case.promised_due_at
        record.counted_within_legal = completed_at <= case.legal_due_at
        record.counted_refused = result in REFUSED_RESULT_CODES
    flags = ("received", "completed", "early", "on_time", "within_legal", "refused", "returned")
    sums = (1, *(int(getattr(record, f"counted_{flag}")) for flag in flags))
    message = f"{day.isoformat()}\x00{role}\x00{case.case_no}".encode()
    salt = hashlib.blake2b(message, key=key, digest_size=16).digest()
    digest = hashlib.sha256(b"\x00supnet-spotcheck-leaf" + bytes([len(salt)]) + salt + serialize(record)).digest()
    return (0 if role == "received" else 1, case.case_no), digest, sums


def _fold(nodes: list[tuple[bytes, Sums]]) -> tuple[bytes, Sums]:
    if len(nodes) == 1:
        return nodes[0]
    half = len(nodes) // 2
    (left, left_sums), (right, right_sums) = _fold(nodes[:half]), _fold(nodes[half:])
    if left_sums[0] == 0:
        return EMPTY
    packed = struct.pack(">8q", *left_sums) + struct.pack(">8q", *right_sums)
    digest = hashlib.sha256(b"\x01supnet-spotcheck-node" + left + right + packed).digest()
    return digest, tuple(a + b for a, b in zip(left_sums, right_sums, strict=True))


def _reference(conn: Connection, key: bytes, bucket: tuple[date, str, str]) -> BucketCommitment | None:
    day, basic_code, item_type_code = bucket
    leaves = []
    cases = select(Case.__table__).where(Case.basic_code == basic_code, Case.item_type_code == item_type_code)
    for case in conn.execute(cases):
        if case.accepted_at.date() == day:
            leaves.append(_leaf(conn, key, day, case, "received"))
        completed = conn.execute(select(Completion.completed_at).where(Completion.case_no == case.case_no)).scalar()
        if completed is not None and completed.date() == day:
            leaves.append(_leaf(conn, key, day, case, "completed"))
    if not leaves:
        return None
    leaves.sort(key=lambda leaf: leaf[0])
    width = 1 << max(len(leaves) - 1, 0).bit_length()
    root, _sums = _fold([(digest, sums) for _order, digest, sums in leaves] + [EMPTY] * (width - len(leaves)))
    return BucketCommitment(
        day=day.isoformat(), basic_code=basic_code, item_type_code=item_type_code, leaf_count=len(leaves), root=root
    )


def test_commitments_equal_the_reference_computation(district: Node) -> None:
    identity = signing_identity(district)
    key = salt_key(identity)
    with district.engine.connect() as conn:
        keys = sorted(
            {(row.day, row.basic_code, row.item_type_code) for row in conn.execute(select(MetricBucket.__table__))}
        )
        # A key with no own records (no commitment) rides along, as a child's bucket would.
        keys.append((date(2026, 1, 5), keys[0][1], keys[0][2]))
        fast = bucket_commitments(conn, identity, keys)
        reference = [c for c in (_reference(conn, key, bucket) for bucket in keys) if c is not None]
        opened = bucket_leaves(conn, keys, key)
    assert len(reference) >= 10  # the acceptance and completion days of the district's 400 cases
    assert [c.SerializeToString() for c in fast] == [c.SerializeToString() for c in reference]
    assert sum(c.leaf_count for c in fast) == 620  # 400 received leaves, 200 + 20 completed ones
    for commitment in fast:
        bucket = (date.fromisoformat(commitment.day), commitment.basic_code, commitment.item_type_code)
        assert leaf_tree(opened[bucket]).root == commitment.root


def test_report_carries_the_reference_roots(district: Node) -> None:
    [built] = build_reports(district, "incremental")
    body = ReportBody()
    body.ParseFromString(built.envelope.body)
    key = salt_key(signing_identity(district))
    with district.engine.connect() as conn:
        for commitment in body.commitments:
            bucket = (date.fromisoformat(commitment.day), commitment.basic_code, commitment.item_type_code)
            assert commitment == _reference(conn, key, bucket)
    assert len(body.commitments) >= 10
