"""Subtree (province-wide) search over a real four-level tree of gRPC nodes (mutual TLS): the union of every
node's own rows, each part signed by its node and verified by the asker; missing nodes named; the limit and
resuming; authorization and audit at every hop; tampered parts rejected."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import typer
from typer.testing import CliRunner

from federation import (
    InvalidArgumentError,
    PermissionDeniedError,
    StaleError,
    UnauthenticatedError,
    supnet_error_from_rpc,
)
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1 import subtree_pb2 as st
from federation.proto.v1.common_pb2 import SignedEnvelope
from federation.proto.v1.node_service_pb2_grpc import NodeServiceStub
from node.audit_log import AuditFilter, AuditLog
from node.cli import query_cmd
from node.drilldown import (
    SubtreeCollector,
    SubtreeOutcome,
    build_subtree_query,
    decode_resume,
    encode_resume,
    rows_of,
    search_subtree,
)
from node.errors import ExitCode
from node.trust import CertificateKeyResolver, NodeTrust, pki_directory
from tests.harness.tree import Tree, build_tree, node_identity, node_key, running_tree

CASES = {
    "gd": 10,
    "gd.gz": 10,
    "gd.gz.py": 10,
    "gd.gz.py.sq": 40,
    "gd.gz.py.dj": 30,
    "gd.gz.th": 10,
    "gd.gz.th.sp": 30,
    "gd.sz": 10,
    "gd.sz.ns": 30,
}
ALL = sorted(CASES)
KILLED = "gd.gz.py.dj"
HUNG = "gd.gz.th.sp"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    yield from running_tree(tmp_path_factory.mktemp("subtree"), CASES)


def _search(tree: Tree, target: str = "gd", *, asker: str = "gd", **kwargs: object) -> tuple[list[str], SubtreeOutcome]:
    """Run a search as ``asker``'s operator; (the case numbers / alert ids of every verified part, the outcome)."""
    search = search_subtree(tree[asker], target, address=tree.nodes[asker].address, **kwargs)  # type: ignore[arg-type]
    keys: list[str] = []
    for verified in search.parts():
        assert verified.envelope.signer_id == verified.node_id
        for row in rows_of(verified.part):
            is_case = verified.part.WhichOneof("rows") == "cases"
            keys.append(row.case_no if is_case else f"{verified.node_id}#{row.id}")
    assert search.outcome is not None
    return keys, search.outcome


def _drilldown_cases(tree: Tree, request: dd.CasesRequest, nodes: list[str]) -> list[str]:
    """The same rows asked node by node with the ordinary drill-down (every page)."""
    found: list[str] = []
    with tree.client("gd") as client:
        for node_id in nodes:
            for answer in client.ask_pages(node_id, cases=request, page_size=1000):
                found.extend(row.case_no for row in answer.body.cases.cases)
    return found


def _raw_stream(tree: Tree, query: SignedEnvelope, *, to: str = "gd", as_node: str = "gd") -> list[SignedEnvelope]:
    with tree.channel(as_node, to) as channel:
        try:
            return list(NodeServiceStub(channel).QuerySubtree(query, timeout=10))
        except grpc.RpcError as error:
            raise supnet_error_from_rpc(error, to) from error


def _query(tree: Tree, signer: str, target: str, **request: object) -> SignedEnvelope:
    identity = node_identity(tree, signer)
    return build_subtree_query(
        identity.private_key,
        signer,
        target,
        certificate_chain=identity.certificate_chain,
        **request,  # type: ignore[arg-type]
    )


def _cli(tree: Tree, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """``supnet query ... --json`` as the province's operator: (exit code, the JSON lines, what went to stderr)."""
    app = typer.Typer()
    query_cmd.register(app)
    gd = tree.nodes["gd"]
    result = CliRunner().invoke(
        app, ["query", *args, "-d", str(gd.data_dir), "--address", gd.address, "--json"], catch_exceptions=False
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, lines, result.stderr


def _restart(tree: Tree, node_id: str, port: int) -> None:
    """Serve node_id again on its port and wait until a search reaches it (its parent's channel reconnects)."""
    tree.start_server(node_id, port)
    deadline = time.monotonic() + 10
    while True:
        _, outcome = _search(tree, "gd", cases=dd.CasesRequest(department="(none)"))
        if outcome.complete or time.monotonic() > deadline:
            assert outcome.complete, outcome.missing
            return
        time.sleep(0.25)


def _at(tree: Tree, node_id: str) -> list[str]:
    """The data directory and server address options of a node's operator."""
    return ["-d", str(tree.nodes[node_id].data_dir), "--address", tree.nodes[node_id].address]


def _trust(tree: Tree, node_id: str) -> NodeTrust:
    return NodeTrust(pki_directory(tree.nodes[node_id].data_dir))


def test_complete_answer_is_the_union_of_every_nodes_drilldown(tree: Tree) -> None:
    request = dd.CasesRequest(red_card_only=True)
    keys, outcome = _search(tree, cases=request)
    assert outcome.complete and not outcome.partial, outcome
    assert outcome.missing == [] and outcome.rejected == []
    assert outcome.nodes_answered == len(ALL)
    expected = _drilldown_cases(tree, request, ALL)
    assert expected, "the generated data has red-card cases"
    assert sorted(keys) == sorted(expected)
    assert len(keys) == len(set(keys)) == outcome.rows
    # Also every case, unfiltered: the row count matches the files of all nine nodes.
    all_keys, all_outcome = _search(tree, cases=dd.CasesRequest())
    assert all_outcome.complete
    assert sorted(all_keys) == sorted(_drilldown_cases(tree, dd.CasesRequest(), ALL))
    assert len(all_keys) == tree.case_count(ALL)
    # The command line: rows as JSON lines, then the outcome; exit 0 when complete.
    code, lines, _ = _cli(tree, "gd", "cases", "--subtree", "--red-card", "--since", "2026-01-01")
    assert code == ExitCode.OK
    *rows, closing = lines
    assert closing["outcome"] == "complete" and closing["missing"] == []
    assert sorted(str(row["case_no"]) for row in rows) == sorted(expected)


def test_subtree_of_a_city_covers_only_its_nodes_and_masks_personal_data(tree: Tree) -> None:
    search = search_subtree(tree["gd"], "gd.gz", address=tree.nodes["gd"].address, cases=dd.CasesRequest())
    nodes = set()
    for verified in search.parts():
        nodes.add(verified.node_id)
        for row in verified.part.cases.cases:
            assert "*" in row.applicant_masked or not row.applicant_masked
    assert search.outcome is not None and search.outcome.complete
    assert nodes == {node for node in ALL if node.startswith("gd.gz")}


def test_alerts_directives_and_a_ranking_of_all_streets(tree: Tree) -> None:
    keys, outcome = _search(tree, alerts=dd.AlertsRequest())
    assert outcome.complete
    with tree.client("gd") as client:
        expected = [
            f"{node_id}#{row.id}"
            for node_id in ALL
            for answer in client.ask_pages(node_id, alerts=dd.AlertsRequest(), page_size=1000)
            for row in answer.body.alerts.alerts
        ]
    assert len(expected) > 20, "the generated data has alerts"
    assert sorted(keys) == sorted(expected)
    _, directives = _search(tree, directives=st.SubtreeDirectivesRequest())
    assert directives.complete and directives.nodes_answered == len(ALL)
    search = search_subtree(
        tree["gd"],
        "gd",
        address=tree.nodes["gd"].address,
        ranking=dd.RankingRequest(metric=dd.RANKING_METRIC_ON_TIME_RATE),
    )
    entries = {verified.node_id: (verified.part.level, verified.part.ranking) for verified in search.parts()}
    assert search.outcome is not None and search.outcome.complete
    streets = {node_id for node_id, (level, _) in entries.items() if level == "street"}
    assert streets == {node_id for node_id in ALL if node_id.count(".") == 3}
    # Each street's entry is its own figure, as the ordinary drill-down to that street ranks it.
    with tree.client("gd") as client:
        for node_id in streets:
            own = client.ask(node_id, ranking=dd.RankingRequest(metric=dd.RANKING_METRIC_ON_TIME_RATE)).body.ranking
            expected_row = next(row for row in own.rows if row.node_id == node_id)
            assert entries[node_id][1].value == expected_row.value
            assert entries[node_id][1].counters == expected_row.counters
    assert all(entries[node_id][1].denominator > 0 for node_id in streets), "every street completed cases"


def test_the_limit_cuts_the_answer_and_resuming_reads_the_rest_exactly_once(tree: Tree) -> None:
    request = dd.CasesRequest()
    everything = sorted(_drilldown_cases(tree, request, ALL))
    seen: list[str] = []
    resume = None
    rounds = 0
    while True:
        rounds += 1
        assert rounds < 50, "resuming does not converge"
        keys, outcome = _search(tree, cases=request, limit=35, page_size=10, resume=resume)
        assert len(keys) <= 35
        assert not outcome.partial, outcome.missing
        seen.extend(keys)
        if outcome.complete:
            break
        assert outcome.cut and outcome.unread and outcome.resume is not None
        # The token a user would copy survives the round trip.
        resume = decode_resume(encode_resume(outcome.resume))
    assert rounds > 2
    assert sorted(seen) == everything
    assert len(seen) == len(set(seen))
    # The command line: a truncated answer exits 0, says so and prints the token that continues it.
    from_cli: list[str] = []
    token = ""
    for _ in range(50):
        code, lines, _ = _cli(
            tree,
            "gd",
            "cases",
            "--subtree",
            "--limit",
            "60",
            "--page-size",
            "20",
            *(["--resume", token] if token else []),
        )
        *rows, closing = lines
        assert code == ExitCode.OK and closing["missing"] == []
        from_cli += [str(row["case_no"]) for row in rows]
        if closing["outcome"] == "complete":
            break
        assert closing["outcome"] == "truncated" and closing["resume"]
        token = str(closing["resume"])
    assert sorted(from_cli) == everything


def test_tampered_or_misattributed_parts_are_rejected_by_the_asker(tree: Tree) -> None:
    query = _query(tree, "gd", "gd", cases=dd.CasesRequest())
    replies = _raw_stream(tree, query)
    parts = [reply for reply in replies if reply.body_type.endswith("SubtreePart")]
    victim = next(reply for reply in parts if reply.signer_id == "gd.sz.ns")
    tampered = SignedEnvelope()
    tampered.CopyFrom(victim)
    part = st.SubtreePart()
    part.ParseFromString(tampered.body)
    del part.cases.cases[0]  # a hop hiding a case
    tampered.body = part.SerializeToString(deterministic=True)
    # Another node's part re-labelled as the street's: the certificate names its real signer.
    relabelled = SignedEnvelope()
    relabelled.CopyFrom(next(reply for reply in parts if reply.signer_id == "gd.sz"))
    relabelled.signer_id = "gd.gz.th.sp"
    forged = {id(victim): tampered}
    collector = SubtreeCollector(_trust(tree, "gd"), query)
    rows_from = set()
    for reply in replies:
        verified = collector.accept(forged.get(id(reply), reply))
        if verified is not None:
            rows_from.add(verified.node_id)
    assert collector.accept(relabelled) is None
    outcome = collector.outcome("cases")
    assert outcome.partial and not outcome.complete
    rejected = dict(outcome.rejected)
    assert set(rejected) == {"gd.sz.ns", "gd.gz.th.sp"}
    assert "gd.sz.ns" not in rows_from
    assert [missing.node_id for missing in outcome.missing] == ["gd.sz.ns"]
    assert outcome.missing[0].reason == "rejected"
    # The untouched stream verifies completely.
    clean = SubtreeCollector(_trust(tree, "gd"), query)
    for reply in replies:
        clean.accept(reply)
    assert clean.outcome("cases").complete


def _refusals(tree: Tree, node_id: str, actor: str) -> list[dict[str, object]]:
    entries = AuditLog(tree[node_id].engine).entries(AuditFilter(action="drilldown.refused", actor=actor), limit=None)
    details = [json.loads(entry.detail_json) for entry in entries]  # newest first
    return [detail for detail in details if detail.get("query") == "subtree:cases"]


def test_an_unauthorized_asker_is_refused_and_audited_at_every_hop(tree: Tree) -> None:
    # gd.sz is no ancestor of gd.gz's subtree: every node of it refuses gd.sz's search, each on its own record.
    subtree = [node_id for node_id in ALL if node_id.startswith("gd.gz")]
    for node_id in subtree:
        query = _query(tree, "gd.sz", "gd.gz", cases=dd.CasesRequest())
        with pytest.raises(PermissionDeniedError):
            _raw_stream(tree, query, to=node_id, as_node="gd.sz")
        refused = _refusals(tree, node_id, "gd.sz")
        assert refused and refused[0]["requester"] == "gd.sz", node_id
    # The province's own query relayed by a node that is not the hop's parent: refused there, and audited.
    query = _query(tree, "gd", "gd.gz", cases=dd.CasesRequest())
    with pytest.raises(PermissionDeniedError):
        _raw_stream(tree, query, to="gd.gz", as_node="gd.sz")
    assert _refusals(tree, "gd.gz", "gd.sz")[0]["requester"] == "gd"
    # The local operator of a district may not search its city.
    with pytest.raises(PermissionDeniedError):
        _raw_stream(tree, _query(tree, "gd.gz.py", "gd.gz", cases=dd.CasesRequest()), to="gd.gz.py", as_node="gd.gz.py")
    # A replayed query is refused (replay cache, as drill-down), also after a restart (the audited nonces).
    query = _query(tree, "gd", "gd.sz", cases=dd.CasesRequest())
    assert _raw_stream(tree, query)
    with pytest.raises(StaleError):
        _raw_stream(tree, query)
    port = tree.nodes["gd"].port
    tree.stop_server("gd")
    tree.start_server("gd", port)
    with pytest.raises(StaleError):
        _raw_stream(tree, query)
    # The authorized search is on record at every hop, served by the verified caller.
    nonce = st.SubtreeQueryBody.FromString(query.body).nonce.hex()
    # gd relayed it towards gd.sz (forwarded); gd.sz and gd.sz.ns answered (served); each names its verified caller.
    for node_id, action, caller in (
        ("gd", "drilldown.forwarded", "gd"),
        ("gd.sz", "drilldown.served", "gd"),
        ("gd.sz.ns", "drilldown.served", "gd.sz"),
    ):
        entries = AuditLog(tree[node_id].engine).entries(AuditFilter(action=action), limit=None)
        mine = [entry for entry in entries if json.loads(entry.detail_json).get("nonce") == nonce]
        assert [entry.actor for entry in mine] == [caller], node_id
        assert json.loads(mine[0].detail_json)["requester"] == "gd"


def test_a_killed_street_is_named_missing_within_the_deadline(tree: Tree) -> None:
    request = dd.CasesRequest()
    port = tree.nodes[KILLED].port
    tree.stop_server(KILLED)
    try:
        deadline = 3.0
        started = time.monotonic()
        keys, outcome = _search(tree, cases=request, deadline_seconds=deadline)
        elapsed = time.monotonic() - started
    finally:
        _restart(tree, KILLED, port)
    assert elapsed < deadline + 1.0
    assert outcome.partial and not outcome.complete
    assert [missing.node_id for missing in outcome.missing] == [KILLED]
    assert outcome.missing[0].reported_by == "gd.gz.py"
    assert outcome.missing[0].reason in ("unreachable", "deadline")
    others = [node_id for node_id in ALL if node_id != KILLED]
    assert sorted(keys) == sorted(_drilldown_cases(tree, request, others))


def test_a_street_that_hangs_is_named_missing_when_its_deadline_passes(tree: Tree) -> None:
    # The street's host accepts connections and never answers (a real socket that is never read): its parent's
    # call to it runs into the deadline the parent gave it, and the parent signs a gap in time for its own caller.
    port = tree.nodes[HUNG].port
    tree.stop_server(HUNG)
    hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hole.bind(("127.0.0.1", port))
    hole.listen(64)
    deadline = 2.0
    tries: list[tuple[str, float]] = []
    try:
        for _ in range(6):  # a channel still backing off from an earlier failure would refuse at once: try again
            started = time.monotonic()
            keys, outcome = _search(tree, cases=dd.CasesRequest(), deadline_seconds=deadline)
            elapsed = time.monotonic() - started
            assert [missing.node_id for missing in outcome.missing] == [HUNG], outcome.missing
            tries.append((outcome.missing[0].reason, round(elapsed, 2)))
            assert elapsed < deadline + 1.0, tries
            if tries[-1][0] == "deadline":
                break
            time.sleep(1.0)
    finally:
        hole.close()
        _restart(tree, HUNG, port)
    assert tries[-1][0] == "deadline", tries
    assert tries[-1][1] > deadline * 0.5, tries  # it did wait for the street, not give up at once
    others = [node_id for node_id in ALL if node_id != HUNG]
    assert sorted(keys) == sorted(_drilldown_cases(tree, dd.CasesRequest(), others))


def test_the_command_line_names_the_missing_nodes_and_exits_partial(tree: Tree) -> None:
    port = tree.nodes[KILLED].port
    tree.stop_server(KILLED)
    try:
        code, lines, _ = _cli(tree, "gd", "alerts", "--subtree", "--deadline", "3")
    finally:
        _restart(tree, KILLED, port)
    assert code == ExitCode.PARTIAL
    closing = lines[-1]
    assert closing["outcome"] == "partial"
    assert [missing["node_id"] for missing in closing["missing"]] == [KILLED]
    # The table form says so in words, on stderr.
    app = typer.Typer()
    query_cmd.register(app)
    tree.stop_server(KILLED)
    try:
        result = CliRunner().invoke(
            app,
            ["query", "gd", "ranking", "--subtree", "--metric", "on-time", "--wide", *_at(tree, "gd")],
        )
    finally:
        _restart(tree, KILLED, port)
    assert result.exit_code == ExitCode.PARTIAL, result.output
    assert "部分结果" in result.stderr and f"缺失 {KILLED}" in result.stderr
    assert "gd.gz.py.sq" in result.stdout and "gd.gz.py " not in result.stdout  # streets only


def test_a_street_that_cannot_read_its_rows_says_so_and_a_bad_day_is_refused_at_once(tree: Tree) -> None:
    broken = "gd.sz.ns"
    with tree.nodes[broken].db() as conn:
        conn.execute("ALTER TABLE alerts RENAME TO alerts_away")
    try:
        keys, outcome = _search(tree, alerts=dd.AlertsRequest())
    finally:
        with tree.nodes[broken].db() as conn:
            conn.execute("ALTER TABLE alerts_away RENAME TO alerts")
    assert outcome.partial
    [missing] = outcome.missing
    assert (missing.node_id, missing.reason, missing.reported_by) == (broken, "error", broken)
    assert not any(key.startswith(f"{broken}#") for key in keys)
    # Days every node would refuse alike: refused by the entry hop before anything is asked.
    with pytest.raises(InvalidArgumentError, match="day_from"):
        _raw_stream(tree, _query(tree, "gd", "gd", cases=dd.CasesRequest(day_from="2026-13-01")))


def _parent(node_id: str) -> str:
    return node_id.rpartition(".")[0]


def _inside(node_id: str, root_id: str) -> bool:
    return node_id == root_id or node_id.startswith(root_id + ".")


def test_the_authorization_matrix_of_subtree_searches(tree: Tree) -> None:
    # Every node's certificate calls every server with a search it signs of that server's subtree: allowed only
    # from the server's parent or the server's own operator (the rules of drill-down, node/trust/authorization.py).
    # Then every node's operator searches every node's subtree through its own server: only its own subtree.
    nothing = dd.CasesRequest(department="(none)")
    outcomes: dict[str, set[bool]] = {"direct": set(), "own server": set()}
    mismatches = []
    for server in ALL:
        for caller in ALL:
            query = _query(tree, caller, server, cases=nothing)
            try:
                _raw_stream(tree, query, to=server, as_node=caller)
                allowed = True
            except PermissionDeniedError:
                allowed = False
            expected = caller in (server, _parent(server))
            outcomes["direct"].add(allowed)
            if allowed != expected:
                mismatches.append(f"{caller} -> {server}: {'allowed' if allowed else 'refused'}")
    for caller in ALL:
        for target in ALL:
            query = _query(tree, caller, target, cases=nothing)
            try:
                _raw_stream(tree, query, to=caller, as_node=caller)
                allowed = True
            except PermissionDeniedError:
                allowed = False
            outcomes["own server"].add(allowed)
            if allowed != _inside(target, caller):
                mismatches.append(f"{caller} searches {target}: {'allowed' if allowed else 'refused'}")
    assert not mismatches, mismatches
    assert outcomes == {"direct": {True, False}, "own server": {True, False}}


def test_the_asker_keeps_a_whole_provinces_chains(tree: Tree) -> None:
    # A province-wide search verifies one chain per node (1 + 21 + 126 + 1,638 = 1,786 in Guangdong): a cache
    # smaller than that would verify them all again on every search. A smaller cache still verifies correctly.
    assert CertificateKeyResolver.CACHE_SIZE >= 1786
    query = _query(tree, "gd", "gd", cases=dd.CasesRequest())
    replies = _raw_stream(tree, query)
    pki = pki_directory(tree.nodes["gd"].data_dir)
    small = CertificateKeyResolver(NodeTrust(pki).root, cache_size=2)
    for reply in replies:
        small.verify(reply)
    assert len({reply.signer_id for reply in replies}) == len(ALL)


def test_since_days_and_directives_need_the_subtree(tmp_path: Path) -> None:
    from datetime import date

    from node.cli.query_subtree import since_day

    assert since_day("7d", date(2026, 12, 6)) == "2026-11-30"
    assert since_day("1d", date(2026, 12, 6)) == "2026-12-06"
    assert since_day("2026-03-01", date(2026, 12, 6)) == "2026-03-01"
    assert since_day("", date(2026, 12, 6)) == ""
    for bad in ("0d", "a week", "7w"):
        with pytest.raises(InvalidArgumentError, match="--since"):
            since_day(bad, date(2026, 12, 6))
    app = typer.Typer()
    query_cmd.register(app)
    result = CliRunner().invoke(app, ["query", "gd", "directives", "-d", str(tmp_path)])
    assert result.exit_code == ExitCode.USAGE and "--subtree" in result.stderr


def test_a_plaintext_tree_refuses_subtree_searches(tmp_path_factory: pytest.TempPathFactory) -> None:
    plain = build_tree(tmp_path_factory.mktemp("subtree-plain"), {"gd": 0, "gd.gz": 0}, plaintext=True)
    try:
        query = build_subtree_query(node_key(plain, "gd"), "gd", "gd", cases=dd.CasesRequest())
        with plain.channel("gd", "gd") as channel, pytest.raises(grpc.RpcError) as refused:
            list(NodeServiceStub(channel).QuerySubtree(query, timeout=5))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "plaintext" in (refused.value.details() or "")
        with pytest.raises(UnauthenticatedError, match="plaintext"):
            search_subtree(plain["gd"], "gd", address=plain.nodes["gd"].address, cases=dd.CasesRequest())
    finally:
        plain.close()
