r"""Canonical encoding: the exact bytes that are signed and hashed, deterministic bodies, sorted buckets.

The canonical bytes of a signed body are ``b"supnet/v1/" + body_type + b"\x00" + body``: the prefix
separates supnet signatures from any other use of the key, and naming the body type keeps a signature
over one message kind from being replayed as another. ``body`` is the deterministic protobuf
serialization built once by the sender; nobody re-serializes it afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from federation.errors import InvalidArgumentError
from federation.proto.v1.common_pb2 import Counters, SignedEnvelope
from federation.proto.v1.report_pb2 import Bucket, ReportBody, ReportKind

DOMAIN_PREFIX = b"supnet/v1/"
DIGEST_SIZE = 32
# Bucket key lengths of the wire contract (report.proto): 基本编码 an..10, 事项类型代码 n2. A parent stores them
# in columns of these sizes, so a longer one is refused here, not by the database.
MAX_BASIC_CODE_LENGTH = 10
MAX_ITEM_TYPE_CODE_LENGTH = 2
# Activity count keys (report.proto ActivityCount): metric and kind, stored in columns of this size.
MAX_ACTIVITY_NAME_LENGTH = 40
# The largest figure a report may carry (a counter, an activity count, an item-register figure): far above any real
# count or sum (10^15 fen is ten trillion yuan), and low enough that a province's sum over thousands of children
# stays inside int64, the wire and column type; a child sending more is refused, not summed into an overflow.
MAX_FIGURE = 10**15
# The counter fields of Counters in field-number order (the metric_buckets counter columns).
COUNTER_FIELDS: tuple[str, ...] = tuple(field.name for field in Counters.DESCRIPTOR.fields)
REPORT_BODY_TYPE: str = ReportBody.DESCRIPTOR.full_name

# Plain ints: an enum attribute lookup goes through the protobuf wrapper's __getattr__ each time.
_FULL: int = ReportKind.REPORT_KIND_FULL
_INCREMENTAL: int = ReportKind.REPORT_KIND_INCREMENTAL
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
    ordered_activity = sorted(body.activity, key=lambda entry: (entry.day, entry.metric, entry.kind))
    del body.activity[:]
    body.activity.extend(ordered_activity)
    ordered_children = sorted(body.child_reports, key=lambda ref: ref.child_id)
    del body.child_reports[:]
    body.child_reports.extend(ordered_children)
    return body


def is_day(text: str) -> bool:
    """True if text is an existing ``YYYY-MM-DD`` day (2025-02-30 is not: a receiver would fail on it later)."""
    if not _DAY_PATTERN.match(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def require_canonical_encoding(envelope: SignedEnvelope, body: Message) -> None:
    """Refuse a signed body whose bytes are not exactly the deterministic serialization of what they parse to.

    Unknown fields, a field repeated with another value (the parser keeps the last), fields out of order or
    padded varints would give one content several signed byte strings, hence several digests: the dedup on
    (child, sequence, digest) and the hash chain assume one. The honest builder always signs ``serialize(body)``.
    """
    clean = type(body)()
    clean.CopyFrom(body)
    clean.DiscardUnknownFields()
    if serialize(clean) != envelope.body:
        raise InvalidArgumentError(
            f"envelope from {envelope.signer_id or '?'}: {body_type_of(body)} body is not in canonical encoding "
            "(deterministic protobuf serialization, no unknown or repeated fields)"
        )


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
    if body.kind == _FULL:
        for name in ("window_start_day", "window_end_day"):
            if not is_day(getattr(body, name)):
                raise InvalidArgumentError(f"{label}: FULL report needs {name} as YYYY-MM-DD")
        if body.window_start_day > body.window_end_day:
            raise InvalidArgumentError(f"{label}: window_start_day is after window_end_day")
    elif body.kind != _INCREMENTAL:
        raise InvalidArgumentError(f"{label}: kind must be INCREMENTAL or FULL")
    # A parent checks every bucket of every report it receives: what does not change per bucket is read once,
    # and a day is parsed once per report (buckets share few days).
    full_window = (body.window_start_day, body.window_end_day) if body.kind == _FULL else None
    good_days: set[str] = set()
    previous_key: BucketKey | None = None
    for index, bucket in enumerate(body.buckets):
        key = bucket_key(bucket)
        day = key[0]
        if day not in good_days:
            if not is_day(day):
                raise InvalidArgumentError(f"{label}: bucket {index} day {day!r} is not YYYY-MM-DD")
            good_days.add(day)
        if len(key[1]) > MAX_BASIC_CODE_LENGTH or len(key[2]) > MAX_ITEM_TYPE_CODE_LENGTH:
            raise InvalidArgumentError(
                f"{label}: bucket {index} basic_code / item_type_code longer than {MAX_BASIC_CODE_LENGTH} / "
                f"{MAX_ITEM_TYPE_CODE_LENGTH} characters"
            )
        if full_window is not None and not (full_window[0] <= day <= full_window[1]):
            raise InvalidArgumentError(f"{label}: bucket {index} day {day} is outside the FULL window")
        if previous_key is not None and key <= previous_key:
            raise InvalidArgumentError(f"{label}: bucket {index} {key} is out of order or repeated")
        previous_key = key
        for counter, value in bucket.counters.ListFields():
            if value < 0:  # every counter is a count or a sum of non-negative amounts
                raise InvalidArgumentError(
                    f"{label}: bucket {index} {key} counter {counter.name} is negative ({value})"
                )
            if value > MAX_FIGURE:
                raise InvalidArgumentError(
                    f"{label}: bucket {index} {key} counter {counter.name} is implausibly large ({value})"
                )
    _validate_activity(body, label, full_window)
    _validate_catalogue(body, label)
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


def _validate_activity(body: ReportBody, label: str, full_window: tuple[str, str] | None) -> None:
    """Check the activity counts: days within a FULL window, short named keys, sorted and once each, not negative.

    Sorted means by (day, metric, kind) in code-point order (a kind may be Chinese text).
    """
    previous: tuple[str, str, str] | None = None
    for index, entry in enumerate(body.activity):
        key = (entry.day, entry.metric, entry.kind)
        if not is_day(entry.day):
            raise InvalidArgumentError(f"{label}: activity {index} day {entry.day!r} is not YYYY-MM-DD")
        if full_window is not None and not (full_window[0] <= entry.day <= full_window[1]):
            raise InvalidArgumentError(f"{label}: activity {index} day {entry.day} is outside the FULL window")
        if not entry.metric or max(len(entry.metric), len(entry.kind)) > MAX_ACTIVITY_NAME_LENGTH:
            raise InvalidArgumentError(
                f"{label}: activity {index} {key}: metric must be named and metric and kind at most "
                f"{MAX_ACTIVITY_NAME_LENGTH} characters"
            )
        if previous is not None and key <= previous:
            raise InvalidArgumentError(f"{label}: activity {index} {key} is out of order or repeated")
        if entry.count < 0:
            raise InvalidArgumentError(f"{label}: activity {index} {key} count is negative ({entry.count})")
        if entry.count > MAX_FIGURE:
            raise InvalidArgumentError(f"{label}: activity {index} {key} count is implausibly large ({entry.count})")
        previous = key


def _validate_catalogue(body: ReportBody, label: str) -> None:
    """Check the item-register figures: every count and sum between 0 and MAX_FIGURE."""
    figures = [(field.name, value) for field, value in body.catalogue.ListFields() if field.name != "retired_by_month"]
    figures += [(f"retired_by_month {entry.month}", entry.count) for entry in body.catalogue.retired_by_month]
    for name, value in figures:
        if not 0 <= value <= MAX_FIGURE:
            raise InvalidArgumentError(f"{label}: catalogue {name} must be between 0 and {MAX_FIGURE}, not {value}")


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
