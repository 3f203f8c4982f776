"""Report hash chains: digests over canonical bytes, sequence and chain checks, history audits."""

from __future__ import annotations

import hashlib

import pytest

from federation import (
    ChainHead,
    IntegrityError,
    InvalidArgumentError,
    StaleError,
    check_chain,
    envelope_digest,
    generate_keypair,
    report_digest,
    short_hex,
    sign_message,
    verify_history,
)
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.drilldown_pb2 import QueryBody
from federation.proto.v1.report_pb2 import ReportBody, ReportKind

PRIVATE_KEY, _ = generate_keypair()


def _chain(length: int, node_id: str = "gd.gz.py") -> list[SignedEnvelope]:
    envelopes: list[SignedEnvelope] = []
    previous = b""
    for sequence in range(1, length + 1):
        body = ReportBody(
            node_id=node_id,
            sequence=sequence,
            previous_digest=previous,
            created_at_ms=1_700_000_000_000 + sequence,
            kind=ReportKind.REPORT_KIND_INCREMENTAL,
        )
        envelope = sign_message(PRIVATE_KEY, node_id, body)
        envelopes.append(envelope)
        previous = report_digest(envelope)
    return envelopes


def _body(envelope: SignedEnvelope) -> ReportBody:
    return ReportBody.FromString(envelope.body)


def test_digest_is_sha256_over_canonical_bytes() -> None:
    envelope = _chain(1)[0]
    expected = hashlib.sha256(b"supnet/v1/federation.proto.v1.ReportBody\x00" + envelope.body).digest()
    assert report_digest(envelope) == expected
    assert envelope_digest(envelope) == expected
    # The signature and signer are not part of the digest: it names the content that was signed.
    copy = SignedEnvelope()
    copy.CopyFrom(envelope)
    copy.certificate_chain.append(b"cert")
    assert report_digest(copy) == expected


def test_report_digest_refuses_other_bodies() -> None:
    query = sign_message(PRIVATE_KEY, "gd", QueryBody(target_id="gd.gz", requester_id="gd"))
    with pytest.raises(InvalidArgumentError, match=r"carries federation\.proto\.v1\.QueryBody, not a"):
        report_digest(query)
    assert len(envelope_digest(query)) == 32


def test_first_report_starts_the_chain() -> None:
    first = _body(_chain(1)[0])
    check_chain(None, first)
    first.previous_digest = b"\x01" * 32
    with pytest.raises(IntegrityError, match=r"report gd\.gz\.py #1 names previous digest 010101010101"):
        check_chain(None, first)


def test_each_next_report_extends_the_chain() -> None:
    envelopes = _chain(3)
    head = ChainHead(1, report_digest(envelopes[0]))
    check_chain(head, _body(envelopes[1]))
    check_chain((2, report_digest(envelopes[1])), _body(envelopes[2]))


def test_replayed_or_old_sequence_is_stale() -> None:
    envelopes = _chain(3)
    head = ChainHead(2, report_digest(envelopes[1]))
    for old in envelopes[:2]:
        with pytest.raises(StaleError, match=r"#\d is at or below the last accepted #2"):
            check_chain(head, _body(old))


def test_gap_is_an_integrity_error() -> None:
    envelopes = _chain(4)
    head = ChainHead(2, report_digest(envelopes[1]))
    with pytest.raises(IntegrityError, match=r"report gd\.gz\.py #4 leaves a gap: last accepted #2, expected #3"):
        check_chain(head, _body(envelopes[3]))
    with pytest.raises(IntegrityError, match="no report accepted yet, expected #1"):
        check_chain(None, _body(envelopes[3]))
    check_chain(None, _body(envelopes[3]), accept_first_at_any_sequence=True)


def test_rewritten_history_breaks_the_chain() -> None:
    envelopes = _chain(2)
    # The node re-signs a different report #1 after the parent accepted the original one.
    rewritten = ReportBody(node_id="gd.gz.py", sequence=1, created_at_ms=5, kind=ReportKind.REPORT_KIND_FULL)
    rewritten_digest = report_digest(sign_message(PRIVATE_KEY, "gd.gz.py", rewritten))
    head = ChainHead(1, rewritten_digest)
    real_previous = report_digest(envelopes[0])
    with pytest.raises(IntegrityError) as caught:
        check_chain(head, _body(envelopes[1]))
    message = str(caught.value)
    assert "report gd.gz.py #2 breaks the hash chain" in message
    assert f"expected {short_hex(rewritten_digest)}, got {short_hex(real_previous)}" in message


def test_verify_history_walks_the_whole_chain() -> None:
    envelopes = _chain(5)
    head = verify_history(envelopes)
    assert head == ChainHead(5, report_digest(envelopes[-1]))
    assert verify_history(envelopes[2:], ChainHead(2, report_digest(envelopes[1]))) == head
    assert verify_history(envelopes[2:], accept_first_at_any_sequence=True) == head
    assert verify_history([]) is None


def test_verify_history_detects_a_spliced_report() -> None:
    envelopes = _chain(4)
    # Report #3 is replaced by a validly signed one with other content but the right previous digest.
    forged_body = _body(envelopes[2])
    forged_body.created_at_ms += 1
    envelopes[2] = sign_message(PRIVATE_KEY, "gd.gz.py", forged_body)
    with pytest.raises(IntegrityError, match="#4 breaks the hash chain"):
        verify_history(envelopes)


def test_verify_history_refuses_mixed_nodes() -> None:
    mixed = _chain(1, "gd.gz.py") + _chain(2, "gd.gz.hp")[1:]
    with pytest.raises(IntegrityError, match=r"mixes nodes gd\.gz\.py and gd\.gz\.hp"):
        verify_history(mixed)
