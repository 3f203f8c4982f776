"""Canonical encoding: deterministic bodies, bucket order, report validation, counter helpers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import inspect as sa_inspect

from federation import (
    COUNTER_FIELDS,
    InvalidArgumentError,
    add_counters,
    body_type_of,
    bucket_key,
    canonical_bytes,
    canonicalize_report,
    counters_from_mapping,
    counters_to_dict,
    is_day,
    parse_body,
    require_canonical_encoding,
    serialize,
    sort_buckets,
    validate_report_body,
)
from federation.proto.v1.common_pb2 import Counters, SignedEnvelope
from federation.proto.v1.drilldown_pb2 import QueryBody
from federation.proto.v1.report_pb2 import Bucket, ChildReportRef, ReportBody, ReportKind
from node.store import MetricBucket


def _bucket(day: str, code: str, item_type: str = "01", received: int = 1) -> Bucket:
    return Bucket(day=day, basic_code=code, item_type_code=item_type, counters=Counters(received=received))


def _valid_report() -> ReportBody:
    body = ReportBody(
        node_id="gd.gz",
        sequence=2,
        previous_digest=b"\x11" * 32,
        kind=ReportKind.REPORT_KIND_FULL,
        window_start_day="2024-03-01",
        window_end_day="2024-03-31",
    )
    body.buckets.extend(
        [_bucket("2024-03-02", "000200"), _bucket("2024-03-01", "000300"), _bucket("2024-03-01", "000100")]
    )
    body.child_reports.extend(
        [
            ChildReportRef(child_id="gd.gz.py", sequence=9, digest=b"\x02" * 32),
            ChildReportRef(child_id="gd.gz.hp", sequence=4, digest=b"\x03" * 32),
        ]
    )
    body.completeness.nodes_in_subtree = 3
    body.completeness.nodes_reported_in_window = 3
    return canonicalize_report(body)


def test_counter_fields_are_exactly_the_metric_bucket_counter_columns() -> None:
    columns = [column.key for column in sa_inspect(MetricBucket).columns]
    non_counters = {"day", "department", "implementation_code", "basic_code", "item_type_code", "revision"}
    assert list(COUNTER_FIELDS) == [name for name in columns if name not in non_counters]


def test_canonicalize_sorts_buckets_and_children() -> None:
    body = _valid_report()
    assert [bucket_key(b) for b in body.buckets] == [
        ("2024-03-01", "000100", "01"),
        ("2024-03-01", "000300", "01"),
        ("2024-03-02", "000200", "01"),
    ]
    assert [ref.child_id for ref in body.child_reports] == ["gd.gz.hp", "gd.gz.py"]
    validate_report_body(body)


def test_same_content_in_any_insertion_order_serializes_to_the_same_bytes() -> None:
    buckets = [_bucket("2024-03-02", "B"), _bucket("2024-03-01", "A"), _bucket("2024-03-01", "C")]
    first = ReportBody(node_id="gd", sequence=1, kind=ReportKind.REPORT_KIND_INCREMENTAL)
    first.buckets.extend(buckets)
    second = ReportBody(node_id="gd", sequence=1, kind=ReportKind.REPORT_KIND_INCREMENTAL)
    second.buckets.extend(reversed(buckets))
    assert serialize(canonicalize_report(first)) == serialize(canonicalize_report(second))
    assert [bucket_key(b) for b in sort_buckets(buckets)] == [bucket_key(b) for b in first.buckets]


def test_deterministic_serialization_orders_map_entries() -> None:
    from federation.proto.v1.ingest_pb2 import IngestRecord

    forward = IngestRecord(seq=1, kind="item", fields={chr(97 + i): str(i) for i in range(20)})
    backward = IngestRecord(seq=1, kind="item", fields={chr(97 + i): str(i) for i in reversed(range(20))})
    assert serialize(forward) == serialize(backward)


def test_canonical_bytes_layout_and_bad_body_types() -> None:
    assert canonical_bytes("x.Y", b"\x00body") == b"supnet/v1/x.Y\x00\x00body"
    assert body_type_of(ReportBody) == body_type_of(ReportBody()) == "federation.proto.v1.ReportBody"
    with pytest.raises(InvalidArgumentError, match="non-empty name without NUL"):
        canonical_bytes("", b"")
    with pytest.raises(InvalidArgumentError, match="non-empty name without NUL"):
        canonical_bytes("a\x00b", b"")


def test_parse_body_checks_type_and_bytes() -> None:
    report = _valid_report()
    envelope = SignedEnvelope(signer_id="gd.gz", body_type=body_type_of(report), body=serialize(report))
    assert parse_body(envelope, ReportBody) == report
    with pytest.raises(InvalidArgumentError, match=r"from gd\.gz carries federation.proto.v1.ReportBody, expected"):
        parse_body(envelope, QueryBody)
    envelope.body = b"\xff\xff\xff"
    with pytest.raises(InvalidArgumentError, match=r"body is not a valid federation\.proto\.v1\.ReportBody"):
        parse_body(envelope, ReportBody)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: setattr(b, "node_id", ""), "node_id is empty"),
        (lambda b: setattr(b, "sequence", 0), "sequence must start at 1"),
        (lambda b: setattr(b, "previous_digest", b"\x01" * 5), "previous_digest must be 32 bytes, got 5"),
        (lambda b: setattr(b, "kind", ReportKind.REPORT_KIND_UNSPECIFIED), "kind must be INCREMENTAL or FULL"),
        (lambda b: setattr(b, "window_end_day", "2024-3-31"), "FULL report needs window_end_day as YYYY-MM-DD"),
        (lambda b: setattr(b, "window_start_day", "2024-04-01"), "window_start_day is after window_end_day"),
        (lambda b: b.buckets.append(_bucket("2024-03-02", "000200")), r"bucket 3 .* out of order or repeated"),
        (lambda b: b.buckets.append(_bucket("2024-04-01", "000900")), "bucket 3 day 2024-04-01 is outside"),
        (lambda b: setattr(b.buckets[0], "day", "20240301"), "bucket 0 day '20240301' is not YYYY-MM-DD"),
        (
            lambda b: b.child_reports.append(ChildReportRef(child_id="gd.gz.aa", digest=b"\x00" * 32)),
            r"child report 2 \('gd.gz.aa'\) is out of order",
        ),
        (lambda b: setattr(b.child_reports[0], "digest", b""), "child report gd.gz.hp digest must be 32 bytes"),
        (lambda b: setattr(b.completeness, "nodes_reported_in_window", 4), "nodes_reported_in_window exceeds"),
        # Figures a province sums over thousands of children must not overflow int64 there (found by the RPC fuzz).
        (lambda b: setattr(b.buckets[0].counters, "received", 10**15 + 1), r"counter received is implausibly large"),
        (lambda b: setattr(b.catalogue, "items", 2**62), r"catalogue items must be between 0 and 10+, not 4611"),
        (lambda b: setattr(b.catalogue, "sum_legal", -1), r"catalogue sum_legal must be between 0 and \d+, not -1"),
        (
            lambda b: b.catalogue.retired_by_month.add(month="2024-03", count=10**16),
            r"catalogue retired_by_month 2024-03 must be between",
        ),
    ],
)
def test_validate_report_body_names_the_problem(mutate: Callable[[ReportBody], object], message: str) -> None:
    body = _valid_report()
    mutate(body)
    with pytest.raises(InvalidArgumentError, match=message) as caught:
        validate_report_body(body)
    assert str(caught.value).startswith("report ")


def test_first_report_must_not_name_a_previous_digest() -> None:
    body = ReportBody(node_id="gd", sequence=1, previous_digest=b"\x01" * 32, kind=ReportKind.REPORT_KIND_INCREMENTAL)
    with pytest.raises(InvalidArgumentError, match="report gd #1: previous_digest must be empty"):
        validate_report_body(body)


def test_is_day() -> None:
    assert is_day("2024-02-29")
    assert not is_day("2024-13-01")
    assert not is_day("2024-00-10")
    assert not is_day("2024-01-32")
    assert not is_day("2024-01-01T00:00")
    assert not is_day("2025-02-29") and not is_day("2025-04-31")  # well-formed, but no such day


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: setattr(b.buckets[0].counters, "received", -1), "counter received is negative"),
        (lambda b: setattr(b.buckets[0], "basic_code", "B" * 11), "longer than 10 / 2 characters"),
        (lambda b: setattr(b.buckets[0], "item_type_code", "012"), "longer than 10 / 2 characters"),
    ],
)
def test_values_no_honest_report_carries_are_refused(mutate: Callable[[ReportBody], object], message: str) -> None:
    body = _valid_report()
    mutate(body)
    with pytest.raises(InvalidArgumentError, match=message):
        validate_report_body(body)


@pytest.mark.parametrize(
    "extra",
    [
        bytes([0xF8, 0x07, 0x01]),  # an unknown field 127
        serialize(ReportBody(sequence=7)),  # sequence again: a parser keeps the last value
        serialize(ReportBody(node_id="gd.gz")),  # a field after a higher-numbered one
    ],
)
def test_only_the_canonical_encoding_of_a_body_is_accepted(extra: bytes) -> None:
    body = _valid_report()
    canonical = SignedEnvelope(signer_id="gd.gz", body_type=body_type_of(body), body=serialize(body))
    require_canonical_encoding(canonical, parse_body(canonical, ReportBody))
    padded = SignedEnvelope(signer_id="gd.gz", body_type=body_type_of(body), body=serialize(body) + extra)
    with pytest.raises(InvalidArgumentError, match="not in canonical encoding"):
        require_canonical_encoding(padded, parse_body(padded, ReportBody))


def test_counter_helpers_add_field_by_field() -> None:
    row: dict[str, int | str] = {name: index + 1 for index, name in enumerate(COUNTER_FIELDS)}
    row |= {"department": "x", "revision": 9}
    counter_values = {name: int(row[name]) for name in COUNTER_FIELDS}
    counters = counters_from_mapping(row)
    assert counters_to_dict(counters) == counter_values
    total = Counters()
    add_counters(total, counters)
    add_counters(total, counters)
    assert counters_to_dict(total) == {name: 2 * value for name, value in counter_values.items()}
    assert counters_to_dict(counters_from_mapping({})) == dict.fromkeys(COUNTER_FIELDS, 0)
