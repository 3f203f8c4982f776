"""The demo's supervision offices at work: each node decides, handles and concludes its generated complaints.

Generated data brings complaints in as received (投诉); an office then accepts (受理) or declines each one, answers
the complainant (办理) and concludes it (办结) through the same workflow ``supnet complaints`` runs, so the demo's
受理率 and 办结率 are figures of real transitions. Decisions are seeded by the node id, so a rerun gives the same.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from node.app import Node
from node.supervision import (
    accept_complaint,
    conclude_complaint,
    decline_complaint,
    handle_complaint,
    list_complaints,
)

__all__ = ["ComplaintWork", "work_through_complaints"]

DECLINE_SHARE = 0.05  # outside the office's remit (不属于受理范围)
SUBSTANTIATED_SHARE = 0.3
OFFICER = "监察室值班员"


@dataclass(frozen=True, slots=True)
class ComplaintWork:
    """What one node's office did with its complaints."""

    accepted: int = 0
    declined: int = 0
    concluded: int = 0


def _later(moment: datetime, rng: random.Random, days: tuple[int, int]) -> datetime:
    """A working-hours time some days after ``moment`` (within office hours: 9:00–17:00)."""
    day = moment.date() + timedelta(days=rng.randint(*days))
    return max(moment, datetime(day.year, day.month, day.day, 9) + timedelta(minutes=rng.randint(0, 8 * 60)))


def work_through_complaints(node: Node, seed: int) -> ComplaintWork:
    """Decide every received complaint, then answer and conclude the accepted ones, all dated before now."""
    rng = random.Random(f"{node.config.id}/{seed}/complaints")
    now = node.now()
    accepted = declined = concluded = 0
    for complaint in list_complaints(node, status="received", limit=100_000):
        decided = _later(complaint.received_at, rng, (0, 2))
        if decided > now:
            continue
        no = complaint.complaint_no
        if rng.random() < DECLINE_SHARE:
            decline_complaint(node, no, "不属于本机关受理范围,已告知投诉人向有权机关反映", by=OFFICER, now=decided)
            declined += 1
            continue
        accept_complaint(node, no, by=OFFICER, now=decided)
        accepted += 1
        handled = _later(decided, rng, (2, 8))
        concluding = _later(handled, rng, (1, 3))
        if concluding > now:
            continue
        handle_complaint(node, no, "已核实情况并答复投诉人", by=OFFICER, now=handled)
        substantiated = rng.random() < SUBSTANTIATED_SHARE
        conclude_complaint(
            node,
            no,
            "substantiated" if substantiated else "unsubstantiated",
            "对责任人批评教育" if substantiated else "",
            now=concluding,
        )
        concluded += 1
    return ComplaintWork(accepted=accepted, declined=declined, concluded=concluded)
