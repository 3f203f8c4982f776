"""What a node's CA issued, in ``pki/issued.json``, and the signed revocation list built from it (``pki/crl.pem``).

Every certificate a node's CA issues is recorded (children at enrolment, the node's own rotated and renewed
leaves, ingest credentials) with its serial, subject, role and, once revoked, when and why. ``supnet pki
revoke`` marks records revoked and :func:`write_crl` re-signs ``crl.pem`` from every revoked record; the
server reloads that file when its mtime changes, so it is replaced atomically (write, then rename) and a
reader never sees half of it. The registry file is shared between processes (the server records
enrolments while the CLI revokes), so each change holds an exclusive lock on ``issued.json.lock``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from federation import InvalidArgumentError
from node.trust.enrolment import IssuedCertificates
from node.trust.pki import CertificateAuthority, CertificateRole, build_crl, certificate_node_id
from node.trust.pki_files import PkiDirectory

__all__ = [
    "CRL_FILE",
    "CRL_VALIDITY",
    "ISSUED_FILE",
    "IssuedRecord",
    "IssuedRegistry",
    "issued_records",
    "write_atomic",
    "write_crl",
]

ISSUED_FILE = "issued.json"
CRL_FILE = "crl.pem"
CRL_VALIDITY = dt.timedelta(days=30)
_ISSUED_FORMAT_VERSION = 1


def write_atomic(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write data to a temporary file beside path, then rename it over path (readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600 if private else 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@dataclass(frozen=True)
class IssuedRecord:
    """One certificate this node's CA issued, and its revocation if any."""

    serial: int
    subject_id: str
    role: str
    issued_at: dt.datetime
    not_after: dt.datetime
    name: str = ""
    revoked_at: dt.datetime | None = None
    reason: str = ""

    @classmethod
    def of(cls, certificate: x509.Certificate, role: str, issued_at: dt.datetime, name: str = "") -> IssuedRecord:
        """The record of a freshly issued certificate."""
        return cls(
            serial=certificate.serial_number,
            subject_id=certificate_node_id(certificate),
            role=role,
            issued_at=issued_at,
            not_after=certificate.not_valid_after_utc,
            name=name,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form (serial in hex, ISO 8601 times)."""
        return {
            "serial": f"{self.serial:x}",
            "subject_id": self.subject_id,
            "role": self.role,
            "name": self.name,
            "issued_at": self.issued_at.isoformat(),
            "not_after": self.not_after.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IssuedRecord:
        """Parse :meth:`to_dict` output; InvalidArgumentError naming the bad field."""
        try:
            revoked = data.get("revoked_at")
            return cls(
                serial=int(str(data["serial"]), 16),
                subject_id=str(data["subject_id"]),
                role=str(data["role"]),
                name=str(data.get("name") or ""),
                issued_at=dt.datetime.fromisoformat(str(data["issued_at"])),
                not_after=dt.datetime.fromisoformat(str(data["not_after"])),
                revoked_at=dt.datetime.fromisoformat(str(revoked)) if revoked else None,
                reason=str(data.get("reason") or ""),
            )
        except KeyError as error:
            raise InvalidArgumentError(f"issued certificate record lacks field {error.args[0]}") from error
        except (TypeError, ValueError) as error:
            raise InvalidArgumentError(f"issued certificate record has a bad field: {error}") from error


class IssuedRegistry:
    """``pki/issued.json``, safe between processes (the server records enrolments, the CLI revokes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.Lock()

    @classmethod
    def of(cls, pki: PkiDirectory) -> IssuedRegistry:
        """The registry of a node's pki/ directory."""
        return cls(pki.file(ISSUED_FILE))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, open(self.path.with_name(self.path.name + ".lock"), "a+b") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def _load(self) -> list[IssuedRecord]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except json.JSONDecodeError as error:
            raise InvalidArgumentError(f"{self.path} is not valid JSON: {error}") from error
        if not isinstance(data, dict) or data.get("version") != _ISSUED_FORMAT_VERSION:
            raise InvalidArgumentError(f"{self.path} is not a version {_ISSUED_FORMAT_VERSION} issued-certificate list")
        records = []
        for index, item in enumerate(data.get("certificates", [])):
            try:
                records.append(IssuedRecord.from_dict(item))
            except InvalidArgumentError as error:
                raise InvalidArgumentError(f"{self.path}, record {index}: {error}") from error
        return records

    def _save(self, records: list[IssuedRecord]) -> None:
        payload = {"version": _ISSUED_FORMAT_VERSION, "certificates": [record.to_dict() for record in records]}
        write_atomic(self.path, json.dumps(payload, indent=1, sort_keys=True).encode("utf-8"))

    def records(self) -> list[IssuedRecord]:
        """Every record, in issuing order."""
        with self._locked():
            return self._load()

    def add(self, records: Sequence[IssuedRecord]) -> None:
        """Append records."""
        with self._locked():
            self._save([*self._load(), *records])

    def revoke(
        self, matches: Callable[[IssuedRecord], bool], at: dt.datetime, reason: str
    ) -> tuple[list[IssuedRecord], list[IssuedRecord]]:
        """Mark every unrevoked matching record revoked; returns (newly revoked, matching already revoked)."""
        with self._locked():
            records = self._load()
            newly, already = [], []
            for index, record in enumerate(records):
                if not matches(record):
                    continue
                if record.revoked_at is not None:
                    already.append(record)
                    continue
                records[index] = replace(record, revoked_at=at, reason=reason)
                newly.append(records[index])
            if newly:
                self._save(records)
            return newly, already


def issued_records(issued: IssuedCertificates, at: dt.datetime) -> list[IssuedRecord]:
    """The records of everything issued at one enrolment (TLS, report and, if any, CA certificate)."""
    records = [
        IssuedRecord.of(issued.tls_certificate, CertificateRole.TLS.value, at),
        IssuedRecord.of(issued.report_certificate, CertificateRole.REPORT.value, at),
    ]
    if issued.ca_certificate is not None:
        records.append(IssuedRecord.of(issued.ca_certificate, CertificateRole.CA.value, at))
    return records


def write_crl(
    pki: PkiDirectory, authority: CertificateAuthority, now: dt.datetime, *, validity: dt.timedelta = CRL_VALIDITY
) -> x509.CertificateRevocationList:
    """Sign a CRL of every revoked record of ``issued.json`` (none yet: an empty CRL); replace crl.pem atomically."""
    revoked = [
        (record.serial, record.revoked_at)
        for record in IssuedRegistry.of(pki).records()
        if record.revoked_at is not None
    ]
    crl = build_crl(authority, revoked, now=now, next_update=validity)
    write_atomic(pki.file(CRL_FILE), crl.public_bytes(serialization.Encoding.PEM))
    return crl
