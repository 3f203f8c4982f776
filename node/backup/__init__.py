"""Backup and restore of a whole node: an online database snapshot, the data directory's files, the audit head.

``archive``: the backup file (manifest with SHA-256 of every part, written atomically); ``databases``: consistent
snapshots of SQLite (online backup API) and PostgreSQL (pg_dump from one exported snapshot) and their restore;
``operations``: ``backup_node`` / ``restore_node`` (what ``supnet backup`` and ``supnet restore`` run).
"""

from node.backup.archive import Manifest, Part, read_manifest
from node.backup.operations import BackupResult, RestoreResult, backup_node, check_backup, restore_node

__all__ = [
    "BackupResult",
    "Manifest",
    "Part",
    "RestoreResult",
    "backup_node",
    "check_backup",
    "read_manifest",
    "restore_node",
]
