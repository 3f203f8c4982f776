"""The files of a node's PKI: PEM keys, certificates and CRLs, and :class:`PkiDirectory` (``DATA_DIR/pki/``).

Private keys are written as PKCS#8 PEM with mode 0600, also over an existing file; a key file others can read is
loaded with a warning. A root CA key may be encrypted with a passphrase (``ENCRYPTED PRIVATE KEY``, cryptography's
best available encryption): loading it takes the passphrase given, else ``SUPNET_ROOT_PASSPHRASE``; without one,
or with a wrong one, it is a :class:`PassphraseError` naming the file and where a passphrase comes from. A missing
file is NotFoundError and an unparsable one InvalidArgumentError, both naming the file.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import IntegrityError, InvalidArgumentError, read_file, write_private_file
from node.errors import ConfigError
from node.trust.pki import CertificateAuthority, certificate_node_id, is_p256_key

__all__ = [
    "PASSPHRASE_ENV",
    "PKI_DIR_NAME",
    "PassphraseError",
    "PkiDirectory",
    "certificates_pem",
    "is_encrypted_key",
    "load_certificate",
    "load_certificates",
    "load_crl",
    "load_ec_private_key",
    "pki_directory",
    "private_key_pem",
    "read_passphrase",
    "save_certificates",
    "save_crl",
    "save_private_key",
]

logger = logging.getLogger(__name__)

PKI_DIR_NAME = "pki"


PASSPHRASE_ENV = "SUPNET_ROOT_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret
_ENCRYPTED_PEM = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


class PassphraseError(ConfigError):
    """A key file is encrypted and no passphrase (``missing``) or a wrong one was given."""

    def __init__(self, message: str, *, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


def read_passphrase(passphrase_file: Path | None = None) -> bytes | None:
    """The root key's passphrase: the file's first line if given, else ``SUPNET_ROOT_PASSPHRASE``, else None."""
    if passphrase_file is not None:
        text = read_file(Path(passphrase_file), "passphrase").decode("utf-8").splitlines()
        if not text or not text[0]:
            raise ConfigError(f"--passphrase-file {passphrase_file}: the file is empty")
        return text[0].encode("utf-8")
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode("utf-8") if value else None


def private_key_pem(
    private_key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey, passphrase: bytes | None = None
) -> bytes:
    """A private key as PEM PKCS#8: encrypted with ``passphrase`` if one is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def is_encrypted_key(path: str | Path) -> bool:
    """True when a PEM key file is encrypted (needs a passphrase to load)."""
    return read_file(Path(path), "private key").lstrip().startswith(_ENCRYPTED_PEM)


def certificates_pem(certificates: Iterable[x509.Certificate]) -> bytes:
    """Certificates as concatenated PEM (a chain when more than one)."""
    return b"".join(certificate.public_bytes(serialization.Encoding.PEM) for certificate in certificates)


def save_private_key(
    path: str | Path, private_key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey, passphrase: bytes | None = None
) -> None:
    """Save a private key as PEM PKCS#8 with mode 0600 (encrypted with ``passphrase`` if given)."""
    write_private_file(Path(path), private_key_pem(private_key, passphrase))


def load_ec_private_key(path: str | Path, passphrase: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """Load a PEM ECDSA P-256 private key (an encrypted one with the passphrase: module docstring)."""
    source = Path(path)
    data = read_file(source, "private key")
    if source.stat().st_mode & 0o077:
        logger.warning("private key file %s is readable by group or others; chmod 600 it", source)
    password = None
    if data.lstrip().startswith(_ENCRYPTED_PEM):
        password = passphrase if passphrase is not None else read_passphrase()
        if password is None:
            raise PassphraseError(
                f"private key file {source} is encrypted: give its passphrase with --passphrase-file FILE or the "
                f"environment variable {PASSPHRASE_ENV}",
                missing=True,
            )
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except ValueError as error:
        if password is not None:
            raise PassphraseError(
                f"private key file {source}: wrong passphrase (the key does not decrypt with it)", missing=False
            ) from error
        raise InvalidArgumentError(f"private key file {source} is not a PEM private key: {error}") from error
    except TypeError as error:
        raise InvalidArgumentError(f"private key file {source} is not a PEM private key: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not is_p256_key(key):
        raise InvalidArgumentError(f"private key file {source} holds a {type(key).__name__}, not an ECDSA P-256 key")
    return key


def save_certificates(path: str | Path, certificates: Iterable[x509.Certificate]) -> None:
    """Save certificates as concatenated PEM (a chain file when more than one)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(certificates_pem(certificates))


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    """Load every PEM certificate of a file, in order; InvalidArgumentError naming the file if none parse."""
    source = Path(path)
    data = read_file(source, "certificate")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise InvalidArgumentError(f"certificate file {source} is not valid PEM: {error}") from error
    return certificates


def load_certificate(path: str | Path) -> x509.Certificate:
    """Load the first PEM certificate of a file."""
    return load_certificates(path)[0]


def save_crl(path: str | Path, crl: x509.CertificateRevocationList) -> None:
    """Save a CRL as PEM."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def load_crl(path: str | Path) -> x509.CertificateRevocationList:
    """Load a PEM CRL (its signature is checked by revoked_serials, not here)."""
    source = Path(path)
    try:
        return x509.load_pem_x509_crl(read_file(source, "revocation list"))
    except ValueError as error:
        raise InvalidArgumentError(f"revocation list file {source} is not valid PEM: {error}") from error


@dataclass(frozen=True)
class PkiDirectory:
    """The ``pki/`` directory of a node: root, own CA, TLS and report credentials, CRL; keys mode 0600.

    Layout: ``root.pem``; ``ca.key`` + ``ca.pem`` (the CA certificate then those above it, root excluded);
    ``tls.key`` + ``tls.pem`` and ``report.key`` + ``report.pem`` (leaf then issuers, root excluded: what a
    TLS stack or a SignedEnvelope carries); ``crl.pem``; replaced report certificates under ``retired/``.
    """

    path: Path

    def file(self, name: str) -> Path:
        """The path of one file of the directory."""
        return self.path / name

    def save_root(self, root: x509.Certificate) -> None:
        """Save the trusted root certificate."""
        save_certificates(self.file("root.pem"), [root])

    def load_root(self) -> x509.Certificate:
        """The trusted root certificate."""
        return load_certificate(self.file("root.pem"))

    def save_authority(self, authority: CertificateAuthority, passphrase: bytes | None = None) -> None:
        """Save this node's CA key (encrypted with ``passphrase`` if given), CA chain and the root."""
        save_private_key(self.file("ca.key"), authority.private_key, passphrase)
        save_certificates(self.file("ca.pem"), [authority.certificate, *authority.intermediates])
        self.save_root(authority.root)

    def load_authority(self, passphrase: bytes | None = None) -> CertificateAuthority:
        """The CA of this node (its node id read from the CA certificate); an encrypted key needs its passphrase."""
        chain = load_certificates(self.file("ca.pem"))
        root = self.load_root()
        key = load_ec_private_key(self.file("ca.key"), passphrase)
        if key.public_key() != chain[0].public_key():
            raise IntegrityError(f"{self.file('ca.key')} does not match the certificate in {self.file('ca.pem')}")
        return CertificateAuthority(
            node_id=certificate_node_id(chain[0]),
            private_key=key,
            certificate=chain[0],
            root=root,
            intermediates=tuple(chain[1:]) if chain[0] != root else (),
        )

    def save_tls(self, private_key: ec.EllipticCurvePrivateKey, chain: Sequence[x509.Certificate]) -> None:
        """Save the TLS key and chain (leaf first, root excluded)."""
        save_private_key(self.file("tls.key"), private_key)
        save_certificates(self.file("tls.pem"), chain)

    def load_tls(self) -> tuple[ec.EllipticCurvePrivateKey, list[x509.Certificate]]:
        """The TLS key and chain."""
        return load_ec_private_key(self.file("tls.key")), load_certificates(self.file("tls.pem"))

    def save_report(self, private_key: Ed25519PrivateKey, chain: Sequence[x509.Certificate]) -> None:
        """Save the report-signing key and chain; a replaced certificate is kept under ``retired/``."""
        current = self.file("report.pem")
        if current.exists():
            previous = load_certificate(current)
            if previous.serial_number != chain[0].serial_number:
                retired = self.file("retired") / f"report-{previous.serial_number:x}.pem"
                retired.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(current, retired)
        save_private_key(self.file("report.key"), private_key)
        save_certificates(current, chain)

    def load_report(self) -> tuple[Ed25519PrivateKey, list[x509.Certificate]]:
        """The report-signing key and chain."""
        source = self.file("report.key")
        data = read_file(source, "private key")
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidArgumentError(f"private key file {source} holds a {type(key).__name__}, not Ed25519")
        return key, load_certificates(self.file("report.pem"))

    def save_crl(self, crl: x509.CertificateRevocationList) -> None:
        """Save this node's CRL."""
        save_crl(self.file("crl.pem"), crl)

    def load_crl(self) -> x509.CertificateRevocationList:
        """The CRL of this node."""
        return load_crl(self.file("crl.pem"))


def pki_directory(data_dir: Path) -> PkiDirectory:
    """The ``pki/`` directory of a node's data directory."""
    return PkiDirectory(Path(data_dir) / PKI_DIR_NAME)
