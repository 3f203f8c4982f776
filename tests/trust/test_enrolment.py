"""Enrolment: one-time tokens (single use, expiry, right child), CSR proof of possession, token stores."""

from __future__ import annotations

import datetime as dt
import json
import re
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from federation import InvalidArgumentError, PermissionDeniedError, UnauthenticatedError, sign_message
from federation.proto.v1.report_pb2 import ReportBody
from node.trust import (
    TOKEN_PREFIX,
    CertificateAuthority,
    CertificateKeyResolver,
    CertificateRole,
    EnrolmentAuthority,
    EnrolmentRequest,
    JsonFileTokenStore,
    MemoryTokenStore,
    TokenRecord,
    TokenStore,
    build_enrolment_request,
    chain_der,
    check_issued,
    generate_ec_key,
    hash_token,
    node_uri,
    verify_node_chain,
)
from tests.harness.authorities import child_authority
from tests.harness.clocks import Clock

NOW = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def province() -> CertificateAuthority:
    return CertificateAuthority.create_root("gd", now=NOW)


@pytest.fixture(scope="module")
def city(province: CertificateAuthority) -> CertificateAuthority:
    return child_authority(province, "gd.gz", now=NOW)


class ChildKeys:
    """The keys a child generates before enrolling."""

    def __init__(self) -> None:
        self.tls = generate_ec_key()
        self.report = Ed25519PrivateKey.generate()
        self.ca = generate_ec_key()

    def request(self, child_id: str, *, with_ca: bool = True) -> EnrolmentRequest:
        return build_enrolment_request(child_id, self.tls, self.report, self.ca if with_ca else None)


def _authority(city: CertificateAuthority, store: TokenStore | None = None) -> tuple[EnrolmentAuthority, Clock]:
    clock = Clock(NOW)
    return EnrolmentAuthority(city, store or MemoryTokenStore(), clock=clock), clock


def test_enrolment_issues_certificates_that_verify_and_work(city: CertificateAuthority) -> None:
    authority, clock = _authority(city)
    token, record = authority.issue_token("gd.gz.py")
    assert token.startswith(TOKEN_PREFIX)
    assert record.token_hash == hash_token(token)
    assert token not in json.dumps(record.to_dict())  # only the hash is kept
    keys = ChildKeys()
    clock.now = NOW + dt.timedelta(minutes=5)
    issued = authority.redeem(token, "gd.gz.py", keys.request("gd.gz.py"))
    check_issued(
        issued,
        "gd.gz.py",
        tls_key=keys.tls,
        report_key=keys.report,
        ca_key=keys.ca,
        trusted_root=city.root,
        at=clock.now,
    )
    root = issued.root
    assert verify_node_chain(issued.tls_certificate, issued.issuer_chain, root, clock.now) == "gd.gz.py"
    assert issued.ca_certificate is not None
    assert issued.serials() == [
        issued.tls_certificate.serial_number,
        issued.report_certificate.serial_number,
        issued.ca_certificate.serial_number,
    ]
    # The child's CA issues for its own children; the province verifies a grandchild's report offline.
    district = issued.authority(keys.ca)
    street_key = Ed25519PrivateKey.generate()
    street_cert = district.issue("gd.gz.py.sq", CertificateRole.REPORT, street_key.public_key(), now=clock.now)
    envelope = sign_message(
        street_key,
        "gd.gz.py.sq",
        ReportBody(node_id="gd.gz.py.sq", sequence=1),
        chain_der(street_cert, district.issuer_chain),
    )
    resolver = CertificateKeyResolver(root, clock=lambda: clock.now)
    assert resolver.verify(envelope) == street_key.public_key()
    # And it still cannot issue outside its subtree.
    with pytest.raises(PermissionDeniedError):
        district.issue("gd.gz.hp", CertificateRole.TLS, generate_ec_key().public_key(), now=clock.now)


def test_leaf_child_may_enrol_without_a_ca(city: CertificateAuthority) -> None:
    authority, _ = _authority(city)
    token, _ = authority.issue_token("gd.gz.hp")
    keys = ChildKeys()
    issued = authority.redeem(token, "gd.gz.hp", keys.request("gd.gz.hp", with_ca=False))
    assert issued.ca_certificate is None
    with pytest.raises(InvalidArgumentError, match="no CA certificate"):
        issued.authority(keys.ca)
    with pytest.raises(UnauthenticatedError, match="lacks the CA certificate"):
        check_issued(issued, "gd.gz.hp", tls_key=keys.tls, report_key=keys.report, ca_key=keys.ca, at=NOW)


def test_token_is_single_use(city: CertificateAuthority) -> None:
    authority, _ = _authority(city)
    token, _ = authority.issue_token("gd.gz.py")
    authority.redeem(token, "gd.gz.py", ChildKeys().request("gd.gz.py"))
    with pytest.raises(UnauthenticatedError, match="already used at"):
        authority.redeem(token, "gd.gz.py", ChildKeys().request("gd.gz.py"))


def test_concurrent_redemptions_let_exactly_one_win(city: CertificateAuthority) -> None:
    authority, _ = _authority(city)
    token, _ = authority.issue_token("gd.gz.py")
    requests = [ChildKeys().request("gd.gz.py", with_ca=False) for _ in range(6)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(requests))

    def redeem(request: EnrolmentRequest) -> None:
        barrier.wait()
        try:
            authority.redeem(token, "gd.gz.py", request)
            outcomes.append("issued")
        except UnauthenticatedError:
            outcomes.append("refused")

    threads = [threading.Thread(target=redeem, args=(request,)) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["issued"] + ["refused"] * (len(requests) - 1)


def test_token_expires(city: CertificateAuthority) -> None:
    authority, clock = _authority(city)
    token, record = authority.issue_token("gd.gz.py", ttl=dt.timedelta(hours=1))
    clock.now = record.expires_at
    with pytest.raises(UnauthenticatedError, match="expired at"):
        authority.redeem(token, "gd.gz.py", ChildKeys().request("gd.gz.py"))
    with pytest.raises(InvalidArgumentError, match="positive"):
        authority.issue_token("gd.gz.py", ttl=dt.timedelta(0))


def test_token_is_for_one_child_only(city: CertificateAuthority) -> None:
    authority, _ = _authority(city)
    token, _ = authority.issue_token("gd.gz.py")
    with pytest.raises(PermissionDeniedError, match=re.escape("issued for gd.gz.py, not gd.gz.hp")):
        authority.redeem(token, "gd.gz.hp", ChildKeys().request("gd.gz.hp"))
    # The refusal did not use the token up: the right child still enrols.
    authority.redeem(token, "gd.gz.py", ChildKeys().request("gd.gz.py"))


def test_unknown_and_foreign_tokens_are_refused(city: CertificateAuthority) -> None:
    authority, _ = _authority(city)
    with pytest.raises(UnauthenticatedError, match="not one this node issued"):
        authority.redeem(TOKEN_PREFIX + "made-up", "gd.gz.py", ChildKeys().request("gd.gz.py"))
    with pytest.raises(UnauthenticatedError, match="not one this node issued"):
        authority.redeem("", "gd.gz.py", ChildKeys().request("gd.gz.py"))
    # A token another CA issued, found in the same store, does not work at the city.
    shared = MemoryTokenStore()
    foreign_token = TOKEN_PREFIX + "issued-elsewhere"
    shared.add(
        TokenRecord(
            token_hash=hash_token(foreign_token),
            child_id="gd.gz.py",
            issuer_id="gd.sz",
            created_at=NOW,
            expires_at=NOW + dt.timedelta(hours=1),
        )
    )
    with pytest.raises(UnauthenticatedError, match="not one this node issued"):
        EnrolmentAuthority(city, shared, clock=lambda: NOW).redeem(
            foreign_token, "gd.gz.py", ChildKeys().request("gd.gz.py")
        )


def test_only_direct_children_get_tokens(city: CertificateAuthority) -> None:
    authority, _ = _authority(city)
    for not_a_child in ("gd.gz.py.sq", "gd.sz.ft", "gd.gz", "gd"):
        with pytest.raises(PermissionDeniedError, match="direct children"):
            authority.issue_token(not_a_child)
    with pytest.raises(InvalidArgumentError, match="segment"):
        authority.issue_token("gd.gz.P_Y")


def _tamper(csr_der: bytes) -> bytes:
    """Flip one byte inside the CSR's signature (the last bytes of the DER)."""
    return csr_der[:-3] + bytes([csr_der[-3] ^ 0x01]) + csr_der[-2:]


def test_csr_without_proof_of_possession_is_refused_and_token_survives(city: CertificateAuthority) -> None:
    authority, _ = _authority(city)
    token, _ = authority.issue_token("gd.gz.py")
    good = ChildKeys().request("gd.gz.py")
    bad_requests: list[tuple[EnrolmentRequest, str]] = [
        (EnrolmentRequest(tls_csr=_tamper(good.tls_csr), report_csr=good.report_csr), "tls_csr signature"),
        (EnrolmentRequest(tls_csr=good.tls_csr, report_csr=_tamper(good.report_csr)), "report_csr signature"),
        (EnrolmentRequest(tls_csr=good.tls_csr, report_csr=b"junk"), "report_csr is not a DER CSR"),
        (EnrolmentRequest(tls_csr=b"", report_csr=good.report_csr), "tls_csr is empty"),
        # Keys in the wrong places: an Ed25519 TLS key, an ECDSA report key.
        (EnrolmentRequest(tls_csr=good.report_csr, report_csr=good.tls_csr), "not ECDSA P-256"),
        # The same key for CA and TLS.
        (EnrolmentRequest(tls_csr=good.tls_csr, report_csr=good.report_csr, ca_csr=good.tls_csr), "must differ"),
    ]
    for request, reason in bad_requests:
        with pytest.raises(InvalidArgumentError, match=reason):
            authority.redeem(token, "gd.gz.py", request)
    authority.redeem(token, "gd.gz.py", good)


def _csr_with_names(key: ec.EllipticCurvePrivateKey, names: list[x509.GeneralName]) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_csr_naming_another_node_or_nothing_is_refused(city: CertificateAuthority) -> None:
    authority, _ = _authority(city)
    token, _ = authority.issue_token("gd.gz.py")
    keys = ChildKeys()
    report_csr = keys.request("gd.gz.py").report_csr
    other = _csr_with_names(keys.tls, [x509.UniformResourceIdentifier(node_uri("gd.gz.hp"))])
    with pytest.raises(PermissionDeniedError, match=re.escape("tls_csr asks for node gd.gz.hp")):
        authority.redeem(token, "gd.gz.py", EnrolmentRequest(tls_csr=other, report_csr=report_csr))
    nameless = _csr_with_names(keys.tls, [])
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        authority.redeem(token, "gd.gz.py", EnrolmentRequest(tls_csr=nameless, report_csr=report_csr))
    two = _csr_with_names(
        keys.tls,
        [x509.UniformResourceIdentifier(node_uri("gd.gz.py")), x509.UniformResourceIdentifier(node_uri("gd.gz.hp"))],
    )
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        authority.redeem(token, "gd.gz.py", EnrolmentRequest(tls_csr=two, report_csr=report_csr))


def test_child_refuses_an_answer_that_does_not_bind_its_keys(city: CertificateAuthority) -> None:
    authority, _ = _authority(city)
    token, _ = authority.issue_token("gd.gz.py")
    keys = ChildKeys()
    issued = authority.redeem(token, "gd.gz.py", keys.request("gd.gz.py"))
    with pytest.raises(
        UnauthenticatedError, match=re.escape("TLS certificate issued to gd.gz.py does not bind its key")
    ):
        check_issued(issued, "gd.gz.py", tls_key=generate_ec_key(), report_key=keys.report, at=NOW)
    stranger_root = CertificateAuthority.create_root("gd", now=NOW).certificate
    with pytest.raises(UnauthenticatedError, match="another root"):
        check_issued(issued, "gd.gz.py", tls_key=keys.tls, report_key=keys.report, trusted_root=stranger_root, at=NOW)
    with pytest.raises(UnauthenticatedError, match=re.escape("is for gd.gz.py, not gd.gz.hp")):
        check_issued(issued, "gd.gz.hp", tls_key=keys.tls, report_key=keys.report, at=NOW)


# --- stores ------------------------------------------------------------------------------------------------


StoreFactory = Callable[[Path], TokenStore]
STORES: dict[str, StoreFactory] = {
    "memory": lambda _: MemoryTokenStore(),
    "json": lambda path: JsonFileTokenStore(path / "tokens.json"),
}


@pytest.mark.parametrize("kind", sorted(STORES))
def test_store_contract(kind: str, tmp_path: Path) -> None:
    store = STORES[kind](tmp_path)
    record = TokenRecord(
        token_hash="ab" * 32,
        child_id="gd.gz.py",
        issuer_id="gd.gz",
        created_at=NOW,
        expires_at=NOW + dt.timedelta(hours=1),
    )
    assert store.get(record.token_hash) is None
    store.add(record)
    with pytest.raises(InvalidArgumentError, match="already stored"):
        store.add(record)
    assert store.get(record.token_hash) == record
    assert store.mark_used(record.token_hash, NOW) is True
    assert store.mark_used(record.token_hash, NOW) is False
    assert store.mark_used("cd" * 32, NOW) is False
    used = store.get(record.token_hash)
    assert used is not None
    assert used.used_at == NOW
    assert [r.token_hash for r in store.records()] == [record.token_hash]


def test_json_store_persists_privately_and_locks_across_instances(tmp_path: Path, city: CertificateAuthority) -> None:
    path = tmp_path / "pki" / "tokens.json"
    # The CLI process issues the token ...
    token, record = EnrolmentAuthority(city, JsonFileTokenStore(path), clock=lambda: NOW).issue_token("gd.gz.py")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert record.token_hash in path.read_text()
    assert token not in path.read_text()
    # ... many server threads, each with its own store object on the same file, race to use it once.
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def mark() -> None:
        barrier.wait()
        results.append(JsonFileTokenStore(path).mark_used(record.token_hash, NOW))

    threads = [threading.Thread(target=mark) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    reloaded = JsonFileTokenStore(path).get(record.token_hash)
    assert reloaded is not None
    assert reloaded.used_at == NOW


def test_json_store_reports_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("{not json")
    with pytest.raises(InvalidArgumentError, match="not valid JSON"):
        JsonFileTokenStore(path).records()
    path.write_text(json.dumps({"version": 1, "tokens": [{"token_hash": "ab", "child_id": "gd.gz.py"}]}))
    with pytest.raises(InvalidArgumentError, match="record 0: token record lacks field issuer_id"):
        JsonFileTokenStore(path).records()
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(InvalidArgumentError, match="not a version 1 store"):
        JsonFileTokenStore(path).records()
