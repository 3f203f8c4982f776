"""What the pages show, derived from drill-down answers: periods, rates, traffic lights, sortable rows, charts.

Rates come from summed counters through node.supervision.derived_rates (one definition, docs/domain.md §6), never
averaged. A traffic light compares a rate with its target (``[web]`` targets; 退件率 with the R12 threshold of
``[supervision]``): past it red, within ``MARGIN`` of it yellow, else green; freshness is red for a child whose
latest report is stale, yellow when some node below it has not reported in the window.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from federation.proto.v1 import drilldown_pb2 as dd
from node.config import NodeConfig
from node.errors import InvalidArgumentError
from node.supervision import COUNTERS, derived_rates

MARGIN = 0.05
PRESETS = ("all", "month", "quarter", "year", "30d", "custom")
# Columns of the subordinates table: key, kind (count | rate | score), whether higher is better.
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("received", "count", True),
    ("completed", "count", True),
    ("early_rate", "rate", True),
    ("on_time_rate", "rate", True),
    ("return_rate", "rate", False),
    ("satisfaction_rate", "rate", True),
    ("complaint_acceptance_rate", "rate", True),
    ("complaint_closure_rate", "rate", True),
    ("open_overdue_promised", "count", False),
    ("open_overdue_legal", "count", False),
    ("yellow_cards", "count", False),
    ("red_cards", "count", False),
    ("score", "score", True),
)
METRIC_KEYS = tuple(key for key, _kind, _better in METRICS)


@dataclass(frozen=True)
class Period:
    """The period a page shows: a preset or a custom range of days (inclusive), as the query asks for it."""

    preset: str
    day_from: str
    day_to: str

    @property
    def days(self) -> int | None:
        if not self.day_from or not self.day_to:
            return None
        return (dt.date.fromisoformat(self.day_to) - dt.date.fromisoformat(self.day_from)).days + 1

    def params(self) -> dict[str, str]:
        """Query parameters that select this period again (bookmarkable)."""
        if self.preset == "custom":
            return {"period": "custom", "from": self.day_from, "to": self.day_to}
        return {} if self.preset == "all" else {"period": self.preset}


def _day(text: str, name: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise InvalidArgumentError(f"{name}: {text!r} is not a day YYYY-MM-DD") from None


def parse_period(preset: str, day_from: str, day_to: str, today: dt.date) -> Period:
    """The period of ``?period=&from=&to=``: all, this month, quarter or year, the last 30 days, or from–to."""
    if day_from or day_to:
        preset = "custom"
    preset = preset or "all"
    if preset not in PRESETS:
        raise InvalidArgumentError(f"period must be one of {', '.join(PRESETS)}, not {preset!r}")
    if preset == "custom":
        first = _day(day_from, "from") if day_from else ""
        last = _day(day_to, "to") if day_to else ""
        if first and last and first > last:
            raise InvalidArgumentError(f"from {first} is after to {last}")
        return Period("custom", first, last)
    if preset == "all":
        return Period("all", "", "")
    if preset == "30d":
        return Period("30d", (today - dt.timedelta(days=29)).isoformat(), today.isoformat())
    if preset == "month":
        start = today.replace(day=1)
    elif preset == "quarter":
        start = dt.date(today.year, (today.month - 1) // 3 * 3 + 1, 1)
    else:
        start = dt.date(today.year, 1, 1)
    return Period(preset, start.isoformat(), today.isoformat())


def counters_dict(counters: Any) -> dict[str, int]:
    """A Counters message as a plain mapping of every counter."""
    return {name: int(getattr(counters, name)) for name in COUNTERS}


def percent(value: float | None) -> str:
    """A rate as shown: one decimal and a per cent sign, or a dash without a denominator."""
    return "—" if value is None else f"{value * 100:.1f}%"


def local_time(ms: int, tz: ZoneInfo) -> str:
    """Unix milliseconds as the node's local date and time."""
    if not ms:
        return "—"
    return dt.datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M")


def light(config: NodeConfig, key: str, value: float | None) -> str:
    """green, yellow or red for a rate against its target; '' for a metric without one or no value."""
    if value is None:
        return ""
    web = config.web
    if key == "return_rate":  # lower is better; the R12 threshold
        limit = config.supervision.return_rate_threshold
        return "red" if value > limit else "yellow" if value > limit - MARGIN else "green"
    targets = {
        "on_time_rate": web.on_time_rate_target,
        "satisfaction_rate": web.satisfaction_rate_target,
        "complaint_closure_rate": web.complaint_closure_rate_target,
    }
    if key not in targets:
        return ""
    target = targets[key]
    return "red" if value < target else "yellow" if value < target + MARGIN else "green"


@dataclass
class UnitRow:
    """One row of the subordinates table: a child's subtree (or the node's own data) with its figures."""

    node_id: str
    label: str
    own: bool
    counters: dict[str, int]
    values: dict[str, float | int | None] = field(default_factory=dict)
    lights: dict[str, str] = field(default_factory=dict)
    freshness: str = ""
    last_report: str = "—"
    reported: str = ""
    has_children: bool = False

    def shown(self, key: str) -> str:
        """The value of a metric as shown in a cell."""
        value = self.values.get(key)
        kind = next(kind for name, kind, _better in METRICS if name == key)
        if value is None:
            return "—"
        if kind == "rate":
            return percent(float(value))
        if kind == "score":
            return f"{float(value):.1f}"
        return f"{int(value):,}"


def unit_rows(
    config: NodeConfig,
    summary: dd.SummaryAnswer,
    scores: Mapping[str, float | None],
    own_id: str,
    tz: ZoneInfo,
    *,
    stale_ids: frozenset[str] = frozenset(),
) -> list[UnitRow]:
    """Rows of a summary grouped by child (own data included), with rates, score and lights."""
    rows = []
    for row in summary.rows:
        counters = counters_dict(row.counters)
        unit = UnitRow(row.key, row.label or row.key, row.key == own_id, counters)
        rates = derived_rates(counters)
        for key, kind, _better in METRICS:
            if kind == "count":
                unit.values[key] = counters[key]
            elif kind == "rate":
                unit.values[key] = rates[key]
                unit.lights[key] = light(config, key, rates[key])
        unit.values["score"] = scores.get(row.key)
        if not unit.own:
            complete = row.completeness
            unit.reported = f"{complete.nodes_reported_in_window}/{complete.nodes_in_subtree}"
            unit.last_report = local_time(row.last_report_at_ms, tz)[5:] if row.last_report_at_ms else "—"
            unit.has_children = complete.nodes_in_subtree > 1
            if row.key in stale_ids or not row.last_report_at_ms:
                unit.freshness = "red"
            elif complete.nodes_reported_in_window < complete.nodes_in_subtree:
                unit.freshness = "yellow"
            else:
                unit.freshness = "green"
        rows.append(unit)
    return rows


def sort_rows(rows: list[UnitRow], key: str, descending: bool) -> list[UnitRow]:
    """Children sorted by one metric (no value last either way); the node's own row stays first."""
    if key not in METRIC_KEYS:
        raise InvalidArgumentError(f"sort must be one of {', '.join(METRIC_KEYS)}, not {key!r}")
    own = [row for row in rows if row.own]
    children = [row for row in rows if not row.own]
    present = [row for row in children if row.values.get(key) is not None]
    missing = [row for row in children if row.values.get(key) is None]
    present.sort(key=lambda row: (float(row.values[key] or 0), row.node_id), reverse=descending)
    return own + present + missing


def chart_json(option: Mapping[str, Any]) -> str:
    """An ECharts option as JSON for a ``<script type="application/json">`` block (no inline script needed)."""
    return json.dumps(option, ensure_ascii=False).replace("</", "<\\/")


def trend_option(rows: Sequence[dd.SummaryRow], labels: Mapping[str, str]) -> dict[str, Any]:
    """Cases received and completed per day or month, with the on-time rate on a second axis."""
    keys = [row.key for row in rows]
    received = [int(row.counters.received) for row in rows]
    completed = [int(row.counters.completed) for row in rows]
    on_time = []
    for row in rows:
        rate = derived_rates(counters_dict(row.counters))["on_time_rate"]
        on_time.append(None if rate is None else round(rate * 100, 1))
    return {
        "tooltip": {"trigger": "axis"},
        "legend": {"top": 0, "data": [labels["received"], labels["completed"], labels["on_time_rate"]]},
        "grid": {"left": 50, "right": 50, "top": 40, "bottom": 30},
        "xAxis": {"type": "category", "data": keys},
        "yAxis": [{"type": "value"}, {"type": "value", "max": 100, "axisLabel": {"formatter": "{value}%"}}],
        "series": [
            {"name": labels["received"], "type": "bar", "data": received},
            {"name": labels["completed"], "type": "bar", "data": completed},
            {"name": labels["on_time_rate"], "type": "line", "yAxisIndex": 1, "data": on_time},
        ],
    }


def bar_option(names: Sequence[str], values: Sequence[float | int | None], title: str) -> dict[str, Any]:
    """One horizontal bar per unit (the subordinates' sorted metric, red cards per child, ...)."""
    return {
        "tooltip": {"trigger": "axis"},
        "grid": {"left": 110, "right": 30, "top": 30, "bottom": 20},
        "title": {"text": title, "textStyle": {"fontSize": 13}},
        "xAxis": {"type": "value"},
        "yAxis": {"type": "category", "data": list(names), "inverse": True},
        "series": [{"type": "bar", "data": list(values)}],
    }


def gauge_option(reported: int, total: int, title: str) -> dict[str, Any]:
    """Reporting completeness as a gauge (nodes reported in the window ÷ nodes in the subtree)."""
    value = round(reported / total * 100, 1) if total else 0
    return {
        "series": [
            {
                "type": "gauge",
                "min": 0,
                "max": 100,
                "progress": {"show": True, "width": 14},
                "axisLine": {"lineStyle": {"width": 14}},
                "pointer": {"show": False},
                "axisTick": {"show": False},
                "splitLine": {"show": False},
                "axisLabel": {"show": False},
                "detail": {"formatter": f"{reported}/{total}", "fontSize": 22, "offsetCenter": [0, "0%"]},
                "title": {"offsetCenter": [0, "45%"], "fontSize": 12},
                "data": [{"value": value, "name": title}],
            }
        ]
    }
