"""The periodic 电子监察通报 in the console: the same files as ``supnet report`` (node.bulletin), for a chosen period.

``/report`` is the form (period: month, quarter, half-year, year or a range of days; level; format);
``/report/file?period=2026-11&level=children&format=html`` is the file itself — the print-ready HTML page (A4,
page breaks) shown in the browser, or the xlsx workbook / CSV as a download — so a bulletin can be bookmarked.
Level ``children`` reads the node's own database, ``subtree`` asks every node below through the console's
drill-down client, each answer verified, as ``supnet report --level subtree`` does.
"""

from __future__ import annotations

from starlette.responses import Response

from node.bulletin import (
    CSV_ENCODINGS,
    FORMATS,
    LEVELS,
    AskingSource,
    ReportPeriod,
    bulletin_file,
    gather_bulletin,
    report_period,
)
from node.errors import InvalidArgumentError
from node.web.core import Ctx, route

REPORT_FORMATS = ("html", "xlsx", "csv")  # node.bulletin.FORMATS, the print-ready page first
MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv",
}


def _period(ctx: Ctx) -> ReportPeriod:
    """The period the query asks for: ``from``/``to`` when both are given, else ``period``; by default this month."""
    period, day_from, day_to = ctx.arg("period"), ctx.arg("from"), ctx.arg("to")
    if day_from and day_to:  # the form sends its period field too: a range of days typed in is the choice
        period = ""
    if not (period or day_from or day_to):
        today = ctx.node.now().date()
        period = f"{today.year:04d}-{today.month:02d}"
    try:
        return report_period(period or None, day_from or None, day_to or None)
    except InvalidArgumentError as error:  # the CLI's option names are the form's fields here
        message = error.message.replace("--period", "period").replace("--from", "from").replace("--to", "to")
        raise InvalidArgumentError(message) from None


def _choice(ctx: Ctx, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = ctx.arg(name, default) or default
    if value not in allowed:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _period_params(period: ReportPeriod) -> dict[str, str]:
    if period.kind == "range":
        return {"from": period.first_day.isoformat(), "to": period.last_day.isoformat()}
    return {"period": period.label}


@route("/report")
def report_form(ctx: Ctx) -> Response:
    """Choose the period, level and format of the bulletin."""
    period = _period(ctx)
    return ctx.render(
        "report.html",
        period=period,
        period_text=ctx.arg("period") or ("" if ctx.arg("from") else period.label),
        day_from=ctx.arg("from"),
        day_to=ctx.arg("to"),
        level=_choice(ctx, "level", LEVELS, "children"),
        period_params=_period_params(period),
        levels=LEVELS,
        formats=REPORT_FORMATS,
    )


@route("/report/file")
def report_file(ctx: Ctx) -> Response:
    """The bulletin for the period as html (shown), xlsx or csv (downloaded); the same bytes as ``supnet report``."""
    period = _period(ctx)
    level = _choice(ctx, "level", LEVELS, "children")
    fmt = _choice(ctx, "format", FORMATS, "html")
    encoding = _choice(ctx, "encoding", CSV_ENCODINGS, "utf-8")
    source = AskingSource(ctx.console.client()) if level == "subtree" else None
    bulletin = gather_bulletin(ctx.node, period, level=level, source=source)
    content = bulletin_file(bulletin, fmt, encoding=encoding)
    media_type = MEDIA_TYPES[fmt]
    if fmt == "csv":
        media_type += f"; charset={encoding}"
    headers = {}
    if fmt != "html":
        name = f"bulletin-{ctx.console.node_id}-{period.label.replace('..', '_')}-{level}.{fmt}"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return ctx.finish(Response(content, media_type=media_type, headers=headers))
