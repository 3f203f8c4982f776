"""``supnet directive`` on a running tree: issue, list, show (verified; exit 1 when a stored step was altered), ack,
respond with findings done, close, and the one-line errors of actions the state or the tree does not allow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import select, update
from typer.testing import CliRunner

from federation.proto.v1.common_pb2 import SignedEnvelope
from node.cli import directive_cmd
from node.directives import get_directive
from node.errors import ExitCode
from node.store import DirectiveEvent
from tests.directives.conftest import DirectiveTree, status_of, wait_for
from tests.harness.tree import TreeClock

IDS = ["gd", "gd.a", "gd.a.x"]
TARGET = "gd.a.x"


@pytest.fixture
def app() -> typer.Typer:
    application = typer.Typer()
    directive_cmd.register(application)
    return application


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[DirectiveTree]:
    built = DirectiveTree(tmp_path / "tree", IDS, clock=TreeClock.real())
    built.start_loops()
    yield built
    built.close()


def _run(app: typer.Typer, tree: DirectiveTree, node_id: str, *args: str) -> Any:
    result = CliRunner().invoke(
        app, ["directive", *args, "--data-dir", str(tree.nodes[node_id].data_dir)], env={"COLUMNS": "200"}
    )
    return result


def _json(app: typer.Typer, tree: DirectiveTree, node_id: str, *args: str) -> Any:
    result = _run(app, tree, node_id, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[0])


def test_issue_answer_and_close_through_the_commands(app: typer.Typer, tree: DirectiveTree, tmp_path: Path) -> None:
    attachment = tmp_path / "检查报告.pdf"
    attachment.write_bytes(b"%PDF-1.4 report")
    issued = _json(
        app,
        tree,
        "gd",
        "issue",
        TARGET,
        "--kind",
        "rectify",
        "--text",
        "专项检查发现以下问题，请限期整改。",
        "--finding",
        "一次性告知未落实",
        "--owner",
        "市场监管局",
        "--finding",
        "收费未公示",
        "--owner",
        "财政局/窗口",
        "--respond-within",
        "3",
        "--attach",
        str(attachment),
        "--by",
        "王某",
    )
    directive_id = issued["id"]
    assert issued["kind"] == "rectify" and issued["kind_label"] == "整改通知"
    assert issued["text"] == "专项检查发现以下问题，请限期整改。" and issued["subject_kind"] == ""
    assert issued["issued_at"].endswith("+08:00") and issued["handed_over"] is True
    assert [f["owner_department"] for f in issued["findings"]] == ["市场监管局", "财政局"]
    assert issued["findings"][1]["owner_post"] == "窗口"
    assert len(issued["attachments"]) == 1 and len(issued["attachments"][0]) == 64
    wait_for(lambda: get_directive(tree["gd"], directive_id).status == "delivered", what="delivery")

    inbox = _json(app, tree, TARGET, "list", "--inbox", "--open")["directives"]
    assert [d["id"] for d in inbox] == [directive_id]
    assert inbox[0]["due_at"].endswith("+08:00") and inbox[0]["role"] == "received"
    table = _run(app, tree, TARGET, "list")
    assert table.exit_code == 0 and "整改通知" in table.stdout and "已送达" in table.stdout

    assert _json(app, tree, TARGET, "ack", directive_id, "--by", "李某")["status"] == "acknowledged"
    responded = _json(
        app, tree, TARGET, "respond", directive_id, "--text", "已整改", "--finding-done", "1", "--note", "已制作告知单"
    )
    assert responded["status"] == "responded"
    wait_for(lambda: get_directive(tree["gd"], directive_id).status == "responded", what="the response at gd")

    shown = _run(app, tree, "gd", "show", directive_id)
    assert shown.exit_code == 0, shown.output
    assert "签名历史" in shown.stdout and "✗" not in shown.stdout.replace("#2 ✗", "")
    history = _json(app, tree, "gd", "show", directive_id)
    assert history["verified"] is True
    assert [step["kind"] for step in history["history"]] == ["issued", "delivered", "acknowledged", "responded"]
    response = history["history"][-1]
    assert response["findings"] == [
        {"index": 1, "done": True, "note": "已制作告知单"},
        {"index": 2, "done": False, "note": ""},
    ]
    assert response["actor_id"] == TARGET and response["at"].endswith("+08:00")

    assert _json(app, tree, "gd", "close", directive_id)["status"] == "closed"
    wait_for(lambda: get_directive(tree[TARGET], directive_id).status == "closed", what="closing at the target")
    assert _json(app, tree, "gd", "list", "--outbox", "--open")["directives"] == []
    assert [d["id"] for d in _json(app, tree, "gd", "list", "--outbox")["directives"]] == [directive_id]


def test_an_altered_stored_step_fails_show(app: typer.Typer, tree: DirectiveTree) -> None:
    issued = _json(app, tree, "gd", "issue", TARGET, "--kind", "supervise", "--text", "请核查", "--case", "C-9")
    assert (issued["subject_kind"], issued["subject"], issued["text"]) == ("case", "C-9", "请核查")
    directive_id = issued["id"]
    wait_for(lambda: get_directive(tree["gd"], directive_id).status == "delivered", what="delivery")
    with tree["gd"].engine.begin() as conn:
        stored = conn.execute(
            select(DirectiveEvent.id, DirectiveEvent.envelope)  # type: ignore[call-overload]
            .where(DirectiveEvent.directive_id == directive_id)
            .order_by(DirectiveEvent.id)
        ).first()
        assert stored is not None
        envelope = SignedEnvelope.FromString(bytes(stored.envelope))
        signature = bytearray(envelope.signature)
        signature[10] ^= 0x01  # one bit of the signer's Ed25519 signature, nothing else
        envelope.signature = bytes(signature)
        tampered = envelope.SerializeToString(deterministic=True)
        assert len(tampered) == len(stored.envelope) and tampered != bytes(stored.envelope)
        conn.execute(update(DirectiveEvent).where(DirectiveEvent.id == stored.id).values(envelope=tampered))
    shown = _run(app, tree, "gd", "show", directive_id)
    assert shown.exit_code == 1, shown.output
    assert "✗" in shown.stdout and "does not verify" in shown.output


def _refused(result: Any, message: str) -> bool:
    """Refused with one clear line: a documented non-zero exit (tests/cli/test_exit_codes.py maps each code)."""
    return result.exit_code not in (0, ExitCode.INTERNAL) and message in result.output


def test_actions_the_state_or_the_tree_does_not_allow(app: typer.Typer, tree: DirectiveTree) -> None:
    upward = _run(app, tree, "gd.a", "issue", "gd", "--kind", "supervise", "--text", "x")
    assert _refused(upward, "only to a descendant")
    itself = _run(app, tree, "gd.a", "issue", "gd.a", "--kind", "warning", "--text", "x")
    assert _refused(itself, "only to a descendant")
    bad_kind = _run(app, tree, "gd", "issue", TARGET, "--kind", "order", "--text", "x")
    assert _refused(bad_kind, "--kind must be one of")
    no_findings = _run(app, tree, "gd", "issue", TARGET, "--kind", "rectify", "--text", "x")
    assert _refused(no_findings, "at least one finding")
    unpaired = _run(
        app, tree, "gd", "issue", TARGET, "--kind", "rectify", "--text", "x", "--finding", "a", "--finding", "b",
        "--owner", "d",
    )  # fmt: skip
    assert _refused(unpaired, "one --owner per --finding")

    directive_id = _json(
        app, tree, "gd", "issue", TARGET, "--kind", "warning", "--text", "效能告诫", "--department", "窗口"
    )["id"]
    wait_for(lambda: status_of(tree, TARGET, directive_id) == "delivered", what="delivery")
    not_issuer = _run(app, tree, TARGET, "close", directive_id)
    assert _refused(not_issuer, "only its issuer")
    too_early = _run(app, tree, "gd", "close", directive_id)
    assert _refused(too_early, "only when it is responded")
    not_target = _run(app, tree, "gd", "respond", directive_id, "--text", "x")
    assert _refused(not_target, "only its target")
    no_findings_here = _run(app, tree, TARGET, "respond", directive_id, "--text", "x", "--finding-done", "1")
    assert _refused(no_findings_here, "lists no findings")
    unknown = _run(app, tree, "gd", "show", "gd/20250101-00000000")
    assert _refused(unknown, "not held at this node")
