"""`supnet accountability`: the accountability register (问责) — record a measure, list the register.

``add`` records one measure (audited, counted in the activity figures that go up in the next report); with
``--complaint NO`` the complaint's respondent unit and person, and its recorded measure, fill what is not given.
``list`` shows the register with the counts by measure. The person (当事人) stays at this node.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import typer
from rich.table import Table

from node.app import Node
from node.cli.common import (
    JsonFlag,
    OptionalDataDir,
    console,
    handle_errors,
    local_text,
    opened_node,
    print_json,
    subcommand_invoked,
    view_json,
)
from node.domain import parse_date, parse_datetime
from node.errors import NotFoundError, ValidationError
from node.supervision import (
    MEASURES,
    SOURCE_KINDS,
    MeasureView,
    get_complaint,
    list_measures,
    measure_counts,
    record_measure,
)

accountability_app = typer.Typer(
    help="问责 accountability register: add a measure, list the register.", no_args_is_help=True
)

SOURCE_LABELS = {"directive": "督办/指令 directive", "complaint": "投诉 complaint", "alert": "预警 alert"}


def _when(node: Node, option: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_datetime(text, node.tz)
    except ValueError as exc:
        raise ValidationError(f"{option} '{text}': {exc}", field=option.lstrip("-"), reason="bad_datetime") from None


def _day(option: str, text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return parse_date(text)
    except ValueError as exc:
        raise ValidationError(f"{option} '{text}': {exc}", field=option.lstrip("-"), reason="bad_date") from None


def _source(directive: str, complaint: str, alert: str) -> tuple[str, str]:
    given = [(kind, ref.strip()) for kind, ref in zip(SOURCE_KINDS, (directive, complaint, alert), strict=True) if ref]
    if len(given) > 1:
        options = " and ".join(f"--{kind}" for kind, _ in given)
        raise ValidationError(
            f"{options}: a measure names at most one source (依据)", field=given[1][0], reason="conflict"
        )
    return given[0] if given else ("", "")


def _source_text(view: MeasureView) -> str:
    return f"{SOURCE_LABELS[view.source_kind]} {view.source_ref}" if view.source_kind in SOURCE_LABELS else "-"


def _print_one(view: MeasureView, as_json: bool) -> None:
    if as_json:
        print_json(view_json(view))
        return
    table = Table(title=f"问责 measure #{view.id} recorded", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = (
        ("问责措施 measure", view.measure),
        ("单位 department", view.department),
        ("岗位 post", view.post),
        ("当事人 person", view.person),
        ("事由 reason", view.reason),
        ("依据 source", _source_text(view)),
        ("决定时间 decided", local_text(view.decided_at)),
        ("登记 recorded", f"{local_text(view.recorded_at)} by {view.recorded_by}"),
    )
    for label, value in rows:
        table.add_row(label, value or "-")
    console.print(table)
    console.print("[dim]counted in measures_recorded; the next report carries the count (never the person)[/]")


@accountability_app.callback()
def accountability(ctx: typer.Context, *, data_dir: OptionalDataDir = None) -> None:
    """The accountability register (问责): add a measure, list the register."""
    subcommand_invoked(ctx, data_dir)  # keeps the group's --data-dir for the subcommand


@accountability_app.command("add")
@handle_errors
def add(
    ctx: typer.Context,
    *,
    measure: Annotated[str, typer.Option("--measure", help=f"问责措施, one of: {' | '.join(MEASURES)}.")] = "",
    department: Annotated[str, typer.Option("--department", help="单位 the measure concerns.")] = "",
    reason: Annotated[str, typer.Option("--reason", help="事由: why (required).")] = "",
    post: Annotated[str, typer.Option("--post", help="岗位.")] = "",
    person: Annotated[str, typer.Option("--person", help="当事人 (personal data: stays at this node).")] = "",
    directive: Annotated[str, typer.Option("--directive", help="The directive that led to it (its id).")] = "",
    complaint: Annotated[
        str,
        typer.Option(
            "--complaint",
            help="The complaint that led to it (投诉编号, of this node): its respondent unit, person and recorded "
            "measure fill --department, --person and --measure when not given.",
        ),
    ] = "",
    alert: Annotated[str, typer.Option("--alert", help="The alert that led to it (预警编号, of this node).")] = "",
    at: Annotated[
        str | None, typer.Option("--at", help="When it was decided (YYYYMMDDThhmmss or ISO 8601); default now.")
    ] = None,
    by: Annotated[str, typer.Option("--by", help="Who records it (default: OS user @ node).")] = "",
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Record an accountability measure (问责措施) in the register."""
    source_kind, source_ref = _source(directive, complaint, alert)
    with opened_node(ctx, data_dir) as node:
        if source_kind == "complaint":
            try:
                found = get_complaint(node, source_ref)
            except NotFoundError:
                raise ValidationError(
                    f"--complaint '{source_ref}': field 'source_ref': no complaint {source_ref!r} at this node",
                    field="source_ref",
                    reason="not_found",
                ) from None
            department = department or found.respondent_unit
            person = person or found.respondent_person
            measure = measure or (found.accountability_measure if found.accountability_measure in MEASURES else "")
            reason = reason or f"投诉 {found.complaint_no} {found.title}".strip()
        if not measure:
            raise ValidationError(
                f"--measure: required, one of {', '.join(MEASURES)}", field="measure", reason="missing"
            )
        view = record_measure(
            node,
            measure=measure,
            department=department,
            reason=reason,
            post=post,
            person=person,
            source_kind=source_kind,
            source_ref=source_ref,
            decided_at=_when(node, "--at", at),
            recorded_by=by,
        )
    _print_one(view, as_json)


@accountability_app.command("list")
@handle_errors
def list_command(
    ctx: typer.Context,
    *,
    measure: Annotated[
        str | None, typer.Option("--measure", help=f"Only this measure: {' | '.join(MEASURES)}.")
    ] = None,
    department: Annotated[str | None, typer.Option("--department", help="Only this department (exact).")] = None,
    source: Annotated[
        str | None, typer.Option("--source", help=f"Only measures led to by: {' | '.join(SOURCE_KINDS)}.")
    ] = None,
    day_from: Annotated[str | None, typer.Option("--from", help="First decision day YYYY-MM-DD.")] = None,
    day_to: Annotated[str | None, typer.Option("--to", help="Last decision day YYYY-MM-DD.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 500,
    data_dir: OptionalDataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """List the register, newest decision first, with the counts by measure."""
    first, last = _day("--from", day_from), _day("--to", day_to)
    with opened_node(ctx, data_dir) as node:
        views = list_measures(
            node, measure=measure, department=department, source_kind=source, day_from=first, day_to=last, limit=limit
        )
        counts = measure_counts(
            node, measure=measure, department=department, source_kind=source, day_from=first, day_to=last
        )
    # Counted over every matching measure, not only the ones shown.
    by_measure = {name: sum(n for (m, _), n in counts.items() if m == name) for name in MEASURES}
    by_department: dict[str, dict[str, int]] = {}
    for (name, unit), count in sorted(counts.items(), key=lambda entry: (entry[0][1], MEASURES.index(entry[0][0]))):
        by_department.setdefault(unit, {})[name] = count
    if as_json:
        print_json(
            {
                "from": first.isoformat() if first else None,
                "to": last.isoformat() if last else None,
                "by_measure": {name: count for name, count in by_measure.items() if count},
                "by_department": by_department,
                "measures": [view_json(view) for view in views],
            }
        )
        return
    table = Table(title=f"问责登记 accountability register ({len(views)} shown)")
    for column in (
        "编号 id",
        "决定 decided",
        "问责措施 measure",
        "单位 department",
        "岗位 post",
        "当事人 person",
        "事由 reason",
        "依据 source",
        "登记人 by",
    ):
        table.add_column(column)
    for view in views:
        table.add_row(
            str(view.id),
            local_text(view.decided_at),
            view.measure,
            view.department,
            view.post or "-",
            view.person or "-",
            view.reason,
            _source_text(view),
            view.recorded_by,
        )
    console.print(table)
    shown = " · ".join(f"{name} {count}" for name, count in by_measure.items() if count)
    console.print(f"按措施 by measure (all matching): {shown or 'none'}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `supnet accountability` to the CLI."""
    app.add_typer(accountability_app, name="accountability")
