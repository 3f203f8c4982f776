"""Enrolment of a child node: certificate requests, their proof, and the certificates its parent issues.

The parent runs ``issue_token(child_id)`` and hands the token to the child's operator out of band; the child
sends the token with certificate signing requests (CSRs) for its TLS key, its report-signing key and, if it
will have children of its own, its CA key. The parent checks the CSRs' signatures (proof that the child holds
each private key), that the token is known, unused, unexpired and was issued for exactly this child, that
the child is its direct child, and then issues the certificates. Tokens, the discovery token the operator
hands over and the parent's token store (hashes only) are node.trust.enrolment_tokens'.

Over the network (``supnet enroll``) the token is never sent. The child sends a :func:`token_id` (a one-way
function of the stored hash, naming the token without revealing it) and a :func:`enrolment_proof`:
HMAC-SHA256 keyed with ``sha256(token)`` over :func:`enrolment_request_bytes` (child id, CSRs, token id). The
parent holds that key (it stores exactly ``sha256(token)``), an eavesdropper does not, so nobody on the path
can enrol their own keys or alter the request; a tampered request does not use up the token. The child then
accepts only an answer under the root whose fingerprint the discovery token carries, so nobody can hand it a
false root either (:meth:`EnrolmentAuthority.redeem_proof`, :func:`check_discovery_root`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from federation import InvalidArgumentError, PermissionDeniedError, SupnetError, UnauthenticatedError
from node.trust.chains import verify_node_chain
from node.trust.enrolment_tokens import (
    TOKEN_PREFIX,
    TokenRecord,
    TokenStore,
    check_discovery_root,
    hash_token,
    parse_discovery_token,
    token_id,
)
from node.trust.node_ids import node_dns_name, node_uri, validate_node_id
from node.trust.pki import CertificateAuthority, CertificateRole, aware_utc, certificate_node_id

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "EnrolmentAuthority",
    "EnrolmentRequest",
    "IssuedCertificates",
    "build_enrolment_request",
    "check_issued",
    "enrolment_proof",
    "enrolment_request_bytes",
    "issue_enrolment_token",
    "proof_key",
]

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_TTL = dt.timedelta(hours=24)
# 32 random bytes: a plain SHA-256 is enough to store it (no password stretching needed for 256-bit secrets).
TOKEN_BYTES = 32
_REQUEST_DOMAIN = b"supnet/v1/enrolment-request\x00"


# --- request proofs (enrolment over the network) -----------------------------------------------------------


def proof_key(token: str) -> bytes:
    """The HMAC key of enrolment proofs: raw SHA-256 of the token (the parent stores its hex form)."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def enrolment_request_bytes(child_id: str, request: EnrolmentRequest, request_token_id: str) -> bytes:
    """The canonical bytes a proof covers: domain, then length-prefixed child id, CSRs and token id."""
    return _REQUEST_DOMAIN + b"".join(
        _field(part)
        for part in (
            child_id.encode("utf-8"),
            request.tls_csr,
            request.report_csr,
            request.ca_csr or b"",
            request_token_id.encode("ascii"),
        )
    )


def enrolment_proof(key: bytes, child_id: str, request: EnrolmentRequest, request_token_id: str) -> bytes:
    """HMAC-SHA256 with ``key`` (:func:`proof_key` of the token) over :func:`enrolment_request_bytes`."""
    return hmac.new(key, enrolment_request_bytes(child_id, request, request_token_id), hashlib.sha256).digest()


# --- requests and answers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnrolmentRequest:
    """The child's certificate signing requests (DER): TLS key, report key, and optionally a CA key."""

    tls_csr: bytes
    report_csr: bytes
    ca_csr: bytes | None = None


def _csr(node_id: str, role: CertificateRole, key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{node_id} {role.value}")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(node_uri(node_id)), x509.DNSName(node_dns_name(node_id))]
            ),
            critical=False,
        )
    )
    # Ed25519 signs without a separate hash algorithm.
    request = builder.sign(key, None if isinstance(key, Ed25519PrivateKey) else hashes.SHA256())
    return request.public_bytes(serialization.Encoding.DER)


def build_enrolment_request(
    child_id: str,
    tls_key: ec.EllipticCurvePrivateKey,
    report_key: Ed25519PrivateKey,
    ca_key: ec.EllipticCurvePrivateKey | None = None,
) -> EnrolmentRequest:
    """The child side: CSRs naming child_id, each signed by its own private key (proof of possession)."""
    validate_node_id(child_id)
    return EnrolmentRequest(
        tls_csr=_csr(child_id, CertificateRole.TLS, tls_key),
        report_csr=_csr(child_id, CertificateRole.REPORT, report_key),
        ca_csr=_csr(child_id, CertificateRole.CA, ca_key) if ca_key is not None else None,
    )


@dataclass(frozen=True)
class IssuedCertificates:
    """What the parent returns: the child's certificates, the parent's issuer chain and the root."""

    child_id: str
    tls_certificate: x509.Certificate
    report_certificate: x509.Certificate
    ca_certificate: x509.Certificate | None
    issuer_chain: tuple[x509.Certificate, ...]
    root: x509.Certificate

    def tls_chain(self) -> list[x509.Certificate]:
        """The TLS certificate then its issuers (root excluded): what the child presents in handshakes."""
        return [self.tls_certificate, *self.issuer_chain]

    def report_chain(self) -> list[x509.Certificate]:
        """The report certificate then its issuers (root excluded): what goes into SignedEnvelope."""
        return [self.report_certificate, *self.issuer_chain]

    def serials(self) -> list[int]:
        """Serial numbers of every certificate issued here: what the parent records to revoke the child later."""
        issued = [self.tls_certificate, self.report_certificate]
        if self.ca_certificate is not None:
            issued.append(self.ca_certificate)
        return [certificate.serial_number for certificate in issued]

    def authority(self, ca_key: ec.EllipticCurvePrivateKey) -> CertificateAuthority:
        """The child's own CA from its CA key and the issued CA certificate."""
        if self.ca_certificate is None:
            raise InvalidArgumentError(f"no CA certificate was issued to {self.child_id}")
        if ca_key.public_key() != self.ca_certificate.public_key():
            raise InvalidArgumentError(f"the CA key given does not match the CA certificate of {self.child_id}")
        return CertificateAuthority(
            node_id=self.child_id,
            private_key=ca_key,
            certificate=self.ca_certificate,
            root=self.root,
            intermediates=self.issuer_chain,
        )


def _load_csr(
    data: bytes | None, field: str, child_id: str, expected: type[ec.EllipticCurvePublicKey] | type[Ed25519PublicKey]
) -> x509.CertificateSigningRequest:
    """Parse one CSR and check its proof of possession, key type and the one identity it names."""
    if not data:
        raise InvalidArgumentError(f"enrolment of {child_id}: {field} is empty")
    try:
        request = x509.load_der_x509_csr(data)
    except ValueError as error:
        raise InvalidArgumentError(f"enrolment of {child_id}: {field} is not a DER CSR: {error}") from error
    if not request.is_signature_valid:
        raise InvalidArgumentError(
            f"enrolment of {child_id}: {field} signature does not verify (no proof of holding the key)"
        )
    public_key = request.public_key()
    if not isinstance(public_key, expected) or (
        isinstance(public_key, ec.EllipticCurvePublicKey) and not isinstance(public_key.curve, ec.SECP256R1)
    ):
        wanted = "Ed25519" if expected is Ed25519PublicKey else "ECDSA P-256"
        raise InvalidArgumentError(
            f"enrolment of {child_id}: {field} holds a {type(public_key).__name__}, not {wanted}"
        )
    try:
        named = certificate_node_id(request)
    except SupnetError as error:
        raise InvalidArgumentError(f"enrolment of {child_id}: {field}: {error}") from error
    if named != child_id:
        raise PermissionDeniedError(f"enrolment of {child_id}: {field} asks for node {named}")
    return request


def issue_enrolment_token(
    store: TokenStore, issuer_id: str, child_id: str, ttl: dt.timedelta, *, now: dt.datetime
) -> tuple[str, TokenRecord]:
    """A one-time token for a direct child of ``issuer_id``, stored (hash only) in ``store``; no key is needed."""
    validate_node_id(child_id)
    if child_id.rpartition(".")[0] != issuer_id:
        raise PermissionDeniedError(f"node {issuer_id} enrols only its direct children; {child_id} is not one")
    if ttl <= dt.timedelta(0):
        raise InvalidArgumentError(f"token lifetime must be positive, got {ttl}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    moment = aware_utc(now, "now")
    record = TokenRecord(
        token_hash=hash_token(token),
        child_id=child_id,
        issuer_id=issuer_id,
        created_at=moment,
        expires_at=moment + ttl,
    )
    store.add(record)
    logger.info(
        "enrolment token %s… issued for %s, valid until %s",
        record.token_hash[:12],
        child_id,
        record.expires_at.isoformat(),
    )
    return token, record


class EnrolmentAuthority:
    """The parent side of enrolment: issues one-time tokens and redeems them for certificates."""

    def __init__(
        self,
        authority: CertificateAuthority,
        store: TokenStore,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        leaf_validity: dt.timedelta | None = None,
        ca_validity: dt.timedelta | None = None,
    ) -> None:
        self.authority = authority
        self.store = store
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._leaf_validity = leaf_validity
        self._ca_validity = ca_validity

    def _now(self) -> dt.datetime:
        return aware_utc(self._clock(), "clock time")

    def _check_direct_child(self, child_id: str) -> None:
        validate_node_id(child_id)
        if child_id.rpartition(".")[0] != self.authority.node_id:
            raise PermissionDeniedError(
                f"node {self.authority.node_id} enrols only its direct children; {child_id} is not one"
            )

    def issue_token(self, child_id: str, ttl: dt.timedelta = DEFAULT_TOKEN_TTL) -> tuple[str, TokenRecord]:
        """A fresh one-time token for child_id valid for ttl, and the record stored for it (hash only)."""
        return issue_enrolment_token(self.store, self.authority.node_id, child_id, ttl, now=self._now())

    def _usable_record(self, token: str, child_id: str, now: dt.datetime) -> TokenRecord:
        # The token itself never appears in a message or log line; its hash prefix does.
        record = self.store.get(hash_token(token)) if token.startswith(TOKEN_PREFIX) else None
        if record is None or record.issuer_id != self.authority.node_id:
            raise UnauthenticatedError(f"enrolment of {child_id}: the token is not one this node issued")
        return self._check_record(record, child_id, now)

    def _check_record(self, record: TokenRecord, child_id: str, now: dt.datetime) -> TokenRecord:
        if record.child_id != child_id:
            raise PermissionDeniedError(
                f"enrolment of {child_id}: the token was issued for {record.child_id}, not {child_id}"
            )
        if record.used_at is not None:
            raise UnauthenticatedError(
                f"enrolment of {child_id}: the token was already used at {record.used_at.isoformat()}"
            )
        if now >= record.expires_at:
            raise UnauthenticatedError(f"enrolment of {child_id}: the token expired at {record.expires_at.isoformat()}")
        return record

    def redeem(self, token: str, child_id: str, request: EnrolmentRequest) -> IssuedCertificates:
        """Check token and CSRs, burn the token, and issue the child's certificates.

        UnauthenticatedError: unknown, used or expired token. PermissionDeniedError: token for another child,
        not a direct child, CSR naming another node. InvalidArgumentError: a malformed CSR (the token is
        then NOT used up, so the child can retry with a corrected request). A discovery token
        (``<token>.<root fingerprint>``) is accepted too if the fingerprint is this node's root's.
        """
        self._check_direct_child(child_id)
        if "." in token:
            discovered = parse_discovery_token(token)
            check_discovery_root(self.authority.root, discovered.root_fingerprint, source=self.authority.node_id)
            token = discovered.token
        now = self._now()
        record = self._usable_record(token, child_id, now)
        return self._issue(record, child_id, request, now)

    def redeem_proof(
        self, child_id: str, request: EnrolmentRequest, request_token_id: str, proof: bytes
    ) -> IssuedCertificates:
        """Redeem over the network: the token is named by its id and proved by an HMAC, never sent.

        The proof is checked first, so a request altered in transit (another child id, swapped CSRs) is
        refused (UnauthenticatedError) without using up the token. Then as :meth:`redeem`.
        """
        self._check_direct_child(child_id)
        record = next(
            (
                candidate
                for candidate in self.store.records()
                if candidate.issuer_id == self.authority.node_id
                and hmac.compare_digest(token_id(candidate.token_hash), request_token_id)
            ),
            None,
        )
        if record is None:
            raise UnauthenticatedError(f"enrolment of {child_id}: the token is not one this node issued")
        expected = enrolment_proof(bytes.fromhex(record.token_hash), child_id, request, request_token_id)
        if not hmac.compare_digest(expected, proof):
            raise UnauthenticatedError(
                f"enrolment of {child_id}: the request's proof does not verify with token {record.token_hash[:12]}… "
                "(the request was altered in transit, or the token was mistyped); the token is not used up"
            )
        now = self._now()
        self._check_record(record, child_id, now)
        return self._issue(record, child_id, request, now)

    def _issue(
        self, record: TokenRecord, child_id: str, request: EnrolmentRequest, now: dt.datetime
    ) -> IssuedCertificates:
        tls_request = _load_csr(request.tls_csr, "tls_csr", child_id, ec.EllipticCurvePublicKey)
        report_request = _load_csr(request.report_csr, "report_csr", child_id, Ed25519PublicKey)
        ca_request = (
            _load_csr(request.ca_csr, "ca_csr", child_id, ec.EllipticCurvePublicKey) if request.ca_csr else None
        )
        if ca_request is not None and ca_request.public_key() == tls_request.public_key():
            raise InvalidArgumentError(f"enrolment of {child_id}: the CA key and the TLS key must differ")
        if not self.store.mark_used(record.token_hash, now):
            # Another redemption won the race between our check and now.
            raise UnauthenticatedError(f"enrolment of {child_id}: the token was already used")
        issue = self.authority.issue
        tls_key = tls_request.public_key()
        report_key = report_request.public_key()
        assert isinstance(tls_key, ec.EllipticCurvePublicKey)  # checked by _load_csr
        assert isinstance(report_key, Ed25519PublicKey)
        issued = IssuedCertificates(
            child_id=child_id,
            tls_certificate=issue(child_id, CertificateRole.TLS, tls_key, now=now, validity=self._leaf_validity),
            report_certificate=issue(
                child_id, CertificateRole.REPORT, report_key, now=now, validity=self._leaf_validity
            ),
            ca_certificate=None,
            issuer_chain=tuple(self.authority.issuer_chain),
            root=self.authority.root,
        )
        if ca_request is not None:
            ca_key = ca_request.public_key()
            assert isinstance(ca_key, ec.EllipticCurvePublicKey)
            issued = replace(
                issued,
                ca_certificate=issue(child_id, CertificateRole.CA, ca_key, now=now, validity=self._ca_validity),
            )
        logger.info(
            "enrolled %s with token %s… (CA certificate: %s)",
            child_id,
            record.token_hash[:12],
            "yes" if ca_request is not None else "no",
        )
        return issued


def check_issued(
    issued: IssuedCertificates,
    child_id: str,
    *,
    tls_key: ec.EllipticCurvePrivateKey,
    report_key: Ed25519PrivateKey,
    ca_key: ec.EllipticCurvePrivateKey | None = None,
    trusted_root: x509.Certificate | None = None,
    at: dt.datetime | None = None,
) -> None:
    """The child side: check the answer binds its own keys and id and verifies up to the (expected) root.

    Without ``trusted_root`` the child trusts the root the parent sent (first use); with it, a parent
    answering under another root is refused (UnauthenticatedError).
    """
    moment = aware_utc(at, "at") if at else dt.datetime.now(dt.UTC)
    if trusted_root is not None and issued.root != trusted_root:
        raise UnauthenticatedError(f"enrolment answer for {child_id} comes under another root than the trusted one")
    if issued.child_id != child_id:
        raise UnauthenticatedError(f"enrolment answer is for {issued.child_id}, not {child_id}")
    pairs: list[tuple[str, x509.Certificate, Any, CertificateRole]] = [
        ("TLS", issued.tls_certificate, tls_key.public_key(), CertificateRole.TLS),
        ("report", issued.report_certificate, report_key.public_key(), CertificateRole.REPORT),
    ]
    if ca_key is not None:
        if issued.ca_certificate is None:
            raise UnauthenticatedError(f"enrolment answer for {child_id} lacks the CA certificate requested")
        pairs.append(("CA", issued.ca_certificate, ca_key.public_key(), CertificateRole.CA))
    for label, certificate, public_key, role in pairs:
        if certificate.public_key() != public_key:
            raise UnauthenticatedError(f"the {label} certificate issued to {child_id} does not bind its key")
        named = verify_node_chain(certificate, issued.issuer_chain, issued.root, moment, role=role)
        if named != child_id:
            raise UnauthenticatedError(f"the {label} certificate issued to {child_id} names {named}")
