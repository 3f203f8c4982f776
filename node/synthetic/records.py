"""The records of a drawn case as they exist at the end of --to, and complaints about service in general.

A case's records: acceptance, steps, clock stop (special procedure), payment, completion, evaluation, complaint.
``CaseRecorder`` holds the per-node state and the one random generator every draw goes through, in a fixed order;
the case generator (``cases.py``) extends it with the drawing of the cases themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from random import Random

from node.domain import WorkCalendar, due_at
from node.synthetic import names
from node.synthetic.catalogue import TYPE_LICENCE
from node.synthetic.profile import NodeItem, NodeProfile
from node.synthetic.rates import (
    COMPLAINT_SHARE_LATE,
    COMPLAINT_SHARE_OTHER,
    ENTERPRISE_SHARE_LICENCE,
    ENTERPRISE_SHARE_OTHER,
    EVALUATION_SHARE,
    FEE_ABOVE_STANDARD_SHARE,
    FEE_ON_FREE_ITEM_SHARE,
    LATE_CLASSES,
    LATE_ENTRY_SHARE,
    SATISFACTION_WEIGHTS,
    SATISFACTION_WEIGHTS_LATE,
)
from node.synthetic.window import DAY, OPEN_SECOND, Window, time_texts, to_datetime
from node.synthetic.wording import (
    COMMENTS,
    COMPLAINT_SOURCES,
    COMPLAINT_TOPICS,
    EVALUATION_CHANNELS_ONLINE,
    EVALUATION_CHANNELS_WALK_IN,
    GENERAL_COMPLAINTS,
    OTHER,
    REFUSAL_PREFIX,
)
from node.synthetic.writer import Sink

_ID_TYPE_RESIDENT = "111"  # 居民身份证 (GA/T 517 code, as the national government-service platform uses)
_ID_TYPE_CREDIT_CODE = "001"  # 统一社会信用代码 (convention of provincial platforms; check the partner's code table)


@dataclass(slots=True)
class StepPlan:
    """One step of a case as drawn: the template's name, post and limit, what was done and said."""

    name: str
    post: str
    limit: int
    action: str = "通过"
    opinion: str = ""
    host: bool = False  # the step during which a special procedure runs


@dataclass(slots=True)
class DrawnCase:
    """What was drawn for one case before its records are written."""

    seq: int
    node_item: NodeItem
    outcome: str
    online: bool
    accepted: int
    applicant: str
    plans: list[StepPlan]
    procedure: tuple[str, str, str] | None
    supplements: int
    refused: bool
    return_ends_case: bool
    case_no: str = ""


class CaseRecorder:
    """Writes the records of drawn cases to the sinks; holds only per-node state and the random generator."""

    def __init__(
        self, profile: NodeProfile, rng: Random, cal: WorkCalendar, window: Window, write: dict[str, Sink]
    ) -> None:
        self.profile = profile
        self.rng = rng
        self.cal = cal
        self.window = window
        self.write = write
        self.items = profile.items
        self._day_text: dict[int, str] = {}
        self._time_text = time_texts()
        self._local_area = profile.area_code[:6]

    # -- helpers ------------------------------------------------------------------------------------------------------
    def _text(self, stamp: int) -> str:
        """'YYYYMMDDThhmmss' of a stamp."""
        day, second = divmod(stamp, DAY)
        prefix = self._day_text.get(day)
        if prefix is None:
            prefix = self._day_text[day] = f"{date.fromordinal(day):%Y%m%d}T"
        return prefix + self._time_text[second]

    def _pick(self, weights: tuple[float, ...]) -> int:
        """Index drawn with the given weights."""
        u = self.rng.random() * sum(weights)
        for index, weight in enumerate(weights):
            u -= weight
            if u < 0:
                return index
        return len(weights) - 1

    def _choice(self, options: tuple[str, ...]) -> str:
        return options[int(self.rng.random() * len(options))]

    # -- one case's records -------------------------------------------------------------------------------------------
    def _write_acceptance(self, drawn: DrawnCase) -> None:
        rng = self.rng
        profile = self.profile
        node_item = drawn.node_item
        item = node_item.item
        accepted = drawn.accepted
        accepted_text = self._text(accepted)
        drawn.case_no = f"{profile.case_prefix}-{accepted_text[:8]}-{drawn.seq:07d}"
        enterprise_share = ENTERPRISE_SHARE_LICENCE if item.type_code == TYPE_LICENCE else ENTERPRISE_SHARE_OTHER
        if rng.random() < enterprise_share:
            drawn.applicant = names.enterprise_name(rng, profile.place)
            id_type = _ID_TYPE_CREDIT_CODE
            id_no = names.unified_credit_code("9", "1", self._local_area, int(rng.random() * 10**8))
        else:
            drawn.applicant, id_no, _ = names.random_resident(rng, self._local_area, self.window.date_to)
            id_type = _ID_TYPE_RESIDENT
        if drawn.online:
            applied = accepted - 600 - int(rng.random() * 2 * DAY)  # submitted online up to two days earlier
            source = "2" if rng.random() < 0.6 else "3"
        else:
            applied = accepted - 180 - int(rng.random() * 2400)  # took a ticket and waited at the window
            source = "1"
        declared = due_at(self.cal, to_datetime(accepted), item.promised_limit)  # the calendar the importer uses
        self.write["acceptance"](
            (
                drawn.case_no,
                node_item.implementation_code,
                node_item.body_name,
                node_item.body_code,
                self._choice(profile.staff[node_item.body_name][names.POST_WINDOW]),
                accepted_text,
                self._text(declared.toordinal() * DAY + declared.hour * 3600 + declared.minute * 60 + declared.second),
                "1" if item.instant else "2",
                profile.area_code,
                drawn.applicant,
                id_type,
                id_no,
                source,
                self._text(applied),
            )
        )

    def _write_progress(
        self, drawn: DrawnCase, events: list[tuple[int, str, int]], stamps: list[int], visible: int
    ) -> None:
        """Steps, clock stop, payment, completion, evaluation and complaint: whatever happened by the end of --to."""
        rng = self.rng
        write = self.write
        case_no = drawn.case_no
        plans = drawn.plans
        procedure = drawn.procedure
        staff = self.profile.staff[drawn.node_item.body_name]
        cutoff = self.window.cutoff
        step_start = drawn.accepted
        started = self._text(step_start)  # a step starts when the one before it ended: formatted once
        handler = ""
        paid = procedure_started = False
        completed: int | None = None
        for (offset, tag, index), stamp in zip(events, stamps, strict=True):
            seen = offset <= visible
            if tag == "procedure_start":
                if seen and procedure is not None:
                    procedure_started = True
                    write["procedure_start"]((case_no, procedure[0], self._text(stamp), procedure[1]))
                continue
            if tag == "procedure_end":
                if seen and procedure is not None and procedure_started:
                    write["procedure_end"]((case_no, self._text(stamp), procedure[2]))
                continue
            if tag == "payment":
                if seen and not drawn.refused and not drawn.return_ends_case:
                    paid = self._payment(case_no, drawn.node_item, stamp)
                continue
            plan = plans[index]
            handler = self._choice(staff[plan.post])
            if not seen:
                # In progress at --to: the step is pending and nothing after it has happened yet.
                entered = self._text(step_start + 60 + int(rng.random() * 600))
                limit = str(plan.limit)
                pending = (case_no, plan.name, plan.action, handler, plan.post, "", started, "", "1", limit, entered)
                write["step"](pending)
                break
            entered = self._text(self._entered(stamp, drawn.online, cutoff))
            ended = self._text(stamp)
            limit = str(plan.limit)
            write["step"](
                (case_no, plan.name, plan.action, handler, plan.post, plan.opinion, started, ended, "2", limit, entered)
            )
            step_start, started = stamp, ended
            if index == len(plans) - 1:
                completed = stamp
        if completed is not None:
            self._completion(drawn, completed, handler, paid)
            if rng.random() < EVALUATION_SHARE:
                self._evaluation(case_no, completed, drawn.online, drawn.outcome in LATE_CLASSES, cutoff)
        complaint_share = COMPLAINT_SHARE_LATE if drawn.outcome in LATE_CLASSES else COMPLAINT_SHARE_OTHER
        if rng.random() < complaint_share:
            self._complaint(drawn, completed, cutoff)

    # -- pieces of a case ---------------------------------------------------------------------------------------------
    def _entered(self, ended: int, online: bool, cutoff: int) -> int:
        """When a finished step was entered: minutes later, or for a few walk-in steps days later (late entry)."""
        rng = self.rng
        if not online and rng.random() < LATE_ENTRY_SHARE:
            late = (ended // DAY + 4 + int(rng.random() * 7)) * DAY + OPEN_SECOND + int(rng.random() * 8 * 3600)
            if late <= cutoff:
                return late
        return ended + int(rng.random() * 900)

    def _payment(self, case_no: str, node_item: NodeItem, paid: int) -> bool:
        """Write the case's payment if it has one: the standard fee, a few above it, a few on free items."""
        rng = self.rng
        standard = node_item.item.fee_standard
        if standard is not None:
            amount = standard
            if rng.random() < FEE_ABOVE_STANDARD_SHARE:
                amount = (standard * Decimal(self._choice(("1.5", "2", "3")))).quantize(Decimal("0.01"))
        elif rng.random() < FEE_ON_FREE_ITEM_SHARE:
            amount = Decimal(self._choice(("20.00", "50.00", "100.00", "200.00")))  # a "材料费" the item may not charge
        else:
            return False
        self.write["payment"]((case_no, f"{amount:.2f}", self._text(paid)))
        return True

    def _completion(self, drawn: DrawnCase, completed: int, handler: str, paid: bool) -> None:
        item = drawn.node_item.item
        certificate = certificate_no = reason = ""
        if drawn.return_ends_case:
            result = "3"  # 不予受理: returned to the applicant
            reason = drawn.plans[-1].opinion
        elif drawn.refused:
            result = "2"  # 不予批准
            decision = next(plan for plan in drawn.plans if plan.action == OTHER)
            reason = decision.opinion.removeprefix(REFUSAL_PREFIX)
        else:
            result = "1"
            if item.certificate:
                year = date.fromordinal(completed // DAY).year
                certificate = item.certificate
                certificate_no = f"{item.basic_code[:3]}{self.profile.area_code[:6]}{year}{drawn.seq:07d}"
        self.write["completion"](
            (
                drawn.case_no,
                handler,
                self._text(completed),
                result,
                reason,
                certificate,
                certificate_no,
                "1" if paid else "0",
            )
        )

    def _evaluation(self, case_no: str, completed: int, online: bool, late: bool, cutoff: int) -> None:
        rng = self.rng
        if rng.random() < 0.7:
            evaluated = completed + 60 + int(rng.random() * 1800)  # at the window's rating pad, right away
        else:
            evaluated = completed + 12 * 3600 + int(rng.random() * 3 * DAY)  # by text message, days later
        if evaluated > cutoff:
            return
        code = 1 + self._pick(SATISFACTION_WEIGHTS_LATE if late else SATISFACTION_WEIGHTS)
        channels = EVALUATION_CHANNELS_ONLINE if online else EVALUATION_CHANNELS_WALK_IN
        self.write["evaluation"](
            (case_no, self._choice(channels), self._text(evaluated), str(code), self._choice(COMMENTS[code]))
        )

    def _complaint(self, drawn: DrawnCase, completed: int | None, cutoff: int) -> None:
        rng = self.rng
        received = (completed if completed is not None else drawn.accepted) + 20 * 3600 + int(rng.random() * 10 * DAY)
        if received > cutoff:
            return
        topic = 1 if drawn.supplements > 1 else 0 if rng.random() < 0.6 else 2 + int(rng.random() * 2)
        title, content = COMPLAINT_TOPICS[topic]
        item_name = drawn.node_item.item.name
        accepted_day = date.fromordinal(drawn.accepted // DAY)
        # An enterprise complains through a person; a resident applicant complains in their own name.
        complainant = drawn.applicant if len(drawn.applicant) <= 4 else names.person_name(rng)
        self._write_complaint(
            # At most one complaint per case; the day keeps runs of one node over other periods apart.
            number=f"{self.profile.case_prefix}-TS-{self._text(received)[:8]}-{drawn.seq:07d}",
            title=title.format(item=item_name),
            content=content.format(item=item_name, accepted=f"{accepted_day:%Y年%m月%d日}"),
            complainant=complainant,
            unit=drawn.node_item.body_name,
            person=self._choice(self.profile.staff[drawn.node_item.body_name][names.POST_WINDOW]),
            received=received,
            case_no=drawn.case_no,
        )

    def _write_complaint(
        self,
        *,
        number: str,
        title: str,
        content: str,
        complainant: str,
        unit: str,
        person: str,
        received: int,
        case_no: str,
    ) -> None:
        profile = self.profile
        source = self._choice(COMPLAINT_SOURCES)
        self.write["complaint"](
            (
                number,
                title,
                complainant,
                unit,
                person,
                content,
                source,
                self._text(received),
                profile.supervision_unit,
                "15",
                "0",
                "0",
                profile.area_code,
                case_no,
            )
        )

    def general_complaints(self, count: int) -> None:
        """Complaints about service in general (no case), on random working days of the window."""
        rng = self.rng
        window = self.window
        for number in range(1, count + 1):
            day = window.workdays[int(rng.random() * (window.last_index + 1))]
            received = day * DAY + OPEN_SECOND + int(rng.random() * 8 * 3600)
            title, content = GENERAL_COMPLAINTS[int(rng.random() * len(GENERAL_COMPLAINTS))]
            self._write_complaint(
                number=f"{self.profile.case_prefix}-TS-{self._text(received)[:8]}-G{number:06d}",
                title=title,
                content=content,
                complainant=names.person_name(rng),
                unit=self.items[int(rng.random() * len(self.items))].body_name,
                person="",
                received=received,
                case_no="",
            )
