"""Setting up a node's ``DATA_DIR/pki/`` and looking at it: init-root, enroll, enrolment tokens, ``pki show``.

Files the PKI commands add to the :class:`node.trust.pki_files.PkiDirectory` layout:

- ``tokens.json``: enrolment tokens this node issued (hashes only; node.trust.enrolment_tokens.JsonFileTokenStore);
- ``issued.json``: every certificate this node's CA issued (children at enrolment, its own rotated and renewed
  leaves, ingest credentials), with revocation time and reason: what ``pki revoke`` and ``pki show`` read;
- ``crl.pem``: the signed revocation list, rebuilt from ``issued.json`` by every revocation and refreshed by
  the renewal job. It is replaced atomically (write, then rename) because the server reloads it when its
  mtime changes and must never read half a file.

A whole new ``pki/`` (init-root, enroll) is written into a staging directory first and renamed into place,
so a failure leaves nothing behind; with ``force`` the previous directory is kept as ``pki.replaced-<time>``.
Revocation, rotation and renewal are node.trust.lifecycle's, ingest credentials node.trust.ingest_credentials'.
Every function takes ``now`` (aware) for tests; the CLI passes nothing and gets the current UTC time.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import load_private_key
from node.bootstrap import REPORT_KEY_FILE
from node.config import load_config
from node.errors import ConfigError, InvalidArgumentError, NotFoundError, SupnetError
from node.run_state import ENROL_OPEN_WAIT_SECONDS, running_enrol_address, wait_for_enrol_address
from node.trust.chains import expiry_warnings, revoked_serials
from node.trust.enrolment import DEFAULT_TOKEN_TTL, EnrolmentAuthority, IssuedCertificates, issue_enrolment_token
from node.trust.enrolment_registry import ISSUED_FILE, IssuedRecord, IssuedRegistry, issued_records, write_crl
from node.trust.enrolment_rpc import DEFAULT_ENROL_TIMEOUT_SECONDS, EnrolmentKeys, enrol
from node.trust.enrolment_tokens import JsonFileTokenStore, discovery_token, root_fingerprint
from node.trust.node_ids import validate_node_id
from node.trust.pki import (
    CertificateAuthority,
    CertificateRole,
    certificate_label,
    certificate_node_id,
    certificate_role,
    generate_ec_key,
    resolve_now,
    utcnow,
)
from node.trust.pki_files import PKI_DIR_NAME, PkiDirectory, load_certificate, pki_directory
from node.trust.pki_offline import OfflineRoot

__all__ = [
    "TOKENS_FILE",
    "PkiInstalled",
    "TokenIssued",
    "describe",
    "enroll_node",
    "enrolment_authority",
    "has_ca",
    "has_pki",
    "init_root",
    "issue_token",
    "load_authority",
    "own_node_id",
    "parse_duration",
    "record_enrolment",
    "token_store_path",
]

log = logging.getLogger(__name__)

TOKENS_FILE = "tokens.json"
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str, what: str = "--ttl") -> dt.timedelta:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` → timedelta; InvalidArgumentError naming ``what`` otherwise."""
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise InvalidArgumentError(f"{what}: {text!r} is not a positive duration such as 30m, 24h or 7d")
    return dt.timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


def has_pki(data_dir: Path) -> bool:
    """True if the node holds PKI credentials (a root certificate or any key in ``pki/``)."""
    pki = pki_directory(data_dir)
    return any(pki.file(name).exists() for name in ("root.pem", "ca.key", "tls.key", "report.key"))


def has_ca(data_dir: Path) -> bool:
    """True if the node holds a CA key (it can enrol children and issue its own leaf certificates)."""
    return pki_directory(data_dir).file("ca.key").exists()


def load_authority(data_dir: Path, passphrase: bytes | None = None) -> CertificateAuthority:
    """The node's CA; ConfigError telling how to get one when the node has none.

    An encrypted CA key (the root's) decrypts with ``passphrase``, else ``SUPNET_ROOT_PASSPHRASE``
    (PassphraseError without either, or with a wrong one).
    """
    pki = pki_directory(data_dir)
    if not pki.file("ca.key").exists():
        raise ConfigError(
            f"{pki.file('ca.key')} does not exist: this node has no CA. At the province run "
            f"'supnet pki init-root --data-dir {data_dir}'; elsewhere enrol with a CA "
            f"('supnet enroll --data-dir {data_dir} --parent HOST:PORT --token T')"
        )
    return pki.load_authority(passphrase)


def record_enrolment(data_dir: Path, issued: IssuedCertificates, at: dt.datetime | None = None) -> None:
    """Remember the serials issued to an enrolled child (what ``pki revoke`` revokes later)."""
    IssuedRegistry.of(pki_directory(data_dir)).add(issued_records(issued, resolve_now(at)))


def token_store_path(data_dir: Path) -> Path:
    """``pki/tokens.json``: the node's enrolment tokens (hashes only); the enrolment gate watches it."""
    return pki_directory(data_dir).file(TOKENS_FILE)


def enrolment_authority(
    data_dir: Path, *, clock: Callable[[], dt.datetime] | None = None, passphrase: bytes | None = None
) -> EnrolmentAuthority:
    """The node's EnrolmentAuthority: its CA and the token store ``pki/tokens.json``."""
    return EnrolmentAuthority(
        load_authority(data_dir, passphrase),
        JsonFileTokenStore(token_store_path(data_dir)),
        clock=clock,
    )


# --- a whole new pki/ directory -----------------------------------------------------------------------------


def _refuse_existing(data_dir: Path, force: bool, command: str) -> None:
    if force or not has_pki(data_dir):
        return
    raise ConfigError(
        f"{data_dir / PKI_DIR_NAME} already holds a PKI; '{command}' would replace its keys and certificates. "
        "Use --force to replace it (the old directory is kept as pki.replaced-<time>)"
    )


def _install_pki(data_dir: Path, write: Callable[[PkiDirectory], None], *, carry: Sequence[str] = ()) -> Path | None:
    """Write a new pki/ in a staging directory, then swap it in; returns where the old one went (if any)."""
    target = data_dir / PKI_DIR_NAME
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pki-staging-", dir=data_dir))
    try:
        os.chmod(staging, 0o700)
        for name in carry:
            if (target / name).exists():
                shutil.copy2(target / name, staging / name)
        write(PkiDirectory(staging))
        replaced = None
        if target.exists():
            stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
            replaced = data_dir / f"{PKI_DIR_NAME}.replaced-{stamp}"
            os.replace(target, replaced)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return replaced


def _existing_report_key(data_dir: Path) -> Ed25519PrivateKey | None:
    """The key of ``supnet init`` if there is one: certifying it keeps the node's report signer key."""
    path = data_dir / REPORT_KEY_FILE
    return load_private_key(path) if path.exists() else None


@dataclass(frozen=True)
class PkiInstalled:
    """What init-root or enroll wrote."""

    node_id: str
    pki_dir: Path
    root_fingerprint: str
    certificates: dict[str, x509.Certificate]
    replaced: Path | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "node_id": self.node_id,
            "pki_dir": str(self.pki_dir),
            "root_fingerprint": self.root_fingerprint,
            "certificates": {role: _certificate_dict(cert) for role, cert in self.certificates.items()},
            "replaced": str(self.replaced) if self.replaced else None,
        }


def init_root(
    data_dir: Path,
    *,
    force: bool = False,
    now: dt.datetime | None = None,
    passphrase: bytes | None = None,
    offline_dir: Path | None = None,
) -> PkiInstalled:
    """The province: a self-signed root CA and the node's own TLS and report certificates under it.

    ``passphrase``: the root key is written encrypted with it. ``offline_dir``: the root key and certificate go
    there instead (node.trust.pki_offline) and certify a CA of the node's own, so ``pki/`` never holds the root key.
    """
    config = load_config(data_dir)
    node_id = validate_node_id(config.id)
    _refuse_existing(data_dir, force, "pki init-root")
    moment = resolve_now(now)
    offline = None
    if offline_dir is not None:
        offline = OfflineRoot.create(offline_dir, node_id, data_dir=data_dir, now=moment, passphrase=passphrase)
        ca_key = generate_ec_key()
        ca_certificate = offline.certify_ca(node_id, ca_key.public_key(), now=moment)
        authority = CertificateAuthority(node_id, ca_key, ca_certificate, root=offline.authority.root)
    else:
        authority = CertificateAuthority.create_root(node_id, now=moment)
    tls_key = generate_ec_key()
    report_key = _existing_report_key(data_dir) or Ed25519PrivateKey.generate()
    tls = authority.issue(node_id, CertificateRole.TLS, tls_key.public_key(), now=moment)
    report = authority.issue(node_id, CertificateRole.REPORT, report_key.public_key(), now=moment)

    def write(pki: PkiDirectory) -> None:
        # The node's CA key is encrypted only when it is the root key itself.
        pki.save_authority(authority, passphrase if offline is None else None)
        pki.save_tls(tls_key, [tls, *authority.issuer_chain])
        pki.save_report(report_key, [report, *authority.issuer_chain])
        IssuedRegistry.of(pki).add(
            [IssuedRecord.of(tls, CertificateRole.TLS.value, moment), IssuedRecord.of(report, "report", moment)]
        )
        write_crl(pki, authority, moment)

    try:
        replaced = _install_pki(data_dir, write)
    except BaseException:
        if offline is not None:
            offline.remove()
        raise
    log.info(
        "node %s: root CA created (%s) in %s (serial %x)",
        node_id,
        f"offline in {offline_dir}" if offline is not None else ("encrypted" if passphrase else "unencrypted"),
        data_dir / PKI_DIR_NAME,
        authority.root.serial_number,
    )
    certificates = {"root": authority.root, "tls": tls, "report": report}
    if offline is not None:
        certificates["ca"] = authority.certificate
    return PkiInstalled(
        node_id=node_id,
        pki_dir=data_dir / PKI_DIR_NAME,
        root_fingerprint=root_fingerprint(authority.root),
        certificates=certificates,
        replaced=replaced,
    )


def enroll_node(
    data_dir: Path,
    parent: str,
    token: str,
    *,
    with_ca: bool = True,
    force: bool = False,
    timeout: float = DEFAULT_ENROL_TIMEOUT_SECONDS,
    now: dt.datetime | None = None,
) -> PkiInstalled:
    """A child: enrol at the parent's enrolment listener and write ``pki/`` once everything verified.

    Nothing is written unless the parent's answer passes every check (node.trust.enrolment_rpc.enrol);
    a re-enrolment (``force``) keeps the node's token and issued-certificate records.
    """
    config = load_config(data_dir)
    node_id = validate_node_id(config.id)
    _refuse_existing(data_dir, force, "enroll")
    keys = EnrolmentKeys.generate(with_ca=with_ca, report=_existing_report_key(data_dir))
    issued = enrol(parent, token, node_id, keys, timeout=timeout, at=now)
    moment = resolve_now(now)

    def write(pki: PkiDirectory) -> None:
        if keys.ca is not None:
            authority = issued.authority(keys.ca)
            pki.save_authority(authority)
            # On a re-enrolment the carried issued.json may list revocations: they stay, signed by the new key.
            write_crl(pki, authority, moment)
        else:
            pki.save_root(issued.root)
        pki.save_tls(keys.tls, issued.tls_chain())
        pki.save_report(keys.report, issued.report_chain())

    replaced = _install_pki(data_dir, write, carry=(TOKENS_FILE, ISSUED_FILE))
    certificates = {"root": issued.root, "tls": issued.tls_certificate, "report": issued.report_certificate}
    if keys.ca is not None and issued.ca_certificate is not None:
        certificates["ca"] = issued.ca_certificate
    log.info("node %s enrolled at %s; pki written to %s", node_id, parent, data_dir / PKI_DIR_NAME)
    return PkiInstalled(
        node_id=node_id,
        pki_dir=data_dir / PKI_DIR_NAME,
        root_fingerprint=root_fingerprint(issued.root),
        certificates=certificates,
        replaced=replaced,
    )


# --- enrolment tokens ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenIssued:
    """A token ready to hand to the child's operator."""

    token: str
    child_id: str
    expires_at: dt.datetime
    root_fingerprint: str
    enrol_address: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "token": self.token,
            "child_id": self.child_id,
            "expires_at": self.expires_at.isoformat(),
            "root_fingerprint": self.root_fingerprint,
            "enrol_address": self.enrol_address,
        }


def issue_token(
    data_dir: Path,
    child_id: str,
    *,
    ttl: dt.timedelta = DEFAULT_TOKEN_TTL,
    now: dt.datetime | None = None,
    wait_for_listener: float = ENROL_OPEN_WAIT_SECONDS,
) -> TokenIssued:
    """A one-time enrolment token for a direct child, with the root fingerprint appended.

    A serving node opens its enrolment listener when it sees the new token (node.server.enrolment_gate, within
    about a second): while the node is serving, this waits up to ``wait_for_listener`` seconds for the listener's
    address, so the address handed to the child's operator is one that answers.
    """
    moment = resolve_now(now)
    pki = pki_directory(data_dir)
    if not has_ca(data_dir):
        load_authority(data_dir)  # the error telling how to get a CA
    # Issuing a token signs nothing: the CA's certificates suffice, so an encrypted root key stays closed.
    node_id = certificate_node_id(load_certificate(pki.file("ca.pem")))
    root = pki.load_root()
    store = JsonFileTokenStore(pki.file(TOKENS_FILE))
    token, record = issue_enrolment_token(store, node_id, child_id, ttl, now=moment)
    return TokenIssued(
        token=discovery_token(token, root),
        child_id=child_id,
        expires_at=record.expires_at,
        root_fingerprint=root_fingerprint(root),
        enrol_address=wait_for_enrol_address(data_dir, wait_for_listener),
    )


# --- the enrolment listener's address file, and pki show ----------------------------------------------------


def own_node_id(pki: PkiDirectory) -> str:
    """The node id the directory's own certificates name (TLS first, then CA, then the root)."""
    for name in ("tls.pem", "report.pem", "ca.pem", "root.pem"):
        if pki.file(name).exists():
            return certificate_node_id(load_certificate(pki.file(name)))
    return ""


def _certificate_dict(certificate: x509.Certificate, now: dt.datetime | None = None) -> dict[str, Any]:
    role = certificate_role(certificate)
    try:
        node_id = certificate_node_id(certificate)
    except Exception:  # a foreign certificate in a file is shown, not fatal
        node_id = ""
    info: dict[str, Any] = {
        "label": certificate_label(certificate),
        "node_id": node_id,
        "role": role.value if role else None,
        "serial": f"{certificate.serial_number:x}",
        "issuer": certificate.issuer.rfc4514_string(),
        "not_before": certificate.not_valid_before_utc.isoformat(),
        "not_after": certificate.not_valid_after_utc.isoformat(),
    }
    if now is not None:
        info["days_left"] = round((certificate.not_valid_after_utc - now).total_seconds() / 86400, 1)
    return info


def describe(
    data_dir: Path, *, renew_before: dt.timedelta | None = None, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Everything ``pki show`` prints: own certificates, tokens, issued certificates, revoked serials, warnings."""
    moment = resolve_now(now)
    pki = pki_directory(data_dir)
    if not has_pki(data_dir):
        raise NotFoundError(
            f"{pki.path} holds no PKI: run 'supnet pki init-root --data-dir {data_dir}' (province) or "
            f"'supnet enroll --data-dir {data_dir} --parent HOST:PORT --token T'"
        )
    own: dict[str, Any] = {}
    certificates = []
    for name in ("root", "ca", "tls", "report"):
        if pki.file(f"{name}.pem").exists():
            first = load_certificate(pki.file(f"{name}.pem"))
            own[name] = _certificate_dict(first, moment)
            certificates.append(first)
    retired = (
        sorted(str(path.name) for path in pki.file("retired").glob("*.pem")) if pki.file("retired").is_dir() else []
    )
    root = pki.load_root()
    revoked: list[str] = []
    crl_info: dict[str, Any] | None = None
    if pki.file("crl.pem").exists() and pki.file("ca.pem").exists():
        crl = pki.load_crl()
        crl_info = {
            "path": str(pki.file("crl.pem")),
            "last_update": crl.last_update_utc.isoformat(),
            "next_update": crl.next_update_utc.isoformat() if crl.next_update_utc else None,
            "error": None,
        }
        try:
            revoked = sorted(f"{serial:x}" for serial in revoked_serials(crl, load_certificate(pki.file("ca.pem"))))
        except SupnetError as error:
            # Shown, not fatal: 'pki show' is what an operator runs to find out what is wrong.
            crl_info["error"] = error.message
    tokens = []
    if pki.file(TOKENS_FILE).exists():
        for record in JsonFileTokenStore(pki.file(TOKENS_FILE)).records():
            status = "used" if record.used_at else ("expired" if record.expires_at <= moment else "pending")
            tokens.append(
                {
                    "token_hash_prefix": record.token_hash[:12],
                    "child_id": record.child_id,
                    "created_at": record.created_at.isoformat(),
                    "expires_at": record.expires_at.isoformat(),
                    "used_at": record.used_at.isoformat() if record.used_at else None,
                    "status": status,
                }
            )
    issued = (
        [record.to_dict() for record in IssuedRegistry.of(pki_directory(data_dir)).records()]
        if pki.file(ISSUED_FILE).exists()
        else []
    )
    return {
        "node_id": own_node_id(pki),
        "pki_dir": str(pki.path),
        "root_fingerprint": root_fingerprint(root),
        "has_ca": has_ca(data_dir),
        "certificates": own,
        "retired": retired,
        "issued": issued,
        "revoked_serials": revoked,
        "crl": crl_info,
        "tokens": tokens,
        "enrol_address": running_enrol_address(data_dir),
        "warnings": expiry_warnings(certificates, now=moment, renew_before=renew_before or dt.timedelta(days=30)),
    }
