"""What happens to certificates after they are issued: ``pki revoke``, ``keys rotate`` and the renewal job.

Revoking marks records of ``pki/issued.json`` revoked, withdraws the child's unused enrolment tokens and
re-signs ``pki/crl.pem`` (node.trust.enrolment_registry.write_crl). Rotating and renewing re-issue the node's
own TLS and report certificates from its own CA: rotation with new keys, renewal with the same keys once a
certificate nears its end. A replaced certificate chain is kept under ``pki/retired/`` (old reports carry it),
and every file is replaced by a rename, so a running server reading it sees the old or the new file.
Every function takes ``now`` (aware) for tests; the CLI passes nothing and gets the current UTC time.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation import key_id
from node.errors import InvalidArgumentError, NotFoundError
from node.trust.admin import TOKENS_FILE, has_ca, has_pki, load_authority, own_node_id
from node.trust.chains import expiry_warnings
from node.trust.enrolment_registry import IssuedRecord, IssuedRegistry, write_atomic, write_crl
from node.trust.enrolment_tokens import JsonFileTokenStore
from node.trust.node_ids import validate_node_id
from node.trust.pki import (
    LEAF_VALIDITY,
    CertificateAuthority,
    CertificateRole,
    certificate_label,
    certificate_node_id,
    generate_ec_key,
    resolve_now,
)
from node.trust.pki_files import (
    PassphraseError,
    PkiDirectory,
    certificates_pem,
    load_certificate,
    load_certificates,
    pki_directory,
    private_key_pem,
)

__all__ = [
    "CRL_REFRESH_BEFORE",
    "MIN_RENEWAL_GAIN",
    "Renewal",
    "Revocation",
    "Rotation",
    "renew_certificates",
    "revoke",
    "rotate_keys",
]

log = logging.getLogger(__name__)

# The renewal job re-signs the CRL once less than this is left, so a running node's CRL never lapses.
CRL_REFRESH_BEFORE = dt.timedelta(days=15)
# A renewal must gain at least this much lifetime, else (CA ending soon) it only warns instead of churning.
MIN_RENEWAL_GAIN = dt.timedelta(days=1)


# --- revocation ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Revocation:
    """What ``pki revoke`` did."""

    subject: str
    revoked: list[IssuedRecord]
    already_revoked: list[IssuedRecord]
    tokens_withdrawn: int
    crl_serials: int
    crl_path: Path

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "subject": self.subject,
            "revoked": [record.to_dict() for record in self.revoked],
            "already_revoked": [record.to_dict() for record in self.already_revoked],
            "tokens_withdrawn": self.tokens_withdrawn,
            "crl_serials": self.crl_serials,
            "crl": str(self.crl_path),
        }


def revoke(
    data_dir: Path,
    child_id: str | None = None,
    *,
    ingest_name: str | None = None,
    reason: str = "",
    now: dt.datetime | None = None,
    passphrase: bytes | None = None,
) -> Revocation:
    """Revoke every certificate issued to a child (or one ingest credential) and rewrite ``pki/crl.pem``.

    Unused enrolment tokens for the child are withdrawn too, so it cannot re-enrol with an old one.
    NotFoundError if this node never issued a certificate to it.
    """
    if (child_id is None) == (ingest_name is None):
        raise InvalidArgumentError("name exactly one of: a CHILD_ID, or --ingest NAME for an ingest credential")
    moment = resolve_now(now)
    authority = load_authority(data_dir, passphrase)  # it signs the CRL
    if child_id is not None:
        validate_node_id(child_id)
        if child_id == authority.node_id:
            raise InvalidArgumentError(
                f"{child_id} is this node: rotate its keys with 'supnet keys rotate' instead of revoking itself"
            )
        subject = child_id

        def matches(record: IssuedRecord) -> bool:
            return record.subject_id == child_id

    else:
        subject = f"ingest credential {ingest_name}"

        def matches(record: IssuedRecord) -> bool:
            return record.role == "ingest" and record.name == ingest_name

    registry = IssuedRegistry.of(pki_directory(data_dir))
    newly, already = registry.revoke(matches, moment, reason)
    if not newly and not already:
        hint = ""
        if (
            child_id is not None
            and child_id.startswith(authority.node_id + ".")
            and child_id.count(".") > (authority.node_id.count(".") + 1)
        ):
            direct = ".".join(child_id.split(".")[: authority.node_id.count(".") + 2])
            hint = f"; {child_id} was enrolled by its own parent: revoke it there, or revoke {direct} here"
        raise NotFoundError(
            f"node {authority.node_id} has issued no certificate to {subject} (see 'supnet pki show'); "
            f"nothing to revoke{hint}"
        )
    withdrawn = 0
    if child_id is not None:
        store = JsonFileTokenStore(pki_directory(data_dir).file(TOKENS_FILE))
        for record in store.records():
            if record.child_id == child_id and record.used_at is None and store.mark_used(record.token_hash, moment):
                withdrawn += 1
    crl = write_crl(pki_directory(data_dir), authority, moment)
    log.info(
        "node %s revoked %s certificates of %s (%s); CRL now lists %s serials",
        authority.node_id,
        len(newly),
        subject,
        reason or "no reason given",
        len(list(crl)),
    )
    return Revocation(
        subject=subject,
        revoked=newly,
        already_revoked=already,
        tokens_withdrawn=withdrawn,
        crl_serials=len(list(crl)),
        crl_path=pki_directory(data_dir).file("crl.pem"),
    )


# --- own leaf certificates: rotation and renewal ------------------------------------------------------------


def _retire(pki: PkiDirectory, name: str, new_serial: int) -> Path | None:
    """Keep the replaced certificate chain under ``retired/`` (old reports carry it; audits want it)."""
    current = pki.file(f"{name}.pem")
    if not current.exists():
        return None
    previous = load_certificate(current)
    if previous.serial_number == new_serial:
        return None
    retired = pki.file("retired") / f"{name}-{previous.serial_number:x}.pem"
    retired.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(current, retired)
    return retired


def _save_leaf(
    pki: PkiDirectory,
    name: str,
    key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey | None,
    chain: Sequence[x509.Certificate],
) -> None:
    """Replace ``<name>.key`` (if a new key) and ``<name>.pem`` by renames: a reader sees old or new files."""
    _retire(pki, name, chain[0].serial_number)
    if key is not None:
        write_atomic(pki.file(f"{name}.key"), private_key_pem(key), private=True)
    write_atomic(pki.file(f"{name}.pem"), certificates_pem(chain))


def _serial_changes(changes: dict[str, tuple[int, int]]) -> dict[str, dict[str, str]]:
    """JSON form of replaced certificates: per role the old and new serial, in hex."""
    return {role: {"old_serial": f"{old:x}", "new_serial": f"{new:x}"} for role, (old, new) in changes.items()}


@dataclass(frozen=True)
class Rotation:
    """What ``keys rotate`` did."""

    node_id: str
    rotated: dict[str, tuple[int, int]]
    report_key_id: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form: per role the old and new serial."""
        return {
            "node_id": self.node_id,
            "rotated": _serial_changes(self.rotated),
            "report_key_id": self.report_key_id,
        }


def rotate_keys(
    data_dir: Path, *, tls: bool = False, now: dt.datetime | None = None, passphrase: bytes | None = None
) -> Rotation:
    """A new Ed25519 report key (and with ``tls`` a new TLS key), certified by the node's own CA.

    The old report certificate goes to ``retired/`` and stays valid: reports signed with the old key carry
    its chain and keep verifying. Only revocation makes them unverifiable.
    """
    moment = resolve_now(now)
    authority = load_authority(data_dir, passphrase)
    pki = pki_directory(data_dir)
    node_id = authority.node_id
    rotated: dict[str, tuple[int, int]] = {}
    records = []
    report_key = Ed25519PrivateKey.generate()
    report = authority.issue(node_id, CertificateRole.REPORT, report_key.public_key(), now=moment)
    old_report = load_certificate(pki.file("report.pem")).serial_number if pki.file("report.pem").exists() else 0
    _save_leaf(pki, "report", report_key, [report, *authority.issuer_chain])
    rotated["report"] = (old_report, report.serial_number)
    records.append(IssuedRecord.of(report, CertificateRole.REPORT.value, moment))
    if tls:
        tls_key = generate_ec_key()
        certificate = authority.issue(node_id, CertificateRole.TLS, tls_key.public_key(), now=moment)
        old_tls = load_certificate(pki.file("tls.pem")).serial_number if pki.file("tls.pem").exists() else 0
        _save_leaf(pki, "tls", tls_key, [certificate, *authority.issuer_chain])
        rotated["tls"] = (old_tls, certificate.serial_number)
        records.append(IssuedRecord.of(certificate, CertificateRole.TLS.value, moment))
    IssuedRegistry.of(pki_directory(data_dir)).add(records)
    log.info("node %s rotated keys: %s", node_id, ", ".join(f"{role} {new:x}" for role, (_, new) in rotated.items()))
    return Rotation(node_id=node_id, rotated=rotated, report_key_id=key_id(report_key.public_key()).hex())


@dataclass
class Renewal:
    """What one run of the renewal job found and did."""

    warnings: list[str] = field(default_factory=list)
    renewed: dict[str, tuple[int, int]] = field(default_factory=dict)
    ca_warnings: list[str] = field(default_factory=list)
    crl_refreshed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "warnings": self.warnings,
            "renewed": _serial_changes(self.renewed),
            "ca_warnings": self.ca_warnings,
            "crl_refreshed": self.crl_refreshed,
        }


def _renew_leaf(
    pki: PkiDirectory,
    name: str,
    role: CertificateRole,
    *,
    authority: CertificateAuthority,
    moment: dt.datetime,
    renew_before: dt.timedelta,
    result: Renewal,
) -> IssuedRecord | None:
    chain = load_certificates(pki.file(f"{name}.pem"))
    leaf = chain[0]
    if leaf.not_valid_after_utc - moment > renew_before:
        return None
    reachable = min(moment + LEAF_VALIDITY, authority.certificate.not_valid_after_utc)
    if reachable < leaf.not_valid_after_utc + MIN_RENEWAL_GAIN:
        message = (
            f"cannot renew {certificate_label(leaf)} usefully: this node's CA certificate ends "
            f"{authority.certificate.not_valid_after_utc.isoformat()}; renew the CA first"
        )
        log.warning("node %s: %s", authority.node_id, message)
        result.ca_warnings.append(message)
        return None
    public_key = leaf.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey | Ed25519PublicKey):
        raise InvalidArgumentError(f"{pki.file(name + '.pem')} holds a {type(public_key).__name__} key")
    renewed = authority.issue(authority.node_id, role, public_key, now=moment)
    _save_leaf(pki, name, None, [renewed, *authority.issuer_chain])
    result.renewed[name] = (leaf.serial_number, renewed.serial_number)
    log.warning(
        "node %s renewed its %s certificate (same key): serial %x until %s replaces %x ending %s",
        authority.node_id,
        name,
        renewed.serial_number,
        renewed.not_valid_after_utc.isoformat(),
        leaf.serial_number,
        leaf.not_valid_after_utc.isoformat(),
    )
    return IssuedRecord.of(renewed, role.value, moment)


def renew_certificates(
    data_dir: Path, *, renew_before: dt.timedelta = dt.timedelta(days=30), now: dt.datetime | None = None
) -> Renewal:
    """Warn about certificates expiring within ``renew_before``; re-issue the node's own leaves from its CA.

    The TLS and report certificates keep their keys. A CA certificate can only be renewed by the parent
    (and the root only by re-rooting the tree): that gets a loud warning each run. The CRL is re-signed
    when it nears its next-update time. A node without ``pki/`` gets an empty result.
    """
    moment = resolve_now(now)
    result = Renewal()
    pki = pki_directory(data_dir)
    if not has_pki(data_dir):
        return result
    seen: dict[int, x509.Certificate] = {}
    for name in ("tls.pem", "report.pem", "ca.pem", "root.pem"):
        if pki.file(name).exists():
            for certificate in load_certificates(pki.file(name)):
                seen.setdefault(certificate.serial_number, certificate)
    result.warnings = expiry_warnings(seen.values(), now=moment, renew_before=renew_before)
    node_id = own_node_id(pki)
    for message in result.warnings:
        log.warning("node %s: %s", node_id, message)
    if not has_ca(data_dir):
        if result.warnings:
            message = (
                f"this node has no CA key and cannot renew its own certificates: get a token from its parent "
                f"and run 'supnet enroll --data-dir {data_dir} --parent HOST:PORT --token T --force'"
            )
            log.warning("node %s: %s", node_id, message)
            result.ca_warnings.append(message)
        return result
    try:
        authority = pki.load_authority()  # an encrypted (root) key: with SUPNET_ROOT_PASSPHRASE
    except PassphraseError as error:
        message = (
            f"cannot renew certificates or re-sign the CRL: {error.message}; until then the CRL is not refreshed "
            f"(or run 'supnet keys rotate --data-dir {data_dir} --tls --passphrase-file FILE' by hand)"
        )
        log.warning("node %s: %s", node_id, message)
        result.ca_warnings.append(message)
        return result
    records = []
    for name, role in (("tls", CertificateRole.TLS), ("report", CertificateRole.REPORT)):
        if pki.file(f"{name}.pem").exists():
            record = _renew_leaf(
                pki, name, role, authority=authority, moment=moment, renew_before=renew_before, result=result
            )
            if record is not None:
                records.append(record)
    if records:
        IssuedRegistry.of(pki_directory(data_dir)).add(records)
    for certificate in (authority.certificate, *authority.intermediates):
        if certificate.not_valid_after_utc - moment <= renew_before:
            if certificate == authority.root:
                how = "the root can only be replaced by a new root and re-enrolling the whole tree"
            elif (
                certificate == authority.certificate
                and certificate.issuer == authority.root.subject
                and (authority.node_id == certificate_node_id(authority.root))
            ):
                how = (
                    f"the offline root renews it: mount its medium and run 'supnet pki sign-ca --data-dir {data_dir} "
                    "--root-dir DIR'"
                )
            elif certificate == authority.certificate:
                how = (
                    f"only the parent can renew it: get a token from {authority.node_id.rpartition('.')[0]} and "
                    f"run 'supnet enroll --data-dir {data_dir} --parent HOST:PORT --token T --force'"
                )
            else:
                how = "an ancestor must renew it"
            message = (
                f"ACTION NEEDED: CA certificate {certificate_label(certificate)} expires "
                f"{certificate.not_valid_after_utc.isoformat()}: {how}"
            )
            log.warning("node %s: %s", authority.node_id, message)
            result.ca_warnings.append(message)
    if pki.file("crl.pem").exists():
        crl = pki.load_crl()
        next_update = crl.next_update_utc
        if next_update is None or next_update - moment <= CRL_REFRESH_BEFORE:
            write_crl(pki_directory(data_dir), authority, moment)
            result.crl_refreshed = True
    return result
