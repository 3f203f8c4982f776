"""A node's own credentials: the ONE place deciding mutual TLS or the insecure plaintext switch, and the signing key.

Transport: a node whose data directory holds ``pki/`` TLS credentials (root.pem, tls.key, tls.pem) serves
and calls over mutual TLS, always. Without them it runs only if ``federation.insecure_plaintext = true``
(``--insecure-plaintext`` on the command line), loudly; otherwise it refuses with a ConfigError saying how
to enrol.

Signing (reports, drill-down queries and answers): ``pki/report.key`` with its certificate chain
``pki/report.pem`` when present, so any ancestor verifies the signature through the chain; else the
plaintext-mode key ``keys/report_signing.pem`` that ``supnet init`` creates, whose public key the parent has
in its config.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message

from federation import body_type_of, load_private_key, serialize, sign_envelope
from federation.proto.v1.common_pb2 import SignedEnvelope
from node.bootstrap import REPORT_KEY_FILE
from node.errors import ConfigError, InvalidArgumentError, NotFoundError
from node.trust.chains import chain_der
from node.trust.pki_files import PkiDirectory, pki_directory
from node.trust.tls import NodeTrust, has_transport_credentials, node_channel, presented_certificates

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger(__name__)


_cache_lock = threading.Lock()
_identities: dict[str, tuple[tuple[int, ...], SigningIdentity]] = {}
_key_files: dict[Path, tuple[str, tuple[Path, Path, Path]]] = {}
_warned_plaintext: set[str] = set()


def plaintext_key_path(data_dir: Path) -> Path:
    """Where ``supnet init`` puts the plaintext-mode Ed25519 signing key."""
    return data_dir / REPORT_KEY_FILE


@dataclass(frozen=True)
class SigningIdentity:
    """The key a node signs with and the DER certificate chain binding it (empty in plaintext mode)."""

    node_id: str
    private_key: Ed25519PrivateKey
    certificate_chain: tuple[bytes, ...]
    source: Path

    def sign(self, body_type: str, body: bytes) -> SignedEnvelope:
        """Sign body bytes as this node, attaching the certificate chain."""
        return sign_envelope(self.private_key, self.node_id, body_type, body, self.certificate_chain)

    def sign_message(self, message: Message) -> SignedEnvelope:
        """Serialize a body message deterministically once and sign it as this node."""
        return self.sign(body_type_of(message), serialize(message))


def _file_stamp(path: Path) -> tuple[int, ...]:
    try:
        info = path.stat()
    except FileNotFoundError:
        return (0, 0)
    return (info.st_mtime_ns, info.st_ino)


def _load_identity(node_id: str, data_dir: Path) -> SigningIdentity:
    pki = pki_directory(data_dir)
    key_file, chain_file = pki.file("report.key"), pki.file("report.pem")
    if key_file.is_file() and chain_file.is_file():
        try:
            key, chain = pki.load_report()
        except (NotFoundError, InvalidArgumentError) as error:
            raise ConfigError(f"{key_file}: unusable report signing key: {error.message}") from error
        return SigningIdentity(node_id, key, tuple(chain_der(chain[0], chain[1:])), key_file)
    path = plaintext_key_path(data_dir)
    if not path.is_file():
        raise ConfigError(
            f"node {node_id} has no signing key: neither {key_file} (enrol with 'supnet enroll') nor {path} "
            f"(run 'supnet init --data-dir {data_dir}')"
        )
    return SigningIdentity(node_id, load_private_key(path), (), path)


def signing_identity(node: Node) -> SigningIdentity:
    """The node's signing key and chain (cached until the key files change: rotation takes effect at once)."""
    data_dir = node.data_dir
    # Called for every answer a node signs: the paths (and the resolved cache key) are worked out once per
    # directory, leaving three stats per call to notice a rotation.
    located = _key_files.get(data_dir)
    if located is None:
        pki = pki_directory(data_dir)
        files = (pki.file("report.key"), pki.file("report.pem"), plaintext_key_path(data_dir))
        located = _key_files[data_dir] = (str(data_dir.resolve()), files)
    cache_key, files = located
    stamp = tuple(part for path in files for part in _file_stamp(path))
    with _cache_lock:
        cached = _identities.get(cache_key)
    if cached is not None and cached[0] == stamp and cached[1].node_id == node.config.id:
        return cached[1]
    identity = _load_identity(node.config.id, data_dir)
    with _cache_lock:
        _identities[cache_key] = (stamp, identity)
    return identity


def transport_pki(node: Node) -> PkiDirectory | None:
    """The node's PKI for mutual TLS; None in the explicit insecure plaintext mode; ConfigError otherwise."""
    pki = pki_directory(node.data_dir)
    if has_transport_credentials(pki):
        if node.config.federation.insecure_plaintext:
            _warn_once(
                node,
                "node %s has TLS credentials in %s: federation.insecure_plaintext is ignored, it uses mutual TLS",
                pki.path,
            )
        return pki
    if node.config.federation.insecure_plaintext:
        _warn_once(node, "node %s runs WITHOUT TLS (federation.insecure_plaintext): local experiments only", None)
        return None
    raise ConfigError(
        f"node {node.config.id} has no TLS credentials in {pki.path} (root.pem, tls.key, tls.pem are needed): "
        f"enrol it with 'supnet enroll --data-dir {node.data_dir} --parent HOST:PORT --token TOKEN' (at the province: "
        f"'supnet pki init-root --data-dir {node.data_dir}'); for a local experiment only, set "
        f"federation.insecure_plaintext = true in {node.data_dir / 'supnet.toml'} (supnet serve also takes "
        "--insecure-plaintext for one run)"
    )


def _warn_once(node: Node, message: str, argument: object) -> None:
    key = f"{node.data_dir.resolve()}:{message}"
    with _cache_lock:
        if key in _warned_plaintext:
            return
        _warned_plaintext.add(key)
    if argument is None:
        log.warning(message, node.config.id)
    else:
        log.warning(message, node.config.id, argument)


def node_trust(node: Node) -> NodeTrust | None:
    """The node's NodeTrust (peer identity, certificate-chain signatures); None in plaintext mode."""
    pki = transport_pki(node)
    return None if pki is None else NodeTrust(pki)


def client_certificates(node: Node) -> tuple[bytes, bytes] | None:
    """(leaf PEM, chain PEM) this node presents to a node it calls in process; None in the plaintext mode."""
    pki = transport_pki(node)
    return None if pki is None else presented_certificates(pki)


def channel_to(node: Node, address: str, peer_id: str, *, options: Iterable[tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel from this node to ``peer_id`` at ``address``: mutual TLS, or plaintext under the switch."""
    return node_channel(transport_pki(node), address, peer_id, options=options)
