"""Enrolment tokens: what a parent's operator hands over, and what the parent keeps of it (hashes only).

``supnet pki token`` makes a one-time token for one direct child (node.trust.enrolment.EnrolmentAuthority). The
parent keeps only a SHA-256 of each token (:func:`hash_token`) in a :class:`TokenStore`, so a copy of its token
store does not let anyone enrol; ``pki/tokens.json`` (:class:`JsonFileTokenStore`) is shared between the CLI,
which adds tokens, and the server, which redeems them.

The operator hands over a *discovery token* ``supnet-enrol-<secret>.<root-sha256-hex>`` (kubeadm style): the
secret part is the token and the suffix is the SHA-256 fingerprint of the tree's root certificate, so the child
accepts only an answer under that root (:func:`check_discovery_root`). Over the network the token is named by
its :func:`token_id`, a one-way function of the stored hash that does not reveal it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from federation import InvalidArgumentError, UnauthenticatedError
from node.trust.pki import aware_utc

__all__ = [
    "TOKEN_PREFIX",
    "DiscoveryToken",
    "JsonFileTokenStore",
    "MemoryTokenStore",
    "TokenRecord",
    "TokenStore",
    "check_discovery_root",
    "discovery_token",
    "hash_token",
    "parse_discovery_token",
    "root_fingerprint",
    "token_id",
]

TOKEN_PREFIX = "supnet-enrol-"  # noqa: S105 - a marker that makes tokens recognisable, not a secret
_STORE_FORMAT_VERSION = 1
_FINGERPRINT_HEX_LENGTH = 64
_TOKEN_ID_DOMAIN = b"supnet/v1/enrolment-token-id\x00"


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token: what the parent stores and looks tokens up by."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_id(token_hash: str) -> str:
    """A public name of a token, from its stored hex hash; does not reveal the hash (the proof key)."""
    try:
        raw = bytes.fromhex(token_hash)
    except ValueError as error:
        raise InvalidArgumentError(f"token hash {token_hash[:12]!r}… is not hex") from error
    return hashlib.sha256(_TOKEN_ID_DOMAIN + raw).hexdigest()


# --- discovery tokens --------------------------------------------------------------------------------------


def root_fingerprint(root: x509.Certificate) -> str:
    """Hex SHA-256 of the root certificate's DER bytes: the discovery hash carried by a token."""
    return hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class DiscoveryToken:
    """A token as handed to a child's operator: the one-time secret and the root fingerprint to expect."""

    token: str
    root_fingerprint: str

    def __str__(self) -> str:
        return f"{self.token}.{self.root_fingerprint}"

    def __repr__(self) -> str:
        # The secret must not leak through a log line or a traceback.
        return f"DiscoveryToken(token_id={token_id(hash_token(self.token))[:12]}…, root={self.root_fingerprint[:12]}…)"


def discovery_token(token: str, root: x509.Certificate) -> str:
    """The text an operator hands over: ``<token>.<root fingerprint>``."""
    return str(DiscoveryToken(token, root_fingerprint(root)))


def parse_discovery_token(text: str) -> DiscoveryToken:
    """Split ``supnet-enrol-<secret>.<root-sha256-hex>``; InvalidArgumentError (never echoing it) if malformed."""
    value = text.strip()
    secret, dot, fingerprint = value.rpartition(".")
    if not dot or not secret.startswith(TOKEN_PREFIX) or len(secret) <= len(TOKEN_PREFIX):
        raise InvalidArgumentError(
            f"the enrolment token must look like {TOKEN_PREFIX}<secret>.<root-sha256-hex> "
            "(as printed by 'supnet pki token' on the parent)"
        )
    fingerprint = fingerprint.lower()
    if len(fingerprint) != _FINGERPRINT_HEX_LENGTH or any(c not in "0123456789abcdef" for c in fingerprint):
        raise InvalidArgumentError(
            f"the enrolment token's root fingerprint (after the last '.') must be {_FINGERPRINT_HEX_LENGTH} hex "
            f"digits, got {len(fingerprint)} characters"
        )
    return DiscoveryToken(secret, fingerprint)


def check_discovery_root(root: x509.Certificate, expected_fingerprint: str, *, source: str = "the parent") -> None:
    """UnauthenticatedError unless root has the fingerprint the token carries (a false root, e.g. a MITM)."""
    actual = root_fingerprint(root)
    if not hmac.compare_digest(actual, expected_fingerprint.lower()):
        raise UnauthenticatedError(
            f"{source} answered under root certificate {actual[:16]}…, but the token expects root "
            f"{expected_fingerprint[:16]}…: refusing it (a man in the middle, or a token from another tree)"
        )


# --- token records and stores ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRecord:
    """What the parent remembers of one enrolment token (never the token itself)."""

    token_hash: str
    child_id: str
    issuer_id: str
    created_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None = None

    def is_live(self, at: dt.datetime) -> bool:
        """True while the token can still be redeemed: not used, not expired at ``at`` (aware)."""
        return self.used_at is None and at < self.expires_at

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (ISO 8601 times with offset)."""
        return {
            "token_hash": self.token_hash,
            "child_id": self.child_id,
            "issuer_id": self.issuer_id,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "used_at": self.used_at.isoformat() if self.used_at else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenRecord:
        """Parse the form written by to_dict; InvalidArgumentError naming the bad field."""
        try:
            used_at = data.get("used_at")
            return cls(
                token_hash=str(data["token_hash"]),
                child_id=str(data["child_id"]),
                issuer_id=str(data["issuer_id"]),
                created_at=aware_utc(dt.datetime.fromisoformat(data["created_at"]), "created_at"),
                expires_at=aware_utc(dt.datetime.fromisoformat(data["expires_at"]), "expires_at"),
                used_at=aware_utc(dt.datetime.fromisoformat(used_at), "used_at") if used_at else None,
            )
        except KeyError as error:
            raise InvalidArgumentError(f"token record lacks field {error.args[0]}") from error
        except (TypeError, ValueError) as error:
            raise InvalidArgumentError(f"token record has a bad time field: {error}") from error


class TokenStore(Protocol):
    """Where a parent keeps its token records (in memory, a JSON file, later SQL)."""

    def add(self, record: TokenRecord) -> None:
        """Store a new record; InvalidArgumentError if its hash is already stored."""
        ...

    def get(self, token_hash: str) -> TokenRecord | None:
        """The record with this token hash, or None."""
        ...

    def mark_used(self, token_hash: str, at: dt.datetime) -> bool:
        """Atomically mark an unused record used; False if it is unknown or was already used."""
        ...

    def records(self) -> list[TokenRecord]:
        """Every record, oldest first."""
        ...


class MemoryTokenStore:
    """A TokenStore in memory (tests, and a parent that enrols within one process run)."""

    def __init__(self) -> None:
        self._records: dict[str, TokenRecord] = {}
        self._lock = threading.Lock()

    def add(self, record: TokenRecord) -> None:
        with self._lock:
            if record.token_hash in self._records:
                raise InvalidArgumentError(f"token for {record.child_id} is already stored")
            self._records[record.token_hash] = record

    def get(self, token_hash: str) -> TokenRecord | None:
        with self._lock:
            return self._records.get(token_hash)

    def mark_used(self, token_hash: str, at: dt.datetime) -> bool:
        with self._lock:
            record = self._records.get(token_hash)
            if record is None or record.used_at is not None:
                return False
            self._records[token_hash] = replace(record, used_at=aware_utc(at, "used_at"))
            return True

    def records(self) -> list[TokenRecord]:
        with self._lock:
            return sorted(self._records.values(), key=lambda record: record.created_at)


class JsonFileTokenStore:
    """A TokenStore in one JSON file (mode 0600), safe between processes: the CLI adds, the server redeems.

    Every change holds an exclusive lock on ``<file>.lock`` for its read-modify-write and replaces the file
    atomically, so a crash never leaves half a file and a token cannot be redeemed twice by two processes.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with self._thread_lock, open(lock_path, "a+b") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def _load(self) -> dict[str, TokenRecord]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InvalidArgumentError(f"token store {self.path} is not valid JSON: {error}") from error
        if not isinstance(data, dict) or data.get("version") != _STORE_FORMAT_VERSION:
            raise InvalidArgumentError(f"token store {self.path} is not a version {_STORE_FORMAT_VERSION} store")
        records = {}
        for index, item in enumerate(data.get("tokens", [])):
            try:
                record = TokenRecord.from_dict(item)
            except InvalidArgumentError as error:
                raise InvalidArgumentError(f"token store {self.path}, record {index}: {error}") from error
            records[record.token_hash] = record
        return records

    def _save(self, records: dict[str, TokenRecord]) -> None:
        payload = {
            "version": _STORE_FORMAT_VERSION,
            "tokens": [record.to_dict() for record in sorted(records.values(), key=lambda r: r.created_at)],
        }
        descriptor, temporary = tempfile.mkstemp(prefix=self.path.name, dir=self.path.parent)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def add(self, record: TokenRecord) -> None:
        with self._locked():
            records = self._load()
            if record.token_hash in records:
                raise InvalidArgumentError(f"token for {record.child_id} is already stored")
            records[record.token_hash] = record
            self._save(records)

    def get(self, token_hash: str) -> TokenRecord | None:
        with self._locked():
            return self._load().get(token_hash)

    def mark_used(self, token_hash: str, at: dt.datetime) -> bool:
        with self._locked():
            records = self._load()
            record = records.get(token_hash)
            if record is None or record.used_at is not None:
                return False
            records[token_hash] = replace(record, used_at=aware_utc(at, "used_at"))
            self._save(records)
            return True

    def records(self) -> list[TokenRecord]:
        with self._locked():
            return sorted(self._load().values(), key=lambda record: record.created_at)
