"""Ed25519 signed envelopes: round trips, tampering, wrong keys, key files and resolvers."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import pytest

from federation import (
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    StaticKeyResolver,
    UnauthenticatedError,
    canonical_bytes,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    public_key_b64,
    public_key_from_b64,
    raw_public_key,
    save_private_key,
    save_public_key,
    serialize,
    sign_envelope,
    sign_message,
    verify_envelope,
    verify_with_resolver,
)
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import Bucket, ReportBody, ReportKind


def _report() -> ReportBody:
    body = ReportBody(
        node_id="gd.gz.py", sequence=1, created_at_ms=1_700_000_000_000, kind=ReportKind.REPORT_KIND_INCREMENTAL
    )
    body.buckets.append(Bucket(day="2024-03-01", basic_code="000123", item_type_code="01"))
    body.buckets[0].counters.received = 7
    return body


def test_sign_and_verify_round_trip() -> None:
    private_key, public_key = generate_keypair()
    envelope = sign_message(private_key, "gd.gz.py", _report())

    assert envelope.signer_id == "gd.gz.py"
    assert envelope.body_type == "federation.proto.v1.ReportBody"
    assert envelope.body == serialize(_report())
    assert envelope.key_id == hashlib.sha256(raw_public_key(public_key)).digest()[:16]
    verify_envelope(envelope, public_key)

    # The envelope survives the wire: serialize, parse, verify again.
    received = SignedEnvelope.FromString(envelope.SerializeToString())
    verify_envelope(received, public_key)


def test_signature_covers_domain_prefix_and_body_type() -> None:
    private_key, public_key = generate_keypair()
    body = serialize(_report())
    envelope = sign_envelope(private_key, "gd.gz.py", "federation.proto.v1.ReportBody", body)
    assert canonical_bytes("federation.proto.v1.ReportBody", body) == (
        b"supnet/v1/federation.proto.v1.ReportBody\x00" + body
    )
    public_key.verify(envelope.signature, b"supnet/v1/federation.proto.v1.ReportBody\x00" + body)

    # The same bytes relabelled as another message kind must not verify.
    relabelled = SignedEnvelope()
    relabelled.CopyFrom(envelope)
    relabelled.body_type = "federation.proto.v1.QueryAnswer"
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_envelope(relabelled, public_key)


def test_tampered_body_is_rejected() -> None:
    private_key, public_key = generate_keypair()
    envelope = sign_message(private_key, "gd.gz.py", _report())
    forged = _report()
    forged.buckets[0].counters.received = 8
    envelope.body = serialize(forged)
    with pytest.raises(IntegrityError, match=r"ReportBody signed by gd\.gz\.py: signature does not verify"):
        verify_envelope(envelope, public_key)


def test_flipped_bit_in_body_is_rejected() -> None:
    private_key, public_key = generate_keypair()
    envelope = sign_message(private_key, "gd.gz.py", _report())
    body = bytearray(envelope.body)
    body[-1] ^= 0x01
    envelope.body = bytes(body)
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_envelope(envelope, public_key)


def test_swapped_signature_is_rejected() -> None:
    private_key, public_key = generate_keypair()
    first = sign_message(private_key, "gd.gz.py", _report())
    other_body = _report()
    other_body.sequence = 2
    second = sign_message(private_key, "gd.gz.py", other_body)
    first.signature = second.signature
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_envelope(first, public_key)


def test_wrong_key_is_rejected_by_key_id_and_by_signature() -> None:
    private_key, _ = generate_keypair()
    _, stranger_key = generate_keypair()
    envelope = sign_message(private_key, "gd.gz.py", _report())
    with pytest.raises(IntegrityError, match=r"key_id [0-9a-f]{32} does not match the verifying key"):
        verify_envelope(envelope, stranger_key)

    # Even when the key_id is forged to name the verifying key, the signature itself fails.
    envelope.key_id = key_id(stranger_key)
    with pytest.raises(IntegrityError, match="signature does not verify"):
        verify_envelope(envelope, stranger_key)


def test_malformed_envelopes_are_rejected_with_the_reason() -> None:
    private_key, public_key = generate_keypair()
    envelope = sign_message(private_key, "gd.gz.py", _report())
    truncated = SignedEnvelope()
    truncated.CopyFrom(envelope)
    truncated.signature = truncated.signature[:63]
    with pytest.raises(IntegrityError, match="signature must be 64 bytes, got 63"):
        verify_envelope(truncated, public_key)
    anonymous = SignedEnvelope()
    anonymous.CopyFrom(envelope)
    anonymous.signer_id = ""
    with pytest.raises(IntegrityError, match="signer_id is empty"):
        verify_envelope(anonymous, public_key)
    with pytest.raises(InvalidArgumentError, match="signer_id must not be empty"):
        sign_message(private_key, "", _report())


def test_private_key_file_round_trip_is_owner_only(tmp_path: Path) -> None:
    private_key, public_key = generate_keypair()
    path = tmp_path / "keys" / "node.key"
    save_private_key(path, private_key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_private_key(path)
    assert raw_public_key(loaded.public_key()) == raw_public_key(public_key)

    # Overwriting a file that was world-readable tightens its mode too.
    path.chmod(0o644)
    save_private_key(path, private_key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_public_key_files_pem_and_base64(tmp_path: Path) -> None:
    _, public_key = generate_keypair()
    pem_path = tmp_path / "node.pub"
    save_public_key(pem_path, public_key)
    assert raw_public_key(load_public_key(pem_path)) == raw_public_key(public_key)
    b64_path = tmp_path / "node.pub.b64"
    b64_path.write_text(public_key_b64(public_key) + "\n", encoding="ascii")
    assert raw_public_key(load_public_key(b64_path)) == raw_public_key(public_key)


def test_bad_key_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"missing\.key does not exist"):
        load_private_key(tmp_path / "missing.key")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key", encoding="ascii")
    with pytest.raises(InvalidArgumentError, match=r"garbage\.key is not an unencrypted PEM key"):
        load_private_key(garbage)
    with pytest.raises(InvalidArgumentError, match=r"garbage\.key is neither PEM nor base64"):
        load_public_key(garbage)


def test_public_key_base64_round_trip_and_errors() -> None:
    _, public_key = generate_keypair()
    text = public_key_b64(public_key)
    assert len(base64.b64decode(text)) == 32
    assert raw_public_key(public_key_from_b64(text)) == raw_public_key(public_key)
    with pytest.raises(InvalidArgumentError, match="not valid base64"):
        public_key_from_b64("@@@")
    with pytest.raises(InvalidArgumentError, match="must be 32 raw bytes, got 3"):
        public_key_from_b64(base64.b64encode(b"abc").decode())


def test_static_resolver_verifies_registered_signers_only() -> None:
    child_private, child_public = generate_keypair()
    rotated_private, rotated_public = generate_keypair()
    resolver = StaticKeyResolver({"gd.gz.py": [child_public, rotated_public]})

    for key in (child_private, rotated_private):
        envelope = sign_message(key, "gd.gz.py", _report())
        used = verify_with_resolver(envelope, resolver)
        assert raw_public_key(used) == raw_public_key(key.public_key())

    stranger = sign_message(child_private, "gd.gz.hp", _report())
    with pytest.raises(UnauthenticatedError, match=r"no public key is known for signer gd\.gz\.hp"):
        verify_with_resolver(stranger, resolver)

    impostor_private, _ = generate_keypair()
    impostor = sign_message(impostor_private, "gd.gz.py", _report())
    with pytest.raises(UnauthenticatedError, match=r"signer gd\.gz\.py has no known key with key_id"):
        verify_with_resolver(impostor, resolver)

    # An impostor who copies a registered key_id still fails the signature check.
    impostor.key_id = key_id(child_public)
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_with_resolver(impostor, resolver)


def test_static_resolver_from_config_strings() -> None:
    private_key, public_key = generate_keypair()
    resolver = StaticKeyResolver.from_b64({"gd.gz.py": public_key_b64(public_key), "gd.gz.hp": ""})
    assert resolver.signers() == ["gd.gz.py"]
    verify_with_resolver(sign_message(private_key, "gd.gz.py", _report()), resolver)
    with pytest.raises(InvalidArgumentError, match=r"public key of gd\.gz\.th: public key is not valid base64"):
        StaticKeyResolver.from_b64({"gd.gz.th": "%%%"})
