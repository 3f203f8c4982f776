"""What ``up`` started, saved as ``DIR/federation.json`` for ``status``, ``down``, the demo and the benchmarks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from federation import NotFoundError
from node.run_state import write_state_file
from node.trust import PKI_DIR_NAME, PkiDirectory, ingest_credential_paths

STATE_FILE = "federation.json"
# The ingest credential every node gets from its own CA (tools and benchmarks stream records with it).
INGEST_SYSTEM = "local-ingest"


@dataclass
class LaunchedNode:
    """One node process of a launched tree."""

    id: str
    level: str
    name: str
    data_dir: str
    address: str
    pid: int = 0
    log_file: str = ""

    def pki(self, insecure_plaintext: bool = False) -> PkiDirectory | None:
        """The node's PKI directory (None for a tree launched in the insecure plaintext mode)."""
        return None if insecure_plaintext else PkiDirectory(Path(self.data_dir) / PKI_DIR_NAME)


@dataclass
class FederationState:
    """What ``up`` started, saved as ``DIR/federation.json``."""

    topology: str
    base_dir: str
    nodes: list[LaunchedNode]
    started_at: float = 0.0
    insecure_plaintext: bool = False

    def pki(self, node_id: str) -> PkiDirectory | None:
        """A node's PKI directory (None in the insecure plaintext mode)."""
        return self.node(node_id).pki(self.insecure_plaintext)

    def ingest_credential(self, node_id: str) -> tuple[Path, Path, Path]:
        """(key, chain, root) of the ingest credential the launcher had node_id's CA issue."""
        pki = self.pki(node_id)
        if pki is None:
            raise NotFoundError(f"the federation in {self.base_dir} runs in plaintext mode: no ingest credentials")
        key, chain = ingest_credential_paths(pki, INGEST_SYSTEM)
        return key, chain, pki.file("root.pem")

    def save(self) -> Path:
        """Write the state file (atomically)."""
        path = Path(self.base_dir) / STATE_FILE
        write_state_file(path, asdict(self))
        return path

    @classmethod
    def load(cls, base_dir: Path) -> FederationState:
        """Read ``DIR/federation.json``; NotFoundError if no tree was launched there."""
        path = base_dir / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise NotFoundError(f"no federation launched in {base_dir} ({path} is missing)") from exc
        nodes = [LaunchedNode(**node) for node in data.pop("nodes")]
        return cls(nodes=nodes, **data)

    def node(self, node_id: str) -> LaunchedNode:
        """One node by id."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise NotFoundError(f"node {node_id} is not part of the federation in {self.base_dir}")
