"""``supnet subtree`` (also ``supnet stats --subtree``): subtree totals, completeness, children's freshness, outbox."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import typer
from rich.markup import escape

from federation import COUNTER_FIELDS
from node.app import Node, open_node
from node.cli.common import DataDir, JsonFlag, console, handle_errors, print_json
from node.cli.render import Col, fitted_table, print_table
from node.cli.tabular import EncodingOption, FormatOption, OutOption, TableOutput, WideFlag
from node.errors import InvalidArgumentError
from node.reporting import SubtreeView, node_outbox, outbox_overflow_count, subtree_view
from node.supervision import derived_rates

# CLI names of the grouping dimensions -> subtree dimensions.
BY_ALIASES = {
    "day": "day",
    "item": "basic_code",
    "basic_code": "basic_code",
    "type": "item_type_code",
    "item_type": "item_type_code",
    "item_type_code": "item_type_code",
    "source": "source",
    "child": "source",
}
SHOWN_COUNTERS = ("received", "completed", "completed_early", "open_cases", "yellow_cards", "red_cards")
SHOWN_RATES = ("early_rate", "on_time_rate", "satisfaction_rate")
# Columns that move out first when the table does not fit the terminal (highest first).
SHOWN_DROP = {"completed_early": 5, "open_cases": 4, "satisfaction_rate": 3, "early_rate": 2, "yellow_cards": 1}


def parse_group_by(text: str | None) -> tuple[str, ...]:
    """'day,item' -> ('day', 'basic_code'); InvalidArgumentError names an unknown dimension."""
    if not text:
        return ()
    dimensions = []
    for part in (piece.strip() for piece in text.split(",")):
        if part not in BY_ALIASES:
            raise InvalidArgumentError(
                f"--by: unknown dimension {part!r}; choose from day, item, type, source (comma-separated)"
            )
        dimensions.append(BY_ALIASES[part])
    return tuple(dict.fromkeys(dimensions))


def _parse_day(text: str | None, option: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise InvalidArgumentError(f"{option}: {text!r} is not a day (YYYY-MM-DD)") from error


def _outbox_status(node: Node) -> dict[str, Any]:
    outbox = node_outbox(node)
    with node.engine.connect() as conn:
        head = outbox.head(conn)
        pending = outbox.pending_count(conn)
        next_attempt = outbox.next_attempt_at(conn)
        oldest = outbox.entries(conn, status="pending", limit=1)
    return {
        "parent_address": node.config.federation.parent_address,
        "last_sequence": head.sequence if head else 0,
        "last_digest": head.digest.hex() if head else "",
        "pending": pending,
        "limit": outbox.max_pending,
        "next_attempt_at": next_attempt.isoformat(sep=" ", timespec="seconds") if next_attempt else None,
        "oldest_pending_attempts": oldest[0].attempts if oldest else 0,
        "overflows": outbox_overflow_count(node),
    }


def subtree_document(view: SubtreeView, outbox: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of a subtree view (rates derived from the summed counters of each row)."""
    rows = []
    for row in view.rows:
        counters = {name: row[name] for name in COUNTER_FIELDS}
        rows.append({**row, "rates": derived_rates(counters)})
    return {
        "node_id": view.node_id,
        "generated_at": view.generated_at.isoformat(sep=" ", timespec="seconds"),
        "group_by": list(view.group_by),
        "completeness": {
            "nodes_in_subtree": view.completeness.nodes_in_subtree,
            "nodes_reported_in_window": view.completeness.nodes_reported_in_window,
            "ratio": view.completeness.ratio,
        },
        "children": [
            {
                "child_id": child.child_id,
                "state": child.state,
                "registered": child.registered,
                "last_sequence": child.last_sequence,
                "last_received_at": (
                    child.last_received_at.isoformat(sep=" ", timespec="seconds") if child.last_received_at else None
                ),
                "age_seconds": child.age_seconds,
                "nodes_in_subtree": child.nodes_in_subtree,
                "nodes_reported_in_window": child.nodes_reported_in_window,
            }
            for child in view.children
        ],
        "outbox": outbox,
        "rows": rows,
    }


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _print_tables(document: dict[str, Any], wide: bool) -> None:
    completeness = document["completeness"]
    title = (
        f"subtree of {document['node_id']} — {completeness['nodes_reported_in_window']}/"
        f"{completeness['nodes_in_subtree']} nodes reported ({_percent(completeness['ratio'])})"
    )
    columns = (
        *(Col(name, key=True) for name in document["group_by"]),
        *(Col(name, key=True, drop=SHOWN_DROP.get(name, 0), justify="right") for name in SHOWN_COUNTERS),
        *(Col(name, key=True, drop=SHOWN_DROP.get(name, 0), justify="right") for name in SHOWN_RATES),
    )
    rows = [
        (
            *(escape(str(row[name])) for name in document["group_by"]),
            *(f"{row[name]:,}" for name in SHOWN_COUNTERS),
            *(_percent(row["rates"][name]) for name in SHOWN_RATES),
        )
        for row in document["rows"]
    ]
    print_table(fitted_table(title, columns, rows, width=console.width, wide=wide))
    if document["children"]:
        style = {"fresh": "green", "stale": "yellow", "missing": "red"}
        child_columns = (
            Col("child", key=True),
            Col("state", key=True),
            Col("last report", key=True),
            Col("received at", key=True, drop=1),
            Col("nodes reported / in subtree", key=True),
        )
        child_rows = [
            (
                child["child_id"] + ("" if child["registered"] else " (unregistered)"),
                f"[{style[child['state']]}]{child['state']}[/]",
                "—" if child["last_sequence"] is None else f"#{child['last_sequence']}",
                child["last_received_at"] or "never",
                f"{child['nodes_reported_in_window']} / {child['nodes_in_subtree']}",
            )
            for child in document["children"]
        ]
        print_table(fitted_table("children", child_columns, child_rows, width=console.width, wide=wide))
    outbox = document["outbox"]
    if outbox["parent_address"]:
        console.print(
            f"outbox to {outbox['parent_address']}: last report #{outbox['last_sequence']}, "
            f"{outbox['pending']}/{outbox['limit']} pending, {outbox['overflows']} refused when full"
            + (f", next attempt {outbox['next_attempt_at']}" if outbox["pending"] else ""),
            highlight=False,
        )


def print_subtree(
    node: Node,
    *,
    by: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    item: str | None = None,
    as_json: bool = False,
    output: TableOutput | None = None,
) -> dict[str, Any]:
    """Render a node's subtree view (table or JSON) and return its JSON document."""
    view = subtree_view(
        node,
        group_by=parse_group_by(by),
        day_from=_parse_day(date_from, "--from"),
        day_to=_parse_day(date_to, "--to"),
        basic_code=item or None,
    )
    document = subtree_document(view, _outbox_status(node))
    output = output or TableOutput()
    if output.emit(document["rows"], title=f"辖区汇总 subtree of {document['node_id']}", as_json=as_json):
        return document
    if as_json:
        print_json(document)
    else:
        _print_tables(document, output.wide)
    return document


def register(app: typer.Typer) -> None:
    """Add ``supnet subtree``."""

    @app.command("subtree")
    @handle_errors
    def subtree_command(
        *,
        data_dir: DataDir,
        as_json: JsonFlag = False,
        by: Annotated[
            str | None, typer.Option("--by", help="Group by day, item, type and/or source (comma-separated).")
        ] = None,
        date_from: Annotated[str | None, typer.Option("--from", help="First day (YYYY-MM-DD).")] = None,
        date_to: Annotated[str | None, typer.Option("--to", help="Last day (YYYY-MM-DD).")] = None,
        item: Annotated[str | None, typer.Option("--item", help="Only this national basic code (基本编码).")] = None,
        fmt: FormatOption = None,
        out: OutOption = None,
        encoding: EncodingOption = "utf-8",
        wide: WideFlag = False,
    ) -> None:
        """Subtree totals (own data + children's latest reports), completeness and each child's freshness."""
        node = open_node(data_dir, migrate_schema=False)
        try:
            output = TableOutput(fmt, out, encoding, wide)
            print_subtree(node, by=by, date_from=date_from, date_to=date_to, item=item, as_json=as_json, output=output)
        finally:
            node.close()
