"""PKI mirroring the tree: issuance limits, chain verification, revocation, rotation, files, and real mTLS."""

from __future__ import annotations

import datetime as dt
import re
import stat
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from federation import (
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    sign_message,
    verify_with_resolver,
)
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.report_pb2 import ReportBody
from node.trust import (
    CertificateAuthority,
    CertificateKeyResolver,
    CertificateRole,
    PkiDirectory,
    build_crl,
    certificate_node_id,
    certificate_role,
    chain_der,
    expiry_warnings,
    generate_ec_key,
    is_ancestor,
    load_certificates,
    node_dns_name,
    node_id_from_uri,
    node_uri,
    revoked_serials,
    verify_node_chain,
)
from tests.harness.authorities import child_authority

NOW = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(hours=1)


@dataclass
class Tree:
    """Four levels of CAs: province root, city, district, street; and the street's leaf credentials."""

    root: CertificateAuthority
    city: CertificateAuthority
    district: CertificateAuthority
    street: CertificateAuthority
    tls_key: ec.EllipticCurvePrivateKey
    tls_cert: x509.Certificate
    report_key: Ed25519PrivateKey
    report_cert: x509.Certificate


def _tree(now: dt.datetime = NOW) -> Tree:
    root = CertificateAuthority.create_root("gd", now=now)
    city = child_authority(root, "gd.gz", now=now)
    district = child_authority(city, "gd.gz.py", now=now)
    street = child_authority(district, "gd.gz.py.sq", now=now)
    tls_key = generate_ec_key()
    report_key = Ed25519PrivateKey.generate()
    return Tree(
        root=root,
        city=city,
        district=district,
        street=street,
        tls_key=tls_key,
        tls_cert=district.issue("gd.gz.py.sq", CertificateRole.TLS, tls_key.public_key(), now=now),
        report_key=report_key,
        report_cert=district.issue("gd.gz.py.sq", CertificateRole.REPORT, report_key.public_key(), now=now),
    )


@pytest.fixture(scope="module")
def tree() -> Tree:
    return _tree()


def _report(node_id: str, sequence: int = 1) -> ReportBody:
    return ReportBody(node_id=node_id, sequence=sequence)


def _forge(
    issuer: CertificateAuthority,
    subject_id: str,
    *,
    uris: list[str] | None = None,
    dns: list[str] | None = None,
    ca: bool = False,
    public_key: ec.EllipticCurvePublicKey | None = None,
    not_before: dt.datetime = NOW - dt.timedelta(days=1),
    not_after: dt.datetime = NOW + dt.timedelta(days=30),
) -> x509.Certificate:
    """Sign a certificate with a CA's raw key, bypassing every check of CertificateAuthority.issue."""
    key = public_key or generate_ec_key().public_key()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri) for uri in (uris or [node_uri(subject_id)])]
    names += [x509.DNSName(name) for name in (dns or [])]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{subject_id} forged")]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()), critical=False
        )
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer.private_key, hashes.SHA256())


# --- ids ---------------------------------------------------------------------------------------------------


def test_node_ids_map_to_uris_and_dns_names_and_back() -> None:
    assert node_uri("gd.gz.py") == "supnet://gd/gz/py"
    assert node_id_from_uri("supnet://gd/gz/py") == "gd.gz.py"
    assert node_uri("gd") == "supnet://gd"
    assert node_dns_name("gd.gz.py") == "py.gz.gd.supnet"
    for bad in [
        "https://gd/gz",
        "supnet://",
        "supnet://gd//py",
        "supnet://gd/gz?x=1",
        "supnet://GD/gz",
        "supnet://g.d",
    ]:
        with pytest.raises(InvalidArgumentError):
            node_id_from_uri(bad)
    with pytest.raises(InvalidArgumentError, match="segment 'p_y'"):
        node_uri("gd.gz.p_y")
    assert is_ancestor("gd.gz", "gd.gz.py")
    assert not is_ancestor("gd.gz", "gd.gzx.py")
    assert not is_ancestor("gd.gz", "gd.gz")
    assert is_ancestor("gd.gz", "gd.gz", or_self=True)


# --- happy path --------------------------------------------------------------------------------------------


def test_chain_four_levels_deep_verifies_to_the_leaf_id(tree: Tree) -> None:
    intermediates = [tree.district.certificate, tree.city.certificate]
    assert verify_node_chain(tree.tls_cert, intermediates, tree.root.certificate, LATER) == "gd.gz.py.sq"
    assert (
        verify_node_chain(tree.report_cert, intermediates, tree.root.certificate, LATER, role=CertificateRole.REPORT)
        == "gd.gz.py.sq"
    )
    # The street's own CA (fourth level) verifies too, and intermediates may come in any order.
    street_ca = tree.street.certificate
    assert verify_node_chain(street_ca, intermediates[::-1], tree.root.certificate, LATER) == "gd.gz.py.sq"
    assert certificate_role(tree.tls_cert) is CertificateRole.TLS
    assert certificate_role(tree.report_cert) is CertificateRole.REPORT
    assert certificate_role(street_ca) is CertificateRole.CA
    # The root's own leaf certificates come from the root CA itself.
    own = tree.root.issue("gd", CertificateRole.TLS, generate_ec_key().public_key(), now=NOW)
    assert verify_node_chain(own, [], tree.root.certificate, LATER) == "gd"


def test_role_is_checked_when_asked(tree: Tree) -> None:
    intermediates = [tree.district.certificate, tree.city.certificate]
    with pytest.raises(UnauthenticatedError, match="is a tls certificate, not a report certificate"):
        verify_node_chain(tree.tls_cert, intermediates, tree.root.certificate, LATER, role=CertificateRole.REPORT)


def test_issued_validity_is_clamped_to_the_issuer(tree: Tree) -> None:
    short = child_authority(tree.root, "gd.sz", now=NOW, validity=dt.timedelta(days=10))
    leaf = short.issue("gd.sz.ft", CertificateRole.TLS, generate_ec_key().public_key(), now=NOW)
    assert leaf.not_valid_after_utc == short.certificate.not_valid_after_utc


# --- the subtree rule --------------------------------------------------------------------------------------


def test_city_ca_cannot_issue_for_another_city_at_issuance(tree: Tree) -> None:
    key = generate_ec_key().public_key()
    with pytest.raises(PermissionDeniedError, match="outside its subtree supnet://gd/gz/"):
        tree.city.issue("gd.sz.ft", CertificateRole.TLS, key, now=NOW)
    with pytest.raises(PermissionDeniedError):
        tree.city.issue("gd.sz", CertificateRole.CA, key, now=NOW)
    with pytest.raises(PermissionDeniedError):
        tree.city.issue("gd", CertificateRole.TLS, key, now=NOW)
    # A node may not grant itself a second CA certificate, only leaf certificates.
    with pytest.raises(PermissionDeniedError):
        tree.city.issue("gd.gz", CertificateRole.CA, key, now=NOW)
    assert tree.city.issue("gd.gz", CertificateRole.TLS, key, now=NOW) is not None


def test_forged_cert_for_another_city_is_refused_by_the_name_constraint(tree: Tree) -> None:
    forged = _forge(tree.city, "gd.sz.ft", dns=[node_dns_name("gd.sz.ft")])
    with pytest.raises(UnauthenticatedError, match="does not verify up to root"):
        verify_node_chain(forged, [tree.city.certificate], tree.root.certificate, NOW)


def test_forged_cert_without_dns_name_is_refused_by_the_uri_subtree_check(tree: Tree) -> None:
    # No DNS name: no standard constraint applies, so only our own URI prefix rule can catch it.
    forged = _forge(tree.city, "gd.sz.ft")
    with pytest.raises(
        UnauthenticatedError, match=re.escape("names gd.sz.ft, outside the subtree of its issuer gd.gz")
    ):
        verify_node_chain(forged, [tree.city.certificate], tree.root.certificate, NOW)


def test_forged_intermediate_for_another_city_is_refused(tree: Tree) -> None:
    # A rogue city CA mints a CA "gd.sz" (no DNS name) which then issues a proper-looking leaf under gd.sz.
    rogue_key = generate_ec_key()
    rogue_cert = _forge(tree.city, "gd.sz", ca=True, public_key=rogue_key.public_key())
    rogue = CertificateAuthority("gd.sz", rogue_key, rogue_cert, tree.root.certificate, (tree.city.certificate,))
    leaf = _forge(rogue, "gd.sz.ft")
    with pytest.raises(UnauthenticatedError, match="outside the subtree"):
        verify_node_chain(leaf, [rogue_cert, tree.city.certificate], tree.root.certificate, NOW)


# --- identity, validity, roots -----------------------------------------------------------------------------


def test_two_uri_sans_are_refused(tree: Tree) -> None:
    forged = _forge(tree.city, "gd.gz.py", uris=[node_uri("gd.gz.py"), node_uri("gd.gz.hp")])
    with pytest.raises(UnauthenticatedError, match="exactly one supnet:// node URI, found 2"):
        verify_node_chain(forged, [tree.city.certificate], tree.root.certificate, NOW)
    with pytest.raises(UnauthenticatedError, match="exactly one"):
        certificate_node_id(_forge(tree.city, "gd.gz.py", uris=[node_uri("gd.gz.py"), "https://evil.example/"]))


def test_dns_name_must_match_the_uri(tree: Tree) -> None:
    forged = _forge(tree.city, "gd.gz.py", dns=[node_dns_name("gd.gz.hp")])
    with pytest.raises(UnauthenticatedError, match=re.escape("DNS name hp.gz.gd.supnet")):
        verify_node_chain(forged, [tree.city.certificate], tree.root.certificate, NOW)


def test_expired_leaf_is_refused_naming_it(tree: Tree) -> None:
    intermediates = [tree.district.certificate, tree.city.certificate]
    after_expiry = tree.tls_cert.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(UnauthenticatedError, match=r"gd\.gz\.py\.sq tls \(serial [0-9a-f]+\) expired at"):
        verify_node_chain(tree.tls_cert, intermediates, tree.root.certificate, after_expiry)
    before = tree.tls_cert.not_valid_before_utc - dt.timedelta(seconds=1)
    with pytest.raises(UnauthenticatedError, match="is not valid before"):
        verify_node_chain(tree.tls_cert, intermediates, tree.root.certificate, before)


def test_expired_intermediate_is_refused_naming_it(tree: Tree) -> None:
    short = child_authority(tree.root, "gd.sz", now=NOW, validity=dt.timedelta(days=10))
    # Our issuer clamps a leaf to its CA's end; a leaf signed with the raw key can outlive it.
    leaf = _forge(short, "gd.sz.ft", not_after=NOW + dt.timedelta(days=30))
    between = short.certificate.not_valid_after_utc + dt.timedelta(days=1)
    assert verify_node_chain(leaf, [short.certificate], tree.root.certificate, NOW) == "gd.sz.ft"
    with pytest.raises(UnauthenticatedError, match=r"gd\.sz ca \(serial [0-9a-f]+\) expired at"):
        verify_node_chain(leaf, [short.certificate], tree.root.certificate, between)


def test_naive_time_is_refused(tree: Tree) -> None:
    with pytest.raises(InvalidArgumentError, match="timezone-aware"):
        verify_node_chain(tree.tls_cert, [], tree.root.certificate, NOW.replace(tzinfo=None))


def test_chain_from_another_root_is_refused(tree: Tree) -> None:
    other = _tree()
    intermediates = [other.district.certificate, other.city.certificate]
    with pytest.raises(UnauthenticatedError, match="does not verify up to root"):
        verify_node_chain(other.tls_cert, intermediates, tree.root.certificate, LATER)
    # Nor does mixing: our leaf with their intermediates.
    with pytest.raises(UnauthenticatedError):
        verify_node_chain(tree.tls_cert, intermediates, tree.root.certificate, LATER)
    # A missing intermediate is refused as well.
    with pytest.raises(UnauthenticatedError):
        verify_node_chain(tree.tls_cert, [tree.district.certificate], tree.root.certificate, LATER)


# --- revocation --------------------------------------------------------------------------------------------


def test_revoked_leaf_or_intermediate_is_refused(tree: Tree) -> None:
    intermediates = [tree.district.certificate, tree.city.certificate]
    root = tree.root.certificate
    with pytest.raises(UnauthenticatedError, match=r"gd\.gz\.py\.sq tls .* is revoked"):
        verify_node_chain(tree.tls_cert, intermediates, root, LATER, revoked={tree.tls_cert.serial_number})
    with pytest.raises(UnauthenticatedError, match=r"gd\.gz ca .* is revoked"):
        verify_node_chain(tree.tls_cert, intermediates, root, LATER, revoked={tree.city.certificate.serial_number})
    assert verify_node_chain(tree.tls_cert, intermediates, root, LATER, revoked={12345}) == "gd.gz.py.sq"


def test_crl_lists_revoked_serials_and_is_checked_against_its_issuer(tree: Tree, tmp_path: Path) -> None:
    crl = build_crl(tree.district, [(tree.tls_cert.serial_number, NOW)], now=NOW)
    assert revoked_serials(crl, tree.district.certificate) == {tree.tls_cert.serial_number}
    # A list signed by another CA under the district's name is a forgery.
    forged = x509.CertificateRevocationListBuilder(
        issuer_name=tree.district.certificate.subject, last_update=NOW, next_update=LATER
    ).sign(tree.city.private_key, hashes.SHA256())
    with pytest.raises(IntegrityError, match="signature does not verify"):
        revoked_serials(forged, tree.district.certificate)
    with pytest.raises(IntegrityError, match="is not from"):
        revoked_serials(crl, tree.city.certificate)
    directory = PkiDirectory(tmp_path / "pki")
    directory.save_crl(crl)
    assert revoked_serials(directory.load_crl(), tree.district.certificate) == {tree.tls_cert.serial_number}


# --- report keys from certificate chains -------------------------------------------------------------------


def _envelope(
    tree: Tree, key: Ed25519PrivateKey, cert: x509.Certificate, signer: str = "gd.gz.py.sq", seq: int = 1
) -> SignedEnvelope:
    chain = chain_der(cert, [tree.district.certificate, tree.city.certificate])
    return sign_message(key, signer, _report(signer, seq), chain)


def test_any_ancestor_verifies_a_descendant_report_offline(tree: Tree) -> None:
    envelope = _envelope(tree, tree.report_key, tree.report_cert)
    # Only the root is configured: the province, or the city holding the same root, verifies the street.
    resolver = CertificateKeyResolver(tree.root.certificate, clock=lambda: LATER)
    assert resolver.verify(envelope) == tree.report_key.public_key()
    assert verify_with_resolver(envelope, resolver.for_envelope(envelope)) == tree.report_key.public_key()
    # After one verified chain the resolver also answers by (signer, key id) alone.
    assert resolver.resolve("gd.gz.py.sq", envelope.key_id) == tree.report_key.public_key()
    # A different root refuses it.
    with pytest.raises(UnauthenticatedError):
        CertificateKeyResolver(_tree().root.certificate, clock=lambda: LATER).verify(envelope)


def test_resolver_refuses_chains_that_do_not_fit_the_envelope(tree: Tree) -> None:
    resolver = CertificateKeyResolver(tree.root.certificate, clock=lambda: LATER)
    impostor = _envelope(tree, tree.report_key, tree.report_cert, signer="gd.gz.py.hp")
    with pytest.raises(
        UnauthenticatedError, match=re.escape("signed as gd.gz.py.hp carries a report certificate of gd.gz.py.sq")
    ):
        resolver.verify(impostor)
    other_key = Ed25519PrivateKey.generate()
    wrong_key = _envelope(tree, other_key, tree.report_cert)
    with pytest.raises(UnauthenticatedError, match="its certificate binds key"):
        resolver.verify(wrong_key)
    no_chain = sign_message(tree.report_key, "gd.gz.py.sq", _report("gd.gz.py.sq"))
    with pytest.raises(UnauthenticatedError, match="no certificate chain"):
        resolver.verify(no_chain)
    garbage = sign_message(tree.report_key, "gd.gz.py.sq", _report("gd.gz.py.sq"), [b"not a certificate"])
    with pytest.raises(UnauthenticatedError, match="not valid DER"):
        resolver.verify(garbage)
    # A TLS certificate cannot vouch for a report key.
    tls_chain = chain_der(tree.tls_cert, [tree.district.certificate, tree.city.certificate])
    tls_signed = sign_message(tree.report_key, "gd.gz.py.sq", _report("gd.gz.py.sq"), tls_chain)
    with pytest.raises(UnauthenticatedError, match="not a report certificate"):
        resolver.verify(tls_signed)
    with pytest.raises(UnauthenticatedError, match="no verified report certificate"):
        resolver.resolve("gd.gz.py.hp", b"\x00" * 16)


def test_rotated_keys_old_reports_verify_and_revoked_key_is_refused(tree: Tree) -> None:
    old_key, old_cert = tree.report_key, tree.report_cert
    old_report = _envelope(tree, old_key, old_cert, seq=1)
    # Rotation: a new report key and certificate; the old certificate is simply superseded.
    new_key = Ed25519PrivateKey.generate()
    new_cert = tree.district.issue("gd.gz.py.sq", CertificateRole.REPORT, new_key.public_key(), now=LATER)
    new_report = _envelope(tree, new_key, new_cert, seq=2)
    resolver = CertificateKeyResolver(tree.root.certificate, clock=lambda: LATER)
    resolver.verify(old_report)
    resolver.verify(new_report)
    # Revoking the old certificate: anything (new) signed under it is refused, the rotated key still works.
    resolver.revoke({old_cert.serial_number})
    late_under_old = _envelope(tree, old_key, old_cert, seq=3)
    with pytest.raises(UnauthenticatedError, match="is revoked"):
        resolver.verify(late_under_old)
    with pytest.raises(UnauthenticatedError, match="is revoked"):
        resolver.resolve("gd.gz.py.sq", late_under_old.key_id)
    resolver.verify(_envelope(tree, new_key, new_cert, seq=3))


def test_old_report_verifies_at_its_signing_time_after_its_certificate_expired(tree: Tree) -> None:
    short_key = Ed25519PrivateKey.generate()
    short_cert = tree.district.issue(
        "gd.gz.py.sq", CertificateRole.REPORT, short_key.public_key(), now=NOW, validity=dt.timedelta(days=2)
    )
    report = _envelope(tree, short_key, short_cert)
    much_later = NOW + dt.timedelta(days=40)
    resolver = CertificateKeyResolver(tree.root.certificate, clock=lambda: much_later)
    with pytest.raises(UnauthenticatedError, match="expired"):
        resolver.verify(report)
    assert resolver.verify(report, at=NOW + dt.timedelta(days=1)) == short_key.public_key()


# --- expiry warnings and files -----------------------------------------------------------------------------


def test_expiry_warnings_name_certificates_due_for_renewal(tree: Tree) -> None:
    end = tree.tls_cert.not_valid_after_utc
    assert expiry_warnings([tree.tls_cert, tree.root.certificate], now=NOW) == []
    warnings = expiry_warnings([tree.tls_cert, tree.root.certificate], now=end - dt.timedelta(days=10))
    assert len(warnings) == 1
    assert "gd.gz.py.sq tls" in warnings[0]
    assert "in 10.0 days" in warnings[0]
    assert "expired" in expiry_warnings([tree.tls_cert], now=end + dt.timedelta(days=1))[0]


def test_pki_directory_round_trips_with_private_keys_mode_0600(tree: Tree, tmp_path: Path) -> None:
    directory = PkiDirectory(tmp_path / "pki")
    directory.save_authority(tree.district)
    directory.save_tls(tree.tls_key, [tree.tls_cert, tree.district.certificate, tree.city.certificate])
    directory.save_report(tree.report_key, [tree.report_cert, tree.district.certificate, tree.city.certificate])
    for name in ("ca.key", "tls.key", "report.key"):
        assert stat.S_IMODE((directory.path / name).stat().st_mode) == 0o600
    loaded = directory.load_authority()
    assert loaded.node_id == "gd.gz.py"
    assert loaded.certificate == tree.district.certificate
    assert loaded.intermediates == (tree.city.certificate,)
    assert loaded.root == tree.root.certificate
    # The loaded CA issues certificates that verify.
    issued = loaded.issue("gd.gz.py.dj", CertificateRole.TLS, generate_ec_key().public_key(), now=NOW)
    assert verify_node_chain(issued, loaded.issuer_chain, loaded.root, LATER) == "gd.gz.py.dj"
    tls_key, tls_chain = directory.load_tls()
    assert tls_key.private_numbers() == tree.tls_key.private_numbers()
    assert tls_chain[0] == tree.tls_cert
    # Rotating the report key keeps the replaced certificate under retired/.
    new_key = Ed25519PrivateKey.generate()
    new_cert = tree.district.issue("gd.gz.py.sq", CertificateRole.REPORT, new_key.public_key(), now=LATER)
    directory.save_report(new_key, [new_cert, tree.district.certificate, tree.city.certificate])
    report_key, report_chain = directory.load_report()
    assert report_chain[0] == new_cert
    assert report_key.public_key() == new_key.public_key()
    retired = directory.path / "retired" / f"report-{tree.report_cert.serial_number:x}.pem"
    assert load_certificates(retired)[0] == tree.report_cert
    # The root's own directory loads as a root CA.
    root_dir = PkiDirectory(tmp_path / "root-pki")
    root_dir.save_authority(tree.root)
    assert root_dir.load_authority().is_root


def test_pki_directory_reports_missing_and_mismatched_files(tree: Tree, tmp_path: Path) -> None:
    directory = PkiDirectory(tmp_path / "pki")
    with pytest.raises(NotFoundError, match=re.escape("root.pem does not exist")):
        directory.load_root()
    directory.save_authority(tree.district)
    (directory.path / "ca.key").write_bytes(
        generate_ec_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(IntegrityError, match="does not match"):
        directory.load_authority()
    (directory.path / "root.pem").write_text("garbage")
    with pytest.raises(InvalidArgumentError, match="not valid PEM"):
        directory.load_root()


# --- real mutual TLS ---------------------------------------------------------------------------------------


class _PeerRecordingHealth(health.HealthServicer):
    """The health service, recording the node id that the peer's verified certificate names."""

    def __init__(self, root: x509.Certificate) -> None:
        super().__init__()
        self.root = root
        self.peer_ids: list[str] = []

    def Check(  # noqa: N802 - the generated service's method name
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        # grpc-stubs types the values as bytes; at run time each is a list of bytes.
        auth = cast(Mapping[str, list[bytes]], context.auth_context())
        # Identity comes from the handshake (the peer's URI SAN), never from request metadata; the chain the
        # peer presented is checked again by our verifier for the subtree rule.
        (uri,) = auth["peer_uri"]
        # On the server side "x509_pem_cert_chain" holds the intermediates the client sent, without its leaf.
        leaf = x509.load_pem_x509_certificate(auth["x509_pem_cert"][0])
        intermediates = x509.load_pem_x509_certificates(b"".join(auth["x509_pem_cert_chain"]))
        verified = verify_node_chain(leaf, [c for c in intermediates if c != leaf], self.root, dt.datetime.now(dt.UTC))
        assert verified == node_id_from_uri(uri.decode())
        self.peer_ids.append(verified)
        return super().Check(request, context)


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(certificate.public_bytes(serialization.Encoding.PEM) for certificate in certificates)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_grpc_mutual_tls_with_the_p256_chain_identifies_the_client() -> None:
    now = dt.datetime.now(dt.UTC)  # BoringSSL checks validity against the real clock
    live = _tree(now)
    server_key = generate_ec_key()
    server_cert = live.city.issue("gd.gz.py", CertificateRole.TLS, server_key.public_key(), now=now)
    root_pem = _pem(live.root.certificate)
    servicer = _PeerRecordingHealth(live.root.certificate)
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(_key_pem(server_key), _pem(server_cert, live.city.certificate))],
        root_certificates=root_pem,
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        # The client (the street) presents its TLS chain; it names the server it expects by DNS name.
        options = [("grpc.ssl_target_name_override", node_dns_name("gd.gz.py"))]
        client_credentials = grpc.ssl_channel_credentials(
            root_certificates=root_pem,
            private_key=_key_pem(live.tls_key),
            certificate_chain=_pem(live.tls_cert, live.district.certificate, live.city.certificate),
        )
        with grpc.secure_channel(f"127.0.0.1:{port}", client_credentials, options=options) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert servicer.peer_ids == ["gd.gz.py.sq"]

        # Certificates signed with the city CA's raw key: inside its subtree the handshake succeeds (control),
        # for another city it fails in BoringSSL itself, on the DNS name constraint of the city CA.
        def forged_call(subject_id: str) -> None:
            forged_key = generate_ec_key()
            forged = _forge(
                live.city,
                subject_id,
                dns=[node_dns_name(subject_id)],
                public_key=forged_key.public_key(),
                not_before=now - dt.timedelta(minutes=5),
                not_after=now + dt.timedelta(days=1),
            )
            forged_credentials = grpc.ssl_channel_credentials(
                root_certificates=root_pem,
                private_key=_key_pem(forged_key),
                certificate_chain=_pem(forged, live.city.certificate),
            )
            with grpc.secure_channel(f"127.0.0.1:{port}", forged_credentials, options=options) as channel:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)

        forged_call("gd.gz.hp")
        assert servicer.peer_ids == ["gd.gz.py.sq", "gd.gz.hp"]
        with pytest.raises(grpc.RpcError) as refused:
            forged_call("gd.sz.ft")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert servicer.peer_ids == ["gd.gz.py.sq", "gd.gz.hp"]
    finally:
        server.stop(grace=None)
