"""The rule catalogue: stable monitoring rule ids (监察规则编号), severities, and threshold resolution.

Rule ids are part of the wire and storage contract (alerts.rule_id, GB/T 39046 监察规则编号): never renumber them.

| id  | rule                       | severity | fires when                                                | trigger |
|-----|----------------------------|----------|-----------------------------------------------------------|---------|
| R01 | reminder                   | reminder | open, running case due within ``reminder_workdays``       | scan    |
| R02 | promise broken             | yellow   | open case past its promised limit; completed after it     | both    |
| R03 | law broken                 | red      | open case past its legal limit; completed after it        | both    |
| R04 | yellow card not corrected  | red      | a yellow card still uncorrected at its ``correct_by``     | scan    |
| R05 | step overdue               | reminder | a step ended, or still pending, past its ``step_limit``   | both    |
| R06 | fee violation              | red      | a payment (or a completion's 是否收费) on an item charging | event   |
|     |                            |          | no fee, or fees above its standard                        |         |
| R07 | repeated supplement        | yellow   | more than ``max_supplements`` supplement requests         | event   |
| R08 | refusal without reason     | yellow   | result 2/3, or a return step, with no reason/opinion      | event   |
| R09 | late entry                 | reminder | step entered > ``late_entry_hours`` after it happened     | event   |
| R10 | complaint decision overdue | yellow   | complaint still 'received' past its decision deadline     | scan    |
| R11 | complaint handling overdue | yellow   | accepted complaint not handled within its handling limit  | scan    |
| R12 | high return rate           | yellow   | a department's 退件率 over ``return_rate_window_days`` | scan    |
|     |                            |          | above ``return_rate_threshold`` (with at least          |         |
|     |                            |          | ``return_rate_min_received`` cases); once a month       |         |
| R13 | evaluation follow-up late  | yellow   | a rating 4–5 follow-up still open at its deadline         | scan    |
| R14 | limit needs explanation    | reminder | an item in force promises more than half its legal limit  | both    |
|     |                            |          | (Panyu's rule) and has no written explanation (its latest |         |
|     |                            |          | version; closes when explained, superseded or retired)    |         |
| R15 | directive response late    | yellow   | a directive received (督办, 整改 …) still unanswered at its | scan    |
|     |                            |          | response due time (node.directives; once per directive)   |         |

Chinese names (预警提醒, 超承诺时限, …) are in ``RULES``.

A "running" case is one whose clock is not stopped by a special procedure (clock_stopped false): stopped cases get
no overdue alert; when the procedure ends the importer recomputes the deadlines and the next scan re-examines them.

Thresholds come from ``[supervision]`` in supnet.toml: the section's defaults, then ``[supervision.rules.RNN]``, then
``[supervision.item_types."TT".RNN]`` (TT = GB/T 39046 A.1 item type code), the most specific value winning. Any
rule may be disabled the same way (``enabled = false``). Unknown rule ids or malformed item type codes are a
ConfigError naming the key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date
from typing import Literal

from sqlalchemy import ColumnElement, and_, not_, or_, true

from node.config import RuleThreshold, SupervisionConfig
from node.errors import ConfigError

__all__ = [
    "ALL_RULE_IDS",
    "R01",
    "R02",
    "R03",
    "R04",
    "R05",
    "R06",
    "R07",
    "R08",
    "R09",
    "R10",
    "R11",
    "R12",
    "R13",
    "R14",
    "R15",
    "RULES",
    "SEVERITIES",
    "Rule",
    "RuleGroup",
    "RuleSettings",
    "Severity",
    "Thresholds",
    "case_subject",
    "complaint_subject",
    "completion_subject",
    "department_period_subject",
    "directive_subject",
    "escalation_subject",
    "evaluation_subject",
    "groups_condition",
    "item_subject",
    "payment_subject",
    "step_subject",
]

Severity = Literal["reminder", "yellow", "red"]
SEVERITIES: tuple[Severity, ...] = ("reminder", "yellow", "red")
Trigger = Literal["scan", "event", "both"]

R01 = "R01"
R02 = "R02"
R03 = "R03"
R04 = "R04"
R05 = "R05"
R06 = "R06"
R07 = "R07"
R08 = "R08"
R09 = "R09"
R10 = "R10"
R11 = "R11"
R12 = "R12"
R13 = "R13"
R14 = "R14"
R15 = "R15"


@dataclass(frozen=True, slots=True)
class Rule:
    """One monitoring rule: its stable id, names, severity, what its alerts are about and what triggers it."""

    rule_id: str
    name: str
    name_cn: str
    severity: Severity
    subject_kind: Literal[
        "case", "step", "payment", "complaint", "alert", "item", "department", "evaluation", "directive"
    ]
    trigger: Trigger
    description: str


RULES: dict[str, Rule] = {
    rule.rule_id: rule
    for rule in (
        Rule(R01, "reminder", "预警提醒", "reminder", "case", "scan", "open case close to its promised limit"),
        Rule(R02, "promise broken", "超承诺时限", "yellow", "case", "both", "case past its promised limit"),
        Rule(R03, "law broken", "超法定时限", "red", "case", "both", "case past its legal limit"),
        Rule(R04, "yellow card not corrected", "黄牌逾期未纠正", "red", "alert", "scan", "yellow card uncorrected"),
        Rule(R05, "step overdue", "环节超时", "reminder", "step", "both", "step past its own limit"),
        Rule(R06, "fee violation", "违规收费", "red", "payment", "event", "fee on a free item or above standard"),
        Rule(R07, "repeated supplement", "多次补正", "yellow", "case", "event", "more than one supplement request"),
        Rule(R08, "refusal without reason", "不予许可未说明理由", "yellow", "case", "event", "refusal with no reason"),
        Rule(R09, "late entry", "延迟录入", "reminder", "step", "event", "step entered long after it happened"),
        Rule(R10, "complaint decision overdue", "投诉受理超时", "yellow", "complaint", "scan", "no accept/decline"),
        Rule(R11, "complaint handling overdue", "投诉办理超时", "yellow", "complaint", "scan", "accepted, not handled"),
        Rule(R12, "high return rate", "退件率较高", "yellow", "department", "scan", "30-day 退件率 above threshold"),
        Rule(R13, "evaluation follow-up late", "差评回访超时", "yellow", "evaluation", "scan", "follow-up still open"),
        Rule(R14, "limit needs explanation", "承诺时限未说明", "reminder", "item", "both", "promised > half legal"),
        Rule(
            R15, "directive response late", "督办逾期未答复", "yellow", "directive", "scan", "no response by due time"
        ),
    )
}
ALL_RULE_IDS: tuple[str, ...] = tuple(RULES)


def case_subject(case_no: str) -> str:
    """Alert subject of a case-level rule: ``case:NO``."""
    return f"case:{case_no}"


def step_subject(case_no: str, step_id: int) -> str:
    """Alert subject of a step-level rule: ``case:NO:step:ID``."""
    return f"case:{case_no}:step:{step_id}"


def completion_subject(case_no: str) -> str:
    """Alert subject of a rule judged on a case's completion record (R06 from 是否收费): ``case:NO:completion``."""
    return f"case:{case_no}:completion"


def payment_subject(case_no: str, payment_id: int) -> str:
    """Alert subject of a fee rule: ``case:NO:payment:ID``."""
    return f"case:{case_no}:payment:{payment_id}"


def complaint_subject(complaint_no: str) -> str:
    """Alert subject of a complaint rule: ``complaint:NO``."""
    return f"complaint:{complaint_no}"


def department_period_subject(department: str, month: date) -> str:
    """Subject of a department rule judged once per month (R12): ``dept:NAME:YYYY-MM``."""
    return f"dept:{department}:{month:%Y-%m}"


def evaluation_subject(evaluation_id: int) -> str:
    """Subject of an evaluation follow-up rule (R13): ``evaluation:ID``."""
    return f"evaluation:{evaluation_id}"


def item_subject(implementation_code: str, version: int) -> str:
    """Alert subject of an item-level rule (R14), per version: ``item:CODE:version:N``."""
    return f"item:{implementation_code}:version:{version}"


def directive_subject(directive_id: str) -> str:
    """Alert subject of a directive rule (R15): ``directive:ID``."""
    return f"directive:{directive_id}"


def escalation_subject(yellow_subject: str, yellow_id: int) -> str:
    """Subject of the R04 red card escalating one yellow card: the yellow's subject plus ``:alert:ID``.

    Keyed by the yellow's id so two yellow cards on one case (e.g. R02 and R07) escalate separately.
    """
    return f"{yellow_subject}:alert:{yellow_id}"


@dataclass(frozen=True, slots=True)
class RuleSettings:
    """The resolved thresholds of one rule for one item type."""

    enabled: bool
    reminder_workdays: int
    supervision_workdays: int
    late_entry_hours: int
    max_supplements: int


@dataclass(frozen=True, slots=True)
class RuleGroup:
    """Item types sharing one rule's settings, for set-based evaluation.

    ``item_types`` lists the types of the group; when ``others`` is true the group is every type NOT in
    ``excluded_types`` (the default settings), so a scan needs one query per distinct setting, not per type.
    """

    settings: RuleSettings
    item_types: frozenset[str]
    others: bool
    excluded_types: frozenset[str]


def _apply(base: RuleSettings, override: RuleThreshold | None) -> RuleSettings:
    if override is None:
        return base
    return RuleSettings(
        enabled=base.enabled if override.enabled is None else override.enabled,
        reminder_workdays=base.reminder_workdays if override.reminder_workdays is None else override.reminder_workdays,
        supervision_workdays=(
            base.supervision_workdays if override.supervision_workdays is None else override.supervision_workdays
        ),
        late_entry_hours=base.late_entry_hours if override.late_entry_hours is None else override.late_entry_hours,
        max_supplements=base.max_supplements if override.max_supplements is None else override.max_supplements,
    )


class Thresholds:
    """Rule settings resolved per (rule, item type) from ``config.supervision``; validated once, then cached."""

    def __init__(self, config: SupervisionConfig) -> None:
        self.config = config
        _validate(config)
        self._defaults = RuleSettings(
            enabled=True,
            reminder_workdays=config.reminder_workdays,
            supervision_workdays=config.yellow_supervision_workdays,
            late_entry_hours=config.late_entry_hours,
            max_supplements=config.max_supplements,
        )
        self._per_rule = {rule_id: _apply(self._defaults, config.rules.get(rule_id)) for rule_id in ALL_RULE_IDS}
        self._cache: dict[tuple[str, str], RuleSettings] = {}

    @property
    def complaint_decision_workdays(self) -> int:
        """Working days to accept or decline a complaint (R10)."""
        return self.config.complaint_decision_workdays

    @property
    def complaint_handling_workdays(self) -> int:
        """Working days to handle an accepted complaint without its own limit (R11)."""
        return self.config.complaint_handling_workdays

    @property
    def evaluation_followup_workdays(self) -> int:
        """Working days after an evaluation rated 4–5 to close its follow-up (R13)."""
        return self.config.evaluation_followup_workdays

    def settings(self, rule_id: str, item_type_code: str = "") -> RuleSettings:
        """The settings of ``rule_id`` for an item type: defaults < rule override < item-type override."""
        key = (rule_id, item_type_code)
        cached = self._cache.get(key)
        if cached is None:
            base = self._per_rule[rule_id]
            per_type = self.config.item_types.get(item_type_code) if item_type_code else None
            cached = _apply(base, per_type.get(rule_id) if per_type else None)
            self._cache[key] = cached
        return cached

    def enabled(self, rule_id: str, item_type_code: str = "") -> bool:
        """Whether a rule applies to an item type."""
        return self.settings(rule_id, item_type_code).enabled

    def groups(self, rule_id: str) -> list[RuleGroup]:
        """Enabled setting groups of one rule: each overridden item type alone, then all other types together."""
        overridden = frozenset(t for t, rules in self.config.item_types.items() if rule_id in rules)
        groups: list[RuleGroup] = []
        default = self._per_rule[rule_id]
        if default.enabled:
            groups.append(RuleGroup(default, frozenset(), others=True, excluded_types=overridden))
        for item_type in sorted(overridden):
            settings = self.settings(rule_id, item_type)
            if settings.enabled:
                groups.append(RuleGroup(settings, frozenset({item_type}), others=False, excluded_types=frozenset()))
        return groups

    def fingerprint(self) -> int:
        """A stable 63-bit digest of every setting: a scan re-examines all cases when it changes."""
        document = json.dumps(self.config.model_dump(mode="json"), sort_keys=True)
        return int.from_bytes(hashlib.sha256(document.encode()).digest()[:8], "big") >> 1


def groups_condition(groups: list[RuleGroup], item_type: ColumnElement[str]) -> ColumnElement[bool]:
    """SQL condition: the row's item type belongs to one of the (enabled) groups."""
    conditions: list[ColumnElement[bool]] = []
    for group in groups:
        if group.others:
            conditions.append(not_(item_type.in_(sorted(group.excluded_types))) if group.excluded_types else true())
        else:
            conditions.append(item_type.in_(sorted(group.item_types)))
    if not conditions:
        return and_(true(), not_(true()))
    return or_(*conditions)


def _validate(config: SupervisionConfig) -> None:
    known = ", ".join(ALL_RULE_IDS)
    for rule_id in config.rules:
        if rule_id not in RULES:
            raise ConfigError(f"key 'supervision.rules.{rule_id}': unknown rule id (known: {known})")
    for item_type, rules in config.item_types.items():
        if not (len(item_type) == 2 and item_type.isdigit()):
            raise ConfigError(
                f"key 'supervision.item_types.{item_type}': item type code must be two digits (GB/T 39046 A.1)"
            )
        for rule_id in rules:
            if rule_id not in RULES:
                raise ConfigError(
                    f"key 'supervision.item_types.{item_type}.{rule_id}': unknown rule id (known: {known})"
                )
