r"""Per-node hash chains of reports: digests, and the checks a receiver or an auditor runs.

The digest of a report is SHA-256 over the canonical bytes of its envelope
(``b"supnet/v1/" + body_type + b"\x00" + body``, see federation.canonical): the exact bytes that were
signed, so the digest is fixed the moment the report is signed and does not depend on re-serialization.
Report n+1 names the digest of report n in ``previous_digest``; report 1 names none. ``replay_reports`` gives the
state a chain of reports describes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import NamedTuple

from federation.canonical import COUNTER_FIELDS, REPORT_BODY_TYPE, envelope_canonical_bytes, parse_body
from federation.errors import IntegrityError, InvalidArgumentError, StaleError
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import ReportBody, ReportKind

SHORT_HEX_CHARS = 12


class ChainHead(NamedTuple):
    """The last accepted report of a node: its sequence and digest."""

    sequence: int
    digest: bytes


def short_hex(digest: bytes) -> str:
    """A short hex prefix of a digest for messages and logs ("-" when empty)."""
    return digest.hex()[:SHORT_HEX_CHARS] if digest else "-"


def envelope_digest(envelope: SignedEnvelope) -> bytes:
    """SHA-256 over an envelope's canonical bytes (any body type; used for reports and queries)."""
    return hashlib.sha256(envelope_canonical_bytes(envelope)).digest()


def report_digest(envelope: SignedEnvelope) -> bytes:
    """The digest of a report envelope; InvalidArgumentError if it does not carry a ReportBody."""
    if envelope.body_type != REPORT_BODY_TYPE:
        raise InvalidArgumentError(
            f"envelope from {envelope.signer_id or '?'} carries {envelope.body_type or 'no body_type'}, "
            f"not a {REPORT_BODY_TYPE}"
        )
    return envelope_digest(envelope)


def check_chain(
    previous: ChainHead | tuple[int, bytes] | None, body: ReportBody, *, accept_first_at_any_sequence: bool = False
) -> None:
    """Check body extends the chain whose last accepted report is ``previous`` (None: nothing accepted yet).

    Raises StaleError if the sequence is at or below the last accepted one, IntegrityError for a gap or a
    previous_digest that does not match. With ``accept_first_at_any_sequence`` a first report (previous is
    None) may start anywhere, for a parent that registers a child which already reported elsewhere.
    """
    node = body.node_id or "?"
    if previous is None:
        if body.sequence == 1:
            if body.previous_digest:
                raise IntegrityError(
                    f"report {node} #1 names previous digest {short_hex(body.previous_digest)}; the first has none"
                )
            return
        if accept_first_at_any_sequence and body.sequence > 1:
            return
        raise IntegrityError(f"report {node} #{body.sequence} leaves a gap: no report accepted yet, expected #1")
    last_sequence, last_digest = previous
    if body.sequence <= last_sequence:
        raise StaleError(f"report {node} #{body.sequence} is at or below the last accepted #{last_sequence}")
    if body.sequence != last_sequence + 1:
        raise IntegrityError(
            f"report {node} #{body.sequence} leaves a gap: last accepted #{last_sequence}, "
            f"expected #{last_sequence + 1}"
        )
    if body.previous_digest != last_digest:
        raise IntegrityError(
            f"report {node} #{body.sequence} breaks the hash chain: previous digest expected "
            f"{short_hex(last_digest)}, got {short_hex(body.previous_digest)}"
        )


def verify_history(
    envelopes: Iterable[SignedEnvelope], start: ChainHead | None = None, *, accept_first_at_any_sequence: bool = False
) -> ChainHead | None:
    """Check a node's reports, in sequence order, form one unbroken chain; return the final head.

    ``start`` is the head before the first envelope (None: the first must be #1, unless
    ``accept_first_at_any_sequence`` allows auditing a suffix). Signatures are not checked here (use
    federation.signing); this audits that the history was never rewritten. All reports must come from one node.
    """
    head = start
    node_id: str | None = None
    for envelope in envelopes:
        body = parse_body(envelope, ReportBody)
        if node_id is not None and body.node_id != node_id:
            raise IntegrityError(f"report history mixes nodes {node_id} and {body.node_id}")
        node_id = body.node_id
        check_chain(head, body, accept_first_at_any_sequence=accept_first_at_any_sequence)
        head = ChainHead(body.sequence, report_digest(envelope))
    return head


ReportStateKey = tuple[str, str, str]


def replay_reports(history: Iterable[ReportBody]) -> dict[ReportStateKey, dict[str, int]]:
    """A node's signed state from its reports in order: INCREMENTAL upserts its buckets, FULL replaces its window.

    Keys are (day, basic_code, item_type_code); values every counter of the bucket (zeros included).
    """
    return {
        key: dict(zip(COUNTER_FIELDS, values, strict=True)) for key, values in replay_report_vectors(history).items()
    }


def replay_report_vectors(history: Iterable[ReportBody]) -> dict[ReportStateKey, list[int]]:
    """``replay_reports`` with each bucket's counters as a list in COUNTER_FIELDS order.

    Only the counters a bucket sets are read (most are zero in most buckets): what a province-wide verify adds up.
    """
    state: dict[ReportStateKey, list[int]] = {}
    for body in history:
        if body.kind == ReportKind.REPORT_KIND_FULL:
            start, end = body.window_start_day, body.window_end_day
            for key in [key for key in state if start <= key[0] <= end]:
                del state[key]
        for bucket in body.buckets:
            values = [0] * len(COUNTER_FIELDS)
            # A field's descriptor index is its position in COUNTER_FIELDS (both follow Counters.DESCRIPTOR.fields).
            for descriptor, value in bucket.counters.ListFields():
                values[descriptor.index] = int(value)
            state[(bucket.day, bucket.basic_code, bucket.item_type_code)] = values
    return state
