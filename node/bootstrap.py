"""Create a node's data directory: config file, migrated database, report-signing key (``supnet init``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from federation import generate_keypair, load_private_key, public_key_b64, save_private_key, save_public_key
from node.audit_log import Action, AuditLog, operator_actor
from node.config import Level, config_path, database_url, parse_config, save_config
from node.errors import ConfigError
from node.store import make_engine, migrate

__all__ = ["REPORT_KEY_FILE", "InitResult", "init_node", "signing_key_paths"]

log = logging.getLogger(__name__)

# The Ed25519 report-signing key ``supnet init`` creates (the plaintext-mode key; PKI nodes sign with pki/).
REPORT_KEY_FILE = Path("keys") / "report_signing.pem"


@dataclass(frozen=True)
class InitResult:
    """What ``init_node`` created."""

    data_dir: Path
    config_file: Path
    database: str
    private_key: Path
    public_key: Path
    public_key_b64: str
    key_created: bool


def signing_key_paths(data_dir: Path) -> tuple[Path, Path]:
    """The node's report-signing key files: (private PEM, public PEM)."""
    private = data_dir / REPORT_KEY_FILE
    return private, private.with_suffix(".pub")


def init_node(
    data_dir: Path,
    node_id: str,
    *,
    level: Level = "district",
    db_url: str = "",
    name: str = "",
    force: bool = False,
    federation: Mapping[str, Any] | None = None,
) -> InitResult:
    """Create DIR, write supnet.toml, create and migrate the database, generate the Ed25519 report-signing key.

    ``federation`` sets keys of the config's federation section (listen addresses, parent, children: a node
    deployed on its own machine). Refuses (ConfigError) to overwrite an existing config unless ``force``; an
    existing key is always kept, because replacing it would orphan every report already signed with it.
    """
    path = config_path(data_dir)
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; use --force to overwrite the config")
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"{data_dir} exists and is not a directory")
    config = parse_config(
        {"id": node_id, "level": level, "name": name, "store": {"url": db_url}, "federation": dict(federation or {})},
        "supnet init",
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    url = database_url(data_dir, config)
    engine = make_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    save_config(data_dir, config)
    private_path, public_path = signing_key_paths(data_dir)
    created = not private_path.exists()
    if created:
        # Only the node's own user may list or read its key directory.
        private_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        private_key, public_key = generate_keypair()
        save_private_key(private_path, private_key)
        save_public_key(public_path, public_key)
    else:
        public_key = load_private_key(private_path).public_key()
        if not public_path.exists():
            save_public_key(public_path, public_key)
    engine = make_engine(url)
    try:
        AuditLog(engine).record(
            actor=operator_actor(node_id),
            action=Action.NODE_INITIALISED,
            target=node_id,
            detail={"level": level, "force": force, "key_created": created, "public_key": public_key_b64(public_key)},
        )
    finally:
        engine.dispose()
    log.info("initialised node %s in %s (key %s)", node_id, data_dir, "created" if created else "kept")
    return InitResult(
        data_dir=data_dir,
        config_file=path,
        database=make_url(url).render_as_string(hide_password=True),
        private_key=private_path,
        public_key=public_path,
        public_key_b64=public_key_b64(public_key),
        key_created=created,
    )
