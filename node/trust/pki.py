"""Certificates of the node tree and the CA that issues them: roles, what a certificate names, CRL signing.

Every certificate names one node id (node.trust.node_ids: the ``supnet://`` URI and the DNS name) and plays
one role: a CA certificate; a node's TLS certificate (server and client authentication); its report
certificate (Ed25519, REPORT_SIGNING_EKU); and an INGEST certificate, a TLS client certificate that a node's
own CA issues to a business approval system feeding that node (URI SAN = that node's id, INGEST_CLIENT_EKU, no
server authentication, common name ``<node id> ingest <system>``), so a node's TLS certificate can never ingest
and an ingest credential can never act as a node. :class:`CertificateAuthority` issues them (only for its own
subtree; a CA certificate carries the DNS name constraint of its subtree) and signs its revocation list
(:func:`build_crl`). Checking them is node.trust.chains'.

Key types: CA and TLS keys are ECDSA P-256 (grpcio's TLS does not negotiate Ed25519 certificates); a report
certificate carries the node's Ed25519 report-signing key (see federation.signing), signed by an ECDSA CA.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation import InvalidArgumentError, PermissionDeniedError, UnauthenticatedError
from node.trust.node_ids import URI_SCHEME, is_ancestor, node_dns_name, node_id_from_uri, node_uri, validate_node_id

__all__ = [
    "CA_VALIDITY",
    "CLOCK_SKEW_ALLOWANCE",
    "INGEST_CLIENT_EKU",
    "LEAF_VALIDITY",
    "OFFLINE_ROOT_MARK",
    "REPORT_SIGNING_EKU",
    "ROOT_VALIDITY",
    "CertificateAuthority",
    "CertificateRole",
    "SubjectPublicKey",
    "aware_utc",
    "build_crl",
    "certificate_label",
    "certificate_node_id",
    "certificate_role",
    "generate_ec_key",
    "is_ca_certificate",
    "is_p256_key",
    "resolve_now",
    "utcnow",
    "validate_system_name",
]

logger = logging.getLogger(__name__)

# A private extended key usage naming "supnet report signing", under the UUID arc 2.25 (X.667) so that it
# needs no registration; a report certificate must carry it, so a TLS certificate can never sign reports.
REPORT_SIGNING_EKU = x509.ObjectIdentifier("2.25.213880387216012245331339125718596622977")
# The same kind of private usage for "supnet ingest client": only a certificate carrying it may stream records.
INGEST_CLIENT_EKU = x509.ObjectIdentifier("2.25.236259003323228928435006058459213442902")
ORGANIZATION = "supnet"
# The common name of an offline root ends in this, so that its name differs from the CA of the node it certifies.
OFFLINE_ROOT_MARK = "root"

ROOT_VALIDITY = dt.timedelta(days=3650)
CA_VALIDITY = dt.timedelta(days=1825)
LEAF_VALIDITY = dt.timedelta(days=365)
# Certificates start a little in the past so that a peer whose clock lags ours accepts them at once.
CLOCK_SKEW_ALLOWANCE = dt.timedelta(minutes=5)

# The name of a business system holding an ingest credential (goes into the certificate's common name).
_SYSTEM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")


class CertificateRole(enum.StrEnum):
    """What a certificate is for; written into its common name and checked from its extensions."""

    CA = "ca"
    TLS = "tls"
    REPORT = "report"
    INGEST = "ingest"


def utcnow() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def resolve_now(now: dt.datetime | None) -> dt.datetime:
    """``now`` in UTC (it must be timezone-aware), or the current time when None."""
    return aware_utc(now, "time") if now is not None else utcnow()


def aware_utc(at: dt.datetime, what: str) -> dt.datetime:
    """``at`` in UTC; InvalidArgumentError naming ``what`` if it is naive (certificate times are absolute)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidArgumentError(f"{what} must be a timezone-aware datetime, got naive {at.isoformat()}")
    return at.astimezone(dt.UTC)


# --- keys and certificate inspection ----------------------------------------------------------------------


def generate_ec_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key (CA and TLS keys)."""
    return ec.generate_private_key(ec.SECP256R1())


def is_p256_key(key: object) -> bool:
    """True for an ECDSA P-256 key, public or private (the only curve our CA and TLS keys use)."""
    return isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and isinstance(
        key.curve, ec.SECP256R1
    )


def _san_names(cert: x509.Certificate | x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def certificate_label(cert: x509.Certificate) -> str:
    """A short human label for messages: common name and serial, e.g. ``gd.gz.py tls (serial 3f2a…)``."""
    return f"{_common_name(cert) or cert.subject.rfc4514_string() or '?'} (serial {cert.serial_number:x})"


def certificate_node_id(cert: x509.Certificate | x509.CertificateSigningRequest) -> str:
    """The node id a certificate (or CSR) names; UnauthenticatedError unless it names exactly one.

    Exactly one supnet URI is allowed, every DNS name must be that node's DNS name, and no other kind of
    name may appear: two identities in one certificate would let it speak for either.
    """
    what = certificate_label(cert) if isinstance(cert, x509.Certificate) else "certificate request"
    uris: list[str] = []
    for name in _san_names(cert):
        if isinstance(name, x509.UniformResourceIdentifier):
            uris.append(name.value)
        elif not isinstance(name, x509.DNSName):
            raise UnauthenticatedError(f"{what} carries a {type(name).__name__} name; only supnet names allowed")
    supnet_uris = [uri for uri in uris if uri.startswith(f"{URI_SCHEME}:")]
    if len(supnet_uris) != 1 or len(uris) != 1:
        raise UnauthenticatedError(
            f"{what} must name exactly one {URI_SCHEME}:// node URI, found {len(supnet_uris)} "
            f"among {len(uris)} URIs: {', '.join(uris) or 'none'}"
        )
    try:
        node_id = node_id_from_uri(supnet_uris[0])
    except InvalidArgumentError as error:
        raise UnauthenticatedError(f"{what}: {error}") from error
    expected_dns = node_dns_name(node_id)
    for name in _san_names(cert):
        if isinstance(name, x509.DNSName) and name.value != expected_dns:
            raise UnauthenticatedError(
                f"{what} names node {node_id} but DNS name {name.value} (expected {expected_dns})"
            )
    return node_id


def _extended_key_usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()


def is_ca_certificate(cert: x509.Certificate) -> bool:
    """True if the certificate's basic constraints make it a CA."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def certificate_role(cert: x509.Certificate) -> CertificateRole | None:
    """The role a certificate can play, judged from its extensions and key type (None: none of ours)."""
    if is_ca_certificate(cert):
        return CertificateRole.CA if is_p256_key(cert.public_key()) else None
    usages = _extended_key_usages(cert)
    public_key = cert.public_key()
    if isinstance(public_key, Ed25519PublicKey) and REPORT_SIGNING_EKU in usages:
        return CertificateRole.REPORT
    if is_p256_key(public_key) and INGEST_CLIENT_EKU in usages:
        # Checked before TLS: an ingest certificate is a client certificate of its own kind, never a node's.
        return CertificateRole.INGEST
    if is_p256_key(public_key) and {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= usages:
        return CertificateRole.TLS
    return None


# --- building certificates --------------------------------------------------------------------------------


def _subject_name(node_id: str, role: CertificateRole, system: str = "") -> x509.Name:
    # The OU path makes issuer/subject names distinct per node and role (path building matches on names).
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]
    attributes += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, part) for part in node_id.split(".")]
    common_name = f"{node_id} {role.value}" + (f" {system}" if system else "")
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def validate_system_name(system: str) -> str:
    """Return system if it can name an ingest client; InvalidArgumentError saying what is allowed if not."""
    if not _SYSTEM_NAME.match(system):
        raise InvalidArgumentError(
            f"ingest system name {system!r} must be 1-48 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    return system


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


SubjectPublicKey = ec.EllipticCurvePublicKey | Ed25519PublicKey


def _build(
    *,
    subject_id: str,
    role: CertificateRole,
    public_key: SubjectPublicKey,
    issuer_name: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    system: str = "",
) -> x509.Certificate:
    """Sign one certificate of ours: names, key usages and constraints follow from the role."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject_name(subject_id, role, system))
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=role is CertificateRole.CA, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=role is CertificateRole.CA), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(node_uri(subject_id)), x509.DNSName(node_dns_name(subject_id))]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if role is CertificateRole.CA:
        # Standard verifiers (cryptography, BoringSSL in gRPC) enforce this on every certificate below.
        builder = builder.add_extension(
            x509.NameConstraints(permitted_subtrees=[x509.DNSName(node_dns_name(subject_id))], excluded_subtrees=None),
            critical=True,
        )
    elif role is CertificateRole.TLS:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    elif role is CertificateRole.INGEST:
        # Client authentication only: an ingest credential can never serve as a node.
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, INGEST_CLIENT_EKU]), critical=False
        )
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([REPORT_SIGNING_EKU]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


# --- the certificate authority of one node ----------------------------------------------------------------


@dataclass(frozen=True)
class CertificateAuthority:
    """The CA of one node: its key, its CA certificate, the CA certificates above it, and the root.

    ``intermediates`` are the CA certificates between this CA's own certificate and the root, nearest first
    (empty for the root and for a direct child of the root). It can issue only for its own subtree.
    """

    node_id: str
    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    root: x509.Certificate
    intermediates: tuple[x509.Certificate, ...] = ()

    @classmethod
    def create_root(
        cls,
        node_id: str,
        *,
        now: dt.datetime,
        validity: dt.timedelta = ROOT_VALIDITY,
        private_key: ec.EllipticCurvePrivateKey | None = None,
        offline: bool = False,
    ) -> CertificateAuthority:
        """A self-signed root CA for the province node (``supnet pki init-root``).

        ``offline``: a root kept apart from the node, which certifies the node's own CA (same node id) and
        little else; its name says so (``<id> ca root``), so that it never looks like the CA it certifies.
        """
        validate_node_id(node_id)
        key = private_key or generate_ec_key()
        if not is_p256_key(key):
            raise InvalidArgumentError("a root CA key must be ECDSA P-256")
        start = aware_utc(now, "now")
        name = _subject_name(node_id, CertificateRole.CA, OFFLINE_ROOT_MARK if offline else "")
        certificate = _build(
            subject_id=node_id,
            role=CertificateRole.CA,
            public_key=key.public_key(),
            issuer_name=name,
            issuer_key=key,
            not_before=start - CLOCK_SKEW_ALLOWANCE,
            not_after=start + validity,
            system=OFFLINE_ROOT_MARK if offline else "",
        )
        logger.info("created root CA for %s, serial %x", node_id, certificate.serial_number)
        return cls(node_id=node_id, private_key=key, certificate=certificate, root=certificate)

    @property
    def is_root(self) -> bool:
        """True for the self-signed root CA."""
        return self.certificate == self.root

    @property
    def issuer_chain(self) -> list[x509.Certificate]:
        """Certificates to send after a certificate this CA issued: this CA's and those above, root excluded."""
        return [] if self.is_root else [self.certificate, *self.intermediates]

    def _check_subject(self, subject_id: str, role: CertificateRole) -> None:
        validate_node_id(subject_id)
        # A node may issue its own leaf certificates (key rotation without its parent), but a CA certificate
        # only for a strict descendant: its own CA certificate comes from its parent, or, at the top of the
        # tree, from the root (an offline root certifying the province node's CA).
        own_ca_from_root = role is CertificateRole.CA and self.is_root
        if not is_ancestor(self.node_id, subject_id, or_self=role is not CertificateRole.CA or own_ca_from_root):
            raise PermissionDeniedError(
                f"CA {self.node_id} cannot issue a {role.value} certificate for {subject_id}: "
                f"outside its subtree {node_uri(self.node_id)}/"
            )

    def _window(self, now: dt.datetime, validity: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
        start = aware_utc(now, "now")
        issuer_end = self.certificate.not_valid_after_utc
        if start >= issuer_end:
            raise PermissionDeniedError(f"CA {certificate_label(self.certificate)} expired at {issuer_end.isoformat()}")
        end = start + validity
        if end > issuer_end:
            # A certificate outliving its issuer would fail verification after the issuer expires anyway.
            logger.info("validity of a certificate from %s clamped to the CA's end %s", self.node_id, issuer_end)
            end = issuer_end
        return max(start - CLOCK_SKEW_ALLOWANCE, self.certificate.not_valid_before_utc), end

    def issue(
        self,
        subject_id: str,
        role: CertificateRole,
        public_key: SubjectPublicKey,
        *,
        now: dt.datetime,
        validity: dt.timedelta | None = None,
        system: str = "",
    ) -> x509.Certificate:
        """Issue a certificate binding subject_id to public_key for role; PermissionDeniedError outside the subtree.

        An INGEST certificate needs ``system``, the name of the business system holding it (common name).
        """
        self._check_subject(subject_id, role)
        if role is CertificateRole.INGEST:
            validate_system_name(system)
        elif system:
            raise InvalidArgumentError(f"only an ingest certificate names a system, not a {role.value} certificate")
        if role is CertificateRole.REPORT:
            if not isinstance(public_key, Ed25519PublicKey):
                raise InvalidArgumentError(f"a report certificate for {subject_id} needs an Ed25519 key")
        elif not is_p256_key(public_key):
            raise InvalidArgumentError(f"a {role.value} certificate for {subject_id} needs an ECDSA P-256 key")
        default = CA_VALIDITY if role is CertificateRole.CA else LEAF_VALIDITY
        not_before, not_after = self._window(now, validity or default)
        certificate = _build(
            subject_id=subject_id,
            role=role,
            public_key=public_key,
            issuer_name=self.certificate.subject,
            issuer_key=self.private_key,
            not_before=not_before,
            not_after=not_after,
            system=system,
        )
        logger.info(
            "CA %s issued %s certificate for %s, serial %x, until %s",
            self.node_id,
            role.value,
            subject_id,
            certificate.serial_number,
            not_after.isoformat(),
        )
        return certificate


# --- revocation lists -------------------------------------------------------------------------------------


def build_crl(
    authority: CertificateAuthority,
    revoked: Iterable[tuple[int, dt.datetime]],
    *,
    now: dt.datetime,
    next_update: dt.timedelta = dt.timedelta(days=7),
) -> x509.CertificateRevocationList:
    """An X.509 CRL signed by authority listing (serial, revoked at) pairs."""
    start = aware_utc(now, "now")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.certificate.subject)
        .last_update(start)
        .next_update(start + next_update)
    )
    for serial, revoked_at in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(aware_utc(revoked_at, "revocation time"))
            .build()
        )
    return builder.sign(authority.private_key, hashes.SHA256())
