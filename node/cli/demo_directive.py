"""The demo's last act (``supnet demo``): the province acts downward on what the drill-down found.

The province issues a 督办 to the street the drill-down ended at, about the case it showed; the directive goes down
hop by hop (province → city → district → street, each ``supnet serve`` verifying, storing and relaying it), the
street acknowledges and responds through its own data directory, the response comes back up, the province closes
it and the closing goes down again. Each step runs the same functions as ``supnet directive`` on that node; each
hand-over to the next hop is the node's own mutual-TLS call, the rest is the serving nodes' directive senders.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from node.app import Node, open_node
from node.directives import (
    DirectiveSender,
    IssueRequest,
    acknowledge,
    close,
    directive_history,
    get_directive,
    issue,
    respond,
)
from node.errors import NotFoundError
from node.localtree import FederationState

WAIT_SECONDS = 20.0


@contextmanager
def _opened(state: FederationState, node_id: str) -> Iterator[Node]:
    node = open_node(Path(state.node(node_id).data_dir), migrate_schema=False)
    try:
        yield node
    finally:
        node.close()


def _hand_over(node: Node, directive_id: str) -> None:
    sender = DirectiveSender(node)
    try:
        sender.send_pending(directive_id)  # what the hop does not take now, the node's ``supnet serve`` retries
    finally:
        sender.close()


def _wait(state: FederationState, node_id: str, directive_id: str, status: str) -> float:
    started = time.monotonic()
    with _opened(state, node_id) as node:
        while True:
            try:
                if get_directive(node, directive_id).status == status:
                    return time.monotonic() - started
            except NotFoundError:
                pass  # not there yet
            if time.monotonic() - started > WAIT_SECONDS:
                raise TimeoutError(
                    f"{node_id} did not see directive {directive_id} {status} within {WAIT_SECONDS:.0f} s"
                )
            time.sleep(0.1)


def show_directive_round_trip(console: Console, state: FederationState, root: str, street: str, case_no: str) -> None:
    """Issue a 督办 from ``root`` to ``street`` about ``case_no`` (or, without one, in general); answer and close it."""
    parts = street.split(".")
    path = " → ".join(".".join(parts[: depth + 1]) for depth in range(len(parts)))
    with _opened(state, root) as province:
        directive = issue(
            province,
            IssueRequest(
                target_id=street,
                kind="supervise",
                case_no=case_no,
                text=(f"办件 {case_no} 已超承诺时限，请督促办结并书面报告。" if case_no else "请核查逾期办件并报告。"),
                respond_within_workdays=3,
                issued_by="省监察室 值班员",
            ),
        )
        _hand_over(province, directive.id)
    console.print(
        f"  {root} issues 督办 [bold]{directive.id}[/] to {street}" + (f" about case {case_no}" if case_no else "")
    )
    seconds = _wait(state, root, directive.id, "delivered")
    with _opened(state, root) as province:
        due = get_directive(province, directive.id).due_at
    due_text = f"the street's calendar sets the response due {due:%Y-%m-%d %H:%M}" if due else "no due time"
    console.print(
        f"  delivered hop by hop {path}, each hop verifying the province's signature ({seconds:.1f} s); {due_text}"
    )
    with _opened(state, street) as node:
        acknowledge(node, directive.id, by="街道 值班员")
        _hand_over(node, directive.id)
        console.print(f"  {street} acknowledges it (签收), signed by {street}")
        respond(node, directive.id, f"已督促窗口办理{case_no or '逾期办件'}，办结情况见系统。", by="街道 负责人")
        _hand_over(node, directive.id)
    console.print(f"  {street} responds (答复); the response goes back up, relayed unchanged")
    seconds = _wait(state, root, directive.id, "responded")
    console.print(f"  {root} sees the response ({seconds:.1f} s)")
    with _opened(state, root) as province:
        close(province, directive.id, text="答复属实，予以办结。", by="省监察室 值班员")
        _hand_over(province, directive.id)
    seconds = _wait(state, street, directive.id, "closed")
    console.print(f"  {root} closes it (办结); {street} has the closing ({seconds:.1f} s)")
    with _opened(state, root) as province:
        history = directive_history(province, directive.id)
    steps = ", ".join(f"{entry.label} by {entry.actor_id}" for entry in history.entries)
    verdict = "every signature verified" if history.verified else "[bold red]a step does not verify[/]"
    console.print(f"  the province's signed history: {steps}: {verdict} (supnet directive show {directive.id})")
