"""``supnet query TARGET_ID summary|ranking|cases|case|alerts|complaints|report``: drill-down for supervisors.

Run at your own node's data directory while it serves: the query is signed with the node's key, sent to the
local server and routed hop by hop to TARGET_ID (this node or a descendant); the answer comes back signed by
TARGET_ID. Tables for people, ``--json`` for scripts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from federation.proto.v1 import drilldown_pb2 as dd
from node.cli.common import DataDir, JsonFlag, console, handle_errors, print_json
from node.cli.render import (
    alerts_table,
    answer_json,
    cases_table,
    complaints_table,
    print_case_detail,
    ranking_table,
    report_description,
    summary_table,
)
from node.drilldown import Answer, DrilldownClient
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
