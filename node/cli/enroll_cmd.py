"""``supnet enroll``: get this node's certificates from its parent's enrolment listener with a one-time token."""

from __future__ import annotations

from typing import Annotated

import typer

from node.audit_log import Action
from node.cli.common import DataDir, JsonFlag, audit_admin_action, handle_errors
from node.cli.pki_cmd import print_installed
from node.trust import DEFAULT_ENROL_TIMEOUT_SECONDS, enroll_node


def register(app: typer.Typer) -> None:
    """Add ``supnet enroll``."""

    @app.command("enroll")
    @handle_errors
    def enroll_command(
        *,
        data_dir: DataDir,
        parent: Annotated[
            str, typer.Option("--parent", help="host:port of the parent's enrolment listener (its enrol.json).")
        ],
        token: Annotated[
            str,
            typer.Option(
                "--token", help="The token printed by 'supnet pki token' on the parent.", envvar="SUPNET_ENROL_TOKEN"
            ),
        ],
        ca: Annotated[
            bool, typer.Option("--ca/--no-ca", help="Also get a CA certificate (to enrol children, rotate keys).")
        ] = True,
        force: Annotated[
            bool, typer.Option("--force", help="Replace an existing pki/ (kept as pki.replaced-<time>).")
        ] = False,
        timeout: Annotated[
            float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the parent.")
        ] = DEFAULT_ENROL_TIMEOUT_SECONDS,
        as_json: JsonFlag = False,
    ) -> None:
        """Generate keys, prove the token, check the certificates up to the token's root, then write pki/."""
        result = enroll_node(data_dir, parent, token, with_ca=ca, force=force, timeout=timeout)
        audit_admin_action(data_dir, Action.PKI_ENROLLED, result.node_id, {"parent": parent, "with_ca": ca})
        print_installed(result, f"{result.node_id} enrolled at {parent}", as_json)
