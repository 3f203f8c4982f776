"""``supnet backup`` and ``supnet restore``: a whole node in one file, taken online, put back with its audit checked.

A backup holds a consistent snapshot of the database (node.backup.databases), the audit head of that snapshot
and every file of the data directory except the database files and run-time state (``serve.json``,
``enrol.json``, temporary and ``*.replaced-*`` directories): ``supnet.toml``, ``keys/``, ``pki/`` (private keys
included — keep backups as safe as the node), holiday files. The node keeps running while it is taken.

A restore refuses a data directory whose ``supnet serve`` is running, and one that already holds a node unless
``force``; then the database is put back first (PostgreSQL in one transaction), then the files. What it replaces
is kept: files and a SQLite database in ``DATA_DIR/replaced-by-restore-<time>/``, a PostgreSQL schema renamed
``<schema>_replaced_<time>``. Finally the audit chain must verify and end exactly at the backup's head; the
restore is then audited (``node.restored``).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import logging
import os
import shutil
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from federation import AuditHead
from node.audit_log import Action, AuditLog, operator_actor
from node.backup.archive import Manifest, describe_parts, extract_archive, hash_file, read_manifest, write_archive
from node.backup.databases import (
    DatabaseSnapshot,
    backend_of,
    postgresql_state,
    restore_postgresql,
    restore_sqlite,
    snapshot_database,
    sqlite_files,
    sqlite_has_data,
)
from node.config import CONFIG_FILE_NAME, database_url, load_config, parse_config, save_config
from node.errors import ConfigError, IntegrityError, InvalidArgumentError, InvalidStateError
from node.run_state import ENROL_STATE_FILE, SERVE_STATE_FILE, pid_alive, read_state_file, serve_state_path
from node.store import make_engine, revision_known

log = logging.getLogger(__name__)

REPLACED_PREFIX = "replaced-by-restore-"
_STAGING_PREFIX = ".restore-"
# Run-time state and leftovers that a restored node must not inherit, and directories of replaced data.
_SKIPPED_NAMES = frozenset({SERVE_STATE_FILE, ENROL_STATE_FILE})
_SKIPPED_PREFIXES = (REPLACED_PREFIX, _STAGING_PREFIX, ".pki-staging-")


def _version() -> str:
    try:
        return importlib.metadata.version("supnet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _skipped(relative: Path) -> bool:
    top = relative.parts[0]
    name = relative.name
    return (
        top in _SKIPPED_NAMES
        or top.startswith(_SKIPPED_PREFIXES)
        or ".replaced-" in top
        or name.endswith((".tmp", ".partial"))
    )


def data_files(data_dir: Path, database_files: list[Path]) -> list[Path]:
    """The data directory's files a backup keeps, relative to it, in a stable order."""
    excluded = {path.resolve() for path in database_files}
    found = []
    for root, directories, files in os.walk(data_dir):
        base = Path(root)
        directories[:] = sorted(d for d in directories if not _skipped((base / d).relative_to(data_dir)))
        for name in sorted(files):
            path = base / name
            relative = path.relative_to(data_dir)
            if _skipped(relative) or path.resolve() in excluded or not path.is_file() or path.is_symlink():
                continue
            found.append(relative)
    return found


# --- backup ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupResult:
    """What ``supnet backup`` wrote."""

    path: Path
    bytes: int
    sha256: str
    manifest: Manifest

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"file": str(self.path), "bytes": self.bytes, "sha256": self.sha256, "manifest": self.manifest.to_dict()}


def backup_node(data_dir: Path, out: Path) -> BackupResult:
    """Snapshot the node's database online, add its files, write ``out`` atomically (see the module docstring)."""
    data_dir = data_dir.resolve()
    out = out.resolve()
    if out.is_relative_to(data_dir):
        raise InvalidArgumentError(f"--out {out}: write the backup outside the data directory {data_dir}")
    config = load_config(data_dir)
    url = database_url(data_dir, config)
    database_files = sqlite_files(url) if backend_of(url) == "sqlite" else []
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".supnet-backup-", dir=out.parent))
    try:
        os.chmod(staging, 0o700)
        (staging / "database").mkdir()
        snapshot = snapshot_database(url, staging / "database")
        members = [f"database/{snapshot.path.name}"]
        for relative in data_files(data_dir, database_files):
            target = staging / "files" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(data_dir / relative, target)
            members.append(f"files/{relative.as_posix()}")
        manifest = Manifest(
            node_id=config.id,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            supnet_version=_version(),
            database=_database_facts(snapshot, members[0]),
            audit_head=snapshot.audit_head,
            parts=describe_parts(staging, members),
        )
        size = write_archive(out, manifest, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _, digest = hash_file(out)
    log.info("backup of %s written to %s (%s bytes, audit head %s)", config.id, out, size, snapshot.audit_head)
    return BackupResult(out, size, digest, manifest)


def _database_facts(snapshot: DatabaseSnapshot, member: str) -> dict[str, Any]:
    return {
        "backend": snapshot.backend,
        "file": member,
        "schema_revision": snapshot.schema_revision,
        "pg_schema": snapshot.pg_schema,
        "method": snapshot.method,
    }


# --- restore --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreResult:
    """What ``supnet restore`` did."""

    data_dir: Path
    manifest: Manifest
    database: str
    audit_entries: int
    audit_head: AuditHead | None
    replaced: Path | None
    replaced_schema: str | None
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "data_dir": str(self.data_dir),
            "node_id": self.manifest.node_id,
            "backup_created_at": self.manifest.created_at,
            "database": self.database,
            "audit_entries_verified": self.audit_entries,
            "audit_head": None if self.audit_head is None else f"{self.audit_head.seq}:{self.audit_head.hash}",
            "replaced": None if self.replaced is None else str(self.replaced),
            "replaced_schema": self.replaced_schema,
            "warnings": list(self.warnings),
        }


def check_backup(archive: Path) -> Manifest:
    """Check every part of a backup file against its manifest without writing anything."""
    return extract_archive(archive, None)


def _refuse_live(data_dir: Path) -> None:
    state = read_state_file(serve_state_path(data_dir))
    if state is not None and pid_alive(int(state.get("pid", 0))):
        raise InvalidStateError(
            f"'supnet serve' (pid {state.get('pid')}) is running on {data_dir}: stop it first; "
            "a restore never replaces the data of a running node"
        )


def _restored_config_url(staged_files: Path, data_dir: Path, db_url: str | None, source: str) -> str:
    """The database URL the restored node will use (rewriting the staged supnet.toml for ``db_url``)."""
    staged_config = staged_files / CONFIG_FILE_NAME
    if not staged_config.is_file():
        raise IntegrityError(f"{source}: the backup holds no {CONFIG_FILE_NAME}")
    config = parse_config(tomllib.loads(staged_config.read_text(encoding="utf-8")), f"{source}: {CONFIG_FILE_NAME}")
    if db_url is not None:
        data = config.model_dump(mode="json", exclude_none=True)
        data["store"]["url"] = db_url
        config = parse_config(data, "--db-url")
        save_config(staged_files, config)
        os.chmod(staged_config, 0o600)
    return database_url(data_dir, config)


def _holds_node(data_dir: Path, url: str, backend: str) -> bool:
    if (data_dir / CONFIG_FILE_NAME).exists():
        return True
    if backend == "sqlite":
        return sqlite_has_data(url)
    return postgresql_state(url)[1]


def restore_node(archive: Path, data_dir: Path, *, force: bool = False, db_url: str | None = None) -> RestoreResult:
    """Restore a backup into ``data_dir`` (see the module docstring); IntegrityError if its audit does not verify."""
    archive = archive.resolve()
    data_dir = data_dir.resolve()
    source = str(archive)
    manifest = read_manifest(archive)
    revision = manifest.database.get("schema_revision")
    if revision is not None and not revision_known(str(revision)):
        raise InvalidArgumentError(
            f"{source}: the database is at schema revision {revision}, unknown to this supnet {_version()}: "
            f"restore it with the supnet that took it ({manifest.supnet_version}) or a newer one"
        )
    _refuse_live(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=data_dir))
    try:
        extract_archive(archive, staging)
        url = _restored_config_url(staging / "files", data_dir, db_url, source)
        backend = backend_of(url)
        if backend != manifest.database.get("backend"):
            raise ConfigError(
                f"{source} holds a {manifest.database.get('backend')} database but the restored node would use "
                f"{backend}: pass --db-url of a {manifest.database.get('backend')} database"
            )
        if _holds_node(data_dir, url, backend) and not force:
            raise InvalidStateError(
                f"{data_dir} already holds a node (config or database): use --force to replace it (what is replaced "
                f"is kept in {data_dir}/{REPLACED_PREFIX}<time>/, a PostgreSQL schema as <schema>_replaced_<time>)"
            )
        stamp = _stamp()
        replaced = data_dir / f"{REPLACED_PREFIX}{stamp}"
        replaced_schema = None
        dump = staging / str(manifest.database["file"])
        # The database first: a PostgreSQL restore that fails has changed nothing (one transaction).
        restored_files: set[Path] = set()
        if backend == "sqlite":
            restore_sqlite(url, dump, replaced / "database")
            restored_files = {path.resolve() for path in sqlite_files(url)}
        else:
            replaced_schema = restore_postgresql(url, dump, str(manifest.database["pg_schema"]), stamp=stamp.lower())
        _swap_files(data_dir, staging / "files", replaced, keep={staging.resolve(), *restored_files})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    verified, head = _verify_audit(url, manifest, source)
    warnings = _warnings(data_dir)
    config = load_config(data_dir)
    engine = make_engine(url)
    try:
        AuditLog(engine).record(
            actor=operator_actor(config.id),
            action=Action.NODE_RESTORED,
            target=config.id,
            detail={
                "backup": source,
                "backup_sha256": hash_file(archive)[1],
                "backup_created_at": manifest.created_at,
                "audit_head_in_backup": None if head is None else f"{head.seq}:{head.hash}",
                "replaced": str(replaced) if replaced.exists() else None,
                "replaced_schema": replaced_schema,
            },
        )
    finally:
        engine.dispose()
    return RestoreResult(
        data_dir=data_dir,
        manifest=manifest,
        database=make_url(url).render_as_string(hide_password=True),
        audit_entries=verified,
        audit_head=head,
        replaced=replaced if replaced.exists() else None,
        replaced_schema=replaced_schema,
        warnings=warnings,
    )


def _swap_files(data_dir: Path, staged: Path, replaced: Path, *, keep: set[Path]) -> None:
    """Move every existing top-level entry aside (but ``keep``: the restored database), then the staged ones in."""
    for entry in sorted(data_dir.iterdir()):
        if entry.resolve() in keep or entry.name.startswith((REPLACED_PREFIX, _STAGING_PREFIX)):
            continue
        replaced.mkdir(parents=True, exist_ok=True)
        shutil.move(entry, replaced / entry.name)
    if staged.is_dir():
        for entry in sorted(staged.iterdir()):
            os.replace(entry, data_dir / entry.name)


def _verify_audit(url: str, manifest: Manifest, source: str) -> tuple[int, AuditHead | None]:
    """The restored chain must verify and end exactly at the backup's head; (entries checked, head)."""
    engine = make_engine(url)
    try:
        result = AuditLog(engine).verify(remembered_head=manifest.audit_head)
    finally:
        engine.dispose()
    if not result.ok:
        raise IntegrityError(
            f"restored from {source}, but its audit log does not verify: #{result.first_broken_seq} "
            f"({result.kind}): {result.reason}"
        )
    if result.head != manifest.audit_head:
        raise IntegrityError(
            f"restored from {source}, but its audit log ends at {result.head} while the backup's manifest names "
            f"{manifest.audit_head}"
        )
    return result.entries, result.head


def _warnings(data_dir: Path) -> tuple[str, ...]:
    config = load_config(data_dir)
    if not config.federation.parent_id:
        return ()
    return (
        f"{config.id} reports to {config.parent_id}: reports it sent after this backup are not in the restored "
        "outbox; if its parent acknowledged any, it refuses the next ones as a rewritten history — compare "
        f"'supnet federation status' with the parent before 'supnet serve'",
    )
