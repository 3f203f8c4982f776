"""``supnet keys rotate``: a new report-signing key (and optionally TLS key) certified by the node's own CA."""

from __future__ import annotations

from typing import Annotated

import typer

from node.audit_log import Action
from node.cli.common import DataDir, JsonFlag, audit_admin_action, console, handle_errors, print_json
from node.cli.pki_cmd import PassphraseFile
from node.trust import read_passphrase, rotate_keys


def register(app: typer.Typer) -> None:
    """Add ``supnet keys ...``."""
    group = typer.Typer(help="The node's own keys: rotate.", no_args_is_help=True)
    app.add_typer(group, name="keys")

    @group.command("rotate")
    @handle_errors
    def rotate_command(
        data_dir: DataDir,
        tls: Annotated[bool, typer.Option("--tls", help="Also rotate the TLS key.")] = False,
        passphrase_file: PassphraseFile = None,
        as_json: JsonFlag = False,
    ) -> None:
        """New Ed25519 report key and certificate; the old certificate moves to pki/retired/ and stays valid.

        At a province whose CA is the encrypted root key, give its passphrase (--passphrase-file or the environment).
        """
        result = rotate_keys(data_dir, tls=tls, passphrase=read_passphrase(passphrase_file))
        audit_admin_action(
            data_dir,
            Action.KEYS_ROTATED,
            "tls+report" if tls else "report",
            {role: {"old": f"{old:x}", "new": f"{new:x}"} for role, (old, new) in result.rotated.items()},
        )
        if as_json:
            print_json(result.to_dict())
            return
        for role, (old, new) in result.rotated.items():
            console.print(f"{role}: certificate {old:x} replaced by {new:x}")
        console.print(f"new report key id {result.report_key_id}; reports signed before keep verifying")
        if tls:
            console.print("restart 'supnet serve' so the server presents the new TLS certificate")
