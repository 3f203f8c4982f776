"""``supnet query TARGET_ID summary|ranking|cases|case|alerts|complaints|report``: drill-down for supervisors.

Run at your own node's data directory while it serves: the query is signed with the node's key, sent to the
local server and routed hop by hop to TARGET_ID (this node or a descendant); the answer comes back signed by
TARGET_ID. Tables for people, ``--json`` for scripts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import typer
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.table import Table

from federation.canonical import COUNTER_FIELDS, parse_body
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import Counters
from federation.proto.v1.report_pb2 import ReportBody
from node.cli.common import DataDir, JsonFlag, console, handle_errors, print_json
from node.drilldown.client import Answer, DrilldownClient
from node.errors import InvalidArgumentError

GROUPS: dict[str, dd.SummaryGroupBy.ValueType] = {
    "child": dd.SUMMARY_GROUP_BY_CHILD,
    "item": dd.SUMMARY_GROUP_BY_ITEM,
    "day": dd.SUMMARY_GROUP_BY_DAY,
    "month": dd.SUMMARY_GROUP_BY_MONTH,
}
METRICS: dict[str, dd.RankingMetric.ValueType] = {
    "early": dd.RANKING_METRIC_EARLY_COMPLETION_RATE,
    "on-time": dd.RANKING_METRIC_ON_TIME_RATE,
    "return": dd.RANKING_METRIC_RETURN_RATE,
    "satisfaction": dd.RANKING_METRIC_SATISFACTION_RATE,
    "complaint-closure": dd.RANKING_METRIC_COMPLAINT_CLOSURE_RATE,
    "overdue": dd.RANKING_METRIC_OPEN_OVERDUE_PROMISED,
    "overdue-legal": dd.RANKING_METRIC_OPEN_OVERDUE_LEGAL,
    "red": dd.RANKING_METRIC_RED_CARDS,
    "yellow": dd.RANKING_METRIC_YELLOW_CARDS,
}
RATE_METRICS: set[dd.RankingMetric.ValueType] = {
    dd.RANKING_METRIC_EARLY_COMPLETION_RATE,
    dd.RANKING_METRIC_ON_TIME_RATE,
    dd.RANKING_METRIC_RETURN_RATE,
    dd.RANKING_METRIC_SATISFACTION_RATE,
    dd.RANKING_METRIC_COMPLAINT_CLOSURE_RATE,
}

ChoiceT = TypeVar("ChoiceT")

Target = Annotated[str, typer.Argument(help="Node to ask: this node or a descendant, e.g. gd.gz.py.")]
Address = Annotated[
    str | None, typer.Option("--address", help="host:port of this node's server (default: from its serve.json).")
]
DayFrom = Annotated[str, typer.Option("--from", help="First day YYYY-MM-DD.")]
DayTo = Annotated[str, typer.Option("--to", help="Last day YYYY-MM-DD.")]
PageSize = Annotated[int, typer.Option("--page-size", help="Rows per page (0: the node's default).")]
PageToken = Annotated[str, typer.Option("--page-token", help="Continue from a previous answer's next page token.")]
AllPages = Annotated[bool, typer.Option("--all", help="Follow next page tokens to the end.")]


# --- formatting -----------------------------------------------------------------------------------


def counters_dict(counters: Counters) -> dict[str, int]:
    """Every counter by name."""
    return {name: int(getattr(counters, name)) for name in COUNTER_FIELDS}


def rates_of(counters: Counters) -> dict[str, float | None]:
    """The derived rates (node.supervision.metrics's definitions) of summed counters."""
    from node.supervision.metrics import derived_rates

    return derived_rates(counters_dict(counters))


def percent(value: float | None) -> str:
    """A rate as a percentage ('-' when undefined)."""
    return "-" if value is None else f"{value * 100:.1f}%"


def local_time(ms: int, tz: ZoneInfo, *, with_time: bool = True) -> str:
    """Unix ms as local 'YYYY-MM-DD HH:MM' (or just the day)."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")


def summary_table(answer: dd.SummaryAnswer, title: str) -> Table:
    """Grouped counters with their derived rates, and the total."""
    group = dd.SummaryGroupBy.Name(answer.group_by).removeprefix("SUMMARY_GROUP_BY_").lower()
    group = "node" if group == "child" else group
    table = Table(title=title, show_footer=True)
    table.add_column(group, footer="total")
    table.add_column("received", justify="right", footer=f"{answer.total.received:,}")
    table.add_column("completed", justify="right", footer=f"{answer.total.completed:,}")
    total_rates = rates_of(answer.total)
    for name, label in (("early_rate", "early"), ("on_time_rate", "on time"), ("return_rate", "returned")):
        table.add_column(label, justify="right", footer=percent(total_rates[name]))
    table.add_column("satisfied", justify="right", footer=percent(total_rates["satisfaction_rate"]))
    table.add_column("open overdue", justify="right", footer=f"{answer.total.open_overdue_promised:,}")
    table.add_column("yellow", justify="right", footer=f"{answer.total.yellow_cards:,}")
    table.add_column("red", justify="right", footer=f"{answer.total.red_cards:,}")
    if answer.group_by == dd.SUMMARY_GROUP_BY_CHILD:
        table.add_column(
            "reported",
            justify="right",
            footer=f"{answer.completeness.nodes_reported_in_window}/{answer.completeness.nodes_in_subtree}",
        )
    for row in answer.rows:
        rates = rates_of(row.counters)
        cells = [
            f"{row.key} {row.label}".strip(),
            f"{row.counters.received:,}",
            f"{row.counters.completed:,}",
            percent(rates["early_rate"]),
            percent(rates["on_time_rate"]),
            percent(rates["return_rate"]),
            percent(rates["satisfaction_rate"]),
            f"{row.counters.open_overdue_promised:,}",
            f"{row.counters.yellow_cards:,}",
            f"{row.counters.red_cards:,}",
        ]
        if answer.group_by == dd.SUMMARY_GROUP_BY_CHILD:
            done, total = row.completeness.nodes_reported_in_window, row.completeness.nodes_in_subtree
            cells.append(f"{done}/{total}" + ("" if done == total else " [yellow]stale[/]"))
        table.add_row(*cells)
    return table


def ranking_table(answer: dd.RankingAnswer, title: str) -> Table:
    """Ranked entries with the value, its numerator/denominator and report freshness."""
    metric = dd.RankingMetric.Name(answer.metric).removeprefix("RANKING_METRIC_").lower().replace("_", " ")
    table = Table(title=f"{title} — by {metric}")
    for column in ("rank", "node", metric, "of", "received", "red cards", "last report"):
        table.add_column(column, justify="right" if column not in ("node", "last report") else "left")
    for row in answer.rows:
        if answer.metric in RATE_METRICS:
            value = percent(row.value) if row.denominator else "-"
            of = f"{row.numerator:,}/{row.denominator:,}"
        else:
            value, of = f"{row.numerator:,}", ""
        report = f"#{row.last_report_sequence}" if row.last_report_sequence else "(own data)"
        if row.stale:
            report += " [yellow]stale[/]"
        node = f"{row.node_id} {row.label}".strip()
        table.add_row(str(row.rank), node, value, of, f"{row.counters.received:,}", str(row.counters.red_cards), report)
    return table


def cases_table(rows: Iterable[dd.CaseRow], title: str, tz: ZoneInfo) -> Table:
    """Cases with their deadlines and cards; applicants masked."""
    table = Table(title=title)
    for column in ("case", "item", "department", "applicant", "accepted", "promised by", "status", "cards"):
        table.add_column(column)
    for row in rows:
        status = row.status
        if row.overdue_legal:
            status += " [red]past legal[/]"
        elif row.overdue_promised:
            status += " [yellow]past promised[/]"
        if row.clock_stopped:
            status += " (clock stopped)"
        cards = " ".join(
            part
            for part in (
                f"[red]{row.red_cards} red[/]" if row.red_cards else "",
                f"[yellow]{row.yellow_cards} yellow[/]" if row.yellow_cards else "",
                f"{row.reminders} reminder(s)" if row.reminders else "",
            )
            if part
        )
        table.add_row(
            row.case_no,
            row.item_name or row.basic_code,
            row.department,
            row.applicant_masked,
            local_time(row.accepted_at_ms, tz, with_time=False),
            local_time(row.promised_due_at_ms, tz, with_time=False),
            status,
            cards or "-",
        )
    return table


def alerts_table(rows: Iterable[dd.AlertRow], title: str, tz: ZoneInfo) -> Table:
    """Alerts, newest first."""
    table = Table(title=title)
    for column in ("id", "rule", "severity", "status", "case", "department", "raised", "message"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.id),
            row.rule_id,
            row.severity,
            row.status,
            row.case_no or row.subject,
            row.department,
            local_time(row.raised_at_ms, tz),
            row.message,
        )
    return table


def complaints_table(rows: Iterable[dd.ComplaintRow], title: str, tz: ZoneInfo) -> Table:
    """Complaints, newest first; complainants masked."""
    table = Table(title=title)
    for column in ("complaint", "title", "complainant", "respondent", "status", "received", "finding"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.complaint_no,
            row.title,
            row.complainant_masked,
            row.respondent_unit,
            row.status,
            local_time(row.received_at_ms, tz),
            row.finding or "-",
        )
    return table


def print_case_detail(answer: dd.CaseDetailAnswer, tz: ZoneInfo, out: Console = console) -> None:
    """One case: its row, masked applicant, timeline and alerts (on ``out``, the CLI's console by default)."""
    out.print(cases_table([answer.case], f"case {answer.case.case_no}", tz))
    out.print(f"applicant ID ({answer.applicant_id_type or '-'}): {answer.applicant_id_masked or '-'}")
    timeline = Table(title="timeline")
    for column in ("when", "what", "event", "by", "detail"):
        timeline.add_column(column)
    for event in answer.timeline:
        timeline.add_row(local_time(event.at_ms, tz), event.kind, event.title, event.actor, event.detail)
    out.print(timeline)
    if answer.alerts:
        out.print(alerts_table(answer.alerts, "alerts on this case", tz))


def report_description(answer: dd.ReportAnswer) -> dict[str, Any]:
    """A stored report's header and totals (the envelope as signed by its author)."""
    envelope = answer.report
    body = parse_body(envelope, ReportBody)
    totals = dict.fromkeys(COUNTER_FIELDS, 0)
    for bucket in body.buckets:
        for name in COUNTER_FIELDS:
            totals[name] += int(getattr(bucket.counters, name))
    from federation.chain import report_digest

    return {
        "node_id": body.node_id,
        "sequence": body.sequence,
        "kind": "full" if body.kind == 2 else "incremental",
        "digest": report_digest(envelope).hex(),
        "previous_digest": body.previous_digest.hex(),
        "signed_by": envelope.signer_id,
        "key_id": envelope.key_id.hex(),
        "created_at_ms": body.created_at_ms,
        "window": [body.window_start_day, body.window_end_day] if body.window_start_day else [],
        "buckets": len(body.buckets),
        "child_reports": [
            {"child_id": ref.child_id, "sequence": ref.sequence, "digest": ref.digest.hex()}
            for ref in body.child_reports
        ],
        "completeness": {
            "nodes_in_subtree": body.completeness.nodes_in_subtree,
            "nodes_reported_in_window": body.completeness.nodes_reported_in_window,
        },
        "bucket_totals": totals,
    }


def answer_json(answers: list[Answer]) -> dict[str, Any]:
    """JSON form: the answer body (proto field names) plus who signed it and how it was checked."""
    first = answers[0]
    kind = first.kind
    payload: dict[str, Any] = {
        "target_id": first.body.target_id,
        "signed_by": first.envelope.signer_id,
        "verified": first.verified_by,
        "kind": kind,
    }
    if kind == "report":
        payload["report"] = report_description(first.body.report)
    elif len(answers) == 1:
        payload[kind] = MessageToDict(getattr(first.body, kind), preserving_proto_field_name=True)
    else:
        pages = [MessageToDict(getattr(a.body, kind), preserving_proto_field_name=True) for a in answers]
        merged: dict[str, Any] = {}
        for page in pages:
            for key, value in page.items():
                if isinstance(value, list):
                    merged.setdefault(key, []).extend(value)
                else:
                    merged[key] = value
        payload[kind] = merged
    payload["next_page_token"] = answers[-1].body.next_page_token
    return payload


# --- command plumbing -----------------------------------------------------------------------------


def _ask(
    data_dir: Any, address: str | None, target: str, *, all_pages: bool = False, **kwargs: Any
) -> tuple[list[Answer], ZoneInfo]:
    from node.app import open_node

    node = open_node(data_dir, migrate_schema=False)
    try:
        with DrilldownClient.for_node(node, address) as client:
            if all_pages:
                page_size = kwargs.pop("page_size", 0)
                kwargs.pop("page_token", None)
                answers = list(client.ask_pages(target, page_size=page_size, **kwargs))
            else:
                answers = [client.ask(target, **kwargs)]
        return answers, node.tz
    finally:
        node.close()


def _footer(answers: list[Answer]) -> None:
    last = answers[-1]
    console.print(f"[dim]answered by {last.envelope.signer_id}; {last.verified_by}[/]")
    if last.body.next_page_token:
        console.print(f"[dim]more: --page-token {last.body.next_page_token}  (or --all)[/]")


def _choice(value: str, choices: Mapping[str, ChoiceT], option: str) -> ChoiceT:
    if value not in choices:
        raise InvalidArgumentError(f"{option} must be one of {', '.join(choices)}, not {value!r}")
    return choices[value]


def register(app: typer.Typer) -> None:
    """Add ``supnet query ...``."""
    query = typer.Typer(
        help="Drill down to this node or any descendant: summary, ranking, cases, case, alerts, complaints, report.",
        no_args_is_help=True,
    )
    app.add_typer(query, name="query")

    @query.callback()
    def target_callback(ctx: typer.Context, target: Target) -> None:
        """TARGET_ID: the node that answers (this node or one below it)."""
        ctx.obj = {"target": target}

    @query.command("summary")
    @handle_errors
    def summary(
        ctx: typer.Context,
        *,
        data_dir: DataDir,
        by: Annotated[str, typer.Option("--by", help="child | item | day | month")] = "child",
        day_from: DayFrom = "",
        day_to: DayTo = "",
        item: Annotated[str, typer.Option("--item", help="National item basic code.")] = "",
        item_type: Annotated[str, typer.Option("--type", help="Item type code (A.1).")] = "",
        from_records: Annotated[
            bool, typer.Option("--from-records", help="Own data only, recomputed from raw records (audit).")
        ] = False,
        address: Address = None,
        json_output: JsonFlag = False,
    ) -> None:
        """Subtree totals grouped by child, item, day or month, with derived rates and reporting completeness."""
        target = ctx.obj["target"]
        request = dd.SummaryRequest(
            group_by=_choice(by, GROUPS, "--by"),
            day_from=day_from,
            day_to=day_to,
            basic_code=item,
            item_type_code=item_type,
            own_from_records=from_records,
        )
        answers, _tz = _ask(data_dir, address, target, all_pages=True, summary=request)
        if json_output:
            print_json(answer_json(answers))
            return
        merged = dd.SummaryAnswer()
        merged.CopyFrom(answers[0].body.summary)
        for extra in answers[1:]:
            merged.rows.extend(extra.body.summary.rows)
        console.print(summary_table(merged, f"{target}: subtree totals by {by}"))
        _footer(answers)

    @query.command("ranking")
    @handle_errors
    def ranking(
        ctx: typer.Context,
        *,
        data_dir: DataDir,
        metric: Annotated[str, typer.Option("--metric", help=" | ".join(METRICS))] = "early",
        day_from: DayFrom = "",
        day_to: DayTo = "",
        item: Annotated[str, typer.Option("--item", help="National item basic code.")] = "",
        worst_first: Annotated[bool, typer.Option("--worst-first", help="Worst first.")] = False,
        address: Address = None,
        json_output: JsonFlag = False,
    ) -> None:
        """Rank the target's children (and its own data) by a derived metric."""
        target = ctx.obj["target"]
        request = dd.RankingRequest(
            metric=_choice(metric, METRICS, "--metric"),
            day_from=day_from,
            day_to=day_to,
            basic_code=item,
            worst_first=worst_first,
        )
        answers, _tz = _ask(data_dir, address, target, ranking=request)
        if json_output:
            print_json(answer_json(answers))
            return
        console.print(ranking_table(answers[0].body.ranking, f"{target}: ranking of children"))
        _footer(answers)

    @query.command("cases")
    @handle_errors
    def cases(
        ctx: typer.Context,
        *,
        data_dir: DataDir,
        status: Annotated[str, typer.Option("--status", help="open | completed | any")] = "any",
        overdue: Annotated[bool, typer.Option("--overdue", help="Only cases past their promised limit.")] = False,
        red_card: Annotated[bool, typer.Option("--red-card", help="Only cases with a red card.")] = False,
        item: Annotated[str, typer.Option("--item", help="National item basic code.")] = "",
        department: Annotated[str, typer.Option("--department", help="Accepting department (exact).")] = "",
        day_from: DayFrom = "",
        day_to: DayTo = "",
        page_size: PageSize = 0,
        page_token: PageToken = "",
        all_pages: AllPages = False,
        address: Address = None,
        json_output: JsonFlag = False,
    ) -> None:
        """The target's own cases with filters (personal data masked), a page at a time."""
        target = ctx.obj["target"]
        statuses: dict[str, dd.CaseStatusFilter.ValueType] = {
            "any": dd.CASE_STATUS_FILTER_UNSPECIFIED,
            "open": dd.CASE_STATUS_FILTER_OPEN,
            "completed": dd.CASE_STATUS_FILTER_COMPLETED,
        }
        request = dd.CasesRequest(
            status=_choice(status, statuses, "--status"),
            overdue_only=overdue,
            red_card_only=red_card,
            basic_code=item,
            department=department,
            day_from=day_from,
            day_to=day_to,
        )
        answers, tz = _ask(
            data_dir, address, target, all_pages=all_pages, page_size=page_size, page_token=page_token, cases=request
        )
        if json_output:
            print_json(answer_json(answers))
            return
        rows = [row for answer in answers for row in answer.body.cases.cases]
        console.print(cases_table(rows, f"{target}: cases ({len(rows)} shown)", tz))
        _footer(answers)

    @query.command("case")
    @handle_errors
    def case(
        ctx: typer.Context,
        *,
        case_no: Annotated[str, typer.Argument(help="办件编号 of a case of the target node.")],
        data_dir: DataDir,
        address: Address = None,
        json_output: JsonFlag = False,
    ) -> None:
        """One case with its timeline and alerts; applicant data masked."""
        target = ctx.obj["target"]
        answers, tz = _ask(data_dir, address, target, case_detail=dd.CaseDetailRequest(case_no=case_no))
        if json_output:
            print_json(answer_json(answers))
            return
        print_case_detail(answers[0].body.case_detail, tz)
        _footer(answers)

    @query.command("alerts")
    @handle_errors
    def alerts(
        ctx: typer.Context,
        *,
        data_dir: DataDir,
        severity: Annotated[str, typer.Option("--severity", help="reminder | yellow | red")] = "",
        status: Annotated[str, typer.Option("--status", help="raised | notified | acknowledged | ...")] = "",
        open_only: Annotated[bool, typer.Option("--open", help="Only alerts not corrected.")] = False,
        case_no: Annotated[str, typer.Option("--case", help="Only this case.")] = "",
        department: Annotated[str, typer.Option("--department", help="Responsible department.")] = "",
        rule: Annotated[str, typer.Option("--rule", help="Rule id, e.g. R03.")] = "",
        day_from: DayFrom = "",
        day_to: DayTo = "",
        page_size: PageSize = 0,
        page_token: PageToken = "",
        all_pages: AllPages = False,
        address: Address = None,
        json_output: JsonFlag = False,
    ) -> None:
        """The target's own alerts, newest first."""
        target = ctx.obj["target"]
        request = dd.AlertsRequest(
            severity=severity,
            status=status,
            open_only=open_only,
            case_no=case_no,
            department=department,
            rule_id=rule,
            day_from=day_from,
            day_to=day_to,
        )
        answers, tz = _ask(
            data_dir, address, target, all_pages=all_pages, page_size=page_size, page_token=page_token, alerts=request
        )
        if json_output:
            print_json(answer_json(answers))
            return
        rows = [row for answer in answers for row in answer.body.alerts.alerts]
        console.print(alerts_table(rows, f"{target}: alerts ({len(rows)} shown)", tz))
        _footer(answers)

    @query.command("complaints")
    @handle_errors
    def complaints(
        ctx: typer.Context,
        *,
        data_dir: DataDir,
        status: Annotated[
            str, typer.Option("--status", help="received | accepted | declined | handled | concluded")
        ] = "",
        respondent: Annotated[str, typer.Option("--respondent", help="Respondent unit (exact).")] = "",
        overdue: Annotated[bool, typer.Option("--overdue", help="Only complaints past a limit.")] = False,
        day_from: DayFrom = "",
        day_to: DayTo = "",
        page_size: PageSize = 0,
        page_token: PageToken = "",
        all_pages: AllPages = False,
        address: Address = None,
        json_output: JsonFlag = False,
    ) -> None:
        """The target's own complaints, newest first (complainants masked)."""
        target = ctx.obj["target"]
        request = dd.ComplaintsRequest(
            status=status, respondent_unit=respondent, overdue_only=overdue, day_from=day_from, day_to=day_to
        )
        answers, tz = _ask(
            data_dir,
            address,
            target,
            all_pages=all_pages,
            page_size=page_size,
            page_token=page_token,
            complaints=request,
        )
        if json_output:
            print_json(answer_json(answers))
            return
        rows = [row for answer in answers for row in answer.body.complaints.complaints]
        console.print(complaints_table(rows, f"{target}: complaints ({len(rows)} shown)", tz))
        _footer(answers)

    @query.command("report")
    @handle_errors
    def report(
        ctx: typer.Context,
        *,
        data_dir: DataDir,
        node_id: Annotated[
            str, typer.Option("--node", help="Whose report: the target's own (default) or a child's.")
        ] = "",
        sequence: Annotated[int, typer.Option("--sequence", help="Report number; 0 = the latest.")] = 0,
        address: Address = None,
        json_output: JsonFlag = False,
    ) -> None:
        """A stored report exactly as signed by its author, for audit."""
        target = ctx.obj["target"]
        answers, _tz = _ask(
            data_dir, address, target, report=dd.ReportRequest(node_id=node_id or target, sequence=sequence)
        )
        description = report_description(answers[0].body.report)
        if json_output:
            print_json(answer_json(answers))
            return
        table = Table(title=f"report {description['node_id']} #{description['sequence']} (held by {target})")
        table.add_column("field")
        table.add_column("value")
        for key in ("kind", "digest", "previous_digest", "signed_by", "key_id", "buckets"):
            table.add_row(key, str(description[key]) or "-")
        completeness = description["completeness"]
        table.add_row("completeness", f"{completeness['nodes_reported_in_window']}/{completeness['nodes_in_subtree']}")
        for ref in description["child_reports"]:
            table.add_row("rolls up", f"{ref['child_id']} #{ref['sequence']} {ref['digest'][:12]}")
        totals = description["bucket_totals"]
        table.add_row("received (in these buckets)", f"{totals['received']:,}")
        table.add_row("completed (in these buckets)", f"{totals['completed']:,}")
        console.print(table)
        _footer(answers)
