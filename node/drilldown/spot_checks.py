"""Spot checks over drill-down: the target's answer to a ``spot_check`` query, and the ancestor's asker.

The query travels like every drill-down query (signed by the requester, nonce and freshness checked, replays
refused, audited at every hop it passes); the target opens the leaves of a bucket committed in its own signed
report (node.spotcheck.open_leaves). ``DrilldownAsker`` is the ancestor's side for node.spotcheck.run_spot_check:
it fetches the target's reports (newest first) and the openings through a DrilldownClient.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from federation import parse_body
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.report_pb2 import ReportBody
from federation.proto.v1.spotcheck_pb2 import SpotCheckAnswer, SpotCheckRequest
from node.app import Node
from node.drilldown.stored_reports import stored_report
from node.errors import NotFoundError
from node.spotcheck import open_leaves
from node.trust import signing_identity

if TYPE_CHECKING:
    from node.drilldown.client import DrilldownClient

__all__ = ["DrilldownAsker", "answer_spot_check"]


def answer_spot_check(node: Node, request: SpotCheckRequest) -> tuple[SpotCheckAnswer, str]:
    """Open the asked leaves of a bucket committed in this node's own report #``report_sequence``."""
    identity = signing_identity(node)
    with node.engine.connect() as conn:
        envelope = stored_report(conn, node, node.config.id, int(request.report_sequence))
        return open_leaves(conn, identity, parse_body(envelope, ReportBody), request), ""


class DrilldownAsker:
    """The ancestor's side of a spot check through the signed drill-down path (node.spotcheck.Asker)."""

    def __init__(self, client: DrilldownClient) -> None:
        self._client = client
        # The signed answers, kept for the record (what the check rests on).
        self.answers: list[dd.QueryAnswer] = []

    def reports(self, target: str) -> Iterator[ReportBody]:
        """The target's own reports, newest first, each as it signed it (the drill-down answer is verified)."""
        sequence = 0
        while True:
            try:
                answer = self._client.ask(target, report=dd.ReportRequest(node_id=target, sequence=sequence))
            except NotFoundError:
                return
            body = parse_body(answer.body.report.report, ReportBody)
            yield body
            if body.sequence <= 1:
                return
            sequence = int(body.sequence) - 1

    def open(self, target: str, request: SpotCheckRequest) -> SpotCheckAnswer:
        """Ask the target to open the leaves; the answer is signed by the target and verified by the client."""
        answer = self._client.ask(target, spot_check=request)
        self.answers.append(answer.body)
        return answer.body.spot_check
