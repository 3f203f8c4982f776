"""Checking certificates of the node tree: chains up to the root, signed revocation lists, expiry warnings.

:func:`verify_node_chain` has cryptography's verifier check signatures, validity, CA flags, key usages and the
DNS name constraints, and adds what no standard verifier can: the subtree rule on our path-style URIs at every
step (node.trust.node_ids), exactly one identity per certificate, the leaf's role, and revoked serials.
:func:`revoked_serials` reads a CRL only after checking its issuer signed it. Failures name the offending
certificate (UnauthenticatedError for chains, IntegrityError for a CRL).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from federation import IntegrityError, UnauthenticatedError
from node.trust.node_ids import is_ancestor
from node.trust.pki import (
    CertificateRole,
    aware_utc,
    certificate_label,
    certificate_node_id,
    certificate_role,
    is_ca_certificate,
)

__all__ = [
    "MAX_CHAIN_DEPTH",
    "chain_der",
    "expiry_warnings",
    "parse_der_chain",
    "revoked_serials",
    "verify_node_chain",
    "verify_node_path",
]

MAX_CHAIN_DEPTH = 16


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


def verify_node_path(
    cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    root: x509.Certificate,
    at: dt.datetime,
    *,
    role: CertificateRole | None,
    revoked: Collection[int],
) -> tuple[str, list[x509.Certificate]]:
    """Verify cert up to root; return its node id and the verified path (leaf first, root last)."""
    moment = aware_utc(at, "verification time")
    leaf_id = certificate_node_id(cert)
    _check_role(cert, role)
    store = Store([root])
    ca_policy, ee_policy = _verifier_policies(is_ca_certificate(cert))
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
        # A node may hold leaf certificates from its own CA; a CA certificate always comes from an ancestor, or
        # from the root when it is the root's own node (an offline root certifies the province node's CA).
        own_ca_from_root = index + 1 == len(path) - 1
        if not is_ancestor(issuer_id, subject_id, or_self=not is_ca_certificate(subject) or own_ca_from_root):
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
    node_id, _ = verify_node_path(cert, intermediates, root, at, role=role, revoked=revoked)
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


# --- revocation lists and expiry --------------------------------------------------------------------------


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


def expiry_warnings(
    certificates: Iterable[x509.Certificate], *, now: dt.datetime, renew_before: dt.timedelta = dt.timedelta(days=30)
) -> list[str]:
    """One message per certificate that has expired or expires within ``renew_before`` (for a renewal job)."""
    moment = aware_utc(now, "now")
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
