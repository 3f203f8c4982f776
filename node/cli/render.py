"""Rich tables and JSON forms of drill-down answers: what ``supnet query`` and the demo print."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from google.protobuf.json_format import MessageToDict
from rich.console import Console, JustifyMethod
from rich.errors import MarkupError
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from federation import COUNTER_FIELDS, counters_to_dict, parse_body, report_digest
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import Counters
from federation.proto.v1.report_pb2 import ReportBody
from node.cli.common import console
from node.supervision import MEASURES

if TYPE_CHECKING:  # only a type here: loading node.drilldown costs every command that renders a table
    from node.drilldown import Answer

RATE_METRICS: set[dd.RankingMetric.ValueType] = {
    dd.RANKING_METRIC_EARLY_COMPLETION_RATE,
    dd.RANKING_METRIC_ON_TIME_RATE,
    dd.RANKING_METRIC_RETURN_RATE,
    dd.RANKING_METRIC_SATISFACTION_RATE,
    dd.RANKING_METRIC_COMPLAINT_ACCEPTANCE_RATE,
    dd.RANKING_METRIC_COMPLAINT_CLOSURE_RATE,
}
# The rates of a summary table: (RATE_DEFINITIONS name, header), in column order (docs/domain.md §6).
SUMMARY_RATES: tuple[tuple[str, str], ...] = (
    ("early_rate", "early"),
    ("on_time_rate", "on time"),
    ("return_rate", "退件率 returned"),
    ("satisfaction_rate", "satisfied"),
    ("complaint_acceptance_rate", "受理率 complaints accepted"),
    ("complaint_closure_rate", "办结率 complaints closed"),
)


def rates_of(counters: Counters) -> dict[str, float | None]:
    """The derived rates (node.supervision.metrics's definitions) of summed counters."""
    from node.supervision import derived_rates

    return derived_rates(counters_to_dict(counters))


def percent(value: float | None) -> str:
    """A rate as a percentage ('-' when undefined)."""
    return "-" if value is None else f"{value * 100:.1f}%"


def local_time(ms: int, tz: ZoneInfo, *, with_time: bool = True) -> str:
    """Unix ms as local 'YYYY-MM-DD HH:MM' (or just the day)."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")


# Which summary rate columns move out first when a summary does not fit the terminal (highest first).
_SUMMARY_RATE_DROP = {
    "early_rate": 4,
    "on_time_rate": 3,
    "return_rate": 5,
    "satisfaction_rate": 6,
    "complaint_acceptance_rate": 8,
    "complaint_closure_rate": 7,
}


def summary_table(answer: dd.SummaryAnswer, title: str, *, width: int | None = None, wide: bool = False) -> Table:
    """Grouped counters with their derived rates, and the total (the last row)."""
    group = dd.SummaryGroupBy.Name(answer.group_by).removeprefix("SUMMARY_GROUP_BY_").lower()
    group = "node" if group == "child" else group
    by_child = answer.group_by == dd.SUMMARY_GROUP_BY_CHILD
    columns = [
        Col(group, key=True),
        Col("received", key=True, justify="right"),
        Col("completed", key=True, drop=2, justify="right"),
        *(Col(label, key=True, drop=_SUMMARY_RATE_DROP[name], justify="right") for name, label in SUMMARY_RATES),
        Col("open overdue", key=True, justify="right"),
        Col("yellow", key=True, drop=1, justify="right"),
        Col("red", key=True, justify="right"),
    ]
    if by_child:
        columns.append(Col("reported", key=True, justify="right"))

    def cells(name: str, counters: Counters, reported: str) -> list[str]:
        rates = rates_of(counters)
        line = [
            name,
            f"{counters.received:,}",
            f"{counters.completed:,}",
            *(percent(rates[rate]) for rate, _ in SUMMARY_RATES),
            f"{counters.open_overdue_promised:,}",
            f"{counters.yellow_cards:,}",
            f"{counters.red_cards:,}",
        ]
        return [*line, reported] if by_child else line

    rows = []
    for row in answer.rows:
        done, total = row.completeness.nodes_reported_in_window, row.completeness.nodes_in_subtree
        reported = f"{done}/{total}" + ("" if done == total else " [yellow]stale[/]")
        name = node_cell(row.key, row.label) if by_child else escape(f"{row.key} {row.label}".strip())
        rows.append(cells(name, row.counters, reported))
    completeness = answer.completeness
    rows.append(
        cells(
            "[bold]total[/]", answer.total, f"{completeness.nodes_reported_in_window}/{completeness.nodes_in_subtree}"
        )
    )
    return fitted_table(title, columns, rows, width=width or console.width, wide=wide)


# The supervision-activity columns of the by-child summary (node.supervision ACTIVITY_METRICS), in order.
ACTIVITY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("directives_received", "收到 received"),
    ("directives_acknowledged", "签收 acknowledged"),
    ("directives_responded_on_time", "按时回复 on time"),
    ("directives_overdue", "逾期 overdue"),
    ("directives_closed", "办结 closed"),
    ("measures_recorded", "问责 measures"),
)
# Directive kinds as supervisors name them; a measure is its own Chinese name, an unknown kind shows as sent.
KIND_LABELS = {"supervise": "督办", "warning": "告诫书", "rectify": "整改", "bulletin": "通报"}
# Kinds in the order of the issue (directives) and of the register (measures, mildest first); unknown ones last.
_KIND_ORDER = {kind: index for index, kind in enumerate((*KIND_LABELS, *MEASURES))}


def activity_cell(totals: Iterable[dd.ActivityTotal], metric: str) -> str:
    """One metric's total over its kinds with the split by kind, e.g. '3 (督办 2, 整改 1)'; '0' when none."""
    by_kind = {entry.kind: int(entry.count) for entry in totals if entry.metric == metric and entry.count}
    if not by_kind:
        return "0"
    ordered = sorted(by_kind.items(), key=lambda entry: (_KIND_ORDER.get(entry[0], len(_KIND_ORDER)), entry[0]))
    split = ", ".join(f"{KIND_LABELS.get(kind, kind) or '-'} {count:,}" for kind, count in ordered)
    return f"{sum(by_kind.values()):,} ({split})"


def activity_table(answer: dd.SummaryAnswer, title: str) -> Table:
    """Per child (a by-child summary): directives (督办) and accountability measures (问责) over the asked days.

    Directives received, acknowledged, responded on time, overdue and closed, and the measures recorded, each by kind.
    """
    table = Table(title=title, show_footer=True)
    table.add_column("node", footer="total")
    for metric, header in ACTIVITY_COLUMNS:
        table.add_column(header, justify="right", footer=activity_cell(answer.activity, metric))
    for row in answer.rows:
        name = f"{row.key} {row.label}".strip()
        table.add_row(name, *(activity_cell(row.activity, metric) for metric, _ in ACTIVITY_COLUMNS))
    return table


def registers_table(answer: dd.SummaryAnswer, title: str, *, width: int | None = None, wide: bool = False) -> Table:
    """Per child (a by-child summary): records reported (上报数据) and the subtree's item registers."""
    columns = [Col("node", key=True)]
    for index, header in enumerate(("上报数据 records", "事项 items", "retired", "flagged", "压缩比 compression")):
        columns.append(Col(header, key=True, drop=index, justify="right"))
    columns.append(Col("部门 depts", key=True, drop=1, justify="right"))
    named = [(node_cell(row.key, row.label), row.counters, row.catalogue) for row in answer.rows]
    rows = []
    for name, counters, registers in [*named, ("[bold]total[/]", answer.total, answer.catalogue)]:
        compression = registers.sum_promised / registers.sum_legal if registers.sum_legal else None
        rows.append(
            (
                name,
                f"{counters.records_reported:,}",
                f"{registers.items_in_force:,}",
                f"{registers.items_retired:,}",
                f"{registers.items_flagged:,}",
                percent(compression),
                f"{registers.departments:,}",
            )
        )
    return fitted_table(title, columns, rows, width=width or console.width, wide=wide)


def ranking_table(answer: dd.RankingAnswer, title: str, *, width: int | None = None, wide: bool = False) -> Table:
    """Ranked entries with the value, its numerator/denominator and report freshness."""
    metric = dd.RankingMetric.Name(answer.metric).removeprefix("RANKING_METRIC_").lower().replace("_", " ")
    columns = (
        Col("rank", key=True, justify="right"),
        Col("node", key=True),
        Col(metric, key=True, justify="right"),
        Col("of", key=True, drop=2, justify="right"),
        Col("received", key=True, drop=3, justify="right"),
        Col("red cards", key=True, drop=4, justify="right"),
        Col("last report", key=True, drop=1),
    )
    rows = []
    for row in answer.rows:
        if answer.metric == dd.RANKING_METRIC_SCORE:
            value = f"{row.value:.2f}" if row.denominator else "-"
            of = f"{row.numerator:,} cases 办件" if row.denominator else ""
        elif answer.metric in RATE_METRICS:
            value = percent(row.value) if row.denominator else "-"
            of = f"{row.numerator:,}/{row.denominator:,}"
        else:
            value, of = f"{row.numerator:,}", ""
        report = f"#{row.last_report_sequence}" if row.last_report_sequence else "(own data)"
        if row.stale:
            report += " [yellow]stale[/]"
        node = node_cell(row.node_id, row.label)
        rows.append((str(row.rank), node, value, of, f"{row.counters.received:,}", str(row.counters.red_cards), report))
    return fitted_table(f"{title} — by {metric}", columns, rows, width=width or console.width, wide=wide)


def cases_table(
    rows: Iterable[dd.CaseRow], title: str, tz: ZoneInfo, *, width: int | None = None, wide: bool = False
) -> Table:
    """Cases with their deadlines and cards; applicants masked."""
    columns = (
        Col("case", key=True),
        Col("item", drop=3),
        Col("department", key=True),
        Col("applicant", key=True, drop=4),
        Col("accepted", key=True, drop=2),
        Col("promised by", key=True, drop=1),
        Col("status"),
        Col("cards", drop=5),
    )
    lines = []
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
        lines.append(
            (
                escape(row.case_no),
                escape(row.item_name or row.basic_code),
                escape(row.department),
                escape(row.applicant_masked),
                local_time(row.accepted_at_ms, tz, with_time=False),
                local_time(row.promised_due_at_ms, tz, with_time=False),
                status,
                cards or "-",
            )
        )
    return fitted_table(title, columns, lines, width=width or console.width, wide=wide)


def alerts_table(
    rows: Iterable[dd.AlertRow], title: str, tz: ZoneInfo, *, width: int | None = None, wide: bool = False
) -> Table:
    """Alerts, newest first."""
    columns = (
        Col("id", key=True),
        Col("rule", key=True, drop=1),
        Col("severity", key=True, drop=3),
        Col("status", key=True, drop=5),
        Col("case", key=True),
        Col("department", key=True),
        Col("违规 breached", key=True, drop=4),
        Col("发现 raised", key=True, drop=6),
        Col("message", drop=2),
    )
    lines = [
        (
            str(row.id),
            row.rule_id,
            row.severity,
            row.status,
            escape(row.case_no or row.subject),
            escape(row.department),
            local_time(row.breached_at_ms, tz),
            local_time(row.raised_at_ms, tz),
            escape(row.message),
        )
        for row in rows
    ]
    return fitted_table(title, columns, lines, width=width or console.width, wide=wide)


def complaints_table(
    rows: Iterable[dd.ComplaintRow], title: str, tz: ZoneInfo, *, width: int | None = None, wide: bool = False
) -> Table:
    """Complaints, newest first; complainants masked."""
    columns = (
        Col("complaint", key=True),
        Col("title", drop=2),
        Col("complainant", key=True, drop=3),
        Col("respondent", key=True),
        Col("status", key=True),
        Col("received", key=True, drop=1),
        Col("finding", drop=4),
    )
    lines = [
        (
            escape(row.complaint_no),
            escape(row.title),
            escape(row.complainant_masked),
            escape(row.respondent_unit),
            row.status,
            local_time(row.received_at_ms, tz),
            escape(row.finding or "-"),
        )
        for row in rows
    ]
    return fitted_table(title, columns, lines, width=width or console.width, wide=wide)


def print_case_detail(answer: dd.CaseDetailAnswer, tz: ZoneInfo, out: Console = console, *, wide: bool = False) -> None:
    """One case: its row, masked applicant, timeline and alerts (on ``out``, the CLI's console by default)."""
    case = cases_table([answer.case], f"case {answer.case.case_no}", tz, width=out.width, wide=wide)
    print_table(case, out)
    out.print(f"applicant ID ({answer.applicant_id_type or '-'}): {answer.applicant_id_masked or '-'}", markup=False)
    columns = (Col("when", key=True), Col("what", key=True), Col("event"), Col("by", drop=1), Col("detail", drop=2))
    rows = [
        (local_time(e.at_ms, tz), escape(e.kind), escape(e.title), escape(e.actor), escape(e.detail))
        for e in answer.timeline
    ]
    print_table(fitted_table("timeline", columns, rows, width=out.width, wide=wide), out)
    if answer.alerts:
        print_table(alerts_table(answer.alerts, "alerts on this case", tz, width=out.width, wide=wide), out)


def report_description(answer: dd.ReportAnswer) -> dict[str, Any]:
    """A stored report's header and totals (the envelope as signed by its author)."""
    envelope = answer.report
    body = parse_body(envelope, ReportBody)
    totals = dict.fromkeys(COUNTER_FIELDS, 0)
    for bucket in body.buckets:
        for name in COUNTER_FIELDS:
            totals[name] += int(getattr(bucket.counters, name))
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
        "activity_counts": len(body.activity),
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


def report_table(answer: dd.ReportAnswer, held_by: str) -> Table:
    """A stored report's header, the child reports it rolls up and its totals."""
    description = report_description(answer)
    table = Table(title=f"report {description['node_id']} #{description['sequence']} (held by {held_by})")
    table.add_column("field")
    table.add_column("value")
    for key in ("kind", "digest", "previous_digest", "signed_by", "key_id", "buckets", "activity_counts"):
        table.add_row(key, str(description[key]) or "-")
    completeness = description["completeness"]
    table.add_row("completeness", f"{completeness['nodes_reported_in_window']}/{completeness['nodes_in_subtree']}")
    for ref in description["child_reports"]:
        table.add_row("rolls up", f"{ref['child_id']} #{ref['sequence']} {ref['digest'][:12]}")
    totals = description["bucket_totals"]
    table.add_row("received (in these buckets)", f"{totals['received']:,}")
    table.add_row("completed (in these buckets)", f"{totals['completed']:,}")
    return table


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


# --- tables that fit the terminal -----------------------------------------------------------------
#
# A terminal table never cuts an id, a case number, a node or a department name, a count or a time: those columns
# ("key" columns) stay on one line at their full width. Free text folds (wraps, nothing lost). When the key columns
# do not fit, the low-value columns (``drop`` > 0, highest first) move out of the table and its caption names them;
# ``--wide`` shows every column at full width (the terminal may wrap the lines). Department names lose the node's
# own place-name prefix (``short_departments``); --json, --format csv|xlsx and --wide keep them whole.

# A folding column keeps at least this many cells before low-value columns move out instead.
MIN_FOLD_WIDTH = 10
# ... and at least this many when nothing more can move out.
MIN_SQUEEZED_WIDTH = 4


@dataclass(frozen=True, slots=True)
class Col:
    """A terminal table column: ``key`` columns are never cut; ``drop`` > 0 columns may move out, highest first."""

    header: str
    key: bool = False
    drop: int = 0
    justify: JustifyMethod = "left"


def short_department(name: str, node_name: str) -> str:
    """A department name without the node's own place name and what precedes it, when more follows.

    At node 番禺区, 广州市番禺区市场监督管理局 → 市场监督管理局; a name without the node's name (or nothing after it)
    stays as it is.
    """
    if not node_name:
        return name
    at = name.find(node_name)
    rest = name[at + len(node_name) :] if at >= 0 else ""
    return rest if rest else name


def short_departments(names: Iterable[str], node_name: str) -> dict[str, str]:
    """Each full name -> its short form; names that two departments would share stay whole."""
    full = sorted(set(names))
    short = {name: short_department(name, node_name) for name in full}
    counts: dict[str, int] = {}
    for value in short.values():
        counts[value] = counts.get(value, 0) + 1
    return {name: (value if counts[value] == 1 else name) for name, value in short.items()}


def _cell_width(cell: str) -> int:
    """The widest line of a cell, markup not counted."""
    try:
        text = Text.from_markup(cell)
    except MarkupError:
        text = Text(cell)
    return max((line.cell_len for line in text.split("\n")), default=0)


def node_cell(node_id: str, label: str) -> str:
    """A node as a table cell: its id, and its name (when known) on a line of its own, so neither is cut."""
    return escape(f"{node_id}\n{label}" if label else node_id)


def _header_lines(header: str, width: int) -> str:
    """The header's words greedily on lines of ``width`` cells (a key column is as wide as its data)."""
    lines: list[str] = []
    for word in header.split():
        if lines and Text(lines[-1]).cell_len + 1 + Text(word).cell_len <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines)


def fitted_table(
    title: str, columns: Sequence[Col], rows: Iterable[Sequence[str]], *, width: int, wide: bool = False
) -> Table:
    """A table of ``rows`` (cells may hold markup) that fits ``width`` cells without cutting a key column."""
    body = [list(row) for row in rows]
    data = [max((_cell_width(row[index]) for row in body), default=0) for index in range(len(columns))]
    words = [max((Text(word).cell_len for word in column.header.split()), default=0) for column in columns]
    need = [
        max(data[i], words[i]) if column.key or wide else min(max(data[i], words[i]), MIN_FOLD_WIDTH)
        for i, column in enumerate(columns)
    ]
    shown = list(range(len(columns)))

    def total() -> int:
        return sum(need[i] for i in shown) + 3 * len(shown) + 1

    hidden: list[str] = []
    while not wide and total() > width:
        droppable = [i for i in shown if columns[i].drop]
        if not droppable:
            break
        out = max(droppable, key=lambda i: (columns[i].drop, i))
        shown.remove(out)
        hidden.append(columns[out].header)
    if not wide and total() > width:
        # Folding columns give way before a key column does: down to a few cells each.
        need = [n if columns[i].key else min(n, MIN_SQUEEZED_WIDTH) for i, n in enumerate(need)]
    # Key columns that still cannot fit fold rather than lose characters.
    squeezed = not wide and total() > width
    # Room to spare: key columns keep their header on one line, left to right while it lasts.
    slack = width - total()
    for i in shown:
        extra = Text(columns[i].header).cell_len - need[i]
        if (columns[i].key or wide) and 0 < extra <= slack:
            need[i] += extra
            slack -= extra
    caption = f"未显示 hidden: {', '.join(hidden)} — --wide 显示全部 shows all" if hidden else None
    table = Table(title=title, caption=caption)
    for i in shown:
        column = columns[i]
        if (column.key or wide) and not squeezed:
            header = _header_lines(column.header, need[i])
            table.add_column(header, no_wrap=True, min_width=need[i], justify=column.justify)
        else:
            table.add_column(column.header, overflow="fold", justify=column.justify)
    for row in body:
        table.add_row(*(row[i] for i in shown))
    if wide:
        table.width = max(total(), width)
    return table


def print_table(table: Table, out: Console = console) -> None:
    """Print a fitted table; a --wide one at its full width (never cropped to the terminal)."""
    out.print(table, crop=False)
