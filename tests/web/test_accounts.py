"""Accounts and sessions on SQLite and PostgreSQL: argon2 hashes, roles, lockout, disabling, new passwords, the
idle timeout, and the audit entries that name who acted."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from node.audit_log import AuditFilter, AuditLog
from node.errors import ConflictError, InvalidArgumentError, NotFoundError
from node.store import WebSession, WebUser
from node.web import (
    LoginRefusedError,
    add_user,
    authenticate,
    create_session,
    get_user,
    list_users,
    session_user,
    set_disabled,
    set_password,
    token_hash,
)

PASSWORD = "correct horse 1"
IDLE = dt.timedelta(minutes=30)


def _login(engine: Engine, name: str, password: str = PASSWORD, max_failed: int = 3) -> str:
    account = authenticate(engine, "gd", name, password, max_failed=max_failed, lockout=dt.timedelta(minutes=15))
    return account.name


def test_passwords_are_kept_as_argon2_hashes(migrated_engine: Engine) -> None:
    account = add_user(migrated_engine, "张伟", "supervisor", PASSWORD, actor="root@gd")
    assert account.role == "supervisor" and not account.disabled
    with migrated_engine.connect() as conn:
        stored = conn.execute(select(WebUser.password_hash).where(WebUser.name == "张伟")).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert _login(migrated_engine, "张伟") == "张伟"
    assert [a.name for a in list_users(migrated_engine)] == ["张伟"]
    entries = AuditLog(migrated_engine).entries(AuditFilter(action="web.*"))
    assert [(e.action, e.actor, e.target) for e in reversed(entries)] == [
        ("web.user_added", "root@gd", "user:张伟"),
        ("web.login", "web:张伟@gd", "user:张伟"),
    ]


def test_bad_input_is_refused_naming_why(migrated_engine: Engine) -> None:
    with pytest.raises(InvalidArgumentError, match="role must be one of viewer, supervisor, admin"):
        add_user(migrated_engine, "li", "boss", PASSWORD, actor="root@gd")
    with pytest.raises(InvalidArgumentError, match="at least 8 characters"):
        add_user(migrated_engine, "li", "viewer", "short", actor="root@gd")
    with pytest.raises(InvalidArgumentError, match="user name"):
        add_user(migrated_engine, "li li", "viewer", PASSWORD, actor="root@gd")
    add_user(migrated_engine, "li", "viewer", PASSWORD, actor="root@gd")
    with pytest.raises(ConflictError, match="already exists"):
        add_user(migrated_engine, "li", "admin", PASSWORD, actor="root@gd")
    with pytest.raises(NotFoundError, match="no user 'nobody'"):
        set_password(migrated_engine, "nobody", PASSWORD, actor="root@gd")


def test_repeated_failures_lock_then_a_new_password_unlocks(migrated_engine: Engine) -> None:
    add_user(migrated_engine, "li", "viewer", PASSWORD, actor="root@gd")
    for attempt in range(3):
        with pytest.raises(LoginRefusedError) as refused:
            _login(migrated_engine, "li", "wrong password")
        assert refused.value.reason == ("locked" if attempt == 2 else "bad_credentials")
    with pytest.raises(LoginRefusedError) as locked:
        _login(migrated_engine, "li")  # the right password does not help while locked
    assert locked.value.reason == "locked" and get_user(migrated_engine, "li").failed_logins == 3
    set_password(migrated_engine, "li", "another horse 2", actor="root@gd")
    assert _login(migrated_engine, "li", "another horse 2") == "li"
    assert get_user(migrated_engine, "li").failed_logins == 0
    actions = [e.action for e in AuditLog(migrated_engine).entries(AuditFilter(action="web.*"), limit=None)]
    assert actions.count("web.login_failed") == 4 and actions.count("web.locked_out") == 1


def test_an_unknown_name_fails_like_a_wrong_password(migrated_engine: Engine) -> None:
    with pytest.raises(LoginRefusedError) as refused:
        _login(migrated_engine, "nobody")
    assert refused.value.reason == "bad_credentials"


def test_disabling_ends_sessions_and_logins(migrated_engine: Engine) -> None:
    account = add_user(migrated_engine, "li", "viewer", PASSWORD, actor="root@gd")
    token, csrf = create_session(migrated_engine, account.id, idle=IDLE)
    user = session_user(migrated_engine, token, idle=IDLE)
    assert user is not None and user.name == "li" and user.csrf_token == csrf and user.role == "viewer"
    set_disabled(migrated_engine, "li", True, actor="root@gd")
    assert session_user(migrated_engine, token, idle=IDLE) is None
    with pytest.raises(LoginRefusedError) as refused:
        _login(migrated_engine, "li")
    assert refused.value.reason == "disabled"
    set_disabled(migrated_engine, "li", False, actor="root@gd")
    assert _login(migrated_engine, "li") == "li"


def test_sessions_end_after_the_idle_time(migrated_engine: Engine) -> None:
    account = add_user(migrated_engine, "li", "viewer", PASSWORD, actor="root@gd")
    token, _csrf = create_session(migrated_engine, account.id, idle=IDLE)
    with migrated_engine.connect() as conn:
        stored = conn.execute(select(WebSession.token_hash)).scalar_one()
    assert stored == token_hash(token) and token not in stored  # a copy of the table opens no session
    assert session_user(migrated_engine, "not-a-token", idle=IDLE) is None
    past = dt.datetime.now(dt.UTC).replace(tzinfo=None) - IDLE - dt.timedelta(seconds=5)
    with migrated_engine.begin() as conn:
        conn.execute(update(WebSession).values(last_seen_at=past))
    assert session_user(migrated_engine, token, idle=IDLE) is None
    with migrated_engine.connect() as conn:
        assert conn.execute(select(WebSession.token_hash)).first() is None  # forgotten, not just refused
