"""Ingest credentials (``supnet pki ingest-credential``): TLS client certificates for business approval systems.

The node's own CA issues an INGEST certificate (node.trust.pki) naming the node and the system; the issuing and
the copy under ``pki/ingest/`` are node.trust.provisioning's. This adds what an operator needs: the key, chain
and root written to a directory to hand over, and the record in ``pki/issued.json`` that ``supnet pki revoke
--ingest NAME`` revokes.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import ConfigError
from node.trust.admin import load_authority
from node.trust.enrolment_registry import IssuedRecord, IssuedRegistry, write_atomic
from node.trust.pki import CertificateRole, resolve_now, validate_system_name
from node.trust.pki_files import certificates_pem, load_certificate, pki_directory
from node.trust.provisioning import provision_ingest_credential

__all__ = ["IngestCredential", "issue_ingest_credential"]

log = logging.getLogger(__name__)


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
    data_dir: Path,
    name: str,
    out_dir: Path,
    *,
    force: bool = False,
    now: dt.datetime | None = None,
    passphrase: bytes | None = None,
) -> IngestCredential:
    """The node's CA issues an INGEST client certificate to a business system; key, chain and root go to out_dir.

    The issuing itself is node.trust.provisioning's (which also keeps a copy under ``pki/ingest/``); this adds
    the copy for the system's operator and the record in ``issued.json`` (``pki revoke --ingest NAME``).
    """
    validate_system_name(name)
    moment = resolve_now(now)
    authority = load_authority(data_dir, passphrase)
    targets = (out_dir / f"{name}.key", out_dir / f"{name}.pem", out_dir / "root.pem")
    existing = [path for path in targets[:2] if path.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} already exists; use --force to overwrite it")
    pki = pki_directory(data_dir)
    key_path, chain_path = provision_ingest_credential(pki, name, now=moment, passphrase=passphrase)
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
