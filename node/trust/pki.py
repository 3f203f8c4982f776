"""PKI that mirrors the node tree: root and node CAs, TLS and report-signing certificates, chain checks, CRLs.

Every certificate binds one node id twice in its subjectAltName: the identity, a URI ``supnet://gd/gz/py``,
and a DNS name ``py.gz.gd.supnet`` (the id's segments reversed under ``supnet``) that TLS stacks can match.

Why the DNS name: X.509 URI name constraints are matched on the URI's *host* only (RFC 5280 4.2.1.10), so a
constraint cannot express the path-style subtree ``supnet://gd/gz/``. Measured with cryptography 50 and
grpcio 1.85 (BoringSSL): cryptography's verifier refuses every chain holding a URI (or directoryName) constraint
("unsupported name constraint"), and BoringSSL refuses a ``supnet://gd/gz/`` constraint even for a URI inside
it, because it compares the host ``gd`` with the whole constraint. DNS constraints, on the other hand, are
hierarchical and enforced by both: a node CA carries a permitted DNS subtree ``gz.gd.supnet``, so neither a
TLS handshake nor cryptography's verifier accepts a certificate it issued for ``sz.gd.supnet``. The URI is
still the identity, and :func:`verify_node_chain` enforces the subtree rule on the URIs ITSELF at every step
(the issuer's id must be an ancestor of the subject's id), so the rule holds even for a certificate that
leaves out its DNS name.

Roles: a CA certificate; a node's TLS certificate (server and client authentication); its report certificate
(Ed25519, REPORT_SIGNING_EKU); and an INGEST certificate, a TLS client certificate that a node's own CA issues
to a business approval system feeding that node (URI SAN = that node's id, INGEST_CLIENT_EKU, no server
authentication, common name ``<node id> ingest <system>``), so a node's TLS certificate can never ingest and
an ingest credential can never act as a node.

Key types: CA and TLS keys are ECDSA P-256 (grpcio's TLS does not negotiate Ed25519 certificates); a report
certificate carries the node's Ed25519 report-signing key (see federation.signing), signed by an ECDSA CA.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import logging
import os
import re
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from federation import (
    IntegrityError,
    InvalidArgumentError,
    KeyResolver,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    key_id,
    verify_envelope,
)
from federation.proto.v1.common_pb2 import SignedEnvelope

__all__ = [
    "DNS_SUFFIX",
    "INGEST_CLIENT_EKU",
    "REPORT_SIGNING_EKU",
    "URI_SCHEME",
    "CertificateAuthority",
    "CertificateKeyResolver",
    "CertificateRole",
    "PkiDirectory",
    "build_crl",
    "certificate_label",
    "certificate_node_id",
    "certificate_role",
    "chain_der",
    "expiry_warnings",
    "generate_ec_key",
    "is_ancestor",
    "load_certificate",
    "load_certificates",
    "load_crl",
    "load_ec_private_key",
    "node_dns_name",
    "node_id_from_uri",
    "node_uri",
    "parse_der_chain",
    "revoked_serials",
    "save_certificates",
    "save_crl",
    "save_private_key",
    "validate_node_id",
    "validate_system_name",
    "verify_node_chain",
]

logger = logging.getLogger(__name__)

URI_SCHEME = "supnet"
DNS_SUFFIX = "supnet"
# A private extended key usage naming "supnet report signing", under the UUID arc 2.25 (X.667) so that it
# needs no registration; a report certificate must carry it, so a TLS certificate can never sign reports.
REPORT_SIGNING_EKU = x509.ObjectIdentifier("2.25.213880387216012245331339125718596622977")
# The same kind of private usage for "supnet ingest client": only a certificate carrying it may stream records.
INGEST_CLIENT_EKU = x509.ObjectIdentifier("2.25.236259003323228928435006058459213442902")
ORGANIZATION = "supnet"

ROOT_VALIDITY = dt.timedelta(days=3650)
CA_VALIDITY = dt.timedelta(days=1825)
LEAF_VALIDITY = dt.timedelta(days=365)
# Certificates start a little in the past so that a peer whose clock lags ours accepts them at once.
CLOCK_SKEW_ALLOWANCE = dt.timedelta(minutes=5)
MAX_CHAIN_DEPTH = 16

# A node id segment usable both in the id and as a DNS label: letters, digits, inner hyphens.
_SEGMENT = re.compile(r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$")
# The name of a business system holding an ingest credential (goes into the certificate's common name).
_SYSTEM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")


class CertificateRole(enum.StrEnum):
    """What a certificate is for; written into its common name and checked from its extensions."""

    CA = "ca"
    TLS = "tls"
    REPORT = "report"
    INGEST = "ingest"


# --- node ids, URIs and DNS names -------------------------------------------------------------------------


def validate_node_id(node_id: str) -> str:
    """Return node_id if it can appear in a certificate; InvalidArgumentError naming the bad segment if not.

    Stricter than the config pattern on purpose: a segment becomes a DNS label, so ``_`` and a trailing
    ``-`` are refused here rather than producing certificates that TLS stacks reject later.
    """
    if not node_id:
        raise InvalidArgumentError("node id must not be empty")
    for segment in node_id.split("."):
        if not _SEGMENT.match(segment):
            raise InvalidArgumentError(
                f"node id {node_id!r}: segment {segment!r} must be 1-32 lowercase letters, digits or inner "
                "hyphens starting with a letter (it becomes a DNS label in certificates)"
            )
    return node_id


def node_uri(node_id: str) -> str:
    """The URI SAN of a node: ``gd.gz.py`` -> ``supnet://gd/gz/py``."""
    return f"{URI_SCHEME}://" + "/".join(validate_node_id(node_id).split("."))


def node_id_from_uri(uri: str) -> str:
    """The node id of a supnet URI: ``supnet://gd/gz/py`` -> ``gd.gz.py``; InvalidArgumentError otherwise."""
    prefix = f"{URI_SCHEME}://"
    if not uri.startswith(prefix):
        raise InvalidArgumentError(f"URI {uri!r} is not a {prefix} node URI")
    path = uri[len(prefix) :]
    if not path or any(mark in path for mark in "?#:@") or "." in path:
        raise InvalidArgumentError(f"URI {uri!r} must be {prefix}segment/segment/... with no host extras")
    try:
        return validate_node_id(".".join(path.split("/")))
    except InvalidArgumentError as error:
        raise InvalidArgumentError(f"URI {uri!r}: {error}") from error


def node_dns_name(node_id: str) -> str:
    """The DNS SAN of a node: ``gd.gz.py`` -> ``py.gz.gd.supnet`` (reversed, so subtrees are DNS subtrees)."""
    return ".".join([*reversed(validate_node_id(node_id).split(".")), DNS_SUFFIX])


def is_ancestor(ancestor: str, descendant: str, *, or_self: bool = False) -> bool:
    """True if ``ancestor`` is a proper prefix of ``descendant`` in the tree (or equal, with or_self)."""
    if ancestor == descendant:
        return or_self
    return descendant.startswith(ancestor + ".")


# --- keys and certificate inspection ----------------------------------------------------------------------


def generate_ec_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key (CA and TLS keys)."""
    return ec.generate_private_key(ec.SECP256R1())


def _is_p256(key: object) -> bool:
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


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def certificate_role(cert: x509.Certificate) -> CertificateRole | None:
    """The role a certificate can play, judged from its extensions and key type (None: none of ours)."""
    if _is_ca(cert):
        return CertificateRole.CA if _is_p256(cert.public_key()) else None
    usages = _extended_key_usages(cert)
    public_key = cert.public_key()
    if isinstance(public_key, Ed25519PublicKey) and REPORT_SIGNING_EKU in usages:
        return CertificateRole.REPORT
    if _is_p256(public_key) and INGEST_CLIENT_EKU in usages:
        # Checked before TLS: an ingest certificate is a client certificate of its own kind, never a node's.
        return CertificateRole.INGEST
    if _is_p256(public_key) and {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= usages:
        return CertificateRole.TLS
    return None


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


def _aware(at: dt.datetime, what: str) -> dt.datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidArgumentError(f"{what} must be a timezone-aware datetime, got naive {at.isoformat()}")
    return at.astimezone(dt.UTC)


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
    ) -> CertificateAuthority:
        """A self-signed root CA for the province node (``supnet pki init-root``)."""
        validate_node_id(node_id)
        key = private_key or generate_ec_key()
        if not _is_p256(key):
            raise InvalidArgumentError("a root CA key must be ECDSA P-256")
        start = _aware(now, "now")
        certificate = _build(
            subject_id=node_id,
            role=CertificateRole.CA,
            public_key=key.public_key(),
            issuer_name=_subject_name(node_id, CertificateRole.CA),
            issuer_key=key,
            not_before=start - CLOCK_SKEW_ALLOWANCE,
            not_after=start + validity,
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
        # only for a strict descendant: its own CA certificate comes from its parent.
        if not is_ancestor(self.node_id, subject_id, or_self=role is not CertificateRole.CA):
            raise PermissionDeniedError(
                f"CA {self.node_id} cannot issue a {role.value} certificate for {subject_id}: "
                f"outside its subtree {node_uri(self.node_id)}/"
            )

    def _window(self, now: dt.datetime, validity: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
        start = _aware(now, "now")
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
        elif not _is_p256(public_key):
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


# --- verification ------------------------------------------------------------------------------------------


def _verifier_policies(leaf_is_ca: bool) -> tuple[ExtensionPolicy, ExtensionPolicy]:
    # Web PKI defaults, except that an end-entity's extended key usage is ours to judge: a report certificate
    # carries the report-signing usage, not clientAuth (checked in _check_role). A CA certificate checked on
    # its own (a child's CA, a CRL issuer) is held to the CA rules in the leaf position.
    ca_policy = ExtensionPolicy.webpki_defaults_ca()
    if leaf_is_ca:
        return ca_policy, ExtensionPolicy.webpki_defaults_ca()
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
    return ca_policy, ee_policy


def _valid_at(cert: x509.Certificate, at: dt.datetime) -> str | None:
    """None if cert is valid at ``at``, else why not (naming the certificate)."""
    if at < cert.not_valid_before_utc:
        return f"certificate {certificate_label(cert)} is not valid before {cert.not_valid_before_utc.isoformat()}"
    if at > cert.not_valid_after_utc:
        return f"certificate {certificate_label(cert)} expired at {cert.not_valid_after_utc.isoformat()}"
    return None


def _diagnose(
    cert: x509.Certificate, intermediates: Sequence[x509.Certificate], root: x509.Certificate, at: dt.datetime
) -> str | None:
    """Name the first certificate on the name-matched path that is outside its validity period, if any."""
    current = cert
    for _ in range(MAX_CHAIN_DEPTH):
        problem = _valid_at(current, at)
        if problem:
            return problem
        if current.issuer == root.subject:
            return _valid_at(root, at)
        issuer = next((candidate for candidate in intermediates if candidate.subject == current.issuer), None)
        if issuer is None or issuer is current:
            return None
        current = issuer
    return None


def _check_role(cert: x509.Certificate, role: CertificateRole | None) -> None:
    if role is None:
        return
    actual = certificate_role(cert)
    if actual is not role:
        raise UnauthenticatedError(
            f"certificate {certificate_label(cert)} is a {actual.value if actual else 'foreign'} certificate, "
            f"not a {role.value} certificate"
        )


def _verified_path(
    cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    root: x509.Certificate,
    at: dt.datetime,
    *,
    role: CertificateRole | None,
    revoked: Collection[int],
) -> tuple[str, list[x509.Certificate]]:
    """Verify cert up to root; return its node id and the verified path (leaf first, root last)."""
    moment = _aware(at, "verification time")
    leaf_id = certificate_node_id(cert)
    _check_role(cert, role)
    store = Store([root])
    ca_policy, ee_policy = _verifier_policies(_is_ca(cert))
    verifier = (
        PolicyBuilder()
        .store(store)
        .time(moment)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(cert, list(intermediates))
    except VerificationError as error:
        reason = _diagnose(cert, intermediates, root, moment) or str(error)
        raise UnauthenticatedError(
            f"certificate {certificate_label(cert)} for {leaf_id} does not verify up to root "
            f"{certificate_label(root)} at {moment.isoformat()}: {reason}"
        ) from error
    path = list(verified.chain)
    # The library checked signatures, validity, CA flags, key usages and the DNS name constraints. The subtree
    # rule on our path-style URIs is ours to enforce (no standard verifier can), at every step of the path.
    ids = [certificate_node_id(link) for link in path]
    for index in range(len(path) - 1):
        subject, issuer = path[index], path[index + 1]
        subject_id, issuer_id = ids[index], ids[index + 1]
        # A node may hold leaf certificates from its own CA; a CA certificate always comes from an ancestor.
        if not is_ancestor(issuer_id, subject_id, or_self=not _is_ca(subject)):
            raise UnauthenticatedError(
                f"certificate {certificate_label(subject)} names {subject_id}, outside the subtree of its issuer "
                f"{issuer_id} ({certificate_label(issuer)})"
            )
    for link in path[:-1]:
        if link.serial_number in revoked:
            raise UnauthenticatedError(f"certificate {certificate_label(link)} of {leaf_id}'s chain is revoked")
    return leaf_id, path


def verify_node_chain(
    cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    root: x509.Certificate,
    at: dt.datetime,
    *,
    role: CertificateRole | None = None,
    revoked: Collection[int] = frozenset(),
) -> str:
    """Verify a node's certificate up to the root at time ``at`` and return the node id it binds.

    Checks signatures, validity at ``at``, CA flags and key usages, the DNS name constraints, and the subtree
    rule at every step (each issuer's node id is an ancestor of its subject's; a node may issue its own leaf
    certificates), exactly one supnet identity per certificate, the leaf's role if given, and that no
    certificate of the path (root excepted) has a serial in ``revoked``. Raises UnauthenticatedError naming
    the offending certificate.
    """
    node_id, _ = _verified_path(cert, intermediates, root, at, role=role, revoked=revoked)
    return node_id


def parse_der_chain(chain: Sequence[bytes]) -> list[x509.Certificate]:
    """Parse DER certificates (a SignedEnvelope.certificate_chain); UnauthenticatedError for garbage."""
    certificates = []
    for index, der in enumerate(chain):
        try:
            certificates.append(x509.load_der_x509_certificate(der))
        except ValueError as error:
            raise UnauthenticatedError(f"certificate {index} of the chain is not valid DER: {error}") from error
    return certificates


def chain_der(leaf: x509.Certificate, issuers: Iterable[x509.Certificate]) -> list[bytes]:
    """DER bytes of leaf then its issuers, for SignedEnvelope.certificate_chain (leave the root out)."""
    return [certificate.public_bytes(serialization.Encoding.DER) for certificate in (leaf, *issuers)]


# --- revocation --------------------------------------------------------------------------------------------


def build_crl(
    authority: CertificateAuthority,
    revoked: Iterable[tuple[int, dt.datetime]],
    *,
    now: dt.datetime,
    next_update: dt.timedelta = dt.timedelta(days=7),
) -> x509.CertificateRevocationList:
    """An X.509 CRL signed by authority listing (serial, revoked at) pairs."""
    start = _aware(now, "now")
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
            .revocation_date(_aware(revoked_at, "revocation time"))
            .build()
        )
    return builder.sign(authority.private_key, hashes.SHA256())


def revoked_serials(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> set[int]:
    """The serials a CRL revokes, after checking issuer signed it; IntegrityError if it did not."""
    if crl.issuer != issuer.subject:
        raise IntegrityError(
            f"revocation list of {crl.issuer.rfc4514_string()} is not from {certificate_label(issuer)}"
        )
    public_key = issuer.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(public_key):
        raise IntegrityError(f"revocation list signature does not verify with {certificate_label(issuer)}")
    return {entry.serial_number for entry in crl}


# --- resolving report keys from certificate chains ---------------------------------------------------------


@dataclass(frozen=True)
class _VerifiedChain:
    node_id: str
    public_key: Ed25519PublicKey
    serials: frozenset[int]
    labels: dict[int, str]
    not_before: dt.datetime
    not_after: dt.datetime


class CertificateKeyResolver:
    """Finds a signer's Ed25519 report key in the certificate chain it sent, verified up to the root.

    This is how any ancestor verifies any descendant's report offline: the envelope carries the report
    certificate and the CA certificates above it; only the root is configured. A chain containing a revoked
    serial, or naming another node than the signer, raises UnauthenticatedError (a revoked credential no
    longer authenticates anyone, like a failed TLS handshake). Use :meth:`for_envelope` with
    federation.signing.verify_with_resolver, or :meth:`verify`. ``resolve`` alone answers from chains seen
    before, at the clock's time. Safe to share between server threads.
    """

    CACHE_SIZE = 1024

    def __init__(
        self,
        root: x509.Certificate,
        revoked: Collection[int] = frozenset(),
        *,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._root = root
        self._revoked: set[int] = set(revoked)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._chains: OrderedDict[bytes, _VerifiedChain] = OrderedDict()
        self._by_key: dict[tuple[str, bytes], _VerifiedChain] = {}

    @property
    def root_node_id(self) -> str:
        """The node id of the trusted root."""
        return certificate_node_id(self._root)

    def revoke(self, serials: Iterable[int]) -> None:
        """Refuse these serials from now on (also for chains already seen)."""
        self._revoked.update(serials)

    def _now(self) -> dt.datetime:
        return _aware(self._clock(), "clock time")

    def _verify_chain(self, chain: Sequence[bytes], at: dt.datetime) -> _VerifiedChain:
        if not chain:
            raise UnauthenticatedError("no certificate chain: the signer's report certificate is required")
        fingerprint = hashlib.sha256(b"".join(hashlib.sha256(der).digest() for der in chain)).digest()
        cached = self._chains.get(fingerprint)
        if cached is None or not (cached.not_before <= at <= cached.not_after):
            certificates = parse_der_chain(chain)
            node_id, path = _verified_path(
                certificates[0], certificates[1:], self._root, at, role=CertificateRole.REPORT, revoked=self._revoked
            )
            public_key = certificates[0].public_key()
            assert isinstance(public_key, Ed25519PublicKey)  # _check_role guarantees it
            cached = _VerifiedChain(
                node_id=node_id,
                public_key=public_key,
                serials=frozenset(link.serial_number for link in path[:-1]),
                labels={link.serial_number: certificate_label(link) for link in path[:-1]},
                not_before=max(link.not_valid_before_utc for link in path),
                not_after=min(link.not_valid_after_utc for link in path),
            )
            with self._lock:
                self._chains[fingerprint] = cached
                self._by_key[(node_id, key_id(public_key))] = cached
                while len(self._chains) > self.CACHE_SIZE:
                    _, evicted = self._chains.popitem(last=False)
                    self._by_key.pop((evicted.node_id, key_id(evicted.public_key)), None)
        self._check_revoked(cached)
        return cached

    def _check_revoked(self, verified: _VerifiedChain) -> None:
        hit = verified.serials & self._revoked
        if hit:
            serial = min(hit)
            raise UnauthenticatedError(
                f"certificate {verified.labels.get(serial, f'serial {serial:x}')} of {verified.node_id}'s chain "
                "is revoked"
            )

    def _key_for(self, verified: _VerifiedChain, signer_id: str, wanted_key_id: bytes) -> Ed25519PublicKey:
        if verified.node_id != signer_id:
            raise UnauthenticatedError(
                f"envelope signed as {signer_id or '?'} carries a report certificate of {verified.node_id}"
            )
        actual = key_id(verified.public_key)
        if wanted_key_id != actual:
            raise UnauthenticatedError(
                f"envelope from {signer_id} names key {wanted_key_id.hex() or 'empty'}, its certificate binds "
                f"key {actual.hex()}"
            )
        return verified.public_key

    def resolve_envelope(self, envelope: SignedEnvelope, at: dt.datetime | None = None) -> Ed25519PublicKey:
        """The signer's key from the envelope's own chain, verified at ``at`` (default: the clock's now)."""
        moment = self._now() if at is None else _aware(at, "verification time")
        verified = self._verify_chain(list(envelope.certificate_chain), moment)
        return self._key_for(verified, envelope.signer_id, envelope.key_id)

    def verify(self, envelope: SignedEnvelope, at: dt.datetime | None = None) -> Ed25519PublicKey:
        """Resolve the signer's key from its chain and check the envelope's signature; returns the key.

        Pass ``at`` (e.g. the report's creation time) to check a report signed under a key that has since
        rotated and expired; revocation applies at any time.
        """
        public_key = self.resolve_envelope(envelope, at)
        verify_envelope(envelope, public_key)
        return public_key

    def for_envelope(self, envelope: SignedEnvelope, at: dt.datetime | None = None) -> KeyResolver:
        """A KeyResolver answering from this envelope's chain, for federation.signing.verify_with_resolver."""
        return _EnvelopeResolver(self, envelope, at)

    def resolve(self, signer_id: str, key_id: bytes) -> Ed25519PublicKey:
        """The key of signer_id named key_id from chains verified before; UnauthenticatedError if unknown."""
        verified = self._by_key.get((signer_id, key_id))
        if verified is None:
            raise UnauthenticatedError(
                f"no verified report certificate of {signer_id or '?'} with key {key_id.hex() or 'empty'} is known"
            )
        now = self._now()
        if not (verified.not_before <= now <= verified.not_after):
            raise UnauthenticatedError(
                f"the report certificate chain of {signer_id} for key {key_id.hex()} is not valid at {now.isoformat()}"
            )
        self._check_revoked(verified)
        return verified.public_key


@dataclass(frozen=True)
class _EnvelopeResolver:
    """A KeyResolver bound to one envelope's certificate chain."""

    parent: CertificateKeyResolver
    envelope: SignedEnvelope
    at: dt.datetime | None = None

    def resolve(self, signer_id: str, key_id: bytes) -> Ed25519PublicKey:
        if signer_id != self.envelope.signer_id or key_id != self.envelope.key_id:
            raise UnauthenticatedError(
                f"resolver bound to an envelope of {self.envelope.signer_id} asked for {signer_id}"
            )
        return self.parent.resolve_envelope(self.envelope, self.at)


# --- expiry ------------------------------------------------------------------------------------------------


def expiry_warnings(
    certificates: Iterable[x509.Certificate], *, now: dt.datetime, renew_before: dt.timedelta = dt.timedelta(days=30)
) -> list[str]:
    """One message per certificate that has expired or expires within ``renew_before`` (for a renewal job)."""
    moment = _aware(now, "now")
    warnings = []
    for certificate in certificates:
        end = certificate.not_valid_after_utc
        if end < moment:
            warnings.append(f"certificate {certificate_label(certificate)} expired at {end.isoformat()}")
        elif end - moment <= renew_before:
            days = (end - moment).total_seconds() / 86400
            warnings.append(
                f"certificate {certificate_label(certificate)} expires at {end.isoformat()} (in {days:.1f} days): "
                "renew it"
            )
    return warnings


# --- PEM files ---------------------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Write data readable by the owner only, also when the file already existed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # An existing file keeps its old mode under O_CREAT, so set it explicitly.
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, data)
    finally:
        os.close(descriptor)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as error:
        raise NotFoundError(f"{what} file {path} does not exist") from error
    except OSError as error:
        raise InvalidArgumentError(f"{what} file {path} cannot be read: {error.strerror}") from error


def save_private_key(path: str | Path, private_key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> None:
    """Save a private key as unencrypted PEM PKCS#8 with mode 0600."""
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(Path(path), pem)


def load_ec_private_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    """Load a PEM ECDSA P-256 private key; warns if others can read the file."""
    source = Path(path)
    data = _read(source, "private key")
    if source.stat().st_mode & 0o077:
        logger.warning("private key file %s is readable by group or others; chmod 600 it", source)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise InvalidArgumentError(f"private key file {source} is not an unencrypted PEM key: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _is_p256(key):
        raise InvalidArgumentError(f"private key file {source} holds a {type(key).__name__}, not an ECDSA P-256 key")
    return key


def save_certificates(path: str | Path, certificates: Iterable[x509.Certificate]) -> None:
    """Save certificates as concatenated PEM (a chain file when more than one)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certificates))


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    """Load every PEM certificate of a file, in order; InvalidArgumentError naming the file if none parse."""
    source = Path(path)
    data = _read(source, "certificate")
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
        return x509.load_pem_x509_crl(_read(source, "revocation list"))
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

    def save_authority(self, authority: CertificateAuthority) -> None:
        """Save this node's CA key, CA chain and the root."""
        save_private_key(self.file("ca.key"), authority.private_key)
        save_certificates(self.file("ca.pem"), [authority.certificate, *authority.intermediates])
        self.save_root(authority.root)

    def load_authority(self) -> CertificateAuthority:
        """The CA of this node (its node id read from the CA certificate)."""
        chain = load_certificates(self.file("ca.pem"))
        root = self.load_root()
        key = load_ec_private_key(self.file("ca.key"))
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
        data = _read(source, "private key")
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
