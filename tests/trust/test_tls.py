"""Ingest certificates, own-credential checks and the revocation list of node.trust.tls (no network)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation import InvalidArgumentError, PermissionDeniedError, UnauthenticatedError
from node.trust import (
    INGEST_CLIENT_EKU,
    CertificateAuthority,
    CertificateRole,
    IssuedRegistry,
    NodeTrust,
    build_crl,
    certificate_role,
    check_own_credentials,
    generate_ec_key,
    load_certificate,
    provision_ingest_credential,
    provision_tree,
    tree_is_provisioned,
    verify_node_chain,
)
from tests.harness.authorities import child_authority

NOW = dt.datetime.now(dt.UTC)


def test_an_ingest_certificate_is_a_client_certificate_of_its_own_kind() -> None:
    root = CertificateAuthority.create_root("gd", now=NOW)
    city = child_authority(root, "gd.gz", now=NOW)
    key = generate_ec_key()
    ingest = city.issue("gd.gz", CertificateRole.INGEST, key.public_key(), now=NOW, system="approvals-1")
    assert certificate_role(ingest) is CertificateRole.INGEST
    usages = set(ingest.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == {ExtendedKeyUsageOID.CLIENT_AUTH, INGEST_CLIENT_EKU}  # never server authentication
    assert ingest.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gd.gz ingest approvals-1"
    assert verify_node_chain(ingest, [city.certificate], root.certificate, NOW) == "gd.gz"
    tls = city.issue("gd.gz", CertificateRole.TLS, key.public_key(), now=NOW)
    assert certificate_role(tls) is CertificateRole.TLS  # a node's TLS certificate is no ingest credential
    with pytest.raises(InvalidArgumentError, match="system name"):
        city.issue("gd.gz", CertificateRole.INGEST, key.public_key(), now=NOW, system="bad name!")
    with pytest.raises(InvalidArgumentError, match="only an ingest certificate names a system"):
        city.issue("gd.gz", CertificateRole.TLS, key.public_key(), now=NOW, system="erp")
    with pytest.raises(PermissionDeniedError, match="outside its subtree"):
        city.issue("gd.sz", CertificateRole.INGEST, key.public_key(), now=NOW, system="erp")


def test_own_credentials_are_checked_before_use(tmp_path: Path) -> None:
    provisioned = provision_tree({"gd": tmp_path / "gd", "gd.gz": tmp_path / "gz"})
    assert tree_is_provisioned({"gd": tmp_path / "gd", "gd.gz": tmp_path / "gz"})
    pki = provisioned["gd.gz"].pki
    own = check_own_credentials(pki.file("tls.key"), pki.file("tls.pem"), pki.file("root.pem"))
    assert (own.node_id, own.role) == ("gd.gz", CertificateRole.TLS)
    with pytest.raises(UnauthenticatedError, match=r"no usable TLS credentials: .*nothing\.pem does not exist"):
        check_own_credentials(pki.file("tls.key"), tmp_path / "nothing.pem", pki.file("root.pem"))
    other = provisioned["gd"].pki
    with pytest.raises(UnauthenticatedError, match="does not hold the key"):
        check_own_credentials(other.file("tls.key"), pki.file("tls.pem"), pki.file("root.pem"))
    with pytest.raises(UnauthenticatedError, match="is a tls certificate; needed here: ingest"):
        check_own_credentials(
            pki.file("tls.key"), pki.file("tls.pem"), pki.file("root.pem"), roles=[CertificateRole.INGEST]
        )
    key, chain = provision_ingest_credential(pki, "erp")
    ingest = check_own_credentials(key, chain, pki.file("root.pem"), roles=[CertificateRole.INGEST])
    assert (ingest.node_id, ingest.role) == ("gd.gz", CertificateRole.INGEST)
    later = NOW + dt.timedelta(days=400)  # leaf certificates live 365 days
    with pytest.raises(UnauthenticatedError, match=r"expired at .*supnet keys rotate --tls"):
        check_own_credentials(pki.file("tls.key"), pki.file("tls.pem"), pki.file("root.pem"), now=later)


def test_the_revocation_list_is_reread_when_it_changes(tmp_path: Path) -> None:
    provisioned = provision_tree({"gd": tmp_path / "gd", "gd.gz": tmp_path / "gz"})
    pki = provisioned["gd"].pki
    trust = NodeTrust(pki)
    assert trust.revoked() == frozenset()
    serial = load_certificate(provisioned["gd.gz"].pki.file("tls.pem")).serial_number
    authority = pki.load_authority()
    pki.save_crl(build_crl(authority, [(serial, NOW)], now=NOW))
    assert trust.revoked() == {serial}
    foreign = CertificateAuthority.create_root("gd", now=NOW)
    pki.save_crl(build_crl(foreign, [], now=NOW + dt.timedelta(seconds=1)))  # same issuer name, another key
    with pytest.raises(UnauthenticatedError, match=r"crl\.pem cannot be used"):
        trust.revoked()
    pki.file("crl.pem").unlink()
    assert trust.revoked() == frozenset()


def test_a_cached_signer_chain_is_refused_once_revoked_or_expired(tmp_path: Path) -> None:
    """Chains verified once are cached by fingerprint; revocation and validity still apply on every call."""
    from federation import sign_envelope
    from node.trust import chain_der

    provisioned = provision_tree({"gd": tmp_path / "gd", "gd.gz": tmp_path / "gz", "gd.gz.py": tmp_path / "py"})
    pki = provisioned["gd.gz"].pki
    key, chain = provisioned["gd.gz.py"].pki.load_report()
    envelope = sign_envelope(key, "gd.gz.py", "supnet.test.Body", b"body", chain_der(chain[0], chain[1:]))
    moment = [dt.datetime.now(dt.UTC)]
    expiring, revoking = NodeTrust(pki, clock=lambda: moment[0]), NodeTrust(pki)
    assert expiring.root_node_id == "gd"
    for trust in (expiring, revoking):
        for _ in range(2):  # verified, then answered from the cache
            assert trust.verify_envelope(envelope) == key.public_key()
    moment[0] += dt.timedelta(days=400)  # leaf certificates live 365 days
    with pytest.raises(UnauthenticatedError, match=r"gd\.gz\.py report .* expired at"):
        expiring.verify_envelope(envelope)
    now = dt.datetime.now(dt.UTC)
    pki.save_crl(build_crl(pki.load_authority(), [(chain[0].serial_number, now)], now=now))
    with pytest.raises(UnauthenticatedError, match=r"gd\.gz\.py report .* is revoked"):
        revoking.verify_envelope(envelope)


def test_a_provisioned_parent_records_every_certificate_it_issued_to_each_child(tmp_path: Path) -> None:
    # The registry is written once per parent (not once per child); `supnet pki revoke` needs every serial in it.
    dirs = {"gd": tmp_path / "gd", "gd.gz": tmp_path / "gz", "gd.sz": tmp_path / "sz"}
    dirs |= {f"gd.gz.d{index}": tmp_path / f"d{index}" for index in range(1, 4)}
    provisioned = provision_tree(dirs)
    for parent, children in {"gd": ["gd.gz", "gd.sz"], "gd.gz": ["gd.gz.d1", "gd.gz.d2", "gd.gz.d3"]}.items():
        records = IssuedRegistry.of(provisioned[parent].pki).records()
        assert sorted(record.serial for record in records) == sorted(
            serial for child in children for serial in provisioned[child].serials
        )
        assert {record.subject_id for record in records} == set(children)
        assert sorted(record.role for record in records) == sorted(["ca", "report", "tls"] * len(children))
    assert IssuedRegistry.of(provisioned["gd.sz"].pki).records() == []  # a leaf issued nothing
