"""``supnet pki``: init-root, token, revoke, show, ingest-credential, sign-ca (the node's certificate authority).

The root key is never written in the clear unless asked: ``init-root`` encrypts it with a passphrase
(``--passphrase-file`` or ``SUPNET_ROOT_PASSPHRASE``) or keeps it offline (``--offline DIR``); every command
that signs with an encrypted root key takes the passphrase the same way.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from node.audit_log import Action
from node.cli.common import DataDir, JsonFlag, audit_admin_action, console, handle_errors, print_json
from node.config import load_config
from node.errors import ConfigError
from node.trust import (
    PASSPHRASE_ENV,
    PkiInstalled,
    describe,
    init_root,
    issue_ingest_credential,
    issue_token,
    parse_duration,
    provision_tree,
    read_passphrase,
    revoke,
    sign_node_ca,
    tree_is_provisioned,
)

PassphraseFile = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help=f"File whose first line is the root key's passphrase (else the environment variable {PASSPHRASE_ENV}).",
    ),
]


def _day(text: str | None) -> str:
    return text[:19].replace("T", " ") if text else "-"


def print_installed(result: PkiInstalled, title: str, as_json: bool) -> None:
    """Show what init-root or enroll wrote (shared with ``supnet enroll``)."""
    data = result.to_dict()
    if as_json:
        print_json(data)
        return
    table = Table(title=title)
    for column in ("certificate", "serial", "valid until", "issuer"):
        table.add_column(column)
    for role, info in data["certificates"].items():
        table.add_row(role, info["serial"], _day(info["not_after"]), info["issuer"])
    console.print(table)
    console.print(f"pki directory: {data['pki_dir']}")
    console.print(f"root fingerprint (SHA-256): {data['root_fingerprint']}", soft_wrap=True)
    if data["replaced"]:
        console.print(f"previous pki kept in {data['replaced']}")


def _print_show(data: dict[str, Any]) -> None:
    console.print(f"[bold]node {data['node_id']}[/] pki in {data['pki_dir']} (CA: {'yes' if data['has_ca'] else 'no'})")
    console.print(f"root fingerprint (SHA-256): {data['root_fingerprint']}", soft_wrap=True)
    own = Table(title="Own certificates")
    for column in ("file", "role", "serial", "valid until", "days left"):
        own.add_column(column)
    for name, info in data["certificates"].items():
        own.add_row(f"{name}.pem", info["role"] or "?", info["serial"], _day(info["not_after"]), str(info["days_left"]))
    console.print(own)
    if data["retired"]:
        console.print("retired: " + ", ".join(data["retired"]))
    if data["issued"]:
        issued = Table(title="Certificates issued by this node's CA")
        for column in ("subject", "role", "serial", "issued", "valid until", "revoked", "reason"):
            issued.add_column(column)
        for record in data["issued"]:
            subject = record["subject_id"] + (f" ({record['name']})" if record["name"] else "")
            revoked = _day(record["revoked_at"]) if record["revoked_at"] else ""
            issued.add_row(
                subject,
                record["role"],
                record["serial"],
                _day(record["issued_at"]),
                _day(record["not_after"]),
                f"[red]{revoked}[/]" if revoked else "",
                record["reason"],
            )
        console.print(issued)
    if data["tokens"]:
        tokens = Table(title="Enrolment tokens")
        for column in ("child", "token hash", "status", "expires", "used"):
            tokens.add_column(column)
        for token in data["tokens"]:
            tokens.add_row(
                token["child_id"],
                token["token_hash_prefix"] + "…",
                token["status"],
                _day(token["expires_at"]),
                _day(token["used_at"]),
            )
        console.print(tokens)
    crl = data["crl"]
    if crl is not None:
        listed = ", ".join(data["revoked_serials"]) or "none"
        console.print(f"revocation list {crl['path']} (next update {_day(crl['next_update'])}): {listed}")
        if crl["error"]:
            console.print(f"[bold red]revocation list unusable[/] {crl['error']}")
    if data["enrol_address"]:
        console.print(f"enrolment listener: {data['enrol_address']}")
    for warning in data["warnings"]:
        console.print(f"[bold yellow]warning[/] {warning}")


def register(app: typer.Typer) -> None:
    """Add ``supnet pki ...``."""
    group = typer.Typer(
        help="The node's certificate authority: init-root, token, revoke, show, ingest-credential, sign-ca.",
        no_args_is_help=True,
    )
    app.add_typer(group, name="pki")

    @group.command("init-root")
    @handle_errors
    def init_root_command(
        data_dir: DataDir,
        *,
        passphrase_file: PassphraseFile = None,
        offline: Annotated[
            Path | None,
            typer.Option(
                "--offline",
                help="Keep the root key in this directory (removable media), not in pki/: it certifies a CA of the "
                "node's own, and the node runs without it.",
            ),
        ] = None,
        unencrypted: Annotated[
            bool, typer.Option("--unencrypted", help="Write the root key without a passphrase (tests, demos).")
        ] = False,
        force: Annotated[
            bool, typer.Option("--force", help="Replace an existing pki/ (kept as pki.replaced-<time>).")
        ] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Province (root) node: create the root CA and the node's own TLS and report certificates in pki/.

        The root key is encrypted with a passphrase (--passphrase-file, or SUPNET_ROOT_PASSPHRASE), or kept
        offline (--offline DIR, also encrypted when a passphrase is given); --unencrypted only when asked.
        """
        passphrase = read_passphrase(passphrase_file)
        if passphrase is None and offline is None and not unencrypted:
            raise ConfigError(
                "the root key needs protecting: give --passphrase-file FILE (or set "
                f"{PASSPHRASE_ENV}) to encrypt it, or --offline DIR to keep it off this node; --unencrypted writes "
                "it in the clear (tests and demos only)"
            )
        if unencrypted and passphrase is not None:
            raise ConfigError(f"--unencrypted and a passphrase (--passphrase-file or {PASSPHRASE_ENV}) contradict")
        result = init_root(data_dir, force=force, passphrase=passphrase, offline_dir=offline)
        protection = "offline" if offline is not None else ("encrypted" if passphrase else "unencrypted")
        audit_admin_action(
            data_dir,
            Action.PKI_INIT_ROOT,
            result.node_id,
            {"force": force, "root_key": protection, **({"offline_dir": str(offline)} if offline else {})},
        )
        print_installed(result, f"root CA of {result.node_id} created ({protection} root key)", as_json)
        if offline is not None and not as_json:
            console.print(
                f"root key kept in {offline}: store that medium away from the node; renew this node's CA from it "
                f"with 'supnet pki sign-ca --data-dir {data_dir} --root-dir {offline}'",
                soft_wrap=True,
            )

    @group.command("sign-ca")
    @handle_errors
    def sign_ca_command(
        data_dir: DataDir,
        root_dir: Annotated[
            Path, typer.Option("--root-dir", help="The offline root's directory (init-root --offline).")
        ],
        passphrase_file: PassphraseFile = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Offline root: re-certify this node's CA (same key) before it ends; run where the root's medium is mounted."""
        result = sign_node_ca(data_dir, root_dir, passphrase=read_passphrase(passphrase_file))
        detail = result.to_dict()
        audit_admin_action(data_dir, Action.PKI_CA_SIGNED_OFFLINE, result.node_id, detail)
        if as_json:
            print_json(detail)
            return
        console.print(
            f"CA of {result.node_id} re-certified by the offline root: serial {detail['new_serial']} until "
            f"{_day(detail['not_after'])} (replaces {detail['old_serial']}); restart 'supnet serve' to present it",
            soft_wrap=True,
        )

    @group.command("token")
    @handle_errors
    def token_command(
        child_id: Annotated[str, typer.Argument(help="The direct child's node id, e.g. gd.gz.")],
        data_dir: DataDir,
        ttl: Annotated[str, typer.Option("--ttl", help="How long the token is valid: 30m, 24h, 7d…")] = "24h",
        as_json: JsonFlag = False,
    ) -> None:
        """Print a one-time enrolment token for a direct child (hand it over out of band)."""
        issued = issue_token(data_dir, child_id, ttl=parse_duration(ttl))
        # Never the token itself: the log must not let a reader enrol.
        audit_admin_action(data_dir, Action.PKI_TOKEN_ISSUED, child_id, {"ttl": ttl})
        config = load_config(data_dir)
        registered = any(child.id == child_id for child in config.federation.children)
        if as_json:
            print_json({**issued.to_dict(), "registered_child": registered})
            return
        # Plain output: the token must stay on one line, untouched by rich's wrapping and markup.
        typer.echo(issued.token)
        # A serving node opened its listener for this token before issue_token returned (it waits for enrol.json).
        where = issued.enrol_address or (
            "HOST:PORT (the enrolment listener of 'supnet serve': open while a token is live, see enrol.json)"
        )
        console.print(
            f"one-time token for [bold]{child_id}[/], valid until {_day(issued.expires_at.isoformat())} UTC; "
            f"on the child: supnet enroll --data-dir DIR --parent {where} --token TOKEN",
            soft_wrap=True,
        )
        if not registered:
            console.print(
                f"[yellow]note[/] {child_id} is not in federation.children of {data_dir / 'supnet.toml'}: "
                "add it there or its reports will be refused"
            )

    @group.command("revoke")
    @handle_errors
    def revoke_command(
        data_dir: DataDir,
        child_id: Annotated[
            str | None, typer.Argument(help="The child whose certificates to revoke, e.g. gd.gz.")
        ] = None,
        *,
        ingest: Annotated[
            str | None, typer.Option("--ingest", help="Revoke this ingest credential instead of a child.")
        ] = None,
        reason: Annotated[str, typer.Option("--reason", help="Why (kept in pki/issued.json).")] = "",
        passphrase_file: PassphraseFile = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Revoke every certificate this node issued to a child; rewrite the signed pki/crl.pem."""
        passphrase = read_passphrase(passphrase_file)
        result = revoke(data_dir, child_id, ingest_name=ingest, reason=reason, passphrase=passphrase)
        audit_admin_action(
            data_dir,
            Action.PKI_REVOKED,
            result.subject,
            {"serials": [f"{record.serial:x}" for record in result.revoked], "reason": reason},
        )
        if as_json:
            print_json(result.to_dict())
            return
        serials = ", ".join(f"{record.role} {record.serial:x}" for record in result.revoked) or "none new"
        console.print(f"revoked for [bold]{result.subject}[/]: {serials}", soft_wrap=True)
        if result.already_revoked:
            console.print(f"already revoked before: {len(result.already_revoked)} certificates")
        if result.tokens_withdrawn:
            console.print(f"unused enrolment tokens withdrawn: {result.tokens_withdrawn}")
        console.print(f"{result.crl_path} now lists {result.crl_serials} serials (a serving node reloads it)")

    @group.command("show")
    @handle_errors
    def show_command(data_dir: DataDir, as_json: JsonFlag = False) -> None:
        """Own certificates and expiry, issued certificates, tokens, revoked serials."""
        renew_before = dt.timedelta(days=load_config(data_dir).federation.renew_before_days)
        data = describe(data_dir, renew_before=renew_before)
        if as_json:
            print_json(data)
            return
        _print_show(data)

    @group.command("ingest-credential")
    @handle_errors
    def ingest_credential_command(
        name: Annotated[str, typer.Argument(help="The business approval system's name, e.g. approval-system-1.")],
        data_dir: DataDir,
        *,
        out: Annotated[Path, typer.Option("--out", help="Directory for ingest.key, ingest.pem and root.pem.")],
        force: Annotated[bool, typer.Option("--force", help="Overwrite existing files in --out.")] = False,
        passphrase_file: PassphraseFile = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Issue a TLS client credential with which a business system may stream records into this node."""
        passphrase = read_passphrase(passphrase_file)
        result = issue_ingest_credential(data_dir, name, out, force=force, passphrase=passphrase)
        audit_admin_action(data_dir, Action.PKI_INGEST_CREDENTIAL, name, {"serial": f"{result.serial:x}"})
        if as_json:
            print_json(result.to_dict())
            return
        console.print(
            f"ingest credential [bold]{name}[/] for node {result.node_id} (serial {result.serial:x}, "
            f"valid until {_day(result.not_after.isoformat())}) written to {out}",
            soft_wrap=True,
        )

    @group.command("provision-local")
    @handle_errors
    def provision_local_command(
        data_dirs: Annotated[list[Path], typer.Argument(help="Data directories of every node of the tree.")],
        force: Annotated[bool, typer.Option("--force", help="Replace PKI that is already there.")] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Enrol a whole tree whose data directories share one machine or volume (compose, local setups).

        Runs the real token + CSR flow in-process, root first; a networked child uses `supnet enroll` instead.
        """
        ids = {load_config(directory).id: directory for directory in data_dirs}
        pki_dirs = {node_id: directory / "pki" for node_id, directory in ids.items()}
        if tree_is_provisioned(pki_dirs) and not force:
            result = {"provisioned": False, "nodes": sorted(ids)}
        else:
            provision_tree(pki_dirs)
            for node_id, directory in ids.items():
                audit_admin_action(directory, Action.PKI_ENROLLED, node_id, {"provisioned_locally": True})
            result = {"provisioned": True, "nodes": sorted(ids)}
        if as_json:
            print_json(result)
            return
        state = "provisioned" if result["provisioned"] else "already provisioned (use --force to replace)"
        console.print(f"PKI of {len(ids)} nodes {state}: {', '.join(sorted(ids))}")
