"""Enrolment over the network: discovery tokens, HMAC request proofs, and the parent's checks (no token on the wire)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import InvalidArgumentError, PermissionDeniedError, UnauthenticatedError
from node.trust import (
    TOKEN_PREFIX,
    CertificateAuthority,
    EnrolmentAuthority,
    EnrolmentKeys,
    EnrolmentRequest,
    MemoryTokenStore,
    build_enrolment_request,
    check_discovery_root,
    discovery_token,
    enrolment_proof,
    enrolment_request_bytes,
    generate_ec_key,
    hash_token,
    issued_from_response,
    parse_discovery_token,
    proof_key,
    request_from_message,
    request_message,
    root_fingerprint,
    token_id,
)
from node.trust import response_message as to_response
from tests.harness.authorities import child_authority
from tests.harness.clocks import Clock

NOW = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def city() -> CertificateAuthority:
    return child_authority(CertificateAuthority.create_root("gd", now=NOW), "gd.gz", now=NOW)


def _parent(city: CertificateAuthority) -> tuple[EnrolmentAuthority, Clock, MemoryTokenStore]:
    clock, store = Clock(NOW), MemoryTokenStore()
    return EnrolmentAuthority(city, store, clock=clock), clock, store


def _proved(token: str, child_id: str, keys: EnrolmentKeys) -> tuple[str, EnrolmentRequest, str, bytes]:
    discovered = parse_discovery_token(token)
    request = build_enrolment_request(child_id, keys.tls, keys.report, keys.ca)
    proved = request_from_message(request_message(child_id, request, discovered))
    return proved.child_id, proved.request, proved.token_id, proved.proof


def test_discovery_token_carries_the_root_fingerprint_and_parses_back(city: CertificateAuthority) -> None:
    parent, _, _ = _parent(city)
    token, _ = parent.issue_token("gd.gz.py")
    text = discovery_token(token, city.root)
    assert text == f"{token}.{root_fingerprint(city.root)}"
    parsed = parse_discovery_token(f"  {text}\n")
    assert (parsed.token, parsed.root_fingerprint) == (token, root_fingerprint(city.root))
    # Neither repr nor the id reveals the secret or the stored hash (the HMAC key).
    assert token not in repr(parsed)
    assert hash_token(token) not in token_id(hash_token(token))
    assert token_id(hash_token(token)) != hash_token(token)
    for bad, why in [
        (token, "must look like"),
        (f"nonsense.{root_fingerprint(city.root)}", "must look like"),
        (f"{TOKEN_PREFIX}.{root_fingerprint(city.root)}", "must look like"),
        (f"{token}.abc", "64 hex digits"),
        (f"{token}.{'z' * 64}", "64 hex digits"),
    ]:
        with pytest.raises(InvalidArgumentError, match=why) as caught:
            parse_discovery_token(bad)
        assert token not in caught.value.message


def test_proof_covers_child_id_every_csr_and_the_token_id() -> None:
    keys = EnrolmentKeys.generate()
    request = build_enrolment_request("gd.gz.py", keys.tls, keys.report, keys.ca)
    key = proof_key("supnet-enrol-secret")
    proof = enrolment_proof(key, "gd.gz.py", request, "id1")
    assert proof == enrolment_proof(bytes.fromhex(hash_token("supnet-enrol-secret")), "gd.gz.py", request, "id1")
    other = build_enrolment_request("gd.gz.py", generate_ec_key(), Ed25519PrivateKey.generate(), generate_ec_key())
    variants = [
        ("gd.gz.hp", request, "id1"),
        ("gd.gz.py", dataclasses.replace(request, tls_csr=other.tls_csr), "id1"),
        ("gd.gz.py", dataclasses.replace(request, report_csr=other.report_csr), "id1"),
        ("gd.gz.py", dataclasses.replace(request, ca_csr=other.ca_csr), "id1"),
        ("gd.gz.py", dataclasses.replace(request, ca_csr=None), "id1"),
        ("gd.gz.py", request, "id2"),
    ]
    for child_id, changed, request_token_id in variants:
        assert enrolment_proof(key, child_id, changed, request_token_id) != proof
    # Length prefixes: moving bytes between adjacent fields changes the canonical bytes.
    shifted = dataclasses.replace(
        request, tls_csr=request.tls_csr + request.report_csr[:1], report_csr=request.report_csr[1:]
    )
    assert enrolment_request_bytes("gd.gz.py", shifted, "id1") != enrolment_request_bytes("gd.gz.py", request, "id1")


def test_redeem_proof_issues_and_burns_the_token(city: CertificateAuthority) -> None:
    parent, _, store = _parent(city)
    token, record = parent.issue_token("gd.gz.py")
    keys = EnrolmentKeys.generate()
    child_id, request, request_token_id, proof = _proved(discovery_token(token, city.root), "gd.gz.py", keys)
    issued = parent.redeem_proof(child_id, request, request_token_id, proof)
    assert issued.tls_certificate.public_key() == keys.tls.public_key()
    stored = store.get(record.token_hash)
    assert stored is not None and stored.used_at == NOW
    # The wire answer parses back to the same certificates.
    again = issued_from_response("gd.gz.py", to_response(issued))
    assert again == issued
    with pytest.raises(UnauthenticatedError, match="already used"):
        parent.redeem_proof(child_id, request, request_token_id, proof)


def test_tampered_proof_or_request_is_refused_and_the_token_survives(city: CertificateAuthority) -> None:
    parent, _, store = _parent(city)
    token, record = parent.issue_token("gd.gz.py")
    keys = EnrolmentKeys.generate()
    child_id, request, request_token_id, proof = _proved(discovery_token(token, city.root), "gd.gz.py", keys)
    flipped = bytes([proof[0] ^ 1]) + proof[1:]
    with pytest.raises(UnauthenticatedError, match="proof does not verify"):
        parent.redeem_proof(child_id, request, request_token_id, flipped)
    # A man in the middle swapping in his own TLS key cannot re-prove the request.
    mitm = build_enrolment_request("gd.gz.py", generate_ec_key(), keys.report, keys.ca)
    swapped = dataclasses.replace(request, tls_csr=mitm.tls_csr)
    with pytest.raises(UnauthenticatedError, match="proof does not verify"):
        parent.redeem_proof(child_id, swapped, request_token_id, proof)
    stored = store.get(record.token_hash)
    assert stored is not None and stored.used_at is None
    parent.redeem_proof(child_id, request, request_token_id, proof)


def test_unknown_expired_and_other_childs_tokens_are_refused(city: CertificateAuthority) -> None:
    parent, clock, store = _parent(city)
    keys = EnrolmentKeys.generate()
    stranger = f"{TOKEN_PREFIX}never-issued.{root_fingerprint(city.root)}"
    with pytest.raises(UnauthenticatedError, match="not one this node issued"):
        parent.redeem_proof(*_proved(stranger, "gd.gz.py", keys))
    token, _ = parent.issue_token("gd.gz.py", dt.timedelta(hours=1))
    text = discovery_token(token, city.root)
    with pytest.raises(PermissionDeniedError, match=r"issued for gd\.gz\.py, not gd\.gz\.hp"):
        parent.redeem_proof(*_proved(text, "gd.gz.hp", keys))
    clock.now = NOW + dt.timedelta(hours=2)
    with pytest.raises(UnauthenticatedError, match="expired"):
        parent.redeem_proof(*_proved(text, "gd.gz.py", keys))
    assert all(record.used_at is None for record in store.records())
    with pytest.raises(PermissionDeniedError, match="direct children"):
        parent.redeem_proof(*_proved(text, "gd.gz.py.sq", keys))


def test_in_process_redeem_accepts_a_discovery_token_of_its_own_root_only(city: CertificateAuthority) -> None:
    parent, _, _ = _parent(city)
    token, _ = parent.issue_token("gd.gz.py")
    keys = EnrolmentKeys.generate()
    request = build_enrolment_request("gd.gz.py", keys.tls, keys.report, keys.ca)
    with pytest.raises(UnauthenticatedError, match="the token expects root"):
        parent.redeem(f"{token}.{'0' * 64}", "gd.gz.py", request)
    assert parent.redeem(discovery_token(token, city.root), "gd.gz.py", request).child_id == "gd.gz.py"


def test_child_refuses_a_root_other_than_the_tokens(city: CertificateAuthority) -> None:
    other = CertificateAuthority.create_root("gd", now=NOW)
    check_discovery_root(city.root, root_fingerprint(city.root))
    with pytest.raises(UnauthenticatedError, match="man in the middle"):
        check_discovery_root(other.root, root_fingerprint(city.root))
