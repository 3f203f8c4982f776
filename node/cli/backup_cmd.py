"""``supnet backup`` and ``supnet restore``: the whole node in one file, taken while it runs (node.backup)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from node.cli.common import DataDir, JsonFlag, console, err_console, handle_errors, print_json


def register(app: typer.Typer) -> None:
    """Add ``supnet backup`` and ``supnet restore``."""

    @app.command("backup")
    @handle_errors
    def backup_command(
        data_dir: DataDir,
        out: Annotated[Path, typer.Option("--out", "-o", help="The backup file to write (e.g. py-2026-12-06.tar.gz).")],
        as_json: JsonFlag = False,
    ) -> None:
        """Back up the node while it runs: a consistent database snapshot, its files (pki/, keys, config)."""
        from node.backup import backup_node

        result = backup_node(data_dir, out)
        if as_json:
            print_json(result.to_dict())
            return
        manifest = result.manifest
        head = manifest.audit_head
        table = Table(title=f"备份 backup of {manifest.node_id} written", show_header=False)
        table.add_row("file", str(result.path))
        table.add_row("size", f"{result.bytes:,} bytes")
        table.add_row("SHA-256", result.sha256)
        table.add_row("database", f"{manifest.database['backend']}, schema {manifest.database['schema_revision']}")
        table.add_row("snapshot", str(manifest.database["method"]))
        table.add_row("audit head", "-" if head is None else f"{head.seq}:{head.hash}")
        table.add_row("parts", str(len(manifest.parts)))
        console.print(table)
        console.print("[yellow]note[/] the file holds the node's private keys: keep it as safe as the node itself")

    @app.command("restore")
    @handle_errors
    def restore_command(
        backup: Annotated[Path, typer.Argument(help="A file written by 'supnet backup'.")],
        *,
        data_dir: Annotated[
            Path | None,
            typer.Option("--data-dir", "-d", help="Where to restore the node.", envvar="SUPNET_DATA_DIR"),
        ] = None,
        force: Annotated[
            bool,
            typer.Option("--force", help="Replace a node already there (what is replaced is kept aside)."),
        ] = False,
        db_url: Annotated[
            str | None,
            typer.Option("--db-url", help="Restore into this database instead of the one in the backup's config."),
        ] = None,
        check: Annotated[
            bool, typer.Option("--check", help="Only check the file against its manifest; restore nothing.")
        ] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Restore a backup (never over a running node; over another node only with --force); checks the audit."""
        from node.backup import check_backup, restore_node
        from node.errors import InvalidArgumentError

        if check:
            manifest = check_backup(backup)
            if as_json:
                print_json({"ok": True, "manifest": manifest.to_dict()})
            else:
                console.print(
                    f"{backup}: {len(manifest.parts)} parts match the manifest (node {manifest.node_id}, "
                    f"taken {manifest.created_at})",
                    highlight=False,
                )
            return
        if data_dir is None:
            raise InvalidArgumentError("--data-dir is required (or set SUPNET_DATA_DIR)")
        result = restore_node(backup, data_dir, force=force, db_url=db_url)
        if as_json:
            print_json(result.to_dict())
        else:
            head = result.audit_head
            console.print(
                f"恢复完成 restored {result.manifest.node_id} (backup of {result.manifest.created_at}) into "
                f"{result.data_dir}; database {result.database}",
                highlight=False,
            )
            console.print(
                f"audit chain verified: {result.audit_entries} entries, head "
                f"{'-' if head is None else f'{head.seq}:{head.hash}'} = the backup's",
                highlight=False,
            )
            if result.replaced is not None:
                console.print(f"replaced files kept in {result.replaced}", highlight=False)
            if result.replaced_schema is not None:
                console.print(
                    f"replaced PostgreSQL schema kept as {result.replaced_schema} (DROP SCHEMA … CASCADE when no "
                    "longer needed)",
                    highlight=False,
                )
        for warning in result.warnings:
            err_console.print(f"[yellow]warning[/] {warning}", highlight=False)
