"""``supnet users add|list|disable|enable|passwd``: the accounts of the supervisor console (node.web).

Roles: viewer (reads every page), supervisor (also acknowledges and corrects alerts, issues directives), admin
(also acknowledges and corrects alerts; manages nothing in the console: accounts are managed here). A password is
asked twice on a terminal, or read as one line from standard input with ``--password-stdin`` (scripts); it is
stored only as an argon2 hash. Each change is in the audit log under the OS user.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from node.audit_log import operator_actor
from node.cli.common import (
    JsonFlag,
    OptionalDataDir,
    console,
    handle_errors,
    local_text,
    opened_node,
    print_json,
    subcommand_invoked,
)
from node.errors import InvalidArgumentError
from node.web import MIN_PASSWORD_LENGTH, ROLES, Account, add_user, list_users, set_disabled, set_password

users_app = typer.Typer(help="Accounts of the supervisor console (监察控制台): add, list, disable, enable, passwd.")

Name = Annotated[str, typer.Argument(help="Login name (letters, digits, Chinese characters, . _ @ -).")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password as one line from standard input (scripts).")
]
_ROLE_LABELS = {"viewer": "查看员 viewer", "supervisor": "监察员 supervisor", "admin": "管理员 admin"}


def _read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise InvalidArgumentError("no password on standard input (one line expected)")
        return line.rstrip("\r\n")
    first: str = typer.prompt(f"密码 password (at least {MIN_PASSWORD_LENGTH} characters)", hide_input=True)
    second: str = typer.prompt("再输入一次 again", hide_input=True)
    if first != second:
        raise InvalidArgumentError("the two passwords differ")
    return first


def _print_account(account: Account, what: str, as_json: bool) -> None:
    if as_json:
        print_json(account.to_dict())
        return
    state = "停用 disabled" if account.disabled else "启用 enabled"
    console.print(f"{what}: [bold]{account.name}[/] ({_ROLE_LABELS[account.role]}, {state})", highlight=False)


@users_app.callback(invoke_without_command=True)
@handle_errors
def users(ctx: typer.Context, *, data_dir: OptionalDataDir = None, as_json: JsonFlag = False) -> None:
    """List the console's accounts."""
    if subcommand_invoked(ctx, data_dir):
        return
    _list(ctx, data_dir, as_json)


def _list(ctx: typer.Context, data_dir: OptionalDataDir, as_json: bool) -> None:
    with opened_node(ctx, data_dir) as node:
        accounts = list_users(node.engine)
    if as_json:
        print_json({"users": [account.to_dict() for account in accounts]})
        return
    table = Table(title=f"控制台账户 console accounts ({len(accounts)})")
    for column in (
        "用户名 name",
        "角色 role",
        "状态 state",
        "连续失败 failed",
        "锁定至 locked until (UTC)",
        "最近登录 last login (UTC)",
    ):
        table.add_column(column)
    for account in accounts:
        table.add_row(
            account.name,
            _ROLE_LABELS[account.role],
            "停用 disabled" if account.disabled else "启用 enabled",
            str(account.failed_logins),
            local_text(account.locked_until),
            local_text(account.last_login_at),
        )
    console.print(table)


@users_app.command("list")
@handle_errors
def list_command(ctx: typer.Context, *, data_dir: OptionalDataDir = None, as_json: JsonFlag = False) -> None:
    """List the console's accounts."""
    _list(ctx, data_dir, as_json)


@users_app.command("add")
@handle_errors
def add(
    ctx: typer.Context,
    name: Name,
    *,
    role: Annotated[str, typer.Option("--role", help=" | ".join(ROLES))] = "viewer",
    data_dir: OptionalDataDir = None,
    password_stdin: PasswordStdin = False,
    as_json: JsonFlag = False,
) -> None:
    """Add an account with a role (viewer, supervisor or admin) and a password."""
    if role not in ROLES:
        raise InvalidArgumentError(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    password = _read_password(password_stdin)
    with opened_node(ctx, data_dir) as node:
        account = add_user(node.engine, name, role, password, actor=operator_actor(node.config.id))
    _print_account(account, "已添加 added", as_json)


@users_app.command("disable")
@handle_errors
def disable(ctx: typer.Context, name: Name, *, data_dir: OptionalDataDir = None, as_json: JsonFlag = False) -> None:
    """Disable an account: it can no longer log in, and its open sessions end at once."""
    with opened_node(ctx, data_dir) as node:
        account = set_disabled(node.engine, name, True, actor=operator_actor(node.config.id))
    _print_account(account, "已停用 disabled", as_json)


@users_app.command("enable")
@handle_errors
def enable(ctx: typer.Context, name: Name, *, data_dir: OptionalDataDir = None, as_json: JsonFlag = False) -> None:
    """Enable an account again (also lifts a lockout)."""
    with opened_node(ctx, data_dir) as node:
        account = set_disabled(node.engine, name, False, actor=operator_actor(node.config.id))
    _print_account(account, "已启用 enabled", as_json)


@users_app.command("passwd")
@handle_errors
def passwd(
    ctx: typer.Context,
    name: Name,
    *,
    data_dir: OptionalDataDir = None,
    password_stdin: PasswordStdin = False,
    as_json: JsonFlag = False,
) -> None:
    """Set a new password (lifts a lockout, ends the account's sessions)."""
    password = _read_password(password_stdin)
    with opened_node(ctx, data_dir) as node:
        account = set_password(node.engine, name, password, actor=operator_actor(node.config.id))
    _print_account(account, "密码已更新 password changed", as_json)


def register(app: typer.Typer) -> None:
    """Add ``supnet users``."""
    app.add_typer(users_app, name="users")
