"""Pages built from signed drill-down answers: overview, subordinates (and below), cases, a case's timeline.

Each asks through the same DrilldownClient as ``supnet query`` — signed with the node's key, routed hop by hop,
the answer verified through its certificate chain before anything is shown — and says who signed what it shows.
URLs carry every choice (period, sort, filter, page), so a page can be bookmarked and shared.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from federation.proto.v1 import drilldown_pb2 as dd
from node.drilldown import Answer
from node.errors import InvalidArgumentError
from node.supervision import derived_rates, list_alerts
from node.web.core import Ctx, route, together
from node.web.directives_pages import issue_form_values, may_direct
from node.web.figures import (
    METRICS,
    Period,
    bar_option,
    chart_json,
    counters_dict,
    gauge_option,
    local_time,
    parse_period,
    percent,
    sort_rows,
    trend_option,
    unit_rows,
)

CASE_FILTERS = ("overdue", "red", "open", "all")
CASES_PAGE_SIZE = 50


def period_of(ctx: Ctx) -> Period:
    """The period the query string asks for (default: everything)."""
    return parse_period(ctx.arg("period"), ctx.arg("from"), ctx.arg("to"), ctx.node.now().date())


def _summary(ctx: Ctx, target: str, period: Period, group_by: int) -> dd.SummaryAnswer:
    request = dd.SummaryRequest(group_by=group_by, day_from=period.day_from, day_to=period.day_to)  # type: ignore[arg-type]
    merged = dd.SummaryAnswer()
    for index, answer in enumerate(ctx.console.client().ask_pages(target, summary=request)):
        if index == 0:
            merged.CopyFrom(answer.body.summary)
        else:
            merged.rows.extend(answer.body.summary.rows)
    return merged


def _scores(ctx: Ctx, target: str, period: Period) -> tuple[dict[str, float | None], frozenset[str], Answer]:
    """Each child's (and the node's own) efficiency score for the period, and which children are stale."""
    request = dd.RankingRequest(metric=dd.RANKING_METRIC_SCORE, day_from=period.day_from, day_to=period.day_to)
    answer = ctx.console.client().ask(target, ranking=request)
    rows = answer.body.ranking.rows
    scores = {row.node_id: (row.value if row.denominator else None) for row in rows}
    return scores, frozenset(row.node_id for row in rows if row.stale), answer


def _labels(ctx: Ctx) -> dict[str, str]:
    return {key: ctx.t(f"metric.{key}") for key in ("received", "completed", "on_time_rate")}


def _trend_group(ctx: Ctx, period: Period) -> tuple[str, int]:
    trend = ctx.arg("trend")
    if trend not in ("", "day", "month"):
        raise InvalidArgumentError(f"trend must be day or month, not {trend!r}")
    if not trend:
        days = period.days
        trend = "day" if days is not None and days <= 62 else "month"
    return trend, dd.SUMMARY_GROUP_BY_DAY if trend == "day" else dd.SUMMARY_GROUP_BY_MONTH


@route("/")
def home(ctx: Ctx) -> Response:
    return ctx.redirect("/overview")


@route("/overview")
def overview(ctx: Ctx) -> Response:
    """Own and subtree totals and rates for the period, trends, red cards and overdue cases now, completeness."""
    node_id = ctx.console.node_id
    period = period_of(ctx)
    trend, group = _trend_group(ctx, period)
    by_child, over_time = together(
        lambda: _summary(ctx, node_id, period, dd.SUMMARY_GROUP_BY_CHILD), lambda: _summary(ctx, node_id, period, group)
    )
    total = counters_dict(by_child.total)
    own_row = next((row for row in by_child.rows if row.key == node_id), None)
    own = counters_dict(own_row.counters) if own_row is not None else dict.fromkeys(total, 0)
    children = [row for row in by_child.rows if row.key != node_id]
    with ctx.node.engine.connect() as conn:
        red_now = list_alerts(conn, open_only=True, severity="red", limit=10)
    completeness = by_child.completeness
    charts = {
        "trend": chart_json(trend_option(over_time.rows, _labels(ctx))),
        "completeness": chart_json(
            gauge_option(completeness.nodes_reported_in_window, completeness.nodes_in_subtree, ctx.t("completeness"))
        ),
    }
    if children:
        charts["overdue"] = chart_json(
            bar_option(
                [row.label or row.key for row in children],
                [int(row.counters.open_overdue_promised) for row in children],
                ctx.t("chart.overdue_by_child"),
            )
        )
    return ctx.render(
        "overview.html",
        period=period,
        trend=trend,
        own=own,
        total=total,
        own_rates=derived_rates(own),
        total_rates=derived_rates(total),
        percent=percent,
        red_now=red_now,
        completeness=completeness,
        charts=charts,
        children=children,
    )


def _subordinate_rows(ctx: Ctx, target: str, period: Period) -> tuple[list[Any], dd.SummaryAnswer, Answer]:
    summary, (scores, stale, answer) = together(
        lambda: _summary(ctx, target, period, dd.SUMMARY_GROUP_BY_CHILD), lambda: _scores(ctx, target, period)
    )
    rows = unit_rows(ctx.node.config, summary, scores, target, ctx.node.tz, stale_ids=stale)
    return rows, summary, answer


def _sort_choice(ctx: Ctx) -> tuple[str, bool]:
    key = ctx.arg("sort", "open_overdue_promised")
    direction = ctx.arg("dir", "desc")
    if direction not in ("asc", "desc"):
        raise InvalidArgumentError(f"dir must be asc or desc, not {direction!r}")
    return key, direction == "desc"


@route("/nodes/{node_id}")
def subordinates(ctx: Ctx, node_id: str) -> Response:
    """Every child of ``node_id`` as a row (lights, sortable), its own data first; children drill further down."""
    period = period_of(ctx)
    sort_key, descending = _sort_choice(ctx)
    rows, summary, answer = _subordinate_rows(ctx, node_id, period)
    rows = sort_rows(rows, sort_key, descending)
    children = [row for row in rows if not row.own]
    chart = None
    if children:
        chart = chart_json(
            bar_option(
                [row.label for row in children],
                [_chart_value(row.values.get(sort_key)) for row in children],
                ctx.t(f"metric.{sort_key}"),
            )
        )
    return ctx.render(
        "subordinates.html",
        target=node_id,
        rows=rows,
        metrics=METRICS,
        sort_key=sort_key,
        descending=descending,
        period=period,
        completeness=summary.completeness,
        chart_option=chart,
        verified_by=answer.verified_by,
        signer=answer.envelope.signer_id,
        path=_path(node_id, ctx.console.node_id),
        may_direct=may_direct(ctx, node_id),
    )


def _chart_value(value: float | int | None) -> float | int | None:
    if isinstance(value, float):
        return round(value * 100, 1) if value <= 1 else round(value, 1)
    return value


@route("/nodes/{node_id}/rows")
def subordinate_rows(ctx: Ctx, node_id: str) -> Response:
    """The children rows of ``node_id`` alone (htmx: a row expanded in place, one level further down)."""
    period = period_of(ctx)
    sort_key, descending = _sort_choice(ctx)
    rows, _summary_answer, _answer = _subordinate_rows(ctx, node_id, period)
    rows = [row for row in sort_rows(rows, sort_key, descending) if not row.own]
    depth = node_id.count(".") - ctx.console.node_id.count(".") + 1
    return ctx.render("subordinate_rows.html", rows=rows, metrics=METRICS, period=period, depth=depth)


def _path(node_id: str, root: str) -> list[str]:
    """The nodes from this console's node down to ``node_id`` (breadcrumbs)."""
    parts = node_id.split(".")
    depth = root.count(".") + 1
    return [".".join(parts[:n]) for n in range(depth, len(parts) + 1)]


@route("/nodes/{node_id}/cases")
def cases(ctx: Ctx, node_id: str) -> Response:
    """The node's own cases (overdue, red-carded, open or all), a page at a time, applicants masked."""
    which = ctx.arg("filter", "overdue")
    if which not in CASE_FILTERS:
        raise InvalidArgumentError(f"filter must be one of {', '.join(CASE_FILTERS)}, not {which!r}")
    period = period_of(ctx)
    request = dd.CasesRequest(
        status=dd.CASE_STATUS_FILTER_OPEN if which in ("overdue", "open") else dd.CASE_STATUS_FILTER_UNSPECIFIED,
        overdue_only=which == "overdue",
        red_card_only=which == "red",
        department=ctx.arg("department"),
        day_from=period.day_from,
        day_to=period.day_to,
    )
    answer = ctx.console.client().ask(node_id, page_size=CASES_PAGE_SIZE, page_token=ctx.arg("page"), cases=request)
    tz = ctx.node.tz
    return ctx.render(
        "cases.html",
        target=node_id,
        which=which,
        filters=CASE_FILTERS,
        rows=list(answer.body.cases.cases),
        next_page=answer.body.next_page_token,
        when=lambda ms: local_time(ms, tz),
        period=period,
        verified_by=answer.verified_by,
        signer=answer.envelope.signer_id,
        path=_path(node_id, ctx.console.node_id),
        department=ctx.arg("department"),
        may_direct=may_direct(ctx, node_id),
    )


@route("/nodes/{node_id}/cases/{case_no:path}")
def case_detail(ctx: Ctx, node_id: str, case_no: str) -> Response:
    """One case: its figures, its timeline and alerts, personal data masked by the answering node."""
    answer = ctx.console.client().ask(node_id, case_detail=dd.CaseDetailRequest(case_no=case_no))
    detail = answer.body.case_detail
    tz = ctx.node.tz
    # A supervisor directs this case's unit from here when it is below this node (never the node itself).
    issuing = issue_form_values(ctx, node_id, case=case_no) if may_direct(ctx, node_id) else {}
    return ctx.render(
        "case.html",
        target=node_id,
        detail=detail,
        case=detail.case,
        when=lambda ms: local_time(ms, tz),
        verified_by=answer.verified_by,
        signer=answer.envelope.signer_id,
        path=_path(node_id, ctx.console.node_id),
        **issuing,
    )
