"""``supnet query TARGET_ID summary|ranking|cases|case|alerts|complaints|directives|report``: drill-down.

Run at your own node's data directory while it serves: the query is signed with the node's key, sent to the
local server and routed hop by hop to TARGET_ID (this node or a descendant); the answer comes back signed by
TARGET_ID. Tables for people, ``--json`` for scripts. ``--subtree`` (cases, alerts, complaints, directives,
ranking) searches every node of TARGET_ID's subtree at once instead (node.cli.query_subtree).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1 import subtree_pb2 as st
from node.cli.common import DataDir, JsonFlag, console, handle_errors, print_json
from node.cli.query_subtree import SubtreeScope, run_subtree, since_day
from node.cli.render import (
    activity_table,
    alerts_table,
    answer_json,
    cases_table,
    complaints_table,
    print_case_detail,
    print_table,
    ranking_table,
    registers_table,
    report_table,
    summary_table,
)
from node.cli.tabular import EncodingOption, FormatOption, OutOption, TableOutput, WideFlag, tabular_format
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
    "complaint-acceptance": dd.RANKING_METRIC_COMPLAINT_ACCEPTANCE_RATE,
    "complaint-closure": dd.RANKING_METRIC_COMPLAINT_CLOSURE_RATE,
    "overdue": dd.RANKING_METRIC_OPEN_OVERDUE_PROMISED,
    "overdue-legal": dd.RANKING_METRIC_OPEN_OVERDUE_LEGAL,
    "red": dd.RANKING_METRIC_RED_CARDS,
    "yellow": dd.RANKING_METRIC_YELLOW_CARDS,
    "score": dd.RANKING_METRIC_SCORE,
    "directives-overdue": dd.RANKING_METRIC_DIRECTIVES_OVERDUE,
}
ChoiceT = TypeVar("ChoiceT")
Show = Callable[[list[Answer], ZoneInfo], None]
RowsTable = Callable[..., Table]

Target = Annotated[str, typer.Argument(help="Node to ask: this node or a descendant, e.g. gd.gz.py.")]
Address = Annotated[
    str | None, typer.Option("--address", help="host:port of this node's server (default: from its serve.json).")
]
DayFrom = Annotated[str, typer.Option("--from", help="First day YYYY-MM-DD.")]
DayTo = Annotated[str, typer.Option("--to", help="Last day YYYY-MM-DD.")]
PageSize = Annotated[int, typer.Option("--page-size", help="Rows per page (0: the node's default).")]
PageToken = Annotated[str, typer.Option("--page-token", help="Continue from a previous answer's next page token.")]
AllPages = Annotated[bool, typer.Option("--all", help="Follow next page tokens to the end.")]
Since = Annotated[str, typer.Option("--since", help="Since N days ago (7d) or a day YYYY-MM-DD; --from wins.")]
SubtreeFlag = Annotated[
    bool, typer.Option("--subtree", help="全辖区: search every node of TARGET's subtree at once (signed parts).")
]
Deadline = Annotated[float, typer.Option("--deadline", help="Subtree search: seconds for the whole search.")]
Limit = Annotated[int, typer.Option("--limit", help="Subtree search: at most this many rows (0: 10000).")]
Resume = Annotated[str, typer.Option("--resume", help="Subtree search: continue after a limit (token it printed).")]


# --- the options the subcommands share -------------------------------------------------------------


@dataclass(frozen=True)
class Asking:
    """What every subcommand is told: the node that asks (its data directory), its server, tables or JSON."""

    data_dir: Path
    address: str | None
    json_output: bool
    output: TableOutput = field(default_factory=TableOutput)


@dataclass(frozen=True)
class Pages:
    """Which pages of an answer to fetch: one (the first, or the one a token continues from) or every page."""

    size: int = 0
    token: str = ""
    every: bool = False


@dataclass(frozen=True)
class Listing:
    """What every listing (cases, alerts, complaints) is told besides: the day range and the pages to fetch."""

    day_from: str
    day_to: str
    pages: Pages


def _option(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


# In the order --help lists them: --data-dir first, a listing's day range and paging, --address and --json last.
_ASKING_FIRST = (_option("data_dir", DataDir),)
_LISTING = (
    _option("day_from", DayFrom, ""),
    _option("day_to", DayTo, ""),
    _option("page_size", PageSize, 0),
    _option("page_token", PageToken, ""),
    _option("all_pages", AllPages, False),
)
_SUBTREE = (
    _option("subtree", SubtreeFlag, False),
    _option("since", Since, ""),
    _option("deadline", Deadline, 5.0),
    _option("limit", Limit, 0),
    _option("resume", Resume, ""),
)
_ASKING_LAST = (
    _option("address", Address, None),
    _option("json_output", JsonFlag, False),
    _option("fmt", FormatOption, None),
    _option("out", OutOption, None),
    _option("encoding", EncodingOption, "utf-8"),
    _option("wide", WideFlag, False),
)


def _subcommand(
    query: typer.Typer, name: str, *, listing: bool = False, subtree: bool = False
) -> Callable[[Callable[..., None]], None]:
    """Register ``func(target, asking, [listing,] *, own options)`` as ``supnet query TARGET name``.

    Typer reads a command's options from its signature: the shared ones are added to the signature here and
    come to ``func`` bundled as an :class:`Asking` (and a :class:`Listing`), so each is written once. With
    ``subtree``, the subtree-search options come as ``scope=`` (a SubtreeScope; --since folds into the listing).
    """

    def register(func: Callable[..., None]) -> None:
        own = [
            parameter
            for parameter in list(inspect.signature(func, eval_str=True).parameters.values())[3 if listing else 2 :]
            if parameter.name != "scope"
        ]
        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)

        @functools.wraps(func)
        def command(ctx: typer.Context, **options: Any) -> None:
            output = TableOutput(options.pop("fmt"), options.pop("out"), options.pop("encoding"), options.pop("wide"))
            asking = Asking(options.pop("data_dir"), options.pop("address"), options.pop("json_output"), output)
            since = ""
            if subtree:
                since = options.pop("since")
                options["scope"] = SubtreeScope(
                    enabled=options.pop("subtree"),
                    deadline=options.pop("deadline"),
                    limit=options.pop("limit"),
                    resume=options.pop("resume"),
                    page_size=options.get("page_size", 0),
                    all_levels=options.pop("all_levels", False),
                    since_day=since_day(since, date.today()),
                )
            if not listing:
                func(ctx.obj["target"], asking, **options)
                return
            pages = Pages(options.pop("page_size"), options.pop("page_token"), options.pop("all_pages"))
            day_from = options.pop("day_from") or (options["scope"].since_day if subtree else "")
            func(ctx.obj["target"], asking, Listing(day_from, options.pop("day_to"), pages), **options)

        shared = (*(_LISTING if listing else ()), *(_SUBTREE if subtree else ()))
        signature = inspect.Signature([context, *_ASKING_FIRST, *own, *shared, *_ASKING_LAST])
        command.__signature__ = signature  # type: ignore[attr-defined]
        query.command(name)(handle_errors(command))

    return register


# --- asking and showing ----------------------------------------------------------------------------


def _ask(target: str, asking: Asking, pages: Pages, **request: Any) -> tuple[list[Answer], ZoneInfo]:
    from node.app import open_node

    node = open_node(asking.data_dir, migrate_schema=False)
    try:
        with DrilldownClient.for_node(node, asking.address) as client:
            if pages.every:
                answers = list(client.ask_pages(target, page_size=pages.size, **request))
            else:
                answers = [client.ask(target, page_size=pages.size, page_token=pages.token, **request)]
        return answers, node.tz
    finally:
        node.close()


def _footer(answers: list[Answer]) -> None:
    last = answers[-1]
    console.print(f"[dim]answered by {last.envelope.signer_id}; {last.verified_by}[/]")
    if last.body.next_page_token:
        console.print(f"[dim]more: --page-token {last.body.next_page_token}  (or --all)[/]")


def _ask_and_show(target: str, asking: Asking, show: Show, pages: Pages = Pages(), **request: Any) -> None:
    """Ask ``target``; print the answers as one JSON object (--json) or as ``show`` prints them, then who signed."""
    tabular_format(asking.output.fmt, asking.output.out, as_json=asking.json_output)
    answers, tz = _ask(target, asking, pages, **request)
    payload = answer_json(answers)
    if asking.output.emit(answer_records(payload), title=f"{target} {payload['kind']}"):
        return
    if asking.json_output:
        print_json(payload)
        return
    show(answers, tz)
    _footer(answers)


def _ask_and_list(
    target: str, asking: Asking, listing: Listing, table: RowsTable, scope: SubtreeScope | None = None, **request: Any
) -> None:
    """A listing (``request``: cases=, alerts= or complaints=): the rows of every page fetched in one table.

    With ``--subtree`` (``scope``), one search over every node of TARGET's subtree instead.
    """
    [kind] = request
    if scope is not None and scope.enabled:
        run_subtree(
            target,
            kind,
            request[kind],
            scope,
            data_dir=asking.data_dir,
            address=asking.address,
            json_output=asking.json_output,
            wide=asking.output.wide,
        )
        return

    def show(answers: list[Answer], tz: ZoneInfo) -> None:
        rows = [row for answer in answers for row in getattr(getattr(answer.body, kind), kind)]
        wide = asking.output.wide
        print_table(table(rows, f"{target}: {kind} ({len(rows)} shown)", tz, width=console.width, wide=wide))

    _ask_and_show(target, asking, show, listing.pages, **request)


def answer_records(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of an answer's JSON form (what --format writes): its listed rows, or the answer as one row."""
    body = payload.get(payload["kind"])
    if isinstance(body, dict):
        for key in ("rows", "cases", "alerts", "complaints", "timeline"):
            if isinstance(body.get(key), list):
                return [row for row in body[key] if isinstance(row, dict)]
        return [body]
    return [{key: value for key, value in payload.items() if key != "next_page_token"}]


def _choice(value: str, choices: Mapping[str, ChoiceT], option: str) -> ChoiceT:
    if value not in choices:
        raise InvalidArgumentError(f"{option} must be one of {', '.join(choices)}, not {value!r}")
    return choices[value]


# --- the subcommands -------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add ``supnet query ...``."""
    query = typer.Typer(
        help=(
            "Drill down to this node or any descendant: summary, ranking, cases, case, alerts, complaints, report; "
            "--subtree searches every node below at once (cases, alerts, complaints, directives, ranking)."
        ),
        no_args_is_help=True,
    )
    app.add_typer(query, name="query")

    @query.callback()
    def target_callback(ctx: typer.Context, target: Target) -> None:
        """TARGET_ID: the node that answers (this node or one below it)."""
        ctx.obj = {"target": target}

    @_subcommand(query, "summary")
    def summary(
        target: str,
        asking: Asking,
        *,
        by: Annotated[str, typer.Option("--by", help="child | item | day | month")] = "child",
        day_from: DayFrom = "",
        day_to: DayTo = "",
        item: Annotated[str, typer.Option("--item", help="National item basic code.")] = "",
        item_type: Annotated[str, typer.Option("--type", help="Item type code (A.1).")] = "",
        from_records: Annotated[
            bool, typer.Option("--from-records", help="Own data only, recomputed from raw records (audit).")
        ] = False,
    ) -> None:
        """Subtree totals grouped by child, item, day or month, with derived rates and reporting completeness."""
        request = dd.SummaryRequest(
            group_by=_choice(by, GROUPS, "--by"),
            day_from=day_from,
            day_to=day_to,
            basic_code=item,
            item_type_code=item_type,
            own_from_records=from_records,
        )

        def show(answers: list[Answer], _tz: ZoneInfo) -> None:
            merged = dd.SummaryAnswer()
            merged.CopyFrom(answers[0].body.summary)
            for extra in answers[1:]:
                merged.rows.extend(extra.body.summary.rows)
            wide = asking.output.wide
            print_table(summary_table(merged, f"{target}: subtree totals by {by}", wide=wide))
            if merged.group_by == dd.SUMMARY_GROUP_BY_CHILD:
                title = f"{target}: records reported (上报数据) and item registers"
                print_table(registers_table(merged, title, wide=wide))
                period = f"{day_from or '…'} – {day_to or '…'}"
                print_table(activity_table(merged, f"{target}: directives (督办) and accountability (问责), {period}"))

        _ask_and_show(target, asking, show, Pages(every=True), summary=request)

    @_subcommand(query, "ranking", subtree=True)
    def ranking(
        target: str,
        asking: Asking,
        *,
        metric: Annotated[str, typer.Option("--metric", help=" | ".join(METRICS))] = "early",
        day_from: DayFrom = "",
        day_to: DayTo = "",
        item: Annotated[str, typer.Option("--item", help="National item basic code.")] = "",
        worst_first: Annotated[bool, typer.Option("--worst-first", help="Worst first.")] = False,
        all_levels: Annotated[
            bool, typer.Option("--all-levels", help="With --subtree: rank every node, not only the streets.")
        ] = False,
        scope: SubtreeScope | None = None,
    ) -> None:
        """Rank the target's children (and its own data) by a derived metric; --subtree: every street below it."""
        del all_levels  # folded into scope
        request = dd.RankingRequest(
            metric=_choice(metric, METRICS, "--metric"),
            day_from=day_from or (scope.since_day if scope is not None else ""),
            day_to=day_to,
            basic_code=item,
            worst_first=worst_first,
        )
        if scope is not None and scope.enabled:
            run_subtree(
                target,
                "ranking",
                request,
                scope,
                data_dir=asking.data_dir,
                address=asking.address,
                json_output=asking.json_output,
                wide=asking.output.wide,
            )
            return

        def show(answers: list[Answer], _tz: ZoneInfo) -> None:
            title = f"{target}: ranking of children"
            print_table(ranking_table(answers[0].body.ranking, title, wide=asking.output.wide))

        _ask_and_show(target, asking, show, ranking=request)

    @_subcommand(query, "directives", subtree=True)
    def directives(
        target: str,
        asking: Asking,
        *,
        role: Annotated[str, typer.Option("--role", help="received | issued (default: both).")] = "",
        open_only: Annotated[bool, typer.Option("--open", help="Only directives not closed.")] = False,
        overdue: Annotated[bool, typer.Option("--overdue", help="Only overdue directives.")] = False,
        scope: SubtreeScope | None = None,
    ) -> None:
        """Directives (督办) held by every node of the subtree (needs --subtree)."""
        if scope is None or not scope.enabled:
            raise InvalidArgumentError("directives 只能全辖区查询，请加 --subtree (directives are a subtree search)")
        if role not in ("", "received", "issued"):
            raise InvalidArgumentError(f"--role must be received or issued, not {role!r}")
        request = st.SubtreeDirectivesRequest(role=role, open_only=open_only, overdue_only=overdue)
        run_subtree(
            target,
            "directives",
            request,
            scope,
            data_dir=asking.data_dir,
            address=asking.address,
            json_output=asking.json_output,
            wide=asking.output.wide,
        )

    @_subcommand(query, "cases", listing=True, subtree=True)
    def cases(
        target: str,
        asking: Asking,
        listing: Listing,
        *,
        status: Annotated[str, typer.Option("--status", help="open | completed | any")] = "any",
        overdue: Annotated[bool, typer.Option("--overdue", help="Only cases past their promised limit.")] = False,
        red_card: Annotated[bool, typer.Option("--red-card", help="Only cases with a red card.")] = False,
        item: Annotated[str, typer.Option("--item", help="National item basic code.")] = "",
        department: Annotated[str, typer.Option("--department", help="Accepting department (exact).")] = "",
        scope: SubtreeScope | None = None,
    ) -> None:
        """The target's own cases with filters (personal data masked), a page at a time."""
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
            day_from=listing.day_from,
            day_to=listing.day_to,
        )
        _ask_and_list(target, asking, listing, cases_table, scope, cases=request)

    @_subcommand(query, "case")
    def case(
        target: str,
        asking: Asking,
        *,
        case_no: Annotated[str, typer.Argument(help="办件编号 of a case of the target node.")],
    ) -> None:
        """One case with its timeline and alerts; applicant data masked."""

        def show(answers: list[Answer], tz: ZoneInfo) -> None:
            print_case_detail(answers[0].body.case_detail, tz, wide=asking.output.wide)

        _ask_and_show(target, asking, show, case_detail=dd.CaseDetailRequest(case_no=case_no))

    @_subcommand(query, "alerts", listing=True, subtree=True)
    def alerts(
        target: str,
        asking: Asking,
        listing: Listing,
        *,
        severity: Annotated[str, typer.Option("--severity", help="reminder | yellow | red")] = "",
        status: Annotated[str, typer.Option("--status", help="raised | notified | acknowledged | ...")] = "",
        open_only: Annotated[bool, typer.Option("--open", help="Only alerts not corrected.")] = False,
        case_no: Annotated[str, typer.Option("--case", help="Only this case.")] = "",
        department: Annotated[str, typer.Option("--department", help="Responsible department.")] = "",
        rule: Annotated[str, typer.Option("--rule", help="Rule id, e.g. R03.")] = "",
        scope: SubtreeScope | None = None,
    ) -> None:
        """The target's own alerts, newest first."""
        request = dd.AlertsRequest(
            severity=severity,
            status=status,
            open_only=open_only,
            case_no=case_no,
            department=department,
            rule_id=rule,
            day_from=listing.day_from,
            day_to=listing.day_to,
        )
        _ask_and_list(target, asking, listing, alerts_table, scope, alerts=request)

    @_subcommand(query, "complaints", listing=True, subtree=True)
    def complaints(
        target: str,
        asking: Asking,
        listing: Listing,
        *,
        status: Annotated[
            str, typer.Option("--status", help="received | accepted | declined | handled | concluded")
        ] = "",
        respondent: Annotated[str, typer.Option("--respondent", help="Respondent unit (exact).")] = "",
        overdue: Annotated[bool, typer.Option("--overdue", help="Only complaints past a limit.")] = False,
        scope: SubtreeScope | None = None,
    ) -> None:
        """The target's own complaints, newest first (complainants masked)."""
        request = dd.ComplaintsRequest(
            status=status,
            respondent_unit=respondent,
            overdue_only=overdue,
            day_from=listing.day_from,
            day_to=listing.day_to,
        )
        _ask_and_list(target, asking, listing, complaints_table, scope, complaints=request)

    @_subcommand(query, "report")
    def report(
        target: str,
        asking: Asking,
        *,
        node_id: Annotated[
            str, typer.Option("--node", help="Whose report: the target's own (default) or a child's.")
        ] = "",
        sequence: Annotated[int, typer.Option("--sequence", help="Report number; 0 = the latest.")] = 0,
    ) -> None:
        """A stored report exactly as signed by its author, for audit."""

        def show(answers: list[Answer], _tz: ZoneInfo) -> None:
            console.print(report_table(answers[0].body.report, target))

        _ask_and_show(target, asking, show, report=dd.ReportRequest(node_id=node_id or target, sequence=sequence))
