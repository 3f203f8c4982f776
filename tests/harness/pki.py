"""PKI helpers for tests that start real servers: provision nodes, open channels as a node or an ingest client.

Provisioning is the real enrolment flow (node.trust.provisioning.provision_tree: root CA, one-time tokens,
CSRs, certificates checked against the root); channels are the real ones (node.trust.tls). Reusable by the
authorization-matrix test: ``provision(base, ids)`` returns each node's ``pki/`` directory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.trust import (
    CertificateAuthority,
    PkiDirectory,
    ingest_channel,
    ingest_credential_paths,
    node_channel,
    node_dns_name,
    node_uri,
    pki_directory,
    provision_ingest_credential,
    provision_tree,
)

INGEST_SYSTEM = "test-erp"


def provision(base: Path, node_ids: Iterable[str]) -> dict[str, PkiDirectory]:
    """Enrol a tree of nodes whose data directories are ``base/<id>``; returns each node's pki directory."""
    provisioned = provision_tree({node_id: base / node_id / "pki" for node_id in node_ids})
    return {node_id: entry.pki for node_id, entry in provisioned.items()}


def channel_as(data_dir: Path, address: str, expected_peer_id: str) -> grpc.Channel:
    """A mutual-TLS channel presenting the TLS certificate of the node in data_dir."""
    return node_channel(pki_directory(data_dir), address, expected_peer_id)


def ingest_client(data_dir: Path, node_id: str, address: str, system: str = INGEST_SYSTEM) -> grpc.Channel:
    """A business system's channel into node_id, with an ingest credential its CA issues on first use."""
    pki = pki_directory(data_dir)
    key, chain = ingest_credential_paths(pki, system)
    if not key.exists():
        provision_ingest_credential(pki, system)
    return ingest_channel(key, chain, pki.file("root.pem"), address, node_id)


def pem(*certificates: x509.Certificate) -> bytes:
    """Concatenated PEM of certificates."""
    return b"".join(certificate.public_bytes(serialization.Encoding.PEM) for certificate in certificates)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM of a key."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def forge_tls_certificate(
    issuer: CertificateAuthority,
    subject_id: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    extra_uris: Iterable[str] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """A TLS client/server certificate signed with a CA's raw key, bypassing CertificateAuthority.issue's checks.

    ``extra_uris`` adds identities (a two-identity certificate); the validity window defaults to now ± 1 day.
    """
    now = dt.datetime.now(dt.UTC)
    public_key = key.public_key()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(node_uri(subject_id))]
    names += [x509.UniformResourceIdentifier(uri) for uri in extra_uris]
    names.append(x509.DNSName(node_dns_name(subject_id)))
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{subject_id} forged")]))
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()), critical=False
        )
        .sign(issuer.private_key, hashes.SHA256())
    )


def raw_channel(
    address: str,
    expected_peer_id: str,
    *,
    root: x509.Certificate,
    key: ec.EllipticCurvePrivateKey | None = None,
    chain: Iterable[x509.Certificate] = (),
) -> grpc.Channel:
    """A TLS channel built by hand (no own-credential checks): to present expired, foreign or no certificates."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pem(root),
        private_key=key_pem(key) if key is not None else None,
        certificate_chain=pem(*chain) if key is not None else None,
    )
    return grpc.secure_channel(
        address, credentials, options=[("grpc.ssl_target_name_override", node_dns_name(expected_peer_id))]
    )
