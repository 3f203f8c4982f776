"""A Bulletin laid out as sections in Simplified Chinese: what each sheet, CSV block and printed page shows.

Every figure is a field of the Bulletin (``supnet report --json``): counts as counted, rates as fractions derived
from the counts (written as percentages), scores to two decimals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.bulletin.model import Bulletin, Ranking, UnitFigures
from node.bulletin.tables import Chart, Column, Section, TableSpec
from node.supervision import ACTIVITY_METRICS

__all__ = ["ACTIVITY_LABELS", "COUNTER_LABELS", "RATE_LABELS", "bulletin_sections"]

COUNTER_LABELS: dict[str, str] = {
    "received": "受理件数",
    "completed": "办结件数",
    "completed_early": "提前办结件数",
    "completed_on_time": "按时办结件数",
    "open_overdue_promised": "超期未办结（承诺时限）",
    "open_overdue_legal": "超期未办结（法定时限）",
    "yellow_cards": "黄牌",
    "red_cards": "红牌",
    "cases_returned": "退件数",
    "records_reported": "上报数据",
    "complaints_received": "收到投诉",
    "complaints_accepted": "受理投诉",
    "complaints_concluded": "办结投诉",
    "complaints_substantiated": "投诉属实",
}
RATE_LABELS: dict[str, str] = {
    "early_rate": "提前办结率",
    "on_time_rate": "按时办结率",
    "return_rate": "退件率",
    "satisfaction_rate": "满意率",
    "complaint_acceptance_rate": "投诉受理率",
    "complaint_closure_rate": "投诉办结率",
}
ACTIVITY_LABELS: dict[str, str] = {
    "directives_received": "收到指令",
    "directives_acknowledged": "已签收",
    "directives_responded_on_time": "按时反馈",
    "directives_overdue": "逾期未反馈",
    "directives_closed": "已办结",
    "measures_recorded": "问责措施",
}
KIND_LABELS: dict[str, str] = {
    "supervise": "督办",
    "warning": "效能告诫书",
    "rectify": "整改通知",
    "bulletin": "通报",
}
PART_LABELS: dict[str, str] = {"supervision": "电子监察", "satisfaction": "群众满意度", "complaints": "效能投诉"}
SCOPE_LABELS = {"own": "本级", "subtree": "含下级"}
LEVEL_LABELS = {"children": "本级及直属下级", "subtree": "辖区全部单位（各单位本级数据）"}

UNIT_COUNTERS = (
    "received",
    "completed",
    "completed_early",
    "open_overdue_promised",
    "yellow_cards",
    "red_cards",
    "records_reported",
)
UNIT_RATES = ("early_rate", "on_time_rate", "return_rate", "satisfaction_rate")
DEPARTMENT_COUNTERS = (
    "received",
    "completed",
    "yellow_cards",
    "red_cards",
    "open_overdue_promised",
    "open_overdue_legal",
)
COMPLAINT_COUNTERS = ("complaints_received", "complaints_accepted", "complaints_concluded", "complaints_substantiated")
COMPLAINT_RATES = ("complaint_acceptance_rate", "complaint_closure_rate")


def _unit_name(unit: UnitFigures) -> str:
    return f"{unit.node_id} {unit.name}".strip()


def _unit_row(unit: UnitFigures) -> dict[str, Any]:
    return {
        "unit": _unit_name(unit),
        "scope": SCOPE_LABELS.get(unit.scope, unit.scope),
        **{name: unit.counters[name] for name in (*UNIT_COUNTERS, *COMPLAINT_COUNTERS)},
        **unit.rates,
        "reported": f"{unit.reported}/{unit.nodes}",
    }


def _overview(bulletin: Bulletin) -> Section:
    rates = bulletin.total_rates
    completeness = f"{bulletin.reported}/{bulletin.nodes}"
    intro = (
        f"单位：{bulletin.node_id} {bulletin.node_name}".rstrip(),
        f"通报期间：{bulletin.period.title}（{bulletin.period.first_day} 至 {bulletin.period.last_day}）",
        f"范围：{LEVEL_LABELS.get(bulletin.level, bulletin.level)}",
        f"报送完整率：{completeness} 个单位按时报送",
        f"生成时间：{bulletin.generated_at}",
    )
    counts = TableSpec(
        "主要指标",
        (Column("label", "指标"), Column("value", "数值", "int")),
        tuple({"key": key, "label": label, "value": bulletin.total[key]} for key, label in COUNTER_LABELS.items()),
    )
    rate_table = TableSpec(
        "主要比率（由计数求得）",
        (Column("label", "指标"), Column("value", "比率", "rate")),
        tuple({"key": key, "label": label, "value": rates[key]} for key, label in RATE_LABELS.items()),
    )
    return Section("overview", "概况", (counts, rate_table), intro)


def _units(bulletin: Bulletin) -> Section:
    columns = (
        Column("unit", "单位"),
        Column("scope", "范围"),
        *(Column(name, COUNTER_LABELS[name], "int") for name in UNIT_COUNTERS),
        *(Column(name, RATE_LABELS[name], "rate") for name in UNIT_RATES),
        Column("reported", "报送"),
    )
    footer = {
        "unit": "合计",
        "scope": "",
        **{name: bulletin.total[name] for name in UNIT_COUNTERS},
        **bulletin.total_rates,
        "reported": f"{bulletin.reported}/{bulletin.nodes}",
    }
    charts = (
        Chart("受理与办结件数", "unit", ("received", "completed")),
        Chart("提前办结率与按时办结率", "unit", ("early_rate", "on_time_rate")),
    )
    table = TableSpec("各单位受理办结情况", columns, tuple(_unit_row(u) for u in bulletin.units), charts, footer)
    return Section("units", "各单位指标", (table,))


def _ranking_table(ranking: Ranking) -> TableSpec:
    value_kind = {"rate": "rate", "score": "score"}.get(ranking.kind, "int")
    value_header = {"rate": "比率", "score": "得分"}.get(ranking.kind, "件数")
    columns: tuple[Column, ...] = (
        Column("rank", "名次", "int"),
        Column("unit", "单位"),
        Column("value", value_header, value_kind),
    )
    if ranking.kind == "rate":
        columns += (Column("numerator", "分子", "int"), Column("denominator", "分母", "int"))
    elif ranking.kind == "score":
        columns += (Column("numerator", "办件量", "int"),)
    rows = tuple(
        {
            "rank": entry.rank,
            "unit": f"{entry.node_id} {entry.name}".strip(),
            "value": entry.value,
            "numerator": entry.numerator,
            "denominator": entry.denominator,
        }
        for entry in ranking.entries
    )
    charts = (Chart(ranking.title, "unit", ("value",), "bar"),) if ranking.kind == "score" else ()
    return TableSpec(f"按{ranking.title}排名", columns, rows, charts)


def _rankings(bulletin: Bulletin) -> Section:
    intro = ("效能考评得分由各单位的汇总计数按本级考评办法逐月计算，不取下级得分的平均；比率均由计数求得。",)
    return Section("rankings", "排名", tuple(_ranking_table(r) for r in bulletin.rankings), intro)


def _scores(bulletin: Bulletin) -> Section:
    columns = (
        Column("rank", "名次", "int"),
        Column("department", "部门"),
        Column("score", "得分", "score"),
        Column("cases_handled", "办件量", "int"),
        *(Column(part, label, "score") for part, label in PART_LABELS.items()),
    )
    rows = tuple(
        {
            "rank": s.rank,
            "department": s.department,
            "score": s.score,
            "cases_handled": s.cases_handled,
            **{part: (round(s.parts[part], 2) if part in s.parts else None) for part in PART_LABELS},
        }
        for s in bulletin.department_scores
    )
    note = "" if rows else "本期各部门无办件。"
    charts = (Chart("各部门效能考评得分", "department", ("score",), "bar"),)
    table = TableSpec("本级各部门效能考评", columns, rows, charts, note=note)
    return Section("scores", "效能考评", (table,))


def _cards(bulletin: Bulletin) -> Section:
    columns = (
        Column("department", "部门"),
        *(Column(name, COUNTER_LABELS[name], "int") for name in DEPARTMENT_COUNTERS),
        Column("on_time_rate", RATE_LABELS["on_time_rate"], "rate"),
    )
    rows = tuple(
        {
            "department": d.department,
            **{n: d.counters[n] for n in DEPARTMENT_COUNTERS},
            "on_time_rate": d.rates["on_time_rate"],
        }
        for d in bulletin.departments
    )
    footer: dict[str, Any] = {"department": "合计"}
    for name in DEPARTMENT_COUNTERS:
        footer[name] = sum(d.counters[name] for d in bulletin.departments)
    charts = (Chart("各部门红黄牌与超期件", "department", ("red_cards", "yellow_cards", "open_overdue_promised")),)
    table = TableSpec("红黄牌与超期件（按部门，本级数据）", columns, rows, charts, footer)
    return Section("cards", "红黄牌与超期", (table,))


def _listed(total: int, shown: int, what: str) -> str:
    return f"共 {total} {what}，列出前 {shown} 条。" if total > shown else f"共 {total} {what}。"


def _red_cards(bulletin: Bulletin) -> Section:
    columns = (
        Column("alert_id", "监察编号", "int"),
        Column("rule_id", "规则"),
        Column("subject", "办件编号/对象"),
        Column("department", "部门"),
        Column("breached_at", "违规时间"),
        Column("status", "状态"),
        Column("message", "说明"),
    )
    rows = tuple(card.as_dict() for card in bulletin.red_cards)
    note = _listed(bulletin.red_cards_total, len(rows), "张红牌")
    return Section("red_cards", "红牌明细", (TableSpec("本期红牌（本级数据）", columns, rows, note=note),))


def _overdue(bulletin: Bulletin) -> Section:
    columns = (
        Column("case_no", "办件编号"),
        Column("item", "事项"),
        Column("department", "部门"),
        Column("accepted_at", "受理日期"),
        Column("promised_due_at", "承诺办结日期"),
        Column("past_legal", "超法定时限"),
    )
    rows = tuple({**case.as_dict(), "past_legal": "是" if case.past_legal else ""} for case in bulletin.overdue_cases)
    note = _listed(bulletin.overdue_cases_total, len(rows), "件超期未办结")
    table = TableSpec("本期受理、现已超过承诺时限的未办结件（本级数据）", columns, rows, note=note)
    return Section("overdue", "超期件明细", (table,))


def _complaints(bulletin: Bulletin) -> Section:
    columns = (
        Column("unit", "单位"),
        Column("scope", "范围"),
        *(Column(name, COUNTER_LABELS[name], "int") for name in COMPLAINT_COUNTERS),
        *(Column(name, RATE_LABELS[name], "rate") for name in COMPLAINT_RATES),
    )
    footer = {
        "unit": "合计",
        "scope": "",
        **{name: bulletin.total[name] for name in COMPLAINT_COUNTERS},
        **{name: bulletin.total_rates[name] for name in COMPLAINT_RATES},
    }
    charts = (Chart("投诉受理与办结", "unit", COMPLAINT_COUNTERS[:3]),)
    per_unit = TableSpec("各单位投诉办理情况", columns, tuple(_unit_row(u) for u in bulletin.units), charts, footer)
    now: Mapping[str, Any] = bulletin.complaints_now
    current = (
        ("received", "收到投诉（累计）"),
        ("accepted", "已受理（累计）"),
        ("concluded", "已办结（累计）"),
        ("substantiated", "属实"),
        ("with_accountability", "已问责"),
        ("decision_overdue", "超期未决定受理"),
        ("handling_overdue", "超期未办理"),
    )
    state = TableSpec(
        f"本级投诉当前状态（截至 {bulletin.generated_at}）",
        (Column("label", "项目"), Column("value", "件数", "int")),
        tuple({"key": key, "label": label, "value": int(now.get(key, 0))} for key, label in current),
    )
    return Section("complaints", "投诉办理", (per_unit, state))


def _directives(bulletin: Bulletin) -> Section:
    metrics = tuple(ACTIVITY_METRICS)
    own: dict[str, dict[str, Any]] = {}
    for count in bulletin.activity:
        row = own.setdefault(count.kind, {"kind": KIND_LABELS.get(count.kind, count.kind), **dict.fromkeys(metrics, 0)})
        row[count.metric] = row.get(count.metric, 0) + count.count
    columns = (Column("kind", "类别"), *(Column(m, ACTIVITY_LABELS.get(m, m), "int") for m in metrics))
    own_table = TableSpec(
        "本级收到的指令与问责（按类别）",
        columns,
        tuple(own[kind] for kind in sorted(own)),
        note="" if own else "本期无指令与问责记录。",
    )
    carried = [unit for unit in bulletin.units if unit.activity is not None]
    unit_columns = (Column("unit", "单位"), *(Column(m, ACTIVITY_LABELS.get(m, m), "int") for m in metrics))
    unit_rows = []
    for unit in carried:
        totals = dict.fromkeys(metrics, 0)
        for (metric, _kind), value in (unit.activity or {}).items():
            totals[metric] = totals.get(metric, 0) + value
        unit_rows.append({"unit": _unit_name(unit), **totals})
    missing = [unit.node_id for unit in bulletin.units if unit.activity is None]
    note = f"汇总查询尚未携带下级的指令与问责数：{'、'.join(missing)}。" if missing else ""
    per_unit = TableSpec("各单位指令与问责", unit_columns, tuple(unit_rows), note=note)
    intro = ("指令（督办、效能告诫书、整改通知、通报）在接收单位计数；问责措施按类别计数。",)
    return Section("directives", "督办与问责", (own_table, per_unit), intro)


def bulletin_sections(bulletin: Bulletin) -> list[Section]:
    """The sections of a bulletin, in print order."""
    return [
        _overview(bulletin),
        _units(bulletin),
        _rankings(bulletin),
        _scores(bulletin),
        _cards(bulletin),
        _red_cards(bulletin),
        _overdue(bulletin),
        _complaints(bulletin),
        _directives(bulletin),
    ]
