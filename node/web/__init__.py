"""The supervisor console (issue 14): the web pages ``supnet serve`` also serves, for the node's own operators.

accounts (users, roles, argon2 hashes, lockout), sessions (cookie tokens, CSRF), core (routes, capabilities,
per-request checks), the pages (drill-down: overview, subordinates, cases, timeline; local: alerts, complaints,
evaluations, scores, items, health; directives: inbox, outbox, issuing, acknowledging, responding, closing; the
report: the print-ready 电子监察通报 of node.bulletin), i18n (中文 first, English),
server (WebConsole: uvicorn in a thread, HTTPS with the node's CA). Templates and static files (ECharts, htmx,
vendored with their licences) are package data: nothing is fetched at run time.
"""

from node.web.accounts import (
    MIN_PASSWORD_LENGTH,
    ROLES,
    Account,
    LoginRefusedError,
    Role,
    add_user,
    authenticate,
    get_user,
    list_users,
    set_disabled,
    set_password,
    web_actor,
)
from node.web.core import CAPABILITIES, ROUTES
from node.web.i18n import LANGUAGES, MESSAGES, translate
from node.web.server import STATIC_DIR, WebConsole, build_app, template_environment, web_certificate
from node.web.sessions import SessionUser, create_session, end_session, session_user, token_hash

__all__ = [
    "CAPABILITIES",
    "LANGUAGES",
    "MESSAGES",
    "MIN_PASSWORD_LENGTH",
    "ROLES",
    "ROUTES",
    "STATIC_DIR",
    "Account",
    "LoginRefusedError",
    "Role",
    "SessionUser",
    "WebConsole",
    "add_user",
    "authenticate",
    "build_app",
    "create_session",
    "end_session",
    "get_user",
    "list_users",
    "session_user",
    "set_disabled",
    "set_password",
    "template_environment",
    "token_hash",
    "translate",
    "web_actor",
    "web_certificate",
]
