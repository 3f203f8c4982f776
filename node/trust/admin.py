"""PKI administration of one node's ``DATA_DIR/pki/``: init-root, tokens, enrolment, revocation, rotation, renewal.

Files this module adds to the :class:`node.trust.pki_files.PkiDirectory` layout:

- ``tokens.json``: enrolment tokens this node issued (hashes only; node.trust.enrolment.JsonFileTokenStore);
- ``issued.json``: every certificate this node's CA issued (children at enrolment, its own rotated and renewed
  leaves, ingest credentials), with revocation time and reason: what ``pki revoke`` and ``pki show`` read;
- ``crl.pem``: the signed revocation list, rebuilt from ``issued.json`` by every revocation and refreshed by
  the renewal job. It is replaced atomically (write, then rename) because the server reloads it when its
  mtime changes and must never read half a file.

A whole new ``pki/`` (init-root, enroll) is written into a staging directory first and renamed into place,
so a failure leaves nothing behind; with ``force`` the previous directory is kept as ``pki.replaced-<time>``.
Every function takes ``now`` (aware) for tests; the CLI passes nothing and gets the current UTC time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation import key_id, load_private_key
from node.bootstrap import REPORT_KEY_FILE
from node.config import load_config
from node.errors import ConfigError, InvalidArgumentError, NotFoundError, SupnetError
from node.run_state import pid_alive
from node.trust.chains import expiry_warnings, revoked_serials
from node.trust.enrolment import (
    DEFAULT_TOKEN_TTL,
    EnrolmentAuthority,
    IssuedCertificates,
    JsonFileTokenStore,
    discovery_token,
    root_fingerprint,
)
from node.trust.enrolment_registry import (
    ISSUED_FILE,
    IssuedRecord,
    IssuedRegistry,
    issued_records,
    write_atomic,
    write_crl,
)
from node.trust.enrolment_rpc import DEFAULT_ENROL_TIMEOUT_SECONDS, EnrolmentKeys, enrol
from node.trust.node_ids import validate_node_id
from node.trust.pki import (
    LEAF_VALIDITY,
    CertificateAuthority,
    CertificateRole,
    certificate_label,
    certificate_node_id,
    certificate_role,
    generate_ec_key,
    validate_system_name,
)
from node.trust.pki_files import (
    PKI_DIR_NAME,
    PkiDirectory,
    certificates_pem,
    load_certificate,
    load_certificates,
    pki_directory,
    private_key_pem,
)
from node.trust.provisioning import provision_ingest_credential

log = logging.getLogger(__name__)

TOKENS_FILE = "tokens.json"
ENROL_STATE_FILE = "enrol.json"
# The key `supnet init` creates: the PKI certifies it, so reports keep their signer key across the switch.
# The renewal job re-signs the CRL once less than this is left, so a running node's CRL never lapses.
CRL_REFRESH_BEFORE = dt.timedelta(days=15)
# A renewal must gain at least this much lifetime, else (CA ending soon) it only warns instead of churning.
MIN_RENEWAL_GAIN = dt.timedelta(days=1)
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def utcnow() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def _aware(now: dt.datetime | None) -> dt.datetime:
    moment = now or utcnow()
    if moment.tzinfo is None:
        raise InvalidArgumentError(f"time {moment.isoformat()} must be timezone-aware")
    return moment.astimezone(dt.UTC)


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


def load_authority(data_dir: Path) -> CertificateAuthority:
    """The node's CA; ConfigError telling how to get one when the node has none."""
    pki = pki_directory(data_dir)
    if not pki.file("ca.key").exists():
        raise ConfigError(
            f"{pki.file('ca.key')} does not exist: this node has no CA. At the province run "
            f"'supnet pki init-root --data-dir {data_dir}'; elsewhere enrol with a CA "
            f"('supnet enroll --data-dir {data_dir} --parent HOST:PORT --token T')"
        )
    return pki.load_authority()


def record_enrolment(data_dir: Path, issued: IssuedCertificates, at: dt.datetime | None = None) -> None:
    """Remember the serials issued to an enrolled child (what ``pki revoke`` revokes later)."""
    IssuedRegistry.of(pki_directory(data_dir)).add(issued_records(issued, _aware(at)))


def enrolment_authority(data_dir: Path, *, clock: Callable[[], dt.datetime] | None = None) -> EnrolmentAuthority:
    """The node's EnrolmentAuthority: its CA and the token store ``pki/tokens.json``."""
    return EnrolmentAuthority(
        load_authority(data_dir), JsonFileTokenStore(pki_directory(data_dir).file(TOKENS_FILE)), clock=clock
    )


# --- a whole new pki/ directory ----------------------------------------------------------------------------


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


def init_root(data_dir: Path, *, force: bool = False, now: dt.datetime | None = None) -> PkiInstalled:
    """The province: a self-signed root CA and the node's own TLS and report certificates under it."""
    config = load_config(data_dir)
    node_id = validate_node_id(config.id)
    _refuse_existing(data_dir, force, "pki init-root")
    moment = _aware(now)
    authority = CertificateAuthority.create_root(node_id, now=moment)
    tls_key = generate_ec_key()
    report_key = _existing_report_key(data_dir) or Ed25519PrivateKey.generate()
    tls = authority.issue(node_id, CertificateRole.TLS, tls_key.public_key(), now=moment)
    report = authority.issue(node_id, CertificateRole.REPORT, report_key.public_key(), now=moment)

    def write(pki: PkiDirectory) -> None:
        pki.save_authority(authority)
        pki.save_tls(tls_key, [tls, *authority.issuer_chain])
        pki.save_report(report_key, [report, *authority.issuer_chain])
        IssuedRegistry.of(pki).add(
            [IssuedRecord.of(tls, CertificateRole.TLS.value, moment), IssuedRecord.of(report, "report", moment)]
        )
        write_crl(pki, authority, moment)

    replaced = _install_pki(data_dir, write)
    log.info(
        "node %s: root CA created in %s (serial %x)", node_id, data_dir / PKI_DIR_NAME, authority.root.serial_number
    )
    return PkiInstalled(
        node_id=node_id,
        pki_dir=data_dir / PKI_DIR_NAME,
        root_fingerprint=root_fingerprint(authority.root),
        certificates={"root": authority.root, "tls": tls, "report": report},
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
    moment = _aware(now)

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


# --- tokens and revocation ----------------------------------------------------------------------------------


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
    data_dir: Path, child_id: str, *, ttl: dt.timedelta = DEFAULT_TOKEN_TTL, now: dt.datetime | None = None
) -> TokenIssued:
    """A one-time enrolment token for a direct child, with the root fingerprint appended."""
    moment = _aware(now)
    authority = enrolment_authority(data_dir, clock=lambda: moment)
    token, record = authority.issue_token(child_id, ttl)
    return TokenIssued(
        token=discovery_token(token, authority.authority.root),
        child_id=child_id,
        expires_at=record.expires_at,
        root_fingerprint=root_fingerprint(authority.authority.root),
        enrol_address=running_enrol_address(data_dir),
    )


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
) -> Revocation:
    """Revoke every certificate issued to a child (or one ingest credential) and rewrite ``pki/crl.pem``.

    Unused enrolment tokens for the child are withdrawn too, so it cannot re-enrol with an old one.
    NotFoundError if this node never issued a certificate to it.
    """
    if (child_id is None) == (ingest_name is None):
        raise InvalidArgumentError("name exactly one of: a CHILD_ID, or --ingest NAME for an ingest credential")
    moment = _aware(now)
    authority = load_authority(data_dir)
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
            "rotated": {
                role: {"old_serial": f"{old:x}", "new_serial": f"{new:x}"} for role, (old, new) in self.rotated.items()
            },
            "report_key_id": self.report_key_id,
        }


def rotate_keys(data_dir: Path, *, tls: bool = False, now: dt.datetime | None = None) -> Rotation:
    """A new Ed25519 report key (and with ``tls`` a new TLS key), certified by the node's own CA.

    The old report certificate goes to ``retired/`` and stays valid: reports signed with the old key carry
    its chain and keep verifying. Only revocation makes them unverifiable.
    """
    moment = _aware(now)
    authority = load_authority(data_dir)
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
            "renewed": {
                role: {"old_serial": f"{a:x}", "new_serial": f"{b:x}"} for role, (a, b) in self.renewed.items()
            },
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
    moment = _aware(now)
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
    node_id = _own_node_id(pki)
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
    authority = pki.load_authority()
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


# --- ingest credentials -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestCredential:
    """Files of an ingest client credential handed to a business approval system."""

    name: str
    node_id: str
    key: Path
    certificate: Path
    root: Path
    serial: int
    not_after: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.name,
            "node_id": self.node_id,
            "files": {"key": str(self.key), "certificate": str(self.certificate), "root": str(self.root)},
            "serial": f"{self.serial:x}",
            "not_after": self.not_after.isoformat(),
        }


def issue_ingest_credential(
    data_dir: Path, name: str, out_dir: Path, *, force: bool = False, now: dt.datetime | None = None
) -> IngestCredential:
    """The node's CA issues an INGEST client certificate to a business system; key, chain and root go to out_dir.

    The issuing itself is node.trust.provisioning's (which also keeps a copy under ``pki/ingest/``); this adds
    the copy for the system's operator and the record in ``issued.json`` (``pki revoke --ingest NAME``).
    """
    validate_system_name(name)
    moment = _aware(now)
    authority = load_authority(data_dir)
    targets = (out_dir / f"{name}.key", out_dir / f"{name}.pem", out_dir / "root.pem")
    existing = [path for path in targets[:2] if path.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} already exists; use --force to overwrite it")
    pki = pki_directory(data_dir)
    key_path, chain_path = provision_ingest_credential(pki, name, now=moment)
    certificate = load_certificate(chain_path)
    IssuedRegistry.of(pki).add([IssuedRecord.of(certificate, CertificateRole.INGEST.value, moment, name=name)])
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(targets[0], key_path.read_bytes(), private=True)
    write_atomic(targets[1], chain_path.read_bytes())
    write_atomic(targets[2], certificates_pem([authority.root]))
    log.info("node %s issued ingest credential %s, serial %x", authority.node_id, name, certificate.serial_number)
    return IngestCredential(
        name=name,
        node_id=authority.node_id,
        key=targets[0],
        certificate=targets[1],
        root=targets[2],
        serial=certificate.serial_number,
        not_after=certificate.not_valid_after_utc,
    )


# --- the enrolment listener's address file, and pki show ----------------------------------------------------


def enrol_state_path(data_dir: Path) -> Path:
    """Where a serving node writes its enrolment listener's address (next to serve.json)."""
    return data_dir / ENROL_STATE_FILE


def running_enrol_address(data_dir: Path) -> str | None:
    """host:port of this node's running enrolment listener, or None."""
    try:
        state = json.loads(enrol_state_path(data_dir).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("address"), str):
        return None
    return str(state["address"]) if pid_alive(int(state.get("pid", 0))) else None


def _own_node_id(pki: PkiDirectory) -> str:
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
    moment = _aware(now)
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
        "node_id": _own_node_id(pki),
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
