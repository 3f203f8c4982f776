"""The one test tree: real nodes (data dir, database, key, gRPC server on port 0), wired parent to child.

Nodes are created with the real ``supnet init`` code, get the tree's PKI through the real enrolment flow
(node.trust.provisioning) and call each other over mutual TLS (``plaintext=True``: the insecure plaintext mode
with the keys in the config); they are filled by the real synthetic generator and importer, served by the real
NodeServer and report through the real ReportSender. Every report-exchange, drill-down, verify and
authorization test builds its tree here:

- ``Tree(root, ids)``: the report tests' tree. Test time (``TreeClock``, skippable), quick report timing, servers
  on the parents only (children call up); data comes later with ``import_synthetic``.
- ``hosting``: "standalone" (each server its own call pool and health thread) or "hosted" (every server of the
  tree on one shared call pool, its health checks run by one shared scheduler, queries to a child in process: how
  ``supnet serve`` hosts several nodes, node.server.hosting). The default comes from ``SUPNET_TEST_HOSTING``, so
  any suite built on this tree runs in either mode (``SUPNET_TEST_HOSTING=hosted pytest tests/drilldown``).
- ``build_tree(base, cases)`` / ``running_tree``: the drill-down tree. Real time, the nodes' default report
  timing (module-scoped trees outlive the quick staleness window), every node serves (queries go down to the
  leaves), synthetic data imported at once.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
from apscheduler.schedulers.background import BackgroundScheduler
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import public_key_b64
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from node.app import Node, open_node
from node.bootstrap import init_node
from node.config import CalendarConfig, ChildConfig, load_config, save_config
from node.drilldown import DrilldownClient, build_query
from node.errors import UnavailableError
from node.ingest import Importer
from node.reporting import ReportSender
from node.server import DEFAULT_RPC_WORKERS, HEALTH_INTERVAL_SECONDS, NodeServer
from node.store import make_engine, migrate
from node.supervision import default_listeners
from node.synthetic import generate
from node.trust import SigningIdentity, node_channel, pki_directory, provision_tree, signing_identity

LEVELS = ("province", "city", "district", "street")
# The report tests' data and time: March 2025, the tree starting the Monday after.
DATA_FROM = date(2025, 3, 3)
DATA_TO = date(2025, 3, 21)
START = datetime(2025, 3, 24, 9, 0, 0)
# The drill-down trees' data (they run in real time).
DRILLDOWN_FROM = date(2026, 1, 5)
DRILLDOWN_TO = date(2026, 4, 30)
# Report timing of the report tests: staleness after three minutes of test time, retries within a second.
QUICK_REPORTS: Mapping[str, Any] = {
    "report_interval_seconds": 60.0,
    "stale_after_intervals": 3,
    "rpc_timeout_seconds": 5.0,
    "retry_base_seconds": 0.2,
    "retry_max_seconds": 1.0,
}
SERVER_WORKERS = 8
# How long a node restarted on its old port waits for it (Tree.start_server).
REBIND_SECONDS = 10.0
HOSTING_MODES = ("standalone", "hosted")


def default_hosting() -> str:
    """The tree's hosting mode from ``SUPNET_TEST_HOSTING`` (standalone unless set)."""
    mode = os.environ.get("SUPNET_TEST_HOSTING", "standalone")
    assert mode in HOSTING_MODES, f"SUPNET_TEST_HOSTING must be one of {HOSTING_MODES}, got {mode!r}"
    return mode


_TEMPLATE: list[Path] = []


def _migrated_template() -> Path:
    """One migrated SQLite file per test session, copied into every new node's data directory."""
    if not _TEMPLATE:
        folder = Path(tempfile.mkdtemp(prefix="supnet-tree-template-"))
        engine = make_engine(f"sqlite:///{folder / 'node.db'}")
        migrate(engine)
        engine.dispose()
        _TEMPLATE.append(folder / "node.db")
    return _TEMPLATE[0]


class TreeClock:
    """Node time: ``start`` plus the real time elapsed, plus whatever a test skips ahead (staleness)."""

    def __init__(self, start: datetime = START) -> None:
        self._start = start
        self._started = time.monotonic()
        self._skipped = timedelta()
        self._lock = threading.Lock()

    @classmethod
    def real(cls) -> TreeClock:
        """The nodes' own wall clock (naive local time in their default zone), still able to skip ahead."""
        return cls(datetime.now(ZoneInfo(CalendarConfig().timezone)).replace(tzinfo=None))

    def __call__(self) -> datetime:
        with self._lock:
            return self._start + timedelta(seconds=time.monotonic() - self._started) + self._skipped

    def advance(self, seconds: float) -> None:
        """Jump ahead (a parent that has not heard from a child for a while)."""
        with self._lock:
            self._skipped += timedelta(seconds=seconds)


@dataclass
class TreeNode:
    """One node of a test tree: its opened node, and its server and sender while it has them."""

    node_id: str
    data_dir: Path
    node: Node
    public_key_b64: str
    server: NodeServer | None = None
    sender: ReportSender | None = None
    port: int = 0

    @property
    def parent_id(self) -> str:
        return self.node_id.rpartition(".")[0]

    @property
    def address(self) -> str:
        """Where the node serves (or last served)."""
        return f"127.0.0.1:{self.port}"

    def db(self) -> sqlite3.Connection:
        """A plain sqlite3 connection to the node's file: an independent view of its data."""
        return sqlite3.connect(self.data_dir / "node.db")


class Tree:
    """A tree of real nodes; ``tree[node_id]`` is the opened node, ``tree.nodes[node_id]`` its TreeNode."""

    def __init__(
        self,
        root_dir: Path,
        node_ids: Iterable[str],
        *,
        clock: TreeClock | None = None,
        db_urls: dict[str, str] | None = None,
        timing: Mapping[str, Any] = QUICK_REPORTS,
        federation: dict[str, Any] | None = None,
        plaintext: bool = False,
        serve_leaves: bool = False,
        clock_offsets: Mapping[str, float] | None = None,
        hosting: str | None = None,
    ) -> None:
        """Create, enrol, configure, open and serve the nodes ``root_dir/<id>``.

        ``timing`` is the report timing every node gets ({} keeps the node defaults), ``federation`` further
        settings; the nodes of ``db_urls`` use that database instead of their own SQLite file. ``clock_offsets``
        (seconds by node id, changeable later in ``tree.clock_offsets``) skews a node's clock from the tree's.
        """
        self.root_dir = root_dir
        self.clock = clock or TreeClock()
        self.clock_offsets: dict[str, float] = dict(clock_offsets or {})
        self.ids = list(node_ids)
        self.plaintext = plaintext
        self.hosting = hosting or default_hosting()
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: BackgroundScheduler | None = None
        if self.hosting == "hosted":
            self._pool = ThreadPoolExecutor(max_workers=DEFAULT_RPC_WORKERS, thread_name_prefix="rpc-host")
            self._jobs = BackgroundScheduler()
            self._jobs.start()
        self.nodes: dict[str, TreeNode] = {}
        db_urls = db_urls or {}
        # Only the plaintext mode names keys in the config; with the PKI they travel in certificate chains.
        self._config_keys: dict[str, str] = {}
        for node_id in self.ids:
            if node_id not in db_urls:
                # A copy of an already migrated file: init_node's own migration then only confirms the head.
                (root_dir / node_id).mkdir(parents=True)
                shutil.copyfile(_migrated_template(), root_dir / node_id / "node.db")
            level = LEVELS[min(node_id.count("."), len(LEVELS) - 1)]
            result = init_node(
                root_dir / node_id, node_id, level=level, name=node_id.upper(), db_url=db_urls.get(node_id, "")
            )
            self._config_keys[node_id] = result.public_key_b64 if plaintext else ""
        if not plaintext:
            provision_tree({node_id: root_dir / node_id / "pki" for node_id in self.ids})
        settings = {**timing, "insecure_plaintext": plaintext, **(federation or {})}
        try:
            # Children first: a parent's server routes queries to the children's addresses it is configured with.
            for node_id in self.bottom_up():
                self._open(node_id, settings, serve=serve_leaves or bool(self.children_of(node_id)))
            # Then each child learns where its parent serves (its sender reads the address when it sends).
            for node_id in self.ids:
                if self.nodes[node_id].parent_id in self.nodes:
                    self._point_at_parent(node_id)
        except BaseException:
            self.close()
            raise
        self.nodes = {node_id: self.nodes[node_id] for node_id in self.ids}

    def _open(self, node_id: str, settings: dict[str, Any], *, serve: bool) -> None:
        data_dir = self.root_dir / node_id
        config = load_config(data_dir)
        parent = node_id.rpartition(".")[0]
        parent_id = parent if parent in self.ids else ""
        children = [
            ChildConfig(
                id=child,
                public_key=self._config_keys[child],
                address=self.nodes[child].address if self.nodes[child].server is not None else "",
            )
            for child in self.children_of(node_id)
        ]
        config.federation = config.federation.model_copy(
            update={
                **settings,
                # parent_id comes with the parent's address (_point_at_parent): the config refuses one without
                # the other, and the parent's address is known only once it serves.
                "parent_id": "",
                "parent_address": "",
                "parent_public_key": self._config_keys[parent_id] if parent_id else "",
                "children": children,
            }
        )
        save_config(data_dir, config)
        node = open_node(data_dir, clock=self.node_clock(node_id))
        # The key the node signs with: its PKI report key, or the plaintext-mode key of ``supnet init``.
        signing_key = public_key_b64(signing_identity(node).private_key.public_key())
        entry = self.nodes[node_id] = TreeNode(node_id, data_dir, node, signing_key)
        if parent_id:
            entry.sender = ReportSender(node)
        if serve:
            self.start_server(node_id)

    def node_clock(self, node_id: str) -> Callable[[], datetime]:
        """The node's clock: the tree's, plus its entry of ``clock_offsets`` (read at every call)."""
        return lambda: self.clock() + timedelta(seconds=self.clock_offsets.get(node_id, 0.0))

    def _point_at_parent(self, node_id: str) -> None:
        entry = self.nodes[node_id]
        entry.node.config.federation.parent_id = entry.parent_id
        entry.node.config.federation.parent_address = self.nodes[entry.parent_id].address
        save_config(entry.data_dir, entry.node.config)

    # -- topology -----------------------------------------------------------------------------------------------
    def children_of(self, node_id: str) -> list[str]:
        return [other for other in self.ids if other.rpartition(".")[0] == node_id]

    def leaves(self) -> list[str]:
        return [node_id for node_id in self.ids if not self.children_of(node_id)]

    def bottom_up(self) -> list[str]:
        """Deepest nodes first, so each parent reports after its children."""
        return sorted(self.ids, key=lambda node_id: -node_id.count("."))

    def __getitem__(self, node_id: str) -> Node:
        return self.nodes[node_id].node

    # -- servers, senders, channels -----------------------------------------------------------------------------
    def start_server(self, node_id: str, port: int = 0) -> int:
        """Serve the node on ``port`` (0: any free port); its port.

        A node restarted on its old port (the address its parent knows) waits up to REBIND_SECONDS for the port: while
        it was down, another test's connection may have been given that port as its local (ephemeral) port, as seen
        once in a fresh clone's ``make test`` ("Address already in use").
        """
        entry = self.nodes[node_id]
        deadline = time.monotonic() + REBIND_SECONDS
        while True:
            entry.server = NodeServer(
                entry.node,
                address=f"127.0.0.1:{port}",
                sender=entry.sender,
                max_workers=SERVER_WORKERS,
                executor=self._pool,
                health_thread=self._jobs is None,
                in_process=self.hosting == "hosted",
            )
            try:
                entry.port = entry.server.start()
                break
            except UnavailableError:
                entry.server.stop(0)
                if port == 0 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        if self._jobs is not None:
            self._jobs.add_job(
                entry.server.health.evaluate,
                "interval",
                seconds=HEALTH_INTERVAL_SECONDS,
                id=f"{node_id}/health_check",
                replace_existing=True,
            )
        return entry.port

    def stop_server(self, node_id: str) -> None:
        entry = self.nodes[node_id]
        if entry.server is not None:
            if self._jobs is not None and self._jobs.get_job(f"{node_id}/health_check") is not None:
                self._jobs.remove_job(f"{node_id}/health_check")
            entry.server.stop(0)
            entry.server = None

    def sender(self, node_id: str) -> ReportSender:
        sender = self.nodes[node_id].sender
        assert sender is not None, f"{node_id} has no parent"
        return sender

    def channel(self, as_node: str, to_node: str, *, expected: str | None = None) -> grpc.Channel:
        """A channel from as_node (its TLS certificate) to to_node's server, accepting only ``expected``'s."""
        pki = None if self.plaintext else pki_directory(self.nodes[as_node].data_dir)
        return node_channel(pki, self.nodes[to_node].address, expected or to_node)

    def stub(self, node_id: str, as_node: str | None = None) -> tuple[NodeServiceStub, grpc.Channel]:
        """A client stub to node_id's server, connected with as_node's TLS certificate (the caller closes it).

        ``as_node`` defaults to node_id's first child (the usual caller of SubmitReport).
        """
        channel = self.channel(as_node or self.children_of(node_id)[0], node_id)
        return NodeServiceStub(channel), channel

    def client(self, node_id: str) -> DrilldownClient:
        """The local operator of node_id talking to its own server."""
        return DrilldownClient.for_node(self[node_id], self.nodes[node_id].address)

    def query(self, signer: str, target: str, *, requester: str | None = None, **request: object) -> SignedEnvelope:
        """A query signed by signer's report key with its certificate chain, naming ``requester`` (default: the
        signer), as DrilldownClient sends it (``request``: one of summary=, cases=, alerts=, ... messages)."""
        identity = node_identity(self, signer)
        return build_query(
            identity.private_key,
            requester or signer,
            target,
            certificate_chain=identity.certificate_chain,
            **request,  # type: ignore[arg-type]
        )

    def report_up(self, kind: str = "incremental") -> None:
        """Every node with a parent builds a report and delivers its outbox, deepest first."""
        for node_id in self.bottom_up():
            if self.nodes[node_id].sender is not None:
                result = self.sender(node_id).report_now(kind)  # type: ignore[arg-type]
                assert not result.failed, f"{node_id}: {result.error}"

    def close(self) -> None:
        for entry in self.nodes.values():
            if entry.sender is not None:
                entry.sender.stop()
            if entry.server is not None:
                entry.server.stop(0)
            entry.node.close()
        if self._jobs is not None and self._jobs.running:
            self._jobs.shutdown(wait=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    # -- data ---------------------------------------------------------------------------------------------------
    def import_synthetic(
        self,
        node_id: str,
        cases: int,
        seed: int,
        *,
        date_from: date = DATA_FROM,
        date_to: date = DATA_TO,
        out_dir: Path | None = None,
    ) -> int:
        """Generate a node's synthetic files (into ``out_dir``) and import them with the real importer, with the
        node's default listeners; returns the records accepted."""
        node = self[node_id]
        out_dir = out_dir or self.root_dir / f"data-{node_id}-{seed}"
        summary = generate(node_id, cases, seed, out_dir, date_from=date_from, date_to=date_to)
        imported = Importer(node, listeners=default_listeners(node)).import_files(summary.paths)
        assert imported.rejected == 0, imported.errors[:3]
        return imported.accepted

    def case_count(self, node_ids: list[str]) -> int:
        """Cases stored by these nodes, counted straight from their files."""
        total = 0
        for node_id in node_ids:
            with self.nodes[node_id].db() as conn:
                total += conn.execute("SELECT count(*) FROM cases").fetchone()[0]
        return total


def build_tree(
    base: Path, cases: dict[str, int], *, seed: int = 3, plaintext: bool = False, hosting: str | None = None
) -> Tree:
    """The drill-down tree of ``cases`` (node id -> synthetic cases to import into ``<data dir>/generated``)."""
    ids = sorted(cases, key=lambda node_id: (node_id.count("."), node_id))
    tree = Tree(base, ids, clock=TreeClock.real(), timing={}, plaintext=plaintext, serve_leaves=True, hosting=hosting)
    try:
        for node_id in ids:
            if cases[node_id]:
                out_dir = tree.nodes[node_id].data_dir / "generated"
                tree.import_synthetic(
                    node_id, cases[node_id], seed, date_from=DRILLDOWN_FROM, date_to=DRILLDOWN_TO, out_dir=out_dir
                )
    except BaseException:
        tree.close()
        raise
    return tree


def running_tree(
    base: Path, cases: dict[str, int], *, plaintext: bool = False, hosting: str | None = None
) -> Iterator[Tree]:
    """Generator body for fixtures: build, report up, yield, close (``hosting``: the SUPNET_TEST_HOSTING default)."""
    tree = build_tree(base, cases, plaintext=plaintext, hosting=hosting)
    try:
        tree.report_up()
        yield tree
    finally:
        tree.close()


def node_key(tree: Tree, node_id: str) -> Ed25519PrivateKey:
    """The private signing key of a node (to forge or sign queries in tests)."""
    return signing_identity(tree[node_id]).private_key


def node_identity(tree: Tree, node_id: str) -> SigningIdentity:
    """A node's signing key with its report certificate chain (empty in the plaintext mode)."""
    return signing_identity(tree[node_id])
