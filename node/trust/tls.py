"""Mutual TLS between nodes: credentials from a node's ``pki/`` directory, one channel builder, peer identity.

Server side: the node's TLS key and chain, trust anchored at the root, client certificates REQUIRED (grpcio's
``require_client_auth=False`` would not even ask for one). A handshake without a client certificate, with an
expired one or one from another root fails inside BoringSSL: the caller sees UNAVAILABLE and no servicer
runs. What the handshake cannot judge is checked again here, per call, from the auth context
(:meth:`NodeTrust.identify`): the presented chain is re-verified up to our root by
:func:`node.trust.chains.verify_node_chain` (subtree rule on the URIs, exactly one identity), the leaf must be a
TLS or INGEST certificate (a report or CA certificate is not a transport credential), and no certificate of
its path may be listed in this node's revocation list ``pki/crl.pem`` (re-read when the file changes).
Failures raise UnauthenticatedError, which federation.grpc_errors maps to UNAUTHENTICATED.

Client side: :func:`node_channel` checks our own credentials first (an expired own certificate is a clear
UnauthenticatedError naming it and how to renew, not an opaque handshake failure), then opens a channel that
presents our TLS chain and accepts only a server whose certificate names the expected peer
(``grpc.ssl_target_name_override`` = the peer's DNS name), so a child connecting to its parent knows it IS
its parent.

Certificates and keys are re-read when their files change (key rotation, renewal): the server through
grpcio's dynamic certificate configuration on each new connection, clients by :func:`credentials_stamp`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from federation import InvalidArgumentError, NotFoundError, SupnetError, UnauthenticatedError
from federation.proto.v1.common_pb2 import SignedEnvelope
from node.trust.chains import revoked_serials, verify_node_chain
from node.trust.key_resolver import CertificateKeyResolver
from node.trust.node_ids import node_dns_name
from node.trust.pki import CertificateRole, certificate_label, certificate_node_id, certificate_role, utcnow
from node.trust.pki_files import (
    PkiDirectory,
    certificates_pem,
    load_certificates,
    load_crl,
    load_ec_private_key,
    private_key_pem,
)

__all__ = [
    "DEFAULT_CHANNEL_OPTIONS",
    "INGEST_DIR",
    "RENEW_HINT",
    "TRANSPORT_ROLES",
    "NodeTrust",
    "OwnCredentials",
    "PeerIdentity",
    "channel_credentials",
    "check_own_credentials",
    "client_channel",
    "credentials_stamp",
    "has_transport_credentials",
    "ingest_channel",
    "ingest_credential_paths",
    "node_channel",
    "presented_certificates",
    "server_credentials",
]

logger = logging.getLogger(__name__)

# Ingest credentials a node's CA issued to business systems: pki/ingest/<system>.key and .pem.
INGEST_DIR = "ingest"
RENEW_HINT = "renew it with 'supnet keys rotate --tls' (a CA certificate: re-enrol with 'supnet enroll --force')"
TRANSPORT_FILES = ("root.pem", "tls.key", "tls.pem")
# Leaf roles that may open a connection at all; what each may call is node.trust.authorization's business.
TRANSPORT_ROLES = frozenset({CertificateRole.TLS, CertificateRole.INGEST})
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)
PEER_CACHE_SIZE = 1024

Clock = Callable[[], dt.datetime]


def has_transport_credentials(pki: PkiDirectory) -> bool:
    """True when the directory holds what mutual TLS needs: root.pem, tls.key and tls.pem."""
    return all(pki.file(name).is_file() for name in TRANSPORT_FILES)


def _stamp(path: Path) -> tuple[int, int, int]:
    try:
        info = path.stat()
    except FileNotFoundError:
        return (0, 0, 0)
    # Nanosecond mtime, size and inode: a file replaced twice within one coarse mtime tick still changes.
    return (info.st_mtime_ns, info.st_size, info.st_ino)


def credentials_stamp(pki: PkiDirectory) -> tuple[tuple[int, int, int], ...]:
    """Changes whenever root, TLS key or TLS chain files change (rotation): rebuild channels then."""
    return _files_stamp(pki.file(name) for name in TRANSPORT_FILES)


def _files_stamp(paths: Iterable[Path]) -> tuple[tuple[int, int, int], ...]:
    return tuple(_stamp(path) for path in paths)


# --- own credentials ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OwnCredentials:
    """A node's (or an ingest client's) checked TLS credentials, as PEM for grpcio."""

    node_id: str
    role: CertificateRole
    leaf: x509.Certificate
    key_pem: bytes
    chain_pem: bytes
    root_pem: bytes


def _check_validity(certificates: Sequence[x509.Certificate], owner: str, now: dt.datetime, where: Path) -> None:
    for certificate in certificates:
        if now > certificate.not_valid_after_utc:
            raise UnauthenticatedError(
                f"certificate {certificate_label(certificate)} of {owner} ({where}) expired at "
                f"{certificate.not_valid_after_utc.isoformat()}; {RENEW_HINT}"
            )
        if now < certificate.not_valid_before_utc:
            raise UnauthenticatedError(
                f"certificate {certificate_label(certificate)} of {owner} ({where}) is not valid before "
                f"{certificate.not_valid_before_utc.isoformat()} (check this machine's clock)"
            )


def check_own_credentials(
    key_path: Path,
    chain_path: Path,
    root_path: Path,
    *,
    roles: Iterable[CertificateRole] = (CertificateRole.TLS,),
    now: dt.datetime | None = None,
) -> OwnCredentials:
    """Load and check our own TLS credentials before using them; UnauthenticatedError saying what to fix.

    Checks: the files exist and parse, the key matches the leaf, every certificate of the chain is within its
    validity period (an expired one is named with how to renew), and the chain verifies up to the root for one
    of ``roles``.
    """
    moment = now or utcnow()
    try:
        key = load_ec_private_key(key_path)
        chain = load_certificates(chain_path)
        roots = load_certificates(root_path)
    except NotFoundError as error:
        raise UnauthenticatedError(f"no usable TLS credentials: {error.message}") from error
    except InvalidArgumentError as error:
        raise UnauthenticatedError(f"unusable TLS credentials: {error.message}") from error
    if not chain or not roots:
        raise UnauthenticatedError(f"{chain_path if not chain else root_path} holds no certificate")
    leaf, root = chain[0], roots[0]
    try:
        owner = certificate_node_id(leaf)
    except SupnetError as error:
        raise UnauthenticatedError(f"own certificate {chain_path}: {error.message}") from error
    if key.public_key() != leaf.public_key():
        raise UnauthenticatedError(f"{key_path} does not hold the key of the certificate in {chain_path}")
    _check_validity([leaf, *chain[1:], root], owner, moment, chain_path)
    role = certificate_role(leaf)
    wanted = set(roles)
    if role not in wanted:
        raise UnauthenticatedError(
            f"certificate {certificate_label(leaf)} in {chain_path} is a {role.value if role else 'foreign'} "
            f"certificate; needed here: {' or '.join(sorted(r.value for r in wanted))}"
        )
    intermediates = [certificate for certificate in chain[1:] if certificate != root]
    try:
        verify_node_chain(leaf, intermediates, root, moment, role=role)
    except UnauthenticatedError as error:
        raise UnauthenticatedError(f"own certificate {chain_path} of {owner}: {error.message}") from error
    return OwnCredentials(
        node_id=owner,
        role=role,
        leaf=leaf,
        key_pem=private_key_pem(key),
        chain_pem=certificates_pem([leaf, *intermediates]),
        root_pem=certificates_pem([root]),
    )


def _node_credentials(pki: PkiDirectory, now: dt.datetime | None = None) -> OwnCredentials:
    if not has_transport_credentials(pki):
        missing = [name for name in TRANSPORT_FILES if not pki.file(name).is_file()]
        raise UnauthenticatedError(
            f"{pki.path} lacks {', '.join(missing)}: this node has no TLS credentials "
            "(enrol it with 'supnet enroll', or 'supnet pki init-root' at the province)"
        )
    return check_own_credentials(pki.file("tls.key"), pki.file("tls.pem"), pki.file("root.pem"), now=now)


_presented_lock = threading.Lock()
_presented: dict[Path, tuple[tuple[tuple[int, int, int], ...], tuple[bytes, bytes]]] = {}


def presented_certificates(pki: PkiDirectory) -> tuple[bytes, bytes]:
    """(leaf PEM, chain PEM) this node presents as a TLS client, checked as ``node_channel`` checks them.

    What a hosted node shows another node of its process on an in-process call (node.trust.local_calls): the
    callee identifies it from these exactly as from a TLS handshake's client certificate. Read and checked again
    only when the TLS files change, as a kept channel is rebuilt only then.
    """
    stamp = credentials_stamp(pki)
    with _presented_lock:
        cached = _presented.get(pki.path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    credentials = _node_credentials(pki)
    pems = (certificates_pem([credentials.leaf]), credentials.chain_pem)
    with _presented_lock:
        _presented[pki.path] = (stamp, pems)
    return pems


def server_credentials(pki: PkiDirectory, *, now: dt.datetime | None = None) -> grpc.ServerCredentials:
    """Server credentials: own TLS chain, client certificates required and verified up to the root.

    The files are re-read on a new connection after they changed (rotation, renewal) without a restart.
    """
    initial = _node_credentials(pki, now)
    lock = threading.Lock()
    state = {"stamp": credentials_stamp(pki)}

    def configuration(credentials: OwnCredentials) -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(credentials.key_pem, credentials.chain_pem)], root_certificates=credentials.root_pem
        )

    def fetch() -> Any:
        # Called by grpcio before each new handshake: cheap unless the files changed.
        current = credentials_stamp(pki)
        with lock:
            if current == state["stamp"]:
                return None
            state["stamp"] = current
        try:
            credentials = _node_credentials(pki)
        except SupnetError as error:
            logger.error("TLS credentials in %s changed but cannot be used, keeping the old ones: %s", pki.path, error)
            return None
        logger.info("TLS credentials of %s reloaded from %s", credentials.node_id, pki.path)
        return configuration(credentials)

    return grpc.dynamic_ssl_server_credentials(configuration(initial), fetch, require_client_authentication=True)


def channel_credentials(credentials: OwnCredentials) -> grpc.ChannelCredentials:
    """Channel credentials presenting these credentials and trusting only their root."""
    return grpc.ssl_channel_credentials(
        root_certificates=credentials.root_pem,
        private_key=credentials.key_pem,
        certificate_chain=credentials.chain_pem,
    )


def _channel_options(expected_peer_id: str, options: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    merged = dict(DEFAULT_CHANNEL_OPTIONS)
    merged.update(dict(options))
    # The server's certificate must carry the DNS name of the node we mean to reach, whatever the address.
    merged["grpc.ssl_target_name_override"] = node_dns_name(expected_peer_id)
    return list(merged.items())


def client_channel(
    credentials: OwnCredentials, address: str, expected_peer_id: str, *, options: Iterable[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A mutual-TLS channel to ``address``, accepting only a server certified as ``expected_peer_id``."""
    return grpc.secure_channel(
        address, channel_credentials(credentials), options=_channel_options(expected_peer_id, options)
    )


def node_channel(
    pki: PkiDirectory | None,
    address: str,
    expected_peer_id: str,
    *,
    options: Iterable[tuple[str, Any]] = (),
    now: dt.datetime | None = None,
) -> grpc.Channel:
    """THE way a node opens a channel to another node (or to itself, as its local operator).

    With a PKI directory: our own credentials are checked first (UnauthenticatedError naming an expired or
    unusable certificate), then a mutual-TLS channel is opened that accepts only ``expected_peer_id``.
    ``pki=None`` means the node runs in the explicit insecure plaintext mode: a plaintext channel.
    """
    if pki is None:
        merged = dict(DEFAULT_CHANNEL_OPTIONS)
        merged.update(dict(options))
        return grpc.insecure_channel(address, options=list(merged.items()))
    return client_channel(_node_credentials(pki, now), address, expected_peer_id, options=options)


def ingest_credential_paths(pki: PkiDirectory, system: str) -> tuple[Path, Path]:
    """Where a node keeps the ingest credential it issued to ``system``: (key, chain)."""
    folder = pki.file(INGEST_DIR)
    return folder / f"{system}.key", folder / f"{system}.pem"


def ingest_channel(
    key_path: Path,
    chain_path: Path,
    root_path: Path,
    address: str,
    node_id: str,
    *,
    options: Iterable[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A business system's channel to the node it feeds, presenting its INGEST credential."""
    credentials = check_own_credentials(key_path, chain_path, root_path, roles=(CertificateRole.INGEST,))
    if credentials.node_id != node_id:
        raise UnauthenticatedError(
            f"ingest credential {chain_path} is for node {credentials.node_id}, not for {node_id}"
        )
    return client_channel(credentials, address, node_id, options=options)


# --- the server side: who is calling -----------------------------------------------------------------------


@dataclass(frozen=True)
class PeerIdentity:
    """The caller as its verified certificate names it: node id, role (TLS or INGEST), serial, label."""

    node_id: str
    role: CertificateRole
    serial: int
    label: str

    def __str__(self) -> str:
        return f"{self.node_id} ({self.role.value} certificate, serial {self.serial:x})"


@dataclass(frozen=True)
class _VerifiedPeer:
    identity: PeerIdentity
    serials: frozenset[int]
    labels: Mapping[int, str]
    not_before: dt.datetime
    not_after: dt.datetime


def _auth_values(auth: Mapping[str, Any], key: str) -> list[bytes]:
    values = auth.get(key) or []
    return [value if isinstance(value, bytes) else str(value).encode() for value in values]


class NodeTrust:
    """One node's PKI as its server and clients use it: identify peers, verify signed envelopes, open channels.

    Thread-safe. The root and the node's own identity are read once; the revocation list ``crl.pem`` is
    re-read whenever the file changes, for peers and for report/query signatures alike.
    """

    def __init__(self, pki: PkiDirectory, *, clock: Clock | None = None) -> None:
        self.pki = pki
        self._clock = clock or utcnow
        own = _node_credentials(pki, self._clock())
        self.node_id = own.node_id
        self.root = pki.load_root()
        self._root_node_id = certificate_node_id(self.root)
        # Paths built once: these files are stat-ed on every call (revocation, rotation) and building a Path
        # costs more than the stat.
        self._crl_file = pki.file("crl.pem")
        self._transport_files = tuple(pki.file(name) for name in TRANSPORT_FILES)
        self._lock = threading.Lock()
        self._crl_stamp: tuple[int, int, int] | None = None
        self._crl_error: str = ""
        self._revoked: frozenset[int] = frozenset()
        self._resolver = CertificateKeyResolver(self.root, clock=self._clock)
        self._peers: OrderedDict[bytes, _VerifiedPeer] = OrderedDict()
        self.revoked()

    @property
    def root_node_id(self) -> str:
        """The node id of the trusted root (the province)."""
        return self._root_node_id

    # --- revocation ---------------------------------------------------------------------------------------

    def _crl_issuers(self) -> list[x509.Certificate]:
        issuers = [self.root]
        ca_file = self.pki.file("ca.pem")
        if ca_file.is_file():
            issuers = [*load_certificates(ca_file), self.root]
        return issuers

    def _load_revoked(self) -> frozenset[int]:
        crl = load_crl(self.pki.file("crl.pem"))
        issuer = next((candidate for candidate in self._crl_issuers() if candidate.subject == crl.issuer), None)
        if issuer is None:
            raise UnauthenticatedError(
                f"revocation list {self.pki.file('crl.pem')} is issued by {crl.issuer.rfc4514_string()}, "
                f"not by this node's CA"
            )
        return frozenset(revoked_serials(crl, issuer))

    def revoked(self) -> frozenset[int]:
        """Serials this node's revocation list refuses (re-read when crl.pem changes).

        An unreadable or forged crl.pem fails closed: every peer and signature is refused with a message
        naming the file, until it is fixed.
        """
        stamp = _stamp(self._crl_file)
        with self._lock:
            if stamp == self._crl_stamp:
                if self._crl_error:
                    raise UnauthenticatedError(self._crl_error)
                return self._revoked
            self._crl_stamp = stamp
            if stamp == (0, 0, 0):
                self._revoked, self._crl_error = frozenset(), ""
                return self._revoked
            try:
                revoked = self._load_revoked()
            except SupnetError as error:
                self._crl_error = f"revocation list {self.pki.file('crl.pem')} cannot be used: {error.message}"
                logger.error("%s; refusing every peer until it is fixed", self._crl_error)
                raise UnauthenticatedError(self._crl_error) from error
            self._crl_error = ""
            self._revoked = revoked
            self._resolver.revoke(revoked)
            logger.info("revocation list of %s loaded: %s serial(s) refused", self.node_id, len(revoked))
            return revoked

    # --- peers ----------------------------------------------------------------------------------------------

    def identify(self, context: grpc.ServicerContext) -> PeerIdentity:
        """Who is calling: the verified client certificate of this call; UnauthenticatedError otherwise."""
        # grpc-stubs types the values as bytes; at run time each is a list of bytes.
        auth = cast(Mapping[str, Any], context.auth_context())
        leaf_pems = _auth_values(auth, "x509_pem_cert")
        if not leaf_pems:
            raise UnauthenticatedError("the caller presented no client certificate (mutual TLS is required)")
        chain_pems = _auth_values(auth, "x509_pem_cert_chain")
        fingerprint = hashlib.sha256(b"\0".join([leaf_pems[0], *chain_pems])).digest()
        revoked = self.revoked()
        now = self._clock()
        with self._lock:
            cached = self._peers.get(fingerprint)
        if cached is None or not (cached.not_before <= now <= cached.not_after):
            cached = self._verify_peer(leaf_pems[0], chain_pems, now)
            with self._lock:
                self._peers[fingerprint] = cached
                while len(self._peers) > PEER_CACHE_SIZE:
                    self._peers.popitem(last=False)
        hit = cached.serials & revoked
        if hit:
            serial = min(hit)
            raise UnauthenticatedError(
                f"certificate {cached.labels.get(serial, f'serial {serial:x}')} of {cached.identity.node_id}'s "
                f"chain is revoked by {self.node_id}"
            )
        return cached.identity

    def _verify_peer(self, leaf_pem: bytes, chain_pems: Sequence[bytes], now: dt.datetime) -> _VerifiedPeer:
        try:
            leaf = x509.load_pem_x509_certificate(leaf_pem)
            presented = x509.load_pem_x509_certificates(b"".join(chain_pems)) if chain_pems else []
        except ValueError as error:
            raise UnauthenticatedError(f"the caller's certificate does not parse: {error}") from error
        intermediates = [certificate for certificate in presented if certificate not in (leaf, self.root)]
        # Re-verified here: the handshake knows neither our subtree rule on URIs nor "exactly one identity".
        node_id = verify_node_chain(leaf, intermediates, self.root, now)
        role = certificate_role(leaf)
        if role not in TRANSPORT_ROLES:
            raise UnauthenticatedError(
                f"certificate {certificate_label(leaf)} of {node_id} is a {role.value if role else 'foreign'} "
                "certificate, not a TLS or ingest client certificate"
            )
        assert role is not None  # TRANSPORT_ROLES holds no None
        path = [leaf, *intermediates]
        return _VerifiedPeer(
            identity=PeerIdentity(node_id=node_id, role=role, serial=leaf.serial_number, label=certificate_label(leaf)),
            serials=frozenset(certificate.serial_number for certificate in path),
            labels={certificate.serial_number: certificate_label(certificate) for certificate in path},
            not_before=max(certificate.not_valid_before_utc for certificate in [*path, self.root]),
            not_after=min(certificate.not_valid_after_utc for certificate in [*path, self.root]),
        )

    # --- signatures -----------------------------------------------------------------------------------------

    @property
    def key_resolver(self) -> CertificateKeyResolver:
        """Report keys from envelopes' certificate chains, verified up to the root, current revocations applied."""
        self.revoked()
        return self._resolver

    def _resolver_for(self, revocations_current: bool) -> CertificateKeyResolver:
        # revocations_current: the caller looked at crl.pem during this same call (``identify`` does), so it is
        # not looked at again: every look at the file is a system call that lets other threads take the GIL.
        return self._resolver if revocations_current else self.key_resolver

    def verify_envelope(
        self, envelope: SignedEnvelope, at: dt.datetime | None = None, *, revocations_current: bool = False
    ) -> Ed25519PublicKey:
        """Check an envelope's signer through its own certificate chain (and revocations); returns the key.

        ``revocations_current``: crl.pem was re-read earlier in this same call (by ``identify``).
        """
        return self._resolver_for(revocations_current).verify(envelope, at)

    def resolve_envelope(self, envelope: SignedEnvelope, *, revocations_current: bool = False) -> Ed25519PublicKey:
        """Verify the envelope's chain (not its signature) so the resolver knows the signer's key afterwards.

        ``revocations_current``: crl.pem was re-read earlier in this same call (by ``identify``).
        """
        return self._resolver_for(revocations_current).resolve_envelope(envelope)

    # --- transport ------------------------------------------------------------------------------------------

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials of this node (see :func:`server_credentials`)."""
        return server_credentials(self.pki)

    def channel(self, address: str, expected_peer_id: str, *, options: Iterable[tuple[str, Any]] = ()) -> grpc.Channel:
        """A mutual-TLS channel to a peer node (see :func:`node_channel`)."""
        return node_channel(self.pki, address, expected_peer_id, options=options)

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        """Changes when this node's TLS files change: channels built before should be rebuilt."""
        return _files_stamp(self._transport_files)  # credentials_stamp over paths built once
