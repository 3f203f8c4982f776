"""Console accounts: add, list, disable, enable, change password, and logging in with lockout.

Passwords are hashed with argon2id (argon2-cffi's defaults, its PHC string stored); a login with an unknown name
still verifies a dummy hash, so the time taken does not tell which names exist. ``max_failed`` wrong passwords in
a row lock the account for ``lockout`` (checked before the password, so a locked account cannot be probed).
Every change and every login, failed or not, is in the audit log: an administrator's command as the OS user
(operator_actor), a login as ``web:NAME@NODE``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, cast, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, Table, delete, insert, select, update

from node.audit_log import AuditLog, AuditResult, record_audit
from node.errors import ConflictError, InvalidArgumentError, NotFoundError, UnauthenticatedError
from node.store import USER_NAME_MAX, WebSession, WebUser

Role = Literal["viewer", "supervisor", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
_NAME = re.compile(r"^[A-Za-z0-9\u4e00-\u9fff][A-Za-z0-9._@\u4e00-\u9fff-]*$")

_users = cast(Table, WebUser.__table__)
_sessions = cast(Table, WebSession.__table__)
_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """The hash checked when the name is unknown, so a failed login costs the same either way.

    Made on first use: hashing costs as much as a login, which ``supnet serve`` need not pay at start.
    """
    return _hasher.hash("supnet-no-such-user")


class Action:
    """Audit action names of the console (node.audit_log keeps the node's own)."""

    USER_ADDED = "web.user_added"
    USER_DISABLED = "web.user_disabled"
    USER_ENABLED = "web.user_enabled"
    PASSWORD_CHANGED = "web.password_changed"  # noqa: S105 (an action name)
    LOGIN = "web.login"
    LOGIN_FAILED = "web.login_failed"
    LOCKED_OUT = "web.locked_out"
    LOGOUT = "web.logout"
    REFUSED = "web.refused"


def web_actor(name: str, node_id: str) -> str:
    """The audit actor of a person acting in the console: ``web:NAME@NODE``."""
    return f"web:{name}@{node_id}"


def utc_now() -> dt.datetime:
    """Now as the account tables store it: naive UTC."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class Account:
    """One account as listed (never its hash)."""

    id: int
    name: str
    role: Role
    disabled: bool
    failed_logins: int
    locked_until: dt.datetime | None
    created_at: dt.datetime
    last_login_at: dt.datetime | None

    def locked(self, now: dt.datetime) -> bool:
        """True while a lockout runs."""
        return self.locked_until is not None and self.locked_until > now

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (times in UTC, ISO 8601)."""

        def iso(value: dt.datetime | None) -> str | None:
            return None if value is None else value.replace(tzinfo=dt.UTC).isoformat()

        return {
            "name": self.name,
            "role": self.role,
            "disabled": self.disabled,
            "failed_logins": self.failed_logins,
            "locked_until": iso(self.locked_until),
            "created_at": iso(self.created_at),
            "last_login_at": iso(self.last_login_at),
        }


def _account(row: Any) -> Account:
    return Account(
        id=int(row.id),
        name=str(row.name),
        role=cast(Role, row.role),
        disabled=bool(row.disabled),
        failed_logins=int(row.failed_logins),
        locked_until=row.locked_until,
        created_at=row.created_at,
        last_login_at=row.last_login_at,
    )


def check_name(name: str) -> str:
    """``name`` if it is a login name (letters, digits, Chinese characters, . _ @ -), else InvalidArgumentError."""
    if not name or len(name) > USER_NAME_MAX or not _NAME.match(name):
        raise InvalidArgumentError(
            f"user name {name!r}: 1–{USER_NAME_MAX} letters, digits or Chinese characters (also . _ @ - after the "
            "first)"
        )
    return name


def check_role(role: str) -> Role:
    """``role`` if it is one of viewer, supervisor, admin, else InvalidArgumentError."""
    if role not in ROLES:
        raise InvalidArgumentError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def check_password(password: str) -> str:
    """``password`` if long enough (at least 8 characters), else InvalidArgumentError saying why."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidArgumentError(f"password: at least {MIN_PASSWORD_LENGTH} characters, got {len(password)}")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidArgumentError(f"password: at most {MAX_PASSWORD_LENGTH} characters")
    return password


def add_user(engine: Engine, name: str, role: str, password: str, *, actor: str) -> Account:
    """Create an account; ConflictError if the name is taken. Audited as ``web.user_added``."""
    check_name(name)
    checked_role = check_role(role)
    password_hash = _hasher.hash(check_password(password))
    now = utc_now()
    with engine.begin() as conn:
        if conn.execute(select(_users.c.id).where(_users.c.name == name)).first() is not None:
            raise ConflictError(f"user {name!r} already exists (change its password with 'supnet users passwd')")
        conn.execute(
            insert(_users).values(
                name=name,
                role=checked_role,
                password_hash=password_hash,
                disabled=False,
                failed_logins=0,
                created_at=now,
                password_changed_at=now,
            )
        )
        record_audit(conn, actor=actor, action=Action.USER_ADDED, target=f"user:{name}", detail={"role": role})
        return _account(conn.execute(select(_users).where(_users.c.name == name)).one())


def list_users(engine: Engine) -> list[Account]:
    """Every account, by name."""
    with engine.connect() as conn:
        return [_account(row) for row in conn.execute(select(_users).order_by(_users.c.name))]


def get_user(engine: Engine, name: str) -> Account:
    """One account; NotFoundError naming it if there is none."""
    with engine.connect() as conn:
        row = conn.execute(select(_users).where(_users.c.name == name)).first()
    if row is None:
        raise NotFoundError(f"no user {name!r} (list them with 'supnet users list')")
    return _account(row)


def set_disabled(engine: Engine, name: str, disabled: bool, *, actor: str) -> Account:
    """Disable (its sessions end at once) or enable an account; audited."""
    get_user(engine, name)
    with engine.begin() as conn:
        user_id = conn.execute(select(_users.c.id).where(_users.c.name == name)).scalar_one()
        values: dict[str, Any] = {"disabled": disabled}
        if not disabled:
            values.update(failed_logins=0, locked_until=None)
        conn.execute(update(_users).where(_users.c.id == user_id).values(**values))
        if disabled:
            conn.execute(delete(_sessions).where(_sessions.c.user_id == user_id))
        action = Action.USER_DISABLED if disabled else Action.USER_ENABLED
        record_audit(conn, actor=actor, action=action, target=f"user:{name}")
    return get_user(engine, name)


def set_password(engine: Engine, name: str, password: str, *, actor: str) -> Account:
    """Set a new password: it also lifts a lockout and ends the account's sessions; audited."""
    password_hash = _hasher.hash(check_password(password))
    get_user(engine, name)
    with engine.begin() as conn:
        user_id = conn.execute(select(_users.c.id).where(_users.c.name == name)).scalar_one()
        conn.execute(
            update(_users)
            .where(_users.c.id == user_id)
            .values(password_hash=password_hash, password_changed_at=utc_now(), failed_logins=0, locked_until=None)
        )
        conn.execute(delete(_sessions).where(_sessions.c.user_id == user_id))
        record_audit(conn, actor=actor, action=Action.PASSWORD_CHANGED, target=f"user:{name}")
    return get_user(engine, name)


class LoginRefusedError(UnauthenticatedError):
    """A login that did not succeed; ``reason`` is bad_credentials, locked or disabled (shown translated)."""

    def __init__(self, message: str, reason: str, locked_until: dt.datetime | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.locked_until = locked_until


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def authenticate(
    engine: Engine,
    node_id: str,
    name: str,
    password: str,
    *,
    max_failed: int,
    lockout: dt.timedelta,
    client: str = "",
) -> Account:
    """The account if ``password`` is its password and it may log in; LoginRefusedError otherwise (audited either way).

    The count of wrong passwords in a row is kept on the account; reaching ``max_failed`` locks it for ``lockout``.
    """
    now = utc_now()
    audit = AuditLog(engine)
    actor = web_actor(name[:USER_NAME_MAX], node_id)
    detail = {"client": client}
    with engine.connect() as conn:
        row = conn.execute(select(_users).where(_users.c.name == name)).first()
    if row is None:
        _verify(_dummy_hash(), password)
        audit.record(
            actor=actor, action=Action.LOGIN_FAILED, target="user:?", detail=detail, result=AuditResult.REFUSED
        )
        raise LoginRefusedError(f"login as {name!r} refused: unknown user or wrong password", "bad_credentials")
    account = _account(row)
    target = f"user:{account.name}"
    if account.disabled:
        audit.record(
            actor=actor,
            action=Action.LOGIN_FAILED,
            target=target,
            detail={**detail, "why": "disabled"},
            result=AuditResult.REFUSED,
        )
        raise LoginRefusedError(f"user {name!r} is disabled", "disabled")
    if account.locked(now):
        audit.record(
            actor=actor,
            action=Action.LOGIN_FAILED,
            target=target,
            detail={**detail, "why": "locked"},
            result=AuditResult.REFUSED,
        )
        raise LoginRefusedError(f"user {name!r} is locked out", "locked", account.locked_until)
    if _verify(str(row.password_hash), password):
        with engine.begin() as conn:
            conn.execute(
                update(_users)
                .where(_users.c.id == account.id)
                .values(failed_logins=0, locked_until=None, last_login_at=now)
            )
            record_audit(conn, actor=actor, action=Action.LOGIN, target=target, detail=detail)
        if _hasher.check_needs_rehash(str(row.password_hash)):
            with engine.begin() as conn:
                conn.execute(
                    update(_users).where(_users.c.id == account.id).values(password_hash=_hasher.hash(password))
                )
        return get_user(engine, name)
    failed = account.failed_logins + 1
    locked_until = now + lockout if failed >= max_failed else None
    with engine.begin() as conn:
        conn.execute(
            update(_users).where(_users.c.id == account.id).values(failed_logins=failed, locked_until=locked_until)
        )
        record_audit(
            conn,
            actor=actor,
            action=Action.LOGIN_FAILED,
            target=target,
            detail={**detail, "failed_in_a_row": failed},
            result=AuditResult.REFUSED,
        )
        if locked_until is not None:
            record_audit(
                conn,
                actor=actor,
                action=Action.LOCKED_OUT,
                target=target,
                detail={"until_utc": locked_until.isoformat(), "failed_in_a_row": failed},
            )
    if locked_until is not None:
        raise LoginRefusedError(f"user {name!r} locked out after {failed} wrong passwords", "locked", locked_until)
    raise LoginRefusedError(f"login as {name!r} refused: unknown user or wrong password", "bad_credentials")
