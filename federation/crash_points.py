"""Named crash points for the fault harness: ``SUPNET_CRASH_AT=name[:n]`` kills this process at such a point.

The process gets SIGKILL the n-th time (default the 1st) it passes ``crash_point(name)``; unset, a crash point
costs one comparison.

The points sit at the boundaries of the import → bucket → report build → outbox → send → receive → commit → ack
cycle (CRASH_POINTS), so tests/faults can prove that a kill -9 anywhere loses and duplicates nothing.
"""

from __future__ import annotations

import os
import signal

__all__ = ["CRASH_POINTS", "crash_point"]

CRASH_POINTS: tuple[str, ...] = (
    "import.batch_stored",  # a batch written with its metric deltas, not yet committed
    "import.batch_committed",  # a batch committed, the import not finished
    "report.signed",  # a report built and signed, its outbox row not yet committed
    "report.queued",  # a report committed to the outbox, not yet sent
    "send.before_call",  # about to call SubmitReport
    "send.acked_unmarked",  # the parent acknowledged, the outbox row not yet marked acked
    "receive.applied",  # a child report stored and applied, not yet committed
    "receive.committed",  # committed, the acknowledgement not yet returned
)


def _plan() -> tuple[str, int]:
    raw = os.environ.get("SUPNET_CRASH_AT", "")
    name, _, count = raw.partition(":")
    return name, int(count) if count.isdigit() and int(count) > 0 else 1


_TARGET, _AT_HIT = _plan()
_hits = 0


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL here when SUPNET_CRASH_AT names this point (at its n-th pass)."""
    global _hits  # noqa: PLW0603 - one counter per process, by design
    if name != _TARGET:
        return
    _hits += 1
    if _hits == _AT_HIT:
        os.kill(os.getpid(), signal.SIGKILL)
