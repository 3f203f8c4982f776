"""Provision the PKI of a whole tree in one process: the real enrolment flow, without the network hop.

Used by ``supnet federation up`` / ``supnet demo`` and by tests. The root node gets a self-signed root CA
and its own TLS and report certificates; then, top-down, every parent issues a one-time enrolment token for
each child (:class:`node.trust.enrolment.EnrolmentAuthority`), the child builds its keys and certificate
signing requests, the parent redeems the token for the child's TLS, report and CA certificates, and the
child checks the answer against the root before saving its ``pki/`` directory
(:class:`node.trust.pki_files.PkiDirectory`). Every node gets a CA of its own (constrained to its subtree), so it
can issue ingest credentials to the business systems feeding it (:func:`provision_ingest_credential`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import InvalidArgumentError, SupnetError
from node.trust.enrolment import EnrolmentAuthority, build_enrolment_request, check_issued
from node.trust.enrolment_registry import IssuedRecord, IssuedRegistry, issued_records, write_crl
from node.trust.enrolment_tokens import MemoryTokenStore, TokenStore
from node.trust.node_ids import validate_node_id
from node.trust.pki import CertificateAuthority, CertificateRole, generate_ec_key, validate_system_name
from node.trust.pki_files import PkiDirectory, load_certificate, save_certificates, save_private_key
from node.trust.tls import check_own_credentials, has_transport_credentials, ingest_credential_paths

__all__ = ["ProvisionedNode", "provision_ingest_credential", "provision_tree", "tree_is_provisioned"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProvisionedNode:
    """One node's freshly written ``pki/`` directory and the serials issued to it (to revoke it later)."""

    node_id: str
    pki: PkiDirectory
    serials: tuple[int, ...]


def _ordered(node_ids: Mapping[str, Path]) -> list[str]:
    ids = sorted(node_ids, key=lambda node_id: (node_id.count("."), node_id))
    if not ids:
        raise InvalidArgumentError("no nodes to provision")
    for node_id in ids:
        validate_node_id(node_id)
    roots = [node_id for node_id in ids if node_id.rpartition(".")[0] not in node_ids]
    if len(roots) != 1:
        raise InvalidArgumentError(f"a tree to provision needs exactly one root, found {', '.join(roots)}")
    return ids


def _save_root_node(pki: PkiDirectory, authority: CertificateAuthority, now: dt.datetime) -> tuple[int, ...]:
    tls_key = generate_ec_key()
    report_key = Ed25519PrivateKey.generate()
    tls = authority.issue(authority.node_id, CertificateRole.TLS, tls_key.public_key(), now=now)
    report = authority.issue(authority.node_id, CertificateRole.REPORT, report_key.public_key(), now=now)
    pki.save_authority(authority)
    pki.save_tls(tls_key, [tls])
    pki.save_report(report_key, [report])
    return (authority.certificate.serial_number, tls.serial_number, report.serial_number)


def provision_tree(
    pki_dirs: Mapping[str, Path],
    *,
    now: dt.datetime | None = None,
    leaf_validity: dt.timedelta | None = None,
    ca_validity: dt.timedelta | None = None,
    token_store: Callable[[], TokenStore] = MemoryTokenStore,
) -> dict[str, ProvisionedNode]:
    """Write a fresh PKI for every node of a tree: node id -> the directory to become its ``pki/``.

    The tree's root (the one id whose parent is not listed) becomes the root CA; each other node is enrolled
    by its parent with a one-time token and CSRs, exactly as ``supnet enroll`` does over the network.
    Existing files in the directories are replaced.
    """
    moment = now or dt.datetime.now(dt.UTC)
    ids = _ordered(pki_dirs)
    authorities: dict[str, CertificateAuthority] = {}
    enrolers: dict[str, EnrolmentAuthority] = {}
    provisioned: dict[str, ProvisionedNode] = {}
    issued_by: dict[str, list[IssuedRecord]] = {}
    root_id = ids[0]
    root = CertificateAuthority.create_root(root_id, now=moment, validity=ca_validity or dt.timedelta(days=3650))
    for node_id in ids:
        pki = PkiDirectory(Path(pki_dirs[node_id]))
        if node_id == root_id:
            authorities[node_id] = root
            provisioned[node_id] = ProvisionedNode(node_id, pki, _save_root_node(pki, root, moment))
            continue
        parent_id = node_id.rpartition(".")[0]
        enroler = enrolers.get(parent_id)
        if enroler is None:
            enroler = enrolers[parent_id] = EnrolmentAuthority(
                authorities[parent_id],
                token_store(),
                clock=lambda: moment,
                leaf_validity=leaf_validity,
                ca_validity=ca_validity,
            )
        token, _record = enroler.issue_token(node_id)
        tls_key, ca_key = generate_ec_key(), generate_ec_key()
        report_key = Ed25519PrivateKey.generate()
        issued = enroler.redeem(token, node_id, build_enrolment_request(node_id, tls_key, report_key, ca_key))
        check_issued(
            issued,
            node_id,
            tls_key=tls_key,
            report_key=report_key,
            ca_key=ca_key,
            trusted_root=root.certificate,
            at=moment,
        )
        # The parent records what it issued, so `supnet pki revoke` works on a provisioned tree too: in one
        # write per parent below (each write syncs the file; a tree of 1,786 nodes would sync it 1,785 times).
        issued_by.setdefault(parent_id, []).extend(issued_records(issued, moment))
        authority = issued.authority(ca_key)
        pki.save_authority(authority)
        pki.save_tls(tls_key, issued.tls_chain())
        pki.save_report(report_key, issued.report_chain())
        authorities[node_id] = authority
        provisioned[node_id] = ProvisionedNode(node_id, pki, tuple(issued.serials()))
    for parent_id, records in issued_by.items():
        IssuedRegistry.of(PkiDirectory(Path(pki_dirs[parent_id]))).add(records)
    for node_id, authority in authorities.items():
        # Every CA starts with a signed, empty revocation list (what a serving node checks peers against).
        write_crl(PkiDirectory(Path(pki_dirs[node_id])), authority, moment)
    logger.info("provisioned the PKI of %s nodes under root %s", len(ids), root_id)
    return provisioned


def tree_is_provisioned(pki_dirs: Mapping[str, Path], *, now: dt.datetime | None = None) -> bool:
    """True if every node's directory holds usable TLS credentials and report files, all under one root."""
    roots = set()
    for pki_path in pki_dirs.values():
        pki = PkiDirectory(Path(pki_path))
        report_files = pki.file("report.key").is_file() and pki.file("report.pem").is_file()
        if not (has_transport_credentials(pki) and report_files):
            return False
        try:
            check_own_credentials(pki.file("tls.key"), pki.file("tls.pem"), pki.file("root.pem"), now=now)
            roots.add(load_certificate(pki.file("root.pem")).fingerprint(hashes.SHA256()))
        except SupnetError:
            return False
    return len(roots) == 1


def provision_ingest_credential(
    pki: PkiDirectory,
    system: str,
    *,
    now: dt.datetime | None = None,
    validity: dt.timedelta | None = None,
    passphrase: bytes | None = None,
) -> tuple[Path, Path]:
    """The node's own CA issues an INGEST client certificate to a business system; returns (key, chain) paths.

    Written to ``pki/ingest/<system>.key`` (mode 0600) and ``.pem`` (leaf then issuers); hand both with
    ``pki/root.pem`` to the system, which connects with :func:`node.trust.tls.ingest_channel`.
    """
    validate_system_name(system)
    authority = pki.load_authority(passphrase)
    key = generate_ec_key()
    certificate = authority.issue(
        authority.node_id,
        CertificateRole.INGEST,
        key.public_key(),
        now=now or dt.datetime.now(dt.UTC),
        validity=validity,
        system=system,
    )
    key_path, chain_path = ingest_credential_paths(pki, system)
    save_private_key(key_path, key)
    save_certificates(chain_path, [certificate, *authority.issuer_chain])
    logger.info("issued ingest credential %s of %s (serial %x)", system, authority.node_id, certificate.serial_number)
    return key_path, chain_path
