"""Enrolment on the wire: EnrolRequest/EnrolResponse conversions and the child's side of the call.

The child (``supnet enroll``) generates its keys, sends CSRs with a token id and an HMAC proof (never the
token), and accepts the answer only if the root's fingerprint is the one its token carries, every
certificate binds its own keys and id and verifies up to that root, and the issuer is its parent.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import InvalidArgumentError, UnauthenticatedError, supnet_error_from_rpc
from federation.proto.v1.enrolment_pb2 import EnrolRequest, EnrolResponse
from federation.proto.v1.enrolment_pb2_grpc import EnrolmentServiceStub
from node.trust.enrolment import (
    EnrolmentRequest,
    IssuedCertificates,
    build_enrolment_request,
    check_issued,
    enrolment_proof,
    proof_key,
)
from node.trust.enrolment_tokens import (
    DiscoveryToken,
    check_discovery_root,
    hash_token,
    parse_discovery_token,
    token_id,
)
from node.trust.node_ids import validate_node_id
from node.trust.pki import certificate_label, certificate_node_id, generate_ec_key

__all__ = [
    "DEFAULT_ENROL_TIMEOUT_SECONDS",
    "EnrolmentKeys",
    "ProvedRequest",
    "enrol",
    "issued_from_response",
    "request_from_message",
    "request_message",
    "response_message",
]

logger = logging.getLogger(__name__)

DEFAULT_ENROL_TIMEOUT_SECONDS = 10.0


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class EnrolmentKeys:
    """The private keys a child enrols with (kept in memory until its certificates are checked)."""

    tls: ec.EllipticCurvePrivateKey
    report: Ed25519PrivateKey
    ca: ec.EllipticCurvePrivateKey | None

    @classmethod
    def generate(cls, *, with_ca: bool = True, report: Ed25519PrivateKey | None = None) -> EnrolmentKeys:
        """Fresh TLS (and CA) keys; the report key given (e.g. the node's existing one) or a fresh one."""
        return cls(
            tls=generate_ec_key(),
            report=report or Ed25519PrivateKey.generate(),
            ca=generate_ec_key() if with_ca else None,
        )


@dataclass(frozen=True)
class ProvedRequest:
    """An EnrolRequest as the parent reads it: who, the CSRs, which token and the proof."""

    child_id: str
    request: EnrolmentRequest
    token_id: str
    proof: bytes


def request_message(child_id: str, request: EnrolmentRequest, token: DiscoveryToken) -> EnrolRequest:
    """The wire request: CSRs, the token's id and the HMAC proof over them (the token itself stays home)."""
    request_token_id = token_id(hash_token(token.token))
    return EnrolRequest(
        child_id=child_id,
        tls_csr=request.tls_csr,
        report_csr=request.report_csr,
        ca_csr=request.ca_csr or b"",
        token_id=request_token_id,
        proof=enrolment_proof(proof_key(token.token), child_id, request, request_token_id),
    )


def request_from_message(message: EnrolRequest) -> ProvedRequest:
    """The parent side: read an EnrolRequest; InvalidArgumentError naming a missing field."""
    for field in ("child_id", "tls_csr", "report_csr", "token_id", "proof"):
        if not getattr(message, field):
            raise InvalidArgumentError(f"enrolment request of {message.child_id or '?'}: field {field} is empty")
    return ProvedRequest(
        child_id=message.child_id,
        request=EnrolmentRequest(tls_csr=message.tls_csr, report_csr=message.report_csr, ca_csr=message.ca_csr or None),
        token_id=message.token_id,
        proof=message.proof,
    )


def response_message(issued: IssuedCertificates) -> EnrolResponse:
    """The wire answer carrying the child's certificates, the issuer chain and the root (DER)."""
    return EnrolResponse(
        root_certificate=_der(issued.root),
        tls_certificate=_der(issued.tls_certificate),
        report_certificate=_der(issued.report_certificate),
        ca_certificate=_der(issued.ca_certificate) if issued.ca_certificate is not None else b"",
        issuer_chain=[_der(certificate) for certificate in issued.issuer_chain],
    )


def _parse(data: bytes, what: str, source: str) -> x509.Certificate:
    if not data:
        raise UnauthenticatedError(f"{source} answered without a {what}")
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError as error:
        raise UnauthenticatedError(f"{source} answered a {what} that is not DER: {error}") from error


def issued_from_response(child_id: str, response: EnrolResponse, *, source: str = "the parent") -> IssuedCertificates:
    """The child side: parse an EnrolResponse (UnauthenticatedError naming the unreadable part)."""
    return IssuedCertificates(
        child_id=child_id,
        tls_certificate=_parse(response.tls_certificate, "TLS certificate", source),
        report_certificate=_parse(response.report_certificate, "report certificate", source),
        ca_certificate=(_parse(response.ca_certificate, "CA certificate", source) if response.ca_certificate else None),
        issuer_chain=tuple(
            _parse(der, f"issuer certificate {index}", source) for index, der in enumerate(response.issuer_chain)
        ),
        root=_parse(response.root_certificate, "root certificate", source),
    )


def _check_issuer_is_parent(issued: IssuedCertificates, child_id: str, source: str) -> None:
    """The certificates must come from the child's parent itself, not from another ancestor."""
    parent_id = child_id.rpartition(".")[0]
    issuer = issued.issuer_chain[0] if issued.issuer_chain else issued.root
    issuer_id = certificate_node_id(issuer)
    if issuer_id != parent_id:
        raise UnauthenticatedError(
            f"{source} answered with certificates issued by {issuer_id} ({certificate_label(issuer)}), "
            f"not by {child_id}'s parent {parent_id or '(none)'}"
        )


def enrol(
    address: str,
    token: str | DiscoveryToken,
    child_id: str,
    keys: EnrolmentKeys,
    *,
    timeout: float = DEFAULT_ENROL_TIMEOUT_SECONDS,
    at: dt.datetime | None = None,
) -> IssuedCertificates:
    """Enrol child_id at the enrolment service on ``address``; returns the certificates only once checked.

    Raises InvalidArgumentError for a malformed token, UnavailableError when the parent cannot be reached
    within ``timeout``, the parent's refusal as the matching SupnetError (UnauthenticatedError for an
    unknown, used, expired or mistyped token), and UnauthenticatedError for an answer under another root
    than the token's, certificates that do not bind the child's keys or do not verify, or another issuer.
    """
    validate_node_id(child_id)
    if not child_id.rpartition(".")[0]:
        raise InvalidArgumentError(f"node {child_id} is a root: it has no parent to enrol with (use pki init-root)")
    discovered = parse_discovery_token(token) if isinstance(token, str) else token
    request = build_enrolment_request(child_id, keys.tls, keys.report, keys.ca)
    message = request_message(child_id, request, discovered)
    source = f"the enrolment service at {address}"
    logger.info("enrolling %s at %s with token %s…", child_id, address, message.token_id[:12])
    with grpc.insecure_channel(address) as channel:
        try:
            response = EnrolmentServiceStub(channel).Enroll(message, timeout=timeout)
        except grpc.RpcError as error:
            raise supnet_error_from_rpc(error, peer=source) from error
    issued = issued_from_response(child_id, response, source=source)
    # The root first: every check below is only as good as the root it verifies against.
    check_discovery_root(issued.root, discovered.root_fingerprint, source=source)
    check_issued(
        issued, child_id, tls_key=keys.tls, report_key=keys.report, ca_key=keys.ca, trusted_root=issued.root, at=at
    )
    _check_issuer_is_parent(issued, child_id, source)
    logger.info(
        "enrolled %s at %s: certificates verified up to root %s", child_id, address, discovered.root_fingerprint
    )
    return issued
