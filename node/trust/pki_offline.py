"""An offline root: the tree's root key kept in a directory of its own (removable media), never in ``pki/``.

``supnet pki init-root --offline DIR`` creates it: ``DIR/root.key`` (encrypted when a passphrase is given),
``DIR/root.pem`` and ``DIR/issued.json`` (what the root certified). The root certifies one CA of the province
node's own (same node id, a name of its own: node.trust.pki.OFFLINE_ROOT_MARK), and that CA does all online
work — enrolling children, ingest credentials, the CRL, renewing the node's certificates — so the node runs
without the root key. Re-certifying that CA before it ends is the explicit ``supnet pki sign-ca --root-dir DIR``
(:func:`sign_node_ca`), run where DIR is mounted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from node.errors import ConfigError, InvalidArgumentError, NotFoundError
from node.trust.enrolment_registry import IssuedRecord, IssuedRegistry, write_atomic
from node.trust.pki import (
    CA_VALIDITY,
    CertificateAuthority,
    CertificateRole,
    certificate_label,
    certificate_node_id,
    is_p256_key,
    resolve_now,
)
from node.trust.pki_files import (
    PKI_DIR_NAME,
    certificates_pem,
    load_certificate,
    load_certificates,
    load_ec_private_key,
    pki_directory,
    private_key_pem,
    save_certificates,
)

__all__ = ["OfflineRoot", "SignedCa", "sign_node_ca"]

log = logging.getLogger(__name__)

ROOT_KEY_FILE = "root.key"
ROOT_CERT_FILE = "root.pem"
ISSUED_FILE = "issued.json"


@dataclass(frozen=True)
class OfflineRoot:
    """The root CA held in its own directory."""

    path: Path
    authority: CertificateAuthority

    @classmethod
    def create(
        cls, path: Path, node_id: str, *, data_dir: Path, now: dt.datetime, passphrase: bytes | None = None
    ) -> OfflineRoot:
        """A new root in ``path`` (which must not lie in the node's data directory, nor hold a root already)."""
        directory = path.resolve()
        if directory.is_relative_to(data_dir.resolve()):
            raise InvalidArgumentError(
                f"--offline {path}: the root key would sit inside the node's data directory {data_dir}; "
                "name a directory elsewhere (removable media)"
            )
        if (directory / ROOT_KEY_FILE).exists():
            raise ConfigError(
                f"{directory / ROOT_KEY_FILE} already exists: an offline root is never replaced in place; name an "
                "empty directory"
            )
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        authority = CertificateAuthority.create_root(node_id, now=now, offline=True)
        write_atomic(directory / ROOT_KEY_FILE, private_key_pem(authority.private_key, passphrase), private=True)
        save_certificates(directory / ROOT_CERT_FILE, [authority.root])
        log.info("offline root of %s created in %s (serial %x)", node_id, directory, authority.root.serial_number)
        return cls(directory, authority)

    @classmethod
    def load(cls, path: Path, passphrase: bytes | None = None) -> OfflineRoot:
        """The root in ``path``; its key decrypts with ``passphrase`` (else SUPNET_ROOT_PASSPHRASE)."""
        directory = path.resolve()
        if not (directory / ROOT_KEY_FILE).exists():
            raise NotFoundError(f"--root-dir {path}: no {ROOT_KEY_FILE} here (is the offline root's medium mounted?)")
        root = load_certificate(directory / ROOT_CERT_FILE)
        key = load_ec_private_key(directory / ROOT_KEY_FILE, passphrase)
        if key.public_key() != root.public_key():
            raise InvalidArgumentError(f"{directory / ROOT_KEY_FILE} does not match {directory / ROOT_CERT_FILE}")
        node_id = certificate_node_id(root)
        return cls(directory, CertificateAuthority(node_id=node_id, private_key=key, certificate=root, root=root))

    def certify_ca(self, node_id: str, public_key: ec.EllipticCurvePublicKey, *, now: dt.datetime) -> x509.Certificate:
        """Certify the CA key of the root's own node; recorded in ``issued.json``."""
        if node_id != self.authority.node_id:
            raise InvalidArgumentError(
                f"the offline root of {self.authority.node_id} certifies only that node's CA, not {node_id}'s: "
                f"{node_id} enrols with its parent"
            )
        certificate = self.authority.issue(node_id, CertificateRole.CA, public_key, now=now, validity=CA_VALIDITY)
        IssuedRegistry(self.path / ISSUED_FILE).add([IssuedRecord.of(certificate, CertificateRole.CA.value, now)])
        return certificate

    def remove(self) -> None:
        """Delete a root just created (the node's pki/ could not be installed)."""
        for name in (ROOT_KEY_FILE, ROOT_CERT_FILE, ISSUED_FILE, ISSUED_FILE + ".lock"):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()


@dataclass(frozen=True)
class SignedCa:
    """What ``pki sign-ca`` did."""

    node_id: str
    old_serial: int
    certificate: x509.Certificate

    def to_dict(self) -> dict[str, str]:
        """JSON form."""
        return {
            "node_id": self.node_id,
            "old_serial": f"{self.old_serial:x}",
            "new_serial": f"{self.certificate.serial_number:x}",
            "not_after": self.certificate.not_valid_after_utc.isoformat(),
        }


def sign_node_ca(
    data_dir: Path, root_dir: Path, *, passphrase: bytes | None = None, now: dt.datetime | None = None
) -> SignedCa:
    """Re-certify the node's CA key (kept) from the offline root; ``ca.pem`` and the leaf chains get the new one."""
    moment = resolve_now(now)
    root = OfflineRoot.load(root_dir, passphrase)
    pki = pki_directory(data_dir)
    if not pki.file("ca.pem").exists():
        raise NotFoundError(f"{pki.file('ca.pem')} does not exist: this node has no CA to certify")
    current = load_certificates(pki.file("ca.pem"))[0]
    if pki.load_root() != root.authority.root:
        raise InvalidArgumentError(
            f"{data_dir / PKI_DIR_NAME} trusts another root than {root.path}: wrong medium, or a node of another tree"
        )
    public_key = current.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not is_p256_key(public_key):
        raise InvalidArgumentError(f"{certificate_label(current)} does not hold an ECDSA P-256 key")
    certificate = root.certify_ca(certificate_node_id(current), public_key, now=moment)
    write_atomic(pki.file("ca.pem"), certificates_pem([certificate]))
    for name in ("tls.pem", "report.pem"):
        chain = load_certificates(pki.file(name)) if pki.file(name).exists() else []
        if chain and chain[0].issuer == certificate.subject:
            # Same key and name: the leaves verify under the new CA certificate, which now travels with them.
            write_atomic(pki.file(name), certificates_pem([chain[0], certificate]))
    log.info(
        "offline root %s re-certified the CA of %s: serial %x until %s",
        root.path,
        root.authority.node_id,
        certificate.serial_number,
        certificate.not_valid_after_utc.isoformat(),
    )
    return SignedCa(root.authority.node_id, current.serial_number, certificate)
