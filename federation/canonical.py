r"""Canonical encoding: the exact bytes that are signed and hashed, deterministic bodies, sorted buckets.

The canonical bytes of a signed body are ``b"supnet/v1/" + body_type + b"\x00" + body``: the prefix
separates supnet signatures from any other use of the key, and naming the body type keeps a signature
over one message kind from being replayed as another. ``body`` is the deterministic protobuf
serialization built once by the sender; nobody re-serializes it afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from federation.errors import InvalidArgumentError
from federation.proto.v1.common_pb2 import Counters, SignedEnvelope
from federation.proto.v1.report_pb2 import Bucket, ReportBody, ReportKind

DOMAIN_PREFIX = b"supnet/v1/"
DIGEST_SIZE = 32
# The counter fields of Counters in field-number order (the metric_buckets counter columns).
COUNTER_FIELDS: tuple[str, ...] = tuple(field.name for field in Counters.DESCRIPTOR.fields)
REPORT_BODY_TYPE: str = ReportBody.DESCRIPTOR.full_name

_DAY_PATTERN = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
MessageT = TypeVar("MessageT", bound=Message)
BucketKey = tuple[str, str, str]


def body_type_of(message: Message | type[Message]) -> str:
    """The body_type of a message (its full protobuf name, e.g. ``federation.proto.v1.ReportBody``)."""
    return str(message.DESCRIPTOR.full_name)


def serialize(message: Message) -> bytes:
    """Deterministic serialization of a body message (the bytes that go into an envelope)."""
    return message.SerializeToString(deterministic=True)


def canonical_bytes(body_type: str, body: bytes) -> bytes:
    """The bytes signed and hashed for a body: domain prefix + body type + NUL + body."""
    if not body_type or "\x00" in body_type:
        raise InvalidArgumentError(f"body_type must be a non-empty name without NUL, got {body_type!r}")
    return DOMAIN_PREFIX + body_type.encode("utf-8") + b"\x00" + body


def envelope_canonical_bytes(envelope: SignedEnvelope) -> bytes:
    """Canonical bytes of a received envelope, taken from its body bytes as received."""
    return canonical_bytes(envelope.body_type, envelope.body)


def parse_body(envelope: SignedEnvelope, message_type: type[MessageT]) -> MessageT:
    """Parse an envelope's body as ``message_type`` after checking body_type names that type."""
    expected = body_type_of(message_type)
    if envelope.body_type != expected:
        raise InvalidArgumentError(
            f"envelope from {envelope.signer_id or '?'} carries {envelope.body_type or 'no body_type'}, "
            f"expected {expected}"
        )
    message = message_type()
    try:
        message.ParseFromString(envelope.body)
    except DecodeError as error:
        raise InvalidArgumentError(
            f"envelope from {envelope.signer_id or '?'}: body is not a valid {expected}: {error}"
        ) from error
    return message


def bucket_key(bucket: Bucket) -> BucketKey:
    """The sort and identity key of an upward bucket: (day, basic_code, item_type_code)."""
    return (bucket.day, bucket.basic_code, bucket.item_type_code)


def sort_buckets(buckets: Iterable[Bucket]) -> list[Bucket]:
    """Buckets in canonical order (by bucket_key); ISO days make text order chronological."""
    return sorted(buckets, key=bucket_key)


def canonicalize_report(body: ReportBody) -> ReportBody:
    """Put a report body's repeated fields in canonical order, in place; returns the same body."""
    ordered_buckets = sort_buckets(body.buckets)
    del body.buckets[:]
    body.buckets.extend(ordered_buckets)
    ordered_children = sorted(body.child_reports, key=lambda ref: ref.child_id)
    del body.child_reports[:]
    body.child_reports.extend(ordered_children)
    return body


def is_day(text: str) -> bool:
    """True if text looks like a ``YYYY-MM-DD`` day (month and day ranges checked, not month lengths)."""
    return bool(_DAY_PATTERN.match(text))


def validate_report_body(body: ReportBody) -> None:
    """Check a report body is well formed and canonical; raise InvalidArgumentError naming what is wrong."""
    label = f"report {body.node_id or '?'} #{body.sequence}"
    if not body.node_id:
        raise InvalidArgumentError(f"{label}: node_id is empty")
    if body.sequence < 1:
        raise InvalidArgumentError(f"{label}: sequence must start at 1")
    if body.sequence == 1 and body.previous_digest:
        raise InvalidArgumentError(f"{label}: previous_digest must be empty for the first report")
    if body.sequence > 1 and len(body.previous_digest) != DIGEST_SIZE:
        raise InvalidArgumentError(
            f"{label}: previous_digest must be {DIGEST_SIZE} bytes, got {len(body.previous_digest)}"
        )
    if body.kind == ReportKind.REPORT_KIND_FULL:
        for name in ("window_start_day", "window_end_day"):
            if not is_day(getattr(body, name)):
                raise InvalidArgumentError(f"{label}: FULL report needs {name} as YYYY-MM-DD")
        if body.window_start_day > body.window_end_day:
            raise InvalidArgumentError(f"{label}: window_start_day is after window_end_day")
    elif body.kind != ReportKind.REPORT_KIND_INCREMENTAL:
        raise InvalidArgumentError(f"{label}: kind must be INCREMENTAL or FULL")
    previous_key: BucketKey | None = None
    for index, bucket in enumerate(body.buckets):
        key = bucket_key(bucket)
        if not is_day(bucket.day):
            raise InvalidArgumentError(f"{label}: bucket {index} day {bucket.day!r} is not YYYY-MM-DD")
        if body.kind == ReportKind.REPORT_KIND_FULL and not (
            body.window_start_day <= bucket.day <= body.window_end_day
        ):
            raise InvalidArgumentError(f"{label}: bucket {index} day {bucket.day} is outside the FULL window")
        if previous_key is not None and key <= previous_key:
            raise InvalidArgumentError(f"{label}: bucket {index} {key} is out of order or repeated")
        previous_key = key
    previous_child = ""
    for index, ref in enumerate(body.child_reports):
        if not ref.child_id or ref.child_id <= previous_child:
            raise InvalidArgumentError(f"{label}: child report {index} ({ref.child_id!r}) is out of order or repeated")
        if len(ref.digest) != DIGEST_SIZE:
            raise InvalidArgumentError(f"{label}: child report {ref.child_id} digest must be {DIGEST_SIZE} bytes")
        previous_child = ref.child_id
    completeness = body.completeness
    if completeness.nodes_reported_in_window > completeness.nodes_in_subtree:
        raise InvalidArgumentError(f"{label}: nodes_reported_in_window exceeds nodes_in_subtree")


def counters_from_mapping(values: Mapping[str, Any]) -> Counters:
    """Build Counters from a mapping with counter names as keys (e.g. a metric_buckets row); others ignored."""
    return Counters(**{name: int(values[name]) for name in COUNTER_FIELDS if values.get(name)})


def counters_to_dict(counters: Counters) -> dict[str, int]:
    """Every counter of a Counters message by name, zeros included."""
    return {name: int(getattr(counters, name)) for name in COUNTER_FIELDS}


def add_counters(into: Counters, other: Counters) -> Counters:
    """Add other's counters into ``into`` field by field (every counter is additive); returns ``into``."""
    for name in COUNTER_FIELDS:
        value = getattr(other, name)
        if value:
            setattr(into, name, getattr(into, name) + value)
    return into
