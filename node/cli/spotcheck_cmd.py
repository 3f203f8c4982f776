"""``supnet spotcheck TARGET``: open random records behind a descendant's signed figures and re-judge them (抽查).

The bucket and the leaves are drawn here, after the target signed its report, with the operating system's random
source; the request goes down the signed drill-down path. Prints the findings and what a clean result is worth
(the detection probability of the sample drawn); audits the check here and alerts the operators of findings.
``supnet spotcheck-directive SEQ`` turns a recorded check with findings into a 督办 or 整改通知.
"""

from __future__ import annotations

import random
from datetime import date
from typing import Annotated

import typer

from node.cli.common import DataDir, JsonFlag, console, handle_errors, print_json
from node.errors import ExitCode, InvalidArgumentError, NotFoundError, SupnetError


def _days(day: str | None, period: str | None) -> tuple[date | None, date | None]:
    from node.bulletin import report_period

    if day and period:
        raise InvalidArgumentError("give --day or --period, not both")
    if day:
        try:
            chosen = date.fromisoformat(day)
        except ValueError:
            raise InvalidArgumentError(f"--day {day!r} is not a day (YYYY-MM-DD)") from None
        return chosen, chosen
    if period:
        span = report_period(period)
        return span.first_day, span.last_day
    return None, None


def register(app: typer.Typer) -> None:
    """Add ``supnet spotcheck`` and ``supnet spotcheck-directive``."""

    @app.command("spotcheck")
    @handle_errors
    def spotcheck(
        target: Annotated[str, typer.Argument(help="A descendant, e.g. gd.gz.py.")],
        *,
        data_dir: DataDir,
        day: Annotated[str | None, typer.Option("--day", help="Check a bucket of this day (YYYY-MM-DD).")] = None,
        period: Annotated[
            str | None, typer.Option("--period", help="Check a bucket of this period (2026-03, 2026-Q1, 2026).")
        ] = None,
        samples: Annotated[
            int | None, typer.Option("--samples", min=1, max=200, help="Leaves opened (default: spotcheck.samples).")
        ] = None,
        pairs: Annotated[
            int | None,
            typer.Option("--pairs", min=0, max=50, help="Adjacent leaf pairs for the case-number gap test."),
        ] = None,
        address: Annotated[
            str | None, typer.Option("--address", help="host:port of this node's server (default: its serve.json).")
        ] = None,
        json_output: JsonFlag = False,
    ) -> None:
        """Open N random records behind TARGET's signed figures and re-judge them. Exits 1 on any finding."""
        from node.app import open_node
        from node.audit_log import operator_actor
        from node.drilldown import DrilldownAsker, DrilldownClient
        from node.spotcheck import record_failure, record_result, result_text, run_spot_check

        day_from, day_to = _days(day, period)
        node = open_node(data_dir, migrate_schema=False)
        try:
            config = node.config.spotcheck
            try:
                with DrilldownClient.for_node(node, address) as client:
                    result = run_spot_check(
                        DrilldownAsker(client),
                        target,
                        node.calendar,
                        random.SystemRandom(),
                        samples=samples or config.samples,
                        pairs=config.pairs if pairs is None else pairs,
                        day_from=day_from,
                        day_to=day_to,
                    )
            except SupnetError as exc:
                record_failure(node, target, exc, operator_actor(node.config.id))
                raise
            if result is None:
                raise NotFoundError(
                    f"{target} signed no report with a committed bucket in the days asked; "
                    "try another --day / --period, or wait for its next report"
                )
            seq = record_result(node, result, operator_actor(node.config.id))
        finally:
            node.close()
        detail = result.to_dict()
        if json_output:
            print_json({**detail, "audit_seq": seq})
        else:
            for line in result_text(detail):
                console.print(line, markup=False, highlight=False)
            console.print(f"审计记录 audit entry {seq}", markup=False, highlight=False)
            if result.findings:
                console.print(f"转为督办/整改: supnet spotcheck-directive {seq} --kind rectify", markup=False)
        if result.findings:
            raise typer.Exit(ExitCode.VERIFICATION_FAILED)

    @app.command("spotcheck-directive")
    @handle_errors
    def spotcheck_directive(
        seq: Annotated[int, typer.Argument(help="The audit entry of the spot check (printed by 'supnet spotcheck').")],
        data_dir: DataDir,
        kind: Annotated[str, typer.Option("--kind", help="supervise (督办) or rectify (整改通知).")] = "rectify",
        respond_within: Annotated[
            int | None, typer.Option("--respond-within", min=0, max=120, help="Working days to respond.")
        ] = None,
        json_output: JsonFlag = False,
    ) -> None:
        """Issue a 督办 or 整改通知 to the checked node about what a spot check found."""
        from node.app import open_node
        from node.directives import FindingDraft, IssueRequest, issue
        from node.spotcheck import directive_text, recorded_check

        if kind not in ("supervise", "rectify"):
            raise InvalidArgumentError(f"--kind must be supervise or rectify, got {kind!r}")
        node = open_node(data_dir, migrate_schema=False)
        try:
            detail = recorded_check(node, seq)
            text, findings, case_no = directive_text(detail)
            view = issue(
                node,
                IssueRequest(
                    target_id=str(detail["target"]),
                    kind=kind,
                    text=text,
                    case_no=case_no,
                    findings=[FindingDraft(item, "", "") for item in findings] if kind == "rectify" else [],
                    respond_within_workdays=respond_within,
                ),
            )
        finally:
            node.close()
        if json_output:
            print_json({"directive_id": view.id, "kind": kind, "target": view.target_id, "spot_check": seq})
        else:
            console.print(f"{view.kind_label} {view.id} → {view.target_id} (抽查审计 {seq})", markup=False)
