"""Rich tables and JSON forms of drill-down answers: what ``supnet query`` and the demo print."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf.json_format import MessageToDict
from rich.console import Console, JustifyMethod
from rich.errors import MarkupError
from rich.table import Table
from rich.text import Text

from federation import COUNTER_FIELDS, counters_to_dict, parse_body, report_digest
from federation.proto.v1 import drilldown_pb2 as dd
from federation.proto.v1.common_pb2 import Counters
from federation.proto.v1.report_pb2 import ReportBody
from node.cli.common import console
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


def summary_table(answer: dd.SummaryAnswer, title: str) -> Table:
    """Grouped counters with their derived rates, and the total."""
    group = dd.SummaryGroupBy.Name(answer.group_by).removeprefix("SUMMARY_GROUP_BY_").lower()
    group = "node" if group == "child" else group
    table = Table(title=title, show_footer=True)
    table.add_column(group, footer="total")
    table.add_column("received", justify="right", footer=f"{answer.total.received:,}")
    table.add_column("completed", justify="right", footer=f"{answer.total.completed:,}")
    total_rates = rates_of(answer.total)
    for name, label in SUMMARY_RATES:
        table.add_column(label, justify="right", footer=percent(total_rates[name]))
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
            *(percent(rates[name]) for name, _ in SUMMARY_RATES),
            f"{row.counters.open_overdue_promised:,}",
            f"{row.counters.yellow_cards:,}",
            f"{row.counters.red_cards:,}",
        ]
        if answer.group_by == dd.SUMMARY_GROUP_BY_CHILD:
            done, total = row.completeness.nodes_reported_in_window, row.completeness.nodes_in_subtree
            cells.append(f"{done}/{total}" + ("" if done == total else " [yellow]stale[/]"))
        table.add_row(*cells)
    return table


def registers_table(answer: dd.SummaryAnswer, title: str) -> Table:
    """Per child (a by-child summary): records reported (上报数据) and the subtree's item registers."""
    table = Table(title=title, show_footer=True)
    table.add_column("node", footer="total")
    for header in ("上报数据 records", "事项 items", "retired", "flagged", "压缩比 compression", "部门 depts"):
        table.add_column(header, justify="right")
    rows = [(f"{row.key} {row.label}".strip(), row.counters, row.catalogue) for row in answer.rows]
    for index, (name, counters, registers) in enumerate([*rows, ("total", answer.total, answer.catalogue)]):
        compression = registers.sum_promised / registers.sum_legal if registers.sum_legal else None
        cells = (
            f"{counters.records_reported:,}",
            f"{registers.items_in_force:,}",
            f"{registers.items_retired:,}",
            f"{registers.items_flagged:,}",
            percent(compression),
            f"{registers.departments:,}",
        )
        if index < len(rows):
            table.add_row(name, *cells)
        else:
            for column, cell in zip(table.columns[1:], cells, strict=True):
                column.footer = cell
    return table


def ranking_table(answer: dd.RankingAnswer, title: str) -> Table:
    """Ranked entries with the value, its numerator/denominator and report freshness."""
    metric = dd.RankingMetric.Name(answer.metric).removeprefix("RANKING_METRIC_").lower().replace("_", " ")
    table = Table(title=f"{title} — by {metric}")
    for column in ("rank", "node", metric, "of", "received", "red cards", "last report"):
        table.add_column(column, justify="right" if column not in ("node", "last report") else "left")
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
    for column in ("id", "rule", "severity", "status", "case", "department", "违规 breached", "发现 raised", "message"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.id),
            row.rule_id,
            row.severity,
            row.status,
            row.case_no or row.subject,
            row.department,
            local_time(row.breached_at_ms, tz),
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


def report_table(answer: dd.ReportAnswer, held_by: str) -> Table:
    """A stored report's header, the child reports it rolls up and its totals."""
    description = report_description(answer)
    table = Table(title=f"report {description['node_id']} #{description['sequence']} (held by {held_by})")
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
    try:
        return Text.from_markup(cell).cell_len
    except MarkupError:
        return Text(cell).cell_len


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
    # Key columns that still cannot fit fold rather than lose characters.
    squeezed = not wide and total() > width
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
