"""Drawing one case: its item, outcome, acceptance day, steps and the working day each ends on.

Each case first draws its outcome (completed early / on the promised due day / past promised / past legal, or still
open at ``--to``, some of those already overdue), then the acceptance day and the working day it completes on,
counted on the real working-day calendar, so the deadlines the importer computes put it exactly where it was meant
to land. Its records are then written by ``CaseRecorder`` (``records.py``).
"""

from __future__ import annotations

from bisect import bisect_right
from random import Random

from node.domain import WorkCalendar
from node.synthetic.profile import NodeItem, NodeProfile
from node.synthetic.rates import (
    COMPLETED_CLASSES,
    EARLY_TARGET,
    INSTANT_LATE_SHARE,
    LATE_LEGAL_SHARE,
    LATE_PROMISED_SHARE,
    MAX_STOP_WORKDAYS,
    NO_REASON_SHARE,
    ON_TIME_SHARE,
    ONLINE_SHARE,
    OPEN_SHARE,
    OPEN_SPLIT,
    PROCEDURE_SHARE,
    REFUSAL_SHARE,
    RETURN_ENDS_CASE_SHARE,
    RETURN_SHARE,
    RUNNING_PROCEDURE_SHARE,
    SECOND_SUPPLEMENT_SHARE,
    STEP_OVERRUN_SHARE,
    SUPPLEMENT_SHARE,
    WEEKEND_SHARE,
)
from node.synthetic.records import CaseRecorder, DrawnCase, StepPlan
from node.synthetic.window import CLOSE_SECOND, DAY, OPEN_SECOND, Window
from node.synthetic.wording import (
    EXTENSION,
    MISSING_MATERIALS,
    OTHER,
    PASS,
    PASS_OPINIONS,
    PROCEDURES,
    REFUSAL_PREFIX,
    REFUSAL_REASONS,
    RETURN,
    RETURN_REASONS,
    SUPPLEMENT,
)
from node.synthetic.writer import Sink


class CaseGenerator(CaseRecorder):
    """Draws cases one at a time and writes their records; holds only per-node state."""

    def __init__(
        self, profile: NodeProfile, rng: Random, cal: WorkCalendar, window: Window, write: dict[str, Sink]
    ) -> None:
        super().__init__(profile, rng, cal, window, write)
        self._item_cum_weights: list[float] = []
        running = 0.0
        for node_item in profile.items:
            running += node_item.weight
            self._item_cum_weights.append(running)
        self._early_share = self._calibrated_early_share()
        self._open_weights = tuple(share for _, share in OPEN_SPLIT)
        self._late_weights = (ON_TIME_SHARE, LATE_PROMISED_SHARE, LATE_LEGAL_SHARE)

    # -- helpers ------------------------------------------------------------------------------------------------------
    def _calibrated_early_share(self) -> float:
        """Share of early completions among non-instant completed cases that makes ~79% of ALL completed early.

        Instant cases can never be early (they are due the day they are accepted), so the other cases make up for them.
        """
        total = self._item_cum_weights[-1] if self._item_cum_weights else 1.0
        instant = sum(item.weight for item in self.items if item.item.instant) / total
        completed_non_instant = (1 - instant) * (1 - OPEN_SHARE)
        if completed_non_instant <= 0:
            return 0.0
        return min(0.97, EARLY_TARGET * (instant + completed_non_instant) / completed_non_instant)

    def _office_seconds(self, count: int, after: int) -> list[int]:
        """``count`` increasing seconds of a day after ``after``, in office hours unless the day is already full."""
        random = self.rng.random
        low = max(after + 60, OPEN_SECOND)
        span = max(CLOSE_SECOND, low + 180 * count + 600) - low
        if count == 1:
            return [low + int(random() * span)]
        seconds = sorted(low + int(random() * span) for _ in range(count))
        for index in range(1, count):
            if seconds[index] <= seconds[index - 1]:
                seconds[index] = seconds[index - 1] + 1 + int(random() * 300)
        return seconds

    # -- one case -----------------------------------------------------------------------------------------------------
    def case(self, seq: int) -> None:
        """Draw one case and write all its records that exist by the end of --to."""
        rng = self.rng
        window = self.window
        node_item = self.items[bisect_right(self._item_cum_weights, rng.random() * self._item_cum_weights[-1])]
        item = node_item.item
        promised, legal = item.promised_limit, item.legal_limit
        instant = item.instant

        # 1. Outcome class and features.
        if not instant and rng.random() < OPEN_SHARE:
            outcome = OPEN_SPLIT[self._pick(self._open_weights)][0]
        elif instant:
            outcome = "late_legal" if rng.random() < INSTANT_LATE_SHARE else "on_time"
        elif rng.random() < self._early_share:
            outcome = "early"
        else:
            outcome = COMPLETED_CLASSES[1 + self._pick(self._late_weights)]
        is_open = outcome.startswith("open")
        stop = 0
        procedure: tuple[str, str, str] | None = None
        running_procedure = outcome == "open_pending" and promised >= 2 and rng.random() < RUNNING_PROCEDURE_SHARE
        if running_procedure or (not is_open and promised >= 2 and rng.random() < PROCEDURE_SHARE):
            procedure = EXTENSION if rng.random() < 0.2 else PROCEDURES[int(rng.random() * len(PROCEDURES))]
            stop = 10 if procedure[0] == "1" else 2 + int(rng.random() * (MAX_STOP_WORKDAYS - 1))
        supplements = 0
        if not instant and rng.random() < SUPPLEMENT_SHARE:
            supplements = 2 if rng.random() < SECOND_SUPPLEMENT_SHARE else 1
        returned = not instant and rng.random() < RETURN_SHARE
        return_ends_case = returned and rng.random() < RETURN_ENDS_CASE_SHARE
        refused = not instant and not return_ends_case and rng.random() < REFUSAL_SHARE
        no_reason = (returned or refused) and rng.random() < NO_REASON_SHARE

        # 2. Acceptance day and the working-day offset of the (planned) completion. Offsets count working days after
        #    the acceptance day: offset n falls on workdays[base + n], exactly as the importer's due_at counts them.
        online = rng.random() < ONLINE_SHARE
        accept_workday = True
        if is_open:
            # Open at --to: accepted so recently that it is still in time, or long enough ago to be overdue.
            if outcome == "open_pending":
                back = int(rng.random() * promised)
            elif outcome == "open_overdue_promised":
                back = promised + 1 + int(rng.random() * max(1, legal - promised))
            else:
                back = legal + 1 + int(rng.random() * 12)
            base = max(0, window.last_index - back)
            back = window.last_index - base
            accept_day = window.workdays[base]
            low = max(back + 1, stop + 1 if procedure else 0)
            planned = low + int(rng.random() * max(1, promised + stop - low + 1))
        else:
            if not instant and window.closed_days and rng.random() < WEEKEND_SHARE:
                online, accept_workday = True, False
                accept_day = window.closed_days[int(rng.random() * len(window.closed_days))]
                base = bisect_right(window.workdays, accept_day) - 1  # offset 1 is the next working day
            else:
                base = int(rng.random() * (window.last_index + 1))
                accept_day = window.workdays[base]
            first = stop + 1 if procedure else 0  # a clock stop starts after the acceptance day
            if outcome == "early" and promised + stop - 1 >= first:
                planned = first + int((promised + stop - first) * rng.random() ** 1.4)
            elif outcome == "late_promised" and legal > promised:
                planned = promised + stop + 1 + int(rng.random() * (legal - promised))
            elif outcome in ("late_promised", "late_legal"):
                outcome = "late_legal"
                planned = legal + stop + 1 + int(rng.random() * 6)
            else:
                outcome = "on_time"
                planned = promised + stop

        # 3. The steps, with supplement requests, returns and refusals woven in.
        plans = self._plans(
            node_item,
            supplements=supplements,
            returned=returned,
            ends_case=return_ends_case,
            refused=refused,
            no_reason=no_reason,
        )
        host = next((index for index, plan in enumerate(plans) if plan.host), len(plans) - 1)

        # 4. Working-day durations: own days split by step limits; the clock stop sits inside the host step.
        own_days = planned - stop
        limits = [plan.limit for plan in plans]
        limit_total = sum(limits)
        durations: list[int] = []
        previous_end = cumulative = 0
        for limit in limits:
            cumulative += limit
            end = own_days * cumulative // limit_total if limit_total else 0
            durations.append(end - previous_end)
            previous_end = end
        durations[-1] += own_days - previous_end
        if own_days > 0 and len(plans) > 1 and rng.random() < STEP_OVERRUN_SHARE:
            self._overrun(durations, limits)
        durations[host] += stop

        # 5. Events in time order as (offset, tag, step index); a clock stop lies inside its host step.
        events: list[tuple[int, str, int]] = []
        offset = 0
        for index, duration in enumerate(durations):
            start_offset, offset = offset, offset + duration
            if index == host and procedure is not None:
                own = duration - stop
                procedure_start = min(max(1, start_offset + int(rng.random() * (own + 2))), offset - stop + 1)
                events.append((procedure_start, "procedure_start", index))
                events.append((procedure_start + stop - 1, "procedure_end", index))
            if index == len(durations) - 1:
                events.append((offset, "payment", index))
            events.append((offset, "step", index))
        accepted, stamps = self._times(events, accept_day, base, accept_workday)

        # 6. The records that exist at the end of --to.
        drawn = DrawnCase(
            seq=seq,
            node_item=node_item,
            outcome=outcome,
            online=online,
            accepted=accepted,
            applicant="",
            plans=plans,
            procedure=procedure,
            supplements=supplements,
            refused=refused,
            return_ends_case=return_ends_case,
        )
        self._write_acceptance(drawn)
        self._write_progress(drawn, events, stamps, window.last_index - base)

    def _plans(
        self, node_item: NodeItem, *, supplements: int, returned: bool, ends_case: bool, refused: bool, no_reason: bool
    ) -> list[StepPlan]:
        """The case's steps: the item's workflow plus supplement requests, a return and a refusal where drawn."""
        plans = [StepPlan(template.name, template.post, template.limit) for template in node_item.steps]
        review = 1 if len(plans) > 2 else len(plans) - 1
        plans[review].host = True
        reviewer = plans[review]
        inserted: list[StepPlan] = []
        for _ in range(supplements):
            missing = "、".join(self.rng.sample(MISSING_MATERIALS, 2))
            opinion = f"申请材料不齐全，请一次性补正：{missing}"
            inserted.append(StepPlan(reviewer.name, reviewer.post, reviewer.limit, SUPPLEMENT, opinion))
        if returned:
            opinion = "" if no_reason else self._choice(RETURN_REASONS)
            inserted.append(StepPlan(reviewer.name, reviewer.post, reviewer.limit, RETURN, opinion))
            if ends_case:
                plans = plans[:review]  # returned to the applicant and concluded there
            else:
                inserted.append(StepPlan(plans[0].name, plans[0].post, 0))  # re-accepted after correction
        plans[review:review] = inserted
        if refused:
            decision = next((plan for plan in reversed(plans) if plan.name in ("审批", "审核")), plans[-1])
            decision.action = OTHER
            decision.opinion = "" if no_reason else REFUSAL_PREFIX + self._choice(REFUSAL_REASONS)
        for plan in plans:
            if plan.action == PASS:
                plan.opinion = self._choice(PASS_OPINIONS.get(plan.name, ("同意",)))
        return plans

    def _overrun(self, durations: list[int], limits: list[int]) -> None:
        """Make one step take longer than its own limit by moving working days from the other steps to it."""
        index = 1 + int(self.rng.random() * (len(durations) - 1))
        need = limits[index] + 1 - durations[index]
        for other in reversed(range(len(durations))):
            if other == index or need <= 0:
                continue
            take = min(durations[other], need)
            durations[other] -= take
            durations[index] += take
            need -= take

    def _times(
        self, events: list[tuple[int, str, int]], accept_day: int, base: int, accept_workday: bool
    ) -> tuple[int, list[int]]:
        """The acceptance stamp and one stamp per event, strictly increasing, in office hours where possible."""
        random = self.rng.random
        workdays = self.window.workdays
        if accept_workday:
            accept_second = OPEN_SECOND + int(random() * (CLOSE_SECOND - OPEN_SECOND - 1800))
        else:
            accept_second = 8 * 3600 + int(random() * 14 * 3600)  # online on a weekend or holiday, any time
        stamps: list[int] = []
        position = 0
        while position < len(events):
            offset = events[position][0]
            group_end = position + 1
            while group_end < len(events) and events[group_end][0] == offset:
                group_end += 1
            count = group_end - position
            if offset == 0:
                day_start = accept_day * DAY
                seconds = self._office_seconds(count, accept_second)
            elif base + offset < len(workdays):
                day_start = workdays[base + offset] * DAY
                seconds = self._office_seconds(count, -1)
            else:
                # Far past --to: never written; any increasing stamps keep the order.
                day_start = (workdays[-1] + offset) * DAY
                seconds = list(range(OPEN_SECOND, OPEN_SECOND + count))
            stamps.extend(day_start + second for second in seconds)
            position = group_end
        return accept_day * DAY + accept_second, stamps
