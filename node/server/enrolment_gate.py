"""The enrolment gate: a node's enrolment listener is open only while its token store holds a live token.

Most nodes enrol nobody after set-up, and an idle gRPC server is not free: grpcio wakes each server's completion
queue several times a second, taking the GIL, so a host of 85 street nodes spent much of its idle CPU on 85
listeners nobody called. The gate (one per node with a CA) opens the listener (node.server.enrolment_server) on
``federation.enrol_listen`` when ``pki/tokens.json`` holds a token that is neither redeemed nor expired, writing
``DATA_DIR/enrol.json``, and closes it (removing enrol.json) when none is left. It looks:

- at start;
- when ``pki/tokens.json`` changes (``supnet pki token`` adds, a redemption or ``pki revoke`` marks), told by the
  process's one FileWatcher (node.store), which stats the file every second: so the listener is open about a
  second after a token is issued, and ``supnet pki token`` waits for it before printing the address;
- every ENROL_RECHECK_SECONDS while open (the ``enrolment_listener`` job of the node's scheduler): a token that
  expires changes no file, so this is what closes the listener after the last token's expiry.

Each opening binds the configured address again; with port 0 it may get another port, which enrol.json names.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from concurrent import futures
from typing import TYPE_CHECKING

from federation import SupnetError
from node.run_state import enrol_state_path, running_enrol_address
from node.server.enrolment_server import EnrolmentServer
from node.store import FileWatcher
from node.trust import JsonFileTokenStore, PassphraseError, enrolment_authority, has_ca, token_store_path

if TYPE_CHECKING:
    from node.app import Node

log = logging.getLogger(__name__)

# How often the gate looks at the tokens whatever the watcher says: bounds how long an expired token keeps it open.
ENROL_RECHECK_SECONDS = 60.0
# An enrolment in flight when the gate closes (its own redemption just marked the token used) gets this long.
CLOSE_GRACE_SECONDS = 5.0
ENROL_JOB_ID = "enrolment_listener"


class EnrolmentGate:
    """Opens and closes one node's enrolment listener by its live tokens; ``start()``, ``check()``, ``stop()``."""

    def __init__(self, node: Node, *, executor: futures.ThreadPoolExecutor | None = None) -> None:
        """``executor``: a hosted node's listener runs its calls on the host's shared pool."""
        self._node = node
        self._node_id = node.config.id
        self._executor = executor
        self._tokens_path = token_store_path(node.data_dir)
        self._store = JsonFileTokenStore(self._tokens_path)
        self._lock = threading.Lock()
        self._listener: EnrolmentServer | None = None
        self._watch: int | None = None
        self._running = False

    @classmethod
    def for_node(cls, node: Node, *, executor: futures.ThreadPoolExecutor | None = None) -> EnrolmentGate | None:
        """The gate of a node that can enrol children (a CA whose key this process can open), else None."""
        if not has_ca(node.data_dir):
            return None
        try:
            enrolment_authority(node.data_dir)
        except PassphraseError as error:
            # The root key is encrypted and this process has no passphrase: serve the rest, say what is off.
            log.warning("node %s: enrolment listener off (children cannot enrol): %s", node.config.id, error.message)
            return None
        return cls(node, executor=executor)

    @property
    def listener(self) -> EnrolmentServer | None:
        """The open listener, or None while the gate is closed."""
        return self._listener

    def start(self) -> None:
        """Watch pki/tokens.json, then open the listener if a token is live now."""
        with self._lock:
            self._running = True
        # A crashed process's enrol.json names a dead pid (nobody trusts it); remove it so the file means "open".
        if running_enrol_address(self._node.data_dir) is None:
            enrol_state_path(self._node.data_dir).unlink(missing_ok=True)
        self._watch = FileWatcher.shared().subscribe((self._tokens_path,), self._tokens_changed)
        self.check("at start")

    def _tokens_changed(self) -> None:
        self.check(f"{self._tokens_path.name} changed")

    def recheck(self) -> None:
        """The periodic look (the scheduler's ``enrolment_listener`` job): closes after the last token expired.

        A closed gate has nothing to look for: no token becomes live without a write the watcher sees.
        """
        if self._listener is not None:
            self.check("periodic recheck")

    def check(self, cause: str = "check") -> None:
        """Open the listener if a token is live and it is closed; close it if none is live and it is open."""
        with self._lock:
            if not self._running:
                return
            live, why = self._live_tokens()
            if live and self._listener is None:
                self._open(f"{why} ({cause})")
            elif not live and self._listener is not None:
                self._close(f"{why} ({cause})")

    def _live_tokens(self) -> tuple[bool, str]:
        """(any live token?, why, for the log)."""
        if not self._tokens_path.exists():
            # Never a token (most nodes): nothing to read, and no lock file to create in pki/.
            return False, "no enrolment token"
        try:
            records = self._store.records()
        except (OSError, SupnetError) as error:
            # An unreadable store redeems nothing either: the listener would only answer errors.
            log.warning("node %s: cannot read %s: %s", self._node_id, self._tokens_path, error)
            return False, f"{self._tokens_path.name} unreadable"
        now = dt.datetime.now(dt.UTC)
        live = [record for record in records if record.is_live(now)]
        if live:
            children = ", ".join(sorted({record.child_id for record in live}))
            until = max(record.expires_at for record in live).isoformat(timespec="seconds")
            return True, f"{len(live)} live enrolment token(s) for {children}, until {until}"
        used = sum(record.used_at is not None for record in records)
        return False, f"no live enrolment token ({used} redeemed, {len(records) - used} expired)"

    def _open(self, why: str) -> None:
        try:
            listener = EnrolmentServer(
                self._node.data_dir,
                address=self._node.config.federation.enrol_listen,
                engine=self._node.engine,
                executor=self._executor,
            )
            listener.start()
        except SupnetError as error:
            # A port taken, a CA key gone: the node serves on; the next change or recheck tries again.
            log.error("node %s: enrolment listener cannot open: %s", self._node_id, error)
            return
        self._listener = listener
        log.info("node %s: enrolment listener open on %s: %s", self._node_id, listener.bound_address, why)

    def _close(self, why: str, grace: float = CLOSE_GRACE_SECONDS, *, wait: bool = False) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        listener.stop(grace, wait=wait)
        log.info("node %s: enrolment listener on %s closed: %s", self._node_id, listener.bound_address, why)

    def stop(self, grace: float) -> None:
        """Stop watching and close the listener (in-flight enrolments get ``grace`` seconds)."""
        watch, self._watch = self._watch, None
        if watch is not None:
            FileWatcher.shared().unsubscribe(watch)
        with self._lock:
            self._running = False
            self._close("the node is stopping", grace, wait=True)
