"""Property-based fuzzing (hypothesis) of RPC requests against a real NodeServer: a proper status every time.

A real two-node tree (``gd`` ← ``gd.a``, real generated data, reports settled) serves on loopback ports in the
insecure plaintext mode (the target here is the request content, not the transport). Random and mutated
SubmitReport envelopes (garbage, random bodies signed with the child's real key, raw bytes), Query envelopes
(garbage, random QueryBody contents signed with the node's own key) and IngestService streams of random records
go to ``gd``'s server, each call with a deadline. Every call must end with OK or one of our mapped statuses —
never UNKNOWN, INTERNAL or a hang — and a refused call must leave ``gd``'s database exactly as it was (the
audit log, which records refusals, aside).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation import REPORT_BODY_TYPE, body_type_of, load_child_chains, serialize, sign_envelope
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.ingest_pb2 import IngestOutcome, IngestRecord
from federation.proto.v1.ingest_pb2_grpc import IngestServiceStub
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from federation.proto.v1.report_pb2 import ReportBody, ReportKind
from node.domain import KIND_ORDER, RECORD_FIELDS
from node.supervision import check_buckets
from node.trust import SigningIdentity
from tests.harness.tree import Tree, build_tree, node_identity

DEADLINE = 10.0
EXAMPLES = 100
# Statuses our error mapping produces (federation.grpc_errors); anything else is a bug or a hang.
ALLOWED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
# A refusal is audited, and one only the child's operators can fix (a broken chain) is told to ours as well.
UNCHANGED_EXCEPT = frozenset({"audit_log", "operator_notices", "notifications"})
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEEN: dict[str, Counter[str]] = {}


# -- random protobuf messages from their descriptors ----------------------------------------------------------------
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),  # proto3 enums are open: unknown values arrive too
}
DAYS = st.sampled_from(["2026-01-05", "2026-02-28", "2026-03-31", "2025-02-29", "2026-04-31", "2026-13-01", "", "x"])
TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["gd", "gd.a", "gd.a.x", "0000000001", "01"]), DAYS)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type in _INT_RANGES:
        low, high = _INT_RANGES[field.type]
        return st.one_of(st.integers(0, 50), st.integers(low, high))
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=40), st.binary(min_size=32, max_size=32))
    return st.one_of(TEXT, st.text(min_size=100, max_size=2000))


def messages(descriptor: Descriptor, depth: int = 3) -> st.SearchStrategy[dict[str, Any]]:
    """Random field values of a message type as a dict (nested messages as dicts), oneofs with at most one set."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        values: dict[str, Any] = {}
        chosen_oneofs = {oneof.name: draw(st.sampled_from([None, *oneof.fields])) for oneof in descriptor.oneofs}
        for field in descriptor.fields:
            oneof = field.containing_oneof
            if oneof is not None and chosen_oneofs[oneof.name] is not field:
                continue
            if oneof is None and not draw(st.booleans()):
                continue
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
                values[field.name] = draw(st.dictionaries(_scalar(key), _scalar(value), max_size=4))
                continue
            if field.message_type is not None:
                if depth <= 0:
                    continue
                element: st.SearchStrategy[Any] = messages(field.message_type, depth - 1)
            else:
                element = _scalar(field)
            repeated = field.is_repeated
            values[field.name] = draw(st.lists(element, max_size=3)) if repeated else draw(element)
        return values

    return build()


def _fill(message: Message, values: dict[str, Any]) -> Message:
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target.update(value)
        elif field.message_type is not None and field.is_repeated:
            for item in value:
                _fill(target.add(), item)
        elif field.message_type is not None:
            _fill(target, value)
            target.SetInParent()
        elif field.is_repeated:
            target.extend(value)
        else:
            setattr(message, name, value)
    return message


# -- the server and its database ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    built = build_tree(tmp_path_factory.mktemp("fuzz-rpc"), {"gd": 15, "gd.a": 15}, plaintext=True)
    try:
        built.report_up()
        yield built
    finally:
        built.close()


def database_state(tree: Tree) -> dict[str, str]:
    """A digest of every table of gd's database (row order fixed), the audit log aside."""
    state: dict[str, str] = {}
    with tree.nodes["gd"].db() as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in sorted(set(tables) - UNCHANGED_EXCEPT):
            rows = sorted(repr(row) for row in conn.execute(f'SELECT * FROM "{table}"'))
            state[table] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return state


def call(method: Callable[..., Any], request: Any) -> grpc.StatusCode:
    """One unary call with a deadline; its status code."""
    try:
        method(request, timeout=DEADLINE)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        details = error.details()
        assert code in ALLOWED, f"{code.name}: {details}"
        assert details, f"{code.name} without a message"
        return code
    return grpc.StatusCode.OK


def _stub(tree: Tree) -> NodeServiceStub:
    return NodeServiceStub(tree.channel("gd", "gd"))


def _reached(seen: Counter[str], *codes: grpc.StatusCode) -> None:
    assert all(seen[code.name] > 0 for code in codes), seen


# -- SubmitReport ---------------------------------------------------------------------------------------------------
def _report_envelope(data: st.DataObject, tree: Tree, child: SigningIdentity) -> tuple[str, SignedEnvelope]:
    how = data.draw(
        st.sampled_from(
            ["garbage", "signed_random_body", "signed_raw_bytes", "signed_next_in_chain", "signed_plausible_next"]
        )
    )
    if how == "garbage":
        values = data.draw(messages(SignedEnvelope.DESCRIPTOR))
        if data.draw(st.booleans()):
            values["signer_id"] = "gd.a"
            values["body_type"] = REPORT_BODY_TYPE
        return how, _fill(SignedEnvelope(), values)  # type: ignore[return-value]
    if how == "signed_raw_bytes":
        raw = data.draw(st.binary(max_size=300))
        return how, sign_envelope(child.private_key, "gd.a", REPORT_BODY_TYPE, raw)
    body: ReportBody = _fill(ReportBody(), data.draw(messages(ReportBody.DESCRIPTOR)))  # type: ignore[assignment]
    if data.draw(st.integers(0, 3)):
        body.node_id = "gd.a"
    if how in ("signed_next_in_chain", "signed_plausible_next"):
        # Past the signature and the chain, into validation and the database: what a buggy child could send.
        with tree["gd"].engine.connect() as conn:
            head = load_child_chains(conn).get("gd.a")
        body.node_id = "gd.a"
        body.sequence = head.last_sequence + 1 if head else 1
        body.previous_digest = head.last_digest if head else b""
    if how == "signed_plausible_next":
        # Well-formed but for the random codes and counters: these reach the parent's child buckets.
        body.kind = data.draw(st.sampled_from([ReportKind.REPORT_KIND_INCREMENTAL, ReportKind.REPORT_KIND_FULL]))
        body.window_start_day, body.window_end_day = "2026-01-01", "2026-04-30"
        if body.kind == ReportKind.REPORT_KIND_INCREMENTAL:
            body.window_start_day = body.window_end_day = ""
        unique = {(b.basic_code, b.item_type_code): b for b in body.buckets}
        buckets = []
        for (basic_code, item_type), bucket in sorted(unique.items()):
            bucket.day = data.draw(st.sampled_from(["2026-01-05", "2026-02-28", "2026-03-31"]))
            bucket.basic_code, bucket.item_type_code = basic_code, item_type
            buckets.append(bucket)
        buckets.sort(key=lambda b: (b.day, b.basic_code, b.item_type_code))
        unique_keys = {(b.day, b.basic_code, b.item_type_code): b for b in buckets}
        del body.buckets[:]
        body.buckets.extend(unique_keys[key] for key in sorted(unique_keys))
        del body.child_reports[:]
        # Activity rows and spot-check commitments have their own checks (day format, bucket keys): random ones
        # would refuse every plausible report before it reaches the child buckets.
        del body.activity[:]
        del body.commitments[:]
        body.completeness.nodes_in_subtree = max(body.completeness.nodes_in_subtree, 1)
        body.completeness.nodes_reported_in_window = min(
            body.completeness.nodes_reported_in_window, body.completeness.nodes_in_subtree
        )
    return how, sign_envelope(child.private_key, "gd.a", REPORT_BODY_TYPE, serialize(body))


def test_submit_report_fuzz(tree: Tree) -> None:
    child = node_identity(tree, "gd.a")
    seen = SEEN.setdefault("SubmitReport", Counter())
    stub = _stub(tree)

    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        how, envelope = _report_envelope(data, tree, child)
        before = database_state(tree)
        code = call(stub.SubmitReport, envelope)
        seen[code.name] += 1
        seen[how] += 1
        if code is not grpc.StatusCode.OK:
            assert database_state(tree) == before, f"refused ({code.name}) SubmitReport changed gd's database"

    run()
    print(f"\nSubmitReport fuzz: {dict(sorted(seen.items()))}")
    _reached(
        seen,
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert check_buckets(tree["gd"]) == []


# -- Query ----------------------------------------------------------------------------------------------------------
QUERY_BODY_TYPE = body_type_of(dd.QueryBody)


def _query_envelope(data: st.DataObject, own: SigningIdentity) -> tuple[str, SignedEnvelope]:
    how = data.draw(
        st.sampled_from(["garbage", "signed_random_body", "signed_random_body", "signed_raw_bytes", "signed_plain"])
    )
    if how == "garbage":
        values = data.draw(messages(SignedEnvelope.DESCRIPTOR))
        if data.draw(st.booleans()):
            values["signer_id"] = "gd"
            values["body_type"] = QUERY_BODY_TYPE
        return how, _fill(SignedEnvelope(), values)  # type: ignore[return-value]
    if how == "signed_raw_bytes":
        return how, sign_envelope(own.private_key, "gd", QUERY_BODY_TYPE, data.draw(st.binary(max_size=300)))
    if how == "signed_plain":
        # Random request fields are mostly refused as invalid: plain summaries reach the answering code every run.
        group_by = data.draw(st.sampled_from(list(dd.SummaryGroupBy.values())))
        plain = dd.QueryBody(
            target_id=data.draw(st.sampled_from(["gd", "gd.a"])),
            requester_id="gd",
            issued_at_ms=int(time.time() * 1000),
            nonce=os.urandom(16),
            summary=dd.SummaryRequest(group_by=group_by),
        )
        return how, sign_envelope(own.private_key, "gd", QUERY_BODY_TYPE, serialize(plain))
    body: dd.QueryBody = _fill(dd.QueryBody(), data.draw(messages(dd.QueryBody.DESCRIPTOR)))  # type: ignore[assignment]
    # Mostly past authorization (fresh, with a nonce, asked by gd about its subtree), so the answers get fuzzed.
    if data.draw(st.integers(0, 4)):
        body.requester_id = "gd"
        body.issued_at_ms = int(time.time() * 1000)
        body.nonce = os.urandom(16)
        body.target_id = data.draw(st.sampled_from(["gd", "gd.a", "gd.a", body.target_id]))
    return how, sign_envelope(own.private_key, "gd", QUERY_BODY_TYPE, serialize(body))


def test_query_fuzz(tree: Tree) -> None:
    own = node_identity(tree, "gd")
    seen = SEEN.setdefault("Query", Counter())
    stub = _stub(tree)

    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        how, envelope = _query_envelope(data, own)
        before = database_state(tree)
        code = call(stub.Query, envelope)
        seen[code.name] += 1
        seen[how] += 1
        assert database_state(tree) == before, f"Query ({code.name}) changed gd's database"

    run()
    print(f"\nQuery fuzz: {dict(sorted(seen.items()))}")
    _reached(seen, grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)


# -- IngestService --------------------------------------------------------------------------------------------------
FIELD_NAMES = sorted({name for specs in RECORD_FIELDS.values() for spec in specs for name in (spec.name, spec.cn)})
VALUES = st.one_of(
    st.sampled_from(["", "1", "0", "01", "20260105T093000", "2026-02-30 10:00:00", "99999999999999999999", "是"]),
    st.text(max_size=20),
    st.text(min_size=300, max_size=1000),
    st.sampled_from(["\x00", "a\x00b", "番禺区\x00"]),
)
RECORDS = st.lists(
    st.builds(
        IngestRecord,
        seq=st.integers(0, 2**64 - 1),
        kind=st.one_of(st.sampled_from([*KIND_ORDER, "事项受理", "items"]), st.text(max_size=8)),
        fields=st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=6)), VALUES, max_size=8),
    ),
    max_size=8,
)


def test_ingest_stream_fuzz(tree: Tree) -> None:
    seen = SEEN.setdefault("Ingest", Counter())
    stub = IngestServiceStub(tree.channel("gd", "gd"))

    @FUZZ
    @given(RECORDS)
    def run(records: list[IngestRecord]) -> None:
        before = database_state(tree)
        try:
            results = list(stub.Ingest(iter(records), timeout=DEADLINE))
        except grpc.RpcError as error:
            code = error.code()
            assert code in ALLOWED - {grpc.StatusCode.OK}, f"{code.name}: {error.details()}"
            seen[code.name] += 1
            assert database_state(tree) == before, f"failed ingest stream ({code.name}) changed gd's database"
            return
        seen["OK"] += 1
        assert [result.seq for result in results] == [record.seq for record in records]
        for result in results:
            seen[IngestOutcome.Name(result.outcome)] += 1
            assert result.outcome in (
                IngestOutcome.INGEST_OUTCOME_ACCEPTED,
                IngestOutcome.INGEST_OUTCOME_DUPLICATE,
                IngestOutcome.INGEST_OUTCOME_REJECTED,
            ), result
            if result.outcome == IngestOutcome.INGEST_OUTCOME_REJECTED:
                assert result.reason and f"record {result.seq}" in result.message, result
        if not any(result.outcome == IngestOutcome.INGEST_OUTCOME_ACCEPTED for result in results):
            assert database_state(tree) == before, "an ingest stream with nothing accepted changed gd's database"

    run()
    print(f"\nIngest fuzz: {dict(sorted(seen.items()))}")
    assert seen["OK"] > 0 and seen["INGEST_OUTCOME_REJECTED"] > 0, seen
    assert check_buckets(tree["gd"]) == []


def test_undecodable_request_bytes_get_a_proper_status(tree: Tree) -> None:
    """Bytes that are no protobuf message at all, straight onto the wire of each unary method."""
    channel = tree.channel("gd", "gd")
    seen: Counter[str] = Counter()
    before = database_state(tree)
    for method in ("SubmitReport", "Query", "GetNodeInfo"):
        raw_call = channel.unary_unary(f"/federation.proto.v1.NodeService/{method}", None, None)
        for payload in (b"\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05ab", os.urandom(64), b"\x08" * 11):
            seen[call(raw_call, payload).name] += 1
    ingest = channel.stream_stream("/federation.proto.v1.IngestService/Ingest", None, None)
    for stream in ([b"\xff"], [IngestRecord(seq=1, kind="item").SerializeToString(), b"\x0a\xff"]):
        try:
            results = list(ingest(iter(stream), timeout=DEADLINE))
        except grpc.RpcError as error:
            assert error.code() in ALLOWED, f"{error.code().name}: {error.details()}"
            seen[f"Ingest {error.code().name}"] += 1
        else:
            seen[f"Ingest OK with {len(results)} answers"] += 1
    assert database_state(tree) == before
    print(f"\nraw bytes: {dict(seen)}")
    # 3 methods x 5 payloads, and both ingest streams (the second after answering its first, good record).
    assert seen["INVALID_ARGUMENT"] == 15 and seen["Ingest INVALID_ARGUMENT"] == 2, seen
