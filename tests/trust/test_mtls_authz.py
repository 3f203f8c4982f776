"""Mutual TLS and authorization over a real tree of gRPC nodes (real certificates from the real enrolment flow).

Handshake failures (no certificate, expired, another root) never reach a servicer: the caller sees UNAVAILABLE
and nothing is stored. What only the application can judge — two identities, a revoked certificate, the wrong
role, the wrong place in the tree — is refused with UNAUTHENTICATED or PERMISSION_DENIED, also nothing stored.
A few tests run the insecure plaintext mode, which exists only behind its explicit switch.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from federation import REPORT_BODY_TYPE, UnauthenticatedError, parse_body, serialize
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.ingest_pb2 import IngestOutcome, IngestRecord
from federation.proto.v1.ingest_pb2_grpc import IngestServiceStub
from federation.proto.v1.node_service_pb2 import NodeInfoRequest
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from federation.proto.v1.report_pb2 import ReportBody
from node.app import open_node
from node.bootstrap import init_node
from node.cli import app
from node.cli.main import _register_commands
from node.config import load_config, save_config
from node.drilldown import DrilldownClient
from node.errors import ConfigError, ExitCode
from node.reporting import build_reports
from node.server import NodeServer
from node.trust import (
    CertificateAuthority,
    CertificateRole,
    PkiDirectory,
    build_crl,
    check_own_credentials,
    client_channel,
    generate_ec_key,
    load_certificate,
    load_certificates,
    node_channel,
    pki_directory,
    provision_ingest_credential,
)
from tests.harness.ingest_records import ITEM
from tests.harness.pki import forge_tls_certificate, ingest_client, provision, raw_channel
from tests.harness.reports import nonzero, own_totals, subtree_of
from tests.harness.tree import Tree, node_identity, running_tree

CASES = {"gd": 0, "gd.gz": 6, "gd.gz.py": 12, "gd.gz.th": 6, "gd.sz": 6}
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    yield from running_tree(tmp_path_factory.mktemp("mtls"), CASES)


def _pki(tree: Tree, node_id: str) -> PkiDirectory:
    return pki_directory(tree[node_id].data_dir)


def _received(tree: Tree, node_id: str) -> int:
    with tree.nodes[node_id].db() as conn:
        return int(conn.execute("SELECT count(*) FROM federation_received_reports").fetchone()[0])


def _status(call: object) -> tuple[grpc.StatusCode, str]:
    """Run a call; the status it failed with and its details (OK if it did not fail)."""
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as error:
        return error.code(), error.details() or ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def _submit(channel: grpc.Channel, envelope: SignedEnvelope) -> tuple[grpc.StatusCode, str]:
    return _status(lambda: NodeServiceStub(channel).SubmitReport(envelope, timeout=5))


def _fresh_report(tree: Tree, node_id: str) -> SignedEnvelope:
    """A new honest report of node_id, signed with its chain (queued in its outbox, delivered by a later settle)."""
    return build_reports(tree[node_id])[-1].envelope


def _query_as(tree: Tree, signer: str, requester: str, target: str) -> SignedEnvelope:
    return tree.query(signer, target, requester=requester, alerts=dd.AlertsRequest())


def _ask(tree: Tree, as_node: str, to_node: str, envelope: SignedEnvelope) -> tuple[grpc.StatusCode, str]:
    with tree.channel(as_node, to_node) as channel:
        return _status(lambda: NodeServiceStub(channel).Query(envelope, timeout=5))


# --- the handshake ---------------------------------------------------------------------------------------------


def test_no_expired_or_foreign_certificate_is_refused_in_the_handshake_and_nothing_is_stored(tree: Tree) -> None:
    report = _fresh_report(tree, "gd.gz")
    address = tree.nodes["gd"].address
    root = _pki(tree, "gd").load_root()
    before = _received(tree, "gd")
    tls_key, tls_chain = _pki(tree, "gd.gz").load_tls()

    with raw_channel(address, "gd", root=root) as channel:  # no client certificate at all
        assert _submit(channel, report)[0] is UNAVAILABLE

    now = dt.datetime.now(dt.UTC)
    expired = forge_tls_certificate(
        _pki(tree, "gd").load_authority(),
        "gd.gz",
        tls_key,
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    with raw_channel(address, "gd", root=root, key=tls_key, chain=[expired]) as channel:
        assert _submit(channel, report)[0] is UNAVAILABLE
    # Control: the same forgery within its validity passes the handshake (GetNodeInfo answers).
    valid = forge_tls_certificate(_pki(tree, "gd").load_authority(), "gd.gz", tls_key)
    with raw_channel(address, "gd", root=root, key=tls_key, chain=[valid]) as channel:
        assert NodeServiceStub(channel).GetNodeInfo(NodeInfoRequest(), timeout=5).node_id == "gd"

    other_root = CertificateAuthority.create_root("gd", now=now)
    foreign = forge_tls_certificate(other_root, "gd.gz", tls_key)
    with raw_channel(address, "gd", root=root, key=tls_key, chain=[foreign]) as channel:
        assert _submit(channel, report)[0] is UNAVAILABLE

    # A client trusting another root does not accept the real server either.
    with raw_channel(address, "gd", root=other_root.certificate, key=tls_key, chain=tls_chain) as channel:
        assert _submit(channel, report)[0] is UNAVAILABLE

    assert _received(tree, "gd") == before  # no servicer ran
    with tree.channel("gd.gz", "gd") as channel:  # control: the same report over gd.gz's real credentials
        assert _submit(channel, report)[0] is grpc.StatusCode.OK
    assert _received(tree, "gd") == before + 1


def test_a_client_refuses_a_server_that_is_not_the_expected_node(tree: Tree) -> None:
    # gd.gz.py dials its parent's address but names gd.sz: the parent's certificate does not match.
    with node_channel(_pki(tree, "gd.gz.py"), tree.nodes["gd.gz"].address, "gd.sz") as channel:
        code, details = _status(lambda: NodeServiceStub(channel).GetNodeInfo(NodeInfoRequest(), timeout=5))
    assert code is UNAVAILABLE and "Hostname Verification" in details


# --- identity checks after the handshake ---------------------------------------------------------------------


def test_a_certificate_with_two_identities_is_unauthenticated(tree: Tree) -> None:
    report = _fresh_report(tree, "gd.gz.py")
    before = _received(tree, "gd.gz")
    key = generate_ec_key()
    # Signed by gd.gz's real CA: inside its DNS constraint, so the handshake passes; it names gd.gz.py AND gd.gz.th.
    twofold = forge_tls_certificate(
        _pki(tree, "gd.gz").load_authority(), "gd.gz.py", key, extra_uris=["supnet://gd/gz/th"]
    )
    ca_chain = load_certificates(_pki(tree, "gd.gz").file("ca.pem"))
    root = _pki(tree, "gd").load_root()
    with raw_channel(tree.nodes["gd.gz"].address, "gd.gz", root=root, key=key, chain=[twofold, *ca_chain]) as channel:
        code, details = _submit(channel, report)
        info = _status(lambda: NodeServiceStub(channel).GetNodeInfo(NodeInfoRequest(), timeout=5))
    assert code is UNAUTHENTICATED and "exactly one supnet:// node URI" in details
    assert info[0] is UNAUTHENTICATED
    assert _received(tree, "gd.gz") == before


def test_a_revoked_tls_certificate_is_unauthenticated_until_the_crl_changes(tree: Tree) -> None:
    report = _fresh_report(tree, "gd.gz.th")
    before = _received(tree, "gd.gz")
    pki = _pki(tree, "gd.gz")
    serial = load_certificate(_pki(tree, "gd.gz.th").file("tls.pem")).serial_number
    authority = pki.load_authority()
    now = dt.datetime.now(dt.UTC)
    pki.save_crl(build_crl(authority, [(serial, now)], now=now))  # what 'supnet pki revoke gd.gz.th' writes
    try:
        with tree.channel("gd.gz.th", "gd.gz") as channel:
            code, details = _submit(channel, report)
        assert code is UNAUTHENTICATED and "revoked by gd.gz" in details
        assert _received(tree, "gd.gz") == before
        # The province cannot see gd.gz's CRL for it, but gd.gz.py is unaffected by gd.gz.th's revocation.
        with tree.channel("gd.gz.py", "gd.gz") as channel:
            assert _status(lambda: NodeServiceStub(channel).GetNodeInfo(NodeInfoRequest(), timeout=5))[0] is (
                grpc.StatusCode.OK
            )
    finally:
        pki.file("crl.pem").unlink()
    with tree.channel("gd.gz.th", "gd.gz") as channel:  # the file is gone: re-read, nothing revoked any more
        assert _submit(channel, report)[0] is grpc.StatusCode.OK


def test_a_garbled_crl_fails_closed(tree: Tree) -> None:
    pki = _pki(tree, "gd.sz")
    pki.file("crl.pem").write_text("-----BEGIN X509 CRL-----\nnot a crl\n-----END X509 CRL-----\n")
    try:
        with tree.channel("gd", "gd.sz") as channel:
            code, details = _status(lambda: NodeServiceStub(channel).GetNodeInfo(NodeInfoRequest(), timeout=5))
        assert code is UNAUTHENTICATED and "crl.pem cannot be used" in details
    finally:
        pki.file("crl.pem").unlink()


# --- reports ---------------------------------------------------------------------------------------------------


def test_reports_only_from_registered_children_and_only_their_own(tree: Tree) -> None:
    grandchild = _fresh_report(tree, "gd.gz.py")
    before = {node_id: _received(tree, node_id) for node_id in ("gd", "gd.gz")}
    # A grandchild, over its own certificate with its own honest report, is not a child of the province.
    with tree.channel("gd.gz.py", "gd") as channel:
        code, details = _submit(channel, grandchild)
    assert code is PERMISSION_DENIED and "gd.gz.py is not a registered child of gd" in details
    # A sibling city is not a child of gd.gz.
    with tree.channel("gd.sz", "gd.gz") as channel:
        code, details = _submit(channel, _fresh_report(tree, "gd.sz"))
    assert code is PERMISSION_DENIED and "gd.sz is not a registered child of gd.gz" in details
    # A registered child relaying its sibling's (honest, validly signed) report: the signer is not the peer.
    with tree.channel("gd.gz.th", "gd.gz") as channel:
        code, details = _submit(channel, grandchild)
    assert code is PERMISSION_DENIED and "signed as gd.gz.py arrived over the connection of gd.gz.th" in details
    # An ingest credential of the parent is no node at all.
    with ingest_client(tree["gd.gz"].data_dir, "gd.gz", tree.nodes["gd.gz"].address) as channel:
        code, details = _submit(channel, grandchild)
    assert code is PERMISSION_DENIED and "needs a node's TLS certificate" in details
    assert {node_id: _received(tree, node_id) for node_id in ("gd", "gd.gz")} == before


# --- drill-down --------------------------------------------------------------------------------------------------


def test_drilldown_only_from_ancestors_and_no_hop_can_widen_a_query(tree: Tree) -> None:
    honest = _query_as(tree, "gd", "gd", "gd.gz.py")
    assert _ask(tree, "gd", "gd", honest)[0] is grpc.StatusCode.OK  # control: the province's own operator

    # A sibling posing as the parent with a captured, validly signed query of the province: wrong caller.
    code, details = _ask(tree, "gd.sz", "gd.gz", _query_as(tree, "gd", "gd", "gd.gz.py"))
    assert code is PERMISSION_DENIED and "the caller is gd.sz" in details
    # The city re-signs as itself to reach the other city's subtree: it is not gd.sz's parent.
    code, details = _ask(tree, "gd.gz", "gd.sz", _query_as(tree, "gd.gz", "gd.gz", "gd.sz"))
    assert code is PERMISSION_DENIED and "only from its parent gd" in details
    # A district reaching its sibling district, directly or through their parent.
    sideways = _query_as(tree, "gd.gz.py", "gd.gz.py", "gd.gz.th")
    assert _ask(tree, "gd.gz.py", "gd.gz.th", sideways)[0] is PERMISSION_DENIED
    code, details = _ask(tree, "gd.gz.py", "gd.gz", _query_as(tree, "gd.gz.py", "gd.gz.py", "gd.gz.th"))
    assert code is PERMISSION_DENIED and "the caller is gd.gz.py" in details
    # The relaying city rewrites the target of the province's query: the requester's signature breaks.
    rewritten = _query_as(tree, "gd", "gd", "gd.gz.py")
    body = parse_body(rewritten, dd.QueryBody)
    body.target_id = "gd.gz.th"
    rewritten.body = serialize(body)
    code, details = _ask(tree, "gd.gz", "gd.gz.th", rewritten)
    assert code is UNAUTHENTICATED and "signature does not verify" in details
    # ... or re-signs the province's query body with its own key: the signer must be the requester.
    captured = parse_body(_query_as(tree, "gd", "gd", "gd.gz.th"), dd.QueryBody)
    resigned = node_identity(tree, "gd.gz").sign(honest.body_type, serialize(captured))
    code, details = _ask(tree, "gd.gz", "gd.gz.th", resigned)
    assert code is PERMISSION_DENIED and "names gd as requester" in details
    # The node's own operator may only ask as the node: it cannot relay someone else's query into its server.
    code, details = _ask(tree, "gd.gz", "gd.gz", _query_as(tree, "gd", "gd", "gd.gz.py"))
    assert code is PERMISSION_DENIED and "own operator may ask only as gd.gz" in details
    # An ingest credential cannot drill down, even into its own node.
    with ingest_client(tree["gd.gz"].data_dir, "gd.gz", tree.nodes["gd.gz"].address) as channel:
        query = _query_as(tree, "gd.gz", "gd.gz", "gd.gz")
        code, _ = _status(lambda: NodeServiceStub(channel).Query(query, timeout=5))
    assert code is PERMISSION_DENIED


def test_the_client_verifies_each_answer_through_its_certificate_chain(tree: Tree) -> None:
    with tree.client("gd") as client:
        answer = client.ask("gd.gz.py", alerts=dd.AlertsRequest())
    assert answer.envelope.signer_id == "gd.gz.py" and answer.envelope.certificate_chain
    assert "through its certificate chain to the root gd" in answer.verified_by
    # The same answer without its chain is refused by the client, although its signature is intact.
    query = _query_as(tree, "gd", "gd", "gd.gz.py")
    with tree.channel("gd", "gd") as channel:
        reply = NodeServiceStub(channel).Query(query, timeout=5)
    stripped = SignedEnvelope()
    stripped.CopyFrom(reply)
    del stripped.certificate_chain[:]
    with tree.client("gd") as client:
        assert client._checked(reply, query, "gd.gz.py").body.target_id == "gd.gz.py"
        with pytest.raises(UnauthenticatedError, match="carries no certificate chain"):
            client._checked(stripped, query, "gd.gz.py")


# --- ingest and node info ------------------------------------------------------------------------------------


def _ingest(channel: grpc.Channel) -> tuple[grpc.StatusCode, str, list[int]]:
    outcomes: list[int] = []

    def run() -> None:
        for result in IngestServiceStub(channel).Ingest(
            iter([IngestRecord(seq=1, kind="item", fields=ITEM)]), timeout=5
        ):
            outcomes.append(result.outcome)

    code, details = _status(run)
    return code, details, outcomes


def test_ingest_only_with_the_nodes_ingest_credential(tree: Tree) -> None:
    address = tree.nodes["gd.gz.th"].address
    with tree.nodes["gd.gz.th"].db() as conn:
        items_before = int(conn.execute("SELECT count(*) FROM items").fetchone()[0])
    for node_id in ("gd.gz.th", "gd.gz"):  # the node's own TLS certificate, and its parent's
        with tree.channel(node_id, "gd.gz.th") as channel:
            code, details, outcomes = _ingest(channel)
        assert code is PERMISSION_DENIED and "needs an ingest credential" in details and not outcomes
    # gd.sz's ingest credential, presented to gd.gz.th.
    sz = _pki(tree, "gd.sz")
    key, chain = provision_ingest_credential(sz, "erp-sz")
    credentials = check_own_credentials(key, chain, sz.file("root.pem"), roles=[CertificateRole.INGEST])
    with client_channel(credentials, address, "gd.gz.th") as channel:
        code, details, outcomes = _ingest(channel)
    assert code is PERMISSION_DENIED and "is for gd.sz, not for gd.gz.th" in details
    with tree.nodes["gd.gz.th"].db() as conn:
        assert int(conn.execute("SELECT count(*) FROM items").fetchone()[0]) == items_before

    with ingest_client(tree["gd.gz.th"].data_dir, "gd.gz.th", address) as channel:
        code, _, outcomes = _ingest(channel)
    assert code is grpc.StatusCode.OK and outcomes == [IngestOutcome.INGEST_OUTCOME_ACCEPTED]


def test_node_info_for_any_authenticated_peer_of_the_root(tree: Tree) -> None:
    for caller in ("gd.sz", "gd.gz.py", "gd"):
        with tree.channel(caller, "gd.gz.th") as channel:
            info = NodeServiceStub(channel).GetNodeInfo(NodeInfoRequest(), timeout=5)
        assert info.node_id == "gd.gz.th"
    with ingest_client(tree["gd.gz.th"].data_dir, "gd.gz.th", tree.nodes["gd.gz.th"].address) as channel:
        assert NodeServiceStub(channel).GetNodeInfo(NodeInfoRequest(), timeout=5).node_id == "gd.gz.th"


# --- own credentials, and the plaintext switch ---------------------------------------------------------------


def test_an_expired_own_certificate_is_named_before_any_connection(tmp_path: Path) -> None:
    init_node(tmp_path / "gd.gz", "gd.gz", level="city")
    provision(tmp_path, ["gd", "gd.gz"])
    pki = pki_directory(tmp_path / "gd.gz")
    key, chain = pki.load_tls()
    now = dt.datetime.now(dt.UTC)
    expired = forge_tls_certificate(
        PkiDirectory(tmp_path / "gd" / "pki").load_authority(),
        "gd.gz",
        key,
        not_before=now - dt.timedelta(days=10),
        not_after=now - dt.timedelta(hours=1),
    )
    pki.save_tls(key, [expired, *chain[1:]])
    with pytest.raises(UnauthenticatedError, match=r"of gd\.gz .* expired at .*supnet keys rotate"):
        node_channel(pki, "127.0.0.1:1", "gd")
    node = open_node(tmp_path / "gd.gz")
    try:
        with pytest.raises(UnauthenticatedError, match="expired at"):
            DrilldownClient.for_node(node, "127.0.0.1:1")
        with pytest.raises(UnauthenticatedError, match="expired at"):
            NodeServer(node, address="127.0.0.1:0")
    finally:
        node.close()


def test_a_node_without_pki_or_the_switch_refuses_to_serve(tmp_path: Path) -> None:
    data_dir = tmp_path / "gd.gz.py"
    init_node(data_dir, "gd.gz.py")
    node = open_node(data_dir)
    try:
        with pytest.raises(ConfigError, match=r"no TLS credentials in .*pki .*supnet enroll.*insecure-plaintext"):
            NodeServer(node, address="127.0.0.1:0")
    finally:
        node.close()
    _register_commands()
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"])
    assert result.exit_code == ExitCode.CONFIG
    assert "[CONFIG]" in result.output and "supnet pki init-root" in result.output


def test_the_insecure_plaintext_switch_serves_plaintext_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "gd.gz.py"
    init_node(data_dir, "gd.gz.py")
    config = load_config(data_dir)
    config.federation.insecure_plaintext = True
    save_config(data_dir, config)
    node = open_node(data_dir)
    server = NodeServer(node, address="127.0.0.1:0")
    try:
        with caplog.at_level(logging.WARNING, logger="node.server.grpc_server"):
            server.start()
        assert not server.mutual_tls
        assert any("WITHOUT TLS" in record.getMessage() for record in caplog.records)
        with grpc.insecure_channel(server.bound_address) as channel:
            assert NodeServiceStub(channel).GetNodeInfo(NodeInfoRequest(), timeout=5).node_id == "gd.gz.py"
    finally:
        server.stop(0)
        node.close()


def test_plaintext_tree_reports_and_drills_down_with_configured_keys(tmp_path: Path) -> None:
    reports = Tree(tmp_path / "reports", ["gd", "gd.a"], plaintext=True)
    try:
        reports.import_synthetic("gd.a", cases=20, seed=1)
        reports.report_up()
        assert nonzero(subtree_of(reports["gd"])) == nonzero(own_totals(reports["gd.a"]))
        with sqlite3.connect(reports.nodes["gd"].data_dir / "node.db") as conn:
            (raw,) = conn.execute("SELECT envelope FROM federation_received_reports").fetchone()
        assert not SignedEnvelope.FromString(raw).certificate_chain  # no PKI: the config keys verified it
    finally:
        reports.close()
    plain = running_tree(tmp_path / "drill", {"gd": 0, "gd.gz": 0, "gd.gz.py": 5}, plaintext=True)
    small = next(plain)
    try:
        with small.client("gd") as client:
            answer = client.ask("gd.gz.py", cases=dd.CasesRequest())
        assert answer.envelope.signer_id == "gd.gz.py" and len(answer.body.cases.cases) == 5
        assert "checked by its parent on the way up" in answer.verified_by
        assert not (small["gd"].data_dir / "pki").exists()
    finally:
        plain.close()


def test_a_hand_signed_report_without_its_chain_is_refused(tree: Tree) -> None:
    body = parse_body(_fresh_report(tree, "gd.sz"), ReportBody)
    bare = node_identity(tree, "gd.sz").sign(REPORT_BODY_TYPE, serialize(body))
    del bare.certificate_chain[:]
    before = _received(tree, "gd")
    with tree.channel("gd.sz", "gd") as channel:
        code, details = _submit(channel, bare)
    assert code is UNAUTHENTICATED and "no certificate chain" in details
    assert _received(tree, "gd") == before
