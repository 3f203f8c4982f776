"""The full authorization matrix on the 15-node demo tree: every caller × server × RPC over real mutual TLS.

The tree is demo-15's (ids from config/topologies/demo-15.toml), every node a real NodeServer with its own
certificates from the real enrolment flow. Callers: the 15 nodes (their TLS certificates), ingest credentials
of several nodes, and an outsider whose certificate comes from another root. The expected decision of each cell
is computed here from the rules table (node/trust/authorization.py's docstring), independently of that module.

"Allowed" means the call got past authorization: any answer except PERMISSION_DENIED, UNAUTHENTICATED or a
refused handshake (UNAVAILABLE). A call that crashes (INTERNAL, UNKNOWN) or hangs (DEADLINE_EXCEEDED) is a
mismatch whatever was expected.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from federation import REPORT_BODY_TYPE, parse_body, serialize
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.ingest_pb2 import IngestRecord
from federation.proto.v1.ingest_pb2_grpc import IngestServiceStub
from federation.proto.v1.node_service_pb2 import NodeInfoRequest
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from federation.proto.v1.report_pb2 import ReportBody
from node.localtree import Topology, load_topology
from node.reporting import build_reports
from node.trust import (
    CertificateAuthority,
    CertificateRole,
    OwnCredentials,
    check_own_credentials,
    client_channel,
    generate_ec_key,
    pki_directory,
    provision_ingest_credential,
)
from tests.harness.ingest_records import ITEM
from tests.harness.pki import forge_tls_certificate, raw_channel
from tests.harness.tree import Tree, build_tree, node_identity

TOPOLOGY = Path(__file__).resolve().parents[2] / "config" / "topologies" / "demo-15.toml"
RPCS = ("GetNodeInfo", "SubmitReport", "Query", "Ingest")
DENIED = frozenset({grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE})
BROKEN = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED})
TIMEOUT = 10.0

Status = tuple[grpc.StatusCode, str]


@dataclass(frozen=True)
class Caller:
    """Who calls: a node over its TLS certificate, an ingest credential of a node, or an outsider."""

    kind: str  # "node" | "ingest" | "outsider" (another root) | "anonymous" (no client certificate)
    node_id: str  # the node whose certificate (or whose CA's ingest credential) it presents or claims

    @property
    def label(self) -> str:
        return self.node_id if self.kind == "node" else f"{self.kind}@{self.node_id}"


# --- the expected decisions, straight from the rules table --------------------------------------------------


@dataclass
class Rules:
    """The tree's shape (from the topology) and the rules table of node/trust/authorization.py, restated."""

    parent: dict[str, str]

    def is_in_subtree(self, node_id: str, root_id: str) -> bool:
        """True when walking up from node_id through the topology's parents reaches root_id."""
        current = node_id
        while current:
            if current == root_id:
                return True
            current = self.parent[current]
        return False

    def expected(self, caller: Caller, server: str, rpc: str) -> bool:
        """Whether caller may call rpc on server (Query: a query the caller signs, target = server)."""
        if caller.kind in ("outsider", "anonymous"):
            return False  # another root, or no certificate: refused in the handshake
        if rpc == "GetNodeInfo":
            return True  # any authenticated peer of the root
        if caller.kind == "ingest":
            return rpc == "Ingest" and caller.node_id == server
        if rpc == "SubmitReport":
            return self.parent[caller.node_id] == server  # only a registered child, signing as itself
        if rpc == "Query":
            # Over the parent's certificate as an ancestor, or as the server's own local operator.
            return caller.node_id in (server, self.parent[server])
        return False  # Ingest: a node's TLS certificate never ingests

    def expected_drilldown(self, caller: str, target: str) -> bool:
        """A node's operator asking its own server about target, forwarded hop by hop."""
        return self.is_in_subtree(target, caller)


# --- the running tree and the callers' channels ---------------------------------------------------------------


@dataclass
class Matrix:
    """The running tree plus everything the callers need."""

    topology: Topology
    tree: Tree
    rules: Rules
    root_certificate: x509.Certificate
    ingest: dict[str, OwnCredentials]
    outsider_key: ec.EllipticCurvePrivateKey
    outsider_chain: list[x509.Certificate]
    reports: dict[str, SignedEnvelope] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [node.id for node in self.topology.nodes]

    def callers(self) -> list[Caller]:
        return (
            [Caller("node", node_id) for node_id in self.ids]
            + [Caller("ingest", node_id) for node_id in self.ids]
            + [Caller("outsider", "gd"), Caller("anonymous", "gd")]
        )

    def channel(self, caller: Caller, server: str) -> grpc.Channel:
        """caller's channel to server's address, accepting only server's certificate."""
        address = self.tree.nodes[server].address
        if caller.kind == "node":
            return self.tree.channel(caller.node_id, server)
        if caller.kind == "ingest":
            return client_channel(self.ingest[caller.node_id], address, server)
        if caller.kind == "anonymous":
            return raw_channel(address, server, root=self.root_certificate)
        return raw_channel(
            address, server, root=self.root_certificate, key=self.outsider_key, chain=self.outsider_chain
        )

    def query(self, signer: str, requester: str, target: str) -> SignedEnvelope:
        """A fresh query (new nonce) signed with signer's report key and chain, naming requester."""
        return self.tree.query(signer, target, requester=requester, summary=dd.SummaryRequest())


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    topology = load_topology(TOPOLOGY)
    ids = [node.id for node in topology.nodes]
    assert len(ids) == 15
    base = tmp_path_factory.mktemp("authz-matrix")
    # No generated data: the matrix is about access, and an empty node answers every RPC.
    tree = build_tree(base, dict.fromkeys(ids, 0))
    try:
        pki = pki_directory(tree["gd"].data_dir)
        ingest = {}
        for node_id in ids:  # every node's business system holds an ingest credential
            node_pki = pki_directory(tree[node_id].data_dir)
            key, chain = provision_ingest_credential(node_pki, "erp-matrix")
            ingest[node_id] = check_own_credentials(
                key, chain, node_pki.file("root.pem"), roles=[CertificateRole.INGEST]
            )
        outsider_key = generate_ec_key()
        other_root = CertificateAuthority.create_root("gd", now=dt.datetime.now(dt.UTC))
        outsider = forge_tls_certificate(other_root, "gd", outsider_key)
        built = Matrix(
            topology,
            tree,
            Rules({node.id: node.parent_id for node in topology.nodes}),
            pki.load_root(),
            ingest,
            outsider_key,
            [outsider, other_root.certificate],
        )
        for node_id in ids:
            reports = build_reports(tree[node_id])
            if reports:
                built.reports[node_id] = reports[-1].envelope
        # The root has no parent to report to: a well-formed report body signed by the root.
        body = parse_body(built.reports["gd.gz"], ReportBody)
        body.node_id = "gd"
        built.reports["gd"] = node_identity(tree, "gd").sign(REPORT_BODY_TYPE, serialize(body))
        yield built
    finally:
        tree.close()


# --- the calls --------------------------------------------------------------------------------------------------


def _status(call: Callable[[], object]) -> Status:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def _ingest_stream(channel: grpc.Channel) -> Callable[[], object]:
    def run() -> object:
        records = iter([IngestRecord(seq=1, kind="item", fields=ITEM)])
        return list(IngestServiceStub(channel).Ingest(records, timeout=TIMEOUT))

    return run


def _call(matrix: Matrix, channel: grpc.Channel, caller: Caller, server: str, rpc: str) -> Status:
    stub = NodeServiceStub(channel)
    if rpc == "GetNodeInfo":
        return _status(lambda: stub.GetNodeInfo(NodeInfoRequest(), timeout=TIMEOUT))
    if rpc == "SubmitReport":
        # A node submits its own report; an ingest credential or the outsider the best report it can lay hands on.
        report = matrix.reports[caller.node_id]
        return _status(lambda: stub.SubmitReport(report, timeout=TIMEOUT))
    if rpc == "Query":
        # Only a node has a report key to sign with; the others replay the server's parent's (or own) query.
        signer = caller.node_id if caller.kind == "node" else (matrix.rules.parent[server] or server)
        query = matrix.query(signer, signer, server)
        return _status(lambda: stub.Query(query, timeout=TIMEOUT))
    return _status(_ingest_stream(channel))


@dataclass
class Tally:
    """Cases tried and how they came out."""

    tried: int = 0
    allowed: int = 0
    denied: int = 0
    mismatches: list[str] = field(default_factory=list)
    unexpected_allows: int = 0
    unexpected_denials: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, set[bool]] = field(default_factory=lambda: defaultdict(set))

    def record(self, label: str, expected: bool, status: Status, family: str = "") -> None:
        code, details = status
        self.tried += 1
        self.codes[f"{family}:{code.name}"] += 1
        self.outcomes[family].add(code not in DENIED)
        got = code not in DENIED
        if code in BROKEN:
            self.mismatches.append(f"{label}: BROKEN {code.name} {details}")
            if expected:
                self.unexpected_denials += 1
            else:
                self.unexpected_allows += 1
        elif got and not expected:
            self.unexpected_allows += 1
            self.mismatches.append(f"{label}: expected denied, got {code.name} {details}")
        elif expected and not got:
            self.unexpected_denials += 1
            self.mismatches.append(f"{label}: expected allowed, got {code.name} {details}")
        elif expected:
            self.allowed += 1
        else:
            self.denied += 1

    def figure(self) -> str:
        return (
            f"authorization matrix: {self.tried} cases tried, {self.allowed} allowed as expected, "
            f"{self.denied} denied as expected, unexpected allows = {self.unexpected_allows}, "
            f"unexpected denials = {self.unexpected_denials}"
        )


def _relay_cases(matrix: Matrix) -> list[tuple[str, str, str, SignedEnvelope, str]]:
    """Relays across hops: (label, relaying node, server, envelope it forwards, why it is refused or "" if not)."""
    q = matrix.query
    rewritten = q("gd", "gd", "gd.gz.py.ds")
    body = parse_body(rewritten, dd.QueryBody)
    body.target_id = "gd.gz.py.sq"
    rewritten.body = serialize(body)
    resigned = node_identity(matrix.tree, "gd.gz.py").sign(
        rewritten.body_type, serialize(parse_body(q("gd", "gd", "gd.gz.py.sq"), dd.QueryBody))
    )
    not_parent = "takes drill-down queries only from its parent"
    no_ancestor = "not an ancestor"
    return [
        # Controls: a genuine query of the province relayed unchanged, hop by hop.
        ("gd.gz relays gd's query unchanged", "gd.gz", "gd.gz.py", q("gd", "gd", "gd.gz.py.sq"), ""),
        ("gd.gz.py relays gd's query unchanged", "gd.gz.py", "gd.gz.py.sq", q("gd", "gd", "gd.gz.py.sq"), ""),
        # A middle node crafting a query in the name of a more powerful requester, with its own key and chain.
        ("gd.gz.py signs as gd", "gd.gz.py", "gd.gz.py.sq", q("gd.gz.py", "gd", "gd.gz.py.sq"), "certificate of"),
        ("gd.gz signs as gd", "gd.gz", "gd.gz.th", q("gd.gz", "gd", "gd.gz.th.lh"), "certificate of"),
        # ... or re-signing the requester's body, or rewriting its target under the requester's signature.
        ("gd.gz.py re-signs gd's query", "gd.gz.py", "gd.gz.py.sq", resigned, "names gd as requester"),
        ("gd.gz.py rewrites gd's target", "gd.gz.py", "gd.gz.py.sq", rewritten, "signature does not verify"),
        # A parent helping its child (or a sibling) see what is not theirs: the requester is no ancestor.
        ("gd.gz relays its child's query", "gd.gz", "gd.gz.th", q("gd.gz.py", "gd.gz.py", "gd.gz.th"), no_ancestor),
        ("gd relays gd.sz's query", "gd", "gd.gz", q("gd.sz", "gd.sz", "gd.gz.py"), no_ancestor),
        # Relaying off the path: a sibling or a cousin is not the server's parent.
        ("gd.sz relays gd's query", "gd.sz", "gd.gz", q("gd", "gd", "gd.gz.py"), not_parent),
        ("gd.gz.py relays gd's query sideways", "gd.gz.py", "gd.gz.th.sp", q("gd", "gd", "gd.gz.th.sp"), not_parent),
        # Skipping a hop: a grandparent is an ancestor, but a hop accepts only its parent's certificate.
        ("gd.gz skips gd.gz.py", "gd.gz", "gd.gz.py.sq", q("gd", "gd", "gd.gz.py.sq"), not_parent),
        # A node's own operator channel cannot carry someone else's query.
        ("gd.gz.py relays gd's query into itself", "gd.gz.py", "gd.gz.py", q("gd", "gd", "gd.gz.py.sq"), "only as"),
    ]


def test_the_full_authorization_matrix_has_no_unexpected_decision(matrix: Matrix) -> None:
    tally = Tally()
    started = time.monotonic()
    for server in matrix.ids:
        for caller in matrix.callers():
            with matrix.channel(caller, server) as channel:
                for rpc in RPCS:
                    status = _call(matrix, channel, caller, server, rpc)
                    expected = matrix.rules.expected(caller, server, rpc)
                    tally.record(f"{caller.label} -> {server} {rpc}", expected, status, rpc)
    # Drill-down through the hops: each node's operator asks its own server about every node of the tree.
    for caller_id in matrix.ids:
        with matrix.tree.channel(caller_id, caller_id) as channel:
            stub = NodeServiceStub(channel)
            for target in matrix.ids:
                query = matrix.query(caller_id, caller_id, target)
                status = _status(lambda s=stub, q=query: s.Query(q, timeout=TIMEOUT))  # type: ignore[misc]
                expected = matrix.rules.expected_drilldown(caller_id, target)
                tally.record(f"{caller_id} drills down to {target}", expected, status, "drill-down")
    for label, relay, server, envelope, reason in _relay_cases(matrix):
        with matrix.tree.channel(relay, server) as channel:
            stub = NodeServiceStub(channel)
            status = _status(lambda s=stub, e=envelope: s.Query(e, timeout=TIMEOUT))  # type: ignore[misc]
        tally.record(f"relay: {label} to {server}", not reason, status, "relay")
        if reason and status[0] in DENIED and reason not in status[1]:
            # Refused, but not by the rule this case is about: the rule itself is untested.
            tally.mismatches.append(f"relay: {label}: refused for another reason than {reason!r}: {status[1]}")

    figure = tally.figure()
    print(f"\n{figure} ({time.monotonic() - started:.1f} s)")
    print("status codes:", dict(sorted(tally.codes.items())))
    assert not tally.mismatches, figure + "\n" + "\n".join(tally.mismatches[:40])
    assert tally.unexpected_allows == 0 and tally.unexpected_denials == 0, figure
    # The matrix itself is not vacuous: every RPC family has cells that succeed and cells that are refused.
    for family in (*RPCS, "drill-down", "relay"):
        assert tally.outcomes[family] == {True, False}, (family, figure)
