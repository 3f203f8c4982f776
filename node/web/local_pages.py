"""Pages about this node's own records, read from its database.

Alerts (acknowledge, correct), complaints, evaluations, scores, the item catalogue, and the node's health
(outbox, reports, children, certificates).

Actions go through the same functions as ``supnet alerts ack|correct``, which audit them in their own
transaction; the console names the person (``web:NAME@NODE``) as the actor.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from sqlalchemy import func, select
from starlette.responses import Response

from federation import outbox_table
from federation.proto.v1 import drilldown_pb2 as dd
from node.errors import InvalidArgumentError
from node.reporting import children_status, node_outbox
from node.supervision import (
    PART_LABELS,
    STATUSES,
    acknowledge_alert,
    catalogue_figures,
    complaint_figures,
    correct_alert,
    evaluation_figures,
    list_alerts,
    list_complaints,
    list_evaluations,
    list_items,
    parse_period,
    scores_ranking,
)
from node.trust import load_certificates, pki_directory
from node.web.core import Ctx, route, together
from node.web.figures import bar_option, chart_json, percent

SEVERITIES = ("", "red", "yellow", "reminder")
LIST_LIMIT = 200


@route("/alerts")
def alerts(ctx: Ctx) -> Response:
    """The node's alerts, newest first: open ones by default; acknowledge and correct for those who may act."""
    severity = ctx.arg("severity")
    if severity not in SEVERITIES:
        raise InvalidArgumentError(f"severity must be red, yellow or reminder, not {severity!r}")
    show_all = ctx.arg("show") == "all"
    with ctx.node.engine.connect() as conn:
        rows = list_alerts(
            conn,
            open_only=not show_all,
            severity=severity or None,
            department=ctx.arg("department") or None,
            limit=LIST_LIMIT,
        )
    return ctx.render(
        "alerts.html", rows=rows, severity=severity, show_all=show_all, severities=SEVERITIES, message=ctx.arg("done")
    )


def _alert_id(text: str) -> int:
    if not text.isdigit():
        raise InvalidArgumentError(f"alert id {text!r} is not a number")
    return int(text)


def _back_to_alerts(ctx: Ctx, done: str) -> Response:
    back = ctx.form.get("back", "")
    target = back if back.startswith("/alerts") and "//" not in back else "/alerts"
    joiner = "&" if "?" in target else "?"
    return ctx.redirect(f"{target}{joiner}done={done}")


@route("/alerts/{alert_id}/ack", methods=("POST",), need="act")
def acknowledge(ctx: Ctx, alert_id: str) -> Response:
    """Acknowledge an alert (raised or notified → acknowledged), by the person logged in."""
    assert ctx.user is not None
    view = acknowledge_alert(ctx.node, _alert_id(alert_id), by=ctx.user.name, actor=ctx.actor)
    return _back_to_alerts(ctx, f"ack:{view.id}")


@route("/alerts/{alert_id}/correct", methods=("POST",), need="act")
def correct(ctx: Ctx, alert_id: str) -> Response:
    """Record an alert's correction (纠错) with the note the form carries (required)."""
    view = correct_alert(ctx.node, _alert_id(alert_id), ctx.form.get("note", ""), actor=ctx.actor)
    return _back_to_alerts(ctx, f"corrected:{view.id}")


@route("/complaints")
def complaints(ctx: Ctx) -> Response:
    """Complaints (效能投诉) with their figures: 受理率, 办结率, overdue decisions and handling."""
    status = ctx.arg("status")
    if status and status not in STATUSES:
        raise InvalidArgumentError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    overdue = ctx.arg("overdue") == "1"
    rows = list_complaints(ctx.node, status=status or None, overdue_only=overdue, limit=LIST_LIMIT)
    figures = complaint_figures(ctx.node)
    chart = chart_json(
        bar_option(
            [ctx.t(f"complaint.{name}") for name in STATUSES],
            [figures.by_status.get(name, 0) for name in STATUSES],
            ctx.t("complaints.by_status"),
        )
    )
    return ctx.render(
        "complaints.html",
        rows=rows,
        figures=figures,
        status_filter=status,
        statuses=STATUSES,
        overdue=overdue,
        percent=percent,
        chart_option=chart,
    )


@route("/evaluations")
def evaluations(ctx: Ctx) -> Response:
    """Evaluations (好差评): ratings 1–5, the satisfaction rate, follow-ups of 4–5 ratings."""
    open_only = ctx.arg("open") == "1"
    rows = list_evaluations(ctx.node, open_followups=open_only, limit=LIST_LIMIT)
    figures = evaluation_figures(ctx.node)
    chart = chart_json(
        bar_option(
            [ctx.t(f"rating.{code}") for code in range(1, 6)],
            [figures.ratings.get(code, 0) for code in range(1, 6)],
            ctx.t("evaluations.ratings"),
        )
    )
    return ctx.render(
        "evaluations.html", rows=rows, figures=figures, open_only=open_only, percent=percent, chart_option=chart
    )


def _default_score_period(ctx: Ctx) -> str:
    today = ctx.node.now().date()
    return f"{today.year:04d}"


@route("/scores")
def scores(ctx: Ctx) -> Response:
    """Efficiency scores (效能考评): the node's departments ranked, and its children ranked by signed drill-down."""
    period = ctx.arg("period") or _default_score_period(ctx)
    parsed = parse_period(period)

    def children() -> tuple[list[Any], str]:
        if not ctx.node.config.federation.children:
            return [], ""
        last_day = parsed.end_day - dt.timedelta(days=1)
        request = dd.RankingRequest(
            metric=dd.RANKING_METRIC_SCORE, day_from=parsed.first_day.isoformat(), day_to=last_day.isoformat()
        )
        answer = ctx.console.client().ask(ctx.console.node_id, ranking=request)
        return [row for row in answer.body.ranking.rows if row.denominator], answer.verified_by

    departments, (ranking, verified_by) = together(lambda: scores_ranking(ctx.node, parsed), children)
    chart = chart_json(
        bar_option(
            [entry.score.unit for entry in departments[:20]],
            [round(entry.score.score, 1) for entry in departments[:20]],
            ctx.t("scores.departments"),
        )
    )
    return ctx.render(
        "scores.html",
        period=period,
        departments=departments,
        ranking=ranking,
        parts=PART_LABELS,
        chart_option=chart,
        verified_by=verified_by,
    )


@route("/items")
def items(ctx: Ctx) -> Response:
    """The item catalogue (事项目录): items in force, retired, flagged (R14), compression of limits."""
    flagged = ctx.arg("flagged") == "1"
    rows = list_items(ctx.node, flagged_only=flagged)
    with ctx.node.engine.connect() as conn:
        figures = catalogue_figures(conn, ctx.node.now())
    return ctx.render("items.html", rows=rows[:LIST_LIMIT], total=len(rows), figures=figures, flagged=flagged)


def _certificates(ctx: Ctx) -> list[dict[str, Any]]:
    pki = pki_directory(ctx.node.data_dir)
    now = dt.datetime.now(dt.UTC)
    renew = dt.timedelta(days=ctx.node.config.federation.renew_before_days)
    shown = []
    for name in ("root.pem", "ca.pem", "tls.pem", "report.pem", "web.pem"):
        path = pki.file(name)
        if not path.exists():
            continue
        certificate: x509.Certificate = load_certificates(path)[0]
        end = certificate.not_valid_after_utc
        days = (end - now).total_seconds() / 86400
        state = "red" if end <= now else "yellow" if end - now <= renew else "green"
        subject = certificate.subject.rfc4514_string()
        shown.append({"file": name, "subject": subject, "until": end, "days": days, "state": state})
    return shown


@route("/health")
def health(ctx: Ctx) -> Response:
    """The node's health: outbox depth, last report sent and acknowledged, children's freshness, certificates."""
    node = ctx.node
    with node.engine.connect() as conn:
        pending = node_outbox(node).pending_count(conn)
        last = conn.execute(
            select(
                func.max(outbox_table.c.sequence),
                func.max(outbox_table.c.created_at),
                func.max(outbox_table.c.acked_at),
            )
        ).one()
        children = children_status(node, conn)
    federation = node.config.federation
    return ctx.render(
        "health.html",
        pending=pending,
        outbox_max=federation.outbox_max_reports,
        last_sequence=last[0],
        last_created=last[1],
        last_acked=last[2],
        has_parent=bool(federation.parent_address),
        children=children,
        certificates=_certificates(ctx),
        now=node.now(),
    )
