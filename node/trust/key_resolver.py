"""Report-signature keys from certificate chains: :class:`CertificateKeyResolver` and its per-envelope view.

A signed envelope carries its signer's report certificate and the CA certificates above it; only the root is
configured, so any ancestor verifies any descendant's report offline. Verified chains are cached by a hash of
their bytes (at most CACHE_SIZE, the oldest dropped first), so importing reports checks a known chain once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from federation import KeyResolver, UnauthenticatedError, key_id, verify_envelope
from federation.proto.v1.common_pb2 import SignedEnvelope
from node.trust.chains import parse_der_chain, verify_node_path
from node.trust.pki import CertificateRole, aware_utc, certificate_label, certificate_node_id

__all__ = ["CertificateKeyResolver"]


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

    # Above a province's node count (1,786 in the issue 17 shape): a province-wide search verifies one chain per
    # node, and a cache smaller than the tree would evict chains it needs again on the next search.
    CACHE_SIZE = 4096

    def __init__(
        self,
        root: x509.Certificate,
        revoked: Collection[int] = frozenset(),
        *,
        clock: Callable[[], dt.datetime] | None = None,
        cache_size: int | None = None,
    ) -> None:
        """``cache_size``: verified chains kept (default CACHE_SIZE); at least the number of signers expected."""
        self._root = root
        self._cache_size = self.CACHE_SIZE if cache_size is None else max(1, cache_size)
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
        return aware_utc(self._clock(), "clock time")

    def _verify_chain(self, chain: Sequence[bytes], at: dt.datetime) -> _VerifiedChain:
        if not chain:
            raise UnauthenticatedError("no certificate chain: the signer's report certificate is required")
        fingerprint = hashlib.sha256(b"".join(hashlib.sha256(der).digest() for der in chain)).digest()
        cached = self._chains.get(fingerprint)
        if cached is None or not (cached.not_before <= at <= cached.not_after):
            certificates = parse_der_chain(chain)
            node_id, path = verify_node_path(
                certificates[0], certificates[1:], self._root, at, role=CertificateRole.REPORT, revoked=self._revoked
            )
            public_key = certificates[0].public_key()
            assert isinstance(public_key, Ed25519PublicKey)  # verify_node_path checked the role
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
                while len(self._chains) > self._cache_size:
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
        moment = self._now() if at is None else aware_utc(at, "verification time")
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
