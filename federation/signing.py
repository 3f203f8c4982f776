"""Ed25519 keys and signed envelopes: key files, key ids, signing and verification, key resolvers.

A signature covers ``canonical_bytes(body_type, body)`` (see federation.canonical); the receiver verifies
over the body bytes exactly as received, before parsing them. ``key_id`` is the first 16 bytes of SHA-256
over the raw 32-byte public key, so a resolver can pick among several keys of one signer (rotation) and
certificates can later bind the same key to a node id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import Message

from federation.canonical import body_type_of, canonical_bytes, serialize
from federation.errors import IntegrityError, InvalidArgumentError, NotFoundError, UnauthenticatedError
from federation.proto.v1.common_pb2 import SignedEnvelope

__all__ = [
    "KEY_ID_SIZE",
    "SIGNATURE_SIZE",
    "KeyResolver",
    "StaticKeyResolver",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_key_b64",
    "public_key_from_b64",
    "raw_public_key",
    "read_file",
    "save_private_key",
    "save_public_key",
    "sign_envelope",
    "sign_message",
    "verify_envelope",
    "verify_with_resolver",
    "write_private_file",
]

logger = logging.getLogger(__name__)

KEY_ID_SIZE = 16
SIGNATURE_SIZE = 64
RAW_PUBLIC_KEY_SIZE = 32


def generate_keypair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    """A fresh Ed25519 key pair."""
    private_key = Ed25519PrivateKey.generate()
    return private_key, private_key.public_key()


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    """The raw 32-byte encoding of a public key."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> bytes:
    """First 16 bytes of SHA-256 over the raw public key: names a key without carrying it."""
    return hashlib.sha256(raw_public_key(public_key)).digest()[:KEY_ID_SIZE]


def public_key_b64(public_key: Ed25519PublicKey) -> str:
    """Base64 of the raw 32-byte public key (the format of ChildConfig.public_key)."""
    return base64.b64encode(raw_public_key(public_key)).decode("ascii")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """Parse a base64 raw 32-byte Ed25519 public key; InvalidArgumentError says what is wrong."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidArgumentError(f"public key is not valid base64: {error}") from error
    if len(raw) != RAW_PUBLIC_KEY_SIZE:
        raise InvalidArgumentError(f"public key must be {RAW_PUBLIC_KEY_SIZE} raw bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def write_private_file(path: Path, data: bytes) -> None:
    """Write data to path readable by the owner only, also when the file already existed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # An existing file keeps its old mode under O_CREAT, so set it explicitly.
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, data)
    finally:
        os.close(descriptor)


def save_private_key(path: str | Path, private_key: Ed25519PrivateKey) -> None:
    """Save a private key as unencrypted PEM PKCS#8 with mode 0600."""
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_file(Path(path), pem)


def save_public_key(path: str | Path, public_key: Ed25519PublicKey) -> None:
    """Save a public key as PEM SubjectPublicKeyInfo."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(
        public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def read_file(path: Path, what: str) -> bytes:
    """A key or certificate file's bytes; NotFoundError or InvalidArgumentError naming the file and what it holds."""
    try:
        return path.read_bytes()
    except FileNotFoundError as error:
        raise NotFoundError(f"{what} file {path} does not exist") from error
    except OSError as error:
        raise InvalidArgumentError(f"{what} file {path} cannot be read: {error.strerror}") from error


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Load a PEM PKCS#8 Ed25519 private key; warns if others can read the file."""
    source = Path(path)
    data = read_file(source, "private key")
    if source.stat().st_mode & 0o077:
        logger.warning("private key file %s is readable by group or others; chmod 600 it", source)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise InvalidArgumentError(f"private key file {source} is not an unencrypted PEM key: {error}") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidArgumentError(f"private key file {source} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key file: PEM SubjectPublicKeyInfo, or one line of base64 raw key."""
    source = Path(path)
    data = read_file(source, "public key")
    if b"-----BEGIN" not in data:
        try:
            return public_key_from_b64(data.decode("ascii"))
        except (UnicodeDecodeError, InvalidArgumentError) as error:
            raise InvalidArgumentError(f"public key file {source} is neither PEM nor base64: {error}") from error
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as error:
        raise InvalidArgumentError(f"public key file {source} is not a valid PEM public key: {error}") from error
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidArgumentError(f"public key file {source} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def sign_envelope(
    private_key: Ed25519PrivateKey,
    signer_id: str,
    body_type: str,
    body_bytes: bytes,
    certificate_chain: Iterable[bytes] = (),
) -> SignedEnvelope:
    """Sign body bytes (already serialized, deterministically) and wrap them in a SignedEnvelope."""
    if not signer_id:
        raise InvalidArgumentError("signer_id must not be empty")
    signature = private_key.sign(canonical_bytes(body_type, body_bytes))
    return SignedEnvelope(
        signer_id=signer_id,
        key_id=key_id(private_key.public_key()),
        body_type=body_type,
        body=body_bytes,
        signature=signature,
        certificate_chain=list(certificate_chain),
    )


def sign_message(
    private_key: Ed25519PrivateKey, signer_id: str, message: Message, certificate_chain: Iterable[bytes] = ()
) -> SignedEnvelope:
    """Serialize a body message deterministically once and sign it; body_type is its full name."""
    return sign_envelope(private_key, signer_id, body_type_of(message), serialize(message), certificate_chain)


def _describe(envelope: SignedEnvelope) -> str:
    return f"{envelope.body_type or 'envelope'} signed by {envelope.signer_id or '?'}"


def verify_envelope(envelope: SignedEnvelope, public_key: Ed25519PublicKey) -> None:
    """Verify an envelope's signature over its received body bytes; raise IntegrityError saying why not."""
    what = _describe(envelope)
    if not envelope.signer_id:
        raise IntegrityError(f"{what}: signer_id is empty")
    if not envelope.body_type:
        raise IntegrityError(f"{what}: body_type is empty")
    if len(envelope.signature) != SIGNATURE_SIZE:
        raise IntegrityError(f"{what}: signature must be {SIGNATURE_SIZE} bytes, got {len(envelope.signature)}")
    expected_key_id = key_id(public_key)
    if envelope.key_id != expected_key_id:
        raise IntegrityError(
            f"{what}: key_id {envelope.key_id.hex() or 'empty'} does not match the verifying key "
            f"{expected_key_id.hex()}"
        )
    try:
        public_key.verify(envelope.signature, canonical_bytes(envelope.body_type, envelope.body))
    except InvalidSignature as error:
        raise IntegrityError(
            f"{what}: signature does not verify with key {expected_key_id.hex()} (body altered or wrong key)"
        ) from error


class KeyResolver(Protocol):
    """Finds the public key a signer signed with: from config now, from certificates later."""

    def resolve(self, signer_id: str, key_id: bytes) -> Ed25519PublicKey:
        """The signer's public key named by key_id; UnauthenticatedError if none is known."""
        ...


class StaticKeyResolver:
    """A KeyResolver over a fixed mapping signer id -> public key(s), e.g. children from the node config."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey | Iterable[Ed25519PublicKey]]) -> None:
        self._keys: dict[str, dict[bytes, Ed25519PublicKey]] = {}
        for signer_id, value in keys.items():
            candidates = [value] if isinstance(value, Ed25519PublicKey) else list(value)
            self._keys[signer_id] = {key_id(candidate): candidate for candidate in candidates}

    @classmethod
    def from_b64(cls, keys: Mapping[str, str]) -> StaticKeyResolver:
        """Build from signer id -> base64 raw public key (empty values are skipped: no key configured)."""
        parsed: dict[str, Ed25519PublicKey] = {}
        for signer_id, text in keys.items():
            if not text:
                continue
            try:
                parsed[signer_id] = public_key_from_b64(text)
            except InvalidArgumentError as error:
                raise InvalidArgumentError(f"public key of {signer_id}: {error}") from error
        return cls(parsed)

    def signers(self) -> list[str]:
        """The signer ids this resolver knows, sorted."""
        return sorted(self._keys)

    def resolve(self, signer_id: str, key_id: bytes) -> Ed25519PublicKey:
        """The key of signer_id with this key_id; UnauthenticatedError for an unknown signer or key."""
        known = self._keys.get(signer_id)
        if not known:
            raise UnauthenticatedError(f"no public key is known for signer {signer_id or '?'}")
        key = known.get(key_id)
        if key is None:
            raise UnauthenticatedError(
                f"signer {signer_id} has no known key with key_id {key_id.hex() or 'empty'} "
                f"(known: {', '.join(sorted(k.hex() for k in known))})"
            )
        return key


def verify_with_resolver(envelope: SignedEnvelope, resolver: KeyResolver) -> Ed25519PublicKey:
    """Resolve the signer's key by (signer_id, key_id) and verify the envelope; returns the key used."""
    public_key = resolver.resolve(envelope.signer_id, envelope.key_id)
    verify_envelope(envelope, public_key)
    return public_key
