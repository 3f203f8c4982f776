"""``supnet verify TARGET_ID``: check a descendant's signed totals and hash chains against its data, recursively."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from node.cli.common import DataDir, JsonFlag, console, handle_errors, print_json
from node.errors import ExitCode


def register(app: typer.Typer) -> None:
    """Add ``supnet verify``."""

    @app.command("verify")
    @handle_errors
    def verify(
        target: Annotated[str, typer.Argument(help="This node or a descendant, e.g. gd.gz.py.")],
        data_dir: DataDir,
        address: Annotated[
            str | None, typer.Option("--address", help="host:port of this node's server (default: its serve.json).")
        ] = None,
        json_output: JsonFlag = False,
    ) -> None:
        """Signed totals = own records + children's signed reports, chains unbroken, for TARGET and below.

        Exits 1 when any check fails and says what failed where.
        """
        from node.app import open_node
        from node.drilldown import verify_target

        node = open_node(data_dir, migrate_schema=False)
        try:
            result = verify_target(node, target, address)
        finally:
            node.close()
        if json_output:
            print_json(
                {
                    "verifier_id": result.verifier_id,
                    "target_id": result.target_id,
                    "ok": result.ok,
                    "nodes_checked": result.nodes_checked,
                    "findings": [vars(finding) for finding in result.findings],
                }
            )
        else:
            table = Table(title=f"verify {target} from {result.verifier_id}")
            for column in ("node", "check", "result", "detail"):
                table.add_column(column)
            for finding in result.findings:
                if finding.warning:
                    verdict = "[yellow]warning[/]"
                else:
                    verdict = "[green]ok[/]" if finding.ok else "[bold red]FAILED[/]"
                table.add_row(finding.node_id, finding.check, verdict, finding.detail)
            console.print(table)
            checked = len(result.nodes_checked)
            if result.ok:
                console.print(f"[green]verified[/]: {checked} node(s) below {result.verifier_id} check out")
            else:
                failed = sorted({f.node_id for f in result.findings if not f.ok and not f.warning})
                console.print(f"[bold red]verification failed[/] at: {', '.join(failed)}")
        if not result.ok:
            raise typer.Exit(ExitCode.VERIFICATION_FAILED)
