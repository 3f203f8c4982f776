"""The backup file: a gzip'd tar of ``manifest.json``, ``database/…`` and ``files/…``, written atomically.

The manifest comes first and lists every other member with its size, mode and SHA-256, plus the node, the
database's schema revision and the audit head of the snapshot. The file is written beside its destination
under a temporary name, flushed to disk and renamed, so a crash never leaves a half backup under the real name.
Reading checks every member against the manifest (and refuses unsafe member names) while it extracts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from federation import AuditHead
from node.errors import IntegrityError, InvalidArgumentError

FORMAT = "supnet-backup/1"
MANIFEST = "manifest.json"
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Part:
    """One member of the archive besides the manifest."""

    path: str
    bytes: int
    sha256: str
    mode: int = 0o600

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"path": self.path, "bytes": self.bytes, "sha256": self.sha256, "mode": f"{self.mode:o}"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Part:
        """Read one manifest entry."""
        return cls(str(data["path"]), int(data["bytes"]), str(data["sha256"]), int(str(data.get("mode", "600")), 8))


@dataclass(frozen=True)
class Manifest:
    """What a backup holds: node, when, database (backend, revision, file), audit head, and every part's hash."""

    node_id: str
    created_at: str
    supnet_version: str
    database: dict[str, Any]
    audit_head: AuditHead | None
    parts: tuple[Part, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON form (manifest.json)."""
        return {
            "format": FORMAT,
            "node_id": self.node_id,
            "created_at": self.created_at,
            "supnet_version": self.supnet_version,
            "database": self.database,
            "audit_head": None
            if self.audit_head is None
            else {"seq": self.audit_head.seq, "hash": self.audit_head.hash},
            "parts": [part.to_dict() for part in self.parts],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> Manifest:
        """Parse manifest.json; InvalidArgumentError naming the file when it is not one of ours."""
        if data.get("format") != FORMAT:
            raise InvalidArgumentError(f"{source}: not a supnet backup (format {data.get('format')!r}, want {FORMAT})")
        try:
            head = data.get("audit_head")
            return cls(
                node_id=str(data["node_id"]),
                created_at=str(data["created_at"]),
                supnet_version=str(data.get("supnet_version", "")),
                database=dict(data["database"]),
                audit_head=None if head is None else AuditHead(int(head["seq"]), str(head["hash"])),
                parts=tuple(Part.from_dict(part) for part in data["parts"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"{source}: manifest.json is incomplete: {exc}") from exc

    def part(self, path: str) -> Part | None:
        """The part stored under ``path``, if any."""
        return next((part for part in self.parts if part.path == path), None)


def hash_file(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def describe_parts(staging: Path, members: Sequence[str]) -> tuple[Part, ...]:
    """Hash the staged files that become members (their paths relative to ``staging``)."""
    parts = []
    for member in members:
        path = staging / member
        size, digest = hash_file(path)
        parts.append(Part(member, size, digest, path.stat().st_mode & 0o777))
    return tuple(parts)


def write_archive(out: Path, manifest: Manifest, staging: Path) -> int:
    """Write the archive to ``out`` atomically (temporary name, fsync, rename); returns its size in bytes."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    try:
        os.fchmod(descriptor, 0o600)  # it holds the node's private keys
        with os.fdopen(descriptor, "wb") as handle:
            with tarfile.open(fileobj=handle, mode="w:gz", compresslevel=6) as archive:
                body = json.dumps(manifest.to_dict(), ensure_ascii=False, indent=2).encode("utf-8")
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mode = len(body), 0o600
                archive.addfile(info, _BytesReader(body))
                for part in manifest.parts:
                    info = tarfile.TarInfo(part.path)
                    info.size, info.mode = part.bytes, part.mode
                    with (staging / part.path).open("rb") as source:
                        archive.addfile(info, source)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(out.parent)
    return out.stat().st_size


def _fsync_directory(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened for fsync
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class _BytesReader:
    """A minimal file object over bytes for tarfile.addfile."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._offset + size
        chunk = self._data[self._offset : end]
        self._offset += len(chunk)
        return chunk


def _safe_member(name: str, source: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise IntegrityError(f"{source}: unsafe member name {name!r} in the archive")
    return path


def read_manifest(archive_path: Path) -> Manifest:
    """The manifest of a backup file (its first member), without reading the rest."""
    source = str(archive_path)
    try:
        with tarfile.open(archive_path, mode="r:*") as archive:
            first = archive.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise InvalidArgumentError(f"{source}: not a supnet backup (no {MANIFEST} first)")
            handle = archive.extractfile(first)
            assert handle is not None
            data = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError as exc:
        raise InvalidArgumentError(f"{source}: no such backup file") from exc
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise InvalidArgumentError(f"{source}: not a readable supnet backup: {exc}") from exc
    return Manifest.from_dict(data, source)


def extract_archive(archive_path: Path, into: Path | None) -> Manifest:
    """Extract every part into ``into`` (None: only check), each checked against the manifest.

    IntegrityError names the first part that is missing, extra, unsafe or does not match its SHA-256.
    """
    source = str(archive_path)
    manifest = read_manifest(archive_path)
    expected = {part.path: part for part in manifest.parts}
    seen: set[str] = set()
    try:
        with tarfile.open(archive_path, mode="r:*") as archive:
            for member in archive:
                if member.name == MANIFEST:
                    continue
                part = expected.get(member.name)
                if part is None or not member.isfile():
                    raise IntegrityError(f"{source}: member {member.name!r} is not in the manifest")
                relative = _safe_member(member.name, source)
                handle = archive.extractfile(member)
                assert handle is not None
                target = None if into is None else into.joinpath(*relative.parts)
                size, digest = _copy_hashing(handle, target, part.mode)
                if size != part.bytes or digest != part.sha256:
                    raise IntegrityError(
                        f"{source}: {member.name} does not match the manifest (SHA-256 {digest[:16]}…, "
                        f"expected {part.sha256[:16]}…): the backup is damaged"
                    )
                seen.add(member.name)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise IntegrityError(f"{source}: the archive is damaged or truncated: {exc}") from exc
    missing = sorted(set(expected) - seen)
    if missing:
        raise IntegrityError(f"{source}: parts listed in the manifest are missing: {', '.join(missing)}")
    return manifest


def _copy_hashing(handle: IO[bytes], target: Path | None, mode: int) -> tuple[int, str]:
    """(size, SHA-256) of a member, written to ``target`` with ``mode`` unless None."""
    digest = hashlib.sha256()
    size = 0
    out: IO[bytes] | None = None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
    try:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    if target is not None:
        os.chmod(target, mode)
    return size, digest.hexdigest()
