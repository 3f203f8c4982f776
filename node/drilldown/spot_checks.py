"""Spot checks over drill-down: the target's answer to a ``spot_check`` query, and the ancestor's asker.

The query travels like every drill-down query (signed by the requester, nonce and freshness checked, replays
refused, audited at every hop it passes); the target opens the leaves of a bucket committed in its own signed
report (node.spotcheck.open_leaves). ``DrilldownAsker`` is the ancestor's side for node.spotcheck.run_spot_check:
it fetches the target's reports as its parent holds them (newest first) and the openings through a DrilldownClient.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from federation import IntegrityError, parse_body
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.report_pb2 import ReportBody
from federation.proto.v1.spotcheck_pb2 import SpotCheckAnswer, SpotCheckRequest
from node.app import Node
from node.errors import NotFoundError
from node.spotcheck import open_leaves
from node.trust import signing_identity

if TYPE_CHECKING:
    from node.drilldown.client import DrilldownClient

__all__ = ["DrilldownAsker", "answer_spot_check"]


def answer_spot_check(node: Node, request: SpotCheckRequest) -> tuple[SpotCheckAnswer, str]:
    """Open the asked leaves of a bucket tree this node committed to (under the asked root)."""
    identity = signing_identity(node)
    with node.engine.connect() as conn:
        return open_leaves(conn, identity, request), ""


class DrilldownAsker:
    """The ancestor's side of a spot check through the signed drill-down path (node.spotcheck.Asker)."""

    def __init__(self, client: DrilldownClient) -> None:
        self._client = client
        # The signed answers, kept for the record (what the check rests on).
        self.answers: list[dd.QueryAnswer] = []

    def reports(self, target: str) -> Iterator[ReportBody]:
        """The target's reports as its PARENT received them, newest first, each exactly as the target signed it.

        Read at the parent, not at the target: these are the reports the figures above rest on, so a target that
        signed another version for checkers than for its parent is checked against the one it sent up.
        """
        holder = target.rpartition(".")[0] or target
        sequence = 0
        while True:
            try:
                answer = self._client.ask(holder, report=dd.ReportRequest(node_id=target, sequence=sequence))
            except NotFoundError:
                return
            envelope = answer.body.report.report
            if envelope.signer_id != target:
                raise IntegrityError(f"{holder} answered with a report signed by {envelope.signer_id}, not {target}")
            body = parse_body(envelope, ReportBody)
            yield body
            if body.sequence <= 1:
                return
            sequence = int(body.sequence) - 1

    def open(self, target: str, request: SpotCheckRequest) -> SpotCheckAnswer:
        """Ask the target to open the leaves; the answer is signed by the target and verified by the client."""
        answer = self._client.ask(target, spot_check=request)
        self.answers.append(answer.body)
        return answer.body.spot_check
