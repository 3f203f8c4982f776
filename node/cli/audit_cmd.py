"""``supnet audit``: list the node's hash-chained audit log (filters, newest first) or verify it (exit 7 if broken)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.markup import escape

from node.cli.common import DataDir, JsonFlag, console, handle_errors, print_json
from node.cli.render import Col, fitted_table, print_table
from node.cli.tabular import EncodingOption, FormatOption, OutOption, WideFlag, emit_listing
from node.errors import ExitCode

_DURATION = re.compile(r"^\s*(\d+)\s*([mhd])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_RESULT_STYLE = {"ok": "green", "refused": "yellow", "error": "bold red"}


def _since(text: str, tz: ZoneInfo, now: datetime) -> datetime:
    """An aware instant from '90m' / '24h' / '7d' (ago) or a date-time in node local time (or with an offset)."""
    from node.domain import parse_datetime
    from node.errors import InvalidArgumentError

    match = _DURATION.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        return parse_datetime(text, tz).replace(tzinfo=tz)
    except ValueError as exc:
        raise InvalidArgumentError(
            f"--since '{text}': {exc} (use e.g. 2026-03-01, 2026-03-01T08:00:00, 20260301T080000, 24h or 7d)"
        ) from None


def _entry_dict(entry: Any, tz: ZoneInfo) -> dict[str, Any]:
    data: dict[str, Any] = entry.to_dict()
    data["at_local"] = entry.at.astimezone(tz).isoformat(timespec="seconds")
    data["detail"] = entry.detail()
    return data


def register(app: typer.Typer) -> None:
    """Add ``supnet audit``."""

    @app.command("audit")
    @handle_errors
    def audit(
        *,
        data_dir: DataDir,
        verify: Annotated[
            bool, typer.Option("--verify", help="Check every hash and link; exit 7 and say where the chain breaks.")
        ] = False,
        expect_head: Annotated[
            str | None,
            typer.Option(
                "--expect-head",
                help="With --verify: a head remembered earlier (SEQ:HASH, as --verify prints it), to detect a "
                "truncated or rewritten tail.",
            ),
        ] = None,
        action: Annotated[
            str | None, typer.Option("--action", help="Only this action, e.g. report.refused; 'report.*' for a prefix.")
        ] = None,
        actor: Annotated[str | None, typer.Option("--actor", help="Only this actor, e.g. gd.gz or alice@gd.")] = None,
        target: Annotated[str | None, typer.Option("--target", help="Only this target, e.g. alert:17.")] = None,
        since: Annotated[
            str | None,
            typer.Option("--since", help="From this time (node local: 2026-03-01, 2026-03-01T08:00) or 24h, 7d ago."),
        ] = None,
        limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many entries, newest first.")] = 100,
        as_json: JsonFlag = False,
        fmt: FormatOption = None,
        out: OutOption = None,
        encoding: EncodingOption = "utf-8",
        wide: WideFlag = False,
    ) -> None:
        """List audit entries (who, what, on what, when, result), or verify the hash chain with --verify."""
        from node.app import open_node
        from node.audit_log import AuditFilter, AuditLog, parse_head

        remembered = parse_head(expect_head) if expect_head is not None else None
        node = open_node(data_dir, migrate_schema=False)
        try:
            tz = node.tz
            audit_log = AuditLog(node.engine)
            if verify:
                result = audit_log.verify(remembered_head=remembered)
            else:
                when = _since(since, tz, datetime.now(UTC)) if since is not None else None
                entries = audit_log.entries(AuditFilter(action=action, actor=actor, target=target, since=when), limit)
                head = audit_log.head()
        finally:
            node.close()

        if verify:
            if as_json:
                print_json(result.to_dict())
            elif result.ok:
                head_text = f"#{result.head.seq}:{result.head.hash}" if result.head is not None else "(empty log)"
                console.print(
                    f"[green]audit log verified[/]: {result.entries} entries, head {head_text}", highlight=False
                )
            else:
                console.print(
                    f"[bold red]audit log BROKEN at #{result.first_broken_seq}[/] ({result.kind}): "
                    f"{escape(result.reason)}",
                    highlight=False,
                )
                for problem in result.problems:
                    console.print(f"  - {escape(problem)}", highlight=False)
            if not result.ok:
                raise typer.Exit(ExitCode.VERIFICATION_FAILED)
            return

        records = [_entry_dict(entry, tz) for entry in entries]
        document = {"entries": records, "head": None if head is None else {"seq": head.seq, "hash": head.hash}}
        if emit_listing(
            records, document, title="审计日志 audit", fmt=fmt, out=out, encoding=encoding, as_json=as_json
        ):
            return
        head_note = f"head #{head.seq}" if head is not None else "empty"
        columns = (
            Col("seq", key=True),
            Col("at", key=True, drop=2),
            Col("actor", key=True),
            Col("action", key=True),
            Col("target", key=True),
            Col("result", key=True, drop=1),
            Col("detail", drop=3),
        )
        rows = []
        for entry in entries:
            style = _RESULT_STYLE.get(entry.result, "")
            rows.append(
                (
                    str(entry.seq),
                    entry.at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
                    escape(entry.actor),
                    escape(entry.action),
                    escape(entry.target),
                    f"[{style}]{escape(entry.result)}[/]" if style else escape(entry.result),
                    escape(entry.detail_json),
                )
            )
        title = f"Audit log of {data_dir} ({len(entries)} shown, {head_note})"
        print_table(fitted_table(title, columns, rows, width=console.width, wide=wide))
